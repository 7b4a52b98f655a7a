# -*- test-case-name: tests.test_format -*-
"""
The log line format: encoding adds to lines and checking and decoding lines.

See docs/format.md.  One add is one line::

    HASH SP LENGTH "<" BODY ">" LENGTH LF

where BODY is the add's pairs as C{name=value} joined with C{&}, each name
and value %-escaped, and HASH the first 11 characters of the base64 of
SHA-256(BODY).  This module imports nothing but the standard library so that
the command line starts fast.
"""

from os import environ as _environ
from binascii import b2a_base64
from codecs import escape_decode
from hashlib import sha256

__all__ = [
    "CorruptLine",
    "checkKeyedLine",
    "checkKeyedLines",
    "checkKeyedRecords",
    "checkLine",
    "checkRecord",
    "checkRecords",
    "decodeBody",
    "decodeLine",
    "encodeAdd",
    "encodeBody",
    "identify",
    "isSerial",
    "lineHash",
    "longestEndingWith",
    "longestStartingWith",
]


def _compiledOnUse(pattern, method, name=None):
    """
    C{re.compile(pattern).method}, compiled when first called.

    Compiling at import, and importing re, would slow every C{gossip say},
    which with the C module built needs none of these patterns.  Where the
    result is the module global C{name}, the first call puts the compiled
    method there, so that later calls go to it directly.
    """
    compiled = []

    def first(*args):
        if not compiled:
            import re

            compiled.append(getattr(re.compile(pattern), method))
            if name is not None:
                globals()[name] = compiled[0]
        return compiled[0](*args)

    return first


class CorruptLine(ValueError):
    """
    A line, or a body, is not exactly one intact add.
    """


# Bytes written as themselves; every other byte is written as %XY.
_SAFE_NAME = (
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
    b"_.-~/?#@,[]()!:;' "
)
_SAFE_VALUE = _SAFE_NAME + b"="


_PERCENT = ord("%")


def _escaper(safe):
    table = [bytes([byte]) if byte in safe else b"%%%02X" % byte for byte in range(256)]

    def escape(data):
        unsafe = data.translate(None, safe)
        if not unsafe:
            return data
        if len(unsafe) * 8 < len(data):
            # Text, mostly: replace each kind of byte that needs it, "%"
            # first, since every escape brings one.
            for byte in sorted(set(unsafe), key=_PERCENT.__ne__):
                data = data.replace(bytes((byte,)), table[byte])
            return data
        # Binary data, mostly: every byte through the table, a piece at a
        # time (a list of a whole value's bytes would be 8 times its size).
        return b"".join(
            [
                b"".join([table[byte] for byte in data[start : start + 65536]])
                for start in range(0, len(data), 65536)
            ]
        )

    return escape


_escapeName = _escaper(_SAFE_NAME)
_escapeValue = _escaper(_SAFE_VALUE)

_HEX = b"0123456789abcdefABCDEF"
_UNHEX = {
    bytes([high, low]): bytes([int(bytes([high, low]), 16)])
    for high in _HEX
    for low in _HEX
}


def _unescape(data, unhex=_UNHEX.get):
    """
    Undo %-escaping (either case of hex digit) and form-encoding's C{+}.

    A C{%} not followed by two hex digits is kept as it is: no writer emits
    one, but a reader loses nothing by keeping it.
    """
    if b"+" in data:
        data = data.replace(b"+", b" ")
    if b"%" not in data:
        return data
    pieces = data.split(b"%")
    out = [pieces[0]]
    append = out.append
    for piece in pieces[1:]:
        byte = unhex(piece[:2])
        if byte is None:
            append(b"%")
            append(piece)
        else:
            append(byte)
            append(piece[2:])
    return b"".join(out)


# Anything that would stop a whole body being unescaped in one step before
# it is split into pairs: an escaped "&" or "=" (which would then look like
# a separator), or a backslash (which escape_decode would read).
_NOT_WHOLE = _compiledOnUse(rb"%(?:26|3[Dd])|\\", "search", "_NOT_WHOLE")


def _unescapeWhole(data):
    """
    L{_unescape} in C: "%XY" becomes the escape "\\xXY", which
    C{codecs.escape_decode} decodes.  C{data} must hold no backslash, which
    a writer always escapes.

    @raise ValueError: if a C{%} does not start an escape.
    """
    if b"+" in data:
        data = data.replace(b"+", b" ")
    return escape_decode(data.replace(b"%", b"\\x"))[0]


def encodeBody(pairs):
    """
    Encode (name, value) byte-string pairs as a body.
    """
    return b"&".join(
        _escapeName(name) + b"=" + _escapeValue(value) for name, value in pairs
    )


def lineHash(body):
    """
    The 11-character check hash of a body.
    """
    return b2a_base64(sha256(body).digest()[:9])[:11]


