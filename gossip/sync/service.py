# -*- test-case-name: tests.test_service -*-
"""
A log as a Twisted service: it watches its file for adds appended by any
process, tells its sync sessions about them, writes what the sessions
receive, and scrubs its file for damage in the background.
"""

import os
from collections import deque
from time import perf_counter

import attrs
from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredLock, fail, succeed
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from zope.interface import implementer

from gossip.store.format import CorruptLine, checkKeyedLine, identify
from gossip import counted
from gossip.store.intervals import Intervals, addKeys, addSpans, count, covered, difference, heldBy, merge
from gossip.store.logfile import LARGE, LargeLine, LogError, Scan, Stretch, entries, keyedBlocks
from gossip.sync.claims import SharedClaims
from gossip.sync.interfaces import ILogService
from gossip.sync.watcher import INotifyWatcher, watcherFor

__all__ = ["LogService", "Scrubber"]

# How many recent adds the service remembers the place of, so that a peer's
# request for new adds does not rescan the log (a continuous session asks
# for adds within moments of hearing of them).  Each costs a few hundred
# bytes.
_RECENT = 10000
# The largest add a peer may send, by default.
MAX_ADD_SIZE = 1 << 30
# How much of a log the scrub checks at a time: a few milliseconds' work.
SCRUB_SLICE = 1 << 18
# The most of one core the scrub takes, however short its period.
SCRUB_SHARE = 0.02
# Seconds after which adds left to another process's sessions are looked
# for again, in case it did not fetch them.
CLAIM_RECHECK = 2.0


