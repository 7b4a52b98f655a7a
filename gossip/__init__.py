"""
gossip: an append-only log of name-value adds that a few machines share,
each keeping the whole log in a plain, checksummed file and syncing with its
peers whenever it can reach them.
"""

__version__ = "0.1.0"