def encodeAdd(pairs):
    """
    Encode (name, value) pairs as one complete log line, LF included.
    """
    body = encodeBody(pairs)
    length = b"%d" % (len(body),)
    return b"".join((lineHash(body), b" ", length, b"<", body, b">", length, b"\n"))


# Each item holding "=" of a body, split at its first "=": the leftmost match
# of an item begins at its start, and one without "=" never matches.
_PAIRS = _compiledOnUse(rb"([^&=]*)=([^&]*)", "findall", "_PAIRS")


def decodeBody(body):
    """
    Decode a body to its list of (name, value) pairs.

    @raise CorruptLine: if a non-empty item has no C{=}.
    """
    escaped = b"%" in body or b"+" in body
    if escaped and _NOT_WHOLE(body) is None:
        # Unescaping first leaves every "&" and "=" where it was, and the
        # pairs are then found as in an unescaped body.
        try:
            pairs = _PAIRS(_unescapeWhole(body))
        except ValueError:
            pass
        else:
            _checkItems(body, pairs)
            return pairs
    pairs = _PAIRS(body)
    _checkItems(body, pairs)
    if not escaped:
        return pairs
    return [(_unescapePart(name), _unescapePart(value)) for name, value in pairs]


def _unescapePart(data):
    """
    Unescape one name or value: in C where it can be, else in Python.
    """
    if b"%" in data and b"\\" not in data:
        try:
            return _unescapeWhole(data)
        except ValueError:
            pass
    return _unescape(data)


def _checkItems(body, pairs):
    """
    Check that C{pairs}, found in C{body}, are all its non-empty items:
    that no item lacks C{=}.
    """
    if len(pairs) == body.count(b"&") + 1:
        return
    if len(pairs) != sum(1 for item in body.split(b"&") if item):
        raise CorruptLine("pair without '='")


# A record: 11 hash bytes, a space, the length, "<", the body, ">" and the
# length again.  The body is "&"-separated items, each empty or holding "="
# (a name without "=", then "=", then a value without "&"): anything else
# is not an add, for this reader as for the original's.  The quantifiers are
# possessive, so a damaged line is rejected without backtracking.
_SHAPE = (
    rb"(.{11}) ([0-9]++)<"
    rb"((?:[^&=>\n]*+=[^&>\n]*+)?+(?:&(?:[^&=>\n]*+=[^&>\n]*+)?+)*+)"
    rb">([0-9]++)"
)
_RECORD = _compiledOnUse(_SHAPE, "fullmatch", "_RECORD")

# Past this many bytes a record is mostly one long value, which find()
# crosses many times faster than the regular expression's byte-by-byte loop.
_LONG = 4096
_HEADER = _compiledOnUse(rb"(.{11}) ([0-9]++)<", "match", "_HEADER")


def _splitLong(record):
    """
    What L{_RECORD} would match in a long record, found with find().
    """
    header = _HEADER(record)
    gt = record.rfind(b">")
    if header is None or gt < header.end() or not record[gt + 1 :].isdigit():
        raise CorruptLine("not an add")
    body = record[header.end() : gt]
    if b">" in body or b"\n" in body:
        raise CorruptLine("not an add")
    for start, equals, amp in _items(body):
        if amp > start and equals == -1:
            raise CorruptLine("pair without '='")
    return header.group(1), header.group(2), body, record[gt + 1 :]


def _items(body):
    """
    Where each of C{body}'s items (what lies between its C{&}s) is, found
    with find() rather than byte by byte.

    @return: an iterator of C{(start, equals, end)}: the item's first byte,
        its first C{=} (-1 if it has none) and the offset just past it.
    """
    find = body.find
    start = 0
    end = len(body)
    while start < end:
        amp = find(b"&", start)
        if amp == -1:
            amp = end
        yield start, find(b"=", start, amp), amp
        start = amp + 1


def _longest(digits, others):
    """
    The length of a record whose LENGTH is C{digits} and whose other parts
    than its body are C{others} bytes, or 0 if no body is that long.
    """
    significant = digits.lstrip(b"0")
    if len(significant) > 18:
        return 0
    return others + int(significant or b"0")


def longestStartingWith(head):
    """
    How long a record beginning with C{head} can be and still be an add, as
    the LENGTH in its header says, or 0 if C{head} does not begin as an add
    does: so that a reader can tell that a line is damaged before it has
    read it all.

    @param head: a record's first bytes, its header among them.
    """
    match = _HEADER(head)
    if match is None:
        return 0
    digits = match.group(2)
    return _longest(digits, match.end() + 1 + len(digits))


