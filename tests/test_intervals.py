"""
Tests for L{gossip.store.intervals}: sets of integers kept as ranges, checked
against Python's sets.
"""

import gc
import time

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import TestCase

from gossip.store import intervals
from gossip.store.intervals import Intervals

_quick = settings(max_examples=100, deadline=None)

# Small numbers, so that ranges overlap, touch and nest often.
members = st.integers(min_value=0, max_value=60)
ranges = st.tuples(members, st.integers(min_value=-3, max_value=15)).map(
    lambda pair: (pair[0], pair[0] + pair[1])
)
rangeLists = st.lists(ranges, max_size=8)
operations = st.lists(
    st.one_of(
        st.tuples(st.just("add"), members),
        st.tuples(st.just("addRange"), ranges),
        st.tuples(st.just("update"), rangeLists),
    ),
    max_size=25,
)


def membersOf(rangeList):
    """
    The set that a list of ranges names.
    """
    return {n for start, end in rangeList for n in range(start, end)}


def apply(operationList):
    """
    Apply operations to an empty L{Intervals} and an empty set.
    """
    held, expected = Intervals(), set()
    for operation, argument in operationList:
        if operation == "add":
            held.add(argument)
            expected.add(argument)
        elif operation == "addRange":
            held.addRange(*argument)
            expected |= membersOf([argument])
        else:
            held.update(Intervals(argument))
            expected |= membersOf(argument)
    return held, expected


class IntervalsTests(TestCase):
    """
    L{Intervals} behaves as the set of its members.
    """

    def assertSame(self, held, expected):
        """
        C{held} is C{expected} by every query, and its ranges are sorted,
        disjoint, non-adjacent and non-empty.
        """
        spans = held.ranges()
        for start, end in spans:
            self.assertLess(start, end)
        for (_, end), (start, _) in zip(spans, spans[1:]):
            self.assertLess(end, start)
        self.assertEqual(membersOf(spans), expected)
        self.assertEqual(list(held), sorted(expected))
        self.assertEqual(len(held), len(expected))
        self.assertEqual(held.end(), max(expected) + 1 if expected else 0)
        for n in range(-2, 80):
            self.assertEqual(n in held, n in expected, n)

    @_quick
    @given(operations)
    def test_operations(self, operationList):
        held, expected = apply(operationList)
        self.assertSame(held, expected)

    @_quick
    @given(rangeLists)
    def test_fromRanges(self, rangeList):
        self.assertSame(Intervals(rangeList), membersOf(rangeList))

    @_quick
    @given(st.lists(members, max_size=40))
    def test_addInAnyOrder(self, numbers):
        held = Intervals()
        for n in numbers:
            held.add(n)
        self.assertSame(held, set(numbers))

    @_quick
    @given(operations, operations)
    def test_difference(self, left, right):
        held, expected = apply(left)
        other, otherExpected = apply(right)
        before = held.ranges(), other.ranges()
        self.assertSame(held.difference(other), expected - otherExpected)
        # Neither operand changes.
        self.assertEqual((held.ranges(), other.ranges()), before)

    @_quick
    @given(operations, operations)
    def test_update(self, left, right):
        held, expected = apply(left)
        other, otherExpected = apply(right)
        held.update(other)
        self.assertSame(held, expected | otherExpected)
        self.assertSame(other, otherExpected)

    @_quick
    @given(operations, operations)
    def test_equality(self, left, right):
        """
        Two L{Intervals} are equal exactly when they have the same members,
        however they were built.
        """
        held, expected = apply(left)
        other, otherExpected = apply(right)
        self.assertEqual(held == other, expected == otherExpected)
        self.assertEqual(held, Intervals((n, n + 1) for n in expected))

    @_quick
    @given(rangeLists, st.randoms(use_true_random=False))
    def test_fromPairs(self, rangeList, order):
        """
        Ranges in any order, overlapping, touching, empty or reversed, name
        what they name one by one.
        """
        order.shuffle(rangeList)
        held = Intervals.fromPairs([s for s, e in rangeList], [e for s, e in rangeList])
        self.assertSame(held, membersOf(rangeList))

    @_quick
    @given(st.lists(rangeLists, max_size=6))
    def test_gather(self, rangeLists):
        parts = [Intervals(rangeList) for rangeList in rangeLists]
        expected = set().union(*(membersOf(rangeList) for rangeList in rangeLists))
        self.assertSame(intervals.gather(parts), expected)

    @_quick
    @given(operations, ranges)
    def test_removeRange(self, operationList, removed):
        held, expected = apply(operationList)
        held.removeRange(*removed)
        self.assertSame(held, expected - membersOf([removed]))

    @_quick
    @given(st.sets(st.integers(0, 400), max_size=300), rangeLists)
    def test_differenceOfFew(self, members, rangeList):
        """
        Few ranges taken from many: each cut from a copy.
        """
        held = Intervals((n, n + 1) for n in members)
        other = Intervals(rangeList)
        expected = set(members) - membersOf(rangeList)
        self.assertEqual(set(held.difference(other)), expected)
        self.assertEqual(set(held), set(members))

    def test_untracked(self):
        """
        However many ranges a set holds, and however it was made, the
        garbage collector has nothing in it to visit: a peer's summary of
        hundreds of thousands of ranges adds nothing to every collection's
        cost.
        """
        many = Intervals.fromPairs(range(0, 20000, 2), range(1, 20001, 2))
        made = [
            many,
            Intervals([(5, 9), (1, 2)]),
            many.difference(Intervals([(4, 100)])),
            Intervals([(3, 4)]).difference(many),
            next(many.chunks(100)),
            intervals.gather([many, Intervals([(30000, 30001)])]),
        ]
        made[1].update(many)
        made[1].removeRange(10, 50)
        for held in made:
            self.assertGreater(held.rangeCount(), 0)
            # The collector's visit of the bounds reaches their type alone.
            for bounds in (held._starts, held._ends):
                self.assertEqual([type(bounds)], gc.get_referents(bounds))

    def test_linear(self):
        """
        Ranges out of order cost about what they cost in order: neither
        reading them, nor adding them to a set that holds many already,
        nor taking a few from them goes by the square of their number.
        """
        count = 200000
        starts = list(range(0, 2 * count, 2))
        ends = list(range(1, 2 * count, 2))

        def cost(starts, ends):
            began = time.process_time()
            held = Intervals.fromPairs(starts, ends)
            more = Intervals.fromPairs([n + 2 * count for n in starts], [n + 2 * count for n in ends])
            more.update(held)
            held.update(Intervals([(1, 2), (2 * count - 1, 2 * count)]))
            more.difference(Intervals([(5, 9), (count, count + 10)]))
            return time.process_time() - began, len(more)

        inOrder, size = cost(starts, ends)
        reversedOrder, reversedSize = cost(starts[::-1], ends[::-1])
        self.assertEqual(size, reversedSize)
        self.assertEqual(size, 2 * count)
        self.assertLess(reversedOrder, 5 * inOrder + 0.2)

    def test_empty(self):
        self.assertSame(Intervals(), set())
        self.assertSame(Intervals([(5, 5), (7, 3)]), set())

    def test_newsrc(self):
        """
        The module's example: serials 0-119 and 125-129.
        """
        held = Intervals([(0, 120), (125, 130)])
        self.assertEqual(held.ranges(), [(0, 120), (125, 130)])
        self.assertEqual(repr(held), "Intervals([(0, 120), (125, 130)])")
        self.assertEqual(held.end(), 130)
        self.assertEqual(len(held), 125)

    def test_adjacentMerge(self):
        held = Intervals([(0, 3), (5, 8)])
        held.addRange(3, 5)
        self.assertEqual(held.ranges(), [(0, 8)])
        held.add(8)
        self.assertEqual(held.ranges(), [(0, 9)])
        held.add(10)
        self.assertEqual(held.ranges(), [(0, 9), (10, 11)])

    def test_notEqualToOtherTypes(self):
        self.assertNotEqual(Intervals([(0, 2)]), [(0, 2)])
        self.assertNotEqual(Intervals([(0, 2)]), {0, 1})


