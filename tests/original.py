"""
The original gossip.py's line algorithms, restated in Python 3 for
comparison: the tests check that what gossip writes decodes with them, and
the benchmarks measure gossip against them.

Restated from the description and behaviour of the original (a regular
expression for the line's shape, a truncated base64 SHA-256, and a
split-and-lookup unquoting of form-encoded pairs); it is not gossip's code
and gossip does not use it.
"""

import base64
import hashlib
import re
from urllib.parse import quote_from_bytes

_LINE = re.compile(rb"(.{11}) (\d+)<([^>]*)>(\d+)\n")
_PIECES = re.compile(rb"%[0-9a-fA-F][0-9a-fA-F]|[^%]+")
_AMPERSANDS = re.compile(rb"[^&]+")
_UNQUOTE = {}
for _byte in range(256):
    for _form in ("%%%x%x", "%%%X%x", "%%%x%X", "%%%X%X"):
        _UNQUOTE[(_form % (_byte >> 4, _byte & 15)).encode("ascii")] = bytes([_byte])


class Corrupt(Exception):
    """
    The original's reader would not return this line as an add.
    """


def _unquote(text):
    text = text.replace(b"+", b" ")
    if b"%" not in text:
        return text
    get = _UNQUOTE.get
    return b"".join([get(piece, piece) for piece in _PIECES.findall(text)])


def parsePairs(body):
    """
    The original's pair parser: split at C{&}, then at the first C{=}.
    """
    pairs = []
    for item in _AMPERSANDS.findall(body):
        i = item.index(b"=")
        pairs.append((_unquote(item[:i]), _unquote(item[i + 1 :])))
    return pairs


def decodeAdd(line):
    """
    Decode one line, LF included, as the original did.

    @raise Corrupt: where the original returned one of its corrupt markers.
    """
    match = _LINE.match(line)
    if not match:
        raise Corrupt("shape")
    hash, size1, body, size2 = match.groups()
    if size1 != size2 or len(body) != int(size1):
        raise Corrupt("length")
    if hash != base64.encodebytes(hashlib.sha256(body).digest())[:11]:
        raise Corrupt("hash")
    try:
        return parsePairs(body)
    except ValueError:
        raise Corrupt("pair") from None


def encodeAdd(pairs):
    """
    Encode pairs as the original did (uppercase escapes).
    """
    body = b"&".join(
        quote_from_bytes(name, "/?#@,[]()!:;' ").encode("ascii")
        + b"="
        + quote_from_bytes(value, "/?#@,[]()!:;' =").encode("ascii")
        for name, value in pairs
    )
    digest = base64.encodebytes(hashlib.sha256(body).digest())[:11]
    return b"%s %d<%s>%d\n" % (digest, len(body), body, len(body))
