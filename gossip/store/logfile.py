# -*- test-case-name: tests.test_log -*-
"""
A gossip log file: reading it forwards and backwards, and appending to it
from any number of processes at once.

Every append happens under an exclusive C{flock} on the log file, the same
lock the original gossip.py takes, and so does everything that decides what
to append: creating the identity add, choosing the next C{at}, and skipping
adds the log already has.  What a log holds (its identity, the next C{at},
which C{(by, at)} it has) is kept in a cache file beside it so that opening
a large log does not rescan it; the cache is checked against the log under
the lock and costs a rescan, never a wrong answer, when it is stale.

An add too large to hold in memory is never held whole: one from a peer is
spooled to a file beside the log and checked as it arrives (L{Incoming}),
then copied in under the lock; one in the log is found, checked and read a
piece at a time (L{LargeLine}).

Like L{gossip.store.format}, this module uses only the standard library, so that
C{gossip say} and C{gossip ask} start fast.
"""

import errno
import os
import stat
from contextlib import contextmanager
from binascii import b2a_base64
from fcntl import LOCK_EX, LOCK_NB, LOCK_UN, flock
from hashlib import sha256
from itertools import accumulate
from time import monotonic

from gossip.store.format import (
    CorruptLine,
    _compiledOnUse,
    checkKeyedLine,
    checkKeyedLines,
    checkKeyedRecords,
    checkLine,
    checkRecord,
    checkRecords,
    decodeBody,
    encodeAdd,
    identify,
    isSerial,
    longestEndingWith,
    longestStartingWith,
    speedups as _speedups,
)
from gossip.store.intervals import Intervals, addKeys, addSpans, heldBy, overlapping, spans

__all__ = [
    "LARGE",
    "RESERVED",
    "Incoming",
    "LargeLine",
    "LineCheck",
    "Log",
    "LogError",
    "Received",
    "Scan",
    "Skipped",
    "State",
    "Stretch",
    "checkLarge",
    "entries",
    "keyedBlocks",
    "keyedPlaces",
    "keyedSpans",
    "newIdentity",
    "reverseEntries",
]

RESERVED = frozenset((b"by", b"at", b"I"))

_CHUNK = 1 << 20
# How much of the log's head and of the bytes before its scanned offset the
# cache fingerprints, to notice a log replaced or rewritten under it.
_PRINT = 4096
# Lines longer than this are found, checked and sent without being held in
# memory whole (see LargeLine).
LARGE = 1 << 20
# How much of a large line is read, checked or copied at a time.
_PIECE = 1 << 18
# How many blocks of _PRINT bytes, at random places, a cache read from disk
# is checked against: each line in them must be intact (or the cache know of
# damage) and each add held.  A few page reads: far below say's budget.
_SAMPLES = 6
_CACHE_MAGIC = b"gossip-cache 3"
# A line is judged by its header or trailer only once it is longer than
# this, which is more than any add's header or trailer.
_HEADROOM = 4096


class LogError(Exception):
    """
    Something about a log file that its user must fix: the message is
    suitable to print as it is.
    """


def newIdentity():
    """
    A new node identity: 120 random bits, URL-safe base64 (no padding).
    """
    # Imported here, once a log, for base64 and the modules it imports
    # would slow every gossip say.
    from base64 import urlsafe_b64encode

    return urlsafe_b64encode(os.urandom(15))


class Skipped:
    """
    A damaged line too long to hold in memory, given by a reader in place of
    its bytes: it holds none of them, but its C{len()} is the line's length
    without its LF, as a record's is.

    @ivar size: that length.
    """

    __slots__ = ("size",)

    def __init__(self, size):
        self.size = size

    def __len__(self):
        return self.size

    def __eq__(self, other):
        if type(other) is not Skipped:
            return NotImplemented
        return self.size == other.size

    def __hash__(self):
        return hash((Skipped, self.size))

    def __repr__(self):
        return f"Skipped({self.size})"


def _judge(pieces, size, limit, longest):
    """
    Decide, once a line being read is longer than L{_CHUNK} (and than any
    add's header or trailer), whether it can still be an add.

    @param pieces: the line's bytes read so far, in the order C{longest}
        wants them joined.
    @param size: how many bytes that is.
    @param limit: the longest the line can be, once known, else L{None}.
    @param longest: L{longestStartingWith} or L{longestEndingWith}.
    @return: C{pieces} (joined into one, once judged), or L{None} if the
        line is damaged and need not be kept; and its C{limit}.
    """
    if size <= _CHUNK or size <= _HEADROOM:
        return pieces, limit
    if limit is None:
        pieces = [b"".join(pieces)]
        limit = longest(pieces[0])
    if size > limit:
        return None, limit
    return pieces, limit


def _blocks(f, start, size=None, large=None, pauses=False):
    """
    Read a log forwards from byte C{start} a block at a time.

    A line that grows longer than L{_CHUNK} without an LF is kept only
    while its header says it may still be an add, so that a gigabyte of
    damage costs a few megabytes, not a gigabyte.

    @param large: if given, a line longer than this many bytes is not read
        into memory whole but given as a L{LargeLine}, without its key, in
        place of a block.
    @param pauses: if true, while reading on past the end of such a line,
        give C{(offset, None)} after each read, so that the caller can let
        others run: a line may be gigabytes long.
    @return: an iterator of C{(offset, block)}: complete lines from
        C{offset}, joined by LF, without the last one's LF; or, for a
        damaged line too long to keep, a L{Skipped}.
    """
    if size is None:
        size = _CHUNK
    f.seek(start)
    offset = start
    read = f.read
    # The line being read, in pieces, or None once it is known damaged.
    pending = []
    pendingSize = 0
    limit = None
    data = read(size)
    while data:
        last = data.rfind(b"\n")
        if last == -1:
            pendingSize += len(data)
            if pending is not None and large is not None and pendingSize > large:
                # One line, longer than the caller will hold: note where it
                # is and read on past its end.
                past = _pastLine(read, size)
                while True:
                    try:
                        next(past)
                    except StopIteration as done:
                        rest, length = done.value
                        break
                    if pauses:
                        yield offset, None
                if rest is None:
                    return
                length += pendingSize
                yield offset, LargeLine(offset, length)
                offset += length
                pending = []
                pendingSize = 0
                limit = None
                data = rest or read(size)
                continue
            if pending is not None:
                pending.append(data)
                pending, limit = _judge(pending, pendingSize, limit, longestStartingWith)
            data = read(size)
            continue
        if pending is None:
            first = data.find(b"\n")
            skipped = Skipped(pendingSize + first)
            yield offset, skipped
            offset += len(skipped) + 1
            block = data[first + 1 : last] if first < last else None
        else:
            pending.append(data[:last])
            block = b"".join(pending)
        if block is not None:
            yield offset, block
            offset += len(block) + 1
        pending = [data[last + 1 :]]
        pendingSize = len(pending[0])
        limit = None
        data = read(size)


