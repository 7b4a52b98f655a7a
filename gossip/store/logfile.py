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

Like L{gossip.store.format}, this module uses only the standard library, so that
C{gossip say} and C{gossip ask} start fast.
"""

import errno
import os
import re
import stat
from base64 import urlsafe_b64encode
from fcntl import LOCK_EX, LOCK_UN, flock
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
    isSerial,
    longestEndingWith,
    longestStartingWith,
)
from gossip.store.intervals import Intervals, addKeys, addSpans, overlapping, spans

__all__ = [
    "RESERVED",
    "Log",
    "LogError",
    "Received",
    "Skipped",
    "State",
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


def _blocks(f, start, size=None):
    """
    Read a log forwards from byte C{start} a block at a time.

    A line that grows longer than L{_CHUNK} without an LF is kept only
    while its header says it may still be an add, so that a gigabyte of
    damage costs a few megabytes, not a gigabyte.

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
    while True:
        data = read(size)
        if not data:
            return
        last = data.rfind(b"\n")
        if last == -1:
            pendingSize += len(data)
            if pending is not None:
                pending.append(data)
                pending, limit = _judge(pending, pendingSize, limit, longestStartingWith)
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


def entries(f, start=0):
    """
    Read a log forwards from byte C{start}, which must begin a line.

    @param f: a binary file open for reading.
    @return: an iterator of C{(offset, record, body)} for each complete
        line, where C{record} is the line without its LF (a L{Skipped} for
        a damaged line too long to keep) and C{body} is the add's body, or
        L{None} when the line is not an intact add.  It ends at the last
        LF: an unterminated last line is still being written (or was
        torn), and is not returned.
    """
    for offset, block in _blocks(f, start):
        if type(block) is Skipped:
            yield offset, block, None
            continue
        records = block.split(b"\n")
        for record, body in zip(records, checkRecords(records)):
            yield offset, record, body
            offset += len(record) + 1


def keyedBlocks(f, start=0, size=1 << 18):
    """
    Read a log forwards from byte C{start}, which must begin a line, for
    the adds it holds: what a sender needs, and no more.

    @return: an iterator of lists, a block's worth at a time, of
        C{(record, body, (by, at))} for each intact add with a C{by} and
        C{at}.  Blocks are read C{size} bytes at a time: smaller than a
        reader's, so that a sender checking one does not keep its peer
        waiting long.
    """
    for offset, block in _blocks(f, start, size):
        if type(block) is Skipped:
            continue
        checked, rejected = checkKeyedRecords(block.split(b"\n"))
        yield checked


def _lastLineEnd(f, end):
    """
    The offset just past the last LF before byte C{end}, or 0 if none:
    found a chunk at a time, in time linear in what follows it.
    """
    position = end
    while position > 0:
        size = min(_CHUNK, position)
        position -= size
        f.seek(position)
        last = f.read(size).rfind(b"\n")
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
    position = lineEnd
    # The end of the line being read, last piece first, or None once it is
    # known damaged.
    pieces = []
    piecesSize = 0
    limit = None
    while position > 0:
        size = min(_CHUNK, position)
        position -= size
        f.seek(position)
        parts = f.read(size).split(b"\n")
        if len(parts) == 1:
            piecesSize += size
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
        for offset, record, body in entries(f, self.offset):
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
_TORN_IDENTITY = re.compile(
    rb"[A-Za-z0-9+/]{11} (?:[0-9]+(?:<(?:I(?:=[^&<>\n]*+(?:>[0-9]*)?)?)?)?)?"
).fullmatch


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
            at = b"%d" % (state.nextAt(),)
            if not isSerial(at):
                raise LogError(
                    f"{os.fsdecode(self.path)}: this node has no more serial numbers "
                    "(an at of 2**63 - 1 is in the log)"
                )
            line = encodeAdd([(b"by", state.identity), (b"at", at)] + pairs)
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
        Call C{action(fd, state, torn)} with the log locked, C{state} up to
        date and C{torn} true when the file ends in an unfinished line.
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
                state = self._refresh(fd, st)
                torn = st.st_size > state.offset
                if create and not state.intact and state.identity is None:
                    if state.damaged or (torn and not self._tornIdentity(fd, st)):
                        # Bytes, none of them an add: some other file.
                        raise LogError(
                            f"{os.fsdecode(self.path)}: not a gossip log (no intact add in it)"
                        )
                    self._append(
                        fd, state, torn, [encodeAdd([(b"I", newIdentity())])]
                    )
                    torn = False
                    if self.fsync:
                        self._syncDirectory()
                return action(fd, state, torn)
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
        if state.offset != offset and state.intact:
            # A file with no add in it is not worth a cache, and may well
            # not be a log: say refuses it, and should leave nothing behind.
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
