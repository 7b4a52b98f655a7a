"""
What many test modules share: running C{gossip} (in this process or as a
real one), reading logs as files, waiting for and cleaning up after real
processes, and damaging files as a failing disk would.
"""

import io
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time

from gossip.store.format import CorruptLine, decodeLine, encodeAdd, identify
from gossip.store.logfile import entries

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(ROOT, "tests", "data")
ENV = dict(os.environ, PYTHONPATH=ROOT)
# Tests run under a systemd service must not have their daemons tell it
# they are ready; those of test_systemd are given a socket of their own.
ENV.pop("NOTIFY_SOCKET", None)
# The longest any one step may take before a test fails: generous, since a
# loaded machine can be slow to start a process.
DEADLINE = 30.0


def gossipCommand(*args):
    return [sys.executable, "-m", "gossip", *args]


def serveCommand(log, *options):
    return gossipCommand("serve", "--stdio", *options, log)


def run(*args, timeout=DEADLINE):
    """
    Run C{gossip ARGS...} to completion.

    Its output goes to files, not pipes, so that what a peer command leaves
    behind holding them cannot keep the test waiting.

    @return: C{(exit status, stdout, stderr)}, stderr as text.
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        status = subprocess.run(
            gossipCommand(*args),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            env=ENV,
            timeout=timeout,
        ).returncode
        out.seek(0)
        err.seek(0)
        return status, out.read(), err.read().decode("utf-8", "replace")


def runMain(*args, stdin=b""):
    """
    Run C{gossip ARGS...} in this process, through L{gossip.cli.main.main},
    with C{stdin} as its standard input: for the commands that need no
    reactor and leave nothing running (C{say}, C{ask} without C{--follow},
    C{check}, C{--help}, mistakes), where starting a process adds nothing
    to what a test asserts.

    @return: C{(exit status, stdout, stderr)}, as bytes.
    """
    from gossip.cli.main import main

    out, err = io.BytesIO(), io.BytesIO()
    streams = (
        io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8", errors="surrogateescape"),
        io.TextIOWrapper(out, encoding="utf-8", errors="surrogateescape", write_through=True),
        io.TextIOWrapper(err, encoding="utf-8", errors="backslashreplace", write_through=True),
    )
    saved = sys.stdin, sys.stdout, sys.stderr
    columns = os.environ.get("COLUMNS")
    # Help is wrapped to this width, as for a process whose output is a pipe.
    os.environ["COLUMNS"] = "80"
    sys.stdin, sys.stdout, sys.stderr = streams
    try:
        status = main(list(args))
    except SystemExit as e:
        # argparse's --help and --version exit.
        status = e.code or 0
    finally:
        sys.stdin, sys.stdout, sys.stderr = saved
        if columns is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = columns
    return status, out.getvalue(), err.getvalue()


def say(log, *pairs):
    """
    Append an add to C{log} (making it if need be), as C{gossip say} does.
    """
    status, out, err = runMain("say", log, *pairs)
    if status != 0:
        raise AssertionError(f"gossip say {log} failed ({status}): {err!r}")


class Contents:
    """
    What a log file holds, read with gossip's own reader.

    @ivar identity: the value of its identity add.
    @ivar keys: the C{(by, at)} of every intact add that has them, in order,
        duplicates included.
    @ivar lines: C{(by, at)} -> the raw line, LF included.
    @ivar others: intact adds with no C{by} and C{at}, identity excluded.
    @ivar corrupt: how many lines are not intact adds.
    @ivar size: the file's size.
    """

    def __init__(self, path):
        self.identity = None
        self.keys = []
        self.lines = {}
        self.others = []
        self.corrupt = 0
        with open(path, "rb") as f:
            self.size = os.fstat(f.fileno()).st_size
            for offset, record, body in entries(f):
                if body is None:
                    self.corrupt += 1
                    continue
                try:
                    key = identify(body)
                except CorruptLine:
                    self.corrupt += 1
                    continue
                if key is None:
                    pairs = decodeLine(record + b"\n")
                    if self.identity is None and pairs[:1] and pairs[0][0] == b"I":
                        self.identity = pairs[0][1]
                    else:
                        self.others.append(pairs)
                    continue
                self.keys.append(key)
                self.lines[key] = record + b"\n"

    @property
    def keySet(self):
        return set(self.keys)


def contents(path):
    return Contents(path)


def readBytes(path):
    with open(path, "rb") as f:
        return f.read()


def appendAdds(path, origin, ats, extra=b"", byFirst=True):
    """
    Append adds by C{origin} to the log at C{path} (which has its identity
    already), written by hand as another node would have.
    """
    with open(path, "ab") as f:
        for at in ats:
            pairs = [(b"m", b"%s %d%s" % (origin, at, extra))]
            key = [(b"by", origin), (b"at", b"%d" % (at,))]
            f.write(encodeAdd(key + pairs if byFirst else pairs + key))


def waitFor(predicate, timeout=DEADLINE, interval=0.01, message="condition"):
    """
    Poll C{predicate} until it is true; fail after C{timeout} seconds.

    @return: how long it took, in seconds.
    """
    start = time.monotonic()
    deadline = start + timeout
    while True:
        if predicate():
            return time.monotonic() - start
        if time.monotonic() > deadline:
            raise AssertionError(f"{message} not met within {timeout} s")
        time.sleep(interval)


def processes():
    """
    The id and arguments of every process but this one.
    """
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")[:-1]
        except OSError:
            continue
        yield int(name), [os.fsdecode(arg) for arg in argv]


def processesMentioning(text):
    """
    The ids of the processes with an argument that contains C{text}.
    """
    return [pid for pid, argv in processes() if any(text in arg for arg in argv)]


def processesServing(log):
    """
    The ids of the C{gossip serve} processes serving C{log}.
    """
    return [
        pid
        for pid, argv in processes()
        if argv[-1:] == [log] and "serve" in argv and "--stdio" in argv
    ]


def killMentioning(text):
    """
    Kill every process whose command line mentions C{text} (a path unique
    to one test).
    """
    for pid in processesMentioning(text):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


class Background:
    """
    A process left running, its standard error going to a file.
    """

    def __init__(self, testCase, argv, stdout=subprocess.DEVNULL, env=ENV, **kwargs):
        self.errPath = os.path.abspath(testCase.mktemp())
        with open(self.errPath, "wb") as err:
            self.process = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=stdout, stderr=err, env=env, **kwargs
            )
        testCase.addCleanup(self.stop)

    def stderr(self):
        with open(self.errPath, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def waitForMatches(self, read, shown, pattern, count, timeout, exited, mustRun=False):
        """
        Wait until C{read()} has C{count} matches of C{pattern}, a regular
        expression.

        @param shown: what a failure's message calls C{read()}'s text, which
            follows it.
        @param exited: returns the failure's message if the process exits
            before there are enough matches, or at all if C{mustRun}.
        @return: how long it took, in seconds.
        """

        def seen():
            # Whether the process has exited is asked before its output is
            # read, so that all it wrote before exiting is read.
            over = self.process.poll() is not None
            found = len(re.findall(pattern, read())) >= count
            if over and (mustRun or not found):
                raise AssertionError(exited())
            return found

        try:
            return waitFor(seen, timeout, message=repr(pattern))
        except AssertionError as e:
            raise AssertionError(f"{e}; {shown}{read()}") from None

    def waitForStderr(self, pattern, count=1, timeout=DEADLINE):
        """
        Wait until standard error has C{count} matches of C{pattern}, a
        regular expression.
        """
        return self.waitForMatches(
            self.stderr,
            "stderr: ",
            pattern,
            count,
            timeout,
            lambda: f"exited ({self.process.returncode}) before {pattern!r}: {self.stderr()}",
        )

    def stop(self, sig=signal.SIGKILL):
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            self.process.wait(DEADLINE)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(DEADLINE)


def oneLine(testCase, stderr):
    """
    Assert that C{stderr} is exactly one line of error, with no traceback.
    """
    testCase.assertNotIn("Traceback", stderr)
    lines = stderr.splitlines()
    testCase.assertEqual(len(lines), 1, f"not one line: {stderr!r}")
    testCase.assertTrue(lines[0].startswith("gossip: "), lines[0])
    return lines[0]


def flipByte(path, index, keepTime=True):
    """
    Flip one byte in the middle of the C{index}th line of the file at
    C{path} in place: same inode, same size and, with C{keepTime}, the same
    modification time, as a failing disk would; without, a second later, as
    a program writing to it would.

    @return: the line's offset and length.
    """
    with open(path, "rb") as f:
        lines = f.read().split(b"\n")
    offset = sum(len(line) + 1 for line in lines[:index])
    length = len(lines[index]) + 1
    before = os.stat(path)
    with open(path, "r+b") as f:
        f.seek(offset + length // 2)
        byte = f.read(1)
        f.seek(offset + length // 2)
        f.write(bytes([byte[0] ^ 0x20]))
    mtime = before.st_mtime_ns + (0 if keepTime else 10**9)
    os.utime(path, ns=(before.st_atime_ns, mtime))
    return offset, length


def freePort():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def twoLogs(testCase):
    """
    A directory for C{testCase} holding two logs named C{a.log}, each with
    an add of its own: C{server/a.log} and C{client/a.log}.  Processes
    that mention the directory are killed when the test ends.

    @return: the directory and the two logs' paths.
    """
    directory = os.path.abspath(testCase.mktemp())
    testCase.addCleanup(killMentioning, directory)
    paths = []
    for side in ("server", "client"):
        path = os.path.join(directory, side, "a.log")
        os.makedirs(os.path.dirname(path))
        say(path, f"m={side}")
        paths.append(path)
    return directory, *paths


def daemonCommand(logfile, *args):
    return [
        sys.executable,
        "-c",
        "from twisted.scripts.twistd import run; run()",
        "-n",
        "--pidfile=",
        f"--logfile={logfile}",
        "gossip",
        *args,
    ]


class Daemon(Background):
    """
    A C{twistd -n gossip} process, logging to a file.
    """

    def __init__(self, testCase, *args, env=ENV):
        self.logfile = os.path.abspath(testCase.mktemp())
        if "--listen" not in args:
            # Not the default port, which another test's daemon may hold.
            args += ("--listen", "none")
        if "--control" not in args:
            # Nor the user's own control socket.
            args += ("--control", "none")
        Background.__init__(self, testCase, daemonCommand(self.logfile, *args), env=env)

    def log(self):
        try:
            with open(self.logfile, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def waitForLog(self, pattern, count=1, timeout=DEADLINE):
        """
        Wait until the daemon's log has C{count} matches of C{pattern}.
        """
        return self.waitForMatches(
            self.log,
            "log:\n",
            pattern,
            count,
            timeout,
            lambda: f"daemon exited ({self.process.returncode}): {self.stderr()}{self.log()}",
            mustRun=True,
        )

    def listeningPort(self, kind):
        """
        Wait until the daemon listens for C{kind} (C{"SSH"} or C{"TLS"})
        peers on loopback.

        @return: the port it listens on, which the system chose.
        """
        pattern = rf"listening for {kind} peers on 127\.0\.0\.1 port (\d+)"
        self.waitForLog(pattern)
        return int(re.search(pattern, self.log()).group(1))

    def shutDown(self):
        """
        Stop the daemon as an init system would, and wait for it to exit.
        """
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(DEADLINE)
