# -*- test-case-name: tests.test_intervals -*-
"""
Sets of mostly-contiguous integers, kept as sorted half-open ranges.

This is what a node says it has of one origin's adds: like a C{.newsrc},
C{[(0, 120), (125, 130)]} means serials 0-119 and 125-129.
"""

from bisect import bisect_left, bisect_right
from operator import le, lt

from gossip.store.format import speedups as _speedups

__all__ = [
    "Intervals",
    "addKeys",
    "addSpans",
    "count",
    "covered",
    "difference",
    "gather",
    "heldBy",
    "merge",
    "overlapping",
    "runs",
    "spans",
]


class Intervals:
    """
    A set of non-negative integers as sorted, disjoint, non-adjacent
    half-open ranges C{[start, end)}.
    """

    __slots__ = ("_starts", "_ends")

    def __init__(self, ranges=()):
        self._starts = []
        self._ends = []
        for start, end in ranges:
            self.addRange(start, end)

    @classmethod
    def fromPairs(cls, starts, ends):
        """
        The set named by ranges C{[starts[i], ends[i])} in any order,
        overlapping or not: in time linear in their number when they come
        in order, ascending or descending, and M{n log n} otherwise.

        This is how a peer's ranges are read: adding them one at a time
        costs time quadratic in their number when they come out of order.
        """
        result = cls()
        if any(map(le, ends, starts)):
            kept = [(start, end) for start, end in zip(starts, ends) if start < end]
            starts = [start for start, end in kept]
            ends = [end for start, end in kept]
        if not starts:
            return result
        # Already sorted, disjoint and apart, as a peer sends them.
        if all(map(lt, ends[:-1], starts[1:])):
            result._starts = list(starts)
            result._ends = list(ends)
            return result
        # Python's sort takes a run in either order in linear time.
        merged = result._starts, result._ends
        for start, end in sorted(zip(starts, ends)):
            if merged[1] and start <= merged[1][-1]:
                if end > merged[1][-1]:
                    merged[1][-1] = end
            else:
                merged[0].append(start)
                merged[1].append(end)
        return result

    def __repr__(self):
        return f"Intervals({self.ranges()!r})"

    def __eq__(self, other):
        if not isinstance(other, Intervals):
            return NotImplemented
        return self._starts == other._starts and self._ends == other._ends

    def __contains__(self, n):
        i = bisect_right(self._starts, n)
        return i != 0 and n < self._ends[i - 1]

    def covers(self, start, end):
        """
        Whether every integer in C{[start, end)} is a member.
        """
        if start >= end:
            return True
        i = bisect_right(self._starts, start)
        return i != 0 and end <= self._ends[i - 1]

    def overlaps(self, start, end):
        """
        Whether any integer in C{[start, end)} is a member.
        """
        if start >= end:
            return False
        i = bisect_right(self._starts, end - 1)
        return i != 0 and self._ends[i - 1] > start

    def __len__(self):
        return sum(self._ends) - sum(self._starts)

    def __iter__(self):
        for start, end in zip(self._starts, self._ends):
            yield from range(start, end)

    def rangeCount(self):
        """
        How many ranges: what this set costs to keep and to send.
        """
        return len(self._starts)

    def chunks(self, size):
        """
        This set cut, in order, into sets of at most C{size} ranges each:
        work on a large set a piece at a time.
        """
        for i in range(0, len(self._starts), size):
            yield Intervals.fromPairs(self._starts[i : i + size], self._ends[i : i + size])

    def ranges(self):
        """
        The ranges as a list of C{(start, end)} tuples.
        """
        return list(zip(self._starts, self._ends))

    def iterRanges(self):
        """
        The ranges as C{(start, end)} tuples, one at a time.
        """
        return zip(self._starts, self._ends)

    def end(self):
        """
        One more than the largest member, or 0 when empty.
        """
        return self._ends[-1] if self._ends else 0

    def add(self, n):
        """
        Add one integer.
        """
        ends = self._ends
        # The common case: the next serial of a contiguous run.
        if ends and ends[-1] == n:
            ends[-1] = n + 1
            return
        self.addRange(n, n + 1)

    def addRange(self, start, end):
        """
        Add every integer in C{[start, end)}.
        """
        if start >= end:
            return
        starts, ends = self._starts, self._ends
        # The common cases: at or past the end of the last range.
        if not ends or start > ends[-1]:
            starts.append(start)
            ends.append(end)
            return
        if start == ends[-1]:
            ends[-1] = end
            return
        # First range that could touch [start, end): the one whose end >= start.
        i = bisect_right(starts, start)
        if i and ends[i - 1] >= start:
            i -= 1
        # Last range that could touch: those with start <= end.
        j = bisect_right(starts, end)
        if i < j:
            start = min(start, starts[i])
            end = max(end, ends[j - 1])
        starts[i:j] = [start]
        ends[i:j] = [end]

    def update(self, other):
        """
        Add every member of another L{Intervals}, in time linear in the
        smaller's number of ranges and, at worst, one copy of the larger's.
        """
        if not other._starts:
            return
        if not self._ends or other._starts[0] > self._ends[-1]:
            self._starts.extend(other._starts)
            self._ends.extend(other._ends)
            return
        small, large = (other, self) if len(other._starts) <= len(self._starts) else (self, other)
        self._starts, self._ends = _union(small, large)

    def removeRange(self, start, end):
        """
        Remove every integer in C{[start, end)}.
        """
        if start >= end:
            return
        starts, ends = self._starts, self._ends
        # Ranges that hold some of [start, end): from the first that ends
        # after start to the last that begins before end.
        i = bisect_right(ends, start)
        j = bisect_left(starts, end)
        if i >= j:
            return
        keptStarts, keptEnds = [], []
        if starts[i] < start:
            keptStarts.append(starts[i])
            keptEnds.append(start)
        if ends[j - 1] > end:
            keptStarts.append(end)
            keptEnds.append(ends[j - 1])
        starts[i:j] = keptStarts
        ends[i:j] = keptEnds

    def difference(self, other):
        """
        The members of this set that are not in C{other}, as a new set: in
        time linear in this one's number of ranges, or, when C{other} has
        far fewer, in its number and a copy of this one's for each.
        """
        if len(other._starts) * _COPIES < len(self._starts):
            result = Intervals()
            result._starts = list(self._starts)
            result._ends = list(self._ends)
            for start, end in zip(other._starts, other._ends):
                result.removeRange(start, end)
            return result
        result = Intervals()
        for start, end in zip(self._starts, self._ends):
            i = bisect_right(other._starts, start)
            if i and other._ends[i - 1] > start:
                i -= 1
            position = start
            while position < end and i < len(other._starts):
                oStart, oEnd = other._starts[i], other._ends[i]
                if oStart >= end:
                    break
                if oStart > position:
                    result._starts.append(position)
                    result._ends.append(oStart)
                position = max(position, oEnd)
                i += 1
            if position < end:
                result._starts.append(position)
                result._ends.append(end)
        return result