haves = st.dictionaries(st.sampled_from([b"a", b"b", b"c"]), rangeLists, max_size=3)


def build(have):
    return {by: Intervals(spans) for by, spans in have.items()}


def flatten(have):
    """
    The C{(by, at)} pairs that a mapping of origins to L{Intervals} names.
    """
    return {(by, at) for by, held in have.items() for at in held}


class HaveTests(TestCase):
    """
    The functions on mappings of origins to L{Intervals}.
    """

    @_quick
    @given(haves, haves)
    def test_difference(self, left, right):
        have, other = build(left), build(right)
        result = intervals.difference(have, other)
        self.assertEqual(flatten(result), flatten(have) - flatten(other))
        # No origin is named with nothing in it.
        for held in result.values():
            self.assertTrue(held.ranges())
        # The result shares nothing with its operands.
        before = flatten(have)
        for held in result.values():
            held.addRange(0, 100)
        self.assertEqual(flatten(have), before)

    @_quick
    @given(haves, haves)
    def test_merge(self, left, right):
        have, more = build(left), build(right)
        expected = flatten(have) | flatten(more)
        moreBefore = flatten(more)
        intervals.merge(have, more)
        self.assertEqual(flatten(have), expected)
        # Later changes to the merged mapping leave C{more} as it was.
        for held in have.values():
            held.addRange(0, 100)
        self.assertEqual(flatten(more), moreBefore)

    def test_heldBy(self):
        """
        L{intervals.heldBy} gives an origin's own L{intervals.Intervals},
        and for an origin not named one it has added, empty.
        """
        held = intervals.Intervals([(1, 3)])
        have = {b"a": held}
        self.assertIs(intervals.heldBy(have, b"a"), held)
        added = intervals.heldBy(have, b"b")
        self.assertEqual(added.ranges(), [])
        added.add(7)
        self.assertEqual(have[b"b"].ranges(), [(7, 8)])

    @_quick
    @given(haves)
    def test_count(self, left):
        have = build(left)
        self.assertEqual(intervals.count(have), len(flatten(have)))


