"""
Tests for L{gossip.transport.startups}: which unauthenticated connections are
refused, and which refusals are logged.
"""

from contextlib import contextmanager

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from gossip.transport.startups import (
    DEFAULT_MAX_STARTUPS,
    DEFAULT_PER_SOURCE,
    TRY_LATER,
    TRY_LATER_FROM_YOU,
    MaxStartups,
    RefusalLog,
    Startup,
    Startups,
    source,
)


@contextmanager
def capturedLogs(events):
    globalLogPublisher.addObserver(events.append)
    try:
        yield
    finally:
        globalLogPublisher.removeObserver(events.append)


class Dice:
    """
    A predictable stand-in for L{random.random}: returns the values given,
    in turn, and counts how many were drawn.
    """

    def __init__(self, *values):
        self.values = list(values)
        self.drawn = 0

    def __call__(self):
        self.drawn += 1
        return self.values.pop(0)


class MaxStartupsTests(SynchronousTestCase):
    """
    C{START:RATE:FULL}, as OpenSSH's C{MaxStartups}.
    """

    def test_parse(self):
        self.assertEqual(MaxStartups.parse("10:30:100"), MaxStartups(10, 30, 100))
        self.assertEqual(str(MaxStartups.parse("10:30:100")), "10:30:100")

    def test_single(self):
        """
        C{N} refuses every connection beyond N, as OpenSSH's C{MaxStartups N}.
        """
        limit = MaxStartups.parse("5")
        self.assertEqual(limit, MaxStartups(5, 100, 5))
        self.assertEqual([limit.refusal(n) for n in (0, 4, 5, 6)], [0, 0, 100, 100])

    def test_bad(self):
        """
        Each mistake is a L{ValueError} with a one-line message naming the
        value.
        """
        for text in [
            "", "10:30", "10:30:100:5", "a:b:c", "-1:30:100", "0:30:100", "10:0:100",
            "10:101:100", "20:30:10", "１０", " 10", "10:30:100 ",
        ]:  # fmt: skip
            error = self.assertRaises(ValueError, MaxStartups.parse, text)
            self.assertIn(repr(text), str(error))
            self.assertNotIn("\n", str(error))

    def test_linear(self):
        """
        No refusals below START; RATE percent at START, rising linearly to
        100 at FULL and beyond.
        """
        limit = MaxStartups(10, 30, 100)
        self.assertEqual(limit.refusal(0), 0)
        self.assertEqual(limit.refusal(9), 0)
        self.assertEqual(limit.refusal(10), 30)
        self.assertEqual(limit.refusal(55), 65)
        self.assertEqual(limit.refusal(99), 99)
        self.assertEqual(limit.refusal(100), 100)
        self.assertEqual(limit.refusal(1000), 100)

    def test_default(self):
        """
        OpenSSH's default, and a per-source cap below its start, so that one
        address alone never brings on random refusals.
        """
        self.assertEqual(DEFAULT_MAX_STARTUPS, MaxStartups(10, 30, 100))
        self.assertLess(DEFAULT_PER_SOURCE, DEFAULT_MAX_STARTUPS.start)


