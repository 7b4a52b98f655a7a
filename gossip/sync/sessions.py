# -*- test-case-name: tests.test_ssh -*-
"""
The sessions a daemon accepts: which of its logs a peer may sync, and how.
"""

import attrs
from twisted.internet.protocol import Factory

from gossip.sync.amp import Refused
from gossip.sync.protocol import SyncProtocol, vouchFor
from gossip.sync.settings import SessionSettings

__all__ = ["Incoming", "Sessions"]


@attrs.frozen
class Incoming:
    """
    A session a peer opened: its L{SyncProtocol}, the grant of its key (or
    L{None}, for a TLS peer), its address and when it began.
    """

    protocol: object
    grant: object
    host: str | None = None
    since: float | None = None


@attrs.define
class Sessions:
    """
    What the daemon's servers offer: its logs by name, each chosen by the
    peer's hello within what the peer's grant allows.

    @ivar services: L{gossip.sync.service.LogService}s by log name.
    @ivar settings: the sessions' L{SessionSettings}; with C{anyName}, a
        peer whose log has another name may sync the one log served, if
        only one is.
    """

    reactor: object
    services: dict
    settings: SessionSettings = SessionSettings()
    incoming: list = attrs.field(factory=list, init=False)

    def protocolFor(self, grant, peer, host=None):
        """
        A sync session for the peer described by C{peer}, kept in
        C{incoming} while it lasts.

        @param grant: what the peer may do (a L{gossip.transport.ssh.authorized.Grant}),
            or L{None} for anything.
        @param host: the peer's address, which a grant may depend on.
        """
        protocol = SyncProtocol(
            None,
            peer,
            self.settings,
            reactor=self.reactor,
            choose=lambda name, anyName: self.choose(grant, name, anyName),
            readOnly=grant is not None and grant.readOnly,
            vouch=(
                None
                if grant is None or grant.nodes is None
                else vouchFor(grant.nodes, f"key {grant.fingerprint}")
            ),
        )
        entry = Incoming(protocol, grant, host, self.reactor.seconds())
        self.incoming.append(entry)
        protocol.whenFinished().addBoth(lambda ignored: self.incoming.remove(entry))
        return protocol

    def revoke(self, store):
        """
        End the sessions whose keys C{store} no longer lets open their logs
        as they do: after C{authorized_keys} was read again.

        @param store: an L{gossip.transport.ssh.authorized.IKeyStore}.
        @return: how many sessions were ended, and how many kept.
        """
        ended = kept = 0
        for entry in list(self.incoming):
            if entry.grant is None:
                continue
            protocol = entry.protocol
            grant = store.grantFor(entry.grant.key.blob(), entry.host)
            allowed = (
                grant is not None
                and (protocol.service is None or grant.mayOpen(protocol.service.name))
                and (protocol.readOnly or not grant.readOnly)
                and (protocol.peerNode is None or grant.maySpeakFor(protocol.peerNode))
            )
            if allowed:
                kept += 1
                continue
            ended += 1
            protocol.failure = protocol.failure or (
                f"key {entry.grant.fingerprint} no longer may, after a reload"
            )
            if protocol.transport is not None:
                protocol.transport.loseConnection()
        return ended, kept

    def choose(self, grant, name, anyName=False):
        """
        The service of log C{name}, if C{grant} may open it.

        @raise Refused: it may not, or there is no such log.
        """
        service = self.services.get(name)
        if service is None and (anyName or self.settings.anyName) and len(self.services) == 1:
            [service] = self.services.values()
        shown = name.decode("utf-8", "replace")
        if service is None:
            raise Refused(f"no log named {shown!r} here")
        if grant is not None and not grant.mayOpen(service.name):
            raise Refused(f"key {grant.fingerprint} may not open {shown!r}")
        return service

    def tlsFactory(self):
        """
        A factory of sessions for peers that a TLS server let in: their
        certificates are signed by its CA, so they may sync any log.
        """
        return _TLSFactory(self)


class _TLSFactory(Factory):
    def __init__(self, sessions):
        self._sessions = sessions

    def buildProtocol(self, addr):
        return self._sessions.protocolFor(None, f"TLS peer {addr.host}:{addr.port}")
