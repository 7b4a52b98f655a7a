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

import os
import re
from contextlib import contextmanager
from base64 import urlsafe_b64encode
from binascii import b2a_base64
from fcntl import LOCK_EX, LOCK_NB, LOCK_UN, flock
from hashlib import sha256
from itertools import accumulate
from time import monotonic

from gossip.store.format import (
    CorruptLine,
    checkKeyedLines,
    checkKeyedRecords,
    checkLine,
    checkRecord,
    checkRecords,
    decodeBody,
    encodeAdd,
    identify,
)
from gossip.store.intervals import Intervals, addKeys, addSpans, overlapping, spans

__all__ = [
    "LARGE",
    "RESERVED",
    "Incoming",
    "LargeLine",
    "LineCheck",
    "Log",
    "LogError",
    "Received",
    "State",
    "checkLarge",
    "entries",
    "keyedBlocks",
    "newIdentity",
    "reverseEntries",
]

RESERVED = frozenset((b"by", b"at", b"I"))

_CHUNK = 1 << 20
# How much of the log's head and of the bytes before its scanned offset the
# cache fingerprints, to notice a log replaced or rewritten under it.
_PRINT = 4096
_CACHE_MAGIC = b"gossip-cache 2"
# Lines longer than this are found, checked and sent without being held in
# memory whole (see LargeLine).
LARGE = 1 << 20
# How much of a large line is read, checked or copied at a time.
_PIECE = 1 << 18


class LogError(Exception):
    """
    Something about a log file that its user must fix: the message is
    suitable to print as it is.
    """


def newIdentity():
    """
    A new node identity: 120 random bits, URL-safe base64 (no padding).
    """
    return urlsafe_b64encode(os.urandom(15))


def _blocks(f, start, size=None, large=None):
    """
    Read a log forwards from byte C{start} a block at a time.

    @param large: if given, a line longer than this many bytes is not read
        into memory whole but given as a L{LargeLine}, without its key, in
        place of a block.
    @return: an iterator of C{(offset, block)}: complete lines from
        C{offset}, joined by LF, without the last one's LF.
    """
    if size is None:
        size = _CHUNK
    f.seek(start)
    offset = start
    read = f.read
    pending = []
    held = 0
    data = read(size)
    while data:
        last = data.rfind(b"\n")
        if last != -1:
            pending.append(data[:last])
            block = b"".join(pending)
            pending = [data[last + 1 :]]
            held = len(pending[0])
            yield offset, block
            offset += len(block) + 1
        else:
            pending.append(data)
            held += len(data)
            if large is not None and held > large:
                # One line, longer than the caller will hold: note where it
                # is and read on past its end.
                rest, length = _pastLine(read, size)
                if rest is None:
                    return
                length += held
                yield offset, LargeLine(offset, length)
                offset += length
                pending = []
                held = 0
                if rest:
                    data = rest
                    continue
        data = read(size)


def _pastLine(read, size):
    """
    Read on past the end of the line being read.

    @return: what was read after the line's LF, and how many bytes were
        read up to and including that LF; or C{(None, None)} if the file
        ends first.
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
        line, where C{record} is the line without its LF and C{body} is the
        add's body, or L{None} when the line is not an intact add.  It ends
        at the last LF: an unterminated last line is still being written
        (or was torn), and is not returned.
    """
    for offset, block in _blocks(f, start, large=large):
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
    @return: an iterator of lists, a block's worth at a time, of
        C{(record, body, (by, at))} for each intact add with a C{by} and
        C{at}; or, for a line longer than C{large} that is such an add, its
        L{LargeLine}.  Blocks are read C{size} bytes at a time: smaller than
        a reader's, so that a sender checking one does not keep its peer
        waiting long.
    """
    for offset, block in _blocks(f, start, size, large):
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
        checked, rejected = checkKeyedRecords(block.split(b"\n"))
        yield checked


def reverseEntries(f, end=None):
    """
    Read a log backwards from byte C{end} (by default, its end).

    @return: an iterator of C{(offset, record, body)} as L{entries} gives,
        last line first; an unterminated last line is not returned.
    """
    if end is None:
        end = f.seek(0, os.SEEK_END)
    position = end
    # Bytes from position up to the first line not yet returned.
    buffer = b""
    finished = False
    while position > 0:
        size = min(_CHUNK, position)
        position -= size
        f.seek(position)
        buffer = f.read(size) + buffer
        if not finished:
            last = buffer.rfind(b"\n")
            if last == -1:
                continue
            buffer = buffer[: last + 1]
            finished = True
        if position == 0:
            complete, buffer, base = buffer, b"", 0
        else:
            # What comes before the first LF belongs to an earlier line.
            first = buffer.find(b"\n")
            complete, buffer = buffer[first + 1 :], buffer[: first + 1]
            base = position + first + 1
        records = complete.split(b"\n")
        records.pop()
        offset = base + len(complete)
        for record in reversed(records):
            offset -= len(record) + 1
            try:
                body = checkRecord(record)
            except CorruptLine:
                body = None
            yield offset, record, body


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
_HEAD = re.compile(rb"([^\n]{11}) ([0-9]{1,20})").fullmatch
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
    @ivar lines: the lines appended, one after another from C{start}.
    @ivar keys: the C{(by, at)} of each line appended.
    @ivar corrupt: how many lines were not intact adds with a C{by} and C{at}.
    """

    __slots__ = ("held", "spans", "start", "lines", "keys", "corrupt")

    def __init__(self):
        self.held = []
        self.spans = None
        self.start = None
        self.lines = []
        self.keys = []
        self.corrupt = 0

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
            held = self.have.get(key[0])
            if held is None:
                held = self.have[key[0]] = Intervals()
            held.add(key[1])

    def catchUp(self, f, size):
        """
        Read whatever complete lines the file has past C{offset}.
        """
        if size <= self.offset:
            return
        end = self.offset
        for offset, record, body in entries(f, self.offset, LARGE):
            if isinstance(record, LargeLine):
                end = offset + record.length
                if record.key is None:
                    self.damaged += 1
                else:
                    # Checked a piece at a time; never an identity add.
                    self.absorb(b"", record.key)
                continue
            end = offset + len(record) + 1
            if body is None:
                self.damaged += 1
            else:
                self.absorb(body)
        self.offset = end


