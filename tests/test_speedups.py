"""
Tests for gossip.store._speedups: the C versions of L{gossip.store.format}'s hot
functions agree with the Python ones, on intact adds and on hostile input.

These are skipped when the C module is not built, unless
C{GOSSIP_REQUIRE_SPEEDUPS} is set (as CI sets it), when they fail instead.
"""

import os
from hashlib import sha256

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SkipTest, TestCase

from gossip.store import format
from gossip.store import intervals
from gossip.store import logfile
from gossip.store.format import PYTHON, CorruptLine, encodeAdd, lineHash

try:
    from gossip.store import _speedups
except ImportError as e:
    _speedups = None
    _why = f"gossip.store._speedups is not built ({e})"

_many = settings(max_examples=400, deadline=None)

# What a line is made of, and what breaks one.
ALPHABET = b"ab09=&%+<>\n \\AFf"
# Drawn as text, one choice a string rather than one a byte: the same
# strings, generated several times faster.
hostile = st.text(ALPHABET.decode("ascii"), max_size=40).map(str.encode)
values = st.one_of(hostile, st.binary(max_size=20))
pairLists = st.lists(st.tuples(values, values), max_size=5)


@st.composite
def keyedPairs(draw):
    """
    Pairs as the original writes them: C{by} and C{at} first, sometimes in
    an unusual form (escaped, not digits, elsewhere in the body).
    """
    by = draw(st.one_of(st.sampled_from([b"node", b"", b"a b", b"x%y"]), hostile))
    at = draw(serials)
    rest = draw(pairLists)
    if draw(st.booleans()):
        return [(b"by", by), (b"at", at)] + rest
    return rest + [(b"at", at), (b"by", by)]


# Serial numbers, the largest and the smallest, and what is near them but
# is not one (see gossip.store.format.isSerial).
SERIALS = [b"0", b"1", b"%d" % (2**63 - 1,), b"%d" % (2**63 - 2,), b"1" + b"0" * 18]
NOT_SERIALS = [
    b"",
    b"007",
    b"00",
    b"-1",
    b"+1",
    b" 1",
    b"1_000",
    b"1x",
    b"%d" % (2**63,),
    b"%d" % (2**64,),
    b"9" * 19,
    b"9" * 20,
    b"9" * 4300,
    "\u0661\u0662".encode("utf-8"),
    "\uff11".encode("utf-8"),
]
serials = st.one_of(
    st.integers(0, 10**25).map(b"%d".__mod__),
    st.integers(2**63 - 3, 2**63 + 3).map(b"%d".__mod__),
    st.sampled_from(SERIALS + NOT_SERIALS),
)
# Names that are, or nearly are, "at" as a body spells it.
atNames = st.sampled_from([b"at", b"%61t", b"a%74", b"%61%74", b"%61%54", b"a+t", b"at ", b"At", b"t"])


@st.composite
def atBodies(draw):
    """
    Bodies as written, not encoded: an C{at} anywhere, its name escaped or
    not, its value as written whether or not a writer would write it.
    """
    items = draw(st.lists(st.tuples(st.one_of(atNames, hostile), serials), max_size=5))
    if draw(st.booleans()):
        items.insert(0, (b"at", draw(serials)))
        items.insert(0, (b"by", draw(st.sampled_from([b"node", b"", b"x%y"]))))
    return b"&".join(name + b"=" + value for name, value in items)


@st.composite
def damagedLines(draw, pairs=pairLists):
    """
    An intact line, or one with a byte changed, removed or inserted, its
    lengths or hash made wrong, or its body replaced by hostile bytes.
    """
    line = encodeAdd(draw(pairs))
    damage = draw(st.sampled_from(["none", "replace", "delete", "insert", "body", "lengths"]))
    if damage == "none" or len(line) < 2:
        return line
    at = draw(st.integers(0, len(line) - 1))
    byte = bytes([draw(st.sampled_from(list(ALPHABET)))])
    if damage == "replace":
        return line[:at] + byte + line[at + 1 :]
    if damage == "delete":
        return line[:at] + line[at + 1 :]
    if damage == "insert":
        return line[:at] + byte + line[at:]
    body = draw(hostile)
    length = b"%d" % (len(body),)
    if damage == "lengths":
        length = draw(st.sampled_from([b"0" + length, length + b"0", b"", b"00000000000000000000" + length]))
    return b"%s %s<%s>%s\n" % (lineHash(body), length, body, length)


