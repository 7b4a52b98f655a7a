"""
Tests for L{gossip.store.logfile}: reading a log forwards and backwards through
damage, appending from many processes and after killed writers, the state
cache, receiving adds from peers, and saying.
"""

import io
import json
import os
import random
import shutil
import signal
import stat
import subprocess
import sys
import tracemalloc

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SkipTest, TestCase

import gossip
from gossip.store import logfile as logModule
from gossip.store.format import (
    CorruptLine,
    checkKeyedLine,
    checkLine,
    decodeBody,
    decodeLine,
    encodeAdd,
    identify,
    isSerial,
    lineHash,
)
from gossip.store.intervals import Intervals
from gossip.store.logfile import (
    LARGE,
    RESERVED,
    LargeLine,
    LineCheck,
    Log,
    LogError,
    Scan,
    Skipped,
    State,
    Stretch,
    entries,
    keyedBlocks,
    newIdentity,
    reverseEntries,
)
from tests import original

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
# Where a child process finds the gossip package under test.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(gossip.__file__)))
# How long any child process may take before the test gives up on it.
TIMEOUT = 120

_damageSettings = settings(max_examples=60, deadline=None)

_NAMES = [b"m", b"tag", b"subject", b"n", b"\x00\n", b"a=b"]


def readFile(path):
    with open(path, "rb") as f:
        return f.read()


def randomPairs(rng, maxValue):
    """
    One to three pairs with random values: every byte, LF, NUL, C{<} and
    C{>} included.
    """
    return [
        (rng.choice(_NAMES), rng.randbytes(rng.randrange(maxValue + 1)))
        for _ in range(rng.randrange(1, 4))
    ]


def makeLog(case, count, seed, maxValue=60):
    """
    A new log of C{count} adds written with L{Log.say}.

    @return: the L{Log} and the file's bytes.
    """
    log = Log(case.mktemp())
    rng = random.Random(seed)
    for _ in range(count):
        log.say(randomPairs(rng, maxValue))
    return log, readFile(log.path)


def completeLines(data):
    """
    The C{(offset, record)} of each LF-terminated line of C{data}.
    """
    result = []
    offset = 0
    for record in data.split(b"\n")[:-1]:
        result.append((offset, record))
        offset += len(record) + 1
    return result


def endLastLine(data):
    """
    C{data} as a log's next append leaves what was there: a torn last
    line is ended, so that the add appended stands alone (and if that
    makes the torn line an intact add, it is one like any other).
    """
    if data and not data.endswith(b"\n"):
        return data + b"\n"
    return data


def checkBody(line):
    """
    The body of an intact line.
    """
    return line[line.index(b"<") + 1 : line.rindex(b">")]


def originalPairs(record):
    """
    The pairs the original's reader finds in a line, or L{None}.
    """
    try:
        return original.decodeAdd(record + b"\n")
    except original.Corrupt:
        return None


def expectedState(data):
    """
    What a log file holds as the original's reader and the spec see it.

    @return: the identity (the first intact add with C{I} and no C{by}), a
        dict of each origin's set of C{at}s, and how many complete lines
        are corrupt.
    """
    identity = None
    have = {}
    damaged = 0
    for _, record in completeLines(data):
        pairs = originalPairs(record)
        # The first value of each name.
        first = dict(reversed(pairs or []))
        if pairs is None or (b"at" in first and not isSerial(first[b"at"])):
            damaged += 1
            continue
        if identity is None and b"I" in first and b"by" not in first:
            identity = first[b"I"]
            continue
        by, at = first.get(b"by"), first.get(b"at")
        if by is not None and at is not None:
            have.setdefault(by, set()).add(int(at))
    return identity, have, damaged


def expectedNextAt(identity, have):
    held = have.get(identity)
    return max(held) + 1 if held else 0


def haveOf(state):
    return {by: set(held) for by, held in state.have.items()}


def lineOfLength(length, by, at):
    """
    An intact add by C{by} at C{at}, padded to exactly C{length} bytes.
    """
    prefix = b"by=%s&at=%d&m=" % (by, at)
    for size in range(len(prefix), length):
        if size + 2 * len(b"%d" % (size,)) + 15 == length:
            padding = b"x" * (size - len(prefix))
            return encodeAdd([(b"by", by), (b"at", b"%d" % (at,)), (b"m", padding)])
    raise ValueError(f"no add of {length} bytes")


def startChild(case, *args, **kwargs):
    """
    Start a Python process with these arguments, importing the gossip under
    test, and kill it at the end of the test if it is still running.
    """
    child = subprocess.Popen(
        [sys.executable] + [os.fsdecode(arg) for arg in args],
        env=dict(os.environ, PYTHONPATH=ROOT),
        **kwargs,
    )

    def stop():
        if child.poll() is None:
            child.kill()
            child.wait()
        for stream in (child.stdin, child.stdout):
            if stream is not None:
                stream.close()

    case.addCleanup(stop)
    return child


class StateAssertions:
    """
    Checks that a L{Log} agrees with the original's reading of its file.
    """

    def assertState(self, log):
        """
        C{log.state()} has the identity, the C{at}s of every origin and the
        next C{at} that the file holds.
        """
        identity, have, _ = expectedState(readFile(log.path))
        state = log.state()
        self.assertEqual(state.identity, identity)
        self.assertEqual(haveOf(state), have)
        self.assertEqual(state.nextAt(), expectedNextAt(identity, have))
        for by, ats in have.items():
            for at in ats:
                self.assertTrue(state.holds(by, at))
        return state

    def assertSaysNext(self, log, pairs=((b"m", b"next"),)):
        """
        C{log.say} appends exactly one intact add, by the log's identity with
        the next C{at}, on a line of its own, and changes nothing before it.

        @return: the line said.
        """
        before = endLastLine(readFile(log.path))
        identity, have, _ = expectedState(before)
        line = log.say(list(pairs))
        expected = encodeAdd(
            [(b"by", identity), (b"at", b"%d" % (expectedNextAt(identity, have),))] + list(pairs)
        )
        self.assertEqual(line, expected)
        self.assertEqual(readFile(log.path), before + line)
        return line

    def assertHealthy(self, log):
        """
        The log's state is right, before and after one more add.
        """
        self.assertState(log)
        self.assertSaysNext(log)
        self.assertState(log)


class CountingFile(io.BytesIO):
    """
    A file in memory that counts the bytes read from it.
    """

    bytesRead = 0

    def read(self, size=-1):
        data = super().read(size)
        self.bytesRead += len(data)
        return data


def peakMemory(read):
    """
    The most memory Python allocated while C{read()} ran, in bytes, and
    what it returned.
    """
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        result = read()
        return tracemalloc.get_traced_memory()[1] - base, result
    finally:
        tracemalloc.stop()


class LongDamageTests(TestCase):
    """
    A damaged region far longer than any add costs a reader a few
    megabytes and one pass, however long it is.
    """

    # Damage this long, which a reader must not hold.
    SIZE = 24 << 20
    BOUND = 8 << 20

    def setUp(self):
        self.adds = [lineOfLength(100, b"n", at) for at in range(3)]

    def assertBounded(self, data, expected):
        """
        L{entries} and L{reverseEntries} on C{data} give C{expected}, each
        reading every byte at most about once and holding less than
        C{BOUND} bytes at a time.
        """
        for read, order in ((entries, expected), (reverseEntries, expected[::-1])):
            f = CountingFile(data)
            peak, found = peakMemory(lambda: list(read(f)))
            self.assertEqual(found, order)
            self.assertLess(peak, self.BOUND, read)
            self.assertLess(f.bytesRead, len(data) + (2 << 20), read)

    def intact(self, offset, line):
        return offset, line[:-1], checkLine(line)

    def test_zeros(self):
        """
        Zeros between adds: one damaged line, given as a L{Skipped} of its
        length.
        """
        first, second, third = self.adds
        data = first + b"\0" * self.SIZE + b"\n" + second + third
        damageEnd = len(first) + self.SIZE + 1
        self.assertBounded(
            data,
            [
                self.intact(0, first),
                (len(first), Skipped(self.SIZE), None),
                self.intact(damageEnd, second),
                self.intact(damageEnd + len(second), third),
            ],
        )

    def test_garbage(self):
        """
        Random bytes without LF, after an add's header that promises less
        than they are, are damage too.
        """
        first, second, _ = self.adds
        garbage = random.Random(3).randbytes(self.SIZE).replace(b"\n", b"x")
        damage = b"x" * 11 + b" 1000<" + garbage + b">1000"
        data = first + damage + b"\n" + second
        self.assertBounded(
            data,
            [
                self.intact(0, first),
                (len(first), Skipped(len(damage)), None),
                self.intact(len(first) + len(damage) + 1, second),
            ],
        )

    def test_unterminated(self):
        """
        A last line without LF is not returned, and is read past once,
        forwards and backwards: C{ask --last} is linear in it.
        """
        first, second, _ = self.adds
        self.assertBounded(
            first + second + b"\0" * self.SIZE,
            [self.intact(0, first), self.intact(len(first), second)],
        )
        self.assertBounded(b"\0" * self.SIZE, [])

    def test_longAdd(self):
        """
        An intact add longer than the bound is still read whole.
        """
        line = encodeAdd([(b"by", b"n"), (b"at", b"9"), (b"m", b"v" * (3 << 20))])
        data = self.adds[0] + line
        for read, order in ((entries, [0, 1]), (reverseEntries, [1, 0])):
            found = list(read(io.BytesIO(data)))
            self.assertEqual(
                found, [[self.intact(0, self.adds[0]), self.intact(len(self.adds[0]), line)][i] for i in order]
            )


