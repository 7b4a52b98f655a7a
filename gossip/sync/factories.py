# -*- test-case-name: tests.test_commands -*-
"""
The factories of sync sessions, to or from a peer, whatever reaches it.
"""

import attrs
from twisted.internet.protocol import Factory

from gossip.sync.protocol import SyncProtocol
from gossip.sync.settings import SessionSettings

__all__ = ["SyncFactory"]


@attrs.define
class SyncFactory(Factory):
    """
    Makes a L{SyncProtocol} for each connection to or from a peer.
    """

    service: object
    peer: str
    settings: SessionSettings = SessionSettings()
    once: bool = False
    progress: object = None
    want: bytes | None = None
    # Whether these sessions are the ones that dialled the peer.
    dialled: bool = False
    # Why the peer may not say it is a node, if it may not (see SyncProtocol).
    vouch: object = None

    def buildProtocol(self, addr):
        return SyncProtocol(
            self.service,
            self.peer,
            self.settings,
            once=self.once,
            progress=self.progress,
            want=self.want,
            dialled=self.dialled,
            vouch=self.vouch,
        )
