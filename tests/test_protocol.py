"""
Tests for L{gossip.sync.protocol}: sync sessions between real log files over
in-memory transports (L{twisted.test.iosim}), with a fake clock.
"""

import os
import random

import attrs
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.protocols import amp
from twisted.python.failure import Failure
from twisted.test import iosim
from twisted.trial.unittest import SynchronousTestCase

from gossip.sync import protocol as protocolModule
from gossip.sync import service as serviceModule
from gossip.store.format import decodeBody, encodeAdd, identify
from gossip.store.intervals import Intervals, merge
from gossip.store.logfile import LARGE, Log, entries
from gossip.sync.amp import (
    VALUE_LIMIT,
    AddBegin,
    AddEnd,
    AddPart,
    Adds,
    Ping,
    ProtocolError,
    decodeRanges,
    encodeRanges,
)
from gossip.sync.protocol import (
    REFUSALS,
    TRANSITIONS,
    WINDOW,
    End,
    Gave,
    Had,
    SessionState,
    SyncProtocol,
)
from gossip.sync.service import LogService
from gossip.sync.settings import SessionSettings


def adds(path):
    """
    The C{(by, at)} of every intact add in the log at C{path}, in order.
    """
    with open(path, "rb") as f:
        found = []
        for offset, record, body in entries(f):
            assert body is not None, f"corrupt line at {offset}"
            key = identify(body)
            if key is not None:
                found.append(key)
        return found


def spools(path):
    """
    The spool files of large adds being received beside the log at C{path}.
    """
    directory, name = os.path.split(path)
    return [n for n in os.listdir(directory) if n.startswith(f".{name}.gossip-incoming-")]


def line(by, at, value=b"x"):
    return encodeAdd([(b"by", by), (b"at", b"%d" % (at,)), (b"m", value)])


def makeLog(path, keys=(), says=0):
    """
    A log at C{path} holding adds C{keys} by other origins, then C{says}
    adds of its own.
    """
    log = Log(path)
    log.state(create=True)
    with open(path, "ab") as f:
        for by, at in keys:
            f.write(line(by, at, b"%s-%d" % (by, at)))
    for i in range(says):
        log.say([(b"m", b"own %d" % (i,))])
    return log


class Node:
    """
    A log service on a fake clock.
    """

    def __init__(self, test, path, clock):
        self.path = path
        self.service = LogService(Log(path), clock, useInotify=False)
        self.service.startService()
        test.addCleanup(self.service.stopService)

    def session(self, peer, anyName=False, **kwargs):
        settings = SessionSettings(anyName=anyName, keepalive=0)
        return SyncProtocol(self.service, peer, settings, reactor=self.service.reactor, **kwargs)


def pumpUntil(clock, pumps, done, rounds=5000):
    for _ in range(rounds):
        for pump in pumps:
            pump.pump()
        clock.advance(0)
        if done():
            for pump in pumps:
                pump.flush()
            return
    raise AssertionError("the sessions did not finish")


class SessionMixin:
    def setUp(self):
        self.clock = Clock()
        self.directory = self.mktemp()
        os.makedirs(self.directory)

    def node(self, name, keys=(), says=0, directory=None):
        directory = directory or os.path.join(self.directory, str(len(os.listdir(self.directory))))
        os.makedirs(directory, exist_ok=True)
        path = os.path.join(directory, name)
        makeLog(path, keys, says)
        return Node(self, path, self.clock)

    def connect(self, a, b, **kwargs):
        pa = a.session("b", **kwargs)
        pb = b.session("a", **kwargs)
        pump = iosim.connect(
            pa, iosim.makeFakeServer(pa), pb, iosim.makeFakeClient(pb), clock=self.clock
        )
        return pa, pb, pump

    def syncOnce(self, a, b, **kwargs):
        pa, pb, pump = self.connect(a, b, once=True, **kwargs)
        finished = []
        pa.whenFinished().addCallback(finished.append)
        pb.whenFinished().addCallback(finished.append)
        pumpUntil(self.clock, [pump], lambda: len(finished) == 2)
        return pa, pb

    def assertSame(self, a, b):
        keysA, keysB = adds(a.path), adds(b.path)
        self.assertEqual(len(keysA), len(set(keysA)), "an add twice in a")
        self.assertEqual(len(keysB), len(set(keysB)), "an add twice in b")
        self.assertEqual(set(keysA), set(keysB))