class EntriesTests(TestCase):
    """
    L{entries} and L{reverseEntries} on undamaged and unusual files.
    """

    def readBoth(self, data):
        forwards = list(entries(io.BytesIO(data)))
        backwards = list(reverseEntries(io.BytesIO(data)))
        self.assertEqual(backwards, forwards[::-1])
        return forwards

    def test_vectors(self):
        """
        Both directions read every vector alike, one megabyte at a time and
        a few bytes at a time.
        """
        for name in ("original-basic", "lowercase-escapes", "corrupted", "torn-tail"):
            data = readFile(os.path.join(DATA, name + ".log"))
            expected = self.readBoth(data)
            self.assertEqual([(o, r) for o, r, _ in expected], completeLines(data))
            for chunk in (1, 7, 100, 4096):
                self.patch(logModule, "_CHUNK", chunk)
                self.assertEqual(self.readBoth(data), expected, (name, chunk))

    def test_keyedBlocks(self):
        """
        L{keyedBlocks} finds, in every vector and whatever the block size,
        the intact adds with a C{by} and C{at} that L{entries} finds.
        """
        for name in ("original-basic", "lowercase-escapes", "corrupted", "torn-tail"):
            data = readFile(os.path.join(DATA, name + ".log"))
            expected = []
            for offset, record, body in entries(io.BytesIO(data)):
                key = None if body is None else identify(body)
                if key is not None:
                    expected.append((record, key))
            for chunk in (1, 7, 4096, 1 << 18):
                found = keyedRecords(keyedBlocks(io.BytesIO(data), 0, chunk))
                self.assertEqual(found, expected, (name, chunk))
            self.assertTrue(expected, name)

    def test_keyedBlocksStretch(self):
        """
        A block whose origins' serials follow one another is given as a
        L{Stretch}: its intact adds with a C{by} and C{at} as the bytes
        read, without the other lines, and the spans of their keys.
        """
        flipped = bytearray(peerLine(2))
        flipped[20] ^= 1
        lines = [
            encodeAdd([(b"I", b"me")]),
            peerLine(0),
            peerLine(0, by=b"other"),
            bytes(flipped),
            b"garbage\n",
            peerLine(1),
            peerLine(2, value=b"x" * 300),
        ]
        [stretch] = keyedBlocks(io.BytesIO(b"".join(lines)))
        self.assertIsInstance(stretch, Stretch)
        kept = [lines[1], lines[2], lines[5], lines[6]]
        self.assertEqual(stretch.data, b"".join(kept))
        self.assertEqual(len(stretch), 4)
        self.assertEqual(stretch.spans, {b"peer": [0, 3], b"other": [0, 1]})
        self.assertEqual(stretch.longest, len(lines[6]) - 1)
        self.assertEqual(
            list(stretch),
            list(zip(kept, [(b"peer", 0), (b"other", 0), (b"peer", 1), (b"peer", 2)])),
        )
        # Serials out of order: line by line.
        [block] = keyedBlocks(io.BytesIO(peerLine(1) + peerLine(0)))
        self.assertEqual([key for record, body, key in block], [(b"peer", 1), (b"peer", 0)])

    def test_empty(self):
        self.assertEqual(self.readBoth(b""), [])

    def test_onlyUnterminated(self):
        self.assertEqual(self.readBoth(b"no line feed at all"), [])
        self.patch(logModule, "_CHUNK", 3)
        self.assertEqual(self.readBoth(b"no line feed at all"), [])

    def test_unterminatedLastLine(self):
        line = encodeAdd([(b"m", b"x")])
        self.assertEqual(self.readBoth(line + line[:-1]), [(0, line[:-1], checkBody(line))])

    def test_emptyLines(self):
        line = encodeAdd([(b"m", b"x")])
        found = self.readBoth(b"\n\n" + line + b"\n")
        self.assertEqual(
            found,
            [
                (0, b"", None),
                (1, b"", None),
                (2, line[:-1], checkBody(line)),
                (2 + len(line), b"", None),
            ],
        )

    def test_start(self):
        """
        Reading forwards from the start of any line gives the lines from
        there on.
        """
        data = readFile(os.path.join(DATA, "corrupted.log"))
        every = list(entries(io.BytesIO(data)))
        for i, (offset, _, _) in enumerate(every):
            self.assertEqual(list(entries(io.BytesIO(data), offset)), every[i:])

    def test_end(self):
        """
        Reading backwards from any byte gives the complete lines before it.
        """
        data = readFile(os.path.join(DATA, "corrupted.log"))
        self.patch(logModule, "_CHUNK", 512)
        for end in list(range(0, len(data), 97)) + [len(data)]:
            expected = list(entries(io.BytesIO(data[:end])))
            self.assertEqual(list(reverseEntries(io.BytesIO(data), end)), expected[::-1], end)

    def test_longLines(self):
        """
        Lines many times longer than a chunk are read whole.
        """
        line = encodeAdd([(b"m", b"\x00<>\n" * 5000)])
        data = line + b"junk\n" + line
        self.patch(logModule, "_CHUNK", 1000)
        found = self.readBoth(data)
        self.assertEqual(
            [(o, b is not None) for o, _, b in found],
            [(0, True), (len(line), False), (len(line) + 5, True)],
        )

    def test_file(self):
        """
        They read real files, from the beginning whatever the position.
        """
        log, data = makeLog(self, 20, seed=3)
        with open(log.path, "rb") as f:
            f.seek(17)
            forwards = list(entries(f))
            self.assertEqual(list(reverseEntries(f)), forwards[::-1])
        self.assertEqual([(o, r) for o, r, _ in forwards], completeLines(data))
        self.assertTrue(all(body is not None for _, _, body in forwards))


positions = st.integers(min_value=0, max_value=2**31)
garbage = st.one_of(
    st.binary(max_size=30),
    st.lists(st.sampled_from(b"\n\n<> 0123456789=&%+ABCabc"), max_size=30).map(bytes),
)
damages = st.lists(
    st.one_of(
        st.tuples(st.just("flip"), positions, st.integers(1, 255)),
        st.tuples(st.just("delete"), positions, st.integers(1, 200)),
        st.tuples(st.just("insert"), positions, garbage),
        # Part of one line copied into another: an interleaved write.
        st.tuples(st.just("copy"), positions, st.integers(1, 400), positions),
        st.tuples(st.just("truncate"), positions),
        st.tuples(st.just("cut"), positions),
    ),
    min_size=1,
    max_size=10,
)


# Damage of every kind, long damage and line feeds added and removed
# included.
anyDamages = st.lists(
    st.one_of(
        damages.map(lambda operations: operations[0]),
        st.tuples(st.just("insert"), positions, st.sampled_from([b"\n", b"\n\n", b"\r\n"])),
        st.tuples(st.just("unlf"), positions),
        st.tuples(
            st.just("long"),
            positions,
            st.integers(4000, 12000),
            st.sampled_from([b"\0", b"x", b"<", b"9", b"random"]),
        ),
    ),
    min_size=1,
    max_size=8,
)


def damage(data, operations):
    """
    Apply each damage operation of C{operations} to C{data}.
    """
    data = bytearray(data)
    for operation in operations:
        kind, where = operation[:2]
        where %= len(data) + 1
        if kind == "unlf":
            # Remove an LF: two lines run together.
            lf = data.find(b"\n", where)
            if lf != -1:
                del data[lf]
        elif kind == "long":
            size, fill = operation[2:]
            if fill == b"random":
                piece = random.Random(where).randbytes(size).replace(b"\n", b"\0")
            else:
                piece = fill * size
            data[where:where] = piece
        elif kind == "flip":
            if where < len(data):
                data[where] ^= operation[2]
        elif kind == "delete":
            del data[where : where + operation[2]]
        elif kind == "insert":
            data[where:where] = operation[2]
        elif kind == "copy":
            piece = data[where : where + operation[2]]
            target = operation[3] % (len(data) + 1)
            data[target:target] = piece
        elif kind == "cut":
            # A write stopped just before its LF.
            end = data.find(b"\n", where)
            if end != -1:
                del data[end:]
        else:
            del data[where:]
    return bytes(data)


def mayBeTornIdentity(data):
    """
    Whether C{data}, a file without LF, may be a new log whose identity add
    was cut short: short, and the beginning of C{HASH LENGTH<I=ID>LENGTH}
    up to its hash and space at least.
    """
    alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    if len(data) > 512 or len(data) < 12 or not all(byte in alphabet for byte in data[:11]):
        return False
    rest = data[11:]
    header, less, body = rest.partition(b"<")
    if header[:1] != b" " or not (header[1:].isdigit() or header == b" " and not less):
        return False
    body, greater, trailer = body.partition(b">")
    if greater:
        return body.startswith(b"I=") and b"&" not in body and b"<" not in body and (trailer.isdigit() or not trailer)
    return b"I=".startswith(body[:2]) and b"&" not in body and b"<" not in body


