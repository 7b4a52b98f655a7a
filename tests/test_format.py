"""
Tests for L{gossip.store.format}: the log line format, against the test vectors,
the spec's examples and the original gossip.py's algorithms.
"""

import base64
import hashlib
import json
import os

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import TestCase

from gossip.store.format import (
    CorruptLine,
    checkKeyedLine,
    checkKeyedLines,
    checkKeyedRecords,
    checkLine,
    checkRecord,
    checkRecords,
    decodeBody,
    decodeLine,
    encodeAdd,
    encodeBody,
    identify,
    isSerial,
    lineHash,
)
from gossip.store.logfile import entries
from tests import original

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")

# Bytes that the format must escape, or that mean something in a line.
SPECIAL = b"\x00\n\xff=&%+<> #;\x7f\x80\r"

_quick = settings(max_examples=150, deadline=None)

# Byte strings that hit the special bytes often, not just by chance.
byteStrings = st.one_of(
    st.binary(max_size=30),
    # Drawn as text, one choice a string rather than one a byte: the same
    # strings, generated several times faster.
    st.text((SPECIAL + b"aZ0").decode("latin-1"), max_size=20).map(
        lambda text: text.encode("latin-1")
    ),
)
names = byteStrings.filter(bool)


def _firstAtIsSerial(pairs):
    """
    Whether C{pairs} have no C{at}, or a serial number as their first: an
    add, where any other C{at} would make a damaged line.
    """
    at = dict(reversed(pairs)).get(b"at")
    return at is None or isSerial(at)


pairLists = st.lists(st.tuples(names, byteStrings), max_size=6).filter(_firstAtIsSerial)


def rawLine(body, header=None, trailer=None, hash=None):
    """
    A line with the given body and, unless overridden, the lengths and hash
    that make it intact.
    """
    length = b"%d" % (len(body),)
    return b"%s %s<%s>%s\n" % (
        lineHash(body) if hash is None else hash,
        length if header is None else header,
        body,
        length if trailer is None else trailer,
    )


def readVector(name):
    """
    Read a vector with L{entries} and L{decodeBody}.

    @return: the adds as lists of C{[name_hex, value_hex]} and how many
        complete lines were not adds, as the vector's expected.json has them.
    """
    adds = []
    corrupt = 0
    with open(os.path.join(DATA, name + ".log"), "rb") as f:
        for offset, record, body in entries(f):
            if body is None:
                corrupt += 1
            else:
                adds.append([[n.hex(), v.hex()] for n, v in decodeBody(body)])
    return adds, corrupt


def expectedVector(name):
    with open(os.path.join(DATA, name + ".expected.json")) as f:
        expected = json.load(f)
    return expected["adds"], expected["corrupt_lines"]


def originalView(path):
    """
    What the original's reader makes of each complete line of a file: its
    pairs, or L{None} where it reports corruption.
    """
    with open(path, "rb") as f:
        lines = f.read().split(b"\n")[:-1]
    result = []
    for line in lines:
        try:
            result.append(original.decodeAdd(line + b"\n"))
        except original.Corrupt:
            result.append(None)
    return result


class VectorTests(TestCase):
    """
    Every vector reads back exactly as its expected.json says.
    """

    def assertVector(self, name):
        self.assertEqual(readVector(name), expectedVector(name))

    def test_originalBasic(self):
        self.assertVector("original-basic")

    def test_lowercaseEscapes(self):
        self.assertVector("lowercase-escapes")
        # The vector is only worth having if it does hold lowercase escapes.
        with open(os.path.join(DATA, "lowercase-escapes.log"), "rb") as f:
            self.assertRegex(f.read(), rb"%[0-9a-f]*[a-f][0-9a-f]*")

    def test_corrupted(self):
        adds, corrupt = readVector("corrupted")
        self.assertEqual((adds, corrupt), expectedVector("corrupted"))
        self.assertGreater(corrupt, 0)

    def test_tornTail(self):
        """
        The unterminated last line is neither an add nor a corrupt line.
        """
        self.assertVector("torn-tail")
        with open(os.path.join(DATA, "torn-tail.log"), "rb") as f:
            self.assertNotEqual(f.read()[-1:], b"\n")

    def test_agreesWithOriginal(self):
        """
        gossip and the original's reader accept the same lines of every
        vector and decode them to the same pairs.
        """
        for name in ("original-basic", "lowercase-escapes", "corrupted", "torn-tail"):
            path = os.path.join(DATA, name + ".log")
            with open(path, "rb") as f:
                ours = [
                    None if body is None else decodeBody(body) for _, _, body in entries(f)
                ]
            self.assertEqual(ours, originalView(path), name)


