# -*- test-case-name: tests.test_spawn -*-
"""
Reaching a peer through a command: sync sessions over a spawned command's
standard input and output.
"""

import fcntl
import os
import shlex

import attrs
from twisted.internet.defer import fail, succeed
from twisted.internet.error import (
    ConnectionDone,
    ConnectionLost,
    ProcessDone,
    ProcessExitedAlready,
    ProcessTerminated,
)
from twisted.internet.interfaces import IAddress, IProcessTransport, IStreamClientEndpoint
from twisted.internet.process import Process, registerReapProcessHandler
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.stdio import PipeAddress
from twisted.logger import Logger
from twisted.python.components import proxyForInterface
from twisted.python.failure import Failure
from zope.interface import implementer

from gossip.transport.errors import CommandError

__all__ = [
    "CommandAddress",
    "CommandEndpoint",
    "SpawnedEndpoint",
    "commandEndpoint",
    "widenPipe",
]

log = Logger()

# How long a command whose session has ended may take to exit before it is
# terminated (and as long again before it is killed).
GRACE = 3.0


@implementer(IAddress)
@attrs.frozen
class CommandAddress:
    """
    The address of a peer reached through a command: its arguments.
    """

    argv = attrs.field()


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


class PeerCommandEnded(ConnectionLost):
    """
    The peer's command ended on its own before the session did: killed,
    or exited with a status saying it failed.
    """

    def __str__(self):
        return self.args[0]


def _howEnded(terminated):
    """
    How a command ended, in words, from its L{ProcessTerminated}.
    """
    if terminated.signal is not None:
        return f"the peer command was killed by signal {terminated.signal}"
    return f"the peer command exited with status {terminated.exitCode}"


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
        # Whether this end hung up first, and so may have stopped it.
        self._oursToEnd = False
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
            self._hangUp(ours=False)

    def _hangUp(self, ours=True):
        if self._ended or self._stopping is not None:
            return
        self._oursToEnd = ours
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
        elif reason.check(ProcessTerminated) and not self._oursToEnd:
            # In words, not Twisted's "probable error condition".
            reason = Failure(PeerCommandEnded(_howEnded(reason.value)))
        self._protocol.connectionLost(reason)


@implementer(IStreamClientEndpoint)
@attrs.define(eq=False)
class CommandEndpoint:
    """
    Runs a command and speaks over its standard input and output; its
    standard error is passed through, or logged line by line as warnings
    (C{logErrors}, for a daemon, whose standard error nobody reads).
    """

    reactor = attrs.field(repr=False)
    argv = attrs.field()
    grace = attrs.field(default=GRACE, repr=False)
    logErrors = attrs.field(default=False, repr=False)

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
@attrs.define(eq=False)
class SpawnedEndpoint:
    """
    Speaks over the standard input and output of a command already started
    (a L{gossip.transport.spawn.Spawned}), as L{CommandEndpoint} does over a command
    it starts.  It connects once.
    """

    reactor = attrs.field(repr=False)
    spawned = attrs.field()
    grace = attrs.field(default=GRACE, repr=False)

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