class DamageTests(StateAssertions, TestCase):
    """
    Whatever happens to a log's bytes, every add whose line is still intact
    is read, and nothing else is.
    """

    def test_resynchronises(self):
        """
        After random damage, L{entries} returns every complete line at its
        offset, and returns as an add exactly those that are byte for byte
        a line that was written: every line that survived, and nothing not
        written.  A log built on that file reports the same and appends a
        new add on a line of its own.
        """
        _, data = makeLog(self, 300, seed=1, maxValue=80)
        written = set(data.split(b"\n")[:-1])

        @_damageSettings
        @given(damages)
        def check(operations):
            damaged = damage(data, operations)
            found = list(entries(io.BytesIO(damaged)))
            self.assertEqual([(o, r) for o, r, _ in found], completeLines(damaged))
            for offset, record, body in found:
                if record in written:
                    self.assertIsNotNone(body, offset)
                    self.assertEqual(decodeBody(body), originalPairs(record))
                else:
                    self.assertIsNone(body, offset)

            log = Log(self.mktemp())
            with open(log.path, "wb") as f:
                f.write(damaged)
            _, _, damagedLines = expectedState(damaged)
            self.assertEqual(log.state().damaged, damagedLines)
            self.assertState(log)
            # Saying ends a torn last line first, which may make it an add.
            ended = endLastLine(damaged)
            identity, _, _ = expectedState(ended)
            intact = any(body is not None for _, _, body in entries(io.BytesIO(ended)))
            if identity is not None:
                self.assertSaysNext(log)
            elif intact or damagedLines or (damaged and not mayBeTornIdentity(damaged)):
                # Adds but no identity, or only damage: not a log this node
                # can say into.
                self.assertRaises(LogError, log.say, [(b"m", b"x")])
                self.assertEqual(readFile(log.path), damaged)
            else:
                line = log.say([(b"m", b"x")])
                after = readFile(log.path)
                self.assertTrue(after.startswith(ended))
                self.assertTrue(after.endswith(line))
                [(name, made)] = decodeLine(after[len(ended) : -len(line)])
                self.assertEqual(name, b"I")
                self.assertEqual(decodeLine(line)[:2], [(b"by", made), (b"at", b"0")])

        check()

    def test_anyDamage(self):
        """
        Whatever the damage (bytes flipped, removed, inserted or copied,
        line feeds added or removed, kilobytes of garbage, the file cut
        short), reading forwards or backwards, in any size of chunk, and
        opening the log never fail, never give an add that was not
        written, and give every add whose line is still whole.
        """
        _, data = makeLog(self, 40, seed=9, maxValue=120)
        written = set(data.split(b"\n")[:-1])

        @_damageSettings
        @given(anyDamages, st.sampled_from([64, 4096, 1 << 20]))
        def check(operations, chunk):
            damaged = damage(data, operations)
            self.patch(logModule, "_CHUNK", chunk)
            intact = [(offset, record) for offset, record in completeLines(damaged) if record in written]
            forwards = list(entries(io.BytesIO(damaged)))
            backwards = list(reverseEntries(io.BytesIO(damaged)))
            for found in (forwards, backwards[::-1]):
                self.assertEqual(
                    [(offset, len(record)) for offset, record, _ in found],
                    [(offset, len(record)) for offset, record in completeLines(damaged)],
                )
                for offset, record, body in found:
                    if body is not None:
                        self.assertIn(record, written)
                        self.assertEqual(body, checkBody(record))
                self.assertEqual(
                    [(offset, record) for offset, record, body in found if body is not None], intact
                )
            log = Log(self.mktemp())
            with open(log.path, "wb") as f:
                f.write(damaged)
            identity, have, damagedLines = expectedState(damaged)
            try:
                state = log.state()
            except LogError:
                self.fail("reading a damaged log failed")
            self.assertEqual((state.identity, haveOf(state), state.damaged), (identity, have, damagedLines))

        check()

    def test_reverseMatchesForwards(self):
        """
        L{reverseEntries} returns exactly what L{entries} does, reversed,
        whatever the damage, chunk size and end.
        """
        _, data = makeLog(self, 60, seed=4, maxValue=40)

        @_damageSettings
        @given(damages, st.one_of(st.integers(1, 300), st.just(1 << 20)), positions)
        def check(operations, chunk, end):
            damaged = damage(data, operations)
            self.patch(logModule, "_CHUNK", chunk)
            forwards = list(entries(io.BytesIO(damaged)))
            self.assertEqual(list(reverseEntries(io.BytesIO(damaged))), forwards[::-1])
            end %= len(damaged) + 1
            before = list(entries(io.BytesIO(damaged[:end])))
            self.assertEqual(list(reverseEntries(io.BytesIO(damaged), end)), before[::-1])

        check()


_WRITER = r"""
import sys
from gossip.store.logfile import Log

path, who = sys.argv[1], sys.argv[2].encode()
log = Log(path)
# Everyone starts together, when the test closes standard input.
sys.stdin.read()
for i in range(100):
    # Odd writers open the log anew for each add, so that both the state a
    # Log remembers and the cache file meet the other writers' adds.
    if int(who) % 2:
        log = Log(path)
    log.say([(b"who", who), (b"i", b"%d" % i)])
"""


class ConcurrencyTests(TestCase):
    """
    Many processes appending to one log at once.
    """

    def test_eightWriters(self):
        """
        Eight processes saying 100 adds each into one new log make one
        identity and 800 intact adds, with every C{at} from 0 to 799 once.
        """
        path = os.path.abspath(self.mktemp())
        os.makedirs(os.path.dirname(path), exist_ok=True)
        writers = [
            startChild(self, "-c", _WRITER, path, str(who), stdin=subprocess.PIPE)
            for who in range(8)
        ]
        for writer in writers:
            writer.stdin.close()
        for writer in writers:
            self.assertEqual(writer.wait(timeout=TIMEOUT), 0)

        data = readFile(path)
        self.assertTrue(data.endswith(b"\n"))
        adds = [decodeLine(record + b"\n") for _, record in completeLines(data)]
        [(name, identity)] = adds[0]
        self.assertEqual(name, b"I")
        self.assertEqual(len(adds), 801)
        ats = []
        seen = {}
        for pairs in adds[1:]:
            self.assertEqual(pairs[0], (b"by", identity))
            self.assertEqual(pairs[1][0], b"at")
            ats.append(int(pairs[1][1]))
            who, i = pairs[2][1], int(pairs[3][1])
            # Each writer's adds come in the order it said them.
            self.assertEqual(i, seen.get(who, -1) + 1)
            seen[who] = i
        self.assertEqual(sorted(ats), list(range(800)))
        self.assertEqual(seen, {b"%d" % (who,): 99 for who in range(8)})
        state = Log(path).state()
        self.assertEqual((state.identity, state.nextAt(), state.damaged), (identity, 800, 0))


# Says one add but writes only the first half of its line, then holds the
# lock until it is killed.
_TORN_WRITER = r"""
import os, sys
from gossip.store.logfile import Log

def tornWrite(fd, data, write=os.write):
    data = bytes(data)
    write(fd, data[: len(data) // 2])
    sys.stdout.write("torn\n")
    sys.stdout.flush()
    sys.stdin.read()
    os._exit(3)

os.write = tornWrite
Log(sys.argv[1]).say([(b"m", b"v" * int(sys.argv[2]))])
"""


