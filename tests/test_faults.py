"""
Crash trials: real C{gossip say} and C{gossip sync} processes killed with
SIGKILL at random instants, and what a user relies on afterwards: no intact
add lost, no damaged add read, no C{(by, at)} written twice, and the next
C{say} or sync carrying on as if nothing had happened.

Each test runs C{GOSSIP_FAULT_TRIALS} trials (a few by default, so that CI
runs them all in about a minute; set it higher to run more).  The random
choices and delays of a test come from a seed printed in every failure;
C{GOSSIP_FAULT_SEED=SEED} replays them (the choices and delays, not the
scheduling of the processes).  Counts of what the kills hit are logged to
C{_trial_temp/test.log}.

Every wait is bounded by a deadline; every process a trial starts is killed
when it ends.
"""

import os
import random
import re
import signal
import subprocess
import sys
import time
from base64 import b64encode
from collections import Counter
from hashlib import sha256

from twisted.logger import Logger
from twisted.trial.unittest import TestCase

from gossip.store.format import decodeLine, encodeAdd
from gossip.store.logfile import Log, entries

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, PYTHONPATH=ROOT)
# The longest any one step may take before a test fails: generous, since a
# loaded machine can be slow to start a process.
DEADLINE = 30.0
TRIALS = int(os.environ.get("GOSSIP_FAULT_TRIALS", "3"))
SEED = os.environ.get("GOSSIP_FAULT_SEED") or str(random.SystemRandom().getrandbits(32))

log = Logger()


def gossipCommand(*args):
    return [sys.executable, "-m", "gossip", *args]


def run(*args):
    """
    Run C{gossip ARGS...} to completion.

    @return: C{(exit status, stdout, stderr)}.
    """
    done = subprocess.run(
        gossipCommand(*args),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        env=ENV,
        timeout=DEADLINE,
    )
    return done.returncode, done.stdout, done.stderr


def waitFor(predicate, message, interval=0.002):
    """
    Poll C{predicate} until it is true; fail after L{DEADLINE} seconds.
    """
    deadline = time.monotonic() + DEADLINE
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{message} not within {DEADLINE} s")
        time.sleep(interval)


def fileSize(path):
    """
    The size of the file at C{path}, 0 if there is none.
    """
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return 0


def lockHolder(path):
    """
    The id of the process holding a C{flock} on the file at C{path}, or
    L{None}.
    """
    try:
        inode = os.stat(path).st_ino
        with open("/proc/locks") as f:
            locks = f.read()
    except FileNotFoundError:
        return None
    for line in locks.splitlines():
        # "1: FLOCK  ADVISORY  WRITE 1234 fe:00:5678 0 EOF"
        fields = line.split()
        if fields[1] == "FLOCK" and fields[5].rpartition(":")[2] == str(inode):
            return int(fields[4])
    return None


def sleepUntil(instant):
    """
    Wait until C{time.monotonic()} reaches C{instant}: the random moment a
    trial kills a process, which is the point of the trial rather than a
    wait for something to happen.
    """
    time.sleep(max(0.0, instant - time.monotonic()))


_HASH = re.compile(rb"[A-Za-z0-9+/]{11}").fullmatch


def intactBody(record):
    """
    The body of C{record} (a line without its LF) if it is an intact add as
    docs/format.md defines one, judged here without gossip's own checks;
    L{None} otherwise.
    """
    head, less, rest = record.partition(b"<")
    digest, space, length = head.partition(b" ")
    body, more, again = rest.rpartition(b">")
    if not (less and space and more and _HASH(digest) and length.isdigit()):
        return None
    if again != length or int(length) != len(body) or b">" in body:
        return None
    if b64encode(sha256(body).digest())[:11] != digest:
        return None
    if any(item and b"=" not in item for item in body.split(b"&")):
        return None
    return body