def longestEndingWith(tail):
    """
    How long a record ending with C{tail} can be and still be an add, as
    the LENGTH in its trailer says, or 0 if C{tail} does not end as an add
    does: L{longestStartingWith} for a reader reading backwards.

    @param tail: a record's last bytes, more than its trailer.
    """
    digits = len(tail) - len(tail.rstrip(b"0123456789"))
    if digits == 0 or digits == len(tail) or tail[-digits - 1] != 0x3E:
        return 0
    # The hash, the space, "<", ">" and the length written twice.
    return _longest(tail[-digits:], 11 + 1 + 1 + 1 + 2 * digits)


def checkRecord(record):
    """
    Check that C{record}, one line without its LF, is exactly one intact add.

    @return: the record's body.
    @raise CorruptLine: if it is not.
    """
    if len(record) > _LONG:
        digest, length, body, trailer = _splitLong(record)
    else:
        match = _RECORD(record)
        if match is None:
            raise CorruptLine("not an add")
        digest, length, body, trailer = match.groups()
    if length != trailer or len(body) != int(length):
        raise CorruptLine("lengths do not match the body")
    # The first 9 digest bytes make exactly the first 12 base64 characters.
    if b2a_base64(sha256(body).digest()[:9])[:11] != digest:
        raise CorruptLine("hash mismatch")
    if not _atIsCanonical(body):
        raise CorruptLine("at is not a serial number")
    return body


def checkRecords(records):
    """
    L{checkRecord} for many records, as a log is read: unrolled for the
    usual short record, since this runs for every line read.

    @return: a list of the records' bodies, with L{None} for each record
        that is not an intact add.
    """
    bodies = []
    keep = bodies.append
    for record in records:
        if len(record) <= _LONG:
            match = _RECORD(record)
            if match is None:
                keep(None)
                continue
            digest, length, body, trailer = match.groups()
            if (
                length == trailer
                and len(body) == int(length)
                and b2a_base64(sha256(body).digest()[:9])[:11] == digest
                and _atIsCanonical(body)
            ):
                keep(body)
            else:
                keep(None)
            continue
        try:
            keep(checkRecord(record))
        except CorruptLine:
            keep(None)
    return bodies


def checkLine(line):
    """
    Check that C{line}, LF included, is exactly one intact add.

    @return: the line's body.
    @raise CorruptLine: if it is not.
    """
    if line[-1:] != b"\n":
        raise CorruptLine("no final LF")
    return checkRecord(line[:-1])


# A line as the original writes an add, by and at first: checked and
# identified by one match.  Whatever it matches, _RECORD and _BY_AT match
# too, and to the same effect.
_KEYED_SHAPE = (
    rb"(.{11}) ([0-9]++)<"
    rb"(by=([^&%+=>\n]*+)&at=([0-9]++)(?:&(?:[^&=>\n]*+=[^&>\n]*+)?+)*+)"
    rb">([0-9]++)"
)
_KEYED = _compiledOnUse(_KEYED_SHAPE + rb"\n", "fullmatch", "_KEYED")
_KEYED_RECORD = _compiledOnUse(_KEYED_SHAPE, "fullmatch", "_KEYED_RECORD")


def checkKeyedLine(line):
    """
    Check that C{line}, LF included, is exactly one intact add, and find
    its C{(by, at)}: L{checkLine} then L{identify}, in one step for the
    usual line.

    @return: the line's body and its C{(by, at)} (or L{None}).
    @raise CorruptLine: if it is not an intact add.
    """
    if len(line) <= _LONG:
        match = _KEYED(line)
        if match is not None:
            digest, length, body, by, at, trailer = match.groups()
            if length != trailer or len(body) != int(length):
                raise CorruptLine("lengths do not match the body")
            if b2a_base64(sha256(body).digest()[:9])[:11] != digest:
                raise CorruptLine("hash mismatch")
            if not isSerial(at):
                raise CorruptLine("at is not a serial number")
            return body, (by, int(at))
    body = checkLine(line)
    return body, identify(body)


def checkKeyedLines(lines):
    """
    L{checkKeyedLine} for many lines, as a peer sends them.

    @return: a list of C{(line, body, (by, at))} for the intact adds that
        have a C{by} and C{at}, in order, and how many of C{lines} are not
        such adds.
    """
    return _checkKeyed(lines, _KEYED, checkKeyedLine)


def _checkKeyedRecord(record):
    body = checkRecord(record)
    return body, identify(body)


def checkKeyedRecords(records):
    """
    L{checkKeyedLines} for records (lines without their LF) as a log is
    read, to send what a peer lacks.
    """
    return _checkKeyed(records, _KEYED_RECORD, _checkKeyedRecord)


