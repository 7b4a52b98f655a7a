"""
Tests for L{gossip.cli.main}, L{gossip.cli.output} and L{gossip.cli.chat}: the C{gossip}
command on real files, run in the test's process where a process would add
nothing, and as real processes where it would (following, chat, sync,
pipes, signals, start-up).

Every wait for another process is bounded by a deadline.
"""

import json
import os
import select
import signal
import subprocess
import sys
import time
from base64 import b64decode

from twisted.trial.unittest import SkipTest, TestCase

from gossip.store.format import decodeLine, encodeAdd, lineHash
from tests import original
from tests.helpers import DATA, DEADLINE, ENV, flipByte, gossipCommand, runMain

# The commands a test runs in its own process (L{runMain}): they need no
# reactor and leave nothing running, so a process would add nothing but its
# start-up.  ProgramTests runs them as real processes.
_IN_PROCESS = {"say", "ask", "check", "--help", "--version"}


def run(*args, stdin=b"", prefix=()):
    """
    Run C{gossip ARGS...} to completion: in this process if it can (see
    L{_IN_PROCESS}), else as a process through the command C{prefix}.

    @return: C{(exit status, stdout, stderr)}.
    """
    following = {"-f", "--follow"} & set(args)
    if not prefix and args and args[0] in _IN_PROCESS and not following:
        return runMain(*args, stdin=stdin)
    return runProcess(*args, stdin=stdin, prefix=prefix)


def runProcess(*args, stdin=b"", prefix=()):
    """
    Run C{gossip ARGS...} to completion as a process, through the command
    C{prefix}.

    @return: C{(exit status, stdout, stderr)}.
    """
    done = subprocess.run(
        [*prefix, *gossipCommand(*args)],
        input=stdin,
        capture_output=True,
        env=ENV,
        timeout=DEADLINE,
    )
    return done.returncode, done.stdout, done.stderr


