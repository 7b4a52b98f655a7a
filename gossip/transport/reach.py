# -*- test-case-name: tests.test_tap -*-
"""
Reaching peers: by URL, over SSH or TLS, and kept connected with backoff,
as the daemon does.
"""

import os
import random
import shlex

import attrs
from twisted.application.internet import ClientService
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.logger import Logger
from zope.interface import implementer

from gossip.sync.factories import SyncFactory
from gossip.sync.settings import SessionSettings
from gossip.transport.command import commandEndpoint
from gossip.transport.errors import CommandError, TLSError
from gossip.transport.reasons import inWords
from gossip.transport.urls import isURL, parseURL

__all__ = ["Peer", "PeerService", "Reach", "peerService", "urlEndpoint"]


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


# Words in a failure that say the peer, or this node, refused the other:
# trying again will not help until someone changes a key or a setting.
_REFUSALS = ("refused:", "no key was accepted", "host key", "HOST KEY", "@revoked")


@attrs.define(eq=False)
class Peer:
    """
    An outgoing peer as the daemon keeps it: how its attempts go, why the
    last one failed, its session, and what its sessions moved.

    A failure's reason is logged once, in one line naming the peer as the
    user wrote it; attempts that fail the same way after it are counted,
    not logged.

    @ivar name: the peer's URL or command, as the user wrote it.
    @ivar log: the name of the log it syncs.
    @ivar state: C{"connecting"}, C{"syncing"}, C{"caught up"},
        C{"waiting"} (to retry), C{"refused"} (waiting, after a refusal) or
        C{"linked"} (the peer dialled this node, and that session serves
        the link: see L{_TrackedEndpoint}).
    @ivar why: why the last attempt or session failed, in words, if one did.
    @ivar failures: how many attempts in a row have failed.
    @ivar retry: the number of the retry waited for, when waiting.
    @ivar retryAt: when that retry is due, by the clock.
    @ivar session: the L{gossip.sync.protocol.SyncProtocol} of the attempt
        or session under way, if any.
    @ivar connectedSince: when the session under way (or the last) began.
    @ivar totals: what the sessions that ended moved, since the daemon started.
    @ivar node: the peer's node identity, once a session has said it.
    @ivar startedAt: when the daemon began trying the peer, by the clock.
    @ivar superseded: whether the last session ended because another with
        the same peer serves the link.
    """

    _log = Logger()

    name: str
    log: str
    clock: object = attrs.field(repr=False)
    endpoint: object = attrs.field(default=None, repr=False)
    state: str = "connecting"
    why: str | None = None
    failures: int = 0
    retry: int = 0
    retryAt: float | None = None
    session: object = attrs.field(default=None, repr=False)
    connectedSince: float | None = None
    totals: dict = attrs.Factory(
        lambda: {"received": 0, "receivedBytes": 0, "sent": 0, "sentBytes": 0, "dropped": 0}
    )
    node: bytes | None = None
    startedAt: float | None = None
    superseded: bool = False
    _logged: str | None = attrs.field(default=None, repr=False)
    _call: object = attrs.field(default=None, repr=False)
    _handshaken: bool = attrs.field(default=False, repr=False)
    _stopping: bool = attrs.field(default=False, repr=False)

    def connecting(self):
        """
        An attempt begins.
        """
        self.state = "connecting"
        self.retryAt = None
        self._call = None
        self.superseded = False

    def linked(self, session):
        """
        Another session with the peer's node, C{session}, serves the link
        (the peer dialled this node, both ends listing the link): this peer
        waits for it to end before dialling.
        """
        was = self.state
        self.state = "linked"
        self.why = None
        self.retryAt = None
        self._call = None
        self.superseded = False
        if was != "linked":
            self._log.info(
                "{peer}: another session with the same node serves the link ({other})",
                peer=self.name,
                other=session.peer,
            )

    def connectFailed(self, failure):
        """
        The attempt failed before any session began.
        """
        if not self._stopping:
            why = inWords(failure)
            prefix = f"{getattr(self.endpoint, 'peer', None)}: "
            if why.startswith(prefix):
                why = why[len(prefix) :]
            self.session = None
            self._failed(why)
        return failure

    def sessionMade(self, session):
        """
        The attempt made a session, C{session}: this peer says when it
        starts and ends.
        """
        self.session = session
        self._handshaken = False
        session.reportConnected = lambda: None
        session.reportEnd = lambda: self._ended(session)
        session.whenHandshaken().addCallbacks(self._started, lambda failure: None)

    def _started(self, session):
        self._handshaken = True
        self.state = "syncing"
        self.node = session.peerNode
        self.connectedSince = self.clock.seconds()
        if self.failures:
            self._log.info(
                "connected to {peer} after {count} failed attempts",
                peer=self.name,
                count=self.failures,
            )
        else:
            self._log.info("connected to {peer}", peer=self.name)
        self.failures = 0
        # A failure after this session is news, even if it is the same.
        self._logged = None

    def _ended(self, session):
        for total, moved in [
            ("received", session.received),
            ("receivedBytes", session.receivedBytes),
            ("sent", session.acked),
            ("sentBytes", session.ackedBytes),
            ("dropped", session.badAdds),
        ]:
            self.totals[total] += moved
        self.session = None
        self.superseded = session.superseded is not None
        if session.peerNode is not None:
            # Said in its hello, even if this end's was never answered.
            self.node = session.peerNode
        if self._handshaken or self.superseded:
            type(session).reportEnd(session)
            if session.failure is not None:
                self.why = session.failure
        elif not self._stopping:
            self._failed(session.failure or "the peer hung up before the handshake")

    def _failed(self, why):
        self.failures += 1
        self.why = why
        if why != self._logged:
            self._logged = why
            self._log.warn(
                "cannot sync {log} with {peer}: {why} (retrying; said again only if "
                "the reason changes)",
                log=self.log,
                peer=self.name,
                why=why,
            )

    def waiting(self, call, attempt):
        """
        The next attempt, retry number C{attempt}, is C{call}, a delayed call.
        """
        self._call = call
        self.retry = attempt
        self.retryAt = call.getTime()
        refused = self.why is not None and any(word in self.why for word in _REFUSALS)
        self.state = "refused" if refused else "waiting"

    def retryNow(self):
        """
        Make the retry waited for, if any, now.

        @return: whether there was one.
        """
        if self._call is None or not self._call.active():
            return False
        self._call.reset(0)
        return True

    def refresh(self):
        """
        Bring C{state} up to date with the session under way.
        """
        if self.session is not None and self._handshaken:
            self.state = "caught up" if self.session.caughtUp else "syncing"


