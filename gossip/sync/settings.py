# -*- test-case-name: tests.test_protocol -*-
"""
What a sync session is told by whoever runs it: one record, made once from
the command line's or the daemon's options and handed down whole.
"""

import attrs

from gossip.sync.defaults import KEEPALIVE, MAX_SUMMARY, TIMEOUT

__all__ = ["SessionSettings"]


@attrs.frozen
class SessionSettings:
    """
    How a sync session treats its peer.

    @ivar anyName: sync with a peer whose log has another name.
    @ivar timeout: give up on a peer that completes no message in this
        many seconds, or moves too little for as long mid-message; L{None}
        for never.
    @ivar keepalive: ping the peer after this many idle seconds; 0 for
        never.
    @ivar maxSummary: refuse a peer whose summary of what it holds is
        longer than this many bytes.
    """

    anyName: bool = False
    timeout: float | None = TIMEOUT
    keepalive: float = KEEPALIVE
    maxSummary: int = MAX_SUMMARY
