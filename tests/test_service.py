"""
Tests for L{gossip.sync.service} and L{gossip.sync.watcher}: a log service noticing
adds appended by other processes, with the real reactor and real files.
"""

import errno
import fcntl
import os
import subprocess
import sys
import time

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock, deferLater
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.test import iosim
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from gossip.store import logfile
from gossip.store.format import checkRecords, encodeAdd, identify
from gossip.store.intervals import Intervals
from gossip.store.logfile import LARGE, LargeLine, Log, Scan, Stretch, entries
from gossip.sync.interfaces import ILogService, ISyncSession
from gossip.sync.protocol import SyncProtocol
from gossip.sync.service import LogService, Scrubber, _Places
from gossip.sync.settings import SessionSettings
from gossip.sync.watcher import INotifyWatcher, IWatcher, PollingWatcher

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Sessions that neither ping nor time out: the tests drive the clock.
QUIET = SessionSettings(timeout=None, keepalive=0)


@implementer(ISyncSession)
class Listener:
    """
    Stands where a sync session would, recording what the service tells it.
    """

    pending = {}
    peerNode = b"listener"
    peerHave = {}
    peerBoot = None
    dialled = False
    superseded = None

    def __init__(self):
        self.told = []
        self.waiting = []
        self.streamed = {}
        self.rxQuiet = set()

    def supersede(self, why):
        self.superseded = why

    def streamsFrom(self):
        return True

    def stream(self, by, on, quiet=False):
        self.streamed[by] = on
        if quiet:
            self.rxQuiet.add(by)
        else:
            self.rxQuiet.discard(by)

    def localAdds(self, added):
        self.told.extend(sorted((by, at) for by, held in added.items() for at in held))
        waiting, self.waiting = self.waiting, []
        for d in waiting:
            d.callback(None)

    requested = 0

    def requestMissing(self):
        self.requested += 1

    def next(self):
        d = Deferred()
        self.waiting.append(d)
        return d


def sayElsewhere(path, *pairs):
    """
    Append an add from another process, as a user would.
    """
    subprocess.run(
        [sys.executable, "-m", "gossip", "say", path, *pairs],
        check=True,
        env=dict(os.environ, PYTHONPATH=_REPO),
    )


class WatchMixin:
    useInotify = True

    def setUp(self):
        self.path = self.mktemp()
        Log(self.path).say([(b"m", b"first")])
        self.service = LogService(
            Log(self.path), reactor, rescanInterval=3600, useInotify=self.useInotify
        )
        self.service.startService()
        self.addCleanup(self.service.stopService)
        self.listener = Listener()
        self.service.sessionStarted(self.listener)

    async def waitFor(self, condition, timeout=10.0):
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                self.fail("timed out")
            await deferLater(reactor, 0.005, lambda: None)

    async def test_otherProcess(self):
        """
        An add appended by another process reaches the service and its
        sessions.
        """
        identity = self.service.identity
        done = self.listener.next()
        await deferLater(reactor, 0, sayElsewhere, self.path, "m=second")
        await done
        self.assertEqual(self.listener.told, [(identity, 1)])
        self.assertEqual(self.service.have[identity], Intervals([(0, 2)]))

    async def test_replaced(self):
        """
        A log replaced by another file under the same name is read again.
        """
        other = self.mktemp()
        Log(other).say([(b"m", b"other")])
        otherIdentity = Log(other).state().identity
        os.rename(other, self.path)
        Log(self.path).say([(b"m", b"poke")])
        await self.waitFor(lambda: self.service.identity == otherIdentity)
        self.assertEqual(self.service.have, {otherIdentity: Intervals([(0, 2)])})


