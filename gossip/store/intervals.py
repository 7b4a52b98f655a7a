# -*- test-case-name: tests.test_intervals -*-
"""
Sets of mostly-contiguous integers, kept as sorted half-open ranges.

This is what a node says it has of one origin's adds: like a C{.newsrc},
C{[(0, 120), (125, 130)]} means serials 0-119 and 125-129.
"""

from bisect import bisect_right

from gossip.store.format import speedups as _speedups

__all__ = [
    "Intervals",
    "addKeys",
    "addSpans",
    "count",
    "covered",
    "difference",
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
        return sum(end - start for start, end in zip(self._starts, self._ends))

    def __iter__(self):
        for start, end in zip(self._starts, self._ends):
            yield from range(start, end)

    def ranges(self):
        """
        The ranges as a list of C{(start, end)} tuples.
        """
        return list(zip(self._starts, self._ends))

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
        Add every member of another L{Intervals}.
        """
        for start, end in zip(other._starts, other._ends):
            self.addRange(start, end)

    def difference(self, other):
        """
        The members of this set that are not in C{other}, as a new set.
        """
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


def difference(have, other):
    """
    What C{have} holds that C{other} does not: both map each origin to
    its L{Intervals}.
    """
    result = {}
    for by, held in have.items():
        theirs = other.get(by)
        lacking = held if theirs is None else held.difference(theirs)
        if lacking.ranges():
            result[by] = Intervals(lacking.ranges())
    return result


def merge(have, more):
    """
    Add everything in C{more} to C{have}, in place.
    """
    for by, held in more.items():
        mine = have.get(by)
        if mine is None:
            have[by] = Intervals(held.ranges())
        else:
            mine.update(held)


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
        held = have.get(by)
        if held is None:
            held = have[by] = Intervals()
        held.addRange(start, end)


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
        held = have.get(by)
        if held is None:
            held = have[by] = Intervals()
        held.addRange(start, end)


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
