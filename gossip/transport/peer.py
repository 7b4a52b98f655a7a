# -*- test-case-name: tests.test_commands -*-
"""
Reaching peers: sync sessions over a spawned command's standard input and
output, kept connected with backoff.
"""

import fcntl
import os
import shlex
import signal

import attr
from twisted.application.internet import ClientService, backoffPolicy
from twisted.internet.defer import fail, succeed
from twisted.internet.error import (
    ConnectionDone,
    ProcessDone,
    ProcessExitedAlready,
    ProcessTerminated,
)
from twisted.internet.interfaces import IProcessTransport, IStreamClientEndpoint
from twisted.internet.process import (
    ProcessReader,
    ProcessWriter,
    registerReapProcessHandler,
    unregisterReapProcessHandler,
)
from twisted.internet.protocol import Factory, ProcessProtocol
from twisted.logger import Logger
from twisted.python.components import proxyForInterface
from twisted.python.failure import Failure
from zope.interface import implementer

from gossip.sync.protocol import MAX_SUMMARY, SyncProtocol
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


class CommandError(Exception):
    """
    A peer could not be reached: its command could not be run, its URL is
    wrong, or it would not let us in.
    """


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
    hangs up on the command.
    """

    def __init__(self, process, hangUp):
        self._process = process
        self._hangUp = hangUp

    def loseConnection(self):
        self._hangUp()


class _CommandProcess(ProcessProtocol):
    """
    Connects a protocol to a command's standard input and output.

    The connection is lost when the command exits, so that its exit status
    is known.  Hanging up, or the command closing its output, closes its
    pipes; a command that has not exited C{grace} seconds later (a hung ssh,
    a peer that ignores end of input) is terminated, then killed.
    """

    def __init__(self, protocol, reactor, grace, logErrors=False, name=""):
        self._protocol = protocol
        self._reactor = reactor
        self._grace = grace
        self._stopping = None
        self._ended = False
        self._logErrors = logErrors
        self._name = name
        self._errors = b""

    def connectionMade(self):
        for pipe in self.transport.pipes.values():
            widenPipe(pipe.fileno())
        self._protocol.makeConnection(_CommandTransport(self.transport, self._hangUp))

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
        protocol = factory.buildProtocol(CommandAddress(self.argv))
        process = _CommandProcess(
            protocol, self.reactor, self.grace, self.logErrors, shlex.join(self.argv)
        )
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


@implementer(IProcessTransport)
class _SpawnedProcess:
    """
    A command that L{gossip.transport.spawn.spawn} started, before the reactor ran,
    as a process transport: what the reactor's own processes do with their
    standard input and output, and with their exit.
    """

    def __init__(self, reactor, spawned, proto):
        self.pid = spawned.pid
        self.proto = proto
        self._status = None
        self.pipes = {
            0: ProcessWriter(reactor, self, 0, spawned.stdin),
            1: ProcessReader(reactor, self, 1, spawned.stdout),
        }

    def start(self):
        self.proto.makeConnection(self)
        # The reactor reaps it when it exits, as it does its own processes.
        registerReapProcessHandler(self.pid, self)

    def write(self, data):
        if 0 in self.pipes:
            self.pipes[0].write(data)

    def writeSequence(self, data):
        if 0 in self.pipes:
            self.pipes[0].writeSequence(data)

    def writeToChild(self, childFD, data):
        self.pipes[childFD].write(data)

    def closeChildFD(self, childFD):
        if childFD in self.pipes:
            self.pipes[childFD].loseConnection()

    def closeStdin(self):
        self.closeChildFD(0)

    def closeStdout(self):
        self.closeChildFD(1)

    def closeStderr(self):
        pass

    def loseConnection(self):
        self.closeStdin()
        self.closeStdout()

    def signalProcess(self, signalID):
        if self.pid is None:
            raise ProcessExitedAlready()
        if isinstance(signalID, str):
            signalID = getattr(signal, "SIG" + signalID)
        try:
            os.kill(self.pid, signalID)
        except ProcessLookupError:
            raise ProcessExitedAlready() from None

    def getPeer(self):
        return CommandAddress(None)

    getHost = getPeer

    def childDataReceived(self, childFD, data):
        self.proto.childDataReceived(childFD, data)

    def childConnectionLost(self, childFD, reason):
        os.close(self.pipes.pop(childFD).fileno())
        self.proto.childConnectionLost(childFD)
        self._maybeEnded()

    def reapProcess(self):
        try:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:
            pid, status = self.pid, 0
        if pid:
            unregisterReapProcessHandler(pid, self)
            self.processEnded(status)

    def processEnded(self, status):
        self.pid = None
        self._status = status
        self._maybeEnded()

    def _maybeEnded(self):
        # As the reactor's processes do: the protocol hears of the exit
        # once the command has exited and all of its output is read.
        if self.pipes or self.proto is None:
            return
        if self._status is None:
            self.reapProcess()
            return
        if os.WIFEXITED(self._status) and os.WEXITSTATUS(self._status) == 0:
            reason = ProcessDone(self._status)
        elif os.WIFEXITED(self._status):
            reason = ProcessTerminated(exitCode=os.WEXITSTATUS(self._status), status=self._status)
        else:
            reason = ProcessTerminated(signal=os.WTERMSIG(self._status), status=self._status)
        proto, self.proto = self.proto, None
        proto.processEnded(Failure(reason))


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
        argv = self.spawned.argv
        protocol = factory.buildProtocol(CommandAddress(argv))
        process = _CommandProcess(protocol, self.reactor, self.grace, name=shlex.join(argv))
        _SpawnedProcess(self.reactor, self.spawned, process).start()
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
        from gossip.transport import ssh

        peer = ssh.parseSSHURL(url)
        if reach.identities:
            identities = [ssh.loadIdentity(path) for path in reach.identities]
        else:
            identities = ssh.defaultIdentities()
        endpoint = ssh.SSHSyncEndpoint(
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
        except tls.TLSError as e:
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
        self.failures += 1
        return failure


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