def _pastLine(read, size):
    """
    Read on past the end of the line being read: a generator that yields
    after each read that does not reach it.

    @return: (as the generator's value) what was read after the line's LF,
        and how many bytes were read up to and including that LF; or
        C{(None, None)} if the file ends first.
    """
    skipped = 0
    while True:
        data = read(size)
        if not data:
            return None, None
        end = data.find(b"\n")
        if end != -1:
            return data[end + 1 :], skipped + end + 1
        skipped += len(data)
        yield


def entries(f, start=0, large=None):
    """
    Read a log forwards from byte C{start}, which must begin a line.

    @param f: a binary file open for reading.
    @param large: if given, a line longer than this many bytes is not read
        into memory whole (C{f} must then be a real file): it is checked a
        piece at a time and given as C{(offset, line, None)}, where C{line}
        is a L{LargeLine} whose C{key} is the add's C{(by, at)}, or L{None}
        when it is not an intact add with them.
    @return: an iterator of C{(offset, record, body)} for each complete
        line, where C{record} is the line without its LF (a L{Skipped} for
        a damaged line too long to keep) and C{body} is the add's body, or
        L{None} when the line is not an intact add.  It ends at the last
        LF: an unterminated last line is still being written (or was
        torn), and is not returned.
    """
    for offset, block in _blocks(f, start, large=large):
        if type(block) is Skipped:
            yield offset, block, None
            continue
        if isinstance(block, LargeLine):
            try:
                block.key = checkLarge(f.fileno(), block)
            except CorruptLine:
                pass
            yield offset, block, None
            continue
        records = block.split(b"\n")
        for record, body in zip(records, checkRecords(records)):
            yield offset, record, body
            offset += len(record) + 1


def keyedBlocks(f, start=0, size=1 << 18, large=LARGE):
    """
    Read a log forwards from byte C{start}, which must begin a line, for
    the adds it holds: what a sender needs, and no more.

    @param large: lines longer than this are checked a piece at a time and
        given as L{LargeLine}s, never held in memory whole.
    @return: an iterator, a block's worth at a time, of the intact adds
        with a C{by} and C{at}: a L{Stretch} of them where each origin's
        serials follow one another, else a list of C{(record, body, (by,
        at))}; or, for a line longer than C{large} that is such an add, its
        L{LargeLine}.  Blocks are read C{size} bytes at a time: smaller than
        a reader's, so that a sender checking one does not keep its peer
        waiting long.
    """
    for _, block in _blocks(f, start, size, large, pauses=True):
        if block is None:
            # Reading on past a large line: let the caller serve others.
            yield []
            continue
        if type(block) is Skipped:
            continue
        if isinstance(block, LargeLine):
            check = LineCheck(block.length)
            try:
                for piece in _pieces(f.fileno(), block):
                    check.update(piece)
                    # Let the caller serve others between pieces.
                    yield []
                block.key = check.finish()
            except CorruptLine:
                yield []
            else:
                yield block
            continue
        data = block + b"\n"
        run = keyedSpans(data)
        if run is None:
            yield checkKeyedRecords(block.split(b"\n"))[0]
            continue
        count, found, longest, rejected = run
        yield Stretch(_without(data, rejected), count, found, longest)


def keyedSpans(data):
    """
    Check the lines of C{data} (LF included, as from a peer) at once, for a
    batch that can be taken or sent whole: the keys of its intact adds with
    a C{by} and C{at}, if each origin's serials follow one another, and
    where the other lines are.

    @return: C{(count, spans, longest, rejected)}: how many such adds, the
        L{spans} of their keys, the length of the longest without its LF,
        and the C{(start, end)} in C{data} of each other line, its LF
        included (a last line without one is cut short); or L{None} if an
        origin's serials do not follow one another.
    """
    keys = []
    rejected = []
    longest = 0
    start = 0
    for record in data.split(b"\n"):
        end = min(start + len(record) + 1, len(data))
        if start == end:
            break
        key = None
        if end - start > len(record):
            # It has its LF: the last line may be cut short.
            try:
                body, key = checkKeyedLine(data[start:end])
            except CorruptLine:
                pass
        if key is None:
            rejected.append((start, end))
        else:
            keys.append(key)
            longest = max(longest, len(record))
        start = end
    found = spans(keys)
    if found is None:
        return None
    return len(keys), found, longest, rejected


def keyedPlaces(data, start=0):
    """
    Where the intact adds with a C{by} and C{at} among the lines of C{data}
    (LF included) are, and their keys: to look up a batch of lines kept as
    bytes (see L{keyedSpans}) add by add.

    @param start: the offset of C{data} in the log.
    @return: C{(keys, offsets, lengths)}: for each such add, its C{(by,
        at)}, its offset and its length, LF included.
    """
    keys, offsets, lengths = [], [], []
    position = 0
    for record in data.split(b"\n")[:-1]:
        line = record + b"\n"
        try:
            body, key = checkKeyedLine(line)
        except CorruptLine:
            key = None
        if key is not None:
            keys.append(key)
            offsets.append(start + position)
            lengths.append(len(line))
        position += len(line)
    return keys, offsets, lengths


# The definitions above are the reference, and what runs where
# gossip.store._speedups is not built; the C ones check each line in place.
pythonKeyedSpans = keyedSpans
pythonKeyedPlaces = keyedPlaces
if _speedups is not None:

    def keyedSpans(data):
        found = _speedups.keyedSpans(data, checkKeyedLine)
        if found is NotImplemented:
            # More origins than the C follows at once.
            return pythonKeyedSpans(data)
        return found

    def keyedPlaces(data, start=0):
        return _speedups.keyedPlaces(data, start, checkKeyedLine)

    keyedSpans.__doc__ = pythonKeyedSpans.__doc__
    keyedPlaces.__doc__ = pythonKeyedPlaces.__doc__


def _without(data, rejected):
    """
    C{data} without the lines at C{rejected}, C{(start, end)} pairs in
    order, as L{keyedSpans} gives them.
    """
    if not rejected:
        return data
    kept = []
    start = 0
    for end, after in rejected:
        kept.append(data[start:end])
        start = after
    kept.append(data[start:])
    return b"".join(kept)


class Stretch:
    """
    Lines read one after another from a log and checked at once (see
    L{keyedSpans}), kept as the bytes read, without a list of them: what a
    sender sends whole when its peer lacks every add in it.

    @ivar data: the intact adds with a C{by} and C{at}, LF included.
    @ivar spans: the L{spans} of their keys.
    @ivar longest: the length of the longest, without its LF.
    """

    __slots__ = ("data", "spans", "longest", "_count")

    def __init__(self, data, count, spans, longest):
        self.data = data
        self._count = count
        self.spans = spans
        self.longest = longest

    def __len__(self):
        return self._count

    def __iter__(self):
        """
        Each add as C{(line, (by, at))}, LF included.
        """
        lines = [line + b"\n" for line in self.data.split(b"\n")[:-1]]
        for line, body, key in checkKeyedLines(lines)[0]:
            yield line, key


def _backwards(f, end):
    """
    The bytes of C{f} before byte C{end}, a chunk of at most L{_CHUNK} at a
    time, last first.

    @return: an iterator of C{(position, chunk)}, C{position} where the
        chunk starts.
    """
    position = end
    while position > 0:
        size = min(_CHUNK, position)
        position -= size
        f.seek(position)
        yield position, f.read(size)