class StartupsTests(SynchronousTestCase):
    """
    L{Startups} counts unauthenticated connections and refuses some.
    """

    def test_belowStart(self):
        """
        Below START every connection is admitted, without a draw.
        """
        dice = Dice()
        startups = Startups(MaxStartups(4, 50, 8), perSource=10, random=dice)
        for i in range(4):
            self.assertIsNone(startups.admit(f"10.0.0.{i}"))
        self.assertEqual((startups.total, dice.drawn), (4, 0))

    def test_randomEarlyDrop(self):
        """
        Between START and FULL a connection is refused when the draw falls
        below the refusal rate for the number open.
        """
        # With 4:50:8, 4 open refuse 50%, 5 open 62%, 6 open 75%.
        dice = Dice(0.49, 0.5, 0.61, 0.62, 0.74, 0.75)
        startups = Startups(MaxStartups(4, 50, 8), perSource=10, random=dice)
        for i in range(4):
            startups.admit(f"10.0.0.{i}")
        why, told = startups.admit("10.0.1.1")
        self.assertIn("4 unauthenticated connections already, refusing 50%", why)
        self.assertIn("--max-startups 4:50:8", why)
        self.assertEqual(told, TRY_LATER)
        outcomes = [startups.admit("10.0.1.1") is None for i in range(5)]
        self.assertEqual(outcomes, [True, False, True, False, True])
        self.assertEqual((startups.total, dice.drawn), (7, 6))

    def test_full(self):
        """
        At FULL every connection is refused, whatever the draw.
        """
        dice = Dice(0.99)
        startups = Startups(MaxStartups(2, 30, 3), perSource=10, random=dice)
        for i in range(3):
            startups.admit(f"10.0.0.{i}")
        self.assertEqual(startups.total, 3)
        self.assertIsNotNone(startups.admit("10.0.0.9"))
        self.assertEqual((startups.total, dice.drawn), (3, 1))

    def test_perSource(self):
        """
        A source at its cap is refused whatever the total, and others are
        not.
        """
        startups = Startups(MaxStartups(100, 30, 200), perSource=2, random=Dice())
        self.assertIsNone(startups.admit("127.0.0.2"))
        self.assertIsNone(startups.admit("127.0.0.2"))
        why, told = startups.admit("127.0.0.2")
        self.assertIn("2 unauthenticated connections from 127.0.0.2 already", why)
        self.assertIn("--per-source-max-startups 2", why)
        self.assertEqual(told, TRY_LATER_FROM_YOU)
        self.assertIsNone(startups.admit("127.0.0.1"))
        self.assertEqual((startups.total, startups.fromSource("127.0.0.2")), (3, 2))

    def test_floodFromOneSource(self):
        """
        With the defaults, a flood from one address holds 3 of the 10 slots
        below START, so a peer from another is never refused, whatever the
        draws.
        """
        startups = Startups(random=Dice())
        refused = [startups.admit("127.0.0.2") for i in range(1000)]
        self.assertEqual(refused.count(None), DEFAULT_PER_SOURCE)
        self.assertIsNone(startups.admit("127.0.0.1"))

    def test_release(self):
        """
        A connection released (it authenticated, or closed) frees its slot
        in the total and in its source's count.
        """
        startups = Startups(MaxStartups(2, 100, 2), perSource=1, random=Dice())
        startups.admit("a")
        startups.admit("b")
        self.assertIsNotNone(startups.admit("c"))
        self.assertIsNotNone(startups.admit("a"))
        startups.release("a")
        self.assertEqual((startups.total, startups.fromSource("a")), (1, 0))
        self.assertIsNone(startups.admit("a"))
        startups.release("b")
        self.assertIsNone(startups.admit("c"))
        for each in "ac":
            startups.release(each)
        self.assertEqual(startups.total, 0)
        self.assertEqual(startups.fromSource("a"), 0)


class StartupTests(SynchronousTestCase):
    """
    A connection L{Startups} counted is let go of once, its timer with it.
    """

    def test_end(self):
        clock = Clock()
        startups = Startups()
        self.assertIsNone(startups.admit("a"))
        fired = []
        startup = Startup(startups, "a", clock.callLater(30, fired.append, True))
        startup.end()
        self.assertEqual((startups.total, startups.fromSource("a")), (0, 0))
        self.assertEqual(clock.getDelayedCalls(), [])
        # Again (the connection closes after it authenticated): nothing.
        startup.end()
        self.assertEqual(startups.total, 0)
        clock.advance(60)
        self.assertEqual(fired, [])

    def test_timerLater(self):
        """
        The timer may be started after the connection is counted, and may
        have fired by the end.
        """
        clock = Clock()
        startups = Startups()
        startups.admit("a")
        startup = Startup(startups, "a")
        startup.end()
        self.assertEqual(startups.total, 0)
        startups.admit("a")
        startup = Startup(startups, "a")
        startup.timer = clock.callLater(30, lambda: None)
        clock.advance(30)
        startup.end()
        self.assertEqual(startups.total, 0)