@implementer(ILogService)
@attrs.define(eq=False)
class LogService(Service):
    """
    One log file, watched, with the sync sessions that share it.

    @ivar log: the L{gossip.store.logfile.Log}.
    @ivar reactor: the reactor (an L{IReactorTime} and L{IReactorFDSet}).
    @ivar rescanInterval: seconds between rescans that back up the watcher.
    @ivar scrubPeriod: seconds the background scrub takes to verify the
        whole log (see L{Scrubber}), or 0 for no scrub.
    @ivar identity: the log's node identity, once started.
    @ivar have: per-origin L{Intervals} of the adds the log holds.
    @ivar damaged: how many corrupt lines the service has skipped reading
        the log.
    """

    log = attrs.field()
    reactor = attrs.field()
    rescanInterval = attrs.field(default=30.0)
    maxAddSize = attrs.field(default=MAX_ADD_SIZE)
    useInotify = attrs.field(default=True)
    scrubPeriod = attrs.field(default=0.0)
    # Share what the sessions fetch with other processes on the log (see
    # gossip.sync.claims); claimTag names this service among several of
    # one process.
    shareClaims = attrs.field(default=False)
    claimTag = attrs.field(default=None)
    identity = attrs.field(default=None, init=False)
    # This service's name for its peers, new in each process: two sessions
    # with the same node and the same boot are two links between the same
    # two services.
    boot = attrs.field(factory=lambda: os.urandom(8).hex().encode(), init=False)
    have = attrs.field(factory=dict, init=False)
    damaged = attrs.field(default=0, init=False)
    _sessions = attrs.field(factory=list, init=False)
    _offset = attrs.field(default=0, init=False)
    _fileId = attrs.field(default=None, init=False)
    _file = attrs.field(default=None, init=False)
    _recent = attrs.field(factory=lambda: _Places(_RECENT), init=False)
    _watcher = attrs.field(default=None, init=False)
    _rescan = attrs.field(default=None, init=False)
    _scrubber = attrs.field(default=None, init=False)
    # Held while adds are written to the log, which a large add's copy
    # keeps locked across many turns of the reactor.
    _writing = attrs.field(factory=DeferredLock, init=False)
    _copy = attrs.field(default=None, init=False)
    # For each origin, the session that streams it to this node (version 2).
    _sources = attrs.field(factory=dict, init=False)
    # The origins streamed from a session chosen when their source ended:
    # it may hold no more of them than this node (its own source may be
    # this node), so the next session that holds some of them takes over.
    _stopgaps = attrs.field(factory=set, init=False)
    _claims = attrs.field(default=None, init=False)
    _recheck = attrs.field(default=None, init=False)

    _log = Logger()

    @property
    def name(self):
        """
        The log's name, which peers must share: its file's base name.
        """
        return os.path.basename(self.log.path)

    def startService(self):
        """
        Create the log if needed, read what it holds and start watching it.

        @raise gossip.store.logfile.LogError: if it cannot be read or created.
        """
        self._load()
        removed = self.log.removeStale()
        if removed:
            self._log.info(
                "removed {count} unfinished large adds left beside {path}",
                count=removed,
                path=self.log.path,
            )
        if self.shareClaims:
            self._claims = SharedClaims(self.log.path, self.claimTag)
        Service.startService(self)
        self._watcher = watcherFor(self.reactor, self.log.path, self.changed, self.useInotify)
        self._watcher.start()
        self._rescan = LoopingCall(self.changed)
        self._rescan.clock = self.reactor
        self._rescan.start(self.rescanInterval, now=False)
        if self.scrubPeriod:
            self._scrubber = Scrubber(self, self.reactor, self.scrubPeriod)
            self._scrubber.start()

    def stopService(self):
        Service.stopService(self)
        if self._recheck is not None and self._recheck.active():
            self._recheck.cancel()
        if self._claims is not None:
            self._claims.close()
        if self._scrubber is not None:
            self._scrubber.stop()
            self._scrubber = None
        if self._copy is not None:
            # The log is cut back to where it was, and unlocked.
            self._copy.close()
            self._copy = None
        if self._watcher is not None:
            self._watcher.stop()
        if self._rescan is not None and self._rescan.running:
            self._rescan.stop()
        if self._file is not None:
            self._file.close()
            self._file = None
        self.log.saveCache()

    def _load(self):
        self.log.cacheDelay = 1.0
        state = self.log.state(create=True)
        self.identity = state.identity
        self.damaged = state.damaged
        self.have = {by: Intervals(held.ranges()) for by, held in state.have.items()}
        self._offset = state.offset
        if self._file is not None:
            self._file.close()
        self._file = self.log.open()
        st = os.fstat(self._file.fileno())
        self._fileId = (st.st_dev, st.st_ino)
        self._recent.clear()

    def changed(self):
        """
        The file may have grown: read its new adds and tell the sessions.
        """
        if self._writing.locked:
            # Its growth is this service's own writing, perhaps a large add
            # half copied: what it wrote is learnt once it is done.
            return
        self._readNew()

    def _readNew(self):
        """
        Read the adds appended since the service last read, and tell the
        sessions: for L{changed}, and for a writer that finds the log grew
        by more than it wrote.
        """
        try:
            st = os.stat(self.log.path)
        except OSError as e:
            self._log.error("cannot read {path}: {why}", path=self.log.path, why=e)
            return
        if (st.st_dev, st.st_ino) != self._fileId or st.st_size < self._offset:
            self._log.warn("{path} was replaced or truncated; reading it again", path=self.log.path)
            self._load()
            everything = {}
            merge(everything, self.have)
            self._tell(everything)
            return
        if st.st_size == self._offset:
            return
        keys = []
        # A large add (one appended by "say --file", say) is checked a
        # piece at a time, never read whole.
        for offset, record, body in entries(self._file, self._offset, LARGE):
            if isinstance(record, LargeLine):
                length = record.length
                key = record.key
                intact = key is not None
            else:
                length = len(record) + 1
                intact = body is not None
            self._offset = offset + length
            if not intact:
                self.damaged += 1
                self._log.warn(
                    "{path}: corrupt line at byte {offset}", path=self.log.path, offset=offset
                )
                continue
            if body is not None:
                try:
                    key = identify(body)
                except CorruptLine:
                    continue
            if key is not None and self._learn(key, offset, length):
                keys.append(key)
        added = {}
        addKeys(added, keys)
        self._tell(added)

    def _unchanged(self):
        try:
            st = os.stat(self.log.path)
        except OSError:
            return False
        return (st.st_dev, st.st_ino) == self._fileId

    def _learn(self, key, offset, length):
        """
        Note an add found at C{offset}.

        @return: whether it was new.
        """
        by, at = key
        held = heldBy(self.have, by)
        if at in held:
            return False
        held.add(at)
        self._recent.add(1, lambda: ([key], [offset], [length]))
        return True

    def _tell(self, added, source=None):
        """
        Tell the sessions (but C{source}) of new adds C{added}, ranges by
        origin.
        """
        if added:
            for session in list(self._sessions):
                if session is not source:
                    session.localAdds(added)

    @property
    def sessions(self):
        """
        The sessions that sync this log now.
        """
        return list(self._sessions)

    @property
    def watcherKind(self):
        """
        How the service learns of adds other processes append: C{"inotify"}
        or C{"polling"} (L{None} before it starts).
        """
        if self._watcher is None:
            return None
        return "inotify" if isinstance(self._watcher, INotifyWatcher) else "polling"

    # The scrub

    @property
    def file(self):
        """
        The log file as the service has it open: another file object once
        the log was replaced or truncated.
        """
        return self._file

    def scrubbing(self):
        """
        What a verification pass needs to check the log as the service has
        read it.

        @return: the open log file, how far the service has read it, and a
            copy of what the service holds of it.
        """
        held = {by: Intervals(ats.ranges()) for by, ats in self.have.items()}
        return self._file, self._offset, held

    def scrubbed(self, scan, held):
        """
        A verification pass started with L{scrubbing} is over: log the damage
        it found and fetch again what the log lost.

        @param scan: the finished L{gossip.store.logfile.Scan}.
        @param held: what the service held when the pass started.
        """
        path = os.fsdecode(self.log.path)
        for offset, length in scan.regions:
            self._log.warn(
                "{path}: damaged: {length} bytes at byte {offset}",
                path=path,
                length=length,
                offset=offset,
            )
        lost = difference(held, scan.state.have)
        if lost:
            self._log.warn(
                "{path}: {adds} lost to damage; fetching from peers",
                path=path,
                count=count(lost),
                adds=counted(count(lost), "add"),
            )
            self.forget(lost, scan.state.damaged)

    def forget(self, lost, damaged=0):
        """
        The log no longer holds the adds C{lost}: say so, to the log's cache
        too, and have the sessions ask their peers for them.
        """
        for by, ats in lost.items():
            mine = self.have.get(by)
            if mine is not None:
                self.have[by] = mine.difference(ats)
        # Where the lost adds were is no longer where they are.
        self._recent.clear()
        try:
            self.log.forget(lost, damaged)
        except LogError as e:
            self._log.error("{why}", why=e)
        self.released()

    # What sessions ask of the service

    def sessionStarted(self, session):
        self._sessions.append(session)

    def sessionEnded(self, session):
        if session in self._sessions:
            self._sessions.remove(session)
        self.claimsChanged()
        # Its origins are streamed from the next session that holds them.
        for by in [by for by, source in self._sources.items() if source is session]:
            del self._sources[by]
            self._stopgaps.discard(by)
            self._chooseSource(by)
            self._hush(by)
        self.released()

    # Links listed at both ends (docs/protocol.md)

    def joined(self, session):
        """
        C{session}'s peer has said hello: if this service has another
        session with the same service of the same node (the link is listed
        at both ends, or the peer dialled again after losing the other),
        end the one that both ends agree to end (see L{_kept}).
        """
        for other in list(self._sessions):
            kept = self._keptOf(other, session)
            if kept is None:
                continue
            lost = session if kept is other else other
            lost.supersede(_keptWhy(kept, lost))
            if lost is session:
                return

    def linkWith(self, node):
        """
        A session, lasting and not ending, that links this service with
        node C{node}, if there is one.
        """
        for session in self._sessions:
            if (
                session.peerNode == node
                and session.peerBoot is not None
                and session.superseded is None
            ):
                return session
        return None

    def keptOver(self, session):
        """
        Why C{session}, ending, gave way to another session with the same
        peer service that both ends keep, or L{None} if it did not.
        """
        for other in self._sessions:
            if self._keptOf(other, session) is other:
                return _keptWhy(other, session)
        return None

    def _keptOf(self, one, another):
        """
        Which of two sessions both ends keep, if they are twins (see
        L{_kept}); else L{None}.
        """
        if one is another or not _twins(one, another):
            return None
        older, newer = sorted((one, another), key=self._sessions.index)
        return _kept(older, newer)

    # Streams (docs/protocol.md, "Many nodes")

    def sourceOf(self, by):
        """
        The session that streams origin C{by} to this node, or L{None}.
        """
        return self._sources.get(by)

    def offered(self, session, origins, summary=True):
        """
        C{session}'s peer holds adds of C{origins} (or wrote them): stream
        from it those no session streams yet, those it wrote itself, and
        those its summary shows it holds more of than their source
        (unless that is their writer).

        @param summary: whether C{origins} are those of the peer's summary
            (not of a note, which may name adds that a source's stream is
            bringing).
        """
        sources = self._sources
        stopgaps = self._stopgaps
        for by in origins:
            source = sources.get(by)
            if source is session:
                continue
            if (
                source is None
                or by in stopgaps
                or (session.peerNode == by and source.peerNode != by)
                or (
                    summary
                    and source.peerNode != by
                    and _top(session, by) > _top(source, by)
                )
            ):
                self.switchSource(by, session)
            elif source is not None:
                self._hush(by, [session])
        if summary:
            # Origins streamed from their writers that the peer holds none
            # of yet: it would note their first adds at once.
            for by, source in sources.items():
                if source.peerNode == by and source is not session and by not in session.peerHave:
                    self._hush(by, [session])

    def noted(self, session, noted):
        """
        C{session}'s peer notes that it holds C{noted}, ranges by origin:
        stream from it those of their origins no session streams, and
        those it wrote itself.
        """
        self.offered(session, noted, summary=False)

    def switchSource(self, by, session):
        """
        Stream origin C{by} from C{session}, and from no other.
        """
        self._stopgaps.discard(by)
        old = self._sources.get(by)
        if old is session:
            return
        self._sources[by] = session
        if old is not None:
            old.stream(by, False)
        session.stream(by, True)
        self._hush(by)

    def _hush(self, by, sessions=None):
        """
        While origin C{by} is streamed from its writer, which pushes every
        add of it, ask the other sessions (or C{sessions}) not to note it
        but now and then (see L{gossip.sync.protocol.QUIET_TICKS}); and to
        note it again once it is not.
        """
        source = self._sources.get(by)
        quiet = source is not None and source.peerNode == by
        for session in self._sessions if sessions is None else sessions:
            if session is source or not session.streamsFrom():
                continue
            if (by in session.rxQuiet) != quiet:
                session.stream(by, False, quiet=quiet)

    def _chooseSource(self, by):
        """
        Stream origin C{by} from the best session that holds some of it:
        its writer, else the one that holds the most, else any (its peer
        may have been asked not to note the origin, its writer streaming
        it here: see L{_hush}).
        """
        best = None
        bestTop = -2
        for session in self._sessions:
            if not session.streamsFrom():
                continue
            held = session.peerHave.get(by)
            if held is None:
                if best is None:
                    best, bestTop = session, -1
                continue
            if session.peerNode == by:
                best = session
                break
            top = held.end()
            if top > bestTop:
                best, bestTop = session, top
        if best is not None:
            self.switchSource(by, best)
            if best.peerNode != by:
                self._stopgaps.add(by)

    def released(self):
        """
        A session's requests ended: others may now fetch what it did not.
        """
        for session in list(self._sessions):
            session.requestMissing()

    def unclaimed(self, wanted):
        """
        Those of C{wanted} that no session is already fetching.
        """
        for session in self._sessions:
            if session.pending:
                wanted = difference(wanted, session.pending)
        if wanted and self._claims is not None:
            # Claimed and checked in one step: another process asking at
            # the same instant finds these claimed.
            left = self._claims.claim(wanted, self._pending())
            if count(left) != count(wanted):
                # Another process fetches some: look again later, in case
                # it does not get them.
                if self._recheck is None or not self._recheck.active():
                    self._recheck = self.reactor.callLater(CLAIM_RECHECK, self._claimsLapsed)
                wanted = left
        return wanted

    def _claimsLapsed(self):
        """
        Adds were left to another process's sessions a while ago: learn
        what it wrote, and fetch what it did not.
        """
        self.changed()
        self.released()

    def claimsChanged(self):
        """
        What the sessions are fetching changed: tell other processes.
        """
        if self._claims is not None:
            self._claims.publish(self._pending())

    def _pending(self):
        pending = {}
        for session in self._sessions:
            if session.pending:
                merge(pending, session.pending)
        return pending

    def receive(self, data, source=None):
        """
        Append what the log lacks of the lines in C{data}, raw lines from a
        peer, once no other writing of this service is under way.

        @param source: the session they came from, which need not hear of
            them.
        @return: a L{Deferred} firing with the
            L{gossip.store.logfile.Received}.
        """
        if not self._writing.locked:
            # The usual case: no large add is being copied in, and this
            # runs to its end before anything else can, so the lock need
            # not be taken (a Deferred or two a batch, some 5% of a sync).
            try:
                return succeed(self._received(self.log.receive(data), source))
            except Exception:
                return fail()
        return self._writing.run(lambda: self._received(self.log.receive(data), source))

    def receiveIncoming(self, incoming, source=None):
        """
        Append a large add from a peer, checked whole in its spool file
        (see L{gossip.store.logfile.Log.copyIncoming}), unless the log
        holds it: a piece at a time, one each turn of the reactor, so that
        other sessions are served meanwhile.  Other adds they receive are
        written after it.

        @param source: the session it came from, which need not hear of it.
        @return: a L{Deferred} firing with the
            L{gossip.store.logfile.Received}.
        """
        return self._writing.run(self._copyIn, incoming, source)

    def _copyIn(self, incoming, source):
        """
        Start copying C{incoming} in, with the writing lock held.

        @return: a L{Deferred} firing once it is copied and learnt.
        """
        done = Deferred()
        self._copy = self.log.copyIncoming(incoming)
        self._copyStep(self._copy, done)
        return done.addCallback(self._received, source)

    def _copyStep(self, steps, done):
        """
        Copy one piece of the large add being copied in; come back for the
        next on the reactor's next turn.
        """
        if steps is not self._copy:
            done.errback(LogError(f"{os.fsdecode(self.log.path)} was closed mid-copy"))
            return
        try:
            next(steps)
        except StopIteration as finished:
            self._copy = None
            done.callback(finished.value)
        except Exception:
            self._copy = None
            done.errback()
        else:
            self.reactor.callLater(0, self._copyStep, steps, done)

    def _received(self, result, source):
        """
        Learn what the log now holds from what its C{receive} or
        C{receiveIncoming} appended, and tell the other sessions.
        """
        if result.count:
            first = result.start
            if self._offset + 1 < first <= self._offset + LARGE and self._unchanged():
                self._passTorn(first)
            if first in (self._offset, self._offset + 1) and self._unchanged():
                # Nothing else was appended since the service last read
                # (but perhaps the end of a torn line), so these adds are
                # new here too: take them as written rather than reading
                # them back.
                spans = None
                if result.spans is not None and result.whole:
                    # Every add held was appended: the spans are theirs.
                    spans = result.spans
                    addSpans(self.have, spans)
                else:
                    addKeys(self.have, result.keys)
                # Where each add is, and its key, only if asked: a session
                # that sends what another received asks.
                self._recent.add(result.count, result.places)
                self._offset = result.end
                if any(session is not source for session in self._sessions):
                    added = {}
                    if spans is not None:
                        addSpans(added, spans)
                    else:
                        addKeys(added, result.keys)
                    self._tell(added, source)
            else:
                self._readNew()
        return result

    def _passTorn(self, first):
        """
        If what lies between where the service has read and C{first}, where
        the adds just written begin, is one line cut short (its writer
        killed mid-append) that the writing ended with a line feed, count it
        as damage without reading it back: it is no add, and its being
        there is the crash's doing, not a disk's.
        """
        torn = os.pread(self._file.fileno(), first - self._offset, self._offset)
        if len(torn) != first - self._offset or torn.find(b"\n") != len(torn) - 1:
            return
        try:
            checkKeyedLine(torn)
        except CorruptLine:
            pass
        else:
            # A whole add that lacked only its line feed: read as one.
            return
        self._log.info(
            "{path}: a line cut short at byte {offset} (its writer was stopped) is skipped",
            path=os.fsdecode(self.log.path),
            offset=self._offset,
        )
        self.damaged += 1
        self._offset = first

    def linesFor(self, wanted):
        """
        The lines of the adds named in C{wanted}, read from the log.

        @return: an iterator, one item for each stretch of the log read (so
            the caller can let others run between them): either a list of
            C{(line, (by, at))}, LF included, perhaps empty, or a
            L{gossip.store.logfile.Stretch} of adds that are all wanted.
        """
        left = sum(len(held) for held in wanted.values())
        sent = set()
        if left <= len(self._recent):
            found = []
            for by, held in wanted.items():
                for at in held:
                    place = self._recent.get((by, at))
                    if place is None:
                        continue
                    if place[1] > LARGE:
                        # Read a piece at a time as it is sent.
                        sent.add((by, at))
                        found.append((LargeLine(place[0], place[1], (by, at)), (by, at)))
                        continue
                    line = os.pread(self._file.fileno(), place[1], place[0])
                    if line.endswith(b"\n"):
                        sent.add((by, at))
                        found.append((line, (by, at)))
            yield found
        if len(sent) == left:
            return
        # Anything not recent is found by reading the log from the start.
        get = wanted.get
        with self.log.open() as f:
            for checked in keyedBlocks(f):
                if isinstance(checked, LargeLine):
                    key = checked.key
                    held = get(key[0])
                    wantedHere = held is not None and key[1] in held and key not in sent
                    yield [(checked, key)] if wantedHere else []
                    continue
                if isinstance(checked, Stretch):
                    if not sent and covered(wanted, checked.spans):
                        yield checked
                        continue
                    lines = checked
                else:
                    lines = ((record + b"\n", key) for record, body, key in checked)
                found = []
                keep = found.append
                for line, key in lines:
                    held = get(key[0])
                    if held is not None and key[1] in held and key not in sent:
                        keep((line, key))
                yield found

    def readLine(self, line, start, length):
        """
        C{length} bytes of a L{LargeLine} in the log, from C{start} on.

        @raise LogError: if the log no longer holds them.
        """
        data = os.pread(self._file.fileno(), length, line.offset + start)
        if len(data) != length:
            raise LogError(f"{os.fsdecode(self.log.path)} was cut short while being sent")
        return data