# Copying a list of ranges costs about what a step of a loop in Python over
# so many ranges does, divided by this.
_COPIES = 64


def _union(small, large):
    """
    The union of two L{Intervals} as new C{(starts, ends)} lists: a step
    for each range of C{small}, and C{large}'s ranges copied in slices.
    """
    oldStarts, oldEnds = large._starts, large._ends
    starts, ends = [], []
    taken = 0
    for start, end in zip(small._starts, small._ends):
        # large's ranges wholly before this one go over as they are.
        i = bisect_left(oldEnds, start, taken)
        starts += oldStarts[taken:i]
        ends += oldEnds[taken:i]
        # Those it touches are merged with it.
        j = bisect_right(oldStarts, end, i)
        if i < j:
            start = min(start, oldStarts[i])
            end = max(end, oldEnds[j - 1])
        if ends and ends[-1] >= start:
            ends[-1] = max(ends[-1], end)
        else:
            starts.append(start)
            ends.append(end)
        taken = j
    starts += oldStarts[taken:]
    ends += oldEnds[taken:]
    return starts, ends


def difference(have, other):
    """
    What C{have} holds that C{other} does not: both map each origin to
    its L{Intervals}.
    """
    result = {}
    for by, held in have.items():
        theirs = other.get(by)
        lacking = held.difference(theirs if theirs is not None else Intervals())
        if lacking._starts:
            result[by] = lacking
    return result