class Reading:
    """
    What gossip's reader returns from a log file, each line it calls an add
    checked against L{intactBody} and each line it skips too.

    @ivar identity: the value of the identity add (the first add, C{I}).
    @ivar identities: how many identity adds (C{I=...}) there are.
    @ivar adds: C{(by, at, line)} of every other add, in order; C{line}
        has its LF.
    @ivar damaged: how many complete lines were skipped as damaged.
    @ivar tail: the unterminated bytes at the end of the file.
    """

    def __init__(self, path):
        self.identity = None
        self.identities = 0
        self.adds = []
        self.damaged = 0
        self.tail = b""
        if not os.path.exists(path):
            # Every say was killed before it created the log.
            return
        with open(path, "rb") as f:
            end = 0
            for offset, record, body in entries(f):
                end = offset + len(record) + 1
                mine = intactBody(record)
                if body is None:
                    if mine is not None:
                        raise AssertionError(f"intact add at byte {offset} skipped: {record!r}")
                    self.damaged += 1
                    continue
                if mine != body:
                    raise AssertionError(
                        f"damaged line at byte {offset} read as an add: {record!r}"
                    )
                self._absorb(body, record + b"\n")
            f.seek(end)
            self.tail = f.read()

    def _absorb(self, body, line):
        if body.startswith(b"I="):
            self.identities += 1
            if self.identity is None:
                self.identity = body[2:]
            return
        # Every add these trials write starts with by and at, neither
        # escaped.
        by, at = body.split(b"&", 2)[:2]
        if not (by.startswith(b"by=") and at.startswith(b"at=")):
            raise AssertionError(f"an add without by and at first: {line!r}")
        self.adds.append((by[3:], int(at[3:]), line))

    @property
    def keys(self):
        return [(by, at) for by, at, line in self.adds]

    def duplicates(self):
        """
        The C{(by, at)} of the adds there more than once.
        """
        return sorted(key for key, count in Counter(self.keys).items() if count > 1)


def wholeButLineFeed(tail):
    """
    Whether a killed writer's unfinished last line C{tail} is a whole add
    but for its LF, which the next append ends and keeps (see
    L{TornBeforeLineFeedTests}).
    """
    return intactBody(tail) is not None


def children(pid):
    """
    The ids of the child processes of C{pid} (none once it has exited).
    """
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(child) for child in f.read().split()]
    except OSError:
        return []


