"""
Tests for L{gossip.store.query}: which adds an ask matches, as in the original.
"""

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import TestCase

from gossip.store.query import Query

_quick = settings(max_examples=200, deadline=None)


def originalMatches(terms, pairs):
    """
    The original gossip.py's query, restated: index the ask and the add by
    name, then every name asked must be in the add and, where the ask gives
    values for a name, one of the add's values for it must be among them.
    """
    ask = {}
    for name, value in terms:
        if value is None:
            ask.setdefault(name, None)
        else:
            if ask.get(name) is None:
                ask[name] = set()
            ask[name].add(value)
    add = {}
    for name, value in pairs:
        add.setdefault(name, set()).add(value)
    for name, values in ask.items():
        if name not in add:
            return False
        if values is not None and not values & add[name]:
            return False
    return True


# Few names and values, so that asks and adds share them often.
names = st.sampled_from([b"m", b"tag", b"n", b"\x00", b"a b"])
values = st.sampled_from([b"", b"x", b"y", b"\n", b"\xff"])
terms = st.lists(st.tuples(names, st.one_of(st.none(), values)), max_size=5)
adds = st.lists(st.tuples(names, values), max_size=6)


class QueryTests(TestCase):
    """
    L{Query} matches the adds the original's ask matched.
    """

    def assertMatches(self, terms, pairs, expected=True):
        self.assertEqual(Query(terms).matches(pairs), expected, (terms, pairs))

    def test_noTerms(self):
        """
        An empty ask matches every add, the empty one too.
        """
        for query in (Query(), Query([])):
            self.assertTrue(query.matchesEverything())
            self.assertTrue(query.matches([]))
            self.assertTrue(query.matches([(b"m", b"x")]))

    def test_someTerms(self):
        self.assertFalse(Query([(b"m", None)]).matchesEverything())
        self.assertFalse(Query([(b"m", b"x")]).matchesEverything())

    def test_nameAlone(self):
        """
        A name alone asks only that the add have that name, whatever value.
        """
        self.assertMatches([(b"m", None)], [(b"m", b"")])
        self.assertMatches([(b"m", None)], [(b"n", b"1"), (b"m", b"anything")])
        self.assertMatches([(b"m", None)], [(b"n", b"m")], False)
        self.assertMatches([(b"m", None)], [], False)

    def test_everyNameAsked(self):
        self.assertMatches([(b"m", None), (b"n", None)], [(b"m", b"1")], False)
        self.assertMatches([(b"m", None), (b"n", None)], [(b"n", b"1"), (b"m", b"2")])
        self.assertMatches([(b"m", b"1"), (b"n", None)], [(b"m", b"1")], False)

    def test_value(self):
        """
        A value must match exactly, byte for byte.
        """
        self.assertMatches([(b"m", b"hello")], [(b"m", b"hello")])
        self.assertMatches([(b"m", b"hell")], [(b"m", b"hello")], False)
        self.assertMatches([(b"m", b"hello")], [(b"m", b"Hello")], False)
        self.assertMatches([(b"m", b"")], [(b"m", b"")])
        self.assertMatches([(b"m", b"")], [(b"m", b"x")], False)
        self.assertMatches([(b"m\x00", b"\n\xff")], [(b"m\x00", b"\n\xff")])
        self.assertMatches([(b"m", b"x")], [(b"n", b"x")], False)

    def test_anyOfTheValues(self):
        """
        Values given for one name are alternatives: one must match.
        """
        ask = [(b"tag", b"a"), (b"tag", b"c")]
        self.assertMatches(ask, [(b"tag", b"c")])
        self.assertMatches(ask, [(b"tag", b"a")])
        self.assertMatches(ask, [(b"tag", b"d")], False)

    def test_repeatedNamesInAdd(self):
        """
        Any of an add's values for a name can match.
        """
        add = [(b"tag", b"a"), (b"m", b"x"), (b"tag", b"b")]
        self.assertMatches([(b"tag", b"b")], add)
        self.assertMatches([(b"tag", b"a")], add)
        self.assertMatches([(b"tag", b"c")], add, False)
        self.assertMatches([(b"tag", b"b"), (b"m", b"x")], add)
        self.assertMatches([(b"tag", b"b"), (b"m", b"y")], add, False)

    def test_nameAloneAndValue(self):
        """
        A name asked alone and with a value asks for the value, in either
        order.
        """
        for ask in ([(b"m", None), (b"m", b"x")], [(b"m", b"x"), (b"m", None)]):
            self.assertMatches(ask, [(b"m", b"x")])
            self.assertMatches(ask, [(b"m", b"y")], False)

    def test_termsOnce(self):
        """
        Terms may be any iterable, read once.
        """
        query = Query(iter([(b"m", b"x"), (b"n", None)]))
        self.assertTrue(query.matches([(b"n", b""), (b"m", b"x")]))
        self.assertFalse(query.matches([(b"m", b"x")]))

    @_quick
    @given(terms, adds)
    def test_original(self, askTerms, pairs):
        self.assertEqual(Query(askTerms).matches(pairs), originalMatches(askTerms, pairs))
        self.assertEqual(Query(askTerms).matchesEverything(), not askTerms)

    @_quick
    @given(terms, adds, st.randoms(use_true_random=False))
    def test_orderDoesNotMatter(self, askTerms, pairs, random):
        """
        Neither the order of the ask's terms nor of the add's pairs changes
        whether it matches.
        """
        expected = Query(askTerms).matches(pairs)
        random.shuffle(askTerms)
        random.shuffle(pairs)
        self.assertEqual(Query(askTerms).matches(pairs), expected)