class EncodeTests(TestCase):
    """
    Encoding adds, byte for byte as the spec and the original do.
    """

    def test_specExamples(self):
        self.assertEqual(
            encodeAdd([(b"I", b"3nVfFxVbq6_v")]), b"3QDq4rLL7X8 14<I=3nVfFxVbq6_v>14\n"
        )
        pairs = [(b"by", b"abcd"), (b"at", b"0"), (b"m", b"hello world <&>+%\n\x00\xff")]
        line = b"cKCFPgP/Lfi 51<by=abcd&at=0&m=hello world %3C%26%3E%2B%25%0A%00%FF>51\n"
        self.assertEqual(encodeAdd(pairs), line)
        self.assertEqual(decodeLine(line), pairs)

    def test_lineHash(self):
        """
        The hash is the first 11 characters of standard base64 of SHA-256.
        """
        for body in (b"", b"a=b", b"x" * 1000):
            digest = hashlib.sha256(body).digest()
            self.assertEqual(lineHash(body), base64.b64encode(digest)[:11])

    def test_escaping(self):
        # Space is written as itself; "+" is escaped so it cannot read as one.
        self.assertEqual(encodeBody([(b"a b", b"c d+")]), b"a b=c d%2B")
        # "=" is escaped in a name, where it would end the name, not in a value.
        self.assertEqual(encodeBody([(b"a=b", b"=x=")]), b"a%3Db==x=")
        self.assertEqual(encodeBody([(b"n", b"/?#@,[]()!:;'_.-~")]), b"n=/?#@,[]()!:;'_.-~")
        self.assertEqual(encodeBody([]), b"")
        self.assertEqual(encodeBody([(b"n", b"")]), b"n=")

    def test_longBinary(self):
        """
        A long value of mostly unsafe bytes (escaped a piece at a time) and
        one of mostly safe bytes are written as the original writes them.
        """
        binary = bytes(range(256)) * 1000 + b"tail"
        text = b"plain text & more %s\n" * 20000
        for value in (binary, text):
            pairs = [(b"by", b"x"), (b"at", b"1"), (b"v", value)]
            self.assertEqual(encodeAdd(pairs), original.encodeAdd(pairs))
            self.assertEqual(decodeLine(encodeAdd(pairs)), pairs)

    @_quick
    @given(
        st.lists(
            st.one_of(st.just(b"some plain words "), st.sampled_from([bytes([b]) for b in SPECIAL])),
            max_size=40,
        ).map(b"".join)
    )
    def test_mostlyText(self, value):
        """
        A value of mostly safe bytes (whose few unsafe kinds of byte are
        replaced one kind at a time) is written as the original writes it.
        """
        pairs = [(b"by", b"x"), (b"at", b"1"), (b"v" + value[:3], value)]
        self.assertEqual(encodeAdd(pairs), original.encodeAdd(pairs))

    @_quick
    @given(pairLists)
    def test_roundTrip(self, pairs):
        line = encodeAdd(pairs)
        self.assertEqual(decodeLine(line), pairs)
        self.assertEqual(checkLine(line), encodeBody(pairs))
        self.assertEqual(checkRecord(line[:-1]), encodeBody(pairs))
        self.assertEqual(decodeBody(encodeBody(pairs)), pairs)

    @_quick
    @given(pairLists)
    def test_bodyAlphabet(self, pairs):
        """
        A body is printable ASCII without C{<}, C{>}, LF or a bare C{+}, and
        its only C{&}s separate pairs.
        """
        body = encodeBody(pairs)
        self.assertTrue(all(0x20 <= byte < 0x7F for byte in body), body)
        for byte in b"<>\n+":
            self.assertNotIn(byte, body)
        self.assertEqual(body.count(b"&"), max(0, len(pairs) - 1))

    @_quick
    @given(pairLists)
    def test_originalReadsOurs(self, pairs):
        """
        What gossip writes is what the original writes, and the original
        decodes it to the same pairs.
        """
        line = encodeAdd(pairs)
        self.assertEqual(line, original.encodeAdd(pairs))
        self.assertEqual(original.decodeAdd(line), pairs)

    @_quick
    @given(pairLists)
    def test_weReadOriginals(self, pairs):
        self.assertEqual(decodeLine(original.encodeAdd(pairs)), pairs)