def _checkKeyed(lines, keyed, check):
    """
    Check each of C{lines} with C{keyed}, the regular expression of the
    usual add, or else with C{check}: unrolled, since this runs for every
    add sent and received.
    """
    checked = []
    keep = checked.append
    rejected = 0
    for line in lines:
        match = keyed(line) if len(line) <= _LONG else None
        if match is not None:
            digest, length, body, by, at, trailer = match.groups()
            if (
                length == trailer
                and len(body) == int(length)
                and b2a_base64(sha256(body).digest()[:9])[:11] == digest
                and isSerial(at)
            ):
                keep((line, body, (by, int(at))))
            else:
                rejected += 1
            continue
        try:
            body, key = check(line)
        except CorruptLine:
            key = None
        if key is None:
            rejected += 1
        else:
            keep((line, body, key))
    return checked, rejected


def decodeLine(line):
    """
    Check and decode one line, LF included, to its pairs.

    @raise CorruptLine: if the line is not exactly one intact add.
    """
    return decodeBody(checkLine(line))


# The original's order, by then at, with nothing escaped in by.
_BY_AT = _compiledOnUse(rb"by=([^&%+=]*)&at=([0-9]+)(?:&|\Z)", "match", "_BY_AT")

# The largest serial number, 2**63 - 1: 19 digits.
_MAX_SERIAL = b"%d" % (2**63 - 1,)


def isSerial(at):
    """
    Whether C{at}, the bytes of an C{at} as written, is a serial number in
    its one spelling: ASCII decimal digits, no sign, no leading zero (but
    C{0} itself), less than 2**63.  Anything else would let one add be
    written two ways, or name an add no node could write.
    """
    size = len(at)
    if size == 0 or size > 19 or (at[0] == 0x30 and size > 1):
        return False
    # bytes.isdigit() is true of ASCII digits alone.
    if not at.isdigit():
        return False
    return size < 19 or at <= _MAX_SERIAL


def _firstAt(body):
    """
    The value of C{body}'s first C{at} pair, as written (not unescaped), or
    L{None} if it has none.
    """
    for start, equals, amp in _items(body):
        if equals != -1:
            name = body[start:equals]
            # "at" is at most 6 bytes escaped, and "+" makes neither letter.
            if name == b"at" or (len(name) <= 6 and b"%" in name and _unescape(name) == b"at"):
                return body[equals + 1 : amp]
    return None


def _atIsCanonical(body):
    """
    Whether C{body}'s first C{at}, if it has one, is written as
    L{isSerial} requires: a body whose C{at} is not is a damaged line.
    """
    match = _BY_AT(body)
    if match is not None:
        return isSerial(match.group(2))
    if b"at=" not in body and b"%" not in body:
        return True
    at = _firstAt(body)
    return at is None or isSerial(at)


def identify(body):
    """
    Find an add's C{(by, at)} in its body, or L{None} if it has none.

    The original writer puts C{by} and C{at} first, which this reads without
    decoding the rest; elsewhere in the body they are found by decoding it.

    @raise CorruptLine: if the body does not decode, or its C{at} is not a
        serial number (see L{isSerial}).
    """
    match = _BY_AT(body)
    if match is not None:
        at = match.group(2)
        if not isSerial(at):
            raise CorruptLine("at is not a serial number")
        return match.group(1), int(at)
    pairs = decodeBody(body)
    at = _firstAt(body)
    if at is None:
        return None
    if not isSerial(at):
        raise CorruptLine("at is not a serial number")
    for name, value in pairs:
        if name == b"by":
            return value, int(at)
    return None


# The Python definitions above are the reference; gossip.store._speedups, when it
# was built (see setup.py), does the same in C for the functions that run
# once an add.  GOSSIP_NO_SPEEDUPS=1 in the environment keeps the Python.
PYTHON = {
    "checkRecords": checkRecords,
    "checkKeyedLines": checkKeyedLines,
    "checkKeyedRecords": checkKeyedRecords,
    "decodeBody": decodeBody,
}


def _speedUp():
    """
    Replace the functions in L{PYTHON} with gossip.store._speedups' where it is
    built and not turned off.

    @return: the C module, or L{None}.
    """
    if _environ.get("GOSSIP_NO_SPEEDUPS"):
        return None
    try:
        from gossip.store import _speedups
    except ImportError:
        return None
    _speedups.configure(CorruptLine, sha256)
    checkKeyed = _speedups.checkKeyed

    def checkKeyedLines(lines):
        return checkKeyed(lines, True, checkKeyedLine)

    def checkKeyedRecords(records):
        return checkKeyed(records, False, _checkKeyedRecord)

    for python, c in [
        (PYTHON["checkKeyedLines"], checkKeyedLines),
        (PYTHON["checkKeyedRecords"], checkKeyedRecords),
    ]:
        c.__doc__ = python.__doc__
    globals().update(
        checkRecords=_speedups.checkRecords,
        checkKeyedLines=checkKeyedLines,
        checkKeyedRecords=checkKeyedRecords,
        decodeBody=_speedups.decodeBody,
    )
    return _speedups


speedups = _speedUp()