def _lastLineEnd(f, end):
    """
    The offset just past the last LF before byte C{end}, or 0 if none:
    found a chunk at a time, in time linear in what follows it.
    """
    for position, chunk in _backwards(f, end):
        last = chunk.rfind(b"\n")
        if last != -1:
            return position + last + 1
    return 0


def reverseEntries(f, end=None):
    """
    Read a log backwards from byte C{end} (by default, its end).

    A line longer than L{_CHUNK} is kept only while its trailer says it
    may still be an add, as L{_blocks} does forwards.

    @return: an iterator of C{(offset, record, body)} as L{entries} gives,
        last line first; an unterminated last line is not returned.
    """
    if end is None:
        end = f.seek(0, os.SEEK_END)
    # The complete lines are those before the last LF, whose own LF is
    # not part of any record.
    lineEnd = _lastLineEnd(f, end) - 1
    # The end of the line being read, last piece first, or None once it is
    # known damaged.
    pieces = []
    piecesSize = 0
    limit = None
    for _, chunk in _backwards(f, lineEnd):
        parts = chunk.split(b"\n")
        if len(parts) == 1:
            piecesSize += len(chunk)
            if pieces is not None:
                pieces.append(parts[0])
                reverse = pieces[::-1]
                judged, limit = _judge(reverse, piecesSize, limit, longestEndingWith)
                pieces = None if judged is None else judged[::-1]
            continue
        # The line being read began just after this chunk's last LF.
        parts[-1] = _finish(parts[-1], pieces, piecesSize)
        for record in reversed(parts[1:]):
            yield _reversed(lineEnd - len(record), record)
            lineEnd -= len(record) + 1
        pieces = [parts[0]]
        piecesSize = len(parts[0])
        limit = None
    if lineEnd >= 0:
        record = _finish(b"", pieces, piecesSize)
        yield _reversed(0, record)


def _finish(start, pieces, size):
    """
    The whole of a line read backwards: its C{start} and its C{pieces},
    last first, or a L{Skipped} if they were found to be damaged.
    """
    if pieces is None:
        return Skipped(len(start) + size)
    pieces.append(start)
    return b"".join(reversed(pieces))


def _reversed(offset, record):
    """
    What L{reverseEntries} gives for C{record} at C{offset}.
    """
    if type(record) is Skipped:
        return offset, record, None
    try:
        body = checkRecord(record)
    except CorruptLine:
        body = None
    return offset, record, body


class LargeLine:
    """
    An add's line too large to hold in memory: where it is in its log.

    @ivar offset: where the line starts.
    @ivar length: its length, LF included (also its C{len}).
    @ivar key: its C{(by, at)}, once known.
    """

    __slots__ = ("offset", "length", "key")

    def __init__(self, offset, length, key=None):
        self.offset = offset
        self.length = length
        self.key = key

    def __len__(self):
        return self.length


# A line's head: the hash, a space and the length, then "<".
_HEAD = _compiledOnUse(rb"([^\n]{11}) ([0-9]{1,20})", "fullmatch")
# Enough of an item to hold any escaped spelling of "by" or "at", "=" and
# a value as long as any id.
_ITEM_HEAD = 1024


class LineCheck:
    """
    The checks that make a line an intact add with a C{by} and C{at}, made
    on its bytes as they come, a piece at a time, holding none of them but
    the line's head, its C{by} and C{at} and a few bytes of the current
    item.

    @ivar size: how long the line says it is, LF included.
    @raise CorruptLine: from L{update} or L{finish}, once it is clear
        that the line is not such an add, or is not C{size} bytes long.
    """

    def __init__(self, size):
        self.size = size
        self._got = 0
        self._head = b""
        # Bytes of the body still to come, once the head is read.
        self._left = None
        self._length = None
        self._trailer = b""
        self._hash = sha256()
        self._item = b""
        self._itemLong = False
        self._itemPair = False
        self._by = self._at = None

    def update(self, data):
        """
        Check the line's next bytes.
        """
        self._got += len(data)
        if self._got > self.size:
            raise CorruptLine("longer than announced")
        while data:
            if self._left is None:
                data = self._readHead(data)
            elif self._left:
                body, data = data[: self._left], data[self._left :]
                self._left -= len(body)
                self._readBody(body)
            else:
                self._trailer += data
                if len(self._trailer) > len(self._length) + 2:
                    raise CorruptLine("not an add")
                return

    def _readHead(self, data):
        end = data.find(b"<")
        if end == -1:
            self._head += data
            if len(self._head) > 40:
                raise CorruptLine("not an add")
            return b""
        match = _HEAD(self._head + data[:end])
        if match is None:
            raise CorruptLine("not an add")
        self._digest, self._length = match.groups()
        self._left = int(self._length)
        if match.end() + 1 + self._left + len(self._length) + 2 != self.size:
            raise CorruptLine("lengths do not match the announced size")
        return data[end + 1 :]

    def _readBody(self, body):
        self._hash.update(body)
        if b">" in body or b"\n" in body:
            raise CorruptLine("not an add")
        items = body.split(b"&")
        self._extendItem(items[0])
        for item in items[1:]:
            self._endItem()
            self._extendItem(item)

    def _extendItem(self, data):
        if not self._itemPair and b"=" in data:
            self._itemPair = True
        room = _ITEM_HEAD - len(self._item)
        if len(data) > room:
            self._itemLong = True
            data = data[:room]
        self._item += data

    def _endItem(self):
        item = self._item
        if item and not self._itemPair:
            raise CorruptLine("pair without '='")
        if item:
            name = item[: item.find(b"=")]
            # A name spelled with escapes may still be by or at.
            if len(name) <= 6 and (name in (b"by", b"at") or b"%" in name):
                ((name, value),) = decodeBody(name + b"=")
                if (name == b"by" and self._by is None) or (name == b"at" and self._at is None):
                    if self._itemLong:
                        raise CorruptLine(f"its {name.decode()} is too long")
                    if name == b"by":
                        self._by = item
                    else:
                        self._at = item
        self._item = b""
        self._itemLong = self._itemPair = False

    def finish(self):
        """
        The line is complete: check it whole.

        @return: its C{(by, at)}.
        """
        if self._got != self.size or self._left != 0:
            raise CorruptLine("shorter than announced")
        self._endItem()
        if self._trailer != b">" + self._length + b"\n":
            raise CorruptLine("lengths do not match the body")
        if b2a_base64(self._hash.digest()[:9])[:11] != self._digest:
            raise CorruptLine("hash mismatch")
        if self._by is None or self._at is None:
            raise CorruptLine("no by and at")
        # Judged as the same pairs are in any add.
        key = identify(self._by + b"&" + self._at)
        if key is None:
            raise CorruptLine("no by and at")
        return key


def checkLarge(fd, line):
    """
    Check a L{LargeLine} in the log open as C{fd}, a piece at a time.

    @return: its C{(by, at)}.
    @raise CorruptLine: if it is not an intact add with a C{by} and C{at}.
    """
    check = LineCheck(line.length)
    for piece in _pieces(fd, line):
        check.update(piece)
    return check.finish()


