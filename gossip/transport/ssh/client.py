# -*- test-case-name: tests.test_ssh -*-
"""
The SSH client that reaches a gossip daemon, or a stock OpenSSH server
running C{gossip serve --stdio}, from an C{ssh://} URL, with the user's keys
and agent, checking the host's key against C{known_hosts}.
"""

import getpass
import struct

import attrs
from twisted.conch.client.knownhosts import KnownHostsFile
from twisted.conch.error import HostKeyChanged
from twisted.conch.ssh import keys
from twisted.conch.ssh.agent import SSHAgentClient
from twisted.conch.ssh.channel import SSHChannel
from twisted.conch.ssh.common import NS, getNS
from twisted.conch.ssh.connection import SSHConnection
from twisted.conch.ssh.transport import (
    DISCONNECT_BY_APPLICATION,
    DISCONNECT_HOST_KEY_NOT_VERIFIABLE,
    DISCONNECT_NO_MORE_AUTH_METHODS_AVAILABLE,
    MSG_DISCONNECT,
    SSHClientTransport,
)
from twisted.conch.ssh.userauth import MSG_USERAUTH_REQUEST, SSHUserAuthClient
from twisted.internet.defer import Deferred, execute
from twisted.internet.endpoints import HostnameEndpoint, UNIXClientEndpoint
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.python.filepath import FilePath
from zope.interface import implementer

from gossip.transport.errors import SSHError
from gossip.transport.reasons import inWords
from gossip.transport.ssh.channel import CIPHERS, MACS, SUBSYSTEM, SyncChannel, conchLog, prefer
from gossip.transport.ssh.keys import signatureAlgorithm, revokedLine, defaultKnownHosts, fingerprint

log = Logger()


class _ClientAuth(SSHUserAuthClient):
    """
    Public-key authentication with the agent's keys, then the identity
    files'.

    Conch's L{SSHUserAuthClient} offers one key at a time through
    C{getPublicKey}, names the key's own type as the signature algorithm
    and signs with the key's default: an RSA key would sign with SHA-1
    (C{ssh-rsa}), which OpenSSH refuses, and its agent hook (C{signData})
    cannot ask the agent for C{rsa-sha2-256}.  Hence this class.
    """

    _log = conchLog

    preferredOrder = [b"publickey"]

    def __init__(self, user, instance, identities, agent, tried):
        SSHUserAuthClient.__init__(self, user, instance)
        self._agent = agent
        self._candidates = []
        self._tried = tried
        for blob, comment in agent[1] if agent else []:
            try:
                self._candidates.append((keys.Key.fromString(blob), None))
            except (keys.BadKeyError, ValueError):
                pass
        offered = {key.blob() for key, private in self._candidates}
        for key in identities:
            if key.blob() not in offered:
                self._candidates.append((key.public(), key))

    def auth_publickey(self):
        if not self._candidates:
            return False
        self._current = self._candidates.pop(0)
        key = self._current[0]
        self.lastPublicKey = key
        self._tried.append(fingerprint(key))
        self.askForAuth(b"publickey", b"\x00" + NS(signatureAlgorithm(key)) + NS(key.blob()))
        return True

    def auth_password(self):
        return False

    def auth_keyboard_interactive(self):
        return False

    def ssh_USERAUTH_PK_OK_publickey(self, packet):
        key, private = self._current
        algorithm = signatureAlgorithm(key)
        signed = (
            NS(self.transport.sessionID)
            + bytes((MSG_USERAUTH_REQUEST,))
            + NS(self.user)
            + NS(self.instance.name)
            + NS(b"publickey")
            + b"\x01"
            + NS(algorithm)
            + NS(key.blob())
        )
        if private is not None:
            d = execute(private.sign, signed, signatureType=algorithm)
        else:
            flags = 2 if algorithm == b"rsa-sha2-256" else 0
            d = self._agent[0].sendRequest(13, NS(key.blob()) + NS(signed) + struct.pack(">L", flags))
            d.addCallback(lambda answer: getNS(answer[1:])[0])

        def signedBy(signature):
            self.askForAuth(
                b"publickey", b"\x01" + NS(algorithm) + NS(key.blob()) + NS(signature)
            )

        d.addCallbacks(signedBy, self._ebAuth)


