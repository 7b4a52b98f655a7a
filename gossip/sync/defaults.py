# -*- test-case-name: tests.test_cli -*-
"""
The defaults of a sync session's settings, as plain numbers.

They are apart from L{gossip.sync.settings.SessionSettings} so that the
command line can show them in its help without importing attrs, which
takes about as long as a whole C{gossip say}.
"""

__all__ = ["KEEPALIVE", "MAX_SUMMARY", "NOTE_PERIOD", "SWITCH_DELAY", "TIMEOUT"]

# Seconds a peer may take to complete a message, or move under MIN_RATE
# bytes a second mid-message.
TIMEOUT = 60.0
# Seconds of quiet after which a session pings its peer.
KEEPALIVE = 20.0
# Bytes a peer's summary of what it holds may take, in all its parts.
MAX_SUMMARY = 8 * 1024 * 1024
# Seconds between the notes on a link that streams an origin neither way
# (each drawn within 20% of it).
NOTE_PERIOD = 5.0
# Seconds a stream gets to bring adds a lazy peer said it holds before they
# are fetched from that peer instead.
SWITCH_DELAY = 1.0
