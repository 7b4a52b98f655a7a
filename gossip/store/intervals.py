# -*- test-case-name: tests.test_intervals -*-
"""
Sets of mostly-contiguous integers, kept as sorted half-open ranges.

This is what a node says it has of one origin's adds: like a C{.newsrc},
C{[(0, 120), (125, 130)]} means serials 0-119 and 125-129.
"""

from array import array
from bisect import bisect_left, bisect_right
from operator import le, lt

from gossip.store.format import speedups as _speedups

# Ranges are kept in arrays of machine integers, not lists: a peer's summary
# can name hundreds of thousands of ranges, which as lists of Python ints
# cost four times the memory and a visit from every pass of the garbage
# collector (an array holds no objects: the collector visits its type alone).
# Serials are below 2**63, so every start and end fits.
_TYPE = "Q"


def _numbers(values=()):
    """
    A new array of range bounds.
    """
    return array(_TYPE, values)


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
        self._starts = _numbers()
        self._ends = _numbers()
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
            result._starts = _numbers(starts)
            result._ends = _numbers(ends)
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
        starts[i:j] = _numbers((start,))
        ends[i:j] = _numbers((end,))

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
        keptStarts, keptEnds = _numbers(), _numbers()
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
        The members of this set that are not in C{other}, as a new set: a
        step for each range of the smaller of the two, and the ranges (or
        gaps) of the larger copied in slices, so that one range less many,
        or many less one, costs about a copy.
        """
        if len(other._starts) < len(self._starts):
            return self._without(other)
        result = Intervals()
        starts, ends = result._starts, result._ends
        oStarts, oEnds = other._starts, other._ends
        count = len(oStarts)
        i = 0
        for start, end in zip(self._starts, self._ends):
            # The ranges of other that meet [start, end) are those from i
            # (the first to end after start) to j (the first to begin at
            # or after end), which none before i does.
            i = bisect_right(oEnds, start, i)
            if i == count or oStarts[i] >= end:
                starts.append(start)
                ends.append(end)
                continue
            if oStarts[i] <= start and end <= oEnds[i]:
                # All of it in one range of other.
                continue
            j = bisect_left(oStarts, end, i + 1)
            if start < oStarts[i]:
                starts.append(start)
                ends.append(oStarts[i])
            # The gaps between them, however many, in two slices.
            starts += oEnds[i : j - 1]
            ends += oStarts[i + 1 : j]
            if oEnds[j - 1] < end:
                starts.append(oEnds[j - 1])
                ends.append(end)
            # The last of them may reach the next range.
            i = j - 1
        return result

    def _without(self, other):
        """
        L{difference} when C{other} has fewer ranges: a step for each of
        them.
        """
        oldStarts, oldEnds = self._starts, self._ends
        result = Intervals()
        starts, ends = result._starts, result._ends
        count = len(oldStarts)
        # This set's ranges before taken are done with; the one at taken
        # begins at head, which a range of other may have cut.
        taken, head = 0, None
        for oStart, oEnd in zip(other._starts, other._ends):
            # Ranges that end by oStart go over as they are.
            i = bisect_right(oldEnds, oStart, taken)
            if i > taken:
                if head is not None:
                    starts.append(head)
                    ends.append(oldEnds[taken])
                    taken, head = taken + 1, None
                starts += oldStarts[taken:i]
                ends += oldEnds[taken:i]
                taken = i
            if taken == count:
                break
            begin = oldStarts[taken] if head is None else head
            if begin >= oEnd:
                continue
            if begin < oStart:
                starts.append(begin)
                ends.append(oStart)
            # Ranges that end by oEnd are gone; the next may lose its head.
            taken = bisect_right(oldEnds, oEnd, taken)
            head = oEnd if taken < count and oldStarts[taken] < oEnd else None
        if taken < count:
            if head is not None:
                starts.append(head)
                ends.append(oldEnds[taken])
                taken += 1
            starts += oldStarts[taken:]
            ends += oldEnds[taken:]
        return result


def _union(small, large):
    """
    The union of two L{Intervals} as new C{(starts, ends)} arrays: a step
    for each range of C{small}, and C{large}'s ranges copied in slices.
    """
    oldStarts, oldEnds = large._starts, large._ends
    starts, ends = _numbers(), _numbers()
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
    starts, ends = _numbers(), _numbers()
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
