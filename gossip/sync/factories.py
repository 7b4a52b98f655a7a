# -*- test-case-name: tests.test_commands -*-
"""
The factories of sync sessions, to or from a peer, whatever reaches it.
"""

import attr
from twisted.internet.protocol import Factory

from gossip.sync.protocol import MAX_SUMMARY, SyncProtocol

__all__ = ["SyncFactory"]


@attr.s
class SyncFactory(Factory):
    """
    Makes a L{SyncProtocol} for each connection to or from a peer.
    """

    service = attr.ib()
    peer = attr.ib()
    once = attr.ib(default=False)
    anyName = attr.ib(default=False)
    timeout = attr.ib(default=60.0)
    keepalive = attr.ib(default=20.0)
    progress = attr.ib(default=None)
    want = attr.ib(default=None)
    maxSummary = attr.ib(default=MAX_SUMMARY)

    def buildProtocol(self, addr):
        return SyncProtocol(
            self.service,
            self.peer,
            once=self.once,
            anyName=self.anyName,
            timeout=self.timeout,
            keepalive=self.keepalive,
            progress=self.progress,
            want=self.want,
            maxSummary=self.maxSummary,
        )
