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


class Damage:
    """
    What a reader skipped, told on standard error: the first few damaged
    lines each on a line of their own, then only how many in all, so that a
    file that is no log at all does not print a line for every line it has.

    @ivar intact: whether any intact add was read (counted by L{lastMatches}).
    @ivar count: how many damaged lines were skipped.
    @ivar size: their bytes, LFs included.
    """

    # Damaged lines told one by one before the rest are only counted.
    SHOWN = 3

    def __init__(self, path, err=None):
        self._path = os.fsdecode(path)
        self._err = err
        self.intact = 0
        self.count = 0
        self.size = 0
        self._told = 0

    def _write(self, text):
        err = sys.stderr if self._err is None else self._err
        err.write(f"gossip: {self._path}: {text}\n")

    def skipped(self, offset, record):
        """
        A damaged line of C{record}'s length was skipped at byte C{offset}.
        """
        self.count += 1
        self.size += len(record) + 1
        if self.count <= self.SHOWN:
            self._told = self.count
            self._write(f"skipped a corrupt line at byte {offset} ({len(record) + 1} bytes)")

    def summarise(self):
        """
        Tell how many damaged lines were skipped, if more than were told.
        """
        if self.count > self._told:
            self._write(
                f"skipped {self.count} corrupt lines in all ({self.size} bytes); "
                f"gossip check {self._path} tells where"
            )
            self._told = self.count

    def noLog(self):
        """
        Whether what was read has damaged lines and not one intact add:
        not a gossip log.
        """
        return self.count > 0 and not self.intact


def _matches(query, body):
    return query.matchesEverything() or query.matches(decodeBody(body))


def printMatches(f, start, query, write, path, out=None, damage=None):
    """
    Print the adds from byte C{start} to the last complete line that match.

    @param damage: the L{Damage} that counts what is skipped; a new one if
        not given.
    @return: the offset just past the last complete line.
    """
    out = standardOutput() if out is None else out
    damage = Damage(path) if damage is None else damage
    end = start
    intact = False
    everything = query.matchesEverything()
    for offset, record, body in entries(f, start):
        end = offset + len(record) + 1
        if body is None:
            damage.skipped(offset, record)
            continue
        intact = True
        if everything or query.matches(decodeBody(body)):
            write(out, record, body)
    out.flush()
    if intact:
        damage.intact = True
    damage.summarise()
    return end


def lastMatches(f, query, count, write, path, out=None, damage=None):
    """
    Print the last C{count} matching adds, reading the log backwards.

    @param damage: the L{Damage} that counts the damaged lines read on the
        way; a new one if not given.
    @return: the offset just past the last complete line.
    """
    out = standardOutput() if out is None else out
    damage = Damage(path) if damage is None else damage
    end = f.seek(0, os.SEEK_END)
    found = []
    last = None
    for offset, record, body in reverseEntries(f, end):
        if last is None:
            last = offset + len(record) + 1
        if len(found) >= count:
            break
        if body is None:
            damage.skipped(offset, record)
            continue
        damage.intact += 1
        if _matches(query, body):
            found.append((record, body))
    for record, body in reversed(found):
        write(out, record, body)
    out.flush()
    damage.summarise()
    return 0 if last is None else last


def follow(log, f, offset, query, write, out=None, damage=None):
    """
    Print matching adds as they are appended, until interrupted.
    """
    damage = Damage(log.path) if damage is None else damage
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
                offset = printMatches(f, offset, query, write, log.path, out, damage)
    finally:
        waiter.close()