def _fingerprint(fd, st, offset):
    """
    Where a log file is and what its head and the bytes before C{offset}
    hold, to tell whether cached state still describes it.
    """
    head = os.pread(fd, min(_PRINT, offset), 0)
    start = max(0, offset - _PRINT)
    tail = os.pread(fd, offset - start, start)
    return b"%d %d %d %s %s" % (
        st.st_dev,
        st.st_ino,
        offset,
        sha256(head).hexdigest().encode("ascii"),
        sha256(tail).hexdigest().encode("ascii"),
    )


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
        try:
            f = open(self.path, "rb")
        except OSError as e:
            raise _userError(self.path, e) from None
        if not os.path.stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            f.close()
            raise LogError(f"{os.fsdecode(self.path)}: not a regular file")
        return f

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
            line = encodeAdd(
                [(b"by", state.identity), (b"at", b"%d" % (state.nextAt(),))] + pairs
            )
            self._append(fd, state, torn, [line])
            return line

        return self._locked(append, create=True)

    def receive(self, lines):
        """
        Append those of C{lines} (raw log lines, LF included, from a peer)
        that are intact adds with a C{by} and C{at} the log does not yet
        hold.

        @return: a L{Received} saying what was appended, and where.
        @raise LogError: if the log cannot be written.
        """

        # Checked before the lock is taken: the check needs no state.
        checked, corrupt = checkKeyedLines(lines)
        held = [entry[2] for entry in checked]
        heldSpans = spans(held)

        def append(fd, state, torn):
            self._ensureIdentity(state)
            result = Received()
            result.held = held
            result.spans = heldSpans
            result.corrupt = corrupt
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
                result.start = self._append(
                    fd, state, torn, accepted, keys, heldSpans if keys is held else None
                )
                result.lines = accepted
                result.keys = keys
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
            result = Received()
            result.held = [key]
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
            result.start = start
            result.lines = [LargeLine(start, incoming.size, key)]
            result.keys = [key]
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

    def _ensureIdentity(self, state):
        if state.identity is not None:
            return
        raise LogError(
            f"{os.fsdecode(self.path)}: not a gossip log (it has adds but no "
            "identity add)"
        )

    def _currentState(self, fd, state, torn):
        return state

    def _locked(self, action, create):
        """
        Call C{action(fd, state, torn)} with the log locked (see L{_lock}).
        """
        with self._lock(create) as locked:
            return action(*locked)

    @contextmanager
    def _lock(self, create):
        """
        Hold the log locked, giving C{(fd, state, torn)}: C{state} up to
        date and C{torn} true when the file ends in an unfinished line.
        """
        flags = os.O_RDWR | os.O_APPEND | os.O_CLOEXEC
        if create:
            flags |= os.O_CREAT
        try:
            fd = os.open(self.path, flags, 0o666)
        except OSError as e:
            raise _userError(self.path, e) from None
        try:
            st = os.fstat(fd)
            if not os.path.stat.S_ISREG(st.st_mode):
                raise LogError(f"{os.fsdecode(self.path)}: not a regular file")
            flock(fd, LOCK_EX)
            try:
                st = os.fstat(fd)
                state = self._refresh(fd, st)
                torn = st.st_size > state.offset
                if create and not state.intact and state.identity is None:
                    if state.damaged:
                        # Lines, none of them an add: some other file.
                        raise LogError(
                            f"{os.fsdecode(self.path)}: not a gossip log (no intact add in it)"
                        )
                    self._append(
                        fd, state, torn, [encodeAdd([(b"I", newIdentity())])]
                    )
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

    def _append(self, fd, state, torn, lines, keys=None, keySpans=None):
        """
        Write C{lines}, intact adds, at the end of the log.

        @param keys: for adds from a peer, the C{(by, at)} of each line.
        @param keySpans: the L{spans} of C{keys}, if known.
        @return: the offset of the first line.
        """
        data = b"".join(lines)
        if torn:
            # A writer died mid-add: end its line so that ours stands alone.
            data = b"\n" + data
        start = os.fstat(fd).st_size + torn
        _writeAll(fd, data)
        if self.fsync:
            os.fdatasync(fd)
        if torn:
            state.damaged += 1
        if keys is not None and state.identity is not None:
            # Adds from a peer: nothing to learn from them but their keys.
            state.intact = True
            if keySpans is None:
                addKeys(state.have, keys)
            else:
                addSpans(state.have, keySpans)
        else:
            bodies = [checkLine(line) for line in lines]
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
            except (OSError, ValueError):
                state = None
            else:
                if not self._stillValid(fd, st, fingerprint, state):
                    state = None
        if state is None:
            state = State()
        offset = state.offset
        with open(fd, "rb", closefd=False) as f:
            state.catchUp(f, st.st_size)
        if state.offset != offset:
            self._save(fd, st, state)
        return state

    @staticmethod
    def _stillValid(fd, st, fingerprint, state):
        return state.offset <= st.st_size and fingerprint == _fingerprint(
            fd, st, state.offset
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