@attrs.define
class _PeerFactory(SyncFactory):
    """
    A L{SyncFactory} that counts the sessions in a row that ended before
    their handshake, so that a peer that keeps refusing is retried less and
    less often, and tells its L{Peer} of each session.
    """

    tracker: Peer | None = None
    failures: int = attrs.field(default=0, init=False)

    def buildProtocol(self, addr):
        protocol = SyncFactory.buildProtocol(self, addr)
        if self.tracker is not None:
            self.tracker.sessionMade(protocol)
        protocol.whenHandshaken().addCallbacks(
            self._handshaken, self._failed, errbackArgs=(protocol,)
        )
        return protocol

    def _handshaken(self, protocol):
        self.failures = 0
        return protocol

    def _failed(self, failure, protocol):
        # The session has logged why; this caller's Deferred ends here.  A
        # session that gave way to another with the same peer did not fail.
        if protocol.superseded is None:
            self.failures += 1


@implementer(IStreamClientEndpoint)
@attrs.define
class _TrackedEndpoint:
    """
    An endpoint whose attempts its L{Peer} hears of.
    """

    endpoint: object
    tracker: Peer
    service: object = None

    def connect(self, factory):
        """
        Dial the peer, unless a session the peer dialled links this node
        with it already: then wait for that session to end first.
        """
        link = None
        if self.service is not None and self.tracker.node is not None:
            link = self.service.linkWith(self.tracker.node)
        if link is None:
            self.tracker.connecting()
            return self.endpoint.connect(factory).addErrback(self.tracker.connectFailed)
        self.tracker.linked(link)
        waiting = link.whenFinished()
        attempt = []

        def cancel(result):
            if attempt:
                attempt[0].cancel()
            else:
                attempt.append(None)
                waiting.cancel()

        result = Deferred(cancel)

        def ended(outcome):
            if attempt:
                # Cancelled while waiting.
                return None
            attempt.append(self.connect(factory))
            attempt[0].chainDeferred(result)

        waiting.addBoth(ended)
        return result