class DecodeTests(TestCase):
    """
    Decoding bodies: both cases of hex, form-encoding's C{+}, empty pairs.
    """

    def test_hexCase(self):
        expected = [(b"<a", b"<<\xff\xff\n")]
        for body in (b"%3Ca=%3c%3C%ff%FF%0a", b"%3ca=%3C%3c%fF%Ff%0A"):
            self.assertEqual(decodeBody(body), expected)

    @_quick
    @given(st.binary(min_size=1, max_size=40), st.data())
    def test_anyHexCase(self, data, draw):
        """
        Every byte escaped, each with its own choice of case, decodes.
        """
        escaped = b"".join(
            (b"%%%02x" if draw.draw(st.booleans()) else b"%%%02X") % (byte,) for byte in data
        )
        self.assertEqual(decodeBody(escaped + b"=" + escaped), [(data, data)])

    def test_plusIsSpace(self):
        self.assertEqual(decodeBody(b"a+b=c+d+"), [(b"a b", b"c d ")])
        self.assertEqual(decodeBody(b"a=%2B%2b"), [(b"a", b"++")])

    def test_emptyPairsSkipped(self):
        self.assertEqual(decodeBody(b"&a=1&&b=2&"), [(b"a", b"1"), (b"b", b"2")])
        self.assertEqual(decodeBody(b""), [])
        self.assertEqual(decodeBody(b"&&&"), [])
        line = rawLine(b"&a=1&&b=2&")
        self.assertEqual(decodeLine(line), [(b"a", b"1"), (b"b", b"2")])
        self.assertEqual(decodeLine(line), original.decodeAdd(line))

    def test_emptyNameAndValue(self):
        self.assertEqual(decodeBody(b"=&a="), [(b"", b""), (b"a", b"")])

    def test_valueHoldsEquals(self):
        """
        A pair splits at its first C{=}.
        """
        self.assertEqual(decodeBody(b"a==b=&c=%3D"), [(b"a", b"=b="), (b"c", b"=")])

    def test_repeatedNames(self):
        self.assertEqual(
            decodeBody(b"tag=a&tag=b&m=x"), [(b"tag", b"a"), (b"tag", b"b"), (b"m", b"x")]
        )

    def test_pairWithoutEquals(self):
        for body in (b"a=1&b", b"b&a=1", b"a=1&b&c=2", b"a", b"%3D"):
            self.assertRaises(CorruptLine, decodeBody, body)

    def test_strayPercentKept(self):
        """
        A C{%} without two hex digits after it, which no writer emits, is
        kept rather than dropped.
        """
        self.assertEqual(decodeBody(b"a=%zz%4&b%=%"), [(b"a", b"%zz%4"), (b"b%", b"%")])


