"""
Tests for L{gossip.cli.commands} and L{gossip.transport.reach}: C{gossip sync}, C{gossip
serve} and C{gossip clone}, run as real processes on real files.

Every wait for another process is bounded by a deadline, and polls rather
than sleeps; every process a test starts is killed when it ends.
"""

import os
import pty
import re
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time

from twisted.trial.unittest import TestCase

from gossip.cli.cloning import cloneMarker, markClone
from gossip.store.format import decodeLine, encodeAdd
from gossip.store.logfile import Log
from tests.helpers import (
    DEADLINE,
    ENV,
    ROOT,
    Background,
    appendAdds,
    contents,
    gossipCommand,
    killMentioning,
    oneLine,
    readBytes,
    run,
    runMain,
    say,
    serveCommand,
    waitFor,
)

class SyncTestsMixin:
    """
    Two logs, each holding adds of its own, adds by other origins that the
    other also holds, and adds only it holds.
    """

    def setUp(self):
        self.dirA = os.path.abspath(self.mktemp())
        self.dirB = os.path.abspath(self.mktemp())
        os.makedirs(self.dirA)
        os.makedirs(self.dirB)
        self.a = os.path.join(self.dirA, "x.log")
        self.b = os.path.join(self.dirB, "x.log")
        for i in range(3):
            say(self.a, f"m=a{i}")
        say(self.b, "m=b0", "n=with spaces & <signs>")
        # Both hold origin one's first adds; each holds some the other lacks.
        appendAdds(self.a, b"origin-one", range(0, 8))
        appendAdds(self.b, b"origin-one", range(0, 5))
        appendAdds(self.b, b"origin-one", range(10, 12))
        # Gaps in both, interleaved.
        appendAdds(self.a, b"origin-two", [0, 2, 4, 6])
        appendAdds(self.b, b"origin-two", [1, 2, 3, 7])
        # by and at not first, as another writer may put them.
        appendAdds(self.b, b"origin-three", range(3), byFirst=False)
        say(self.a, "m=a3")
        self.before = contents(self.a).keySet | contents(self.b).keySet

    def assertSynced(self):
        """
        Both logs hold every add either held, each exactly once, intact and
        byte for byte the same.
        """
        a, b = contents(self.a), contents(self.b)
        for log in (a, b):
            self.assertEqual(log.corrupt, 0)
            self.assertEqual(len(log.keys), len(log.keySet), "an add written twice")
            self.assertEqual(log.keySet, self.before)
        for key in self.before:
            self.assertEqual(a.lines[key], b.lines[key])
        self.assertNotEqual(a.identity, b.identity)

    def syncOnce(self, *options):
        raise NotImplementedError()

    def test_syncs(self):
        """
        One sync brings both logs to the same adds, each written once; a
        second moves and writes nothing.
        """
        status, out, err = self.syncOnce()
        self.assertEqual((status, err), (0, ""))
        self.assertSynced()
        sizes = os.path.getsize(self.a), os.path.getsize(self.b)
        data = readBytes(self.a), readBytes(self.b)

        status, out, err = self.syncOnce("-v")
        self.assertEqual(status, 0, err)
        self.assertRegex(err, r"synced with .*: 0 adds received, 0 sent")
        self.assertEqual((os.path.getsize(self.a), os.path.getsize(self.b)), sizes)
        self.assertEqual((readBytes(self.a), readBytes(self.b)), data)