class _ClientConnection(SSHConnection):
    _log = conchLog

    def __init__(self, channel):
        SSHConnection.__init__(self)
        self._channel = channel

    def serviceStarted(self):
        SSHConnection.serviceStarted(self)
        self._channel.conn = self
        self.openChannel(self._channel)


class _ClientChannel(SyncChannel):
    """
    The client's session channel: asks for the C{gossip} subsystem, then
    carries the session.

    Conch's client endpoint (L{twisted.conch.endpoints.SSHCommandClientEndpoint})
    can only run a command (an C{exec} request), not ask for a subsystem:
    hence this channel, and the client transport and connection around it.
    """

    def __init__(self, protocol, opened, **kwargs):
        SyncChannel.__init__(self, **kwargs)
        self._protocol = protocol
        self._opened = opened
        self.exitStatus = None

    def channelOpen(self, specificData):
        d = self.conn.sendRequest(self, b"subsystem", NS(SUBSYSTEM), wantReply=True)
        d.addCallbacks(self._started, self._refused)

    def _started(self, ignored):
        self.protocol = self._protocol
        self.protocol.makeConnection(self)
        self._opened.callback(self.protocol)

    def _refused(self, failure):
        self._opened.errback(SSHError("the server offers no gossip subsystem"))
        SSHChannel.loseConnection(self)

    def openFailed(self, reason):
        self._opened.errback(SSHError(f"the server refused a session: {reason.value}"))

    def request_exit_status(self, data):
        self.exitStatus = struct.unpack(">L", data[:4])[0]
        return 1

    def closed(self):
        SyncChannel.closed(self)
        # One session a connection: hang up, as OpenSSH's client does
        # (Conch's sendDisconnect would log this as an error).
        transport = self.conn.transport
        transport.sendPacket(
            MSG_DISCONNECT,
            struct.pack(">L", DISCONNECT_BY_APPLICATION) + NS(b"disconnected by user") + NS(b""),
        )
        transport.transport.loseConnection()


class _ClientTransport(SSHClientTransport):
    _log = conchLog

    supportedCiphers = prefer(SSHClientTransport.supportedCiphers, CIPHERS)
    supportedMACs = prefer(SSHClientTransport.supportedMACs, MACS)

    def __init__(self, endpoint, protocol, opened):
        self._endpoint = endpoint
        self._protocol = protocol
        self._opened = opened
        self._why = None
        self._tried = []
        self._agent = None

    def verifyHostKey(self, hostKey, fingerprint):
        d = execute(self._endpoint.checkHostKey, keys.Key.fromString(hostKey))
        d.addErrback(self._note)
        return d

    def _note(self, failure):
        if self._why is None:
            self._why = failure.getErrorMessage()
        return failure

    def connectionSecure(self):
        channel = _ClientChannel(self._protocol, self._opened)
        connection = _ClientConnection(channel)
        d = self._endpoint.connectAgent()

        def authenticate(agent):
            self._agent = agent
            self.requestService(
                _ClientAuth(
                    self._endpoint.username.encode("utf-8"),
                    connection,
                    self._endpoint.identities,
                    agent,
                    self._tried,
                )
            )

        d.addCallback(authenticate)

    def sendDisconnect(self, reason, description):
        if self._why is None:
            why = description.decode("utf-8", "replace")
            if reason == DISCONNECT_NO_MORE_AUTH_METHODS_AVAILABLE:
                tried = ", ".join(self._tried) or "none"
                why = f"no key was accepted (tried: {tried})"
            self._why = why
        if reason == DISCONNECT_HOST_KEY_NOT_VERIFIABLE:
            # Conch would tell the server our traceback.
            description = b"host key not trusted"
        SSHClientTransport.sendDisconnect(self, reason, description)

    def receiveError(self, reasonCode, description):
        # The reason is the error the connection ends with; Conch's own
        # method would only log it again, on two lines.
        if self._why is None:
            why = description.decode("utf-8", "replace")
            # The server chose these words: keep the error one line.
            why = "".join(c if c.isprintable() else " " for c in why[:200]).strip()
            self._why = f"the server hung up: {why}"

    def connectionLost(self, reason):
        SSHClientTransport.connectionLost(self, reason)
        if self._agent is not None:
            self._agent[0].transport.loseConnection()
        if not self._opened.called:
            why = self._why or f"connection lost: {reason.getErrorMessage()}"
            self._opened.errback(SSHError(f"{self._endpoint.peer}: {why}"))