class INotifyTests(WatchMixin, TestCase):
    """
    The inotify watcher.
    """

    def test_isINotify(self):
        self.assertIsInstance(self.service._watcher, INotifyWatcher)
        self.assertTrue(verifyObject(IWatcher, self.service._watcher))

    async def test_onlyTheLog(self):
        """
        Writes to the directory's other files call nothing; a write to the
        log calls the callback, once for all the events one read brings.
        """
        calls = []
        watcher = INotifyWatcher(reactor, self.path, lambda: calls.append(1))
        watcher.start()
        self.addCleanup(watcher.stop)
        other = os.path.join(os.path.dirname(os.path.abspath(self.path)), "other")
        for i in range(20):
            with open(other, "ab") as f:
                f.write(b"x")
        await deferLater(reactor, 0.2, lambda: None)
        self.assertEqual(calls, [])
        with open(self.path, "ab") as f:
            for i in range(20):
                f.write(b"x")
                f.flush()
        await self.waitFor(lambda: calls)
        await deferLater(reactor, 0.2, lambda: None)
        self.assertLess(len(calls), 20)
        watcher.stop()
        self.assertEqual(watcher.fileno(), -1)

    async def test_appendsMerged(self):
        """
        Appends one after another, each opening and closing the file as a
        writer of the log does, wake the watcher once, not once for each
        write and each close.
        """
        directory = self.mktemp()
        os.makedirs(directory)
        path = os.fsencode(os.path.join(directory, "other.log"))
        open(path, "wb").close()
        calls = []
        watcher = INotifyWatcher(reactor, path, lambda: calls.append(None))
        watcher.start()
        self.addCleanup(watcher.stop)
        for n in range(20):
            with open(path, "ab") as f:
                f.write(b"x")
        await self.waitFor(lambda: calls)
        await deferLater(reactor, 0.05, lambda: None)
        self.assertEqual(len(calls), 1)


class PollingTests(WatchMixin, TestCase):
    """
    The polling watcher, for systems without inotify.
    """

    useInotify = False

    def test_isPolling(self):
        self.assertIsInstance(self.service._watcher, PollingWatcher)
        self.assertTrue(verifyObject(IWatcher, self.service._watcher))


def fired(d):
    """
    Whether C{d} has its result (not merely another L{Deferred} to wait on).
    """
    outcome = []
    d.addBoth(lambda passed: (outcome.append(passed), passed)[1])
    return bool(outcome)