def _twins(a, b):
    """
    Whether sessions C{a} and C{b} link this service with the same service
    of the same peer node: a link too many.
    """
    return (
        a.peerBoot is not None
        and a.peerBoot == b.peerBoot
        and a.peerNode == b.peerNode
        and not a.superseded
        and not b.superseded
    )


def _dialler(session):
    return session.service.identity if session.dialled else session.peerNode


def _kept(older, newer):
    """
    Which of two twin sessions both ends keep: the one dialled by the node
    whose identity sorts first, which both ends can tell; if one node
    dialled both, the newer (it dialled again because it lost the older).
    """
    first, second = _dialler(older), _dialler(newer)
    if first == second:
        return newer
    return older if first < second else newer


def _keptWhy(kept, lost):
    if kept.dialled == lost.dialled:
        return "a newer session with the same peer replaces it"
    if kept.dialled:
        return "this node's own session with it serves the link (both ends list it)"
    return "its session with this node serves the link (both ends list it)"


def _top(session, by):
    """
    One more than the last serial of origin C{by} that C{session}'s peer
    is known to hold, or 0.
    """
    held = session.peerHave.get(by)
    return 0 if held is None else held.end()


@attrs.define(eq=False)
class Scrubber:
    """
    Verifies a L{LogService}'s log in the background, a slice at a time on
    the reactor's clock, so that damage no writer made (a failing disk) is
    found, logged and repaired from peers.

    Each pass checks every line up to where the service had read when it
    began; what the service held then but the pass did not find intact is
    lost, and fetched again.  The slices are spaced so that a pass takes
    about C{period} seconds, and never so close that checking them takes
    more than C{share} of the time.

    @ivar service: the L{LogService}.
    @ivar clock: an L{IReactorTime}.
    @ivar period: the seconds a pass over the whole log should take.
    @ivar slice: how many bytes to check at a time.
    @ivar share: the most of the time that checking may take.
    @ivar timer: what the time a slice took is measured with.
    """

    service = attrs.field()
    clock = attrs.field()
    period = attrs.field()
    slice = attrs.field(default=SCRUB_SLICE)
    share = attrs.field(default=SCRUB_SHARE)
    timer = attrs.field(default=perf_counter)
    _scan = attrs.field(default=None, init=False)
    _file = attrs.field(default=None, init=False)
    _held = attrs.field(default=None, init=False)
    _call = attrs.field(default=None, init=False)

    _log = Logger()

    def start(self):
        """
        Begin the first pass now.
        """
        self._call = self.clock.callLater(0, self._step)

    def stop(self):
        """
        Stop scrubbing, leaving any pass unfinished.
        """
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        self._scan = None

    def _step(self):
        self._call = None
        if self._scan is None or self._file is not self.service.file:
            # A first pass, or the service opened its log again (replaced,
            # truncated): start over.
            self._file, end, self._held = self.service.scrubbing()
            self._scan = Scan(end)
        scan = self._scan
        started = self.timer()
        try:
            checked = scan.step(self._file.fileno(), self.slice) if not scan.done else 0
        except OSError as e:
            # A pass cut short cannot say what is lost: try again later.
            self._log.error(
                "{path}: cannot scrub: {why}", path=os.fsdecode(self.service.log.path), why=e
            )
            self._scan = self._held = None
            self._call = self.clock.callLater(self.period, self._step)
            return
        spent = self.timer() - started
        if scan.done:
            self._scan = None
            self.service.scrubbed(scan, self._held)
            self._held = None
        delay = self.period * checked / scan.end if scan.end else self.period
        self._call = self.clock.callLater(max(delay, spent / self.share), self._step)