@attrs.define(eq=False)
class _TrackedClock:
    """
    The reactor's clock as a L{ClientService} uses it (to wait before a
    retry), with the wait told to a L{Peer}, which may cut it short.
    """

    reactor: object
    tracker: Peer
    attempts: list = attrs.Factory(list)

    def seconds(self):
        return self.reactor.seconds()

    def callLater(self, delay, function, *args, **kwargs):
        call = self.reactor.callLater(delay, function, *args, **kwargs)
        self.tracker.waiting(call, self.attempts.pop() if self.attempts else 0)
        return call


class PeerService(ClientService):
    """
    A L{ClientService} that keeps a session with a peer, with its L{Peer}.

    ClientService's own log line for each retry ("Scheduling retry N to
    connect ...") is left out: the L{Peer} says why attempts fail, once.

    @ivar peer: the L{Peer}.
    """

    _log = Logger(observer=lambda event: None)

    def __init__(self, endpoint, factory, retryPolicy, reactor, peer):
        clock = _TrackedClock(reactor, peer)

        def policy(attempt):
            attempt = max(attempt, factory.failures)
            clock.attempts.append(attempt)
            return retryPolicy(attempt)

        ClientService.__init__(
            self,
            _TrackedEndpoint(endpoint, peer, factory.service),
            factory,
            retryPolicy=policy,
            clock=clock,
        )
        self.peer = peer

    def stopService(self):
        self.peer._stopping = True
        return ClientService.stopService(self)

    def startService(self):
        self.peer._stopping = False
        self.peer.startedAt = self.peer.clock.seconds()
        return ClientService.startService(self)


# Retries of a peer: soon at first (a peer starting at the same time as
# this daemon is listening within a second or so), then no further apart
# than UNREACHABLE_MAX while it cannot be reached, so that a peer back from
# an outage of any length is reached again within seconds (6.25 s at most,
# spread included, which keeps a heal within 10 s); but up to
# REFUSED_MAX apart while it refuses this node (a key or host key that a
# person must fix), so as not to knock on its door every few seconds.  Each
# delay is spread by a quarter either way, so that daemons restarted
# together do not retry together.
INITIAL_DELAY = 0.5
UNREACHABLE_MAX = 5.0
REFUSED_MAX = 300.0
# For its first START_WAIT seconds, until the peer is first reached, the
# daemon waits for it rather than backing off: a retry every START_RETRY
# seconds (spread the same way), as peers started together come up.
START_WAIT = 10.0
START_RETRY = 0.25


def retryDelay(peer, random=random.random):
    """
    The retry policy of L{peerService}s: the delay before retry number
    C{attempt} to reach C{peer}, a L{Peer}, by why it last failed.
    """

    def policy(attempt):
        if peer.superseded:
            # Soon: the session that serves the link instead is waited for.
            return START_RETRY * (0.75 + 0.5 * random())
        refused = peer.why is not None and any(word in peer.why for word in _REFUSALS)
        starting = (
            peer.node is None
            and peer.startedAt is not None
            and peer.clock.seconds() - peer.startedAt < START_WAIT
        )
        if refused:
            cap = REFUSED_MAX
        elif starting:
            return START_RETRY * (0.75 + 0.5 * random())
        else:
            cap = UNREACHABLE_MAX
        delay = min(cap, INITIAL_DELAY * 1.5 ** min(attempt, 64))
        return delay * (0.75 + 0.5 * random())

    return policy


def peerService(
    reactor,
    service,
    command,
    settings=SessionSettings(),
    reach=None,
):
    """
    A service that keeps a session with the peer at a URL or reached by
    running C{command}, reconnecting when it fails (see L{retryDelay}: half
    a second growing to 5 seconds while the peer cannot be reached, to 5
    minutes while it refuses this node).

    @param command: a URL (see L{urlEndpoint}), or a command as a list of
        arguments or a shell-style string.
    @param settings: the sessions' L{SessionSettings}.
    @param reach: the L{Reach} for URLs.
    @rtype: L{PeerService}
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
    tracker = Peer(name, service.name.decode("utf-8", "replace"), reactor, endpoint)
    factory = _PeerFactory(service, name, settings, want=want, tracker=tracker, dialled=True)
    # ClientService cannot wait for the handshake (prepareConnection): it has
    # no transition for a connection lost while it waits.  A session that
    # ended before its handshake counts as a failed attempt here instead.
    return PeerService(endpoint, factory, retryDelay(tracker), reactor, tracker)
