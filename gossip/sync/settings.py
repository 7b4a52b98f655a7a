# -*- test-case-name: tests.test_protocol -*-
"""
What a sync session is told by whoever runs it: one record, made once from
the command line's or the daemon's options and handed down whole.
"""

import attrs

from gossip.sync.defaults import KEEPALIVE, MAX_SUMMARY, NOTE_PERIOD, SWITCH_DELAY, TIMEOUT

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
    @ivar streams: speak version 2's streams with a peer that does too
        (docs/protocol.md, "Many nodes"); a one-shot session never does.
    @ivar notePeriod: on a link that streams an origin neither way, say
        what the log gained of it about this often, in seconds (each
        period drawn within 20% of it).
    @ivar switchDelay: a peer that says it holds adds of an origin that
        the log lacks and another peer streams to it gets this many
        seconds for the stream to bring them; then they are fetched from
        the peer that said so, and the origin streamed from it.
    """

    anyName: bool = False
    timeout: float | None = TIMEOUT
    keepalive: float = KEEPALIVE
    maxSummary: int = MAX_SUMMARY
    streams: bool = True
    notePeriod: float = NOTE_PERIOD
    switchDelay: float = SWITCH_DELAY