def _plainDecode(body):
    """
    The spec's decoding, written plainly: split at C{&}, skip empty items,
    split each at its first C{=}, then turn C{+} into a space and each
    C{%XY} (either case) into its byte, keeping any other C{%}.
    """
    def unescape(data):
        data = data.replace(b"+", b" ")
        out = bytearray()
        i = 0
        while i < len(data):
            piece = data[i + 1 : i + 3]
            if data[i : i + 1] == b"%" and len(piece) == 2 and all(
                c in b"0123456789abcdefABCDEF" for c in piece
            ):
                out.append(int(piece, 16))
                i += 3
            else:
                out.append(data[i])
                i += 1
        return bytes(out)

    pairs = []
    for item in body.split(b"&"):
        if not item:
            continue
        if b"=" not in item:
            raise CorruptLine("pair without '='")
        name, value = item.split(b"=", 1)
        pairs.append((unescape(name), unescape(value)))
    return pairs


class PlainDecodeTests(TestCase):
    """
    L{decodeBody} takes shortcuts (a whole body unescaped in C before it is
    split, where that is safe); whatever the body, it decodes as the plain
    reading of the spec does.
    """

    @given(
        st.lists(
            st.sampled_from(
                [b"a", b"=", b"&", b"+", b"%", b"%26", b"%3D", b"%3d", b"%4", b"%41",
                 b"%e9", b"%0A", b"%5C", b"\\", b"\\x41", b"%zz", b"x"]
            ),
            max_size=30,
        ).map(b"".join)
    )
    def test_sameAsPlain(self, body):
        try:
            expected = _plainDecode(body)
        except CorruptLine:
            self.assertRaises(CorruptLine, decodeBody, body)
        else:
            self.assertEqual(decodeBody(body), expected)

    def test_escapedSeparators(self):
        """
        Escaped C{&} and C{=} are data, not separators, wherever they are.
        """
        self.assertEqual(
            decodeBody(b"a%3Db=c%26d=e&f=%3d%26"), [(b"a=b", b"c&d=e"), (b"f", b"=&")]
        )

    def test_backslash(self):
        """
        A backslash, which no writer leaves unescaped, is a byte like any
        other to a reader.
        """
        self.assertEqual(decodeBody(b"a=\\x41%41"), [(b"a", b"\\x41A")])