@st.composite
def keyedRuns(draw):
    """
    Lines as a peer sends them: often each origin's serials following one
    another, sometimes not; now and then a line damaged, an add in an
    unusual shape, or the last line cut short.
    """
    next = {}
    lines = []
    for _ in range(draw(st.integers(0, 10))):
        by = draw(st.sampled_from([b"p", b"q", b"r", b"x%y"]))
        at = next.get(by, draw(st.sampled_from([0, 7, 2**63 - 3])))
        if draw(st.integers(0, 9)) == 0:
            at = draw(st.integers(0, 9))
        next[by] = at + 1
        pairs = [(b"by", by), (b"at", b"%d" % at), (b"m", draw(hostile))]
        if draw(st.integers(0, 5)) == 0:
            pairs.reverse()
        line = encodeAdd(pairs)
        if draw(st.integers(0, 6)) == 0:
            line = draw(damagedLines())
        lines.append(line)
    data = b"".join(lines)
    if data and draw(st.integers(0, 4)) == 0:
        data = data[: draw(st.integers(0, len(data) - 1))]
    return data


class SpeedupsTests(TestCase):
    """
    Each C function against its Python definition in L{format.PYTHON}.
    """

    def setUp(self):
        if _speedups is None:
            if os.environ.get("GOSSIP_REQUIRE_SPEEDUPS"):
                self.fail(f"GOSSIP_REQUIRE_SPEEDUPS is set, but {_why}")
            raise SkipTest(_why)
        _speedups.configure(CorruptLine, sha256)

    def assertSameOutcome(self, python, c, *args):
        """
        C{python(*args)} and C{c(*args)} return equal values, or both raise
        L{CorruptLine}.
        """
        try:
            expected = python(*args)
        except CorruptLine:
            self.assertRaises(CorruptLine, c, *args)
        else:
            self.assertEqual(c(*args), expected)

    def test_inUse(self):
        """
        Unless turned off, L{gossip.store.format} uses the C functions.
        """
        if os.environ.get("GOSSIP_NO_SPEEDUPS"):
            self.assertIs(format.speedups, None)
            self.assertIs(format.decodeBody, PYTHON["decodeBody"])
        else:
            self.assertIs(format.speedups, _speedups)
            self.assertIs(format.decodeBody, _speedups.decodeBody)
            self.assertIs(format.checkRecords, _speedups.checkRecords)
            self.assertIs(intervals.spans, _speedups.spans)

    @_many
    @given(st.lists(damagedLines(), max_size=8))
    def test_checkRecords(self, lines):
        """
        checkRecords finds the same bodies, and the same damaged records.
        """
        records = [line[:-1] for line in lines] + [b"", b"x" * 11 + b" 0<>0"]
        self.assertEqual(_speedups.checkRecords(records), PYTHON["checkRecords"](records))

    @_many
    @given(st.lists(damagedLines(keyedPairs()), max_size=8))
    def test_checkKeyed(self, lines):
        """
        checkKeyedLines finds the same adds and keys, and rejects as many;
        checkKeyedRecords likewise, on the same lines as records (without
        their LF).
        """
        records = [line[:-1] for line in lines]
        lines = lines + [b"", b"\n", lines[0][:-1] if lines else b"x"]
        self.assertEqual(
            _speedups.checkKeyed(lines, True, format.checkKeyedLine),
            PYTHON["checkKeyedLines"](lines),
        )
        self.assertEqual(
            _speedups.checkKeyed(records, False, format._checkKeyedRecord),
            PYTHON["checkKeyedRecords"](records),
        )

    @_many
    @given(hostile)
    def test_decodeBodyHostile(self, body):
        """
        decodeBody decodes any bytes as the Python does, or rejects them.
        """
        self.assertSameOutcome(PYTHON["decodeBody"], _speedups.decodeBody, body)

    @_many
    @given(pairLists)
    def test_decodeBodyRoundTrip(self, pairs):
        """
        decodeBody gives back the pairs that were encoded.
        """
        self.assertEqual(_speedups.decodeBody(format.encodeBody(pairs)), pairs)

    def test_long(self):
        """
        A line far longer than the Python's regular-expression limit is read
        alike, intact and damaged.
        """
        value = (b"abc=&%+<>\n\x00" * 100_000)[:1_000_003]
        line = encodeAdd([(b"by", b"n"), (b"at", b"1"), (b"v", value)])
        damaged = line[:500_000] + b">" + line[500_001:]
        records = [line[:-1], damaged[:-1]]
        self.assertEqual(_speedups.checkRecords(records), PYTHON["checkRecords"](records))
        lines = [line, damaged]
        self.assertEqual(
            _speedups.checkKeyed(lines, True, format.checkKeyedLine),
            PYTHON["checkKeyedLines"](lines),
        )
        body = records[0][records[0].index(b"<") + 1 : records[0].rindex(b">")]
        self.assertEqual(_speedups.decodeBody(body)[-1], (b"v", value))

    def test_hashEveryLength(self):
        """
        A body of any length, across every boundary of SHA-256's 64-byte
        blocks and its padding, is hashed as hashlib hashes it: its line is
        intact, and with one character of its hash changed, damaged.  So
        with the CPU's SHA instructions (where it has them) and without.
        """
        sizes = list(range(300)) + [1000, 4096, 65535, 65536, 1_000_003]
        for hardware in (True, False):
            _speedups.configure(CorruptLine, sha256, hardware)
            for size in sizes:
                body = (b"n=" + b"abcdefghijklmnopqrstuvwxyz 0123456789" * (size // 37 + 1))[:size]
                record = b"%s %d<%s>%d" % (lineHash(body), len(body), body, len(body))
                damaged = record[:10] + (b"B" if record[10:11] == b"A" else b"A") + record[11:]
                expected = [None if size == 1 else body, None]
                self.assertEqual(PYTHON["checkRecords"]([record, damaged]), expected)
                self.assertEqual(
                    _speedups.checkRecords([record, damaged]),
                    expected,
                    f"{size} bytes, hardware {hardware}",
                )

    def test_hardwareOff(self):
        """
        configure() says whether the CPU hashes, which it does not once told
        not to.
        """
        self.assertIs(_speedups.configure(CorruptLine, sha256, False), False)
        self.assertIn(_speedups.configure(CorruptLine, sha256), (True, False))

    def test_serials(self):
        """
        A serial number, up to 2**63 - 1, is read as its value; anything
        else in C{at} makes the line damaged, as read and as received.
        """
        for at in SERIALS:
            line = encodeAdd([(b"by", b"n"), (b"at", at)])
            [(_, _, key)], rejected = _speedups.checkKeyed([line], True, format.checkKeyedLine)
            self.assertEqual(key, (b"n", int(at)))
            self.assertNotEqual(_speedups.checkRecords([line[:-1]]), [None])
        for at in NOT_SERIALS:
            for body in [b"by=n&at=" + at, b"at=" + at + b"&by=n", b"%61t=" + at + b"&by=n"]:
                line = b"%s %d<%s>%d\n" % (lineHash(body), len(body), body, len(body))
                self.assertEqual(_speedups.checkKeyed([line], True, format.checkKeyedLine), ([], 1))
                self.assertEqual(_speedups.checkRecords([line[:-1]]), [None])
                self.assertEqual(PYTHON["checkRecords"]([line[:-1]]), [None])

    @_many
    @given(st.lists(atBodies(), max_size=6))
    def test_atAnywhere(self, bodies):
        """
        Lines whose C{at} is anywhere, spelled any way, are judged alike:
        read from a log and received from a peer.
        """
        lines = [b"%s %d<%s>%d\n" % (lineHash(body), len(body), body, len(body)) for body in bodies]
        records = [line[:-1] for line in lines]
        self.assertEqual(_speedups.checkRecords(records), PYTHON["checkRecords"](records))
        self.assertEqual(
            _speedups.checkKeyed(lines, True, format.checkKeyedLine),
            PYTHON["checkKeyedLines"](lines),
        )
        self.assertEqual(
            _speedups.checkKeyed(records, False, format._checkKeyedRecord),
            PYTHON["checkKeyedRecords"](records),
        )

    def test_escapes(self):
        """
        Either case of hex digit, "+" for a space, and a "%" that starts no
        escape kept as it is.
        """
        self.assertEqual(
            _speedups.decodeBody(b"a%3d%3D=%2b+%4%zz%&b="),
            [(b"a==", b"+ %4%zz%"), (b"b", b"")],
        )
        self.assertRaises(CorruptLine, _speedups.decodeBody, b"a=1&b")

    @_many
    @given(
        st.lists(
            st.tuples(
                st.sampled_from([b"x", b"y", b"z"]),
                st.one_of(st.integers(-2, 6), st.integers(2**63 - 2, 2**63 + 1)),
            ),
            max_size=12,
        )
    )
    def test_spans(self, keys):
        """
        L{intervals.spans} in C gives what the Python gives, big serials
        included.
        """
        self.assertEqual(_speedups.spans(keys), intervals.pythonSpans(keys))

    def test_spansConsecutive(self):
        """
        Long runs, interleaved, have spans (which random keys rarely do).
        """
        keys = [(by, at) for at in range(2**64 - 3, 2**64 + 3) for by in (b"x", b"y")]
        self.assertEqual(_speedups.spans(keys), {b"x": [2**64 - 3, 2**64 + 3], b"y": [2**64 - 3, 2**64 + 3]})
        self.assertEqual(_speedups.spans(keys), intervals.pythonSpans(keys))
        self.assertIsNone(_speedups.spans(keys + [(b"x", 0)]))

    @_many
    @given(keyedRuns())
    def test_keyedSpans(self, data):
        """
        L{logfile.keyedSpans} in C finds the same adds, spans and lines not
        taken as the Python, in runs of serials or not, with damaged lines,
        adds in an unusual shape and a last line cut short among them; and
        so when it calls hashlib.
        """
        expected = logfile.pythonKeyedSpans(data)
        self.assertEqual(_speedups.keyedSpans(data, format.checkKeyedLine), expected)
        _speedups.configure(CorruptLine, sha256, False)
        self.assertEqual(_speedups.keyedSpans(data, format.checkKeyedLine), expected)

    @_many
    @given(keyedRuns(), st.integers(0, 2**40))
    def test_keyedPlaces(self, data, start):
        """
        L{logfile.keyedPlaces} in C finds the same adds, at the same places,
        as the Python; and so when it calls hashlib.
        """
        expected = logfile.pythonKeyedPlaces(data, start)
        self.assertEqual(_speedups.keyedPlaces(data, start, format.checkKeyedLine), expected)
        _speedups.configure(CorruptLine, sha256, False)
        self.assertEqual(_speedups.keyedPlaces(data, start, format.checkKeyedLine), expected)

    def test_keyedSpansTaken(self):
        """
        A batch as a peer sends it, whole: its adds counted, their spans,
        the longest, and no line left out.
        """
        lines = [encodeAdd([(b"by", by), (b"at", b"%d" % at), (b"m", b"x" * at)]) for at in range(50) for by in (b"p", b"q")]
        data = b"".join(lines)
        self.assertEqual(
            _speedups.keyedSpans(data, format.checkKeyedLine),
            (100, {b"p": [0, 50], b"q": [0, 50]}, len(lines[-1]) - 1, []),
        )
        self.assertEqual(logfile.keyedSpans(data), logfile.pythonKeyedSpans(data))

    def test_keyedSpansOrigins(self):
        """
        Past the origins it follows at once the C says so, and
        L{logfile.keyedSpans} asks the Python.
        """
        data = b"".join(encodeAdd([(b"by", b"%d" % n), (b"at", b"0")]) for n in range(40))
        self.assertIs(_speedups.keyedSpans(data, format.checkKeyedLine), NotImplemented)
        self.assertEqual(logfile.keyedSpans(data), logfile.pythonKeyedSpans(data))
        self.assertEqual(len(logfile.keyedSpans(data)[1]), 40)

    def test_wrongTypes(self):
        """
        Anything but bytes is a TypeError, not a crash.
        """
        self.assertRaises(TypeError, _speedups.decodeBody, "a=b")
        self.assertRaises(TypeError, _speedups.checkRecords, [b"x", "y"])
        self.assertRaises(TypeError, _speedups.checkRecords, 5)
        self.assertRaises(TypeError, _speedups.checkKeyed, [None], True, format.checkKeyedLine)
        self.assertRaises(TypeError, _speedups.configure, 1, 2)
        self.assertRaises(TypeError, _speedups.spans, [(b"x", "1")])
        self.assertRaises(TypeError, _speedups.spans, [(b"x",)])
        self.assertRaises(TypeError, _speedups.spans, [([], 1)])
        self.assertRaises(TypeError, _speedups.spans, 5)
        self.assertRaises(TypeError, _speedups.keyedSpans, "x\n", format.checkKeyedLine)
        line = encodeAdd([(b"at", b"1"), (b"by", b"x")])
        self.assertRaises(TypeError, _speedups.keyedSpans, line, lambda line: (b"", (1, 2)))
        self.assertRaises(TypeError, _speedups.keyedSpans, line, lambda line: None)
        self.assertRaises(TypeError, _speedups.keyedPlaces, "x\n", 0, format.checkKeyedLine)
        self.assertRaises(TypeError, _speedups.keyedPlaces, line, 0, lambda line: (b"", (1, 2)))

    def test_checkErrors(self):
        """
        An exception from the fallback check other than L{CorruptLine}
        propagates; L{CorruptLine} counts the line as rejected.
        """

        def broken(line):
            raise ZeroDivisionError()

        def corrupt(line):
            raise CorruptLine()

        self.assertRaises(ZeroDivisionError, _speedups.checkKeyed, [b"x\n"], True, broken)
        self.assertEqual(_speedups.checkKeyed([b"x\n"], True, corrupt), ([], 1))
        self.assertRaises(ZeroDivisionError, _speedups.keyedSpans, b"x\n", broken)
        self.assertEqual(_speedups.keyedSpans(b"x\n", corrupt), (0, {}, 0, [(0, 2)]))