class ServiceTests(SynchronousTestCase):
    """
    What sessions ask of the service.
    """

    def setUp(self):
        self.path = self.mktemp()
        self.log = Log(self.path)
        self.log.say([(b"m", b"first")])
        self.service = LogService(Log(self.path), Clock(), useInotify=False)
        self.service.startService()
        self.addCleanup(self.service.stopService)
        self.listener = Listener()
        self.service.sessionStarted(self.listener)

    def test_interfaces(self):
        """
        The service provides what sessions need of it; a sync session, and
        the listener that stands for one here, what the service needs.
        """
        self.assertTrue(verifyObject(ILogService, self.service))
        self.assertTrue(verifyObject(ISyncSession, self.listener))
        session = SyncProtocol(self.service, "peer")
        self.assertTrue(verifyObject(ISyncSession, session))

    def test_receive(self):
        """
        Received adds are appended once, and sessions are told of them.
        """
        lines = [encodeAdd([(b"by", b"p"), (b"at", b"%d" % i), (b"m", b"x")]) for i in range(3)]
        result = self.successResultOf(self.service.receive(b"".join(lines + lines[:1])))
        self.assertEqual(len(result.appended), 3)
        self.assertEqual(self.listener.told, [(b"p", 0), (b"p", 1), (b"p", 2)])
        self.assertEqual(self.service.have[b"p"], Intervals([(0, 3)]))
        self.assertEqual(len(self.successResultOf(self.service.receive(b"".join(lines))).appended), 0)
        with open(self.path, "rb") as f:
            self.assertEqual(f.read().count(lines[0]), 1)

    def test_receiveTornBeforeLineFeed(self):
        """
        After a writer was killed just before the LF of an add, a batch
        holding that add appends only the others; the service learns all
        of them, and sends the add as the log now holds it.
        """
        lines = [encodeAdd([(b"by", b"p"), (b"at", b"%d" % i), (b"m", b"x")]) for i in range(3)]
        with open(self.path, "ab") as f:
            f.write(lines[0][:-1])
        result = self.successResultOf(self.service.receive(b"".join(lines)))
        self.assertEqual(result.lines, lines[1:])
        self.assertEqual(self.listener.told, [(b"p", 0), (b"p", 1), (b"p", 2)])
        self.assertEqual(self.service.have[b"p"], Intervals([(0, 3)]))
        found = [item for block in self.service.linesFor({b"p": Intervals([(0, 1)])}) for item in block]
        self.assertEqual(found, [(lines[0], (b"p", 0))])
        with open(self.path, "rb") as f:
            self.assertEqual(f.read().count(lines[0]), 1)

    def test_receiveAfterCutLine(self):
        """
        After a writer was killed in the middle of a line (a clone, say), a
        batch received ends that line and follows it: the service counts
        the cut line as damage and logs it once at info, not as a corrupt
        line at warn (it is a crash's doing, not a disk's), and learns the
        batch as written.
        """
        lines = [encodeAdd([(b"by", b"p"), (b"at", b"%d" % i), (b"m", b"x")]) for i in range(3)]
        with open(self.path, "ab") as f:
            f.write(lines[0][:10])
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        result = self.successResultOf(self.service.receive(b"".join(lines)))
        self.assertEqual(result.lines, lines)
        self.assertEqual(self.service.have[b"p"], Intervals([(0, 3)]))
        self.assertEqual(self.service.damaged, 1)
        said = [(event["log_level"], formatEvent(event)) for event in events]
        self.assertEqual(len(said), 1, said)
        self.assertEqual(said[0][0], LogLevel.info)
        self.assertIn("cut short", said[0][1])

    def test_startTornBeforeLineFeed(self):
        """
        A service started on a log whose last add lacks only its LF ends
        it, and holds that add.
        """
        line = encodeAdd([(b"by", b"p"), (b"at", b"0")])
        with open(self.path, "ab") as f:
            f.write(line[:-1])
        service = LogService(Log(self.path), Clock(), useInotify=False)
        service.startService()
        self.addCleanup(service.stopService)
        self.assertEqual(service.have[b"p"], Intervals([(0, 1)]))
        with open(self.path, "rb") as f:
            self.assertTrue(f.read().endswith(line))

    def test_receiveFromSession(self):
        """
        The session that delivered adds is not told of them; others are.
        """
        source = Listener()
        self.service.sessionStarted(source)
        lines = [encodeAdd([(b"by", b"p"), (b"at", b"%d" % i)]) for i in (0, 1, 5)]
        self.successResultOf(self.service.receive(b"".join(lines), source=source))
        self.assertEqual(source.told, [])
        self.assertEqual(self.listener.told, [(b"p", 0), (b"p", 1), (b"p", 5)])
        self.assertEqual(self.service.have[b"p"], Intervals([(0, 2), (5, 6)]))

    def receiveLarge(self, line):
        incoming = self.service.log.incoming(len(line))
        try:
            incoming.write(line)
            incoming.finish()
            copied = self.service.receiveIncoming(incoming, source=None)
            while not fired(copied):
                self.service.reactor.advance(0)
            return self.successResultOf(copied)
        finally:
            incoming.discard()

    def test_receiveIncoming(self):
        """
        A large add received whole is appended once, sessions are told of
        it, and it is sent on from where it was written, a piece at a time.
        """
        line = encodeAdd([(b"by", b"p"), (b"at", b"0"), (b"m", b"x" * (LARGE + 10))])
        self.assertEqual(len(self.receiveLarge(line).appended), 1)
        self.assertEqual(self.listener.told, [(b"p", 0)])
        self.assertEqual(self.service.have[b"p"], Intervals([(0, 1)]))
        self.assertEqual(self.receiveLarge(line).appended, [])
        wanted = {b"p": Intervals([(0, 1)])}
        ((found, key),) = [item for block in self.service.linesFor(wanted) for item in block]
        self.assertIsInstance(found, LargeLine)
        self.assertEqual(key, (b"p", 0))
        data = b"".join(
            self.service.readLine(found, start, min(100000, len(line) - start))
            for start in range(0, len(line), 100000)
        )
        self.assertEqual(data, line)

    def startCopy(self, line):
        """
        Begin copying C{line} in as a large add from a peer.

        @return: the L{Deferred} of its L{LogService.receiveIncoming}.
        """
        incoming = self.service.log.incoming(len(line))
        incoming.write(line)
        incoming.finish()
        copied = self.service.receiveIncoming(incoming, source=None)
        copied.addBoth(lambda passed: (incoming.discard(), passed)[1])
        return copied

    def turn(self):
        """
        Run what is due first on the service's clock, as one turn of a
        reactor would (L{Clock.advance} would also run what that schedules
        for now).
        """
        clock = self.service.reactor
        call = clock.calls.pop(0)
        self.assertEqual(call.getTime(), clock.seconds())
        call.called = 1
        call.func(*call.args, **call.kw)

    def assertLocked(self):
        fd = os.open(self.path, os.O_RDONLY)
        try:
            self.assertRaises(BlockingIOError, fcntl.flock, fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(fd)

    def test_copyInSlices(self):
        """
        A large add is copied into the log no more than a piece at a time
        each turn of the reactor, with the log locked throughout; the
        service neither reads the half-copied line nor writes another
        session's adds between its pieces, but after it.
        """
        line = encodeAdd([(b"by", b"p"), (b"at", b"0"), (b"m", b"x" * (3 * LARGE))])
        start = os.path.getsize(self.path)
        copied = self.startCopy(line)
        small = encodeAdd([(b"by", b"q"), (b"at", b"0")])
        other = Listener()
        self.service.sessionStarted(other)
        queued = self.service.receive(small, source=other)
        self.assertNoResult(queued)
        sizes = [os.path.getsize(self.path)]
        turns = 0
        while not fired(copied):
            self.assertLocked()
            self.service.changed()
            self.assertEqual(self.listener.told, [])
            self.assertNotIn(b"p", self.service.have)
            self.turn()
            sizes.append(os.path.getsize(self.path))
            turns += 1
        steps = [after - before for before, after in zip(sizes, sizes[1:])]
        self.assertLessEqual(max(steps), 1 << 18)
        self.assertGreater(turns, 10)
        self.assertEqual(len(self.successResultOf(copied).appended), 1)
        self.assertEqual(len(self.successResultOf(queued).appended), 1)
        with open(self.path, "rb") as f:
            f.seek(start)
            self.assertEqual(f.read(), line + small)
        self.assertEqual(self.listener.told, [(b"p", 0), (b"q", 0)])
        self.assertEqual(other.told, [(b"p", 0)])

    def test_copyStopped(self):
        """
        A service stopped while copying a large add in cuts the log back
        to where it was and unlocks it.
        """
        before = os.path.getsize(self.path)
        copied = self.startCopy(
            encodeAdd([(b"by", b"p"), (b"at", b"0"), (b"m", b"x" * (3 * LARGE))])
        )
        self.turn()
        self.assertGreater(os.path.getsize(self.path), before)
        self.service.stopService()
        self.turn()
        self.failureResultOf(copied)
        self.assertEqual(os.path.getsize(self.path), before)
        self.log.say([(b"m", b"after")])
        self.assertFalse(self.log.state().holds(b"p", 0))

    def checkedWhole(self):
        """
        Record the length of every line checked whole (held in memory).
        """
        lengths = []

        def recording(records):
            lengths.extend(map(len, records))
            return checkRecords(records)

        self.patch(logfile, "checkRecords", recording)
        return lengths

    def test_largeAppendedElsewhere(self):
        """
        A large add that another writer appends is found, checked a piece
        at a time, never read whole, and sent from the log; a huge torn
        line after it is not read whole either.
        """
        line = encodeAdd([(b"by", b"p"), (b"at", b"0"), (b"m", b"x" * (4 * LARGE))])
        with open(self.path, "ab") as f:
            f.write(line + b"y" * (4 * LARGE))
        lengths = self.checkedWhole()
        self.service.changed()
        self.assertLess(max(lengths, default=0), 2 * LARGE)
        self.assertEqual(self.listener.told, [(b"p", 0)])
        ((found, key),) = [
            item for block in self.service.linesFor({b"p": Intervals([(0, 1)])}) for item in block
        ]
        self.assertIsInstance(found, LargeLine)
        self.assertEqual(self.service.readLine(found, 0, len(line)), line)

    def test_largeCaughtUp(self):
        """
        A log read without a cache checks a large add a piece at a time,
        and a large damaged one is counted as damage.
        """
        line = encodeAdd([(b"by", b"p"), (b"at", b"0"), (b"m", b"x" * (4 * LARGE))])
        damaged = line.replace(b"at=0", b"at=1")
        with open(self.path, "ab") as f:
            f.write(line + damaged)
        os.unlink(Log(self.path).cachePath)
        lengths = self.checkedWhole()
        state = Log(self.path).state()
        self.assertLess(max(lengths, default=0), 2 * LARGE)
        self.assertTrue(state.holds(b"p", 0))
        self.assertFalse(state.holds(b"p", 1))
        self.assertEqual(state.damaged, 1)
        self.assertEqual(state.offset, os.path.getsize(self.path))

    def test_staleSpoolRemoved(self):
        """
        Spool files of large adds left by a process that died are removed
        when the service starts.
        """
        directory, name = os.path.split(self.path)
        stale = os.path.join(directory, f".{name}.gossip-incoming-x1y2")
        with open(stale, "wb") as f:
            f.write(b"half an add")
        service = LogService(Log(self.path), Clock(), useInotify=False)
        service.startService()
        self.addCleanup(service.stopService)
        self.assertFalse(os.path.exists(stale))

    def test_linesFor(self):
        """
        The lines asked for come from the recent index or from a scan, and
        are the log's own bytes.
        """
        lines = [encodeAdd([(b"by", b"p"), (b"at", b"%d" % i)]) for i in range(5)]
        self.successResultOf(self.service.receive(b"".join(lines)))
        wanted = {b"p": Intervals([(1, 3)])}
        found = [item for found in self.service.linesFor(wanted) for item in found]
        self.assertEqual(found, [(lines[1], (b"p", 1)), (lines[2], (b"p", 2))])
        # A new service knows nothing recent and scans the file.
        fresh = LogService(Log(self.path), Clock(), useInotify=False)
        fresh.startService()
        self.addCleanup(fresh.stopService)
        found = [item for found in fresh.linesFor(wanted) for item in found]
        self.assertEqual(found, [(lines[1], (b"p", 1)), (lines[2], (b"p", 2))])

    def test_linesForStretch(self):
        """
        A scan hands over a block of the log that is wanted whole, each
        origin's serials following one another, as a L{Stretch}: the same
        lines, and the spans of their keys.
        """
        lines = [
            encodeAdd([(b"by", by), (b"at", b"%d" % i)]) for i in range(4) for by in (b"p", b"q")
        ]
        self.successResultOf(self.service.receive(b"".join(lines)))
        fresh = LogService(Log(self.path), Clock(), useInotify=False)
        fresh.startService()
        self.addCleanup(fresh.stopService)
        me = fresh.identity
        keys = [(me, 0)] + [(by, i) for i in range(4) for by in (b"p", b"q")]
        with open(self.path, "rb") as f:
            mine = f.read().splitlines(True)[1]
        everything = {b"p": Intervals([(0, 4)]), b"q": Intervals([(0, 4)]), me: Intervals([(0, 1)])}
        [stretch] = fresh.linesFor(everything)
        self.assertIsInstance(stretch, Stretch)
        self.assertEqual(stretch.spans, {me: [0, 1], b"p": [0, 4], b"q": [0, 4]})
        self.assertEqual(list(stretch), list(zip([mine] + lines, keys)))
        # Part of it wanted: line by line.
        [found] = fresh.linesFor({b"p": Intervals([(0, 4)]), b"q": Intervals([(1, 4)])})
        self.assertEqual(found, [(line, key) for line, key in zip(lines, keys[1:]) if key != (b"q", 0)])

    def test_unclaimed(self):
        """
        What one session is fetching is not wanted by another.
        """
        self.listener.pending = {b"p": Intervals([(0, 5)])}
        self.assertEqual(
            self.service.unclaimed({b"p": Intervals([(3, 8)])}), {b"p": Intervals([(5, 8)])}
        )

    def test_sources(self):
        """
        Each origin is streamed from one session: the first that offers
        it, unless its writer or a summary that shows more of it comes;
        when that session ends, from the next that holds it, until another
        session offers it.
        """

        def session(node, held):
            listener = Listener()
            listener.peerNode = node
            listener.peerHave = held
            self.service.sessionStarted(listener)
            return listener

        first = session(b"n1", {b"w": Intervals([(0, 3)])})
        second = session(b"n2", {b"w": Intervals([(0, 3)])})
        self.service.offered(first, [b"w"])
        self.service.offered(second, [b"w"])
        self.assertIs(self.service.sourceOf(b"w"), first)
        self.assertEqual((first.streamed, second.streamed), ({b"w": True}, {}))
        # More of it, by a summary: the stream moves.
        second.peerHave = {b"w": Intervals([(0, 5)])}
        self.service.offered(second, [b"w"])
        self.assertIs(self.service.sourceOf(b"w"), second)
        self.assertEqual((first.streamed, second.streamed), ({b"w": False}, {b"w": True}))
        # Its writer: the stream moves there, whatever it holds.
        writer = session(b"w", {})
        self.service.noted(writer, {})
        self.service.offered(writer, [b"w"])
        self.assertIs(self.service.sourceOf(b"w"), writer)
        # The writer's session ends: the one that holds the most takes
        # over, and gives way to the next that offers the origin.
        self.service.sessionEnded(writer)
        self.assertIs(self.service.sourceOf(b"w"), second)
        self.service.offered(first, [b"w"], summary=False)
        self.assertIs(self.service.sourceOf(b"w"), first)
        self.assertEqual(second.streamed, {b"w": False})

    def twin(self, node, boot, dialled):
        listener = Listener()
        listener.service = self.service
        listener.peerNode, listener.peerBoot, listener.dialled = node, boot, dialled
        self.service.sessionStarted(listener)
        self.service.joined(listener)
        return listener

    def test_twinsAcrossDials(self):
        """
        Two sessions with the same service of a peer, one dialled each way
        (both ends list the link): the one dialled by the node whose
        identity sorts first is kept, whichever came first; a session
        ending for the other says why.
        """
        me = self.service.identity
        below, above = b"\x00" + me, me + b"\x00"
        self.assertLess(below, me)
        self.assertLess(me, above)
        # The peer's identity sorts after this node's: this node's dial wins.
        theirs = self.twin(above, b"b1", dialled=False)
        mine = self.twin(above, b"b1", dialled=True)
        self.assertIn("this node's own session", theirs.superseded)
        self.assertIsNone(mine.superseded)
        self.assertIs(self.service.linkWith(above), mine)
        self.assertIsNone(self.service.keptOver(mine))
        # A twin ended by the peer before this end saw the peer's hello on it.
        late = Listener()
        late.service = self.service
        late.peerNode, late.peerBoot = above, b"b1"
        self.service.sessionStarted(late)
        self.assertIn("this node's own session", self.service.keptOver(late))
        # The other way round, the new session is the one that goes.
        theirs = self.twin(below, b"b2", dialled=False)
        mine = self.twin(below, b"b2", dialled=True)
        self.assertIsNone(theirs.superseded)
        self.assertIn("its session with this node", mine.superseded)
        self.assertIs(self.service.linkWith(below), theirs)

    def test_twinsOneWay(self):
        """
        Two sessions the same node dialled: the newer is kept (the node lost
        the older); sessions with another process of the node (another
        boot), or that do not last, are not twins.
        """
        peer = b"p" * 16
        old = self.twin(peer, b"b1", dialled=False)
        new = self.twin(peer, b"b1", dialled=False)
        self.assertEqual(old.superseded, "a newer session with the same peer replaces it")
        self.assertIsNone(new.superseded)
        other = self.twin(peer, b"b2", dialled=False)
        once = self.twin(peer, None, dialled=False)
        self.assertIsNone(other.superseded)
        self.assertIsNone(once.superseded)
        self.assertIsNone(self.service.linkWith(b"q" * 16))


def intactKeys(path):
    """
    The C{(by, at)} of every intact add in the log at C{path}.
    """
    with open(path, "rb") as f:
        return {
            identify(body)
            for offset, record, body in entries(f)
            if body is not None and identify(body) is not None
        }


def flipInMiddle(path):
    """
    Flip one byte of the add in the middle of the log at C{path} as a
    failing disk would: same inode, size and modification time.

    @return: the damaged line's offset and length, and its C{(by, at)}.
    """
    with open(path, "rb") as f:
        data = f.read()
    lines = data.split(b"\n")[:-1]
    index = len(lines) // 2
    offset = sum(len(line) + 1 for line in lines[:index])
    length = len(lines[index]) + 1
    key = identify(lines[index][lines[index].index(b"<") + 1 : lines[index].rindex(b">")])
    before = os.stat(path)
    with open(path, "r+b") as f:
        f.seek(offset + length // 2)
        f.write(bytes([data[offset + length // 2] ^ 0x20]))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    return offset, length, key


class ScrubTests(SynchronousTestCase):
    """
    The scrub verifies a log a slice at a time on the service's clock, at
    its pace, and has what it finds lost fetched again.
    """

    def setUp(self):
        self.clock = Clock()
        self.path = self.mktemp()
        log = Log(self.path)
        for n in range(200):
            log.say([(b"n", b"%d" % n), (b"m", b"some words to make the line longer")])
        self.size = os.path.getsize(self.path)
        self.events = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def startService(self, **kwargs):
        service = LogService(Log(self.path), self.clock, useInotify=False, **kwargs)
        service.startService()
        self.addCleanup(service.stopService)
        return service

    def warnings(self):
        return [
            event["log_format"].format(**event)
            for event in self.events
            if event.get("log_namespace", "").startswith("gossip.sync.service.")
            and event["log_level"].name in ("warn", "error")
        ]

    def nextCall(self):
        """
        Advance the clock to its next delayed call, and run it.
        """
        soonest = min(call.getTime() for call in self.clock.getDelayedCalls())
        self.clock.advance(soonest - self.clock.seconds())

    def scrubber(self, service, *args, **kwargs):
        scrubber = Scrubber(service, self.clock, *args, **kwargs)
        scrubber.start()
        self.addCleanup(scrubber.stop)
        return scrubber

    def scrubberCall(self, scrubber):
        (call,) = [c for c in self.clock.getDelayedCalls() if c.func == scrubber._step]
        return call

    def test_pace(self):
        """
        A pass takes about C{period} seconds of the clock, a slice at a
        time, and the next begins a period after the last began.
        """
        service = self.startService()
        passes = []
        service.scrubbed = lambda scan, held: passes.append((self.clock.seconds(), scan))
        scrubber = self.scrubber(service, 1000.0, slice=1024, timer=lambda: 0.0)
        steps = 0
        while not passes:
            if self.scrubberCall(scrubber).getTime() > self.clock.seconds():
                steps += 1
            self.nextCall()
        finished, scan = passes[0]
        self.assertEqual((scan.end, scan.regions), (self.size, []))
        self.assertGreaterEqual(steps, self.size // 1024)
        # The last slice is checked when the others' share of the period
        # has passed.
        self.assertLessEqual(finished, 1000.0)
        self.assertGreaterEqual(finished, 1000.0 * (1 - 1024 / self.size) - 1)
        self.assertAlmostEqual(self.scrubberCall(scrubber).getTime(), 1000.0, delta=1e-6)
        while len(passes) < 2:
            self.nextCall()
        self.assertAlmostEqual(passes[1][0], 1000.0 + finished, delta=1e-6)

    def test_share(self):
        """
        However short its period, the scrub waits after each slice at least
        the time the slice took divided by its share of the core.
        """
        service = self.startService()
        ticks = iter(range(10**6))
        scrubber = self.scrubber(
            service, 0.001, slice=1024, share=0.02, timer=lambda: next(ticks) * 0.01
        )
        self.clock.advance(0)
        call = self.scrubberCall(scrubber)
        self.assertAlmostEqual(call.getTime() - self.clock.seconds(), 0.01 / 0.02)

    def test_off(self):
        """
        The service scrubs only when given a period, and stops scrubbing
        when it stops.
        """
        calls = self.clock.getDelayedCalls
        service = self.startService()
        plain = len(calls())
        self.assertGreater(plain, 0)
        scrubbing = self.startService(scrubPeriod=60.0)
        self.assertEqual(len(calls()), 2 * plain + 1)
        scrubbing.stopService()
        service.stopService()
        self.assertEqual(calls(), [])

    def test_readError(self):
        """
        A log that cannot be read (a failing disk) is logged, and a pass cut
        short forgets nothing; the scrub tries again a period later.
        """
        service = self.startService()
        held = {by: Intervals(ats.ranges()) for by, ats in service.have.items()}

        def fail(scan, fd, size):
            raise OSError(errno.EIO, "Input/output error")

        self.patch(Scan, "step", fail)
        scrubber = self.scrubber(service, 100.0)
        self.clock.advance(0)
        self.assertEqual(self.warnings(), [f"{self.path}: cannot scrub: [Errno 5] Input/output error"])
        self.assertEqual(service.have, held)
        self.assertEqual(self.scrubberCall(scrubber).getTime(), 100.0)

    def test_findsDamage(self):
        """
        Damage that changed neither the log's size nor its time is found
        within a period: logged as its region, the add it held dropped from
        what the service and the cache say the log holds, and the sessions
        asked to fetch it.
        """
        service = self.startService(scrubPeriod=100.0)
        listener = Listener()
        service.sessionStarted(listener)
        offset, length, (by, at) = flipInMiddle(self.path)
        self.assertIn(at, service.have[by])
        # The first pass begins at once, and the log is one slice.
        self.clock.advance(0)
        self.assertEqual(
            self.warnings(),
            [
                f"{self.path}: damaged: {length} bytes at byte {offset}",
                f"{self.path}: 1 add lost to damage; fetching from peers",
            ],
        )
        self.assertNotIn(at, service.have[by])
        self.assertFalse(Log(self.path).state().holds(by, at))
        self.assertEqual(listener.requested, 1)
        # The next pass finds the damage again, but nothing more lost.
        del self.events[:]
        for _ in range(100):
            self.clock.advance(1.0)
        self.assertEqual(self.warnings(), [f"{self.path}: damaged: {length} bytes at byte {offset}"])
        self.assertEqual(listener.requested, 1)


class ScrubHealsTests(SynchronousTestCase):
    """
    Two nodes synced over in-memory transports: damage to one's file is
    found by its scrub and the add fetched from the other.
    """

    def node(self, name, says=0):
        directory = self.mktemp()
        os.makedirs(directory)
        path = os.path.join(directory, "test.log")
        log = Log(path)
        log.state(create=True)
        for n in range(says):
            log.say([(b"n", b"%d" % n), (b"m", b"a line of some length")])
        service = LogService(Log(path), self.clock, useInotify=False, scrubPeriod=600.0)
        service.startService()
        self.addCleanup(service.stopService)
        return service

    def test_heals(self):
        self.clock = Clock()
        a = self.node("a", says=100)
        b = self.node("b")
        pa = SyncProtocol(a, "b", QUIET, reactor=self.clock)
        pb = SyncProtocol(b, "a", QUIET, reactor=self.clock)
        pump = iosim.connect(
            pa, iosim.makeFakeServer(pa), pb, iosim.makeFakeClient(pb), clock=self.clock
        )
        self.addCleanup(pump.flush)
        self.addCleanup(pa.transport.loseConnection)
        for _ in range(50):
            pump.pump()
            self.clock.advance(0)
        self.assertEqual(intactKeys(b.log.path), intactKeys(a.log.path))
        offset, length, key = flipInMiddle(b.log.path)
        self.assertNotIn(key, intactKeys(b.log.path))
        for _ in range(700):
            self.clock.advance(1.0)
            pump.pump()
            if key in intactKeys(b.log.path):
                break
        self.assertEqual(intactKeys(b.log.path), intactKeys(a.log.path))
        self.assertTrue(b.log.state().holds(*key))
        self.assertIn(key[1], b.have[key[0]])


class PlacesTests(SynchronousTestCase):
    """
    L{_Places} knows where at least the last C{limit} adds noted are, in
    batches noted at no cost for each add.
    """

    def batch(self, places, origin, start, count, offset):
        keys = [(origin, at) for at in range(start, start + count)]
        lengths = [10] * count
        offsets = [offset + 10 * i for i in range(count + 1)]
        places.add(count, lambda: (keys, offsets, lengths))
        return offsets[-1]

    def test_placesOnLookUp(self):
        """
        A batch's places are found only once an add is looked up, and
        once only.
        """
        places = _Places(100)
        asked = []

        def found():
            asked.append(True)
            return [(b"p", 0), (b"p", 1)], [0, 10, 20], [10, 10]

        places.add(2, found)
        self.assertEqual((len(places), asked), (2, []))
        self.assertEqual(places.get((b"p", 1)), (10, 10))
        self.assertEqual(places.get((b"p", 0)), (0, 10))
        self.assertEqual(asked, [True])

    def test_newestFirst(self):
        """
        A look-up of an add noted last asks no batch before it for its
        places; one of an older add, or of an add never noted, asks those
        between, newest first.
        """
        places = _Places(100)
        asked = []

        def batch(n):
            def found():
                asked.append(n)
                return [(b"p", n)], [10 * n], [10]

            return found

        for n in range(5):
            places.add(1, batch(n))
        self.assertEqual(places.get((b"p", 4)), (40, 10))
        self.assertEqual(asked, [4])
        self.assertEqual(places.get((b"p", 2)), (20, 10))
        self.assertEqual(asked, [4, 3, 2])
        places.add(1, batch(5))
        self.assertIsNone(places.get((b"q", 0)))
        self.assertEqual(asked, [4, 3, 2, 5, 1, 0])

    def test_lastNoted(self):
        """
        Whatever the batches and the lookups between them, the last
        C{limit} adds noted are found where they were noted, and adds long
        gone are not found.
        """
        places = _Places(100)
        offset = 0
        for n in range(30):
            offset = self.batch(places, b"p", 7 * n, 7, offset)
            if n % 4 == 0:
                self.assertEqual(places.get((b"p", 7 * n)), (70 * n, 10))
        self.assertGreaterEqual(len(places), 100)
        self.assertLess(len(places), 100 + 7)
        for at in range(210 - 100, 210):
            self.assertEqual(places.get((b"p", at)), (10 * at, 10))
        self.assertIsNone(places.get((b"p", 0)))
        self.assertIsNone(places.get((b"p", 50)))

    def test_clear(self):
        places = _Places(10)
        self.batch(places, b"p", 0, 5, 0)
        self.assertEqual(places.get((b"p", 3)), (30, 10))
        places.clear()
        self.assertEqual(len(places), 0)
        self.assertIsNone(places.get((b"p", 3)))