class CheckLineTests(TestCase):
    """
    A line is an add only when it is exactly one intact add.
    """

    body = b"by=abcd&at=0&m=hello"

    def assertCorrupt(self, line):
        self.assertRaises(CorruptLine, checkLine, line)
        self.assertRaises(CorruptLine, checkKeyedLine, line)
        self.assertRaises(CorruptLine, decodeLine, line)
        if line.endswith(b"\n"):
            self.assertRaises(CorruptLine, checkRecord, line[:-1])
            # The original's reader rejects it too.
            self.assertRaises(original.Corrupt, original.decodeAdd, line)

    def test_intact(self):
        line = rawLine(self.body)
        self.assertEqual(checkLine(line), self.body)
        self.assertEqual(checkRecord(line[:-1]), self.body)

    def test_emptyBody(self):
        """
        An add with no pairs is an add, as the original has it.
        """
        self.assertEqual(decodeLine(rawLine(b"")), [])
        self.assertEqual(original.decodeAdd(rawLine(b"")), [])

    def test_noFinalLF(self):
        self.assertRaises(CorruptLine, checkLine, rawLine(self.body)[:-1])

    def test_wrongLengths(self):
        for wrong in (len(self.body) - 1, len(self.body) + 1, 0):
            length = b"%d" % (wrong,)
            self.assertCorrupt(rawLine(self.body, header=length, trailer=length))

    def test_mismatchedLengths(self):
        length = b"%d" % (len(self.body),)
        self.assertCorrupt(rawLine(self.body, trailer=length + b"0"))
        self.assertCorrupt(rawLine(self.body, header=b"0" + length))
        self.assertCorrupt(rawLine(self.body, trailer=b""))
        self.assertCorrupt(rawLine(self.body, header=b""))
        self.assertCorrupt(rawLine(self.body, header=b"+20", trailer=b"+20"))

    def test_wrongHash(self):
        self.assertCorrupt(rawLine(self.body, hash=lineHash(self.body + b"x")))
        self.assertCorrupt(rawLine(self.body, hash=lineHash(self.body)[:10]))
        self.assertCorrupt(rawLine(self.body, hash=lineHash(self.body) + b"A"))

    def test_greaterThanInBody(self):
        """
        C{>} never occurs in a body, even with lengths and hash that agree.
        """
        self.assertCorrupt(rawLine(b"a=>b"))
        self.assertCorrupt(rawLine(b"a=b>"))

    def test_lessThanInBody(self):
        """
        A C{<} in the body, which no writer emits, is read as the original
        read it: as part of the value.
        """
        line = rawLine(b"a=<b")
        self.assertEqual(decodeLine(line), [(b"a", b"<b")])
        self.assertEqual(original.decodeAdd(line), [(b"a", b"<b")])

    def test_lineFeedInRecord(self):
        body = b"a=b\nc"
        self.assertRaises(CorruptLine, checkRecord, rawLine(body)[:-1])

    def test_pairWithoutEquals(self):
        """
        A line whose hash and lengths agree but which has a pair without
        C{=} is corrupt, as in the original: no intact line fails to decode.
        """
        for body in (b"by=x&at=0&junk", b"junk&by=x&at=0", b"by=x&junk&at=0", b"junk"):
            self.assertCorrupt(rawLine(body))
        # Long bodies are checked another way; check that one too.
        value = b"%00" * 2000
        for body in (
            b"by=x&at=0&m=" + value + b"&junk",
            b"junk&by=x&m=" + value,
            b"m=" + value + b"&junk&n=" + value,
            b"m" + value,
        ):
            self.assertCorrupt(rawLine(body))
        body = b"&m=" + value + b"&&n=&"
        self.assertEqual(checkLine(rawLine(body)), body)

    def test_leadingZeros(self):
        """
        Lengths with leading zeros are read as the original read them.
        """
        length = b"%03d" % (len(self.body),)
        line = rawLine(self.body, header=length, trailer=length)
        self.assertEqual(checkLine(line), self.body)
        self.assertEqual(original.decodeAdd(line), decodeBody(self.body))

    def test_shape(self):
        line = rawLine(self.body)
        self.assertCorrupt(line.replace(b" ", b"", 1))
        self.assertCorrupt(line.replace(b" ", b"  ", 1))
        self.assertCorrupt(line.replace(b"<", b"", 1))
        self.assertCorrupt(line.replace(b">", b"", 1))
        self.assertCorrupt(b"\n")
        self.assertCorrupt(b"garbage\n")
        self.assertCorrupt(b" " + line)
        self.assertCorrupt(line[:-1] + b" \n")

    @_quick
    @given(
        st.lists(
            st.tuples(pairLists, st.integers(min_value=0), st.integers(min_value=0, max_value=255)),
            max_size=8,
        )
    )
    def test_manyRecords(self, specs):
        """
        L{checkRecords} gives what L{checkRecord} gives each record, or
        L{None} where it raises.
        """
        records = []
        for pairs, where, byte in specs:
            record = bytearray(encodeAdd(pairs)[:-1])
            if byte % 3 == 0 and record:
                record[where % len(record)] ^= byte | 1
            records.append(bytes(record))
        expected = []
        for record in records:
            try:
                expected.append(checkRecord(record))
            except CorruptLine:
                expected.append(None)
        self.assertEqual(checkRecords(records), expected)

    @_quick
    @given(pairLists, st.integers(min_value=0), st.integers(min_value=1, max_value=255))
    def test_keyedDamage(self, pairs, where, mask):
        """
        Damage anywhere in a line in the original's layout, C{by} and C{at}
        first, is found by the one-step check too.
        """
        line = bytearray(encodeAdd([(b"by", b"node"), (b"at", b"42")] + pairs))
        where %= len(line)
        line[where] ^= mask
        self.assertCorrupt(bytes(line))

    @_quick
    @given(pairLists, st.integers(min_value=0), st.integers(min_value=0, max_value=255))
    def test_extraByte(self, pairs, where, byte):
        line = encodeAdd(pairs)
        # Before the final LF: after it, the damage would be another line.
        where %= len(line)
        self.assertCorrupt(line[:where] + bytes([byte]) + line[where:])

    @_quick
    @given(pairLists, st.integers(min_value=0))
    def test_missingByte(self, pairs, where):
        line = encodeAdd(pairs)
        where %= len(line)
        self.assertCorrupt(line[:where] + line[where + 1 :])

    @_quick
    @given(pairLists, st.integers(min_value=0), st.integers(min_value=1, max_value=255))
    def test_flippedByte(self, pairs, where, mask):
        line = bytearray(encodeAdd(pairs))
        where %= len(line)
        line[where] ^= mask
        self.assertCorrupt(bytes(line))


