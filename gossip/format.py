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

import re
from binascii import b2a_base64
from hashlib import sha256

__all__ = [
    "CorruptLine",
    "checkLine",
    "checkRecord",
    "decodeBody",
    "decodeLine",
    "encodeAdd",
    "encodeBody",
    "identify",
    "lineHash",
]

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


def _escaper(safe):
    table = {byte: b"%%%02X" % byte for byte in range(256) if byte not in safe}
    pattern = re.compile(b"[^" + re.escape(safe) + b"]")

    def escape(data, lookup=table.__getitem__, sub=pattern.sub):
        if not data.translate(None, safe):
            return data
        return sub(lambda match: lookup(match.group()[0]), data)

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


def decodeBody(body, unescape=_unescape):
    """
    Decode a body to its list of (name, value) pairs.

    @raise CorruptLine: if a non-empty item has no C{=}.
    """
    pairs = []
    for item in body.split(b"&"):
        if not item:
            continue
        name, sep, value = item.partition(b"=")
        if not sep:
            raise CorruptLine("pair without '='")
        pairs.append((unescape(name), unescape(value)))
    return pairs


# An item of a body that is neither empty nor holds "=", between "&"s that
# the caller adds at both ends.
_BARE_PAIR = re.compile(rb"&[^&=]+&")


def _hasBarePair(body):
    """
    Whether a body has a non-empty item without C{=}: L{decodeBody} and the
    original's reader reject it, so a line with one is not an intact add.
    """
    if len(body) < 1024:
        return _BARE_PAIR.search(b"&" + body + b"&") is not None
    # A long body is mostly one long value: finding each "&" with find()
    # costs a small part of what the regular expression's byte-by-byte
    # search would.
    find = body.find
    start = 0
    while True:
        amp = find(b"&", start)
        if amp == -1:
            return start < len(body) and find(b"=", start) == -1
        if amp > start and find(b"=", start, amp) == -1:
            return True
        start = amp + 1


def checkRecord(record):
    """
    Check that C{record}, one line without its LF, is exactly one intact add.

    @return: the record's body.
    @raise CorruptLine: if it is not.
    """
    # Shape: 11 hash bytes, a space, digits, "<", body, ">", digits.
    lt = record.find(b"<", 12, 40)
    gt = record.rfind(b">")
    if lt < 13 or gt < lt or record[11:12] != b" ":
        raise CorruptLine("not an add")
    header = record[12:lt]
    if header != record[gt + 1 :] or not (header.isdigit() and header.isascii()):
        raise CorruptLine("lengths differ")
    body = record[lt + 1 : gt]
    if len(body) != int(header) or b">" in body or b"\n" in body:
        raise CorruptLine("length does not match body")
    # The first 9 digest bytes make exactly the first 12 base64 characters.
    if b2a_base64(sha256(body).digest()[:9])[:11] != record[:11]:
        raise CorruptLine("hash mismatch")
    if _hasBarePair(body):
        raise CorruptLine("pair without '='")
    return body


def checkLine(line):
    """
    Check that C{line}, LF included, is exactly one intact add.

    @return: the line's body.
    @raise CorruptLine: if it is not.
    """
    if line[-1:] != b"\n":
        raise CorruptLine("no final LF")
    return checkRecord(line[:-1])


def decodeLine(line):
    """
    Check and decode one line, LF included, to its pairs.

    @raise CorruptLine: if the line is not exactly one intact add.
    """
    return decodeBody(checkLine(line))


def identify(body):
    """
    Find an add's C{(by, at)} in its body, or L{None} if it has none.

    The original writer puts C{by} and C{at} first, which this reads without
    decoding the rest; elsewhere in the body they are found by decoding it.

    @raise CorruptLine: if the body does not decode.
    """
    if body.startswith(b"by="):
        amp = body.find(b"&")
        if amp != -1 and body.startswith(b"at=", amp + 1):
            end = body.find(b"&", amp + 4)
            by = body[3:amp]
            at = body[amp + 4 : end if end != -1 else len(body)]
            if b"%" not in by and b"+" not in by and at.isdigit() and at.isascii():
                return by, int(at)
    by = at = None
    for name, value in decodeBody(body):
        if name == b"by" and by is None:
            by = value
        elif name == b"at" and at is None:
            at = value
    if by is None or at is None or not (at.isdigit() and at.isascii()):
        return None
    return by, int(at)
