# -*- test-case-name: tests.test_commands -*-
"""
Reaching peers: sync sessions over a spawned command's standard input and
output, kept connected with backoff.
"""

import fcntl
import os
import shlex

import attr
from twisted.application.internet import ClientService, backoffPolicy
from twisted.internet.defer import fail, succeed
from twisted.internet.error import ConnectionDone, ProcessDone, ProcessExitedAlready
from twisted.internet.interfaces import IAddress, IProcessTransport, IStreamClientEndpoint
from twisted.internet.process import Process, registerReapProcessHandler
from twisted.internet.protocol import Factory, ProcessProtocol
from twisted.internet.stdio import PipeAddress
from twisted.logger import Logger
from twisted.python.components import proxyForInterface
from twisted.python.failure import Failure
from zope.interface import implementer

from gossip.sync.protocol import MAX_SUMMARY, SyncProtocol
from gossip.transport.errors import CommandError, TLSError
from gossip.transport.spawn import isURL

__all__ = [
    "CommandEndpoint",
    "CommandError",
    "Reach",
    "SpawnedEndpoint",
    "SyncFactory",
    "commandEndpoint",
    "isURL",
    "peerService",
    "urlEndpoint",
    "widenPipe",
]

log = Logger()

# How long a command whose session has ended may take to exit before it is
# terminated (and as long again before it is killed).
GRACE = 3.0


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


@implementer(IAddress)
@attr.frozen
class CommandAddress:
    """
    The address of a peer reached through a command: its arguments.
    """

    argv = attr.ib()


def widenPipe(fd, size=1 << 20):
    """
    Let the pipe C{fd} hold C{size} bytes, where the system allows (Linux:
    up to /proc/sys/fs/pipe-max-size, 1 MiB by default), rather than 64
    KiB: the sender then runs that much further ahead of the receiver.
    Anything but a pipe is left alone.
    """
    try:
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, size)
    except (AttributeError, OSError):
        pass


class _CommandTransport(proxyForInterface(IProcessTransport, "_process")):
    """
    A command's process as its session's transport: losing the connection
    hangs up on the command; the peer's address is the command, and this
    end's is a pipe, as L{StandardIO}'s are.
    """

    def __init__(self, process, hangUp, peer):
        self._process = process
        self._hangUp = hangUp
        self._peer = peer

    def loseConnection(self):
        self._hangUp()

    def getPeer(self):
        return self._peer

    def getHost(self):
        return PipeAddress()


class _CommandProcess(ProcessProtocol):
    """
    Connects a protocol to a command's standard input and output.

    The connection is lost when the command exits, so that its exit status
    is known.  Hanging up, or the command closing its output, closes its
    pipes; a command that has not exited C{grace} seconds later (a hung ssh,
    a peer that ignores end of input) is terminated, then killed.
    """

    def __init__(self, protocol, reactor, grace, address, logErrors=False):
        self._protocol = protocol
        self._reactor = reactor
        self._grace = grace
        self._address = address
        self._stopping = None
        self._ended = False
        self._logErrors = logErrors
        self._name = shlex.join(address.argv)
        self._errors = b""

    def connectionMade(self):
        for pipe in self.transport.pipes.values():
            widenPipe(pipe.fileno())
        self._protocol.makeConnection(
            _CommandTransport(self.transport, self._hangUp, self._address)
        )

    def childDataReceived(self, childFD, data):
        if childFD == 1:
            self._protocol.dataReceived(data)
        elif childFD == 2 and self._logErrors:
            lines = (self._errors + data).split(b"\n")
            self._errors = lines.pop()[-4096:]
            for line in lines:
                self._logError(line)

    def _logError(self, line):
        log.warn(
            "{command} says: {line}",
            command=self._name,
            line=line.decode("utf-8", "replace").rstrip(),
        )

    def childConnectionLost(self, childFD):
        if childFD == 1:
            # Nothing more can come from the peer.
            self._hangUp()

    def _hangUp(self):
        if self._ended or self._stopping is not None:
            return
        self.transport.loseConnection()
        self._stopping = self._reactor.callLater(self._grace, self._stop, "TERM")

    def _stop(self, signal):
        try:
            self.transport.signalProcess(signal)
        except ProcessExitedAlready:
            return
        if signal == "TERM":
            self._stopping = self._reactor.callLater(self._grace, self._stop, "KILL")

    def processEnded(self, reason):
        self._ended = True
        if self._errors:
            self._logError(self._errors)
            self._errors = b""
        if self._stopping is not None and self._stopping.active():
            self._stopping.cancel()
        if reason.check(ProcessDone):
            reason = Failure(ConnectionDone())
        self._protocol.connectionLost(reason)


@implementer(IStreamClientEndpoint)
@attr.s
class CommandEndpoint:
    """
    Runs a command and speaks over its standard input and output; its
    standard error is passed through, or logged line by line as warnings
    (C{logErrors}, for a daemon, whose standard error nobody reads).
    """

    reactor = attr.ib(repr=False)
    argv = attr.ib()
    grace = attr.ib(default=GRACE, repr=False)
    logErrors = attr.ib(default=False, repr=False)

    def connect(self, factory):
        address = CommandAddress(self.argv)
        protocol = factory.buildProtocol(address)
        process = _CommandProcess(protocol, self.reactor, self.grace, address, self.logErrors)
        try:
            self.reactor.spawnProcess(
                process,
                self.argv[0],
                self.argv,
                env=os.environ,
                childFDs={0: "w", 1: "r", 2: "r" if self.logErrors else 2},
            )
        except OSError as e:
            return fail(CommandError(f"cannot run {self.argv[0]}: {e.strerror}"))
        return succeed(protocol)