def _pieces(fd, line):
    """
    The bytes of a L{LargeLine} in the file open as C{fd}, L{_PIECE} at a
    time.

    @raise CorruptLine: if the file ends first.
    """
    for start in range(0, line.length, _PIECE):
        piece = os.pread(fd, min(_PIECE, line.length - start), line.offset + start)
        if not piece:
            raise CorruptLine("cut short")
        yield piece


def _tornAdd(fd, start, end):
    """
    What the unfinished line from C{start} to C{end} of the log open as
    C{fd} is once an LF ends it.

    @return: if it is then an intact add, its body and L{None}; or, for a
        line longer than L{LARGE}, checked a piece at a time as a large add
        from a peer is, L{None} and its C{(by, at)}.  L{None} if it is not
        an intact add.
    """
    size = end - start + 1
    try:
        if size <= LARGE:
            return checkLine(os.pread(fd, size - 1, start) + b"\n"), None
        check = LineCheck(size)
        for offset in range(start, end, _PIECE):
            check.update(os.pread(fd, min(_PIECE, end - offset), offset))
        check.update(b"\n")
        return None, check.finish()
    except CorruptLine:
        return None


class Incoming:
    """
    A large add arriving from a peer, spooled to a file beside its log
    until it is whole, so that it is never held in memory.

    Its file, C{.LOG.gossip-incoming-XXXXXXXX}, is locked while in use;
    L{Log.removeStale} removes those left by a process that died.

    @ivar size: the line's size, LF included, as announced.
    @ivar key: its C{(by, at)}, once L{finish} has checked it.
    """

    def __init__(self, log, size):
        self.size = size
        self.key = None
        self._check = LineCheck(size)
        self._fd, self.path = _createSpool(log.path)
        flock(self._fd, LOCK_EX)

    def write(self, data):
        """
        Check and spool the add's next bytes.

        @raise CorruptLine: if it is clear that they do not make the add
            announced.
        """
        self._check.update(data)
        _writeAll(self._fd, data)

    def finish(self):
        """
        Check the add whole.

        @return: its C{(by, at)}.
        @raise CorruptLine: if it is not an intact add of the size
            announced, with a C{by} and C{at}.
        """
        self.key = self._check.finish()
        return self.key

    def copyTo(self, fd):
        """
        Write the spooled line to C{fd}, a piece at a time.

        @return: an iterator that writes one piece, L{_PIECE} bytes at
            most, each time it is advanced.
        """
        for start in range(0, self.size, _PIECE):
            piece = os.pread(self._fd, _PIECE, start)
            if not piece:
                raise OSError(f"{os.fsdecode(self.path)} was cut short")
            _writeAll(fd, piece)
            yield len(piece)

    def discard(self):
        """
        Remove the spool file.  Safe to call more than once.
        """
        if self._fd is None:
            return
        try:
            os.unlink(self.path)
        except OSError:
            pass
        os.close(self._fd)
        self._fd = None


def _incomingPrefix(name):
    return b"." + name + b".gossip-incoming-"


def _createSpool(path):
    """
    Create a new spool file beside the log at C{path}, readable by its
    owner alone (as tempfile would, which C{say} need not import).

    @return: its descriptor, open for reading and writing, and its path.
    """
    directory, name = os.path.split(path)
    prefix = os.path.join(directory, _incomingPrefix(name))
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW
    from base64 import urlsafe_b64encode

    while True:
        spool = prefix + urlsafe_b64encode(os.urandom(6))
        try:
            return os.open(spool, flags, 0o600), spool
        except FileExistsError:
            continue


class Received:
    """
    What L{Log.receive} did with the lines it was given.

    @ivar held: the C{(by, at)} of every intact line given, appended or not.
    @ivar spans: L{gossip.store.intervals.spans} of C{held}, or L{None}.
    @ivar start: the offset of the first line appended.
    @ivar count: how many lines were appended.
    @ivar lines: the lines appended, one after another from C{start}.
    @ivar keys: the C{(by, at)} of each line appended.
    @ivar corrupt: how many lines were not intact adds with a C{by} and C{at}.
    @ivar whole: whether every line in C{held} was appended.

    Lines taken whole (L{taken}) are kept as the bytes written: their
    C{lines}, C{keys} and L{places}, which a one-shot sync never asks for,
    are found only when asked for.
    """

    __slots__ = ("spans", "start", "count", "corrupt", "whole", "_held", "_lines", "_keys", "_data")

    def __init__(self, held=(), spans=None, corrupt=0):
        self.spans = spans
        self.corrupt = corrupt
        self.start = None
        self.count = 0
        self.whole = False
        self._held = list(held)
        self._lines = []
        self._keys = []
        self._data = None

    @classmethod
    def taken(cls, start, data, count, spans, corrupt=0):
        """
        Every line of C{data}, C{count} intact adds whose keys have
        C{spans}, was appended at C{start}; C{corrupt} other lines were
        given.
        """
        result = cls(spans=spans, corrupt=corrupt)
        result.start = start
        result.count = count
        result.whole = True
        result._data = data
        result._held = result._lines = result._keys = None
        return result

    def took(self, start, lines, keys):
        """
        Note that C{lines}, of C{keys}, were appended at C{start}.
        """
        self.start = start
        self.count = len(lines)
        self.whole = len(keys) == len(self._held)
        self._lines = lines
        self._keys = keys

    @property
    def held(self):
        return self.keys if self._held is None else self._held

    @property
    def lines(self):
        if self._lines is None:
            self._lines = [line + b"\n" for line in self._data.split(b"\n")[:-1]]
        return self._lines

    @property
    def keys(self):
        if self._keys is None:
            self._keys = keyedPlaces(self._data)[0]
        return self._keys

    def places(self):
        """
        The C{(by, at)}, offset and length of each line appended, as three
        lists.
        """
        if self._data is not None:
            return keyedPlaces(self._data, self.start)
        lengths = list(map(len, self._lines))
        return self._keys, list(accumulate(lengths, initial=self.start))[:-1], lengths

    @property
    def end(self):
        """
        The offset just past the last line appended.
        """
        if self._data is not None:
            return self.start + len(self._data)
        return self.start + sum(map(len, self._lines))

    @property
    def appended(self):
        """
        C{(offset, line, (by, at))} of each line appended.
        """
        offsets = accumulate(map(len, self.lines), initial=self.start)
        return list(zip(offsets, self.lines, self.keys))