def expectedIdentity(pairs):
    """
    An add's C{(by, at)} as the spec defines it: its first C{by} and first
    C{at}, if both are there.

    @raise CorruptLine: if its first C{at} is not a serial number: ASCII
        digits without a leading zero, less than 2**63.
    """
    values = {}
    for name, value in pairs:
        values.setdefault(name, value)
    by, at = values.get(b"by"), values.get(b"at")
    if at is not None and not (
        at
        and all(48 <= byte <= 57 for byte in at)
        and (at == b"0" or at[:1] != b"0")
        and int(at) < 2**63
    ):
        raise CorruptLine("not a serial number")
    if by is None or at is None:
        return None
    return by, int(at)


# Serial numbers, and what is near them but is not one.
NOT_SERIALS = [
    b"",
    b"007",
    b"00",
    b"-1",
    b"+1",
    b" 1",
    b"1 ",
    b"1x",
    b"1_000",
    b"%d" % (2**63,),
    b"%d" % (2**64,),
    b"9" * 4300,
    "\u0661\u0662".encode("utf-8"),
    "\uff11".encode("utf-8"),
]
ats = st.one_of(
    st.integers(0, 10**20).map(lambda n: b"%d" % (n,)),
    st.sampled_from(NOT_SERIALS + [b"%d" % (2**63 - 1,), b"0"]),
    byteStrings,
)