class _AdoptedProcess(Process):
    """
    A command that L{gossip.transport.spawn.spawn} started before Twisted
    was imported, as one of the reactor's own processes: its pipes, its
    reaping and the reason its exit gives are L{Process}'s.

    Twisted has no way to adopt a running child: L{Process} starts its
    command in its constructor, and L{StandardIO} on the command's pipes
    would still need a reaper and the mapping of exit statuses to reasons,
    which only L{Process} has.  So this constructor, in place of
    L{Process}'s (which would start another), sets up what that one does
    once its child runs: the pid, a writer and a reader on the command's
    pipes, the protocol's connection and the reaper's registration.
    C{tests.test_spawn} checks that the rest of L{Process} works with it.
    """

    def __init__(self, reactor, spawned, proto):
        self._reactor = reactor
        self.proto = proto
        self.pid = spawned.pid
        self.pipes = {
            0: self.processWriterFactory(reactor, self, 0, spawned.stdin, forceReadHack=True),
            1: self.processReaderFactory(reactor, self, 1, spawned.stdout),
        }
        proto.makeConnection(self)
        registerReapProcessHandler(self.pid, self)


@implementer(IStreamClientEndpoint)
@attr.s
class SpawnedEndpoint:
    """
    Speaks over the standard input and output of a command already started
    (a L{gossip.transport.spawn.Spawned}), as L{CommandEndpoint} does over a command
    it starts.  It connects once.
    """

    reactor = attr.ib(repr=False)
    spawned = attr.ib()
    grace = attr.ib(default=GRACE, repr=False)

    def connect(self, factory):
        address = CommandAddress(self.spawned.argv)
        protocol = factory.buildProtocol(address)
        process = _CommandProcess(protocol, self.reactor, self.grace, address)
        _AdoptedProcess(self.reactor, self.spawned, process)
        return succeed(protocol)


def commandEndpoint(reactor, command, logErrors=False):
    """
    A L{CommandEndpoint} for C{command}, a list of arguments or a
    shell-style string.
    """
    if isinstance(command, str):
        command = shlex.split(command)
    return CommandEndpoint(reactor, list(command), logErrors=logErrors)


@attr.s
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

    identities = attr.ib(factory=list)
    agentPath = attr.ib(factory=lambda: os.environ.get("SSH_AUTH_SOCK") or None)
    knownHosts = attr.ib(default=None)
    acceptNewHostKeys = attr.ib(default=False)
    tls = attr.ib(default=None)


def urlEndpoint(reactor, url, reach):
    """
    An endpoint that reaches the sync session of the peer at C{url}.

    @param reach: the L{Reach} with the keys to use.
    @return: the endpoint and the name of the log the URL asks for (or
        L{None}).
    @raise CommandError: the URL or the keys are wrong.
    """
    if url.startswith("ssh://"):
        from gossip.transport.ssh.client import SSHSyncEndpoint
        from gossip.transport.ssh.keys import defaultIdentities, loadIdentity
        from gossip.transport.urls import parseSSHURL

        peer = parseSSHURL(url)
        if reach.identities:
            identities = [loadIdentity(path) for path in reach.identities]
        else:
            identities = defaultIdentities()
        endpoint = SSHSyncEndpoint(
            reactor,
            peer,
            identities,
            agentPath=reach.agentPath,
            knownHosts=reach.knownHosts,
            acceptNewHostKeys=reach.acceptNewHostKeys,
        )
        return endpoint, peer.log
    if url.startswith("tls://"):
        from gossip.transport import tls

        try:
            host, port, name = tls.parseTLSURL(url)
            if reach.tls is None:
                raise CommandError(f"{url}: give --tls-key, --tls-cert and --tls-ca to reach it")
            return tls.clientEndpoint(reactor, host, port, reach.tls), name
        except TLSError as e:
            raise CommandError(str(e))
    raise CommandError(f"{url}: not a peer URL (ssh://... or tls://...)")


@attr.s
class _PeerFactory(SyncFactory):
    """
    A L{SyncFactory} that counts the sessions in a row that ended before
    their handshake, so that a peer that keeps refusing is retried less and
    less often.
    """

    failures = attr.ib(default=0, init=False)

    def buildProtocol(self, addr):
        protocol = SyncFactory.buildProtocol(self, addr)
        protocol.whenHandshaken().addCallbacks(self._handshaken, self._failed)
        return protocol

    def _handshaken(self, protocol):
        self.failures = 0
        return protocol

    def _failed(self, failure):
        # The session has logged why.
        self.failures += 1


def peerService(
    reactor,
    service,
    command,
    anyName=False,
    timeout=60.0,
    keepalive=20.0,
    reach=None,
    maxSummary=MAX_SUMMARY,
):
    """
    A service that keeps a session with the peer at a URL or reached by
    running C{command}, reconnecting with backoff (1 s growing to 5
    minutes) when it fails.

    @param command: a URL (see L{urlEndpoint}), or a command as a list of
        arguments or a shell-style string.
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
    factory = _PeerFactory(
        service,
        name,
        anyName=anyName,
        timeout=timeout,
        keepalive=keepalive,
        want=want,
        maxSummary=maxSummary,
    )
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