class State:
    """
    What a log holds, as of byte C{offset} (just after a complete line).

    @ivar identity: the node's identity, or L{None} before the identity add.
    @ivar have: for each origin C{by}, the L{Intervals} of C{at} held.
    @ivar intact: whether any intact add has been read.
    @ivar damaged: how many corrupt lines were read.
    """

    __slots__ = ("identity", "have", "offset", "intact", "damaged")

    def __init__(self, identity=None, have=None, offset=0, intact=False, damaged=0):
        self.identity = identity
        self.have = {} if have is None else have
        self.offset = offset
        self.intact = intact
        self.damaged = damaged

    def nextAt(self):
        """
        The C{at} of this node's next add: one past the largest it holds.
        """
        mine = self.have.get(self.identity)
        return 0 if mine is None else mine.end()

    def holds(self, by, at):
        """
        Whether the add C{(by, at)} is in the log.
        """
        held = self.have.get(by)
        return held is not None and at in held

    def absorb(self, body, key=False):
        """
        Account for one intact add's body, found at the end of the log.

        @param key: its C{(by, at)} or L{None} for none, if already known.
        """
        self.intact = True
        if self.identity is None and (body.startswith(b"I=") or b"&I=" in body):
            names = dict(decodeBody(body))
            if b"I" in names and b"by" not in names:
                self.identity = names[b"I"]
                return
        if key is False:
            try:
                key = identify(body)
            except CorruptLine:
                return
        if key is not None:
            heldBy(self.have, key[0]).add(key[1])

    def catchUp(self, f, size):
        """
        Read whatever complete lines the file has past C{offset}.
        """
        if size <= self.offset:
            return
        end = self.offset
        for offset, block in _blocks(f, self.offset, large=LARGE):
            if type(block) is Skipped:
                self.damaged += 1
                end = offset + len(block) + 1
                continue
            if isinstance(block, LargeLine):
                end = offset + block.length
                try:
                    key = checkLarge(f.fileno(), block)
                except CorruptLine:
                    key = None
                if key is None:
                    self.damaged += 1
                else:
                    # Checked a piece at a time; never an identity add.
                    self.absorb(b"", key)
                continue
            end = offset + len(block) + 1
            records = block.split(b"\n")
            keyed, rejected = checkKeyedRecords(records)
            if not rejected:
                # The usual block: every line an intact add with a by and an
                # at, none of them an identity, taken in a few steps.
                self._absorbKeys([key for _, _, key in keyed])
                continue
            for body in checkRecords(records):
                if body is None:
                    self.damaged += 1
                else:
                    self.absorb(body)
        self.offset = end

    def _absorbKeys(self, keys):
        """
        Account for intact adds, none of them an identity, by their keys.
        """
        if not keys:
            return
        self.intact = True
        found = spans(keys)
        if found is None:
            addKeys(self.have, keys)
        else:
            addSpans(self.have, found)


class Scan:
    """
    A verification pass over a log up to byte C{end}: every line checked, a
    slice at a time, for what is intact and what is damaged.

    @ivar state: what the intact lines read so far hold (its C{damaged},
        how many lines were not intact adds).
    @ivar regions: C{[offset, length]} of each damaged stretch of the log
        read so far: corrupt lines one after another make one region.
    """

    __slots__ = ("state", "end", "regions")

    def __init__(self, end):
        self.state = State()
        self.end = end
        self.regions = []

    @property
    def done(self):
        """
        Whether the pass has reached its end.
        """
        return self.state.offset >= self.end

    def step(self, fd, size):
        """
        Check the lines in the next C{size} bytes (or the next line, if it
        is longer) of the file open as C{fd}.

        @return: how many bytes were checked.
        """
        state = self.state
        start = state.offset
        want = min(size, self.end - start)
        data = os.pread(fd, want, start)
        last = data.rfind(b"\n")
        if last == -1:
            data, last = self._longLine(fd, data)
        if last == -1:
            # The file was cut short under the pass: nothing more to check.
            self.end = start
            return 0
        records = data[:last].split(b"\n")
        offset = start
        for record, body in zip(records, checkRecords(records)):
            length = len(record) + 1
            if body is None:
                self._damaged(offset, length)
            else:
                state.absorb(body)
            offset += length
        state.offset = offset
        return offset - start

    def _longLine(self, fd, data):
        """
        Read on past C{data}, the start of one line longer than a slice, to
        the end of that line.

        @return: the bytes read, and the offset of the line's LF in them (-1
            if the pass's end came first).
        """
        start = self.state.offset
        parts = [data]
        read = len(data)
        while read < self.end - start:
            more = os.pread(fd, min(_CHUNK, self.end - start - read), start + read)
            if not more:
                break
            parts.append(more)
            found = more.find(b"\n")
            if found != -1:
                return b"".join(parts), read + found
            read += len(more)
        return b"".join(parts), -1

    def _damaged(self, offset, length):
        self.state.damaged += 1
        regions = self.regions
        if regions and sum(regions[-1]) == offset:
            regions[-1][1] += length
        else:
            regions.append([offset, length])

    def missing(self):
        """
        For each origin, the L{Intervals} of C{at}s missing from its run
        below the largest held: lost to damage, or not yet synced.
        """
        result = {}
        for by, held in self.state.have.items():
            lacking = Intervals([(0, held.end())]).difference(held)
            if lacking.ranges():
                result[by] = lacking
        return result


def _fingerprint(fd, st, offset):
    """
    Where a log file is, how large and how recently written, and what its
    head and the bytes before C{offset} hold, to tell whether cached state
    still describes it.
    """
    head = os.pread(fd, min(_PRINT, offset), 0)
    start = max(0, offset - _PRINT)
    tail = os.pread(fd, offset - start, start)
    return b"%d %d %d %d %d %s %s" % (
        st.st_dev,
        st.st_ino,
        offset,
        st.st_size,
        st.st_mtime_ns,
        sha256(head).hexdigest().encode("ascii"),
        sha256(tail).hexdigest().encode("ascii"),
    )


def _describes(fingerprint, now):
    """
    Whether a log whose fingerprint was C{fingerprint} could have become
    C{now}, the fingerprint of the same bytes of it as they are.

    A log only grows: the same place, head and bytes before the offset, and
    either more bytes than were recorded, or as many and the same
    modification time (a file changed in place keeps its size but not its
    modification time).
    """
    old = fingerprint.split(b" ")
    new = now.split(b" ")
    if len(old) != 7 or old[:3] != new[:3] or old[5:] != new[5:]:
        return False
    size, newSize = int(old[3]), int(new[3])
    return newSize > size or (newSize == size and old[4] == new[4])


def _sampleOffsets(offset):
    """
    Where to check a cache against its log: the head, the bytes before
    C{offset}, and L{_SAMPLES} random places between.
    """
    places = [0, max(0, offset - _PRINT)]
    if offset > 2 * _PRINT:
        for _ in range(_SAMPLES):
            places.append(int.from_bytes(os.urandom(8), "little") % offset)
    return places


def _agrees(fd, state):
    """
    Whether a sample of the log's lines agrees with C{state}, as read from
    a cache: each intact add sampled is held (so the next C{at} cannot
    collide with one in the log), the first line is the identity add the
    cache names, and no line is damaged unless the cache knows of damage.
    """
    for place in _sampleOffsets(state.offset):
        data = os.pread(fd, min(_PRINT, state.offset - place), place)
        end = data.rfind(b"\n")
        start = 0 if place == 0 else data.find(b"\n") + 1
        if end < start:
            continue
        records = data[start:end].split(b"\n")
        bodies = checkRecords(records)
        if not state.damaged and None in bodies:
            return False
        intact = [record for record, body in zip(records, bodies) if body is not None]
        if place == 0 and bodies and bodies[0] is not None:
            # The log's first add names its identity, and has no (by, at).
            if not _identifies(bodies[0], state.identity):
                return False
            intact = intact[1:]
        # The keyed check, in C where it is built, finds each add's (by, at)
        # without the regular expressions that identify() would compile.
        keyed, _ = checkKeyedRecords(intact)
        if not all(state.holds(*key) for _, _, key in keyed):
            return False
    return True


