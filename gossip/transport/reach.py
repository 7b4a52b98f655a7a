# -*- test-case-name: tests.test_tap -*-
"""
Reaching peers: by URL, over SSH or TLS, and kept connected with backoff,
as the daemon does.
"""

import os
import shlex

import attrs
from twisted.application.internet import ClientService, backoffPolicy

from gossip.sync.factories import SyncFactory
from gossip.sync.settings import SessionSettings
from gossip.transport.command import commandEndpoint
from gossip.transport.errors import CommandError, TLSError
from gossip.transport.urls import isURL, parseURL

__all__ = ["Reach", "peerService", "urlEndpoint"]


@attrs.define
class Reach:
    """
    How to reach peers named by URLs: the keys and files of SSH and TLS.

    @ivar identities: paths of OpenSSH private keys; when empty, those
        OpenSSH's client would use (C{~/.ssh/id_ed25519}, ...).
    @ivar agentPath: the ssh-agent's socket (default C{$SSH_AUTH_SOCK}).
    @ivar knownHosts: the C{known_hosts} file (default the user's).
    @ivar acceptNewHostKeys: record unknown host keys, like OpenSSH's
        C{StrictHostKeyChecking=accept-new}.
    @ivar tls: the L{gossip.transport.tls.TLSFiles} for C{tls://} peers, if any.
    """

    identities: list = attrs.Factory(list)
    agentPath: str | None = attrs.Factory(lambda: os.environ.get("SSH_AUTH_SOCK") or None)
    knownHosts: str | None = None
    acceptNewHostKeys: bool = False
    tls: object = None


def urlEndpoint(reactor, url, reach):
    """
    An endpoint that reaches the sync session of the peer at C{url}.

    @param reach: the L{Reach} with the keys to use.
    @return: the endpoint and the name of the log the URL asks for (or
        L{None}).
    @raise CommandError: the URL or the keys are wrong.
    """
    peer = parseURL(url)
    if peer.scheme == "ssh":
        return _sshEndpoint(reactor, peer, reach), peer.log
    from gossip.transport import tls

    if reach.tls is None:
        raise CommandError(f"{url}: give --tls-key, --tls-cert and --tls-ca to reach it")
    try:
        return tls.clientEndpoint(reactor, peer.host, peer.port, reach.tls), peer.log
    except TLSError as e:
        raise CommandError(str(e))


def _sshEndpoint(reactor, peer, reach):
    """
    An endpoint that reaches the SSH peer C{peer} (a L{PeerURL}) with the
    keys of C{reach}.
    """
    from gossip.transport.ssh.client import SSHSyncEndpoint
    from gossip.transport.ssh.keys import defaultIdentities, loadIdentity

    if reach.identities:
        identities = [loadIdentity(path) for path in reach.identities]
    else:
        identities = defaultIdentities()
    return SSHSyncEndpoint(
        reactor,
        peer,
        identities,
        agentPath=reach.agentPath,
        knownHosts=reach.knownHosts,
        acceptNewHostKeys=reach.acceptNewHostKeys,
    )


@attrs.define
class _PeerFactory(SyncFactory):
    """
    A L{SyncFactory} that counts the sessions in a row that ended before
    their handshake, so that a peer that keeps refusing is retried less and
    less often.
    """

    failures: int = attrs.field(default=0, init=False)

    def buildProtocol(self, addr):
        protocol = SyncFactory.buildProtocol(self, addr)
        protocol.whenHandshaken().addCallbacks(self._handshaken, self._failed)
        return protocol

    def _handshaken(self, protocol):
        self.failures = 0
        return protocol

    def _failed(self, failure):
        # The session has logged why; this caller's Deferred ends here.
        self.failures += 1


def peerService(
    reactor,
    service,
    command,
    settings=SessionSettings(),
    reach=None,
):
    """
    A service that keeps a session with the peer at a URL or reached by
    running C{command}, reconnecting with backoff (1 s growing to 5
    minutes) when it fails.

    @param command: a URL (see L{urlEndpoint}), or a command as a list of
        arguments or a shell-style string.
    @param settings: the sessions' L{SessionSettings}.
    @param reach: the L{Reach} for URLs.
    """
    want = None
    if isinstance(command, str) and isURL(command):
        endpoint, want = urlEndpoint(reactor, command, reach or Reach())
        name = command
    else:
        if isinstance(command, str):
            command = shlex.split(command)
        endpoint = commandEndpoint(reactor, command, logErrors=True)
        name = shlex.join(command)
    factory = _PeerFactory(service, name, settings, want=want)
    delay = backoffPolicy(initialDelay=1.0, maxDelay=300.0)
    # ClientService cannot wait for the handshake (prepareConnection): it has
    # no transition for a connection lost while it waits.  A session that
    # ended before its handshake counts as a failed attempt here instead.
    return ClientService(
        endpoint,
        factory,
        retryPolicy=lambda attempt: delay(max(attempt, factory.failures)),
        clock=reactor,
    )