def _defaultInterrupt():
    """
    Give a child ^C's default action, as a shell does, even if this process
    was started with SIGINT ignored (which the child would inherit).
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Spawned:
    """
    A C{gossip} process left running, whose output is read with deadlines.
    """

    def __init__(self, testCase, *args, stdin=subprocess.PIPE):
        self._stderrPath = os.path.abspath(testCase.mktemp())
        with open(self._stderrPath, "wb") as stderr:
            self.process = subprocess.Popen(
                gossipCommand(*args),
                stdin=stdin,
                stdout=subprocess.PIPE,
                stderr=stderr,
                env=ENV,
                preexec_fn=_defaultInterrupt,
            )
        testCase.addCleanup(self._stop)
        os.set_blocking(self.process.stdout.fileno(), False)
        self.output = b""

    def _stop(self):
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(DEADLINE)
        for pipe in (self.process.stdin, self.process.stdout):
            if pipe is not None:
                pipe.close()

    def stderr(self):
        with open(self._stderrPath, "rb") as f:
            return f.read()

    def _read(self, timeout):
        """
        Add what the process printed within C{timeout} seconds to
        C{output}; return L{False} at the end of its output.
        """
        fd = self.process.stdout.fileno()
        readable, _, _ = select.select([fd], [], [], max(timeout, 0))
        if not readable:
            return True
        data = os.read(fd, 65536)
        self.output += data
        return bool(data)

    def readUntil(self, wanted, timeout=DEADLINE):
        """
        Read until C{output} contains C{wanted}, failing after C{timeout}
        seconds or at the end of the output.
        """
        deadline = time.monotonic() + timeout
        while wanted not in self.output:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self._read(remaining):
                raise AssertionError(
                    f"{wanted!r} not printed within {timeout} s; printed "
                    f"{self.output!r}, stderr {self.stderr()!r}"
                )

    def readFor(self, seconds):
        """
        Read whatever is printed in the next C{seconds}.
        """
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and self._read(deadline - time.monotonic()):
            pass

    def finish(self, timeout=DEADLINE):
        """
        Close standard input, read the rest of the output and wait for the
        process to exit.

        @return: its exit status.
        """
        if self.process.stdin is not None:
            self.process.stdin.close()
        deadline = time.monotonic() + timeout
        while self._read(deadline - time.monotonic()):
            if time.monotonic() > deadline:
                raise AssertionError(f"still printing after {timeout} s: {self.output!r}")
        return self.process.wait(max(deadline - time.monotonic(), 0.1))


def jsonBytes(value):
    """
    The bytes that one value of C{ask --format json} stands for.
    """
    if isinstance(value, str):
        return value.encode("utf-8")
    return b64decode(value["base64"])


def jsonAdds(output):
    """
    The adds printed by C{ask --format json}, as lists of byte pairs.
    """
    return [
        [(jsonBytes(name), jsonBytes(value)) for name, value in json.loads(line)]
        for line in output.splitlines()
    ]


class CommandTestCase(TestCase):
    """
    Helpers for tests that run C{gossip} on a log in a fresh directory.
    """

    def setUp(self):
        self.directory = os.path.abspath(self.mktemp())
        os.makedirs(self.directory)
        self.log = os.path.join(self.directory, "test.log")

    def path(self, name):
        return os.path.join(self.directory, name)

    def succeed(self, *args, stdin=b""):
        """
        Run C{gossip ARGS...}, which must succeed silently on stderr.

        @return: its stdout.
        """
        status, out, err = run(*args, stdin=stdin)
        self.assertEqual((status, err), (0, b""), f"gossip {args!r} printed {out!r}")
        return out

    def say(self, *pairs):
        self.succeed("say", self.log, *pairs)

    def ask(self, *args):
        """
        The adds C{ask} prints for these arguments, as lists of byte pairs,
        without C{by} and C{at}.
        """
        out = self.succeed("ask", "--format", "json", *args)
        return [
            [pair for pair in add if pair[0] not in (b"by", b"at")]
            for add in jsonAdds(out)
        ]

    def identity(self):
        with open(self.log, "rb") as f:
            return decodeLine(f.readline())[0][1]


class RoundTripTests(CommandTestCase):
    """
    What C{say} writes, C{ask} reads back exactly, in every format.
    """

    def test_text(self):
        """
        C{say} appends the pairs given after C{by} and C{at}; C{ask} prints
        every add, the identity add first, as C{name=value} text.
        """
        self.say("subject=groceries", "body=eggs, milk")
        self.say("subject=x=y")
        me = self.identity().decode("ascii")
        self.assertEqual(
            self.succeed("ask", self.log).decode("utf-8").splitlines(),
            [
                f"I={me}",
                f"by={me} at=0 subject=groceries body=eggs, milk",
                f"by={me} at=1 subject=x=y",
            ],
        )

    def test_verbose(self):
        """
        C{say -v} prints the line it appended, which is the log's last line.
        """
        out = self.succeed("say", "-v", "--fsync", self.log, "a=b")
        with open(self.log, "rb") as f:
            self.assertEqual(f.readlines()[-1], out)

    def test_fileValues(self):
        """
        C{--file NAME=PATH} and C{--file NAME=-} (standard input) give values
        of any bytes, NUL and 0xFF included, after the C{NAME=VALUE} pairs;
        C{ask --format json} gives them back exactly, as strings when they
        are UTF-8 and as base64 when they are not.
        """
        everyByte = bytes(range(256)) * 2
        path = self.path("every-byte")
        with open(path, "wb") as f:
            f.write(everyByte)
        piped = b"with a NUL\0 and a \xff inside\n"
        self.succeed(
            "say", "--file", "blob=-", "--file", "all=" + path, self.log, "kind=blob",
            "text=h\u00e9llo \u65e5\u672c",
            stdin=piped,
        )
        out = self.succeed("ask", "--format", "json", self.log, "kind")
        [add] = [json.loads(line) for line in out.splitlines()]
        self.assertEqual([name for name, value in add], ["by", "at", "kind", "text", "blob", "all"])
        values = dict(add)
        self.assertEqual(values["kind"], "blob")
        self.assertEqual(values["text"], "h\u00e9llo \u65e5\u672c")
        self.assertEqual(set(values["blob"]), {"base64"})
        self.assertEqual(b64decode(values["blob"]["base64"]), piped)
        self.assertEqual(b64decode(values["all"]["base64"]), everyByte)

    def test_jsonUTF8(self):
        """
        UTF-8 values, NUL and control characters included, are JSON
        strings; anything else is base64.
        """
        nul = self.path("nul")
        with open(nul, "wb") as f:
            f.write(b"a\0b\n\x1b")
        latin1 = self.path("latin1")
        with open(latin1, "wb") as f:
            f.write("caf\u00e9".encode("latin-1"))
        self.succeed("say", "--file", "nul=" + nul, "--file", "latin1=" + latin1, self.log)
        out = self.succeed("ask", "--format", "json", self.log, "nul")
        values = dict(json.loads(out))
        self.assertEqual(values["nul"], "a\0b\n\x1b")
        self.assertEqual(values["latin1"], {"base64": "Y2Fm6Q=="})

    def test_optionsAnywhere(self):
        """
        Options may come after the log and the pairs or terms.
        """
        self.succeed("say", self.log, "a=1", "--fsync", "b=2")
        self.assertEqual(
            self.succeed("ask", self.log, "a", "--format", "json", "--last", "1"),
            self.succeed("ask", "--format", "json", "--last", "1", self.log, "a"),
        )
        self.assertEqual(self.ask(self.log, "b=2", "--last", "5"), [[(b"a", b"1"), (b"b", b"2")]])

    def test_raw(self):
        """
        C{ask --format raw} prints the log's own lines, byte for byte, and
        the original gossip.py's decoder reads them as the adds said.
        """
        blob = self.path("blob")
        with open(blob, "wb") as f:
            f.write(b"\0\xff<&>%+=\n")
        self.say("a=1")
        self.succeed("say", "--file", "b=" + blob, self.log, "a=2")
        self.say("c=3")
        with open(self.log, "rb") as f:
            log = f.read()
        self.assertEqual(self.succeed("ask", "--format", "raw", self.log), log)
        lines = log.splitlines(keepends=True)
        self.assertEqual(self.succeed("ask", "--format", "raw", self.log, "a"), b"".join(lines[1:3]))
        me = self.identity()
        self.assertEqual(
            original.decodeAdd(lines[2]),
            [(b"by", me), (b"at", b"1"), (b"a", b"2"), (b"b", b"\0\xff<&>%+=\n")],
        )

    def test_originalLog(self):
        """
        A log written by the original is printed losslessly: C{json} gives
        every add's bytes, C{raw} the file itself.
        """
        source = os.path.join(DATA, "original-basic.log")
        with open(os.path.join(DATA, "original-basic.expected.json")) as f:
            expected = [
                [(bytes.fromhex(name), bytes.fromhex(value)) for name, value in add]
                for add in json.load(f)["adds"]
            ]
        with open(source, "rb") as f:
            log = f.read()
        self.assertEqual(jsonAdds(self.succeed("ask", "--format", "json", source)), expected)
        self.assertEqual(self.succeed("ask", "--format", "raw", source), log)

    def test_damagedLog(self):
        """
        C{ask} skips damaged lines, noting each on stderr with its byte
        offset, and prints every intact add, still exit status 0.
        """
        log = self.path("damaged.log")
        good = [encodeAdd([(b"I", b"me")]), encodeAdd([(b"by", b"me"), (b"at", b"0"), (b"m", b"x")])]
        bad = good[1].replace(b"m=x", b"m=y")
        with open(log, "wb") as f:
            f.write(good[0] + bad + good[1] + b"torn tail")
        status, out, err = run("ask", "--format", "raw", log)
        self.assertEqual((status, out), (0, good[0] + good[1]))
        self.assertEqual(err.count(b"\n"), 1, err)
        self.assertIn(b"at byte %d" % (len(good[0]),), err)

    def test_textIsTerminalSafe(self):
        """
        C{ask}'s text format shows control characters, C1 controls and bytes
        that are not UTF-8 as escapes, never raw, and tells them apart from
        the same escapes typed literally.
        """
        value = self.path("value")
        with open(value, "wb") as f:
            f.write(b"\x1b[31mred\x07\tcsi\xc2\x9b2J\r\n\xff|\\xff")
        self.succeed("say", "--file", "m=" + value, self.log)
        out = self.succeed("ask", self.log, "m")
        self.assertEqual(out.count(b"\n"), 1)
        self.assertEqual(out[-1:], b"\n")
        for raw in [b"\x1b", b"\x07", b"\t", b"\r", b"\xc2\x9b", b"\xff"]:
            self.assertNotIn(raw, out[:-1])
        text = out.decode("utf-8")
        self.assertIn("m=\\x1b[31mred\\x07\\tcsi\\u009b2J\\r\\n\\xff|", text)
        self.assertEqual(text.count("\\\\"), 1, text)
        [rest] = text.rstrip("\n").split("\\r\\n")[1:]
        shownByte, shownText = rest.split("|")
        self.assertNotEqual(shownByte, shownText)


class QueryTests(CommandTestCase):
    """
    C{ask}'s terms: every name must be present and, for a name given with
    values, one of those values.
    """

    def setUp(self):
        super().setUp()
        self.say("tag=a", "n=1")
        self.say("tag=b", "n=2")
        self.say("tag=c", "x=1", "n=3")
        self.say("x=2", "n=4")
        self.say("tag=a", "tag=d", "n=5")
        self.say("tag=", "n=6")
        self.say("eq=a=b", "n=7")

    def numbers(self, *terms):
        return [dict(add)[b"n"] for add in self.ask(self.log, *terms) if b"n" in dict(add)]

    def test_everything(self):
        """
        No terms print every add, the identity add first.
        """
        adds = self.ask(self.log)
        self.assertEqual(adds[0], [(b"I", self.identity())])
        self.assertEqual(len(adds), 8)

    def test_name(self):
        """
        A name alone matches every add that has it, whatever its value.
        """
        self.assertEqual(self.numbers("tag"), [b"1", b"2", b"3", b"5", b"6"])
        self.assertEqual(self.ask(self.log, "I"), [[(b"I", self.identity())]])

    def test_values(self):
        """
        Values for one name are alternatives, each compared with every value
        the add has for that name; an empty value is a value.
        """
        self.assertEqual(self.numbers("tag=a"), [b"1", b"5"])
        self.assertEqual(self.numbers("tag=a", "tag=b"), [b"1", b"2", b"5"])
        self.assertEqual(self.numbers("tag=d"), [b"5"])
        self.assertEqual(self.numbers("tag="), [b"6"])
        self.assertEqual(self.numbers("eq=a=b"), [b"7"])
        self.assertEqual(self.numbers("tag=zzz"), [])

    def test_conjunction(self):
        """
        Different names must all match.
        """
        self.assertEqual(self.numbers("tag", "x"), [b"3"])
        self.assertEqual(self.numbers("tag=c", "x=1"), [b"3"])
        self.assertEqual(self.numbers("tag=a", "x"), [])
        self.assertEqual(self.numbers("tag", "tag=b"), [b"2"])

    def test_byAndAt(self):
        """
        C{by} and C{at} can be asked for like any name.
        """
        me = self.identity().decode("ascii")
        self.assertEqual(self.numbers("by=" + me, "at=3"), [b"4"])
        self.assertEqual(len(self.numbers("by")), 7)

    def test_last(self):
        """
        C{--last N} prints the last N matching adds, in log order.
        """
        self.assertEqual(self.numbers("--last", "2", "tag"), [b"5", b"6"])
        self.assertEqual(self.numbers("--last", "3"), [b"5", b"6", b"7"])
        self.assertEqual(self.numbers("--last", "100", "tag=a"), [b"1", b"5"])
        self.assertEqual(self.ask("--last", "0", self.log), [])
        self.assertEqual(len(self.ask("--last", "100", self.log)), 8)
        with open(self.log, "rb") as f:
            lastLine = f.readlines()[-1]
        self.assertEqual(self.succeed("ask", "--last", "1", "--format", "raw", self.log), lastLine)


class FollowTests(CommandTestCase):
    """
    C{ask --follow} keeps printing the matching adds other processes append.
    """

    def test_follow(self):
        self.say("kind=wanted", "n=0")
        follower = Spawned(
            self, "ask", "--follow", "--format", "json", self.log, "kind=wanted",
            stdin=subprocess.DEVNULL,
        )
        follower.readUntil(b'["n", "0"]')
        started = time.monotonic()
        self.say("kind=unwanted", "n=1")
        self.say("kind=wanted", "n=2")
        follower.readUntil(b'["n", "2"]')
        latency = time.monotonic() - started
        self.say("other=1", "n=3")
        self.say("kind=wanted", "n=4")
        follower.readUntil(b'["n", "4"]')
        printed = [dict(add)[b"n"] for add in jsonAdds(follower.output)]
        self.assertEqual(printed, [b"0", b"2", b"4"])
        self.assertEqual(follower.process.poll(), None)
        self.assertEqual(follower.stderr(), b"")
        # inotify makes this immediate; the periodic rescan bounds it.
        self.assertTrue(latency < 5, latency)

    def test_followFromLast(self):
        """
        C{--last} and C{--follow} together print the last matches, then new
        ones, and a line torn mid-write is not printed until it is complete.
        """
        for n in range(5):
            self.say(f"n={n}")
        follower = Spawned(
            self, "ask", "--last", "2", "--follow", "--format", "raw", self.log, "n",
            stdin=subprocess.DEVNULL,
        )
        follower.readUntil(b"&n=4>")
        line = encodeAdd([(b"by", b"other"), (b"at", b"0"), (b"n", b"torn")])
        with open(self.log, "ab") as f:
            f.write(line[:20])
            f.flush()
            follower.readFor(0.5)
            f.write(line[20:])
        follower.readUntil(line)
        self.assertNotIn(b"&n=0>", follower.output)
        self.assertNotIn(b"&n=2>", follower.output)
        self.assertEqual(follower.output.count(b"\n"), 3)


class ChatTests(CommandTestCase):
    """
    C{gossip chat}.
    """

    def test_chat(self):
        """
        Chat creates a missing log, says what is typed, shows what others
        say, and on end of input says it quit and exits 0.
        """
        chat = Spawned(self, "chat", self.log, "alice")
        chat.readUntil(b"* alice joined\n")
        chat.process.stdin.write(b"hello there\n")
        chat.process.stdin.flush()
        chat.readUntil(b"<alice> hello there\n")
        self.succeed("say", self.log, "n=bob", "m=yo")
        chat.readUntil(b"<bob> yo\n")
        self.assertEqual(chat.finish(), 0)
        self.assertEqual(chat.stderr(), b"")
        self.assertEqual(
            self.ask(self.log)[1:],
            [
                [(b"n", b"alice"), (b"join", b"1")],
                [(b"n", b"alice"), (b"m", b"hello there")],
                [(b"n", b"bob"), (b"m", b"yo")],
                [(b"n", b"alice"), (b"quit", b"1")],
            ],
        )

    def test_unfinishedLine(self):
        """
        A last line typed without a newline is still said before quitting.
        """
        chat = Spawned(self, "chat", self.log, "alice")
        chat.readUntil(b"* alice joined\n")
        chat.process.stdin.write(b"bye")
        self.assertEqual(chat.finish(), 0)
        self.assertEqual(
            self.ask(self.log, "n")[-2:],
            [[(b"n", b"alice"), (b"m", b"bye")], [(b"n", b"alice"), (b"quit", b"1")]],
        )

    def test_history(self):
        """
        Joining shows at most the last 16 chat lines, newest last; other
        adds are not shown.
        """
        for n in range(30):
            self.say("n=bob", f"m=line {n}")
            self.say(f"unrelated={n}")
        chat = Spawned(self, "chat", self.log, "alice")
        chat.readUntil(b"<bob> line 29\n")
        chat.readUntil(b"* alice joined\n")
        self.assertEqual(chat.finish(), 0)
        shown = chat.output.decode("utf-8").splitlines()
        self.assertTrue(len(shown) <= 16, shown)
        messages = [line for line in shown if line.startswith("<")]
        self.assertEqual(
            messages, [f"<bob> line {n}" for n in range(30 - len(messages), 30)]
        )
        self.assertTrue(len(messages) >= 15, shown)
        self.assertNotIn("unrelated", chat.output.decode("utf-8"))

    def test_terminalSafe(self):
        """
        Escape sequences and control characters in nicks and messages are
        shown escaped, never sent to the terminal.
        """
        message = self.path("message")
        with open(message, "wb") as f:
            f.write("\x1b[2J\x1b[31mred\rcsi\u009b1m\x00".encode("utf-8") + b"\xff")
        self.succeed("say", "--file", "m=" + message, self.log, "n=ev\x1b]0;title\x07e")
        chat = Spawned(self, "chat", self.log, "alice")
        chat.readUntil(b"* alice joined\n")
        self.assertEqual(chat.finish(), 0)
        self.assertIn(
            b"<ev\\x1b]0;title\\x07e> \\x1b[2J\\x1b[31mred\\rcsi\\u009b1m\\x00\\xff\n",
            chat.output,
        )
        for raw in [b"\x1b", b"\x07", b"\r", b"\x00", b"\xc2\x9b", b"\xff"]:
            self.assertNotIn(raw, chat.output)

    def test_directory(self):
        """
        Chat on a directory fails in one line.
        """
        status, out, err = run("chat", self.directory, "alice")
        self.assertNotEqual(status, 0)
        self.assertEqual(err.count(b"\n"), 1, err)
        self.assertNotIn(b"Traceback", err)


class CheckTests(CommandTestCase):
    """
    C{gossip check LOG} finds every damaged line, says what each origin
    lacks, and rebuilds the cache so that a sync fetches the lost adds.
    """

    def check(self, log):
        status, out, err = run("check", log)
        self.assertEqual(err, b"")
        return status, out.decode("utf-8").splitlines()

    def test_clean(self):
        for n in range(3):
            self.say(f"n={n}")
        status, lines = self.check(self.log)
        self.assertEqual(status, 0)
        self.assertEqual(
            lines, [f"{self.log}: 3 adds intact, 0 damaged regions (0 bytes); cache rebuilt"]
        )

    def test_damaged(self):
        """
        A flipped byte is reported as its line's region, and the add it
        held as missing from its origin's run.
        """
        for n in range(5):
            self.say(f"n={n}", "m=abcdefghijklmnopqrstuvwxyz")
        # Line 0 is the identity add; line 3 holds at 2.
        offset, length = flipByte(self.log, 3)
        status, lines = self.check(self.log)
        self.assertEqual(status, 1)
        self.assertEqual(
            lines,
            [
                f"{self.log}: damaged: {length} bytes at byte {offset}",
                f"{self.log}: {self.identity().decode('ascii')} lacks at 2",
                f"{self.log}: 4 adds intact, 1 damaged region ({length} bytes); cache rebuilt",
            ],
        )

    def syncedPeer(self):
        """
        A peer log synced from this one, large enough that the cache's
        samples of it are unlikely to meet damage in its middle.

        @return: its path, and the index of the line of the add C{n=1500}.
        """
        identity = b"Xg3fTa0lVbq6Yc2mZp8Q"
        with open(self.log, "wb") as f:
            f.write(encodeAdd([(b"I", identity)]))
            for n in range(3000):
                f.write(encodeAdd([(b"by", identity), (b"at", b"%d" % n), (b"n", b"%d" % n)]))
        os.makedirs(self.path("b"))
        peer = self.path("b/test.log")
        self.succeed("sync", "--once", "--create", peer, self.log)
        with open(peer, "rb") as f:
            lines = f.read().split(b"\n")
        return peer, next(i for i, line in enumerate(lines) if b"&n=1500>" in line)

    def assertRestored(self, peer):
        """
        Every add of this log is intact in C{peer}, beside the damaged line.
        """
        # ask notes the damaged line on stderr, and prints every add.
        status, out, err = run("ask", "--format", "json", peer, "n")
        self.assertEqual(status, 0)
        self.assertEqual(
            sorted(int(dict(add)[b"n"]) for add in jsonAdds(out)), list(range(3000))
        )
        status, lines = self.check(peer)
        self.assertEqual(status, 1)
        self.assertIn("3000 adds intact", lines[-1])

    def test_syncRestores(self):
        """
        After C{check}, the next C{sync --once} takes back from the peer the
        add that was damaged, though the damage changed neither the log's
        size nor its modification time.
        """
        peer, index = self.syncedPeer()
        flipByte(peer, index)
        self.assertEqual(self.check(peer)[0], 1)
        self.succeed("sync", "--once", peer, self.log)
        self.assertRestored(peer)

    def test_syncNoticesRewrite(self):
        """
        Without C{check}, a log changed in place (same size and inode, a
        later modification time) is read again by the next sync, which
        takes back the add damaged.
        """
        peer, index = self.syncedPeer()
        flipByte(peer, index, keepTime=False)
        self.succeed("sync", "--once", peer, self.log)
        self.assertRestored(peer)


class ErrorTests(CommandTestCase):
    """
    Every mistake a user can make is reported in one line on stderr, with a
    non-zero exit status and no traceback, and changes nothing.
    """

    def fails(self, *args, stdin=b"", prefix=()):
        status, out, err = run(*args, stdin=stdin, prefix=prefix)
        self.assertNotEqual(status, 0, (args, out, err))
        self.assertNotIn(b"Traceback", err)
        self.assertTrue(err.startswith(b"gossip: "), err)
        self.assertEqual(err.count(b"\n"), 1, err)
        self.assertTrue(err.endswith(b"\n"), err)
        return err.decode("utf-8")

    def test_askMissing(self):
        self.assertIn("No such file", self.fails("ask", self.log))
        self.assertFalse(os.path.exists(self.log))

    def test_checkMissing(self):
        """
        A log that cannot be checked is not a damaged one: exit status 2.
        """
        self.assertIn("No such file", self.fails("check", self.log))
        self.assertEqual(run("check", self.log)[0], 2)
        self.assertFalse(os.path.exists(self.log))
        self.assertEqual(run("check", self.directory)[0], 2)

    def withoutPermissions(self):
        """
        A command prefix that makes files' permission bits apply to the
        command: none for a user, and for root (who may read anything) one
        that drops the capabilities that let it.
        """
        if os.geteuid() != 0:
            return ()
        prefix = (
            "setpriv",
            "--bounding-set=-dac_override,-dac_read_search",
            "--inh-caps=-dac_override,-dac_read_search",
            "--",
        )
        probe = self.path("probe")
        with open(probe, "wb"):
            pass
        os.chmod(probe, 0)
        try:
            denied = subprocess.run([*prefix, "cat", probe], capture_output=True).returncode
        except OSError:
            denied = 0
        if not denied:
            raise SkipTest(
                "running as root, where chmod 000 does not deny reading, and "
                "setpriv cannot drop the capabilities that let root read"
            )
        return prefix

    def test_unreadable(self):
        prefix = self.withoutPermissions()
        self.say("a=1")
        os.chmod(self.log, 0)
        self.assertIn("Permission denied", self.fails("ask", self.log, prefix=prefix))
        self.assertIn("Permission denied", self.fails("say", self.log, "a=2", prefix=prefix))
        self.assertIn("Permission denied", self.fails("chat", self.log, prefix=prefix))

    def test_readOnly(self):
        """
        A log that may be read but not written can be asked, not said to.
        """
        prefix = self.withoutPermissions()
        self.say("a=1")
        os.chmod(self.log, 0o444)
        status, out, err = run("ask", "--format", "raw", self.log, prefix=prefix)
        self.assertEqual((status, out.count(b"\n"), err), (0, 2, b""))
        self.assertIn("Permission denied", self.fails("say", self.log, "a=2", prefix=prefix))

    def test_missingDirectory(self):
        self.fails("say", self.path("nowhere/test.log"), "a=1")

    def test_noEquals(self):
        self.assertIn("NAME=VALUE", self.fails("say", self.log, "a=1", "oops"))
        self.assertFalse(os.path.exists(self.log))

    def test_emptyName(self):
        self.assertIn("empty name", self.fails("say", self.log, "=value"))
        self.assertIn("empty name", self.fails("say", "--file", "=-", self.log))
        self.say("a=1")
        self.assertIn("empty name", self.fails("ask", self.log, "=value"))

    def test_reserved(self):
        path = self.path("value")
        with open(path, "wb") as f:
            f.write(b"x")
        for name in ["by", "at", "I"]:
            self.assertIn("reserved", self.fails("say", self.log, "a=1", f"{name}=x"))
            self.assertIn("reserved", self.fails("say", "--file", f"{name}={path}", self.log))
        self.assertFalse(os.path.exists(self.log))

    def test_directoryAsLog(self):
        self.fails("ask", self.directory)
        self.fails("say", self.directory, "a=1")

    def test_nothingToSay(self):
        self.fails("say", self.log)
        self.assertFalse(os.path.exists(self.log))

    def test_usage(self):
        self.fails()
        self.fails("frob", self.log)
        self.fails("say")
        self.fails("ask")
        self.fails("ask", "--format", "yaml", self.log)
        self.fails("say", "--no-such-option", self.log, "a=1")

    def test_badLast(self):
        self.say("a=1")
        self.fails("ask", "--last", "many", self.log)
        self.fails("ask", "--last", "-1", self.log)
        self.fails("ask", "--last", self.log)

    def test_fileMissing(self):
        self.assertIn("No such file", self.fails("say", "--file", "a=" + self.path("none"), self.log))
        self.fails("say", "--file", "a=" + self.directory, self.log)
        self.fails("say", "--file", "no-equals", self.log)
        self.assertFalse(os.path.exists(self.log))

    def test_notFiles(self):
        """
        C{ask}, C{ask --last}, C{say} and C{chat} refuse a FIFO, a device
        and a directory at once, without opening them (a FIFO would hang).
        """
        fifo = self.path("fifo")
        os.mkfifo(fifo)
        for path in (fifo, os.devnull, self.directory):
            for args in (["ask", path], ["ask", "--last", "3", path], ["say", path, "a=1"], ["chat", path, "me"]):
                self.fails(*args)
        self.assertEqual(sorted(os.listdir(self.directory)), ["fifo"])

    def test_notALogFile(self):
        """
        C{say} does not turn a file with no add in it into a log.
        """
        with open(self.log, "wb") as f:
            f.write(b"some notes, without a line feed")
        self.assertIn("not a gossip log", self.fails("say", self.log, "a=2"))
        with open(self.log, "rb") as f:
            self.assertEqual(f.read(), b"some notes, without a line feed")
        self.assertEqual(os.listdir(self.directory), ["test.log"])

    def test_notAGossipLog(self):
        """
        A file of adds without an identity add is not appended to.
        """
        with open(self.log, "wb") as f:
            f.write(encodeAdd([(b"by", b"x"), (b"at", b"0"), (b"a", b"1")]))
        self.assertIn("not a gossip log", self.fails("say", self.log, "a=2"))


class DamageTests(CommandTestCase):
    """
    The command line on logs holding damage: it skips it with a note, and
    never fails because of it.
    """

    def test_notSerial(self):
        """
        A line whose C{at} is 4,300 nines (which Python's int() refuses to
        read) is skipped by C{ask}, C{ask --last} and C{say}, with or
        without the cache.
        """
        self.say("m=before")
        body = b"by=peer&at=" + b"9" * 4300 + b"&m=bricks"
        with open(self.log, "ab") as f:
            f.write(b"%s %d<%s>%d\n" % (lineHash(body), len(body), body, len(body)))
        cache = self.path(".test.log.gossip-cache")
        os.unlink(cache)
        for step in range(2):
            self.say(f"m=after{step}")
            self.assertTrue(os.path.exists(cache))
            for last in ([], ["--last", "5"]):
                status, out, err = run("ask", "--format", "json", *last, self.log)
                self.assertEqual(status, 0, err)
                self.assertEqual(
                    [dict(add)[b"m"] for add in jsonAdds(out) if b"m" in dict(add)],
                    [b"before"] + [b"after%d" % (n,) for n in range(step + 1)],
                )
                if not last:
                    self.assertIn(b"skipped a corrupt line", err)
                    self.assertNotIn(b"Traceback", err)


    def test_damageSummarised(self):
        """
        C{ask} tells the first few damaged lines one by one and then only
        how many in all, and still prints every intact add and exits 0.
        """
        self.say("m=first")
        with open(self.log, "ab") as f:
            f.write(b"".join(b"garbage %d\n" % (n,) for n in range(50)))
        self.say("m=last")
        for last in ([], ["--last", "5"]):
            status, out, err = run("ask", "--format", "json", *last, self.log)
            self.assertEqual(status, 0, err)
            self.assertEqual(
                [dict(add)[b"m"] for add in jsonAdds(out) if b"m" in dict(add)],
                [b"first", b"last"],
            )
            lines = err.decode().splitlines()
            self.assertEqual(len(lines), 4, err)
            self.assertEqual(sum("skipped a corrupt line at byte" in line for line in lines), 3)
            self.assertIn("skipped 50 corrupt lines in all", lines[-1])

    def test_notALog(self):
        """
        A file with lines but not one intact add is not a gossip log: C{ask}
        and C{ask --last} say so in a few lines and exit 1.
        """
        with open(self.log, "wb") as f:
            f.write(b"".join(b"%d\n" % (n,) for n in range(1000)))
        for last in ([], ["--last", "3"]):
            status, out, err = run("ask", *last, self.log)
            self.assertEqual((status, out), (1, b""))
            lines = err.decode().splitlines()
            self.assertLessEqual(len(lines), 5, err)
            self.assertIn("not a gossip log: 1000 lines, not one intact add", lines[-1])
        # An empty file is an empty log.
        open(self.log, "wb").close()
        self.assertEqual(run("ask", self.log), (0, b"", b""))


class ProgramTests(CommandTestCase):
    """
    The command as a program: help, version, pipes, concurrency, startup.
    """

    def test_exitStatus(self):
        """
        As a process, C{gossip} exits 0 on success, 1 when a log cannot be
        used and 2 on a usage mistake, with one line on stderr for each
        failure: what the tests that run it in their own process rely on.
        """
        self.assertEqual(runProcess("say", self.log, "a=1"), (0, b"", b""))
        status, out, err = runProcess("ask", "--format", "raw", self.log)
        self.assertEqual((status, out.count(b"\n"), err), (0, 2, b""))
        for args, expected in [
            (("ask", self.path("missing.log")), 1),
            (("say", self.log), 2),
            (("ask", "--last", "x", self.log), 2),
        ]:
            status, out, err = runProcess(*args)
            self.assertEqual((status, out), (expected, b""), args)
            self.assertTrue(err.startswith(b"gossip: ") and err.count(b"\n") == 1, err)
            self.assertNotIn(b"Traceback", err)

    def test_version(self):
        from gossip import __version__

        self.assertEqual(self.succeed("--version"), f"gossip {__version__}\n".encode())

    def test_help(self):
        """
        C{--help} works for the command and for each command it lists.
        """
        out = self.succeed("--help").decode("utf-8")
        self.assertIn("usage: gossip", out)
        listed = out.split("  COMMAND\n", 1)[1].split("\n\n")[0]
        commands = [line.split()[0] for line in listed.splitlines()]
        self.assertTrue({"say", "ask", "chat"} <= set(commands), commands)
        for command in commands:
            self.assertIn(
                b"usage: gossip " + command.encode(), self.succeed(command, "--help")
            )

    def bigLog(self, count=100_000):
        with open(self.log, "wb") as f:
            f.write(encodeAdd([(b"I", b"me")]))
            f.write(
                b"".join(
                    encodeAdd([(b"by", b"me"), (b"at", b"%d" % i), (b"m", b"message %d" % i)])
                    for i in range(count)
                )
            )

    def test_closedPipe(self):
        """
        C{gossip ask LOG | head -1}: the reader going away ends C{ask}
        quietly, with status 0.
        """
        self.bigLog()
        buffered = {k: v for k, v in ENV.items() if k != "PYTHONUNBUFFERED"}
        unbuffered = dict(ENV, PYTHONUNBUFFERED="1")
        for fmt, env in [("text", buffered), ("json", unbuffered), ("raw", buffered), ("raw", unbuffered)]:
            head = subprocess.run(
                ["sh", "-c", '"$@" | head -1', "sh",
                 *gossipCommand("ask", "--format", fmt, self.log)],
                capture_output=True,
                env=env,
                timeout=DEADLINE,
            )
            self.assertEqual(
                (head.returncode, head.stdout.count(b"\n"), head.stderr), (0, 1, b""), fmt
            )
            process = subprocess.Popen(
                gossipCommand("ask", "--format", fmt, self.log),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=env,
            )
            process.stdout.readline()
            process.stdout.close()
            err = process.stderr.read()
            process.stderr.close()
            self.assertEqual((process.wait(DEADLINE), err), (0, b""), fmt)

    def test_unbufferedOutput(self):
        """
        Under C{PYTHONUNBUFFERED}, C{ask} still prints every add whole.
        """
        self.bigLog(20_000)
        with open(self.log, "rb") as f:
            log = f.read()
        done = subprocess.run(
            gossipCommand("ask", "--format", "raw", self.log),
            capture_output=True,
            env=dict(ENV, PYTHONUNBUFFERED="1"),
            timeout=DEADLINE,
        )
        self.assertEqual((done.returncode, done.stderr), (0, b""))
        self.assertTrue(done.stdout == log)

    def test_interrupted(self):
        """
        ^C stops C{ask --follow} without a traceback.
        """
        self.say("a=1")
        follower = Spawned(self, "ask", "--follow", self.log, stdin=subprocess.DEVNULL)
        follower.readUntil(b"a=1\n")
        follower.process.send_signal(signal.SIGINT)
        self.assertNotEqual(follower.finish(), 0)
        self.assertNotIn(b"Traceback", follower.stderr())

    def test_concurrentSays(self):
        """
        Processes saying at once all get their adds in, with distinct
        serial numbers, under one identity.
        """
        processes = [
            subprocess.Popen(
                gossipCommand("say", self.log, f"n={n}"),
                stderr=subprocess.PIPE,
                env=ENV,
            )
            for n in range(8)
        ]
        for process in processes:
            self.assertEqual(process.wait(DEADLINE), 0)
            self.assertEqual(process.stderr.read(), b"")
            process.stderr.close()
        adds = jsonAdds(self.succeed("ask", "--format", "json", self.log))
        self.assertEqual(len(adds), 9)
        [identity] = adds[0]
        self.assertEqual(identity[0], b"I")
        self.assertEqual({dict(add)[b"by"] for add in adds[1:]}, {identity[1]})
        self.assertEqual(sorted(int(dict(add)[b"at"]) for add in adds[1:]), list(range(8)))
        self.assertEqual(sorted(dict(add)[b"n"] for add in adds[1:]), [b"%d" % n for n in range(8)])

    def test_removedCache(self):
        """
        The cache is only an optimisation: removed or damaged, the next
        C{say} still continues the log's serial numbers.
        """
        self.say("n=0")
        cache = self.path(".test.log.gossip-cache")
        self.assertTrue(os.path.exists(cache))
        os.unlink(cache)
        self.say("n=1")
        with open(cache, "wb") as f:
            f.write(b"nonsense")
        self.say("n=2")
        ats = [dict(add)[b"at"] for add in jsonAdds(self.succeed("ask", "--format", "json", self.log, "n"))]
        self.assertEqual(ats, [b"0", b"1", b"2"])

    def test_noReactor(self):
        """
        C{say} and C{ask} import nothing from Twisted, so that they start
        fast.
        """
        code = (
            "import sys\n"
            "from gossip.cli.main import main\n"
            "status = main(sys.argv[1:])\n"
            "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('twisted', 'zope'))\n"
            "assert 'twisted.internet.reactor' not in sys.modules, loaded\n"
            "assert not loaded, loaded\n"
            "sys.exit(status)\n"
        )
        for args in [
            ["say", self.log, "a=1"],
            ["say", "--fsync", self.log, "a=2"],
            ["ask", self.log],
            ["ask", "--format", "json", self.log, "a=1"],
            ["ask", "--format", "raw", "--last", "1", self.log],
            ["check", self.log],
        ]:
            done = subprocess.run(
                [sys.executable, "-c", code, *args],
                capture_output=True,
                env=ENV,
                timeout=DEADLINE,
            )
            self.assertEqual((done.returncode, done.stderr), (0, b""), args)

    def test_libraryAMPHasTLS(self):
        """
        Importing gossip's sync protocol leaves AMP as it is, StartTLS
        included, for whatever else uses AMP in the process (a daemon's
        other services); TLS is imported later all the same.
        """
        code = (
            "import gossip.sync.protocol\n"
            "from twisted.protocols import amp\n"
            "assert amp.ssl is not None\n"
            "import gossip.transport.tls\n"
        )
        done = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, env=ENV, timeout=DEADLINE
        )
        self.assertEqual((done.returncode, done.stderr), (0, b""))
