# -*- test-case-name: tests.test_query -*-
"""
Asks: which adds a query matches.

An ask is a list of terms, each a name alone or a name and a value.  An add
matches when it has every name asked for and, for each name asked for with
values, at least one of its values for that name is one of them.  No terms
match every add.
"""

__all__ = ["Query"]


class Query:
    """
    A compiled ask.
    """

    __slots__ = ("_wanted",)

    def __init__(self, terms=()):
        """
        @param terms: C{(name, value)} byte-string pairs, C{value} L{None}
            for a name asked for without a value.
        """
        wanted = {}
        for name, value in terms:
            if value is None:
                wanted.setdefault(name, None)
            else:
                values = wanted.get(name)
                if values is None:
                    values = wanted[name] = set()
                values.add(value)
        self._wanted = wanted

    def matchesEverything(self):
        """
        Whether this ask has no terms.
        """
        return not self._wanted

    def matches(self, pairs):
        """
        Whether an add with these C{(name, value)} pairs matches.
        """
        wanted = self._wanted
        if not wanted:
            return True
        found = {}
        for name, value in pairs:
            if name in wanted:
                found.setdefault(name, []).append(value)
        for name, values in wanted.items():
            held = found.get(name)
            if held is None:
                return False
            if values is not None and values.isdisjoint(held):
                return False
        return True