class _Places:
    """
    Where the log's newest adds are, by key: at least the last C{limit}
    noted, so that sessions can send what another just received without
    reading the log.

    Batches are noted as they are written, at no cost for each add, and
    indexed only when someone looks one up, the newest first and only as
    far back as the add looked up: a one-shot sync, or a daemon with a
    single peer, writes a million adds and looks up none, and a session
    that pushes the add just written finds it in the batch noted last.
    """

    def __init__(self, limit):
        self._limit = limit
        # [count, places] of each batch, oldest first, places being a
        # function that gives (keys, offsets, lengths) until the batch is
        # indexed, and then what it gave.
        self._batches = deque()
        # The batches not yet in _index, oldest first.
        self._unindexed = deque()
        self._count = 0
        self._index = {}

    def __len__(self):
        return self._count

    def add(self, count, places):
        """
        Note C{count} adds, whose keys, offsets and lengths C{places()}
        gives as three lists.
        """
        batches = self._batches
        batch = [count, places]
        batches.append(batch)
        self._unindexed.append(batch)
        self._count += count
        while self._count - batches[0][0] >= self._limit:
            old = batches.popleft()
            self._count -= old[0]
            if self._unindexed and self._unindexed[0] is old:
                self._unindexed.popleft()
                continue
            index = self._index
            oldKeys, oldOffsets, _ = old[1]
            for key, offset in zip(oldKeys, oldOffsets):
                place = index.get(key)
                if place is not None and place[0] == offset:
                    del index[key]

    def get(self, key):
        """
        Where add C{key} is, C{(offset, length)}, or L{None} if not noted.
        """
        index = self._index
        place = index.get(key)
        unindexed = self._unindexed
        while place is None and unindexed:
            batch = unindexed.pop()
            batch[1] = keys, offsets, lengths = batch[1]()
            index.update(zip(keys, zip(offsets, lengths)))
            place = index.get(key)
        return place

    def clear(self):
        """
        Forget every place noted.
        """
        self._batches.clear()
        self._unindexed.clear()
        self._count = 0
        self._index = {}