class RunsTests(TestCase):
    """
    L{intervals.runs} and L{Intervals.covers}.
    """

    @_quick
    @given(st.lists(st.tuples(st.sampled_from([b"x", b"y"]), members), max_size=30))
    def test_runs(self, keys):
        """
        Runs name the keys, in order, each run as long as it can be.
        """
        found = list(intervals.runs(keys))
        self.assertEqual(
            [(by, at) for by, start, end in found for at in range(start, end)], keys
        )
        for (by, start, end), (nextBy, nextStart, nextEnd) in zip(found, found[1:]):
            self.assertFalse(by == nextBy and end == nextStart)

    @_quick
    @given(rangeLists, ranges)
    def test_covers(self, rangeList, asked):
        """
        A range is covered when every member of it is in the set.
        """
        start, end = asked
        wanted = set(range(start, end))
        self.assertEqual(
            Intervals(rangeList).covers(start, end), wanted <= membersOf(rangeList)
        )

    @_quick
    @given(rangeLists, ranges)
    def test_overlaps(self, rangeList, asked):
        """
        A range overlaps the set when some member of it is in the set.
        """
        start, end = asked
        self.assertEqual(
            Intervals(rangeList).overlaps(start, end),
            bool(set(range(start, end)) & membersOf(rangeList)),
        )


def consecutiveKeys():
    """
    Keys of a few origins, each origin's serials one after another from
    some start, interleaved at random: a block of a log written in order.
    """
    origin = st.tuples(st.sampled_from([b"a", b"b", b"c"]), members, st.integers(1, 8))
    return st.lists(origin, max_size=3, unique_by=lambda o: o[0]).flatmap(
        lambda origins: st.permutations(
            [(by, n) for by, start, length in origins for n in range(length)]
        ).map(
            lambda order: _numbered(order, {by: start for by, start, length in origins})
        )
    )


def _numbered(order, starts):
    """
    Give each origin's keys in C{order} its serials from C{starts}, in turn.
    """
    following = dict(starts)
    keys = []
    for by, ignored in order:
        keys.append((by, following[by]))
        following[by] += 1
    return keys


class SpansTests(TestCase):
    """
    L{intervals.spans} and what uses them: L{intervals.addSpans},
    L{intervals.covered} and L{intervals.overlapping}.
    """

    def test_example(self):
        self.assertEqual(
            intervals.spans([(b"x", 4), (b"y", 0), (b"x", 5)]),
            {b"x": [4, 6], b"y": [0, 1]},
        )
        self.assertEqual(intervals.spans([]), {})
        self.assertIsNone(intervals.spans([(b"x", 4), (b"x", 4)]))
        self.assertIsNone(intervals.spans([(b"x", 4), (b"y", 0), (b"x", 6)]))
        self.assertIsNone(intervals.spans([(b"x", 5), (b"x", 4)]))

    @_quick
    @given(consecutiveKeys())
    def test_consecutive(self, keys):
        """
        Keys whose serials follow one another by origin have spans, which
        name exactly those keys.
        """
        found = intervals.spans(keys)
        self.assertIsNot(found, None)
        self.assertEqual(
            {(by, at) for by, (start, end) in found.items() for at in range(start, end)},
            set(keys),
        )
        self.assertEqual(sum(end - start for start, end in found.values()), len(keys))

    @_quick
    @given(st.lists(st.tuples(st.sampled_from([b"x", b"y"]), members), max_size=12))
    def test_any(self, keys):
        """
        Spans are given exactly when each origin's serials, in the order
        given, go up by one.
        """
        serials = {}
        for by, at in keys:
            serials.setdefault(by, []).append(at)
        follow = all(
            later == earlier + 1
            for ats in serials.values()
            for earlier, later in zip(ats, ats[1:])
        )
        self.assertEqual(intervals.spans(keys) is not None, follow)

    @_quick
    @given(haves, consecutiveKeys())
    def test_addAndOverlap(self, have, keys):
        """
        L{intervals.overlapping} says whether a summary holds any key of the
        spans, and L{intervals.addSpans} adds all of them.
        """
        have = build(have)
        before = flatten(have)
        found = intervals.spans(keys)
        self.assertEqual(intervals.overlapping(have, found), bool(before & set(keys)))
        self.assertEqual(intervals.covered(have, found), set(keys) <= before)
        intervals.addSpans(have, found)
        self.assertEqual(flatten(have), before | set(keys))