class _TransportFactory(Factory):
    noisy = False
    def __init__(self, endpoint, protocol, opened):
        self._endpoint = endpoint
        self._protocol = protocol
        self._opened = opened

    def buildProtocol(self, addr):
        transport = _ClientTransport(self._endpoint, self._protocol, self._opened)
        transport.factory = self
        return transport


class _AgentFactory(Factory):
    noisy = False
    protocol = SSHAgentClient


@implementer(IStreamClientEndpoint)
@attrs.define
class SSHSyncEndpoint:
    """
    Reaches a peer's C{gossip} subsystem over SSH.

    @ivar identities: private keys to offer after the agent's.
    @ivar agentPath: the ssh-agent's socket, or L{None}.
    @ivar knownHosts: the C{known_hosts} file that names trusted host keys.
    @ivar acceptNewHostKeys: record a host's key when the file has none for
        it (never when it has another).
    """

    reactor = attrs.field(repr=False)
    peer = attrs.field()
    identities = attrs.field(factory=list, repr=False)
    agentPath = attrs.field(default=None)
    knownHosts = attrs.field(default=None)
    acceptNewHostKeys = attrs.field(default=False)
    timeout = attrs.field(default=30)

    @property
    def username(self):
        return self.peer.user or getpass.getuser()

    def connect(self, factory):
        protocol = factory.buildProtocol(self.peer)
        opened = Deferred(lambda d: connected.cancel())
        connected = HostnameEndpoint(
            self.reactor, self.peer.host, self.peer.port, timeout=self.timeout
        ).connect(_TransportFactory(self, protocol, opened))

        def failed(failure):
            if not opened.called:
                opened.errback(SSHError(f"{self.peer}: {inWords(failure)}"))

        connected.addErrback(failed)
        return opened

    def connectAgent(self):
        """
        Connect to the ssh-agent, if there is one.

        @return: a L{Deferred} that fires with C{(agent, identities)}, or
            L{None} when there is no agent to use.
        """
        d = Deferred()
        if not self.agentPath:
            d.callback(None)
            return d
        connecting = UNIXClientEndpoint(self.reactor, self.agentPath).connect(_AgentFactory())

        def connected(agent):
            return agent.requestIdentities().addCallback(lambda found: (agent, found))

        def unusable(failure):
            log.warn(
                "cannot use the ssh-agent at {path}: {why}",
                path=self.agentPath,
                why=failure.getErrorMessage(),
            )
            return None

        return connecting.addCallback(connected).addErrback(unusable)

    def checkHostKey(self, key):
        """
        Check the server's key against C{known_hosts}.

        @raise SSHError: it is unknown (and not to be accepted) or changed;
            the message, which the connection's error follows the peer's
            URL with, does not name it.
        """
        path = self.knownHosts or defaultKnownHosts()
        name = self.peer.knownHostsName
        revoked = revokedLine(path, key)
        if revoked is not None:
            raise SSHError(
                f"the host offers {fingerprint(key)}, which {path} "
                f"line {revoked} marks @revoked"
            )
        known = KnownHostsFile.fromPath(FilePath(path))
        try:
            if known.hasHostKey(name.encode("utf-8"), key):
                return True
        except HostKeyChanged as e:
            where = f"{e.path.path} line {e.lineno}" if e.path is not None else path
            raise SSHError(
                f"HOST KEY CHANGED: the host offers {fingerprint(key)} "
                f"but {where} holds another key for {name}; if you know why, "
                f"remove that line (ssh-keygen -R '{name}' -f {path})"
            )
        if not self.acceptNewHostKeys:
            raise SSHError(
                f"unknown host key {fingerprint(key)} "
                f"({key.sshType().decode()}) for {name}; if that is the host's "
                f"key, give --accept-new-host-keys, or run: echo '{name} "
                f"{key.public().toString('openssh').decode()}' >> {path}"
            )
        known.addHostKey(name.encode("utf-8"), key)
        known.save()
        log.warn(
            "added the host key {fingerprint} for {name} to {path}",
            fingerprint=fingerprint(key),
            name=name,
            path=path,
        )
        return True