class SyncLogTests(SyncTestsMixin, TestCase):
    """
    C{gossip sync --once LOG PEER}, PEER another log file.
    """

    def syncOnce(self, *options):
        return run("sync", "--once", *options, self.a, self.b)

    def test_missingPeer(self):
        """
        A PEER that does not exist is an error, and is not created.
        """
        missing = os.path.join(self.dirB, "missing", "x.log")
        typo = os.path.join(self.dirB, "y.log")
        before = readBytes(self.a)
        for peer in (missing, typo):
            status, out, err = run("sync", "--once", self.a, peer)
            self.assertNotEqual(status, 0)
            self.assertIn("No such file", oneLine(self, err))
            self.assertFalse(os.path.exists(peer))
        self.assertEqual(readBytes(self.a), before)

    def test_missingLog(self):
        """
        A LOG that does not exist is an error unless C{--create} is given.
        """
        log = os.path.join(self.dirA, "new", "x.log")
        os.makedirs(os.path.dirname(log))
        status, out, err = run("sync", "--once", log, self.b)
        self.assertNotEqual(status, 0)
        self.assertIn("no such log (--create makes a new one)", oneLine(self, err))
        self.assertFalse(os.path.exists(log))

        status, out, err = run("sync", "--once", "--create", log, self.b)
        self.assertEqual((status, err), (0, ""))
        self.assertEqual(contents(log).keySet, contents(self.b).keySet)

    def test_serveMissingLog(self):
        """
        C{gossip serve --stdio} (the command a forced command or an ssh URL
        runs) does not make a new log of a mistyped LOG, unless given
        C{--create}: a peer syncing with it is refused, in one line.
        """
        log = os.path.join(self.dirA, "typo", os.path.basename(self.b))
        os.mkdir(os.path.dirname(log))
        status, out, err = run("sync", "--once", self.b, "--", *serveCommand(log))
        self.assertNotEqual(status, 0)
        self.assertIn("no such log (--create makes a new one)", err)
        self.assertFalse(os.path.exists(log))
        status, out, err = run("sync", "--once", self.b, "--", *serveCommand(log, "--create"))
        self.assertEqual((status, err), (0, ""))
        self.assertEqual(contents(log).keySet, contents(self.b).keySet)

    def test_serveNodes(self):
        """
        C{gossip serve --stdio --nodes ID,...} (a forced command's
        counterpart of C{gossip-nodes}) refuses a peer that says it is
        another node, in one line, writing nothing; a peer it names syncs.
        An empty identity is a usage error.
        """
        identity = Log(self.a).state().identity.decode()
        before = readBytes(self.b)
        status, out, err = run(
            "sync", "--once", self.a, "--", *serveCommand(self.b, "--nodes", "someone")
        )
        self.assertEqual(status, 1)
        self.assertIn(f"this peer (serve --nodes) may not speak for node {identity!r}", err)
        self.assertEqual(readBytes(self.b), before)
        status, out, err = run(
            "sync", "--once", self.a, "--", *serveCommand(self.b, "--nodes", f"someone, {identity}")
        )
        self.assertEqual((status, err), (0, ""))
        self.assertSynced()
        status, out, err = runMain("serve", "--stdio", "--nodes", "a,,b", self.b)
        self.assertEqual(status, 2)
        self.assertIn("an empty node identity", oneLine(self, err.decode()))

    def test_usage(self):
        """
        A sync needs one peer: a log or a command, not both, not none.
        """
        for args in (
            [self.a],
            [self.a, self.b, "--", "true"],
            [self.a, "--"],
            [self.a, self.b, self.b],
        ):
            # Refused before any peer starts: in this process, as the
            # command would (test_cli's ProgramTests checks a real process's).
            status, out, err = runMain("sync", "--once", *args)
            self.assertEqual(status, 2, args)
            oneLine(self, err.decode("utf-8"))

    def test_namesDiffer(self):
        """
        Logs of different names are not synced (nothing is written to
        either) unless C{--any-name} says to.
        """
        other = os.path.join(self.dirB, "y.log")
        os.rename(self.b, other)
        self.b = other
        data = readBytes(self.a), readBytes(self.b)

        status, out, err = run("sync", "--once", self.a, self.b)
        self.assertNotEqual(status, 0)
        self.assertIn("--any-name", oneLine(self, err))
        self.assertEqual((readBytes(self.a), readBytes(self.b)), data)

        status, out, err = run("sync", "--once", "--any-name", self.a, self.b)
        self.assertEqual((status, err), (0, ""))
        self.assertSynced()