class KilledWriterTests(StateAssertions, TestCase):
    """
    A writer killed in the middle of an add loses that add and nothing else.
    """

    def killMidAppend(self, size):
        log, before = makeLog(self, 20, seed=5)
        state = log.state()
        identity, at = state.identity, state.nextAt()
        torn = startChild(
            self,
            "-c",
            _TORN_WRITER,
            log.path,
            str(size),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        self.assertEqual(torn.stdout.readline(), b"torn\n")
        # Another writer, which must wait for the lock the torn one holds.
        waiter = startChild(self, "-m", "gossip", "say", log.path, "m=after")
        os.kill(torn.pid, signal.SIGKILL)
        self.assertEqual(torn.wait(timeout=TIMEOUT), -signal.SIGKILL)
        self.assertEqual(waiter.wait(timeout=TIMEOUT), 0)

        tornLine = encodeAdd([(b"by", identity), (b"at", b"%d" % (at,)), (b"m", b"v" * size)])
        half = tornLine[: len(tornLine) // 2]
        # The torn add never was, so the next add takes its at.
        after = encodeAdd([(b"by", identity), (b"at", b"%d" % (at,)), (b"m", b"after")])
        data = readFile(log.path)
        self.assertEqual(data, before + half + b"\n" + after)

        found = list(entries(io.BytesIO(data)))
        self.assertEqual(
            [(o, r) for o, r, b in found if b is not None],
            completeLines(before) + [(len(before) + len(half) + 1, after[:-1])],
        )
        self.assertEqual([(o, r) for o, r, b in found if b is None], [(len(before), half)])
        # The Log that wrote the first adds catches up with all of it.
        self.assertHealthy(log)
        self.assertHealthy(Log(log.path))

    def test_killedMidAdd(self):
        self.killMidAppend(100)

    def test_killedMidHugeAdd(self):
        self.killMidAppend(8 << 20)


class CacheTests(StateAssertions, TestCase):
    """
    The cache beside a log never gives a wrong identity, C{at} or set of
    adds held, whatever happened to it or to the log.
    """

    def setUp(self):
        # Bigger than the cache's fingerprints of the head and of the bytes
        # before its offset, with adds from a peer too.
        self.log, _ = makeLog(self, 120, seed=6)
        self.log.receive(b"".join(peerLine(at) for at in (0, 1, 2, 5)))
        self.log.say([(b"m", b"last")])
        self.assertGreater(os.path.getsize(self.log.path), 3 * logModule._PRINT)

    def test_beside(self):
        directory, name = os.path.split(os.path.abspath(os.fsdecode(self.log.path)))
        cache = os.path.join(directory, "." + name + ".gossip-cache")
        self.assertEqual(os.path.abspath(os.fsdecode(self.log.cachePath)), cache)
        self.assertTrue(os.path.isfile(cache))
        self.assertHealthy(Log(self.log.path))

    def test_used(self):
        """
        A new L{Log} takes its state from the cache, not by reading the log.
        """
        self.patch(logModule, "entries", lambda f, start=0: iter(()))
        self.assertState(Log(self.log.path))

    def test_deleted(self):
        os.remove(self.log.cachePath)
        self.assertHealthy(Log(self.log.path))
        os.remove(self.log.cachePath)
        self.assertHealthy(self.log)

    def test_directory(self):
        """
        A cache that cannot be read or written costs only a rescan.
        """
        os.remove(self.log.cachePath)
        os.mkdir(self.log.cachePath)
        self.assertHealthy(Log(self.log.path))

    def test_truncated(self):
        """
        A cache cut short anywhere is not believed.
        """
        cache = readFile(self.log.cachePath)
        # Cut at every line's end, where a cache that lost lines would still
        # parse, and at bytes between.
        ends = [i + 1 for i, byte in enumerate(cache) if byte == ord("\n")]
        for size in sorted(set(ends + [end - 1 for end in ends] + list(range(0, len(cache), 13)))):
            with open(self.log.cachePath, "wb") as f:
                f.write(cache[:size])
            self.assertState(Log(self.log.path))
        self.assertHealthy(Log(self.log.path))

    def test_garbage(self):
        cache = readFile(self.log.cachePath)

        @settings(max_examples=60, deadline=None)
        @given(st.one_of(st.binary(max_size=400), damages.map(lambda ops: damage(cache, ops))))
        def check(garbage):
            with open(self.log.cachePath, "wb") as f:
                f.write(garbage)
            self.assertState(Log(self.log.path))

        check()
        self.assertHealthy(Log(self.log.path))

    def test_stale(self):
        """
        Adds that another writer appended without updating the cache, as
        the original does, are counted.
        """
        state = self.log.state()
        identity, at = state.identity, state.nextAt()
        with open(self.log.path, "ab") as f:
            f.write(original.encodeAdd([(b"by", identity), (b"at", b"%d" % (at,))]))
            f.write(original.encodeAdd([(b"by", b"peer"), (b"at", b"9"), (b"m", b"by hand")]))
        self.assertHealthy(self.log)
        with open(self.log.path, "ab") as f:
            f.write(original.encodeAdd([(b"by", identity), (b"at", b"%d" % (at + 5,))]))
        self.assertHealthy(Log(self.log.path))

    def test_older(self):
        """
        A cache from before later adds is caught up.
        """
        old = readFile(self.log.cachePath)
        other = Log(self.log.path)
        for i in range(5):
            other.say([(b"m", b"%d" % (i,))])
        with open(self.log.cachePath, "wb") as f:
            f.write(old)
        self.assertHealthy(Log(self.log.path))

    def test_tornByHand(self):
        with open(self.log.path, "ab") as f:
            f.write(peerLine(20)[:-9])
        self.assertHealthy(self.log)

    def test_otherLogsCache(self):
        other, _ = makeLog(self, 10, seed=7)
        shutil.copyfile(other.cachePath, self.log.cachePath)
        self.assertHealthy(Log(self.log.path))

    def assertReplaced(self, replace):
        """
        After C{replace()} puts other content where the log was, both the
        L{Log} that knew the old content and a new one, which finds the old
        content's cache, see the new.
        """
        cache = readFile(self.log.cachePath)
        replace()
        self.assertHealthy(self.log)
        with open(self.log.cachePath, "wb") as f:
            f.write(cache)
        replace()
        self.assertHealthy(Log(self.log.path))

    def otherLog(self):
        """
        Another node's log, longer than this one so that the cache's
        offset is inside it.
        """
        _, data = makeLog(self, 200, seed=8)
        self.assertGreater(len(data), os.path.getsize(self.log.path))
        return data

    def test_renamedOver(self):
        data = self.otherLog()

        def replace():
            temporary = self.mktemp()
            with open(temporary, "wb") as f:
                f.write(data)
            os.replace(temporary, self.log.path)

        self.assertReplaced(replace)

    def rewriteInPlace(self, data):
        """
        Make C{data} the log's content, keeping the file (its inode).
        """
        before = os.stat(self.log.path).st_ino
        with open(self.log.path, "r+b") as f:
            f.write(data)
            f.truncate()
        self.assertEqual(os.stat(self.log.path).st_ino, before)

    def test_rewrittenWithOtherLog(self):
        data = self.otherLog()
        self.assertReplaced(lambda: self.rewriteInPlace(data))

    def test_rewrittenShorter(self):
        lines = readFile(self.log.path).split(b"\n")
        data = b"\n".join(lines[: len(lines) // 2]) + b"\n"
        self.assertReplaced(lambda: self.rewriteInPlace(data))

    def test_rewrittenSameLength(self):
        """
        The last add replaced by a peer's add of the same length: this
        node's next C{at} goes back by one.
        """
        data = readFile(self.log.path)
        last = data[data.rindex(b"\n", 0, -1) + 1 :]
        data = data[: -len(last)] + lineOfLength(len(last), b"peer", 7)
        self.assertEqual(len(data), os.path.getsize(self.log.path))
        self.assertReplaced(lambda: self.rewriteInPlace(data))

    def test_rewrittenLonger(self):
        data = readFile(self.log.path)
        last = data[data.rindex(b"\n", 0, -1) + 1 :]
        data = data[: -len(last)] + b"".join(peerLine(at) for at in range(10, 20))
        self.assertReplaced(lambda: self.rewriteInPlace(data))


    def middleAdd(self):
        """
        The offset and length of an add in the middle of the log, far from
        the head and the tail the fingerprint covers.
        """
        lines = completeLines(readFile(self.log.path))
        offset, record = lines[len(lines) // 2]
        self.assertGreater(offset, logModule._PRINT)
        self.assertLess(offset + len(record), os.path.getsize(self.log.path) - logModule._PRINT)
        return offset, len(record) + 1

    def flipInMiddle(self, keepTime):
        """
        Flip one byte of the add in the middle of the log, in place, as a
        failing disk would: same inode, same size.

        @param keepTime: leave the file's modification time as it was, as
            damage below the file system does; otherwise make it a second
            later, as a writer would.
        @return: the damaged line's offset and length.
        """
        offset, length = self.middleAdd()
        before = os.stat(self.log.path)
        with open(self.log.path, "r+b") as f:
            f.seek(offset + length // 2)
            byte = f.read(1)
            f.seek(offset + length // 2)
            f.write(bytes([byte[0] ^ 0x20]))
        after = os.stat(self.log.path)
        self.assertEqual((after.st_ino, after.st_size), (before.st_ino, before.st_size))
        mtime = before.st_mtime_ns + (0 if keepTime else 10**9)
        os.utime(self.log.path, ns=(after.st_atime_ns, mtime))
        return offset, length

    def test_flippedInMiddle(self):
        """
        A log changed in place under the cache, size and inode kept, is
        read again: its modification time says so.
        """
        self.flipInMiddle(keepTime=False)
        self.assertHealthy(self.log)
        self.flipInMiddle(keepTime=False)
        self.assertHealthy(Log(self.log.path))

    def test_checkFindsHiddenDamage(self):
        """
        Damage that leaves even the modification time alone is found by
        L{Log.check}, which leaves a cache that knows of it.
        """
        region = self.flipInMiddle(keepTime=True)
        scan = Log(self.log.path).check()
        self.assertEqual(scan.regions, [list(region)])
        self.assertEqual(scan.state.damaged, 1)
        self.assertHealthy(Log(self.log.path))

    def forgeCache(self, forge):
        """
        Write a cache with a valid checksum and the log's true fingerprint
        but the contents C{forge(state)} makes of the true state.
        """
        _, state = logModule._loadState(readFile(self.log.cachePath))
        fd = os.open(self.log.path, os.O_RDONLY)
        try:
            fingerprint = logModule._fingerprint(fd, os.fstat(fd), state.offset)
        finally:
            os.close(fd)
        forged = State(
            identity=state.identity,
            have={by: Intervals(held.ranges()) for by, held in state.have.items()},
            offset=state.offset,
            intact=state.intact,
            damaged=state.damaged,
        )
        forge(forged)
        with open(self.log.cachePath, "wb") as f:
            f.write(logModule._dumpState(fingerprint, forged))

    def test_forgedNextAt(self):
        """
        A forged cache that would have this node reuse the C{at} of its last
        add is not believed.
        """

        def forge(state):
            mine = state.have[state.identity]
            state.have[state.identity] = mine.difference(Intervals([(mine.end() - 1, mine.end())]))

        self.forgeCache(forge)
        self.assertHealthy(Log(self.log.path))

    def test_forgedIdentity(self):
        """
        A forged cache naming another identity is not believed.
        """

        def forge(state):
            state.have[b"other"] = state.have.pop(state.identity)
            state.identity = b"other"

        self.forgeCache(forge)
        self.assertHealthy(Log(self.log.path))

    def test_forgedHealthy(self):
        """
        A forged cache that says a damaged log is whole is not believed
        where its damage is sampled.
        """
        offset, length = self.flipInMiddle(keepTime=True)
        self.forgeCache(lambda state: None)
        self.patch(logModule, "_sampleOffsets", lambda end: [0, offset - 10])
        self.assertHealthy(Log(self.log.path))


class CheckTests(TestCase):
    """
    L{Scan} and L{Log.check} find every damaged line of a log, and what
    each origin lacks.
    """

    @_damageSettings
    @given(st.data())
    def test_regions(self, data):
        """
        Whatever lines are damaged, the scan reports exactly their regions,
        holds exactly the intact adds, and the C{at}s lost below each
        origin's largest are missing.
        """
        count = data.draw(st.integers(2, 40))
        lines = [encodeAdd([(b"I", b"me")])] + [peerLine(at) for at in range(count)]
        hit = data.draw(st.sets(st.integers(1, count), max_size=count))
        size = data.draw(st.sampled_from([7, 64, 1 << 20]))
        for index in hit:
            line = lines[index]
            position = data.draw(st.integers(0, len(line) - 2))
            lines[index] = line[:position] + bytes([line[position] ^ 0x01]) + line[position + 1 :]
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(b"".join(lines))
        scan = Scan(os.path.getsize(path))
        with open(path, "rb") as f:
            while not scan.done:
                self.assertGreater(scan.step(f.fileno(), size), 0)
        expected = []
        offset = 0
        for index, line in enumerate(lines):
            if index in hit:
                if expected and sum(expected[-1]) == offset:
                    expected[-1][1] += len(line)
                else:
                    expected.append([offset, len(line)])
            offset += len(line)
        self.assertEqual(scan.regions, expected)
        self.assertEqual(scan.state.damaged, len(hit))
        self.assertEqual(scan.state.identity, b"me")
        intact = [at for at in range(count) if at + 1 not in hit]
        self.assertEqual(set(scan.state.have.get(b"peer", ())), set(intact))
        lost = [at for at in range(count) if at + 1 in hit and intact and at < max(intact)]
        self.assertEqual(set(scan.missing().get(b"peer", ())), set(lost))

    def test_unterminatedTail(self):
        """
        A last line still being written is neither checked nor damage.
        """
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(encodeAdd([(b"I", b"me")]) + peerLine(0) + peerLine(1)[:-5])
        scan = Log(path).check()
        self.assertEqual((scan.regions, scan.state.damaged), ([], 0))
        self.assertEqual(set(scan.state.have[b"peer"]), {0})

    def test_checkRebuildsCache(self):
        """
        After L{Log.check}, a new L{Log} takes the checked state from the
        cache.
        """
        log, data = makeLog(self, 30, seed=9)
        scan = log.check()
        self.assertEqual(scan.regions, [])
        fresh = Log(log.path)
        self.patch(logModule, "entries", lambda f, start=0: iter(()))
        self.assertEqual(fresh.state().nextAt(), 30)


def peerLine(at, by=b"peer", value=None):
    """
    An add from another node.
    """
    if value is None:
        value = b"%d" % (at,)
    return encodeAdd([(b"by", by), (b"at", b"%d" % (at,)), (b"m", value)])


def keyedRecords(blocks):
    """
    The C{(record, (by, at))} of each add that L{keyedBlocks} gives in
    C{blocks}, L{Stretch}es or lists.
    """
    found = []
    for block in blocks:
        if isinstance(block, Stretch):
            found.extend((line[:-1], key) for line, key in block)
        else:
            found.extend((record, key) for record, body, key in block)
    return found


def outcome(result):
    """
    The lines a L{Log.receive} appended, and how many it found corrupt.
    """
    return [line for offset, line, key in result.appended], result.corrupt


class ReceiveTests(StateAssertions, TestCase):
    """
    L{Log.receive} appends the intact adds from a peer that the log lacks.
    """

    def setUp(self):
        self.log = Log(self.mktemp())
        self.log.say([(b"m", b"first")])
        self.identity = self.log.state().identity

    def assertReceive(self, lines, accepted, corrupt=0):
        before = readFile(self.log.path)
        result = self.log.receive(b"".join(lines))
        self.assertEqual(outcome(result), (accepted, corrupt))
        data = readFile(self.log.path)
        self.assertEqual(data, before + b"".join(accepted))
        for offset, line, key in result.appended:
            self.assertEqual(data[offset : offset + len(line)], line)
            self.assertEqual(key, identify(checkLine(line)))
        self.assertPlaces(result)
        self.assertState(self.log)

    def assertPlaces(self, result):
        """
        C{result.places()} says what C{result.appended} does.
        """
        appended = result.appended
        self.assertEqual(
            result.places(),
            (
                [key for offset, line, key in appended],
                [offset for offset, line, key in appended],
                [len(line) for offset, line, key in appended],
            ),
        )

    def test_accepts(self):
        lines = [peerLine(0), peerLine(1), peerLine(5), peerLine(0, by=b"other")]
        self.assertReceive(lines, lines)
        self.assertEqual(haveOf(self.log.state())[b"peer"], {0, 1, 5})
        self.assertSaysNext(self.log)

    def test_acceptsOriginals(self):
        """
        Lines as the original wrote them are taken byte for byte.
        """
        lines = readFile(os.path.join(DATA, "lowercase-escapes.log")).splitlines(True)
        lines = [line for line in lines if b"by=" in line]
        self.assertTrue(lines)
        self.assertReceive(lines, lines)

    def test_duplicatesInBatch(self):
        self.assertReceive(
            [peerLine(0), peerLine(0), peerLine(1), peerLine(0, value=b"other")],
            [peerLine(0), peerLine(1)],
        )

    def test_duplicatesHeld(self):
        self.assertReceive([peerLine(0)], [peerLine(0)])
        self.assertReceive([peerLine(0), peerLine(1)], [peerLine(1)])
        self.assertReceive([peerLine(1, value=b"other")], [])
        self.assertReceive([], [])

    def test_consecutive(self):
        """
        Batches in which each origin's serials follow one another, as a
        peer sends what a log lacks, are taken whole when all are new and
        add by add when some are held.
        """
        first = [peerLine(0), peerLine(1), peerLine(0, by=b"other"), peerLine(2)]
        result = self.log.receive(b"".join(first))
        self.assertEqual(result.spans, {b"peer": [0, 3], b"other": [0, 1]})
        self.assertEqual(outcome(result), (first, 0))
        self.assertReceive([peerLine(3), peerLine(4)], [peerLine(3), peerLine(4)])
        self.assertReceive(
            [peerLine(4), peerLine(5), peerLine(1, by=b"other")],
            [peerLine(5), peerLine(1, by=b"other")],
        )
        self.assertEqual(haveOf(self.log.state())[b"peer"], set(range(6)))
        self.assertEqual(haveOf(self.log.state())[b"other"], {0, 1})
        self.assertState(self.log)
        self.assertSaysNext(self.log)

    @settings(max_examples=60, deadline=None)
    @given(
        st.lists(
            st.lists(
                st.tuples(st.sampled_from([b"p", b"q", b"r"]), st.integers(0, 12)),
                max_size=12,
            ),
            max_size=5,
        )
    )
    def test_batches(self, batches):
        """
        Whatever the batches, each key is appended once, the first time it
        is given, and the log's state says what it holds.
        """
        log = Log(self.mktemp())
        log.say([(b"m", b"first")])
        held = {(by, at) for by, ats in haveOf(log.state()).items() for at in ats}
        for batch in batches:
            # Often each origin's serials in order, as peers send them.
            if len(batch) % 2:
                batch = sorted(batch, key=lambda key: key[1])
            expected = []
            for key in batch:
                if key not in held:
                    held.add(key)
                    expected.append(peerLine(key[1], by=key[0]))
            result = log.receive(b"".join(peerLine(at, by=by) for by, at in batch))
            self.assertEqual(outcome(result), (expected, 0))
            self.assertEqual(result.held, list(batch))
        state = log.state()
        self.assertEqual(
            {(by, at) for by, ats in haveOf(state).items() for at in ats}, held
        )
        self.assertState(log)

    def test_corrupt(self):
        """
        Lines that are not intact adds with a C{by} and C{at} are dropped and
        counted.
        """
        flipped = bytearray(peerLine(2))
        flipped[20] ^= 1

        def raw(body):
            return b"%s %d<%s>%d\n" % (lineHash(body), len(body), body, len(body))

        bad = [
            bytes(flipped),
            peerLine(4)[:-1] + b"x\n",
            b"garbage\n",
            b"\n",
            encodeAdd([(b"I", b"impostor")]),
            encodeAdd([(b"by", b"peer"), (b"m", b"no at")]),
            encodeAdd([(b"at", b"6")]),
            encodeAdd([(b"by", b"peer"), (b"at", b"seven")]),
            raw(b"by=peer&at=8&junk"),
        ]
        # The last line cut short.
        self.assertReceive(bad + [peerLine(1), peerLine(3)[:-1]], [peerLine(1)], len(bad) + 1)
        state = self.log.state()
        self.assertEqual(state.identity, self.identity)
        self.assertEqual(haveOf(state)[b"peer"], {1})

    def test_takenWhole(self):
        """
        A batch whose origins' serials follow one another and are all new
        is written as given but for its damaged lines, and what was
        appended is known line by line when asked.
        """
        lines = [peerLine(at, by=by) for at in range(30) for by in (b"peer", b"other")]
        flipped = bytearray(peerLine(30))
        flipped[20] ^= 1
        given = lines[:7] + [bytes(flipped)] + lines[7:]
        before = readFile(self.log.path)
        result = self.log.receive(b"".join(given))
        self.assertEqual(readFile(self.log.path), before + b"".join(lines))
        self.assertEqual((result.count, result.corrupt, result.whole), (60, 1, True))
        self.assertEqual(result.spans, {b"peer": [0, 30], b"other": [0, 30]})
        self.assertEqual(result.lines, lines)
        keys = [identify(checkLine(line)) for line in lines]
        self.assertEqual((result.keys, result.held), (keys, keys))
        self.assertEqual(outcome(result), (lines, 1))
        self.assertPlaces(result)
        self.assertState(self.log)

    def test_ownIdentity(self):
        """
        An add by this node's own identity, come back from a peer, is taken
        and the next C{at} is past it.
        """
        self.assertEqual(self.log.state().nextAt(), 1)
        mine = peerLine(5, by=self.identity)
        self.assertReceive([mine], [mine])
        self.assertEqual(self.log.state().nextAt(), 6)
        self.assertSaysNext(self.log)
        gap = peerLine(3, by=self.identity)
        self.assertReceive([gap, peerLine(0, by=self.identity)], [gap])
        self.assertEqual(self.log.state().nextAt(), 7)

    def test_newLog(self):
        """
        Receiving into a new log gives it an identity first.
        """
        log = Log(self.mktemp())
        self.assertEqual(outcome(log.receive(peerLine(0))), ([peerLine(0)], 0))
        data = readFile(log.path)
        [(name, identity)] = decodeLine(data[: -len(peerLine(0))])
        self.assertEqual(name, b"I")
        self.assertEqual(log.state().identity, identity)

    def test_tornTail(self):
        with open(self.log.path, "ab") as f:
            f.write(peerLine(0)[:10])
        before = readFile(self.log.path)
        self.assertEqual(outcome(self.log.receive(peerLine(0))), ([peerLine(0)], 0))
        self.assertEqual(readFile(self.log.path), before + b"\n" + peerLine(0))

    def test_tornBeforeLineFeed(self):
        """
        An add from a peer that the log already holds but for its LF (its
        writer was killed just before it) is not appended again: the LF is
        written and the rest of the batch follows it.
        """
        with open(self.log.path, "ab") as f:
            f.write(peerLine(0)[:-1])
        before = readFile(self.log.path)
        result = self.log.receive(peerLine(0) + peerLine(1))
        self.assertEqual(outcome(result), ([peerLine(1)], 0))
        self.assertEqual(result.held, [(b"peer", 0), (b"peer", 1)])
        self.assertEqual(readFile(self.log.path), before + b"\n" + peerLine(1))
        self.assertEqual(result.start, len(before) + 1)
        self.assertState(self.log)
        os.unlink(self.log.cachePath)
        self.assertState(Log(self.log.path))

    def test_notALog(self):
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(peerLine(0))
        self.assertRaises(LogError, Log(path).receive, peerLine(1))
        self.assertEqual(readFile(path), peerLine(0))


def vectorNextAt(name, by):
    """
    One past the largest C{at} by C{by} in a vector's expected.json.
    """
    with open(os.path.join(DATA, name + ".expected.json")) as f:
        adds = json.load(f)["adds"]
    ats = []
    for pairs in adds:
        pairs = [(bytes.fromhex(name), bytes.fromhex(value)) for name, value in pairs]
        if pairs[:1] == [(b"by", by)] and pairs[1][0] == b"at":
            ats.append(int(pairs[1][1]))
    return max(ats) + 1


def pieces(data, sizes):
    """
    C{data} cut into pieces of the C{sizes} given in turn.
    """
    found = []
    start = 0
    turn = 0
    while start < len(data):
        size = max(1, sizes[turn % len(sizes)])
        found.append(data[start : start + size])
        start += size
        turn += 1
    return found


def checkInPieces(line, sizes, size=None):
    """
    L{LineCheck} on C{line} in pieces.

    @return: the C{(by, at)} it found, or L{None} if it refused the line.
    """
    check = LineCheck(len(line) if size is None else size)
    try:
        for piece in pieces(line, sizes):
            check.update(piece)
        return check.finish()
    except CorruptLine:
        return None


def checkWhole(line):
    """
    The C{(by, at)} that L{checkKeyedLine} finds in C{line}, or L{None}.
    """
    try:
        return checkKeyedLine(line)[1]
    except CorruptLine:
        return None


class LineCheckTests(TestCase):
    """
    L{LineCheck} judges a line a piece at a time as L{checkKeyedLine} judges
    it whole.
    """

    @given(
        st.lists(
            st.tuples(
                st.sampled_from([b"by", b"at", b"m", b"%62y", b"a%74", b"by "]),
                st.one_of(st.binary(max_size=30), st.sampled_from([b"0", b"12", b"007"])),
            ),
            max_size=5,
        ),
        st.lists(st.tuples(st.integers(0, 200), st.sampled_from(b"&=<>\n%+0a ")), max_size=3),
        st.lists(st.integers(1, 70), min_size=1, max_size=4),
    )
    @settings(max_examples=500, deadline=None)
    def test_likeWhole(self, pairs, damage, sizes):
        line = bytearray(encodeAdd(pairs))
        for position, byte in damage:
            line[position % len(line)] = byte
        line = bytes(line)
        self.assertEqual(checkInPieces(line, sizes), checkWhole(line))

    def test_escapedKey(self):
        """
        C{by} and C{at} are found anywhere in the body, whatever the
        spelling of their names; an C{at} whose digits are escaped is not a
        serial number, whole or in pieces.
        """
        for at, key in [(b"5", (b"p", 5)), (b"%35", None)]:
            body = b"m%3d=1&%61t=" + at + b"&&m=" + b"v" * 5000 + b"&%62y=p&by=q"
            length = b"%d" % (len(body),)
            line = lineHash(body) + b" " + length + b"<" + body + b">" + length + b"\n"
            self.assertEqual(checkWhole(line), key)
            self.assertEqual(checkInPieces(line, [7, 1000]), key)

    def test_size(self):
        """
        A line is refused when it is not the size announced.
        """
        line = peerLine(0, value=b"v" * 100)
        self.assertEqual(checkInPieces(line, [10], len(line)), (b"peer", 0))
        self.assertIsNone(checkInPieces(line, [10], len(line) + 1))
        self.assertIsNone(checkInPieces(line + b"x", [10], len(line)))

    def test_longKey(self):
        """
        A C{by} too long for the check to hold is refused.
        """
        line = peerLine(0, by=b"b" * 2000)
        self.assertIsNone(checkInPieces(line, [100]))


class IncomingTests(StateAssertions, TestCase):
    """
    L{Log.incoming} and L{Log.receiveIncoming}: a large add from a peer,
    spooled beside the log, then appended.
    """

    def setUp(self):
        self.log = Log(self.mktemp())
        self.log.say([(b"m", b"first")])

    def spools(self):
        directory, name = os.path.split(self.log.path)
        prefix = b"." + name + b".gossip-incoming-"
        return [n for n in os.listdir(directory) if n.startswith(prefix)]

    def receive(self, line):
        incoming = self.log.incoming(len(line))
        self.assertEqual(len(self.spools()), 1)
        try:
            for piece in pieces(line, [1000, 3]):
                incoming.write(piece)
            self.assertEqual(incoming.finish(), identify(checkLine(line)))
            return self.log.receiveIncoming(incoming)
        finally:
            incoming.discard()

    def test_appended(self):
        """
        The add is appended, once.
        """
        line = peerLine(0, value=os.urandom(3 << 20))
        before = readFile(self.log.path)
        result = self.receive(line)
        self.assertEqual(readFile(self.log.path), before + line)
        (appended,) = result.lines
        self.assertIsInstance(appended, LargeLine)
        self.assertEqual(
            (result.start, len(appended), result.keys), (len(before), len(line), [(b"peer", 0)])
        )
        self.assertState(self.log)
        result = self.receive(line)
        self.assertEqual((result.lines, result.held), ([], [(b"peer", 0)]))
        self.assertEqual(readFile(self.log.path), before + line)
        self.assertEqual(self.spools(), [])

    def test_tornTail(self):
        """
        After a line torn by a writer that died (perhaps copying a large
        add in), the add stands on a line of its own.
        """
        with open(self.log.path, "ab") as f:
            f.write(peerLine(1, value=b"v" * 5000)[:3000])
        before = readFile(self.log.path)
        line = peerLine(0, value=b"w" * 100000)
        self.receive(line)
        self.assertEqual(readFile(self.log.path), before + b"\n" + line)
        self.assertState(self.log)

    def test_tornBeforeLineFeed(self):
        """
        A large add the log holds but for its LF (its copier was killed
        just before it) is not copied in again from a spool file; one it
        lacks is appended after the LF.
        """
        line = peerLine(0, value=b"w" * (3 << 20))
        with open(self.log.path, "ab") as f:
            f.write(line[:-1])
        before = readFile(self.log.path)
        result = self.receive(line)
        self.assertEqual((result.lines, result.held), ([], [(b"peer", 0)]))
        self.assertEqual(readFile(self.log.path), before + b"\n")
        self.assertState(self.log)
        other = peerLine(1, value=b"v" * 100000)
        result = self.receive(other)
        self.assertEqual(result.keys, [(b"peer", 1)])
        self.assertEqual(readFile(self.log.path), before + b"\n" + other)
        self.assertEqual(self.spools(), [])
        os.unlink(self.log.cachePath)
        self.assertState(Log(self.log.path))

    def test_discarded(self):
        """
        An add refused or abandoned leaves no spool file, and the log as
        it was.
        """
        before = readFile(self.log.path)
        incoming = self.log.incoming(100)
        incoming.write(b"garbage")
        incoming.discard()
        incoming.discard()
        self.assertEqual(self.spools(), [])
        self.assertEqual(readFile(self.log.path), before)

    def test_removeStale(self):
        """
        Spool files no process holds are removed; one in use is kept.
        """
        directory, name = os.path.split(self.log.path)
        stale = os.path.join(directory, b"." + name + b".gossip-incoming-dead")
        with open(stale, "wb") as f:
            f.write(b"half an add")
        other = os.path.join(directory, b".other.gossip-incoming-dead")
        open(other, "wb").close()
        live = self.log.incoming(100)
        self.addCleanup(live.discard)
        self.assertEqual(self.log.removeStale(), 1)
        self.assertFalse(os.path.exists(stale))
        self.assertTrue(os.path.exists(other))
        self.assertEqual(self.spools(), [os.path.basename(live.path)])


class LargeLineTests(TestCase):
    """
    L{keyedBlocks} gives lines longer than it will hold as L{LargeLine}s,
    checked a piece at a time.
    """

    def test_found(self):
        log = Log(self.mktemp())
        log.say([(b"m", b"first")])
        big = peerLine(1, value=b"v" * 5000)
        damaged = bytearray(peerLine(2, value=b"w" * 5000))
        damaged[2000] = ord("x")
        lines = [peerLine(0), big, peerLine(3), bytes(damaged), peerLine(4), big[:10]]
        with open(log.path, "ab") as f:
            f.write(b"".join(lines))
        with open(log.path, "rb") as f:
            found = list(keyedBlocks(f, size=1000, large=2000))
        large = [block for block in found if isinstance(block, LargeLine)]
        self.assertEqual(
            [(block.offset, block.length, block.key) for block in large],
            [(readFile(log.path).index(big), len(big), (b"peer", 1))],
        )
        small = keyedRecords(block for block in found if not isinstance(block, LargeLine))
        identity = log.state().identity
        self.assertEqual(
            [key for record, key in small],
            [(identity, 0), (b"peer", 0), (b"peer", 3), (b"peer", 4)],
        )
        self.assertLessEqual(max(len(record) for record, key in small), 2000)

    def test_checkedInSlices(self):
        """
        A large line is found and then checked a piece of 256 KiB at a
        time, with an empty block between pieces, so that a sender reading
        the log serves others meanwhile.
        """
        log = Log(self.mktemp())
        log.say([(b"m", b"first")])
        big = peerLine(1, value=b"v" * (3 << 20))
        with open(log.path, "ab") as f:
            f.write(big)
        reads = []
        pread = os.pread

        def counted(fd, length, offset):
            reads.append(length)
            return pread(fd, length, offset)

        self.patch(os, "pread", counted)
        found = []
        with open(log.path, "rb") as f:
            fileRead = f.read

            def readCounted(size=-1):
                data = fileRead(size)
                reads.append(len(data))
                return data

            f.read = readCounted
            for block in keyedBlocks(f):
                found.append((block, list(reads)))
                del reads[:]
        large = [block for block, read in found if isinstance(block, LargeLine)]
        self.assertEqual([block.key for block in large], [(b"peer", 1)])
        # Finding where the line ends reads no more between two blocks than
        # the reader holds before it knows the line is large.
        self.assertLessEqual(max(sum(read) for block, read in found), LARGE + (1 << 19))
        # Found, a piece at a time, then checked a piece at a time.
        self.assertGreaterEqual(len(found), 2 * (len(big) - LARGE) >> 18)
        self.assertGreaterEqual(len(found), len(big) >> 18)


# Receives a large add, and while copying it into the log writes only the
# first half of it, then holds the lock until it is killed.
_TORN_COPIER = r"""
import os, sys
from gossip.store import logfile as logModule

def tornWrite(fd, data, write=logModule._writeAll):
    data = bytes(data)
    write(fd, data[: len(data) // 2])
    sys.stdout.write("torn\n")
    sys.stdout.flush()
    sys.stdin.read()
    os._exit(3)

log = logModule.Log(sys.argv[1])
line = open(sys.argv[2], "rb").read()
incoming = log.incoming(len(line))
incoming.write(line)
incoming.finish()
logModule._writeAll = tornWrite
log.receiveIncoming(incoming)
"""


class KilledCopierTests(StateAssertions, TestCase):
    """
    A receiver killed while copying a large add into the log leaves no
    part of it as an add, and the next add on a line of its own.
    """

    def test_killedMidCopy(self):
        log, before = makeLog(self, 20, seed=5)
        line = peerLine(0, value=b"v" * (3 << 20))
        source = self.mktemp()
        with open(source, "wb") as f:
            f.write(line)
        copier = startChild(
            self,
            "-c",
            _TORN_COPIER,
            log.path,
            source,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        self.assertEqual(copier.stdout.readline(), b"torn\n")
        waiter = startChild(self, "-m", "gossip", "say", log.path, "m=after")
        os.kill(copier.pid, signal.SIGKILL)
        self.assertEqual(copier.wait(timeout=TIMEOUT), -signal.SIGKILL)
        self.assertEqual(waiter.wait(timeout=TIMEOUT), 0)
        data = readFile(log.path)
        self.assertTrue(data.startswith(before))
        torn, after = data[len(before) :].split(b"\n", 1)
        self.assertTrue(line.startswith(torn) and len(torn) < len(line) - 1)
        self.assertEqual(dict(decodeLine(after))[b"m"], b"after")
        state = self.assertState(log)
        self.assertFalse(state.holds(b"peer", 0))
        # The next receiver takes the add whole.
        incoming = log.incoming(len(line))
        incoming.write(line)
        incoming.finish()
        log.receiveIncoming(incoming)
        incoming.discard()
        self.assertTrue(readFile(log.path).endswith(after + line))
        self.assertTrue(self.assertState(log).holds(b"peer", 0))


def rawLine(body):
    """
    A line with a right hash and lengths for C{body}, whatever it holds.
    """
    return b"%s %d<%s>%d\n" % (lineHash(body), len(body), body, len(body))


# Lines whose hash and lengths are right but whose at is not a serial
# number: damaged, though no writer would write them.
NOT_SERIAL_LINES = [
    rawLine(b"by=peer&at=" + b"9" * 4300 + b"&m=bricks"),
    rawLine(b"by=peer&at=007&m=twice"),
    rawLine(b"by=peer&at=%d&m=huge" % (2**63,)),
    rawLine(b"m=late&at=-1&by=peer"),
]


class SerialTests(StateAssertions, TestCase):
    """
    A line whose C{at} is not a serial number is damaged wherever it is
    met, and breaks nothing.
    """

    def setUp(self):
        self.log = Log(self.mktemp())
        self.log.say([(b"m", b"before")])
        with open(self.log.path, "ab") as f:
            f.write(b"".join(NOT_SERIAL_LINES))

    def test_read(self):
        """
        Reading skips each such line as damaged, and keeps the rest.
        """
        with open(self.log.path, "rb") as f:
            bodies = [body for _, _, body in entries(f)]
        self.assertEqual(bodies[2:], [None] * len(NOT_SERIAL_LINES))
        with open(self.log.path, "rb") as f:
            self.assertEqual([body for _, _, body in reverseEntries(f)], bodies[::-1])

    def test_state(self):
        """
        Opening the log, with or without its cache, counts them as damaged
        and says the next add as usual.
        """
        for cached in (False, True):
            if not cached and os.path.exists(self.log.cachePath):
                os.unlink(self.log.cachePath)
            log = Log(self.log.path)
            state = log.state()
            self.assertEqual(state.damaged, len(NOT_SERIAL_LINES))
            self.assertEqual(set(state.have), {state.identity})
            self.assertHealthy(log)

    def test_receive(self):
        """
        From a peer, each is refused and counted as a bad add.
        """
        result = self.log.receive(b"".join(NOT_SERIAL_LINES + [peerLine(0)]))
        self.assertEqual(outcome(result), ([peerLine(0)], len(NOT_SERIAL_LINES)))

    def test_full(self):
        """
        A node whose next C{at} would not be a serial number says nothing.
        """
        state = self.log.state()
        line = encodeAdd([(b"by", state.identity), (b"at", b"%d" % (2**63 - 1,))])
        with open(self.log.path, "ab") as f:
            f.write(line)
        error = self.assertRaises(LogError, self.log.say, [(b"m", b"x")])
        self.assertIn("no more serial numbers", str(error))
        self.assertTrue(readFile(self.log.path).endswith(line))


class SayTests(StateAssertions, TestCase):
    """
    L{Log.say}: what it refuses, and what it writes.
    """

    def assertOneLineError(self, error, path):
        message = str(error)
        self.assertNotIn("\n", message)
        self.assertIn(os.fsdecode(path), message)

    def test_reserved(self):
        path = self.mktemp()
        for name in sorted(RESERVED):
            error = self.assertRaises(LogError, Log(path).say, [(b"m", b"x"), (name, b"x")])
            self.assertNotIn("\n", str(error))
        self.assertEqual(RESERVED, {b"by", b"at", b"I"})
        self.assertFalse(os.path.exists(path))
        # Other names that only look like them are fine.
        log = Log(path)
        log.say([(b"m", b"first")])
        for name in (b"BY", b"i", b"at ", b"I\x00"):
            self.assertSaysNext(log, [(name, b"x")])

    def test_first(self):
        """
        A new log starts with its identity add.
        """
        log = Log(self.mktemp())
        line = log.say([(b"m", b"hello")])
        data = readFile(log.path)
        identityLine = data[: -len(line)]
        [(name, identity)] = decodeLine(identityLine)
        self.assertEqual(name, b"I")
        self.assertEqual(decodeLine(line), [(b"by", identity), (b"at", b"0"), (b"m", b"hello")])
        self.assertEqual(log.state().identity, identity)

    def test_identity(self):
        """
        A new identity is at least 96 random bits of URL-safe base64.
        """
        alphabet = set(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
        identities = set()
        for _ in range(5):
            log = Log(self.mktemp())
            log.say([(b"m", b"x")])
            identities.add(log.state().identity)
            identities.add(newIdentity())
        self.assertEqual(len(identities), 10)
        for identity in identities:
            self.assertGreaterEqual(len(identity) * 6, 96)
            self.assertLessEqual(set(identity), alphabet)

    def test_binary(self):
        log = Log(self.mktemp())
        log.say([(b"m", b"first")])
        pairs = [(bytes(range(1, 256)), bytes(range(256))), (b"m", b"\n" * 3), (b"m", b"")]
        line = self.assertSaysNext(log, pairs)
        self.assertEqual(decodeLine(line)[2:], pairs)
        self.assertEqual(original.decodeAdd(line)[2:], pairs)

    def test_originalIdentity(self):
        """
        A log the original wrote, with its short identity, goes on with the
        original's identity and the next C{at}.
        """
        log = Log(self.mktemp())
        shutil.copyfile(os.path.join(DATA, "original-basic.log"), log.path)
        state = self.assertState(log)
        self.assertEqual(state.identity, b"seed1")
        self.assertIn(b"peer1", state.have)
        line = self.assertSaysNext(log)
        at = vectorNextAt("original-basic", b"seed1")
        self.assertEqual(decodeLine(line)[:2], [(b"by", b"seed1"), (b"at", b"%d" % (at,))])

    def test_torn(self):
        """
        A log that ends in an unfinished line has it ended before the next
        add, which becomes the next C{at}.
        """
        log = Log(self.mktemp())
        shutil.copyfile(os.path.join(DATA, "torn-tail.log"), log.path)
        before = readFile(log.path)
        line = self.assertSaysNext(log)
        found = list(entries(io.BytesIO(readFile(log.path))))
        self.assertEqual([b is None for _, _, b in found[-2:]], [True, False])
        self.assertEqual(found[-1][0], len(before) + 1)
        at = vectorNextAt("torn-tail", b"seed1")
        self.assertEqual(decodeLine(line)[:2], [(b"by", b"seed1"), (b"at", b"%d" % (at,))])

    def test_tornIdentity(self):
        """
        A new log whose identity add was torn gets a whole one.
        """
        log = Log(self.mktemp())
        torn = encodeAdd([(b"I", newIdentity())])[:12]
        with open(log.path, "wb") as f:
            f.write(torn)
        line = log.say([(b"m", b"x")])
        data = readFile(log.path)
        self.assertTrue(data.startswith(torn + b"\n"))
        [(name, identity)] = decodeLine(data[len(torn) + 1 : -len(line)])
        self.assertEqual(decodeLine(line)[:2], [(b"by", identity), (b"at", b"0")])

    def test_tornBeforeLineFeed(self):
        """
        A log whose last add lacks only its LF (its writer was killed just
        before writing it) has that add ended and counted: the next add
        takes the C{at} after it, and the state a new scan of the log finds
        is the same.
        """
        log, data = makeLog(self, 5, seed=11)
        with open(log.path, "wb") as f:
            f.write(data[:-1])
        # Reading writes nothing, and holds no more than the complete lines.
        self.assertState(log)
        self.assertEqual(readFile(log.path), data[:-1])
        line = self.assertSaysNext(log)
        self.assertEqual(readFile(log.path), data + line)
        self.assertEqual(decodeLine(line)[1], (b"at", b"5"))
        self.assertHealthy(log)
        os.unlink(log.cachePath)
        self.assertHealthy(Log(log.path))

    def test_tornIdentityBeforeLineFeed(self):
        """
        A new log whose identity add lacks only its LF keeps that identity.
        """
        log = Log(self.mktemp())
        identityLine = encodeAdd([(b"I", newIdentity())])
        with open(log.path, "wb") as f:
            f.write(identityLine[:-1])
        line = log.say([(b"m", b"x")])
        self.assertEqual(readFile(log.path), identityLine + line)
        [(_, identity)] = decodeLine(identityLine)
        self.assertEqual(decodeLine(line)[:2], [(b"by", identity), (b"at", b"0")])
        self.assertHealthy(log)

    def test_tornAddWithoutIdentity(self):
        """
        A file that holds only an add without its LF, and no identity add,
        is not a log to say into, and is left as it is.
        """
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(peerLine(0)[:-1])
        self.assertOneLineError(self.assertRaises(LogError, Log(path).say, [(b"m", b"x")]), path)
        self.assertEqual(readFile(path), peerLine(0)[:-1])

    def test_directory(self):
        path = self.mktemp()
        os.mkdir(path)
        self.assertOneLineError(self.assertRaises(LogError, Log(path).say, [(b"m", b"x")]), path)
        self.assertOneLineError(self.assertRaises(LogError, Log(path).state), path)
        self.assertOneLineError(self.assertRaises(LogError, Log(path).open), path)

    def test_notFiles(self):
        """
        A FIFO, a device or a directory is refused before it is opened
        (opening a FIFO would wait for a writer), in one line.
        """
        fifo = self.mktemp()
        os.mkfifo(fifo)
        directory = self.mktemp()
        os.mkdir(directory)
        for path, reason in [(fifo, "a FIFO"), (os.devnull, "a device"), (directory, "directory")]:
            for use in (Log(path).open, Log(path).state, lambda: Log(path).say([(b"m", b"x")])):
                error = self.assertRaises(LogError, use)
                self.assertOneLineError(error, path)
                self.assertIn(reason, str(error))
        self.assertFalse(os.path.exists(Log(fifo).cachePath))

    def test_notALog(self):
        """
        A file that is not empty and holds no intact add is not turned into
        a log: it is refused, left as it was, and given no cache.
        """
        for data in [b"x", b"x" * 11, b"no line feed " * 1000, b"\0" * 100, b"garbage\nmore", b"x" * 11 + b" 5<m=1"]:
            log = Log(self.mktemp())
            with open(log.path, "wb") as f:
                f.write(data)
            error = self.assertRaises(LogError, log.say, [(b"m", b"x")])
            self.assertIn("not a gossip log", str(error))
            self.assertOneLineError(error, log.path)
            self.assertEqual(readFile(log.path), data)
            self.assertFalse(os.path.exists(log.cachePath))

    def test_tornFirstLine(self):
        """
        A log whose first line is damaged but which holds intact adds after
        it is still a log.
        """
        log, data = makeLog(self, 3, seed=8)
        with open(log.path, "wb") as f:
            f.write(b"torn" + data[data.index(b"\n") :])
        self.assertIn(b"not a gossip log (it has adds but no identity add)", str(self.assertRaises(LogError, log.say, [])).encode())
        with open(log.path, "wb") as f:
            f.write(data + b"torn")
        self.assertSaysNext(log)

    def test_tornIdentityAnywhere(self):
        """
        A new log whose identity add was cut short after its hash (its
        creator killed while writing it) is still one to say into.
        """
        line = encodeAdd([(b"I", newIdentity())])
        for end in (12, 15, len(line) - 3, len(line) - 1):
            log = Log(self.mktemp())
            with open(log.path, "wb") as f:
                f.write(line[:end])
            said = log.say([(b"m", b"x")])
            self.assertEqual(readFile(log.path)[: end + 1], line[:end] + b"\n")
            self.assertTrue(readFile(log.path).endswith(said))

    def test_noIdentity(self):
        """
        A file with adds but no identity add is not a log to say into.
        """
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(original.encodeAdd([(b"by", b"someone"), (b"at", b"0"), (b"m", b"x")]))
        before = readFile(path)
        self.assertOneLineError(self.assertRaises(LogError, Log(path).say, [(b"m", b"x")]), path)
        self.assertEqual(readFile(path), before)

    def test_missingDirectory(self):
        path = os.path.join(self.mktemp(), "no", "log")
        self.assertOneLineError(self.assertRaises(LogError, Log(path).say, [(b"m", b"x")]), path)

    def test_underAFile(self):
        parent = self.mktemp()
        with open(parent, "wb"):
            pass
        path = os.path.join(parent, "log")
        self.assertOneLineError(self.assertRaises(LogError, Log(path).say, [(b"m", b"x")]), path)

    def test_readOnly(self):
        if os.geteuid() == 0:
            raise SkipTest("root can write to any file")
        log, before = makeLog(self, 2, seed=9)
        os.chmod(log.path, stat.S_IRUSR)
        self.assertOneLineError(self.assertRaises(LogError, log.say, [(b"m", b"x")]), log.path)
        self.assertEqual(readFile(log.path), before)

    def test_missing(self):
        """
        Reading a log that is not there is an error, and creates nothing.
        """
        path = self.mktemp()
        self.assertOneLineError(self.assertRaises(LogError, Log(path).state), path)
        self.assertOneLineError(self.assertRaises(LogError, Log(path).open), path)
        self.assertFalse(os.path.exists(path))

    def test_fsync(self):
        """
        With C{fsync}, every append is synced, and so is the directory of a
        new log; without, nothing is.
        """
        synced = []

        def recorder(real):
            def sync(fd):
                synced.append(stat.S_ISDIR(os.fstat(fd).st_mode))
                return real(fd)

            return sync

        self.patch(os, "fdatasync", recorder(os.fdatasync))
        self.patch(os, "fsync", recorder(os.fsync))
        path = self.mktemp()
        Log(path).say([(b"m", b"x")])
        self.assertEqual(synced, [])

        path = self.mktemp()
        log = Log(path, fsync=True)
        line = log.say([(b"m", b"x")])
        self.assertTrue(readFile(path).endswith(line))
        # The identity add, the directory entry, the add.
        self.assertEqual(synced, [False, True, False])
        self.assertSaysNext(log)
        self.assertEqual(synced, [False, True, False, False])


class CheckUsableTests(TestCase):
    """
    L{Log.checkUsable}: what can be told of a log without writing anything.
    """

    def setUp(self):
        self.dir = os.path.abspath(self.mktemp())
        os.makedirs(self.dir)

    def test_usable(self):
        """
        A missing log in a directory that exists, and an existing file, are
        usable; nothing is written.
        """
        path = os.path.join(self.dir, "a.log")
        Log(path).checkUsable()
        self.assertEqual(os.listdir(self.dir), [])
        Log(path).say([(b"m", b"1")])
        before = sorted(os.listdir(self.dir))
        Log(path).checkUsable()
        self.assertEqual(sorted(os.listdir(self.dir)), before)

    def test_refused(self):
        """
        A log in a missing directory, a directory, and a FIFO are refused,
        saying why.
        """
        missing = os.path.join(self.dir, "nowhere", "a.log")
        fifo = os.path.join(self.dir, "fifo")
        os.mkfifo(fifo)
        for path, why in [
            (missing, "No such file or directory"),
            (self.dir, "Is a directory"),
            (fifo, "not a regular file (a FIFO)"),
        ]:
            error = self.assertRaises(LogError, Log(path).checkUsable)
            self.assertEqual(str(error), f"{path}: {why}")
        self.assertFalse(os.path.exists(os.path.dirname(missing)))

    def test_unwritable(self):
        """
        A log its user may not write, or whose directory it may not write
        to, is refused.
        """
        if os.getuid() == 0:
            raise SkipTest("root may write anything")
        directory = os.path.join(self.dir, "locked")
        os.makedirs(directory)
        existing = os.path.join(self.dir, "a.log")
        Log(existing).say([(b"m", b"1")])
        os.chmod(existing, 0o444)
        os.chmod(directory, 0o555)
        self.addCleanup(os.chmod, directory, 0o755)
        for path in (existing, os.path.join(directory, "a.log")):
            error = self.assertRaises(LogError, Log(path).checkUsable)
            self.assertEqual(str(error), f"{path}: Permission denied")
