# -*- test-case-name: tests.test_cli -*-
"""
Printing adds for C{gossip ask}: the three output formats, and reading a
log from the start, from the end, and as it grows.
"""

import io
import os
import sys
from binascii import b2a_base64

from gossip.store.format import decodeBody
from gossip.store.logfile import entries, reverseEntries

__all__ = ["FORMATS", "follow", "lastMatches", "printMatches", "readable", "standardOutput"]


def _jsonBytes(data):
    """
    Bytes as JSON: a string when they are UTF-8, else C{{"base64": ...}}.
    """
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return {"base64": b2a_base64(data, newline=False).decode("ascii")}


# What readable() shows as escapes: C0 and C1 controls, DEL, the backslash
# itself, and the characters that reorder or break lines on a terminal.
# Bytes that are not UTF-8 decode (surrogateescape) to U+DC80-U+DCFF and
# show as \xXY; a C1 control, which is UTF-8, shows as \u00XY, so the two
# cannot be confused.
_ESCAPES = {c: f"\\x{c:02x}" for c in [*range(0x20), 0x7F]}
_ESCAPES.update({ord("\n"): "\\n", ord("\t"): "\\t", ord("\r"): "\\r", ord("\\"): "\\\\"})
_ESCAPES.update(
    {
        c: f"\\u{c:04x}"
        for c in [*range(0x80, 0xA0), 0x2028, 0x2029, *range(0x202A, 0x202F), *range(0x2066, 0x206A)]
    }
)
_ESCAPES.update({0xDC00 + byte: f"\\x{byte:02x}" for byte in range(0x80, 0x100)})


def readable(data):
    """
    Bytes as text safe to show on a terminal: UTF-8 where it is, control
    characters and undecodable bytes as backslash escapes, and a backslash
    as two, so that every distinct value shows distinctly.
    """
    return data.decode("utf-8", "surrogateescape").translate(_ESCAPES)


_buffered = None


def standardOutput():
    """
    Standard output as a buffered binary file.

    Under C{python -u} or C{PYTHONUNBUFFERED}, C{sys.stdout.buffer} is a raw
    file, whose C{write} may write only part of what it is given (when a
    signal interrupts a write to a pipe) and costs a system call each time.
    """
    global _buffered
    out = sys.stdout.buffer
    if not isinstance(out, io.RawIOBase):
        return out
    if _buffered is None:
        _buffered = open(out.fileno(), "wb", closefd=False)
    return _buffered


def _raw(out, record, body):
    out.write(record + b"\n")


def _json(out, record, body):
    # Imported here, where it costs a dictionary look-up an add, so that
    # the other formats do not pay for it when gossip ask starts.
    import json

    pairs = [[_jsonBytes(name), _jsonBytes(value)] for name, value in decodeBody(body)]
    out.write(json.dumps(pairs, ensure_ascii=False).encode("utf-8") + b"\n")


def _text(out, record, body):
    out.write(
        " ".join(
            f"{readable(name)}={readable(value)}" for name, value in decodeBody(body)
        ).encode("utf-8", "surrogateescape")
        + b"\n"
    )


FORMATS = {"raw": _raw, "json": _json, "text": _text}


def _report(path, offset, record):
    sys.stderr.write(
        f"gossip: {os.fsdecode(path)}: skipped a corrupt line at byte {offset} "
        f"({len(record) + 1} bytes)\n"
    )


def _matches(query, body):
    return query.matchesEverything() or query.matches(decodeBody(body))


def printMatches(f, start, query, write, path, out=None):
    """
    Print the adds from byte C{start} to the last complete line that match.

    @return: the offset just past the last complete line.
    """
    out = standardOutput() if out is None else out
    end = start
    for offset, record, body in entries(f, start):
        end = offset + len(record) + 1
        if body is None:
            _report(path, offset, record)
        elif _matches(query, body):
            write(out, record, body)
    out.flush()
    return end


def lastMatches(f, query, count, write, path, out=None):
    """
    Print the last C{count} matching adds, reading the log backwards.

    @return: the offset just past the last complete line.
    """
    out = standardOutput() if out is None else out
    end = f.seek(0, os.SEEK_END)
    found = []
    last = None
    for offset, record, body in reverseEntries(f, end):
        if last is None:
            last = offset + len(record) + 1
        if len(found) >= count:
            break
        if body is not None and _matches(query, body):
            found.append((record, body))
    for record, body in reversed(found):
        write(out, record, body)
    out.flush()
    return 0 if last is None else last


def follow(log, f, offset, query, write, out=None):
    """
    Print matching adds as they are appended, until interrupted.
    """
    from gossip.cli.follow import FileWaiter

    waiter = FileWaiter(log.path)
    try:
        while True:
            waiter.wait()
            size = os.fstat(f.fileno()).st_size
            if size < offset:
                sys.stderr.write(
                    f"gossip: {os.fsdecode(log.path)}: the log shrank; reading it again\n"
                )
                offset = 0
            if size > offset:
                offset = printMatches(f, offset, query, write, log.path, out)
    finally:
        waiter.close()