def _identifies(body, identity):
    """
    Whether C{body}, a log's first add, names C{identity}.
    """
    names = dict(decodeBody(body))
    return b"by" not in names and names.get(b"I") == identity


def _dumpState(fingerprint, state):
    lines = [
        _CACHE_MAGIC,
        fingerprint,
        b"%d %d %s"
        % (
            int(state.intact),
            state.damaged,
            b"-" if state.identity is None else state.identity.hex().encode("ascii"),
        ),
    ]
    for by, held in state.have.items():
        lines.append(
            by.hex().encode("ascii")
            + b" "
            + b",".join(b"%d-%d" % pair for pair in held.ranges())
        )
    data = b"\n".join(lines) + b"\n"
    # A cache cut short at a line's end would still parse, and lose origins.
    return data + sha256(data).hexdigest().encode("ascii") + b"\n"


def _loadState(data):
    data, digest = data[:-65], data[-65:]
    if digest != sha256(data).hexdigest().encode("ascii") + b"\n":
        raise ValueError("not a cache")
    lines = data.split(b"\n")
    if lines[0] != _CACHE_MAGIC:
        raise ValueError("not a cache")
    fingerprint = lines[1]
    intact, damaged, identity = lines[2].split(b" ")
    have = {}
    for line in lines[3:-1]:
        by, ranges = line.split(b" ")
        have[bytes.fromhex(by.decode("ascii"))] = Intervals(
            tuple(map(int, pair.split(b"-"))) for pair in ranges.split(b",")
        )
    state = State(
        identity=None if identity == b"-" else bytes.fromhex(identity.decode("ascii")),
        have=have,
        offset=int(fingerprint.split(b" ")[2]),
        intact=bool(int(intact)),
        damaged=int(damaged),
    )
    return fingerprint, state


def _writeAll(fd, data):
    view = memoryview(data)
    while view:
        try:
            written = os.write(fd, view)
        except InterruptedError:
            continue
        view = view[written:]


# What a path is, when it is not a regular file.
_KINDS = [
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a device"),
    (stat.S_ISBLK, "a device"),
    (stat.S_ISSOCK, "a socket"),
]


def _notALogFile(path, mode):
    """
    A L{LogError} saying that C{path}, whose C{st_mode} is C{mode}, is not a
    regular file, or L{None} if it is one.
    """
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return LogError(f"{os.fsdecode(path)}: {os.strerror(errno.EISDIR)}")
    kind = next((name for isKind, name in _KINDS if isKind(mode)), "not a file")
    return LogError(f"{os.fsdecode(path)}: not a regular file ({kind})")


def _checkKind(path, missing=False):
    """
    Refuse C{path} unless it is a regular file, before it is opened: opening
    a FIFO waits for a writer, and opening a device may do anything.

    @param missing: whether a missing file is allowed (it will be created).
    @raise LogError: if it is not a regular file, or cannot be looked at.
    """
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        if missing:
            return
        raise _userError(path, FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT))) from None
    except OSError as e:
        raise _userError(path, e) from None
    error = _notALogFile(path, mode)
    if error is not None:
        raise error


# A file of less than this, holding no LF, may be a log whose identity add
# its creator was killed while writing.
_TORN_IDENTITY_SIZE = 512
# The beginning of an identity add, cut anywhere after its hash: a file
# of a few letters is more likely someone's than a log cut that short.
_TORN_IDENTITY = _compiledOnUse(
    rb"[A-Za-z0-9+/]{11} (?:[0-9]+(?:<(?:I(?:=[^&<>\n]*+(?:>[0-9]*)?)?)?)?)?", "fullmatch"
)


def _userError(path, error):
    """
    A L{LogError} saying why C{path} could not be used.
    """
    reason = error.strerror or str(error)
    return LogError(f"{os.fsdecode(path)}: {reason}")