class SyncCommandTests(SyncTestsMixin, TestCase):
    """
    C{gossip sync --once LOG -- COMMAND...}: the peer is whatever the
    command runs.
    """

    def syncOnce(self, *options):
        return run("sync", "--once", *options, self.a, "--", *serveCommand(self.b))

    def test_namesDiffer(self):
        """
        The peer's log name is checked too when it is reached by a command.
        """
        other = os.path.join(self.dirB, "y.log")
        os.rename(self.b, other)
        data = readBytes(self.a), readBytes(other)
        status, out, err = run("sync", "--once", self.a, "--", *serveCommand(other))
        self.assertNotEqual(status, 0)
        self.assertIn("--any-name", oneLine(self, err))
        self.assertEqual((readBytes(self.a), readBytes(other)), data)

        status, out, err = run(
            "sync", "--once", "--any-name", self.a, "--", *serveCommand(other)
        )
        self.assertEqual((status, err), (0, ""))
        self.assertEqual(contents(self.a).keySet, contents(other).keySet)

    def test_commandMissing(self):
        """
        A command that cannot be run is a one-line error.
        """
        before = readBytes(self.a)
        missing = os.path.join(self.dirB, "no-such-command")
        status, out, err = run("sync", "--once", self.a, "--", missing, "serve")
        self.assertNotEqual(status, 0)
        self.assertIn(missing, oneLine(self, err))
        self.assertEqual(readBytes(self.a), before)

    def test_verboseNamesCommandOnce(self):
        """
        With C{-v}, a peer command is given in full once; each line after
        names it with its paths cut to their last parts.
        """
        status, out, err = run("sync", "-v", "--once", self.a, "--", *serveCommand(self.b))
        self.assertEqual(status, 0, err)
        lines = err.splitlines()
        self.assertGreater(len(lines), 3)
        self.assertEqual(sum(sys.executable in line for line in lines), 1, err)
        short = f"{os.path.basename(sys.executable)} -m gossip serve --stdio {os.path.basename(self.b)}"
        self.assertIn(f"connected to {short}", err)

    def test_commandEnded(self):
        """
        A peer command that exits with a failing status, or is killed,
        before the sync is over is said to have, in words.
        """
        before = readBytes(self.a)
        for script, said in [
            ("exit 3", "the peer command exited with status 3"),
            ("kill -9 $$", "the peer command was killed by signal 9"),
        ]:
            status, out, err = run("sync", "--once", self.a, "--", "sh", "-c", script)
            self.assertEqual(status, 1)
            self.assertIn(f"the peer hung up before the handshake: {said}", oneLine(self, err))
        self.assertEqual(readBytes(self.a), before)


# A peer command that passes on what `gossip serve` says, up to a number of
# bytes, then dies: a connection lost in the middle of a sync.
RELAY = r"""
import os, subprocess, sys
limit = int(sys.argv[1])
child = subprocess.Popen(sys.argv[2:], stdout=subprocess.PIPE)
passed = 0
while passed < limit:
    data = os.read(child.stdout.fileno(), min(65536, limit - passed))
    if not data:
        break
    view = memoryview(data)
    while view:
        view = view[os.write(1, view):]
    passed += len(data)
child.kill()
child.wait()
os._exit(3)
"""


