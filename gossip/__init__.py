"""
gossip: an append-only log of name-value adds that a few machines share,
each keeping the whole log in a plain, checksummed file and syncing with its
peers whenever it can reach them.
"""

__version__ = "0.1.0"


def counted(n, noun):
    """
    C{n} and C{noun}, plural unless C{n} is one: C{"1 add"}, C{"2 adds"}.
    """
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