def gather(parts):
    """
    The union of many L{Intervals}: in time linear in their ranges when no
    two overlap, whatever their order, and M{n log n} otherwise.
    """
    parts = sorted((part for part in parts if part._starts), key=lambda part: part._starts[0])
    result = Intervals()
    if all(one._ends[-1] < other._starts[0] for one, other in zip(parts, parts[1:])):
        for part in parts:
            result.update(part)
        return result
    starts, ends = [], []
    for part in parts:
        starts += part._starts
        ends += part._ends
    return Intervals.fromPairs(starts, ends)


def heldBy(have, by):
    """
    The L{Intervals} of origin C{by} in C{have}, which maps each origin to
    its L{Intervals}: added empty if C{have} names no such origin, so that
    what the caller adds to it stays in C{have}.
    """
    held = have.get(by)
    if held is None:
        held = have[by] = Intervals()
    return held


def merge(have, more):
    """
    Add everything in C{more} to C{have}, in place.
    """
    for by, held in more.items():
        heldBy(have, by).update(held)


def count(have):
    """
    How many adds C{have} names.
    """
    return sum(len(held) for held in have.values())


def runs(keys):
    """
    Group C{(by, at)} pairs into runs of consecutive serials of one origin,
    in order: C{[(b"x", 4), (b"x", 5), (b"y", 0)]} gives C{(b"x", 4, 6)}
    and C{(b"y", 0, 1)}.

    @return: an iterator of C{(by, start, end)}, C{end} excluded.
    """
    by = start = end = None
    for key, at in keys:
        if key == by and at == end:
            end += 1
            continue
        if by is not None:
            yield by, start, end
        by, start, end = key, at, at + 1
    if by is not None:
        yield by, start, end


def addKeys(have, keys):
    """
    Add C{(by, at)} pairs to C{have}, which maps each origin to its
    L{Intervals}, in place: a run of serials at a time.
    """
    for by, start, end in runs(keys):
        heldBy(have, by).addRange(start, end)


def spans(keys):
    """
    Where each origin's serials in C{keys}, a list of C{(by, at)} pairs,
    follow one another without a gap or a repeat (as they do in a block of
    a log written in order), their span: C{[(b"x", 4), (b"y", 0), (b"x",
    5)]} gives C{{b"x": [4, 6], b"y": [0, 1]}}.

    @return: a dict of C{[start, end]} by origin, C{end} excluded, or
        L{None} if some origin's serials do not follow one another.
    """
    result = {}
    get = result.get
    for by, at in keys:
        span = get(by)
        if span is None:
            result[by] = [at, at + 1]
        elif span[1] == at:
            span[1] = at + 1
        else:
            return None
    return result


def addSpans(have, spans):
    """
    Add the serials of L{spans}' result to C{have}, in place.
    """
    for by, (start, end) in spans.items():
        heldBy(have, by).addRange(start, end)


def covered(have, spans):
    """
    Whether C{have} holds every serial in L{spans}' result.
    """
    return all(
        by in have and have[by].covers(start, end) for by, (start, end) in spans.items()
    )


def overlapping(have, spans):
    """
    Whether C{have} holds any serial in L{spans}' result.
    """
    return any(
        by in have and have[by].overlaps(start, end) for by, (start, end) in spans.items()
    )


# The definition of spans above is the reference, and what runs where
# gossip.store._speedups is not built (see gossip.store.format); the C one is faster.
pythonSpans = spans
if _speedups is not None:
    spans = _speedups.spans