class IdentifyTests(TestCase):
    """
    Finding an add's C{(by, at)}.
    """

    def test_originalOrder(self):
        self.assertEqual(identify(b"by=abc&at=12&m=x"), (b"abc", 12))
        self.assertEqual(identify(b"by=abc&at=12"), (b"abc", 12))
        self.assertEqual(identify(b"by=abc&at=0"), (b"abc", 0))
        self.assertEqual(identify(b"by=abc&at=9223372036854775807"), (b"abc", 2**63 - 1))

    def test_anywhere(self):
        self.assertEqual(identify(b"m=x&at=3&by=abc"), (b"abc", 3))
        self.assertEqual(identify(b"at=3&m=x&by=abc&by=no&at=4"), (b"abc", 3))

    def test_escapedBy(self):
        self.assertEqual(identify(b"by=a%2Bb+c&at=3"), (b"a+b c", 3))
        self.assertEqual(identify(b"by=a=b&at=3"), (b"a=b", 3))

    def test_none(self):
        for body in (b"I=abc", b"by=abc", b"at=1", b"m=x&%62y=abc", b"by=abc&m=at&tat=1", b""):
            self.assertIsNone(identify(body), body)

    def test_notSerial(self):
        """
        An add whose first C{at} is not a serial number in its one spelling
        (ASCII digits, no sign, no leading zero, below 2**63) is damaged,
        wherever the C{at} is and however its name is escaped: two
        spellings would be one add written twice, and Python's int() would
        read some (Arabic-Indic digits, underscores) or refuse to read them
        (over 4,300 digits).
        """
        for at in NOT_SERIALS + [b"%31", b"1%30"]:
            for body in (
                b"by=abc&at=" + at,
                b"by=abc&at=" + at + b"&m=x",
                b"m=x&at=" + at + b"&by=abc",
                b"%61t=" + at + b"&by=abc",
                b"a%74=" + at + b"&by=abc&at=1",
                b"at=" + at,
            ):
                self.assertRaises(CorruptLine, identify, body)
                self.assertCorrupt(rawLine(body))
        # Only the first at counts.
        self.assertEqual(identify(b"by=abc&at=1&at=007"), (b"abc", 1))

    def assertCorrupt(self, line):
        """
        C{line} is refused by each check, as it is read and as it is
        received.
        """
        self.assertRaises(CorruptLine, checkLine, line)
        self.assertRaises(CorruptLine, checkKeyedLine, line)
        self.assertEqual(checkRecords([line[:-1]]), [None])
        self.assertEqual(checkKeyedLines([line]), ([], 1))
        self.assertEqual(checkKeyedRecords([line[:-1]]), ([], 1))

    def test_corrupt(self):
        self.assertRaises(CorruptLine, identify, b"m=x&junk&by=a&at=1")

    @_quick
    @given(
        pairLists,
        st.lists(
            st.tuples(st.sampled_from([b"by", b"at"]), ats, st.integers(0, 8)),
            max_size=4,
        ),
    )
    def test_matchesDecoding(self, pairs, extra):
        for name, value, where in extra:
            pairs.insert(where % (len(pairs) + 1), (name, value))
        try:
            expected = expectedIdentity(pairs)
        except CorruptLine:
            self.assertRaises(CorruptLine, identify, encodeBody(pairs))
            self.assertRaises(CorruptLine, checkKeyedLine, encodeAdd(pairs))
            return
        self.assertEqual(identify(encodeBody(pairs)), expected)
        line = encodeAdd(pairs)
        self.assertEqual(checkKeyedLine(line), (checkLine(line), expected))

    @_quick
    @given(
        st.lists(
            st.tuples(
                pairLists,
                st.booleans(),
                st.integers(min_value=0),
                st.integers(min_value=0, max_value=255),
            ),
            max_size=8,
        )
    )
    def test_manyLines(self, specs):
        """
        L{checkKeyedLines} keeps what L{checkKeyedLine} finds intact and
        keyed, in order, and counts the rest.
        """
        lines = []
        for pairs, keyed, where, byte in specs:
            if keyed:
                pairs = [(b"by", b"n"), (b"at", b"%d" % where)] + pairs
            line = bytearray(encodeAdd(pairs))
            if byte % 3 == 0:
                line[where % len(line)] ^= byte | 1
            lines.append(bytes(line))
        expected = []
        for line in lines:
            try:
                body, key = checkKeyedLine(line)
            except CorruptLine:
                continue
            if key is not None:
                expected.append((line, body, key))
        self.assertEqual(checkKeyedLines(lines), (expected, len(lines) - len(expected)))
        # The same lines read from a log, without their LF.
        records = [line[:-1] if line.endswith(b"\n") else line for line in lines]
        expected = [(line[:-1], body, key) for line, body, key in expected]
        self.assertEqual(checkKeyedRecords(records), (expected, len(records) - len(expected)))

    @_quick
    @given(byteStrings, st.integers(0, 2**63 - 1), pairLists)
    def test_originalLayout(self, by, at, pairs):
        pairs = [(b"by", by), (b"at", b"%d" % (at,))] + pairs
        self.assertEqual(identify(encodeBody(pairs)), (by, at))
        line = encodeAdd(pairs)
        self.assertEqual(checkKeyedLine(line), (checkLine(line), (by, at)))


class LongRecordTests(TestCase):
    """
    Long records are checked with find() rather than the regular expression;
    both must judge every record alike.
    """

    @given(st.binary(max_size=40).map(lambda b: bytes(b"ab=&<>\n%"[x % 8] for x in b)))
    @settings(max_examples=300, deadline=None)
    def test_sameVerdict(self, body):
        from gossip.store import format as formatModule

        for record in (
            lineHash(body) + b" %d<" % len(body) + body + b">%d" % len(body),
            b"x" * 11 + b" 1<" + body + b">1",
        ):
            short = formatModule._RECORD(record)
            try:
                long = formatModule._splitLong(record)
            except CorruptLine:
                long = None
            self.assertEqual(short.groups() if short else None, long)