def gone(pid):
    """
    Whether process C{pid} has exited (a zombie, or reaped).
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            # The state follows the command's name, in parentheses.
            return f.read().rpartition(b")")[2].split()[0] == b"Z"
    except OSError:
        return True


def kill(pid):
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


class TrialsMixin:
    """
    Runs a test's trials, each with its own random source, and says in any
    failure which trial failed and how to replay it.
    """

    def trials(self):
        """
        @return: an iterator of C{(index, random)} for each trial.
        """
        for index in range(TRIALS):
            yield index, random.Random(f"{SEED}/{self.id()}/{index}")

    def failed(self, index, error):
        """
        Fail the test for C{error}, raised by trial C{index} (-1 for a run
        that measures how long an unkilled one takes).
        """
        which = "calibration" if index < 0 else f"trial {index + 1} of {TRIALS}"
        self.fail(
            f"{which} failed (replay with GOSSIP_FAULT_SEED={SEED}): "
            f"{type(error).__name__}: {error}"
        )

    def spawn(self, argv, stderr):
        """
        Start C{argv}, to be killed when the test ends if it has not
        exited.
        """
        process = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr, env=ENV
        )
        self.addCleanup(self._reap, process)
        return process

    @staticmethod
    def _reap(process):
        if process.poll() is None:
            process.kill()
        process.wait(DEADLINE)

    def timed(self, *args):
        """
        How long C{gossip ARGS...} takes, run to completion.
        """
        start = time.monotonic()
        status, out, err = run(*args)
        self.assertEqual(status, 0, err)
        return time.monotonic() - start


# Padding for large values: letters, which need no escaping.
_PAD = b"abcdefghijklmnopqrstuvwxyz" * (1 << 16)


def pad(size):
    return (_PAD * (size // len(_PAD) + 1))[:size]


def valueForLine(identity, at, length):
    """
    A value of C{pad} that makes C{identity}'s add C{at} a line of exactly
    C{length} bytes, or L{None} if none does.
    """
    for size in range(max(0, length - 80), length):
        key = [(b"by", identity), (b"at", b"%d" % (at,))]
        if len(encodeAdd(key + [(b"pad", pad(size))])) == length:
            return pad(size)
    return None


SAY_COUNTS = ("anytime", "locked", "says", "kills", "landed", "torn", "litter")


class SayTrialsMixin(TrialsMixin):
    """
    Trials in which several C{gossip say} processes append to one log at
    once, and some are killed at random instants.

    Each says C{n=N} and either a short C{m} or, for a third of them, a
    large C{pad} from a file (up to 4 MiB), whose longer write is likelier
    to be cut.
    """

    options = ()

    def test_kills(self):
        """
        After any number of says killed at any instant, the log reads with
        no damaged add returned; each add is one that was said, and every
        say that exited 0 has its add there exactly once; the node's C{at}s
        are exactly 0 to N-1 (a killed say's C{at} is taken again by the
        next say, since it is chosen under the lock from the intact adds);
        at most one damaged line per killed say; and the next say appends
        with C{at} N.
        """
        window = self.timed("say", *self.options, self.mktemp(), "m=calibrating")
        counts = Counter()
        for index, rng in self.trials():
            try:
                self.sayTrial(rng, window, counts)
            except Exception as e:
                self.failed(index, e)
        log.info(
            "say trials{options}: {trials} trials ({anytime} killing at any "
            "instant, {locked} as they held the lock), {says} says, {kills} killed "
            "({landed} of them after their add was written, {torn} torn), "
            "{litter} temporary caches left",
            options=" " + " ".join(self.options) if self.options else "",
            trials=TRIALS,
            **{name: counts[name] for name in SAY_COUNTS},
        )

    def sayTrial(self, rng, window, counts):
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        path = os.path.join(directory, "x.log")
        expected = {}
        before = rng.choice([0, 0, rng.randint(1, 30)])
        if before:
            writer = Log(path)
            for n in range(before):
                expected[n] = [(b"n", b"%d" % (n,)), (b"m", b"before")]
                writer.say(expected[n])
            if rng.random() < 0.5:
                os.unlink(writer.cachePath)

        count = rng.randint(3, 8)
        says = []
        for n in range(before, before + count):
            args = ["say", *self.options, path, f"n={n}"]
            if rng.random() < 1 / 3:
                value = pad(rng.choice([1 << 16, 1 << 20, 4 << 20]) + rng.randrange(4096))
                padPath = os.path.join(directory, f"pad{n}")
                with open(padPath, "wb") as f:
                    f.write(value)
                args += ["--file", f"pad={padPath}"]
                expected[n] = [(b"n", b"%d" % (n,)), (b"pad", value)]
            else:
                args.append(f"m=said {n}")
                expected[n] = [(b"n", b"%d" % (n,)), (b"m", b"said %d" % (n,))]
            says.append((n, args, rng.random() < 0.7))

        # Those to be killed die at random instants within what a say takes
        # with the others running, or as soon as each is seen holding the
        # log's lock: as it writes its add, or saves the cache.
        mode = rng.choice(["anytime", "locked"])
        errors = os.path.join(directory, "stderr")
        with open(errors, "wb") as stderr:
            processes = {n: self.spawn(gossipCommand(*args), stderr) for n, args, marked in says}
        doomed = {processes[n].pid: n for n, args, marked in says if marked}
        if mode == "anytime":
            killed = self.killAtInstants(rng, processes, doomed, window * max(1, count / 2))
        else:
            large = {n for n, args, marked in says if "--file" in args}
            killed = self.killHolders(rng, path, processes, doomed, large)
        for n, process in processes.items():
            status = process.wait(DEADLINE)
            if status not in (0, -signal.SIGKILL):
                with open(errors, "rb") as f:
                    raise AssertionError(f"say n={n} exited {status}: {f.read()!r}")

        reading, said = self.checkLog(path, expected)
        for n in expected:
            if n not in killed:
                self.assertEqual(said[n], 1, f"say n={n} exited 0; its add is there {said[n]}x")
        self.assertLessEqual(reading.damaged + bool(reading.tail), len(killed))

        status, out, err = run("say", *self.options, path, "m=after")
        self.assertEqual(status, 0, err)
        after = Reading(path)
        # A killed say's add that lacks only its LF is ended and kept, and
        # the next say takes the at after it (or, if it is the identity
        # add, the log's identity).
        whole = wholeButLineFeed(reading.tail)
        kept = [] if not whole or reading.identity is None else [reading.tail + b"\n"]
        before = [line for by, at, line in reading.adds] + kept
        self.assertEqual(after.identities, 1)
        self.assertEqual(after.duplicates(), [])
        self.assertEqual([line for by, at, line in after.adds[: len(before)]], before)
        self.assertEqual(
            [(at, decodeLine(line)[2:]) for by, at, line in after.adds[len(before) :]],
            [(len(before), [(b"m", b"after")])],
        )
        self.assertEqual(after.damaged, reading.damaged + (bool(reading.tail) and not whole))

        counts[mode] += 1
        counts["says"] += count
        counts["kills"] += len(killed)
        counts["landed"] += sum(said[n] for n in killed)
        counts["torn"] += reading.damaged + bool(reading.tail)
        counts["litter"] += sum(".gossip-cache." in name for name in os.listdir(directory))

    def killAtInstants(self, rng, processes, doomed, window):
        """
        Kill each of the processes C{doomed} (pid -> n) at a random instant
        within C{window} seconds.

        @return: the n of each one killed before it exited.
        """
        start = time.monotonic()
        killed = set()
        for instant, pid in sorted((rng.uniform(0, window), pid) for pid in doomed):
            sleepUntil(start + instant)
            n = doomed[pid]
            if processes[n].poll() is None:
                processes[n].kill()
                killed.add(n)
        return killed

    def killHolders(self, rng, path, processes, doomed, large):
        """
        Kill each of the processes C{doomed} (pid -> n) once it is seen
        holding the lock on the log at C{path}: at once, a random moment
        later, or as soon as the log grows (as it writes its add), which is
        likeliest for those saying one of the C{large} values (a set of n).

        @return: the n of each one killed before it exited.
        """
        killed = set()
        # pid -> ("at", the instant to kill it) or ("grown", the log's size
        # past which to), for each doomed process seen holding the lock.
        pending = {}
        seen = set()

        def finished():
            now = time.monotonic()
            holder = lockHolder(path)
            if holder in doomed and holder not in seen:
                seen.add(holder)
                # A large add's write is the likelier to be cut.
                big = doomed[holder] in large
                trigger = rng.choice(["now", "later"] + ["grown"] * (1 + 3 * big))
                if trigger == "grown":
                    pending[holder] = ("grown", fileSize(path))
                else:
                    pending[holder] = ("at", now + (trigger == "later") * rng.uniform(0, 0.01))
            for pid, (trigger, when) in list(pending.items()):
                if now >= when if trigger == "at" else fileSize(path) > when:
                    del pending[pid]
                    process = processes[doomed[pid]]
                    if process.poll() is None:
                        process.kill()
                        killed.add(doomed[pid])
            return all(process.poll() is not None for process in processes.values())

        waitFor(finished, "the says exited", interval=0.0002)
        return killed

    def checkLog(self, path, expected):
        """
        Check what C{path} holds after a trial's says: what L{Reading}
        checks; C{gossip ask} prints the same adds; one identity; every add
        by it, one of C{expected} (n -> pairs) at most once; and C{at}s
        0 to N-1.

        @return: the L{Reading}, and how many times each n is there.
        """
        reading = Reading(path)
        if os.path.exists(path):
            status, out, err = run("ask", "--format", "raw", path)
            self.assertEqual(status, 0, err)
            self.assertEqual(out.splitlines(True)[1:], [line for by, at, line in reading.adds])
        self.assertIn(reading.identities, (1,) if reading.adds else (0, 1))
        self.assertEqual(reading.duplicates(), [])
        said = Counter()
        for by, at, line in reading.adds:
            self.assertEqual(by, reading.identity)
            pairs = decodeLine(line)[2:]
            n = int(pairs[0][1])
            self.assertEqual(pairs, expected[n], f"add {n} is not what was said")
            said[n] += 1
        self.assertEqual(max(said.values(), default=1), 1, "an add said once is there twice")
        self.assertEqual(
            sorted(reading.keys), [(reading.identity, at) for at in range(len(reading.adds))]
        )
        return reading, said


class SayTrials(SayTrialsMixin, TestCase):
    """
    C{gossip say} killed at random instants.
    """


class SayFsyncTrials(SayTrialsMixin, TestCase):
    """
    C{gossip say --fsync} killed at random instants.
    """

    options = ("--fsync",)


SYNC_COUNTS = ("anytime", "receiving", "locked", "early", "partial", "torn", "finished")


class SyncTrialsMixin(TrialsMixin):
    """
    Trials in which C{gossip sync --once A B} moves a few thousand adds each
    way (a few of them up to 256 KiB) and is killed at a random instant:
    the command itself, or the C{gossip serve --stdio B} it runs, either at
    any moment of the sync or once the killed side has begun appending what
    it receives.
    """

    target = None

    def test_kills(self):
        """
        After a sync killed on either side at any instant, neither log holds
        a damaged add or one twice, and each holds only adds that were
        written, byte for byte; neither process is left running; and a
        second sync leaves both logs holding exactly the union.
        """
        try:
            calibration = self.syncTrial(random.Random(f"{SEED}/{self.id()}"), None, None, None)
        except Exception as e:
            self.failed(-1, e)
        counts = Counter()
        for index, rng in self.trials():
            try:
                mode = rng.choice(["anytime", "receiving", "locked"])
                self.syncTrial(rng, mode, calibration, counts)
            except Exception as e:
                self.failed(index, e)
        log.info(
            "sync trials killing the {target}: {trials} trials, killed {anytime} at "
            "any instant, {receiving} while receiving, {locked} holding the "
            "lock to append; {early} before their log changed, {partial} with "
            "part of what they were sent, {torn} torn; {finished} finished "
            "before the kill",
            target=self.target,
            trials=TRIALS,
            **{name: counts[name] for name in SYNC_COUNTS},
        )

    def makeLogs(self, rng):
        """
        Two logs with the same name, each with adds of its own and adds of
        a third origin, some of which both hold.

        @return: C{(a, b, expected)}: their paths, and C{(by, at)} -> line
            of every add written.
        """
        base = os.path.abspath(self.mktemp())
        expected = {}
        paths = []
        third = b"third-origin"
        for side in "ab":
            os.makedirs(os.path.join(base, side))
            path = os.path.join(base, side, "x.log")
            identity = b"%s-%d" % (side.encode("ascii"), rng.randrange(1 << 30))
            lines = [encodeAdd([(b"I", identity)])]
            origins = [(identity, range(rng.randint(1000, 2000)))]
            if side == "a":
                origins.append((third, range(0, rng.randint(100, 400))))
            else:
                origins.append((third, range(rng.randint(50, 200), 600)))
            for origin, ats in origins:
                for at in ats:
                    key = (origin, at)
                    if key not in expected:
                        if rng.random() < 0.01:
                            value = pad(rng.randint(1 << 14, 1 << 18))
                        else:
                            value = b"%s %d %s" % (origin, at, pad(rng.randint(0, 80)))
                        expected[key] = encodeAdd(
                            [(b"by", origin), (b"at", b"%d" % (at,)), (b"m", value)]
                        )
                    lines.append(expected[key])
            with open(path, "wb") as f:
                f.write(b"".join(lines))
            paths.append(path)
        return paths[0], paths[1], expected

    def syncTrial(self, rng, mode, calibration, counts):
        """
        One trial: a sync killed in C{mode}, or not at all (C{None}),
        checked.

        @param mode: "anytime", at a random instant of the sync;
            "receiving", at a random instant once the killed side's log has
            grown; "locked", as it next holds its log's lock after such an
            instant (while it appends).
        @param calibration: what an unkilled trial returned.
        @return: how long the sync took, from its start to when its log
            first grew and to its end, when not killed.
        """
        a, b, expected = self.makeLogs(rng)
        target = a if self.target == "command" else b
        size = os.path.getsize(target)
        identities = Reading(a).identity, Reading(b).identity

        with open(os.path.join(os.path.dirname(a), "stderr"), "wb") as stderr:
            start = time.monotonic()
            command = self.spawn(gossipCommand("sync", "--once", a, b), stderr)
        peers = []

        def peerStarted():
            peers[:] = children(command.pid)
            return peers or command.poll() is not None

        waitFor(peerStarted, "the peer started")
        self.assertTrue(peers, "the sync exited before its peer was seen")
        self.addCleanup(lambda: [kill(pid) for pid in peers])
        victim = command.pid if self.target == "command" else peers[0]

        if mode is None:
            waitFor(lambda: os.path.getsize(target) > size, "the log grew")
            grew = time.monotonic() - start
            self.assertEqual(command.wait(DEADLINE), 0)
            return grew, time.monotonic() - start

        firstGrowth, whole = calibration
        if mode == "anytime":
            sleepUntil(start + rng.uniform(0, whole))
        else:
            waitFor(lambda: os.path.getsize(target) > size or gone(victim), "the log grew")
            sleepUntil(time.monotonic() + rng.uniform(0, whole - firstGrowth) / 2)
            if mode == "locked":
                waitFor(
                    lambda: lockHolder(target) == victim or gone(victim),
                    "the lock taken",
                    interval=0.0002,
                )
        changed = os.path.getsize(target) > size
        if gone(victim):
            counts["finished"] += 1
        else:
            kill(victim)
            counts[mode] += 1
            counts["early"] += not changed
        command.wait(DEADLINE)
        waitFor(lambda: all(map(gone, peers)), "the peer exited")

        readings = [Reading(a), Reading(b)]
        for reading, identity in zip(readings, identities):
            self.assertEqual((reading.identity, reading.identities), (identity, 1))
            self.assertEqual(reading.damaged, 0)
            self.assertEqual(reading.duplicates(), [])
            for by, at, line in reading.adds:
                self.assertEqual(line, expected[by, at], "an add that was never written")
        killedSide, otherSide = readings if self.target == "command" else readings[::-1]
        self.assertFalse(otherSide.tail)
        counts["torn"] += bool(killedSide.tail)
        counts["partial"] += changed and len(killedSide.adds) < len(expected)

        status, out, err = run("sync", "--once", a, b)
        self.assertEqual(status, 0, err)
        for path in (a, b):
            reading = Reading(path)
            self.assertEqual(reading.duplicates(), [], "written twice")
            self.assertEqual(sorted(reading.keys), sorted(expected))
            for by, at, line in reading.adds:
                self.assertEqual(line, expected[by, at])
            # A torn line is damaged, unless it was a whole add but its LF.
            torn = bool(killedSide.tail) and not wholeButLineFeed(killedSide.tail)
            self.assertEqual(reading.damaged, torn and path == target)


class SyncCommandTrials(SyncTrialsMixin, TestCase):
    """
    C{gossip sync --once A B} killed at random instants.
    """

    target = "command"


class SyncPeerTrials(SyncTrialsMixin, TestCase):
    """
    The C{gossip serve --stdio B} that C{gossip sync --once A B} runs,
    killed at random instants.
    """

    target = "peer"


class TornBeforeLineFeedTests(TrialsMixin, TestCase):
    """
    A write cut short just before its LF (the kernel stops a killed
    process's write at a page or folio boundary, which can be the LF's
    offset) leaves a whole add without its LF: the next append ends it with
    an LF, which makes it intact, and counts it as an add the log holds.
    """

    def tornLog(self, directory):
        """
        A log of an identity and two adds, the last of them without its LF.

        @return: its path, and its lines.
        """
        os.makedirs(directory)
        path = os.path.join(directory, "x.log")
        writer = Log(path)
        lines = [writer.say([(b"m", b"%d" % (n,))]) for n in range(2)]
        with open(path, "rb+") as f:
            f.truncate(os.fstat(f.fileno()).st_size - 1)
        return path, lines

    def test_say(self):
        """
        C{say} on a log whose last add lacks only its LF writes an add whose
        C{(by, at)} no other add has.
        """
        path, lines = self.tornLog(os.path.abspath(self.mktemp()))
        status, out, err = run("say", path, "m=next")
        self.assertEqual(status, 0, err)
        reading = Reading(path)
        self.assertEqual(reading.duplicates(), [])
        self.assertEqual(decodeLine(reading.adds[-1][2])[2:], [(b"m", b"next")])

    def test_receive(self):
        """
        A sync to a log whose last add lacks only its LF does not write
        that add a second time.
        """
        base = os.path.abspath(self.mktemp())
        a, lines = self.tornLog(os.path.join(base, "a"))
        os.makedirs(os.path.join(base, "b"))
        b = os.path.join(base, "b", "x.log")
        Log(b).say([(b"m", b"b")])
        with open(b, "ab") as f:
            f.write(lines[0] + lines[1][:-1])
        with open(a, "ab") as f:
            f.write(b"\n")
        status, out, err = run("sync", "--once", a, b)
        self.assertEqual(status, 0, err)
        self.assertEqual(Reading(b).duplicates(), [])

    def test_killed(self):
        """
        Says killed as they write an add whose LF falls on a 128 KiB
        boundary of the file, and so is cut off on its own, leave no
        C{(by, at)} twice once the next say has appended.
        """
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        path = os.path.join(directory, "x.log")
        padPath = os.path.join(directory, "pad")
        writer = Log(path)
        boundary = 128 << 10
        # The LF is cut off in about half the attempts here.
        for attempt in range(6):
            # Filler adds end the log halfway between two 256 KiB boundaries
            # (however the kernel groups pages, one of its boundaries), so
            # that the next add's LF is the first byte past the next one.
            state = writer.state(create=True)
            while state.offset % (2 * boundary) != boundary:
                gap = (boundary - state.offset) % (2 * boundary)
                value = valueForLine(state.identity, state.nextAt(), gap)
                writer.say([(b"pad", pad(200) if value is None else value)])
                state = writer.state()
            with open(padPath, "wb") as f:
                f.write(valueForLine(state.identity, state.nextAt(), boundary + 1))
            size = os.path.getsize(path)
            process = self.spawn(
                gossipCommand("say", path, "--file", f"pad={padPath}"), subprocess.DEVNULL
            )
            waitFor(
                lambda: fileSize(path) > size or process.poll() is not None,
                "the log grew",
                interval=0.0001,
            )
            process.kill()
            process.wait(DEADLINE)
            status, out, err = run("say", path, "m=after")
            self.assertEqual(status, 0, err)
        self.assertEqual(Reading(path).duplicates(), [])