class StartupsPropertyTests(SynchronousTestCase):
    """
    Whatever connections come and go, the counts stay true and within the
    limits.
    """

    @given(
        st.lists(
            st.tuples(st.booleans(), st.sampled_from("abcd"), st.floats(0, 0.999)),
            max_size=200,
        ),
        st.integers(1, 5),
        st.integers(1, 100),
        st.integers(0, 6),
    )
    def test_counts(self, steps, start, rate, extra):
        draws = iter([])
        startups = Startups(
            MaxStartups(start, rate, start + extra), perSource=3, random=lambda: next(draws)
        )
        held = []
        for arrives, where, draw in steps:
            if arrives or not held:
                draws = iter([draw])
                if startups.admit(where) is None:
                    held.append(where)
                else:
                    # Below START only a source at its cap is refused.
                    self.assertTrue(len(held) >= start or held.count(where) == 3)
            else:
                startups.release(held.pop(0))
            self.assertEqual(startups.total, len(held))
            for each in "abcd":
                self.assertEqual(startups.fromSource(each), held.count(each))
                self.assertLessEqual(startups.fromSource(each), 3)
            self.assertLessEqual(startups.total, start + extra)


class SourceTests(SynchronousTestCase):
    """
    What connections are counted together.
    """

    def test_ipv4(self):
        self.assertEqual(source("127.0.0.2"), "127.0.0.2")

    def test_ipv6(self):
        """
        IPv6 addresses count by their /64, which one host may hold.
        """
        self.assertEqual(source("2001:db8:1:2:3:4:5:6"), "2001:db8:1:2::/64")
        self.assertEqual(source("2001:db8:1:2::9"), source("2001:db8:1:2:ffff::1"))
        self.assertNotEqual(source("2001:db8:1:2::9"), source("2001:db8:1:3::9"))
        self.assertEqual(source("fe80::1%eth0"), "fe80::/64")

    def test_mapped(self):
        """
        An IPv4 address reaching an IPv6 socket counts as itself.
        """
        self.assertEqual(source("::ffff:10.1.2.3"), "10.1.2.3")

    def test_other(self):
        """
        Anything else (a UNIX socket's peer) is its own source.
        """
        self.assertEqual(source("somewhere"), "somewhere")


class RefusalLogTests(SynchronousTestCase):
    """
    A flood's refusals are logged once a minute per source, not once a
    connection.
    """

    def test_firstLogged(self):
        log = RefusalLog(Clock())
        self.assertEqual(log.refused("a"), 0)
        self.assertEqual(log.refused("b"), 0)

    def test_quietThenCounted(self):
        """
        Refusals within the interval are not logged; the next one logged
        says how many were not.
        """
        clock = Clock()
        log = RefusalLog(clock, interval=60)
        log.refused("a")
        self.assertEqual([log.refused("a") for i in range(500)], [None] * 500)
        clock.advance(59)
        self.assertIsNone(log.refused("a"))
        clock.advance(1)
        self.assertEqual(log.refused("a"), 501)
        self.assertIsNone(log.refused("a"))

    def test_bounded(self):
        """
        Sources are forgotten once quiet for the interval, so a flood from
        many addresses does not grow the table without bound.
        """
        clock = Clock()
        log = RefusalLog(clock, interval=60, limit=10)
        for i in range(10):
            log.refused(i)
        clock.advance(60)
        log.refused("new")
        self.assertEqual(len(log._sources), 1)
        for i in range(100):
            log.refused(i)
            self.assertLessEqual(len(log._sources), 10)

    def test_note(self):
        """
        The refusals logged name the address and the reason, and the count
        of those not logged since.
        """
        events = []
        clock = Clock()
        refusals = RefusalLog(clock, interval=60)
        with capturedLogs(events):
            for i in range(5):
                refusals.note("127.0.0.2", f"127.0.0.2:{4000 + i}", "too many")
            clock.advance(60)
            refusals.note("127.0.0.2", "127.0.0.2:5000", "too many")
        self.assertEqual(
            [formatEvent(e) for e in events],
            [
                "refused a connection from 127.0.0.2:4000: too many",
                "refused a connection from 127.0.0.2:5000: too many "
                "(4 more from 127.0.0.2 since the last such line)",
            ],
        )