class RangesTests(SynchronousTestCase):
    """
    Summaries as values.
    """

    @given(
        st.dictionaries(
            st.binary(min_size=1, max_size=20),
            st.sets(st.integers(min_value=0, max_value=500), min_size=1),
            max_size=8,
        ),
        st.integers(min_value=80, max_value=2000),
    )
    @settings(max_examples=100, deadline=None)
    def test_roundTrip(self, have, limit):
        """
        Whatever the limit, the parts are within it and decode to the same
        sets.
        """
        intervals = {}
        for by, ats in have.items():
            held = intervals[by] = Intervals()
            for at in ats:
                held.add(at)
        parts = encodeRanges(intervals, limit=limit)
        decoded = {}
        for part in parts:
            self.assertLessEqual(len(part), limit)
            for by, held in decodeRanges(part).items():
                decoded.setdefault(by, set()).update(held)
        self.assertEqual(decoded, have)

    def test_malformed(self):
        """
        Malformed summaries are protocol errors.
        """
        for value in [b"zz 0-1\n", b"6162 0-1", b"6162 a-b\n", b"6162\n", b"6162 1-2-3\n"]:
            self.assertRaises(ProtocolError, decodeRanges, value)

    def test_largestNumbers(self):
        """
        A range may end anywhere up to 2**63 (no serial is larger), written
        in at most 19 digits; a number of 20 digits is a protocol error,
        never an overflow.
        """
        top = 2**63
        self.assertEqual(
            decodeRanges(b"6162 %d-%d\n" % (top - 1, top))[b"ab"].ranges(), [(top - 1, top)]
        )
        self.assertEqual(
            decodeRanges(b"6162 0-9999999999999999999\n")[b"ab"].end(), 9999999999999999999
        )
        self.assertRaises(ProtocolError, decodeRanges, b"6162 0-18446744073709551616\n")
        self.assertRaises(ProtocolError, decodeRanges, b"6162 0-10000000000000000000\n")


# Which field of a SessionState each line's states are in.
FIELDS = {Had: "had", Gave: "gave", End: "end"}


class SessionStateTests(SynchronousTestCase):
    """
    A session's life cycle, L{gossip.sync.protocol.TRANSITIONS}, walked a
    move at a time.
    """

    # Where the other lines stand makes no difference to a move.
    elsewhere = [
        SessionState(),
        SessionState(had=Had.SUMMARY, gave=Gave.CAUGHT_UP, end=End.CLOSING),
        SessionState(had=Had.CAUGHT_UP, gave=Gave.SUMMARY, end=End.CLOSED),
    ]

    def at(self, where, base):
        """
        C{base} but with the line of C{where} at C{where}.
        """
        return attrs.evolve(base, **{FIELDS[type(where)]: where})

    def test_allowed(self):
        """
        Every move the table lists moves its line, and only its line, where
        the table says.
        """
        for base in self.elsewhere:
            for (where, event), to in TRANSITIONS.items():
                before = self.at(where, base)
                self.assertEqual(before.after(event), self.at(to, base), (where, event))

    def test_refused(self):
        """
        A peer's message out of order is a L{ProtocolError} that says why,
        and the state is as it was.
        """
        self.assertFalse(set(REFUSALS) & set(TRANSITIONS))
        for base in self.elsewhere:
            for (where, event), why in REFUSALS.items():
                before = self.at(where, base)
                error = self.assertRaises(ProtocolError, before.after, event)
                self.assertEqual(str(error), why)
                self.assertEqual(before, self.at(where, base))

    def test_secondHello(self):
        for where in (Had.HELLO, Had.SUMMARY, Had.CAUGHT_UP):
            error = self.assertRaises(ProtocolError, SessionState(had=where).after, "hello")
            self.assertEqual(str(error), "a second hello")

    def test_noMove(self):
        """
        An event the table has no move or reason for, where it happens, is
        a fault of this node, not of the peer.
        """
        for where, event in [
            (Had.NOTHING, "have"),
            (Had.NOTHING, "caughtUp"),
            (Had.HELLO, "caughtUp"),
            (Had.CAUGHT_UP, "caughtUp"),
            (Had.SUMMARY, "lastHave"),
            (Gave.NOTHING, "helloAccepted"),
            (Gave.HELLO, "helloSent"),
            (Gave.SUMMARY, "helloAccepted"),
            (Gave.CAUGHT_UP, "helloAccepted"),
            (End.CLOSED, "lost"),
        ]:
            self.assertNotIn((where, event), TRANSITIONS)
            self.assertRaises(ValueError, self.at(where, SessionState()).after, event)

    def test_everyStateReached(self):
        """
        From the start, the table reaches every state of every line.
        """
        reached = {Had.NOTHING, Gave.NOTHING, End.OPEN}
        while True:
            more = {to for (where, event), to in TRANSITIONS.items() if where in reached}
            if more <= reached:
                break
            reached |= more
        self.assertEqual(reached, set(Had) | set(Gave) | set(End))

    def walk(self, *events):
        state = SessionState()
        synced = []
        for event in events:
            state = state.after(event)
            synced.append(state.synced)
        return state, synced

    def test_ordinary(self):
        """
        The order a peer that follows docs/protocol.md keeps: synced once
        both ends have caught up, and still once the session has ended.
        """
        events = ["helloSent", "hello", "helloAccepted", "have", "lastHave", "announce"]
        events += ["peerSynced", "caughtUp", "announce", "peerSynced", "lost"]
        state, synced = self.walk(*events)
        self.assertEqual(state, SessionState(Had.CAUGHT_UP, Gave.CAUGHT_UP, End.CLOSED))
        self.assertEqual(synced, [False] * 7 + [True] * 4)

    def test_summaryBeforeAnswer(self):
        """
        The peer's summary may come before its answer to our hello, and the
        session may catch up before it too.
        """
        state, synced = self.walk("helloSent", "hello", "lastHave", "caughtUp", "helloAccepted")
        self.assertEqual(state, SessionState(Had.CAUGHT_UP, Gave.SUMMARY))
        self.assertEqual(synced, [False] * 5)

    def test_syncedBeforeAnswer(self):
        """
        A Synced before the peer has answered our hello, and so before it
        can have had our summary, is refused.
        """
        state, _ = self.walk("helloSent", "hello", "lastHave", "caughtUp")
        error = self.assertRaises(ProtocolError, state.after, "peerSynced")
        self.assertEqual(str(error), "Synced before our summary")
        self.assertRaises(ProtocolError, SessionState().after, "peerSynced")

    def test_serverChosen(self):
        """
        A server that waits for the client's hello to choose its log says
        its own hello then.
        """
        state, _ = self.walk("hello", "helloSent", "fail", "fail", "lost")
        self.assertEqual(state, SessionState(Had.HELLO, Gave.HELLO, End.CLOSED))

    def test_failedAfterClosed(self):
        """
        A failure once the connection is lost (a question it left
        unanswered) changes nothing.
        """
        state, _ = self.walk("lost", "fail")
        self.assertEqual(state.end, End.CLOSED)