class Log:
    """
    A log file, which may be shared with any number of other processes.

    @ivar path: the log file's path.
    @ivar fsync: whether appends return only once the data is on disk.
    """

    def __init__(self, path, fsync=False):
        self.path = os.fsencode(path)
        self.fsync = fsync
        directory, name = os.path.split(self.path)
        self.cachePath = os.path.join(directory, b"." + name + b".gossip-cache")
        self._known = None
        self._saved = float("-inf")
        # A long-lived writer (a daemon receiving many batches) sets this to
        # write the cache at most this often, and calls saveCache() when it
        # stops; the cache is only ever an optimisation, so a stale one just
        # costs a shorter rescan.
        self.cacheDelay = None

    def open(self):
        """
        Open the log for reading.

        @raise LogError: if it is missing, unreadable or not a file.
        """
        _checkKind(self.path)
        try:
            f = open(self.path, "rb")
        except OSError as e:
            raise _userError(self.path, e) from None
        error = _notALogFile(self.path, os.fstat(f.fileno()).st_mode)
        if error is not None:
            f.close()
            raise error
        return f

    def checkUsable(self):
        """
        Refuse a log that could not be appended to or created, as far as
        that can be told without writing anything: one that is not a
        regular file, that cannot be read and written, or whose directory
        is missing or cannot be written to.  Whether a file holds a gossip
        log is found only when it is read.

        @raise LogError: saying why.
        """
        _checkKind(self.path, missing=True)
        if os.path.exists(self.path):
            target, mode = self.path, os.R_OK | os.W_OK
        else:
            target, mode = os.path.dirname(os.path.abspath(self.path)), os.W_OK | os.X_OK
            if not os.path.isdir(target):
                raise _userError(self.path, FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT)))
        if not os.access(target, mode):
            raise _userError(self.path, PermissionError(errno.EACCES, os.strerror(errno.EACCES)))

    def state(self, create=False):
        """
        What the log holds now, read under the lock.

        @param create: create the log, and its identity, if it has none.
        @raise LogError: if the log cannot be read (or created).
        """
        return self._locked(self._currentState, create=create)

    def say(self, pairs):
        """
        Append one add by this node, creating the log and its identity if
        needed.

        @param pairs: the add's (name, value) byte-string pairs, none of them
            with a reserved name.
        @return: the line appended, LF included.
        @raise LogError: if a name is reserved or the log cannot be written.
        """
        pairs = list(pairs)
        for name, value in pairs:
            if name in RESERVED:
                raise LogError(
                    f"{name.decode('ascii')!r} is a reserved name (by, at and I are)"
                )

        def append(fd, state, torn):
            self._ensureIdentity(state)
            at = state.nextAt()
            if not isSerial(b"%d" % (at,)):
                raise LogError(
                    f"{os.fsdecode(self.path)}: this node has no more serial numbers "
                    "(an at of 2**63 - 1 is in the log)"
                )
            line = encodeAdd([(b"by", state.identity), (b"at", b"%d" % (at,))] + pairs)
            # With its key given, the line just made is not checked again,
            # which would import and compile the regular expressions.
            self._append(fd, state, torn, line, [(state.identity, at)])
            return line

        return self._locked(append, create=True)

    def receive(self, data):
        """
        Append those of the lines in C{data} (raw log lines, LF included,
        from a peer) that are intact adds with a C{by} and C{at} the log
        does not yet hold.

        @return: a L{Received} saying what was appended, and where.
        @raise LogError: if the log cannot be written.
        """
        # Checked before the lock is taken: the check needs no state.
        run = keyedSpans(data)
        if run is not None and run[0]:
            count, heldSpans, _, rejected = run
            taken = _without(data, rejected)

            def appendAll(fd, state, torn):
                self._ensureIdentity(state)
                if overlapping(state.have, heldSpans):
                    return None
                start = self._append(fd, state, torn, taken, keySpans=heldSpans)
                return Received.taken(start, taken, count, heldSpans, len(rejected))

            result = self._locked(appendAll, create=True)
            if result is not None:
                return result
        lines = [line + b"\n" for line in data.split(b"\n")]
        tail = lines.pop()
        if tail != b"\n":
            # A line cut short: damaged.
            lines.append(tail[:-1])
        checked, corrupt = checkKeyedLines(lines)
        held = [entry[2] for entry in checked]
        heldSpans = spans(held)

        def append(fd, state, torn):
            self._ensureIdentity(state)
            result = Received(held, heldSpans, corrupt)
            have = state.have
            if heldSpans is not None and not overlapping(have, heldSpans):
                # Each origin's serials follow one another and are all new,
                # as when a peer sends what this log lacks: take them all.
                accepted = [entry[0] for entry in checked]
                keys = held
            else:
                accepted = []
                keys = []
                fresh = set()
                for line, body, key in checked:
                    mine = have.get(key[0])
                    if (mine is None or key[1] not in mine) and key not in fresh:
                        fresh.add(key)
                        accepted.append(line)
                        keys.append(key)
            if accepted:
                start = self._append(
                    fd,
                    state,
                    torn,
                    b"".join(accepted),
                    keys,
                    heldSpans if keys is held else None,
                )
                result.took(start, accepted, keys)
            return result

        return self._locked(append, create=True)

    def incoming(self, size):
        """
        Begin receiving a large add of C{size} bytes, LF included, from a
        peer: see L{Incoming} and L{receiveIncoming}.

        @raise LogError: if its spool file cannot be made.
        """
        try:
            return Incoming(self, size)
        except OSError as e:
            raise _userError(os.path.dirname(self.path) or b".", e) from None

    def receiveIncoming(self, incoming):
        """
        Append a large add from a peer, whole and checked (see
        L{Incoming.finish}), copied from its spool file, unless the log
        already holds it (it may have arrived meanwhile by another way).

        @return: a L{Received} as L{receive} gives, whose C{lines} hold the
            add's L{LargeLine} if it was appended.
        @raise LogError: if the log cannot be written.
        """
        steps = self.copyIncoming(incoming)
        while True:
            try:
                next(steps)
            except StopIteration as done:
                return done.value

    def copyIncoming(self, incoming):
        """
        L{receiveIncoming} a piece at a time, for a caller that must not
        wait for the whole copy: a generator that writes at most L{_PIECE}
        bytes of the add each time it is advanced and returns the
        L{Received}.  The log stays locked from its first step to its
        last, so that no other writer comes between the pieces; if it is
        closed before the last, the log is cut back to where it was.

        @raise LogError: if the log cannot be written.
        """
        key = incoming.key
        with self._lock(create=True) as (fd, state, torn):
            self._ensureIdentity(state)
            result = Received([key])
            if state.holds(*key):
                return result
            if torn:
                # A writer died mid-add: end its line so that ours
                # stands alone.
                _writeAll(fd, b"\n")
                state.damaged += 1
            start = os.fstat(fd).st_size
            try:
                for written in incoming.copyTo(fd):
                    yield written
            except BaseException:
                # Abandoned (or failed) part way: leave no part of it.
                os.ftruncate(fd, start)
                raise
            if self.fsync:
                os.fdatasync(fd)
            state.intact = True
            addKeys(state.have, [key])
            st = os.fstat(fd)
            state.offset = st.st_size
            self._save(fd, st, state)
            result.took(start, [LargeLine(start, incoming.size, key)], [key])
            return result

    def removeStale(self):
        """
        Remove the spool files of large adds (see L{Incoming}) that a
        process which died left beside the log; those in use are locked.

        @return: how many were removed.
        """
        directory, name = os.path.split(self.path)
        directory = directory or b"."
        prefix = _incomingPrefix(name)
        removed = 0
        try:
            names = os.listdir(directory)
        except OSError:
            return 0
        for found in names:
            if not found.startswith(prefix):
                continue
            path = os.path.join(directory, found)
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
            except OSError:
                continue
            try:
                flock(fd, LOCK_EX | LOCK_NB)
                os.unlink(path)
                removed += 1
            except OSError:
                # Locked: a live session is still receiving it.
                pass
            finally:
                os.close(fd)
        return removed
    def check(self):
        """
        Verify every line of the log, and make its cache describe what the
        verification found: a log damaged under its cache then lacks, to
        every later reader and sync, the adds it lost.

        @return: the finished L{Scan}.
        @raise LogError: if the log cannot be read.
        """

        def verify(fd, state, torn):
            scan = Scan(os.fstat(fd).st_size)
            while not scan.done:
                scan.step(fd, _CHUNK)
            self._save(fd, os.fstat(fd), scan.state)
            return scan

        return self._locked(verify, create=False, trust=False)

    def forget(self, lost, damaged=0):
        """
        Note that the log no longer holds the adds C{lost} (found damaged by
        a verification pass), so that it takes them again from a peer.

        @param lost: a map from each origin to the L{Intervals} of C{at}s.
        @param damaged: how many damaged lines the pass found.
        """

        def drop(fd, state, torn):
            for by, held in lost.items():
                mine = state.have.get(by)
                if mine is not None:
                    state.have[by] = mine.difference(held)
            state.damaged = max(state.damaged, damaged)
            self._save(fd, os.fstat(fd), state)

        self._locked(drop, create=False)

    def cutUnfinishedLine(self):
        """
        Cut an unfinished last line that is no add (a writer killed part way
        through writing left it) off the end of a log that no other process
        uses yet: an unfinished clone.  Any other log keeps such a line, its
        next append ending it as one damaged line, since a reader may be
        reading it.

        @return: how many bytes were cut.
        @raise LogError: if the log cannot be written.
        """

        def cut(fd, state, torn):
            if not torn:
                return 0
            size = os.fstat(fd).st_size
            os.ftruncate(fd, state.offset)
            return size - state.offset

        return self._locked(cut, create=True)

    def _ensureIdentity(self, state):
        if state.identity is not None:
            return
        raise LogError(
            f"{os.fsdecode(self.path)}: not a gossip log (it has adds but no "
            "identity add)"
        )

    def _currentState(self, fd, state, torn):
        return state

    def _locked(self, action, create, trust=True):
        """
        Call C{action(fd, state, torn)} with the log locked (see L{_lock}).
        """
        with self._lock(create, trust) as locked:
            return action(*locked)

    @contextmanager
    def _lock(self, create, trust=True):
        """
        Hold the log locked, giving C{(fd, state, torn)}: C{state} up to
        date and C{torn} true when the file ends in an unfinished line.

        @param create: create the log, and its identity, if it has none;
            and end an unfinished last line that is an add but for its LF
            (see L{_endTornAdd}), so that C{torn} is true only of a damaged
            one.
        @param trust: whether to take C{state} from the cache and what this
            object knew; if not, C{state} is empty and C{action} reads the
            log itself.
        """
        _checkKind(self.path, missing=create)
        flags = os.O_RDWR | os.O_APPEND | os.O_CLOEXEC
        if create:
            flags |= os.O_CREAT
        try:
            fd = os.open(self.path, flags, 0o666)
        except OSError as e:
            raise _userError(self.path, e) from None
        try:
            st = os.fstat(fd)
            error = _notALogFile(self.path, st.st_mode)
            if error is not None:
                raise error
            flock(fd, LOCK_EX)
            try:
                st = os.fstat(fd)
                state = self._refresh(fd, st) if trust else State()
                torn = st.st_size > state.offset
                if torn and create:
                    torn = not self._endTornAdd(fd, st.st_size, state)
                if create and not state.intact and state.identity is None:
                    if state.damaged or (torn and not self._tornIdentity(fd, st)):
                        # Bytes, none of them an add: some other file.
                        raise LogError(
                            f"{os.fsdecode(self.path)}: not a gossip log (no intact add in it)"
                        )
                    self._append(fd, state, torn, encodeAdd([(b"I", newIdentity())]))
                    torn = False
                    if self.fsync:
                        self._syncDirectory()
                yield fd, state, torn
            except OSError as e:
                raise _userError(self.path, e) from None
            finally:
                flock(fd, LOCK_UN)
        finally:
            os.close(fd)

    @staticmethod
    def _tornIdentity(fd, st):
        """
        Whether the log, which holds no LF, is the beginning of an identity
        add: a new log whose creator was killed while writing it.
        """
        if st.st_size > _TORN_IDENTITY_SIZE:
            return False
        return _TORN_IDENTITY(os.pread(fd, st.st_size, 0)) is not None

    def _endTornAdd(self, fd, size, state):
        """
        End the log's unfinished last line with an LF, and count it in
        C{state}, if that makes it an intact add.

        A writer killed just as it came to its add's LF leaves every other
        byte of the add.  Whatever LF is written next makes that line
        intact for every reader, so it is counted now, before anything is
        chosen or appended: else this node's next C{at}, or an add from a
        peer, would be written a second time.

        @param size: the log's size, past C{state.offset}.
        @return: whether the line was ended; if not, it is not an add, and
            the next append ends it as one damaged line.
        @raise LogError: if it is an add but not an identity add, and the
            log has no identity: the log is left as it is.
        """
        found = _tornAdd(fd, state.offset, size)
        if found is None:
            return False
        body, key = found
        if state.identity is None:
            probe = State()
            if body is not None:
                probe.absorb(body)
            if probe.identity is None:
                # An add before any identity add: not a log to write to,
                # so it is left as it is.
                self._ensureIdentity(state)
        _writeAll(fd, b"\n")
        if key is not None:
            # A large add, never held whole: known by its key alone, as
            # one copied in from a peer is.
            state.intact = True
            addKeys(state.have, [key])
        else:
            state.absorb(body)
        st = os.fstat(fd)
        state.offset = st.st_size
        self._save(fd, st, state)
        return True

    def _append(self, fd, state, torn, data, keys=None, keySpans=None):
        """
        Write C{data}, intact adds one after another, at the end of the log.

        @param keys: for adds from a peer, the C{(by, at)} of each line.
        @param keySpans: for adds from a peer, the L{spans} of their keys,
            in place of C{keys} or beside them.
        @return: the offset of the first line.
        """
        start = os.fstat(fd).st_size + torn
        # A writer died mid-add: end its line so that ours stands alone.
        _writeAll(fd, b"\n" + data if torn else data)
        if self.fsync:
            os.fdatasync(fd)
        if torn:
            state.damaged += 1
        if (keys is not None or keySpans is not None) and state.identity is not None:
            # Adds from a peer: nothing to learn from them but their keys.
            state.intact = True
            if keySpans is None:
                addKeys(state.have, keys)
            else:
                addSpans(state.have, keySpans)
        else:
            bodies = [checkLine(line + b"\n") for line in data.split(b"\n")[:-1]]
            if keys is None:
                keys = [False] * len(bodies)
            for body, key in zip(bodies, keys):
                state.absorb(body, key)
        st = os.fstat(fd)
        state.offset = st.st_size
        self._save(fd, st, state)
        return start

    def _syncDirectory(self):
        directory = os.open(os.path.dirname(self.path) or b".", os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)

    def _refresh(self, fd, st):
        """
        The log's state, from what this object or the cache knew if that
        still describes the file, then brought up to its end.
        """
        state = None
        if self._known is not None:
            fingerprint, state = self._known
            if not self._stillValid(fd, st, fingerprint, state):
                state = None
        if state is None:
            try:
                with open(self.cachePath, "rb") as cache:
                    fingerprint, state = _loadState(cache.read())
            except (OSError, ValueError, OverflowError):
                state = None
            else:
                # What another process wrote is checked against the log
                # itself too: a cache copied, restored or forged must not
                # be trusted where the log says otherwise.
                if not (self._stillValid(fd, st, fingerprint, state) and _agrees(fd, state)):
                    state = None
        if state is None:
            state = State()
        offset = state.offset
        with open(fd, "rb", closefd=False) as f:
            state.catchUp(f, st.st_size)
        if state.offset != offset and state.intact:
            # A file with no add in it is not worth a cache, and may well
            # not be a log: say refuses it, and should leave nothing behind.
            self._save(fd, st, state)
        return state

    @staticmethod
    def _stillValid(fd, st, fingerprint, state):
        return state.offset <= st.st_size and _describes(
            fingerprint, _fingerprint(fd, st, state.offset)
        )

    def _save(self, fd, st, state):
        """
        Remember C{state}; write it to the cache file too unless this
        object wrote it less than a second ago (see L{saveCache}).
        """
        self._known = _fingerprint(fd, st, state.offset), state
        now = monotonic()
        if self.cacheDelay is None or now - self._saved >= self.cacheDelay:
            self._saved = now
            self.saveCache()

    def saveCache(self):
        """
        Write what this object last knew of the log to the cache file.
        """
        if self._known is None:
            return
        fingerprint, state = self._known
        temporary = self.cachePath + b".%d" % (os.getpid(),)
        try:
            with open(temporary, "wb") as cache:
                cache.write(_dumpState(fingerprint, state))
            os.replace(temporary, self.cachePath)
        except OSError:
            # The cache only saves time; a log in a read-only directory
            # is rescanned instead.
            try:
                os.unlink(temporary)
            except OSError:
                pass