class FailureTests(TestCase):
    """
    Peers that fail: the sync ends with one line saying why, and the log
    holds nothing but intact adds.
    """

    def setUp(self):
        self.dir = os.path.abspath(self.mktemp())
        os.makedirs(self.dir)
        self.a = os.path.join(self.dir, "x.log")
        say(self.a, "m=1")
        appendAdds(self.a, b"other", range(5))
        self.before = readBytes(self.a)

    def failedSync(self, command, *options, limit=DEADLINE):
        start = time.monotonic()
        status, out, err = run("sync", "--once", *options, self.a, "--", *command)
        elapsed = time.monotonic() - start
        self.assertNotEqual(status, 0)
        self.assertLess(elapsed, limit)
        line = oneLine(self, err)
        self.assertEqual(readBytes(self.a), self.before)
        return line

    def test_garbage(self):
        """
        A peer that writes text that is not the protocol loses its session,
        is named in the one-line error, and the log is untouched.
        """
        line = self.failedSync(["sh", "-c", "echo garbage; exec sleep 60"], limit=20)
        self.assertIn("echo garbage", line)

    def test_randomBytes(self):
        """
        A peer that writes random bytes loses its session.
        """
        line = self.failedSync(
            [
                sys.executable,
                "-c",
                "import os; os.write(1, os.urandom(300000)); os.close(1)",
            ]
        )
        self.assertIn("urandom", line)

    def test_garbageReason(self):
        """
        The error says why the session failed.
        """
        line = self.failedSync(["sh", "-c", "echo garbage"])
        self.assertRegex(line, r"failed: \S")


    def test_silent(self):
        """
        A peer that says nothing is given up after C{--timeout} seconds,
        even if its command does not exit.
        """
        line = self.failedSync(["sleep", "60"], "--timeout", "2", limit=20)
        self.assertIn("sleep 60", line)
        self.assertIn("2 seconds", line)

    def test_peerExits(self):
        """
        A peer that exits at once is a one-line error.
        """
        self.failedSync(["true"])

    def test_diesMidSync(self):
        """
        A peer that dies in the middle of a sync leaves only intact adds,
        each once; the next sync moves just what is still missing.
        """
        peer = os.path.join(self.mktemp(), "x.log")
        os.makedirs(os.path.dirname(peer))
        say(peer, "m=peer")
        total = 20000
        with open(peer, "ab") as f:
            for origin in (b"one", b"two"):
                f.write(
                    b"".join(
                        encodeAdd(
                            [(b"by", origin), (b"at", b"%d" % at), (b"v", b"%0100d" % at)]
                        )
                        for at in range(total // 2)
                    )
                )
        script = os.path.join(self.dir, "relay.py")
        with open(script, "w") as f:
            f.write(RELAY)
        relay = [sys.executable, script, "1000000", *serveCommand(peer)]
        status, out, err = run("sync", "--once", self.a, "--", *relay)
        self.assertNotEqual(status, 0)
        oneLine(self, err)
        partial = contents(self.a)
        self.assertEqual(partial.corrupt, 0)
        self.assertEqual(len(partial.keys), len(partial.keySet))
        # The log held 6 adds with a by and an at; the peer, total + 1.
        received = len(partial.keySet) - 6
        self.assertTrue(0 < received < total + 1, received)

        status, out, err = run("sync", "--once", "-v", self.a, peer)
        self.assertEqual(status, 0, err)
        count = int(re.search(r"synced with .*: (\d+) adds? received", err).group(1))
        self.assertEqual(count, total + 1 - received)
        done, theirs = contents(self.a), contents(peer)
        self.assertEqual(done.corrupt, 0)
        self.assertEqual(len(done.keys), len(done.keySet))
        self.assertEqual(done.keySet, theirs.keySet)
        self.assertEqual(len(done.keySet), total + 7)


# Runs `gossip serve --stdio --once` on each of two logs, joined by pipes,
# and prints each one's peak RSS in KiB.
_SERVE_PAIR = r"""
import os, subprocess, sys
aIn, bOut = os.pipe()
bIn, aOut = os.pipe()
processes = [
    subprocess.Popen(
        [sys.executable, "-m", "gossip", "serve", "--stdio", "--once", log],
        stdin=stdin,
        stdout=stdout,
    )
    for log, stdin, stdout in [(sys.argv[1], aIn, aOut), (sys.argv[2], bIn, bOut)]
]
for fd in (aIn, bOut, bIn, aOut):
    os.close(fd)
for process in processes:
    pid, status, usage = os.wait4(process.pid, 0)
    if os.waitstatus_to_exitcode(status):
        sys.exit(f"gossip serve exited with {os.waitstatus_to_exitcode(status)}")
    print(usage.ru_maxrss)
"""


def runPython(script, *args, timeout=DEADLINE * 4):
    """
    Run a Python C{script} with C{args}, importing the gossip under test.

    @return: C{(exit status, stdout, stderr)}, stderr as text.
    """
    done = subprocess.run(
        [sys.executable, "-c", script, *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        env=ENV,
        cwd=ROOT,
        timeout=timeout,
    )
    return done.returncode, done.stdout, done.stderr.decode("utf-8", "replace")


class LargeAddTests(TestCase):
    """
    An add too large for one AMP value.
    """

    def test_fiftyMegabytes(self):
        """
        A 50 MB add of random bytes arrives intact.
        """
        directory = os.path.abspath(self.mktemp())
        os.makedirs(os.path.join(directory, "a"))
        os.makedirs(os.path.join(directory, "b"))
        a = os.path.join(directory, "a", "x.log")
        b = os.path.join(directory, "b", "x.log")
        value = os.urandom(50 * 1000 * 1000)
        path = os.path.join(directory, "value")
        with open(path, "wb") as f:
            f.write(value)
        # Escaping random bytes is slow (format.py): allow for it.
        status, out, err = run("say", "--file", f"v={path}", a, "k=big", timeout=300)
        self.assertEqual(status, 0, err)
        say(b, "k=small")

        status, out, err = run("sync", "--once", a, b, timeout=120)
        self.assertEqual((status, err), (0, ""))
        received = contents(b)
        self.assertEqual(received.keySet, contents(a).keySet)
        self.assertEqual(len(received.keys), 2)
        (line,) = [
            line for line in received.lines.values() if (b"k", b"big") in decodeLine(line)
        ]
        self.assertEqual(dict(decodeLine(line))[b"v"], value)


    def test_boundedMemory(self):
        """
        A 48 MiB add goes between two processes, each holding far less
        than the add in memory, and arrives intact; no spool file is left.
        """
        directory = os.path.abspath(self.mktemp())
        logs = []
        for side in "ab":
            os.makedirs(os.path.join(directory, side))
            logs.append(os.path.join(directory, side, "x.log"))
            say(logs[-1], "k=small")
        line = encodeAdd([(b"by", b"elsewhere"), (b"at", b"0"), (b"v", b"v" * (48 << 20))])
        with open(logs[0], "ab") as f:
            f.write(line)
        del line
        say(logs[0], "k=after")

        # A small process starts both, so that neither inherits the test's
        # peak memory (Linux carries it over a vfork and exec).
        status, out, err = runPython(_SERVE_PAIR, *logs)
        self.assertEqual((status, err), (0, ""))
        peaks = [int(peak) >> 10 for peak in out.split()]
        self.assertEqual(contents(logs[1]).keySet, contents(logs[0]).keySet)
        self.assertLess(max(peaks), 100, f"peak RSS of sender and receiver: {peaks} MiB")
        left = [n for n in os.listdir(os.path.join(directory, "b")) if "incoming" in n]
        self.assertEqual(left, [])


class WidenPipeTests(TestCase):
    """
    L{gossip.transport.command.widenPipe}.
    """

    def test_pipe(self):
        """
        A pipe is made to hold 1 MiB.
        """
        import fcntl

        from gossip.transport.command import widenPipe

        reader, writer = os.pipe()
        self.addCleanup(os.close, reader)
        self.addCleanup(os.close, writer)
        widenPipe(writer)
        self.assertEqual(fcntl.fcntl(reader, fcntl.F_GETPIPE_SZ), 1 << 20)

    def test_notPipe(self):
        """
        Anything else is left alone, without an error.
        """
        from gossip.transport.command import widenPipe

        with tempfile.TemporaryFile() as f:
            widenPipe(f.fileno())


class CloneTests(TestCase):
    """
    C{gossip clone SOURCE NEWLOG}.
    """

    def setUp(self):
        self.dir = os.path.abspath(self.mktemp())
        os.makedirs(os.path.join(self.dir, "source"))
        os.makedirs(os.path.join(self.dir, "new"))
        self.source = os.path.join(self.dir, "source", "x.log")
        self.new = os.path.join(self.dir, "new", "x.log")
        say(self.source, "m=1")
        with open(self.source, "ab") as f:
            f.write(encodeAdd([(b"note", b"no by or at")]))
            f.write(
                b"".join(
                    encodeAdd([(b"by", b"elsewhere"), (b"at", b"%d" % at), (b"v", b"x" * 200)])
                    for at in range(3000)
                )
            )
        say(self.source, "m=2")

    def assertCloned(self):
        source, new = contents(self.source), contents(self.new)
        self.assertIsNotNone(new.identity)
        self.assertNotEqual(new.identity, source.identity)
        self.assertEqual(new.keySet, source.keySet)
        self.assertEqual(len(new.keys), len(new.keySet))
        self.assertEqual(new.others, [])
        self.assertEqual(new.corrupt, 0)

    def test_clone(self):
        """
        The clone has its own identity and every add of the source that has
        a by and an at; without a terminal, nothing is printed.
        """
        before = readBytes(self.source)
        status, out, err = run("clone", self.source, self.new)
        self.assertEqual((status, out, err), (0, b"", ""))
        self.assertCloned()
        self.assertEqual(readBytes(self.source), before)

    def test_exists(self):
        """
        A clone never overwrites or adds to an existing file.
        """
        say(self.new, "m=mine")
        before = readBytes(self.new)
        status, out, err = run("clone", self.source, self.new)
        self.assertNotEqual(status, 0)
        self.assertIn("exists", oneLine(self, err))
        self.assertEqual(readBytes(self.new), before)

    def test_failedLeavesNothing(self):
        """
        A clone that fails (here, its peer cannot be reached) leaves no new
        log behind, so that it can simply be run again.
        """
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        name = os.path.basename(self.new)
        status, out, err = run("clone", f"ssh://127.0.0.1:{port}/{name}", self.new)
        self.assertEqual(status, 1)
        self.assertIn(f"ssh://127.0.0.1:{port}/{name}", oneLine(self, err))
        self.assertEqual(os.listdir(os.path.dirname(self.new)), [])

    def test_resumes(self):
        """
        A clone killed part way (SIGKILL, the worst case) keeps what it
        received; the same command goes on from there, under the same
        identity, to a whole clone with no add twice.  A clone of another
        source into it is refused, naming the unfinished one.
        """
        appendAdds(self.source, b"bulk", range(60000), extra=b"y" * 300)
        process = subprocess.Popen(
            gossipCommand("clone", self.source, self.new),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=ENV,
        )
        self.addCleanup(process.wait)
        self.addCleanup(lambda: process.poll() is None and process.kill())
        total = os.path.getsize(self.source)
        waitFor(
            lambda: os.path.exists(self.new) and os.path.getsize(self.new) > total // 4,
            message="part of the clone",
        )
        process.kill()
        process.wait()
        first = contents(self.new)
        self.assertLess(len(first.keySet), len(contents(self.source).keySet))

        other = os.path.join(self.dir, "source", "other", "x.log")
        os.makedirs(os.path.dirname(other))
        say(other, "m=other")
        status, out, err = run("clone", other, self.new)
        self.assertEqual(status, 1)
        self.assertIn(f"unfinished clone of {self.source}", oneLine(self, err))

        status, out, err = run("clone", self.source, self.new)
        self.assertEqual((status, out, err), (0, b"", ""))
        self.assertCloned()
        self.assertEqual(contents(self.new).identity, first.identity)
        self.assertEqual(
            sorted(os.listdir(os.path.dirname(self.new))), [".x.log.gossip-cache", "x.log"]
        )
        # Whole now: not a clone to go on with.
        status, out, err = run("clone", self.source, self.new)
        self.assertIn("already exists", oneLine(self, err))

    def resumeFrom(self, tail):
        """
        Resume a clone whose new log holds its identity, the source's first
        lines, and then C{tail}, as a clone killed mid-write leaves it.

        @return: the new log's identity.
        """
        markClone(self.new, self.source)
        with open(self.source, "rb") as f:
            # A clone takes only the adds that have a by and an at.
            lines = [line for line in f if b"<by=" in line]
        with open(self.new, "wb") as f:
            f.write(encodeAdd([(b"I", b"clone-identity")]))
            f.writelines(lines[:20])
            f.write(tail(lines[20]))
        status, out, err = run("clone", self.source, self.new)
        self.assertEqual((status, out, err), (0, b"", ""))
        self.assertCloned()
        self.assertFalse(os.path.exists(cloneMarker(self.new)))
        return contents(self.new).identity

    def test_resumesAfterPartOfALine(self):
        """
        Part of a line at the end of an unfinished clone is cut off before
        the clone goes on: the finished clone has no damaged line.
        """
        identity = self.resumeFrom(lambda line: line[: len(line) // 2])
        self.assertEqual(identity, b"clone-identity")

    def test_resumesAfterAddWithoutLF(self):
        """
        An add whole but for its LF at the end of an unfinished clone is
        kept, ended, and not written again.
        """
        self.resumeFrom(lambda line: line[:-1])

    def test_missingSource(self):
        """
        A missing source is an error, and is not created.
        """
        missing = os.path.join(self.dir, "x.log")
        status, out, err = run("clone", missing, self.new)
        self.assertNotEqual(status, 0)
        oneLine(self, err)
        self.assertFalse(os.path.exists(missing))
        self.assertFalse(os.path.exists(self.new))

    def test_otherName(self):
        """
        A clone of another name, which could not sync with its source
        without C{--any-name}, is refused before anything is written.
        """
        other = os.path.join(self.dir, "new", "y.log")
        status, out, err = run("clone", self.source, other)
        self.assertNotEqual(status, 0)
        self.assertIn("--any-name", oneLine(self, err))
        self.assertFalse(os.path.exists(other))

        status, out, err = run("clone", "--any-name", self.source, other)
        self.assertEqual((status, err), (0, ""))
        self.assertEqual(contents(other).keySet, contents(self.source).keySet)

    def test_progress(self):
        """
        On a terminal, a clone shows adds, megabytes and a rate, and ends
        its line.
        """
        master, slave = pty.openpty()
        self.addCleanup(os.close, master)
        try:
            process = subprocess.Popen(
                gossipCommand("clone", self.source, self.new),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=slave,
                env=ENV,
            )
        finally:
            os.close(slave)
        self.addCleanup(lambda: process.poll() is None and process.kill())
        shown = b""
        deadline = time.monotonic() + DEADLINE
        while time.monotonic() < deadline:
            readable, _, _ = select.select([master], [], [], deadline - time.monotonic())
            if not readable:
                break
            try:
                data = os.read(master, 65536)
            except OSError:
                # EIO: every copy of the terminal's other end is closed.
                break
            if not data:
                break
            shown += data
        self.assertEqual(process.wait(DEADLINE), 0)
        text = shown.decode("utf-8", "replace")
        self.assertRegex(text, r"\d+/3002 adds, \d+\.\d MB, \d+ adds/s")
        self.assertIn("3002/3002 adds", text)
        self.assertTrue(text.endswith("\n"), repr(text[-80:]))
        self.assertCloned()


class ContinuousTests(TestCase):
    """
    C{gossip sync LOG PEER} without C{--once}: adds keep flowing.
    """

    def twoLogs(self):
        """
        Two logs of one name in a new directory, each with one add of its
        own.

        @return: C{(directory, a, b)}, the directory and the logs' paths.
        """
        directory = os.path.abspath(self.mktemp())
        a = os.path.join(directory, "a", "x.log")
        b = os.path.join(directory, "b", "x.log")
        os.makedirs(os.path.dirname(a))
        os.makedirs(os.path.dirname(b))
        say(a, "m=a")
        say(b, "m=b")
        return directory, a, b

    def test_peerLeaves(self):
        """
        A continuous sync whose peer goes away after syncing says so in one
        line and exits non-zero; what was synced stays.
        """
        _, a, b = self.twoLogs()
        status, out, err = run("sync", a, "--", *serveCommand(b, "--once"))
        self.assertEqual(status, 1)
        self.assertIn("the peer hung up (1 add received, 1 sent)", oneLine(self, err))
        self.assertEqual(contents(a).keySet, contents(b).keySet)

    def test_streams(self):
        """
        An add said on either side appears in the other's file well within a
        second.
        """
        directory, a, b = self.twoLogs()
        sync = Background(self, gossipCommand("sync", "-v", a, b))
        self.addCleanup(killMentioning, directory)
        sync.waitForStderr(r"synced with")
        self.assertEqual(contents(a).keySet, contents(b).keySet)

        # A gossip say on each side, then adds written in this process (as
        # gossip say writes them) so that the time measured is the sync's,
        # not a process start's.
        for i, (here, there) in enumerate([(a, b), (b, a)]):
            say(here, f"n={i}")
            wanted = contents(here).keySet
            waitFor(lambda: contents(there).keySet == wanted, message=f"add {i} reaching {there}")
        delays = []
        for i, (here, there) in enumerate([(a, b), (b, a)] * 3, 2):
            Log(here).say([(b"n", b"%d" % i)])
            wanted = contents(here).keySet
            delays.append(
                waitFor(
                    lambda: contents(there).keySet == wanted,
                    interval=0.001,
                    message=f"add {i} reaching {there}",
                )
            )
        print(f"\n  continuous sync delays: {', '.join(f'{d * 1000:.1f} ms' for d in delays)}")
        self.assertLess(max(delays), 2.0, delays)
        for log in (a, b):
            held = contents(log)
            self.assertEqual(len(held.keys), len(held.keySet))
            self.assertEqual(len(held.keySet), 10)
        self.assertIsNone(sync.process.poll(), sync.stderr())


    def test_interrupted(self):
        """
        Ctrl-C (SIGINT to the terminal's whole process group: the sync and
        the serve it started), or SIGTERM, ends a continuous sync with one
        short line and status 128 + the signal, blaming no one, with no
        traceback; what was synced stays.
        """
        for signum, said in [(signal.SIGINT, b"interrupted"), (signal.SIGTERM, b"terminated")]:
            directory, a, b = self.twoLogs()
            process = subprocess.Popen(
                gossipCommand("sync", a, b),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                env=ENV,
                start_new_session=True,
            )
            self.addCleanup(killMentioning, directory)
            waitFor(lambda: contents(a).keySet == contents(b).keySet, message="the logs synced")
            os.killpg(process.pid, signum)
            _, err = process.communicate(timeout=DEADLINE)
            self.assertEqual((process.returncode, err), (128 + signum, b"gossip: " + said + b"\n"))
            self.assertEqual(len(contents(a).keySet), 2)


class OwnAddTests(TestCase):
    """
    An add by a log's own node that its log has lost.
    """

    def cloned(self):
        """
        A log of four adds of its own, and a clone of it.

        @return: their paths and the first log's identity.
        """
        directory = os.path.abspath(self.mktemp())
        a = os.path.join(directory, "a", "x.log")
        peer = os.path.join(directory, "peer", "x.log")
        os.makedirs(os.path.dirname(a))
        os.makedirs(os.path.dirname(peer))
        for i in range(4):
            say(a, f"m={i}")
        status, out, err = run("clone", a, peer)
        self.assertEqual(status, 0, err)
        return a, peer, contents(a).identity

    def test_restored(self):
        """
        A sync brings back the lost add, and the node's next add is
        numbered past it.
        """
        a, peer, identity = self.cloned()
        lost = contents(a).lines[(identity, 3)]
        # The last add is lost (say, to a crash before it reached the disk):
        # with it gone, the node would number its next add 3 again.
        data = readBytes(a)
        self.assertTrue(data.endswith(lost))
        with open(a, "r+b") as f:
            f.truncate(len(data) - len(lost))
        self.assertNotIn((identity, 3), contents(a).keySet)

        status, out, err = run("sync", "--once", a, peer)
        self.assertEqual((status, err), (0, ""))
        self.assertEqual(contents(a).lines[(identity, 3)], lost)

        say(a, "m=next")
        held = contents(a)
        self.assertIn((identity, 4), held.keySet)
        self.assertEqual(len(held.keys), len(held.keySet))
        self.assertEqual(sorted(at for by, at in held.keys if by == identity), [0, 1, 2, 3, 4])

    def test_restoredFromTheMiddle(self):
        """
        An add lost from the middle of the log comes back too.
        """
        a, peer, identity = self.cloned()
        lost = contents(a).lines[(identity, 1)]
        data = readBytes(a)
        with open(a, "wb") as f:
            f.write(data.replace(lost, b""))

        status, out, err = run("sync", "--once", a, peer)
        self.assertEqual((status, err), (0, ""))
        self.assertEqual(contents(a).lines[(identity, 1)], lost)
        say(a, "m=next")
        self.assertEqual(
            sorted(at for by, at in contents(a).keys if by == identity), [0, 1, 2, 3, 4]
        )