class OnceTests(SessionMixin, SynchronousTestCase):
    """
    One-shot sessions bring two logs to the same set of adds.
    """

    def test_disjointAndOverlapping(self):
        a = self.node("log", [(b"p", i) for i in range(10)] + [(b"q", 3)], says=3)
        b = self.node(
            "log", [(b"p", i) for i in range(5, 20)] + [(b"q", i) for i in range(3)], says=2
        )
        pa, pb = self.syncOnce(a, b)
        self.assertTrue(pa.succeeded and pb.succeeded)
        ended = SessionState(had=Had.CAUGHT_UP, gave=Gave.CAUGHT_UP, end=End.CLOSED)
        self.assertEqual((pa.sessionState, pb.sessionState), (ended, ended))
        self.assertSame(a, b)
        # a lacked p 10-19, q 0-2 and b's 2 own adds; b lacked p 0-4, q 3, a's 3.
        self.assertEqual((pa.received, pb.received), (15, 9))
        self.assertEqual((pa.sent, pb.sent), (9, 15))

    def test_againMovesNothing(self):
        a = self.node("log", [(b"p", i) for i in range(5)])
        b = self.node("log", says=4)
        self.syncOnce(a, b)
        sizes = os.path.getsize(a.path), os.path.getsize(b.path)
        pa, pb = self.syncOnce(a, b)
        self.assertEqual((pa.received, pb.received, pa.sent, pb.sent), (0, 0, 0, 0))
        self.assertEqual((os.path.getsize(a.path), os.path.getsize(b.path)), sizes)

    @given(
        st.lists(
            st.tuples(
                st.sampled_from([b"o1", b"o2", b"o3", b"%weird=by&"]),
                st.integers(min_value=0, max_value=40),
                st.sampled_from(["a", "b", "both"]),
            ),
            max_size=60,
        ),
        st.integers(min_value=0, max_value=3),
        st.integers(min_value=0, max_value=3),
    )
    @settings(
        max_examples=40,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture],
    )
    def test_converge(self, placed, saysA, saysB):
        """
        Two logs with random overlapping adds (several origins, gaps, adds
        on both sides) hold the same set after one sync, each add once.
        """
        self.setUp()
        seen = set()
        keysA, keysB = [], []
        for by, at, where in placed:
            if (by, at) in seen:
                continue
            seen.add((by, at))
            if where in ("a", "both"):
                keysA.append((by, at))
            if where in ("b", "both"):
                keysB.append((by, at))
        a = self.node("log", keysA, saysA)
        b = self.node("log", keysB, saysB)
        pa, pb = self.syncOnce(a, b)
        self.assertTrue(pa.succeeded and pb.succeeded)
        self.assertSame(a, b)
        self.assertEqual(len(adds(a.path)), len(seen) + saysA + saysB)

    @given(
        st.lists(
            st.tuples(st.integers(0, 30), st.integers(0, 30)), min_size=1, max_size=3
        ),
        st.randoms(use_true_random=False),
        st.integers(min_value=0, max_value=3),
    )
    @settings(
        max_examples=30,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture],
    )
    def test_convergeInOrder(self, counts, order, saysB):
        """
        Logs written in order, as real ones are, each origin's adds in
        turn: a holds the first C{na} of each origin, b the first C{nb}.
        Where b holds none, a's log goes over as whole stretches; either
        way both end with the same set, each add once.
        """
        self.setUp()
        self.patch(serviceModule, "_RECENT", 1)
        origins = [b"o%d" % (i,) for i in range(len(counts))]

        def interleaved(lengths):
            turns = [by for by, n in zip(origins, lengths) for _ in range(n)]
            order.shuffle(turns)
            following = dict.fromkeys(origins, 0)
            keys = []
            for by in turns:
                keys.append((by, following[by]))
                following[by] += 1
            return keys

        a = self.node("log", interleaved([na for na, nb in counts]))
        b = self.node("log", interleaved([nb for na, nb in counts]), saysB)
        pa, pb = self.syncOnce(a, b)
        self.assertTrue(pa.succeeded and pb.succeeded)
        self.assertSame(a, b)
        expected = sum(max(na, nb) for na, nb in counts)
        self.assertEqual(len(adds(b.path)), expected + saysB)

    def test_largeAdd(self):
        """
        An add larger than one AMP value goes in parts and arrives intact.
        """
        a = self.node("log")
        big = os.urandom(VALUE_LIMIT * 3 + 17)
        a.service.log.say([(b"blob", big)])
        b = self.node("log")
        self.syncOnce(a, b)
        with open(b.path, "rb") as f:
            bodies = [body for offset, record, body in entries(f)]
        values = [dict(decodeBody(body)).get(b"blob") for body in bodies]
        self.assertIn(big, values)

    def test_largerThanRead(self):
        """
        Adds larger than a sender reads at once, found by reading the log
        or among the adds it has just received, go from one log to another
        and on to a third intact, in many parts; no spool file is left.
        """
        self.patch(serviceModule, "_RECENT", 1)
        a = self.node("log", says=1)
        values = [os.urandom(LARGE + 1000), b"v" * (LARGE * 2 + 3)]
        for value in values:
            a.service.log.say([(b"blob", value)])
        with open(a.path, "ab") as f:
            f.write(line(b"o1", 0))
        b = self.node("log")
        parts = []
        callRemote = SyncProtocol.callRemote

        def counted(protocol, command, **arguments):
            if command is AddPart:
                parts.append(len(arguments["data"]))
                # However slow the peer, no more than WINDOW parts are
                # unanswered (besides a Request and a Synced of its own).
                self.assertLessEqual(len(protocol._outstandingRequests), WINDOW + 2)
            return callRemote(protocol, command, **arguments)

        self.patch(SyncProtocol, "callRemote", counted)
        pa, pb = self.syncOnce(a, b)
        self.assertTrue(pa.succeeded and pb.succeeded)
        self.assertSame(a, b)
        self.assertEqual(pb.received, 4)
        self.assertGreater(len(parts), 2 * LARGE // VALUE_LIMIT)
        self.assertLessEqual(max(parts), VALUE_LIMIT)
        # b has just received them: it sends them on from where it wrote them.
        self.patch(serviceModule, "_RECENT", 10)
        c = self.node("log")
        pb2, pc = self.syncOnce(b, c)
        self.assertTrue(pc.succeeded)
        self.assertSame(a, c)
        with open(c.path, "rb") as f:
            found = [dict(decodeBody(body)).get(b"blob") for offset, record, body in entries(f)]
        for value in values:
            self.assertIn(value, found)
        self.assertEqual(spools(b.path) + spools(c.path), [])

    def test_stretches(self):
        """
        Whole stretches of a log that the peer lacks arrive line for line
        whatever the lines' sizes: some just under one AMP value, some
        larger, mixed with blocks the peer partly holds.
        """
        # Few adds are kept recent, so that the sender scans the log.
        self.patch(serviceModule, "_RECENT", 5)
        sizes = random.Random(7)
        a = self.node("log")
        with open(a.path, "ab") as f:
            for at in range(120):
                size = sizes.choice(
                    [0, 10, 1000, VALUE_LIMIT // 3, VALUE_LIMIT - 60 - sizes.randrange(40)]
                    + ([VALUE_LIMIT + 5] if at > 100 else [])
                )
                f.write(line(b"o1", at, b"v" * size))
        b = self.node("log", keys=[(b"o1", 60)])
        values = []
        callRemote = SyncProtocol.callRemote

        def measured(protocol, command, **arguments):
            values.extend(len(value) for value in arguments.values() if isinstance(value, bytes))
            return callRemote(protocol, command, **arguments)

        self.patch(SyncProtocol, "callRemote", measured)
        pa, pb = self.syncOnce(a, b)
        self.assertTrue(pa.succeeded and pb.succeeded)
        self.assertSame(a, b)
        self.assertLessEqual(max(values), VALUE_LIMIT)
        self.assertGreater(max(values), VALUE_LIMIT - 100)

        def hashes(path):
            # Each line by its hash: short, should the test fail.
            with open(path, "rb") as f:
                return {line[:11] for line in f if b"<by=" in line and b"by=o1&at=60&" not in line}

        self.assertEqual(hashes(a.path) - hashes(b.path), set())
        self.assertEqual(len(adds(b.path)), 120)

    def test_namesDiffer(self):
        """
        Logs with different names refuse to sync, unless told otherwise.
        """
        a = self.node("one.log", [(b"p", 0)])
        b = self.node("two.log", [(b"q", 0)])
        before = open(a.path, "rb").read(), open(b.path, "rb").read()
        pa, pb = self.syncOnce(a, b)
        self.assertFalse(pa.succeeded or pb.succeeded)
        self.assertIn("--any-name", pa.failure + pb.failure)
        self.assertEqual((open(a.path, "rb").read(), open(b.path, "rb").read()), before)
        pa, pb = self.syncOnce(a, b, anyName=True)
        self.assertTrue(pa.succeeded and pb.succeeded)
        self.assertSame(a, b)

    def test_itself(self):
        """
        A node will not sync with itself.
        """
        a = self.node("log", [(b"p", 0)])
        other = Node(self, a.path, self.clock)
        # Another process's view of the same log, reached by another name.
        os.symlink(a.path, os.path.join(self.directory, "log"))
        pa, pb = self.syncOnce(a, other)
        self.assertFalse(pa.succeeded or pb.succeeded)
        self.assertIn("same node", pa.failure + pb.failure)

    def test_ownAddRestored(self):
        """
        An add by the node's own identity that it lost comes back, and its
        next C{at} moves past it.
        """
        a = self.node("log", says=3)
        b = self.node("log")
        self.syncOnce(a, b)
        # Lose a's last own add, as to damage, then sync again.
        data = open(a.path, "rb").read()
        last = data[: -1].rfind(b"\n") + 1
        a.service.stopService()
        with open(a.path, "wb") as f:
            f.write(data[:last])
        os.unlink(a.service.log.cachePath)
        restored = Node(self, a.path, self.clock)
        self.assertEqual(restored.service.log.state().nextAt(), 2)
        self.syncOnce(restored, b)
        self.assertEqual(open(a.path, "rb").read(), data)
        self.assertEqual(Log(a.path).state().nextAt(), 3)


class WaiterTests(SessionMixin, SynchronousTestCase):
    """
    Each caller of L{SyncProtocol.whenHandshaken} and
    L{SyncProtocol.whenFinished} gets a L{Deferred} of its own.
    """

    def test_ownDeferreds(self):
        """
        What one caller's callbacks return does not change what another
        caller, earlier or later, is given.
        """
        a = self.node("log", [(b"p", 0)])
        b = self.node("log")
        pa, pb, pump = self.connect(a, b, once=True)
        seen = []
        for waited in (pa.whenHandshaken, pa.whenFinished):
            waited().addCallback(lambda result: "changed")
            waited().addCallback(seen.append)
        pumpUntil(self.clock, [pump], lambda: len(seen) == 2)
        pa.whenHandshaken().addCallback(seen.append)
        pa.whenFinished().addCallback(seen.append)
        self.assertEqual(seen, [pa, True, pa, True])

    def test_failedHandshake(self):
        """
        Each caller waiting for a handshake that never comes is told why.
        """
        a = self.node("log")
        b = self.node("other")
        pa, pb, pump = self.connect(a, b, once=True)
        first, second = pa.whenHandshaken(), pa.whenHandshaken()
        first.addErrback(lambda failure: None)
        pumpUntil(self.clock, [pump], lambda: pa.transport is None)
        self.assertIsNone(self.successResultOf(first))
        self.assertIn("log names differ", str(self.failureResultOf(second).value))
        self.assertIn("log names differ", str(self.failureResultOf(pa.whenHandshaken()).value))


    def test_peerClosed(self):
        """
        A peer that closes the connection, or loses it, before the logs are
        in sync is said to have, in words.
        """
        for error, words in [
            (ConnectionDone(), "the peer closed the connection"),
            (ConnectionLost(), "the connection was lost"),
        ]:
            a = self.node("log")
            session = a.session("b", once=True)
            session.makeConnection(StringTransport())
            # As if the peer had answered the hello.
            session._handshaken.settle(session)
            session.connectionLost(Failure(error))
            self.assertTrue(session.failure.startswith(words), session.failure)
            self.assertFalse(self.successResultOf(session.whenFinished()))

    def test_notTheLogAsked(self):
        """
        A peer that serves another log than the one asked for (as a forced
        command does, whatever the URL names) is refused unless this end
        allows any name.
        """
        for anyName in (False, True):
            a = self.node("log", [(b"p", 0)])
            b = self.node("log")
            pa = a.session("b", anyName=anyName, want=b"other", once=True)
            pb = b.session("a", once=True)
            pump = iosim.connect(
                pa, iosim.makeFakeServer(pa), pb, iosim.makeFakeClient(pb), clock=self.clock
            )
            finished = []
            pa.whenFinished().addBoth(finished.append)
            pumpUntil(self.clock, [pump], lambda: finished)
            if anyName:
                self.assertEqual((finished, pa.failure), ([True], None))
                self.assertSame(a, b)
            else:
                self.assertEqual(finished, [False])
                self.assertIn("the peer serves 'log', not 'other' as asked", pa.failure)
                self.assertEqual(adds(b.path), [])


class UnexpectedErrorTests(SessionMixin, SynchronousTestCase):
    """
    A fault of this node, not the peer's, ends the session and is logged
    with its traceback.
    """

    def test_tracebackKept(self):
        a = self.node("log")
        b = self.node("log", [(b"p", 0)])

        def released():
            # Once: the session's end tells the service again.
            a.service.released = original
            raise RuntimeError("a fault of this node")

        original, a.service.released = a.service.released, released
        pa, pb = self.syncOnce(a, b)
        [failure] = self.flushLoggedErrors(RuntimeError)
        self.assertIn("in released", failure.getTraceback())
        self.assertEqual(pa.failure, "unexpected error: a fault of this node")
        self.assertFalse(pa.succeeded)

    def test_lostForAnyReason(self):
        """
        However the connection is lost (a TLS alert, say), the questions it
        leaves unanswered end the session in one line, not as a fault.
        """
        session = self.node("log").session("b")
        session.makeConnection(StringTransport())
        session.connectionLost(Failure(ValueError("tlsv1 alert unknown ca")))
        self.assertEqual(self.flushLoggedErrors(), [])
        self.assertEqual(session.failure, "tlsv1 alert unknown ca")


class HostileTests(SessionMixin, SynchronousTestCase):
    """
    What a peer sends that is not intact is never written.
    """

    def test_corruptLinesDropped(self):
        a = self.node("log")
        b = self.node("log")
        pa, pb, pump = self.connect(a, b)
        pumpUntil(
            self.clock, [pump], lambda: pb.sessionState.summarised and pa.sessionState.summarised
        )
        good = line(b"p", 0)
        damaged = bytearray(line(b"p", 1))
        damaged[-5] ^= 1
        results = []
        pa.callRemote(Adds, lines=good + bytes(damaged) + b"garbage\n").addBoth(results.append)
        pump.flush()
        self.assertEqual(results, [{}])
        self.assertEqual(adds(b.path), [(b"p", 0)])
        self.assertIsNone(pb.failure)

    def test_malformedSummary(self):
        """
        A malformed summary ends the session; the log is untouched.
        """
        from gossip.sync.amp import Have

        a = self.node("log")
        b = self.node("log", [(b"p", 0)])
        before = open(b.path, "rb").read()
        pa, pb, pump = self.connect(a, b)
        pump.flush()
        pa.callRemote(Have, ranges=b"not hex 1-2\n", last=True).addErrback(lambda f: None)
        pumpUntil(self.clock, [pump], lambda: pb.failure is not None)
        self.assertEqual(open(b.path, "rb").read(), before)


def summaries():
    """
    What a peer may hold: a few origins, each some ranges.
    """
    ranges = st.lists(
        st.tuples(st.integers(0, 60), st.integers(1, 5)), max_size=12
    ).map(lambda pairs: Intervals((start, start + length) for start, length in pairs))
    return st.dictionaries(st.sampled_from([b"a", b"b", b"c", b"d", b"e", b"f"]), ranges)


class SlicedTests(SessionMixin, SynchronousTestCase):
    """
    A peer's summary is taken in, and what it holds sought, a slice of
    origins a turn of the reactor, with the result of doing it in one.
    """

    keys = [(b"a", at) for at in range(0, 40, 3)] + [(b"b", at) for at in range(10)]

    def setUp(self):
        SessionMixin.setUp(self)
        self.log = self.node("log", self.keys)

    def take(self, summary, slice):
        """
        Give a session C{summary} in C{Have}s, with work sliced at C{slice},
        and run what it leaves for later turns one at a time.

        @return: what the session then knows and asked for, and how many
            turns it took.
        """
        self.patch(protocolModule, "_SLICE", slice)
        session = self.log.session("peer")
        transport = StringTransport()
        session.makeConnection(transport)
        # As if the peer had said hello: Have is the next it may send.
        session.sessionState = SessionState(had=Had.HELLO, gave=Gave.HELLO)
        parts = encodeRanges({by: held for by, held in summary.items() if held.ranges()})
        for i, part in enumerate(parts):
            session.have(ranges=part, last=i == len(parts) - 1)
        turns = 0
        while True:
            due = [c for c in self.clock.getDelayedCalls() if c.getTime() <= self.clock.seconds()]
            if not due:
                break
            self.clock.calls.remove(due[0])
            due[0].called = 1
            due[0].func(*due[0].args, **due[0].kw)
            turns += 1
        requested = {}
        for box in amp.parseString(transport.value()):
            if box.get(b"_command") == b"Request":
                merge(requested, decodeRanges(box[b"ranges"]))
        known = {
            "peerHave": {by: held.ranges() for by, held in session.peerHave.items()},
            "pending": {by: held.ranges() for by, held in session.pending.items()},
            "requested": {by: held.ranges() for by, held in requested.items()},
            "expected": session.expected,
        }
        # Its claims are no longer another session's to respect.
        session.connectionLost(Failure(ConnectionDone()))
        return known, turns

    @given(summaries())
    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    def test_sameAsUnsliced(self, summary):
        """
        However small the slices, the session learns and asks for the same.
        """
        sliced, slicedTurns = self.take(summary, 1)
        whole, wholeTurns = self.take(summary, 10**9)
        self.assertEqual(sliced, whole)
        self.assertGreaterEqual(slicedTurns, wholeTurns)

    def test_manyOrigins(self):
        """
        A summary of many origins is taken in over many turns; the session
        asks for all the log lacks of it.
        """
        summary = {
            b"%04d" % (i,): Intervals((2 * n, 2 * n + 1) for n in range(30)) for i in range(2000)
        }
        summary[b"a"] = Intervals([(0, 50)])
        sliced, slicedTurns = self.take(summary, protocolModule._SLICE)
        whole, wholeTurns = self.take(summary, 10**9)
        self.assertEqual(sliced, whole)
        self.assertEqual(sliced["expected"], 2000 * 30 + 50 - 14)
        self.assertEqual(sliced["requested"], sliced["pending"])
        # 2,000 origins of 30 ranges each make about five slices, each
        # taken in, then sought, a turn apart.
        self.assertGreaterEqual(slicedTurns, wholeTurns + 8)


class LargeAddTests(SessionMixin, SynchronousTestCase):
    """
    A peer that lies in a large add, or leaves in the middle of one, leaves
    the log as it was and no spool file behind.
    """

    def setUp(self):
        SessionMixin.setUp(self)
        self.a = self.node("log")
        self.b = self.node("log")
        self.before = open(self.b.path, "rb").read()
        self.pa, self.pb, self.pump = self.connect(self.a, self.b)
        pumpUntil(
            self.clock,
            [self.pump],
            lambda: self.pb.sessionState.had is Had.CAUGHT_UP
            and self.pa.sessionState.had is Had.CAUGHT_UP,
        )

    def send(self, size, parts, end=True):
        """
        Send a large add of C{size} bytes in C{parts}, from a to b.

        @return: the answers and errors to each command, as they come.
        """
        answers = []
        self.pa.callRemote(AddBegin, size=size).addBoth(answers.append)
        for part in parts:
            self.pa.callRemote(AddPart, data=part).addBoth(answers.append)
        if end:
            self.pa.callRemote(AddEnd).addBoth(answers.append)
        self.pump.flush()
        return answers

    def assertRefused(self, reason, size, parts):
        self.send(size, parts)
        self.assertEqual(open(self.b.path, "rb").read(), self.before)
        self.assertEqual(self.pb.failure, "peer broke the protocol: " + reason)
        self.assertEqual(self.pb.badAdds, 1)
        self.assertIsNone(self.pb.transport)
        self.assertEqual(spools(self.b.path), [])

    def pieces(self, data, size=VALUE_LIMIT):
        return [data[i : i + size] for i in range(0, len(data), size)]

    def test_received(self):
        """
        An honest large add is written, whole and only once.
        """
        big = line(b"p", 0, b"v" * (VALUE_LIMIT * 2))
        self.assertEqual(self.send(len(big), self.pieces(big)), [{}, {}, {}, {}, {}])
        self.assertEqual(open(self.b.path, "rb").read(), self.before + big)
        self.assertEqual(self.pb.received, 1)
        self.send(len(big), self.pieces(big, 7000))
        self.assertEqual(open(self.b.path, "rb").read(), self.before + big)
        self.assertIsNone(self.pb.failure)
        self.assertEqual(spools(self.b.path), [])

    def test_badHash(self):
        """
        A large add whose body does not match its hash is refused.
        """
        big = bytearray(line(b"p", 0, b"v" * (VALUE_LIMIT * 2)))
        big[VALUE_LIMIT] = ord("w")
        big = bytes(big)
        self.assertRefused("a damaged large add (hash mismatch)", len(big), self.pieces(big))

    def test_longerThanAnnounced(self):
        """
        Parts that add up to more than announced are refused as they come.
        """
        big = line(b"p", 0, b"v" * (VALUE_LIMIT * 2))
        self.assertRefused(
            "a damaged large add (longer than announced)",
            len(big),
            self.pieces(big) + [b"more"],
        )

    def test_shorterThanAnnounced(self):
        """
        Parts that add up to less than announced are refused at the end.
        """
        big = line(b"p", 0, b"v" * (VALUE_LIMIT * 2))
        self.assertRefused(
            "a damaged large add (shorter than announced)",
            len(big),
            self.pieces(big[:-1]),
        )

    def test_wrongLength(self):
        """
        A line whose own length does not match the size announced is
        refused as soon as its head arrives.
        """
        big = line(b"p", 0, b"v" * (VALUE_LIMIT * 2))
        head = big.split(b"<")[0]
        self.assertRefused(
            "a damaged large add (lengths do not match the announced size)",
            len(big) + 5,
            [head + b"<"],
        )

    def test_noKey(self):
        """
        A large add without a C{by} and C{at} is refused.
        """
        big = encodeAdd([(b"m", b"v" * (VALUE_LIMIT * 2))])
        self.assertRefused("a damaged large add (no by and at)", len(big), self.pieces(big))

    def test_tooManyParts(self):
        """
        A peer may not send a large add a few bytes at a time.
        """
        big = line(b"p", 0, b"v" * (VALUE_LIMIT * 2))
        self.assertRefused("a large add in too many parts", len(big), self.pieces(big, 100))

    def test_lostMidAdd(self):
        """
        A session lost in the middle of a large add removes its spool file.
        """
        big = line(b"p", 0, b"v" * (VALUE_LIMIT * 2))
        self.send(len(big), self.pieces(big)[:1], end=False)
        self.assertEqual(len(spools(self.b.path)), 1)
        self.pa.transport.loseConnection()
        self.pump.flush()
        self.assertIsNone(self.pb.transport)
        self.assertEqual(spools(self.b.path), [])
        self.assertEqual(open(self.b.path, "rb").read(), self.before)

    def test_arrivedMeanwhile(self):
        """
        A large add that arrived by another way while it was spooled is
        not written twice.
        """
        big = line(b"p", 0, b"v" * (VALUE_LIMIT * 2))
        answers = self.send(len(big), self.pieces(big), end=False)
        self.b.service.log.receive(big)
        self.pa.callRemote(AddEnd).addBoth(answers.append)
        self.pump.flush()
        self.assertEqual(answers, [{}, {}, {}, {}, {}])
        self.assertEqual(open(self.b.path, "rb").read(), self.before + big)
        self.assertIsNone(self.pb.failure)
        self.assertEqual(spools(self.b.path), [])


class ContinuousTests(SessionMixin, SynchronousTestCase):
    """
    After catching up, continuous sessions carry new adds both ways.
    """

    def test_newAddsFlow(self):
        a = self.node("log", says=1)
        b = self.node("log", says=1)
        pa, pb, pump = self.connect(a, b)
        pumpUntil(self.clock, [pump], lambda: pa.succeeded and pb.succeeded)
        a.service.log.say([(b"m", b"from a")])
        b.service.log.say([(b"m", b"from b")])
        # The polling watcher notices on its next tick.
        self.clock.advance(0.1)
        pumpUntil(self.clock, [pump], lambda: len(adds(a.path)) == 4 == len(adds(b.path)))
        self.assertSame(a, b)
        # Nothing went back where it came from.
        self.assertEqual((pa.sent, pb.sent), (2, 2))


class KeepaliveTests(SessionMixin, SynchronousTestCase):
    """
    A continuous session pings its peer once the peer has been silent for
    the keepalive period, so an idle link lasts; a link that moves nothing
    at all ends after the timeout.
    """

    def pair(self):
        settings = SessionSettings(keepalive=20.0, timeout=60.0)
        a = self.node("log", says=1)
        b = self.node("log", says=1)
        pa = SyncProtocol(a.service, "b", settings, reactor=self.clock)
        pb = SyncProtocol(b.service, "a", settings, reactor=self.clock)
        pump = iosim.connect(
            pa, iosim.makeFakeServer(pa), pb, iosim.makeFakeClient(pb), clock=self.clock
        )
        pumpUntil(self.clock, [pump], lambda: pa.succeeded and pb.succeeded)
        return pa, pb, pump

    def test_idleLinkLasts(self):
        """
        Over 1,000 idle seconds the session stays up, and the link carries
        one ping every keepalive period or so, not one from each end: the
        first ping heard spares the other end its own.
        """
        self.patch(protocolModule, "random", random.Random(20))
        pa, pb, pump = self.pair()
        pings = []
        for session in (pa, pb):
            original = session.callRemote

            def counted(command, _original=original, _session=session, **arguments):
                if command is Ping:
                    pings.append(_session)
                return _original(command, **arguments)

            session.callRemote = counted
        for _ in range(10000):
            self.clock.advance(0.1)
            pump.flush()
        self.assertEqual((pa.failure, pb.failure), (None, None))
        self.assertIsNotNone(pa.transport)
        # A ping every 20 to 22 s from whichever end's turn comes first
        # (pinging from both ends every 20 s, it was 100).
        self.assertGreaterEqual(len(pings), 1000 // 22)
        self.assertLessEqual(len(pings), 1000 // 20 + 5)
        self.assertEqual({pa, pb}, set(pings))
        # Each end heard from the other within the period, whichever pinged.
        for session in (pa, pb):
            self.assertLessEqual(self.clock.seconds() - session.lastContact, 22.1)

    def test_stalledLinkEnds(self):
        """
        A link whose bytes stop moving ends at both ends after the timeout,
        pings or not.
        """
        pa, pb, pump = self.pair()
        self.clock.advance(59)
        self.assertEqual((pa.failure, pb.failure), (None, None))
        self.clock.advance(2)
        self.assertEqual(pa.failure, "no message in 60 seconds")
        self.assertEqual(pb.failure, pa.failure)


class MeshTests(SessionMixin, SynchronousTestCase):
    """
    A node with several peers fetches each add from one of them.
    """

    def test_fetchedOnce(self):
        shared = [(b"p", i) for i in range(30)]
        one = self.node("log", shared)
        two = self.node("log", shared)
        hub = self.node("log")
        p1, h1, pump1 = self.connect(one, hub)
        p2, h2, pump2 = self.connect(two, hub)
        pumpUntil(
            self.clock,
            [pump1, pump2],
            lambda: all(p.succeeded for p in (p1, h1, p2, h2)),
        )
        self.assertEqual(sorted(adds(hub.path)), sorted(shared))
        self.assertEqual(p1.sent + p2.sent, len(shared))
        self.assertEqual(h1.received + h2.received, len(shared))
