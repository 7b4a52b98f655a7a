# -*- test-case-name: tests.test_ssh -*-
"""
The daemon's SSH server: a Conch server that offers the C{gossip} subsystem
to peers whose keys an C{authorized_keys} file lists, and nothing else.
"""

import struct

import attrs
from twisted.conch.avatar import ConchUser
from twisted.conch.interfaces import IConchUser
from twisted.conch.ssh import keys
from twisted.conch.ssh.common import NS, getNS
from twisted.conch.ssh.connection import (
    MSG_CHANNEL_OPEN_FAILURE,
    OPEN_UNKNOWN_CHANNEL_TYPE,
    SSHConnection,
)
from twisted.conch.ssh.factory import SSHFactory
from twisted.conch.ssh.transport import (
    DISCONNECT_TOO_MANY_CONNECTIONS,
    MSG_DISCONNECT,
    SSHCiphers,
    SSHServerTransport,
)
from twisted.conch.ssh.userauth import MSG_USERAUTH_REQUEST, SSHUserAuthServer
from twisted.cred.error import UnauthorizedLogin
from twisted.cred.portal import IRealm, Portal
from twisted.internet.defer import fail
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from zope.interface import implementer

from gossip.transport.ssh.authorized import KeyChecker, SSHPrivateKeyFrom
from gossip.transport.ssh.channel import CIPHERS, MACS, SUBSYSTEM, SyncChannel, conchLog, prefer
from gossip.transport.ssh.keys import fingerprint
from gossip.transport.startups import RefusalLog, Startup, Startups, source

log = Logger()


# Channels one authenticated connection may have open at once.
MAX_CHANNELS = 4
# Seconds a refused connection is kept half-open for its peer to read why,
# and how many may be at once (beyond, they are closed at once, so that a
# flood cannot use up the daemon's file descriptors).
REFUSAL_WAIT = 2.0
MAX_REFUSED_WAITING = 64


class ServerChannel(SyncChannel):
    """
    A session channel on the server: it offers the C{gossip} subsystem and
    nothing else, and ends with an exit status.
    """

    def __init__(self, *args, avatar, **kwargs):
        SyncChannel.__init__(self, *args, **kwargs)
        self.avatar = avatar

    def requestReceived(self, requestType, data):
        if requestType == b"subsystem":
            name = getNS(data)[0]
            if name == SUBSYSTEM and self.protocol is None:
                self.protocol = self.avatar.sessions.protocolFor(
                    self.avatar.grant, self.avatar.description, self.avatar.host
                )
                self.protocol.makeConnection(self)
                return 1
            what = f"the {name.decode('utf-8', 'replace')!r} subsystem"
        else:
            what = f"a {requestType.decode('utf-8', 'replace')!r} request"
        log.info("refused {what} from {peer}", what=what, peer=self.avatar.description)
        return 0

    def closed(self):
        self.avatar.channels -= 1
        SyncChannel.closed(self)

    def _finish(self):
        if self.protocol is not None:
            status = 1 if self.protocol.failure else 0
            # OpenSSH's client exits with this status (255 without it).
            self.conn.sendRequest(self, b"exit-status", struct.pack(">L", status))
        SyncChannel._finish(self)


class _Avatar(ConchUser):
    """
    An authenticated peer: it may open session channels for the C{gossip}
    subsystem and do nothing else.
    """

    def __init__(self, grant, sessions, description, host=None):
        ConchUser.__init__(self)
        self.grant = grant
        self.sessions = sessions
        self.description = description
        self.host = host
        self.channels = 0

    def lookupChannel(self, channelType, windowSize, maxPacket, data):
        self.channels += 1
        return ServerChannel(
            remoteWindow=windowSize, remoteMaxPacket=maxPacket, data=data, avatar=self
        )

    def gotGlobalRequest(self, requestType, data):
        log.info(
            "refused a global {type!r} request from {peer}",
            type=requestType.decode("utf-8", "replace"),
            peer=self.description,
        )
        return 0

    def logout(self):
        log.info("{peer} logged out", peer=self.description)


@implementer(IRealm)
@attrs.define
class _Realm:
    """
    Makes an L{_Avatar} for each peer the key checker lets in.
    """

    sessions = attrs.field()

    def requestAvatar(self, grant, mind, *interfaces):
        if IConchUser not in interfaces:
            raise NotImplementedError("gossip offers SSH only")
        user, address = mind
        description = f"{user}@{address} (key {grant.fingerprint}"
        if grant.comment:
            description += f" {grant.comment}"
        description += ")"
        avatar = _Avatar(grant, self.sessions, description, address.rpartition(":")[0])
        log.info("{peer} logged in", peer=description)
        return IConchUser, avatar, avatar.logout


class _UserAuthServer(SSHUserAuthServer):
    """
    Public-key authentication only, with the peer's address in the
    credentials (C{from=} options need it).
    """

    _log = conchLog

    attemptsBeforeDisconnect = 6

    def auth_publickey(self, packet):
        hasSignature = packet[0:1] != b"\x00"
        algorithm, blob, rest = getNS(packet[1:], 2)
        try:
            key = keys.Key.fromString(blob)
        except (keys.BadKeyError, ValueError):
            return fail(UnauthorizedLogin("unsupported key type or bad key"))
        if key.isSecurityKey():
            return fail(UnauthorizedLogin("security keys are not supported"))
        address = self.transport.getPeer().address
        signature = signed = None
        if hasSignature:
            signature = getNS(rest)[0]
            signed = (
                NS(self.transport.sessionID)
                + bytes((MSG_USERAUTH_REQUEST,))
                + NS(self.user)
                + NS(self.nextService)
                + NS(b"publickey")
                + b"\x01"
                + NS(algorithm)
                + NS(blob)
            )
        credentials = SSHPrivateKeyFrom(
            self.user, algorithm, blob, signed, signature, address=address.host
        )
        user = self.user.decode("utf-8", "replace")
        d = self.portal.login(credentials, (user, f"{address.host}:{address.port}"), IConchUser)
        if not hasSignature:
            # Tells the client that the key would do, if it does.
            d.addErrback(self._ebCheckKey, packet[1:])

        def refused(failure):
            failure.trap(UnauthorizedLogin)
            log.info(
                "refused key {fingerprint} for {user} from {address}: {why}",
                fingerprint=fingerprint(key),
                user=user,
                address=address.host,
                why=failure.getErrorMessage(),
            )
            return failure

        return d.addErrback(refused)


class ServerConnection(SSHConnection):
    """
    The server's connection service: session channels only, a few at once.
    """

    _log = conchLog

    def ssh_CHANNEL_OPEN(self, packet):
        channelType, rest = getNS(packet)
        avatar = self.transport.avatar
        why = None
        if channelType != b"session":
            why = f"a {channelType.decode('utf-8', 'replace')!r} channel"
        elif avatar.channels >= MAX_CHANNELS:
            why = f"a channel beyond the {MAX_CHANNELS} open"
        if why is None:
            return SSHConnection.ssh_CHANNEL_OPEN(self, packet)
        log.info("refused {what} from {peer}", what=why, peer=avatar.description)
        sender = rest[:4]
        self.transport.sendPacket(
            MSG_CHANNEL_OPEN_FAILURE,
            sender
            + struct.pack(">L", OPEN_UNKNOWN_CHANNEL_TYPE)
            + NS(b"gossip offers session channels only")
            + NS(b""),
        )


class _ServerTransport(SSHServerTransport):
    """
    The server's side of one SSH connection: unauthenticated connections
    are limited in number (L{gossip.transport.startups}) and in time.
    """

    _log = conchLog

    supportedCiphers = prefer(SSHServerTransport.supportedCiphers, CIPHERS)
    supportedMACs = prefer(SSHServerTransport.supportedMACs, MACS)

    _refused = False
    _waiting = False
    # The Startup that counts it until it authenticates, with its grace
    # time to; once refused, the wait after a refusal.
    _startup = None
    _refusalWait = None

    def connectionMade(self):
        factory = self.factory
        address = self.transport.getPeer()
        self._address = f"{address.host}:{address.port}"
        self._source = source(address.host)
        refusal = factory.startups.admit(self._source)
        if refusal is not None:
            self._refuse(*refusal)
            return
        self._startup = Startup(
            factory.startups,
            self._source,
            factory.reactor.callLater(factory.loginGrace, self._tooSlow),
        )
        SSHServerTransport.connectionMade(self)

    def _refuse(self, why, told):
        """
        Tell the peer why it is refused, in the SSH disconnect message that
        clients show their users, and log it (at most once a minute for
        each source).
        """
        self._refused = True
        self.factory.refusals.note(self._source, self._address, why)
        self.transport.write(self.ourVersionString + b"\r\n")
        self.currentEncryptions = SSHCiphers(b"none", b"none", b"none", b"none")
        self.currentEncryptions.setKeys(b"", b"", b"", b"", b"", b"")
        self.sendPacket(
            MSG_DISCONNECT,
            struct.pack(">L", DISCONNECT_TOO_MANY_CONNECTIONS) + NS(told.encode()) + NS(b""),
        )
        factory = self.factory
        if factory.refusedWaiting >= MAX_REFUSED_WAITING:
            # A flood: its file descriptors matter more than its messages.
            self.transport.loseConnection()
            return
        # Closing with the peer's version line unread would reset the
        # connection, and the peer could lose the message before reading
        # it: close our half, read and drop what comes, and hang up once
        # the peer has (or soon, if it does not).
        factory.refusedWaiting += 1
        self._waiting = True
        self.transport.loseWriteConnection()
        self._refusalWait = factory.reactor.callLater(REFUSAL_WAIT, self.transport.abortConnection)

    def _tooSlow(self):
        self._startup.timer = None
        log.info(
            "closed the connection from {address}: not authenticated within "
            "{grace:g} seconds",
            address=self._address,
            grace=self.factory.loginGrace,
        )
        self.transport.abortConnection()

    def _uncount(self):
        if self._startup is not None:
            self._startup.end()

    def dataReceived(self, data):
        if not self._refused:
            SSHServerTransport.dataReceived(self, data)

    def receiveError(self, reasonCode, description):
        # How clients say goodbye (OpenSSH: 11, "disconnected by user"),
        # not an error of the server's.
        why = description.decode("utf-8", "replace").strip()
        log.info(
            "{address} disconnected: {why}",
            address=self._address,
            why=(why.splitlines() or [""])[0][:200],
        )

    def setService(self, service):
        if service.name == b"ssh-connection":
            self._uncount()
        SSHServerTransport.setService(self, service)

    def connectionLost(self, reason):
        self._uncount()
        if self._waiting:
            self._waiting = False
            self.factory.refusedWaiting -= 1
            if self._refusalWait.active():
                self._refusalWait.cancel()
        if not self._refused:
            SSHServerTransport.connectionLost(self, reason)


class _ServerFactory(SSHFactory):
    _log = conchLog

    protocol = _ServerTransport

    def buildProtocol(self, addr):
        # As SSHFactory does, without its log line at every connection:
        # with no moduli file, group-exchange key exchanges are not offered.
        transport = Factory.buildProtocol(self, addr)
        transport.supportedPublicKeys = self.privateKeys[self._keyType].supportedSignatureAlgorithms()
        transport.supportedKeyExchanges = [
            name
            for name in transport.supportedKeyExchanges
            if not name.startswith(b"diffie-hellman-group-exchange-")
        ]
        return transport

    def __init__(self, key, portal, reactor, startups, loginGrace):
        if key is not None:
            self.useKey(key)
        self.primes = None
        self.portal = portal
        self.reactor = reactor
        self.startups = startups
        self.refusals = RefusalLog(reactor)
        # Refused connections waiting for their peers to hang up.
        self.refusedWaiting = 0
        self.loginGrace = loginGrace
        self.services = {
            b"ssh-userauth": _UserAuthServer,
            b"ssh-connection": ServerConnection,
        }

    def useKey(self, key):
        """
        Serve with the host key C{key} (a private L{keys.Key}).
        """
        self._keyType = key.sshType()
        self.publicKeys = {self._keyType: key.public()}
        self.privateKeys = {self._keyType: key}

    def startFactory(self):
        # Conch's would refuse to listen without a host key, which the
        # daemon may give only once it runs as its user (see useKey); it
        # has no moduli file to read.
        pass


def serverFactory(reactor, sessions, key, authorizedKeys, startups=None, loginGrace=30.0):
    """
    The factory of gossip's SSH server.

    @param sessions: the L{Sessions} it offers.
    @param key: its host key (a private L{keys.Key}), or L{None} if it is
        to be given with C{useKey} before the first connection.
    @param authorizedKeys: the L{gossip.transport.ssh.authorized.IKeyStore}
        that says who may connect, such as an C{AuthorizedKeys}.
    @param startups: the L{Startups} that says which connections may wait
        to authenticate (by default OpenSSH's C{MaxStartups 10:30:100},
        and 3 from each source).
    @param loginGrace: how many seconds a connection has to authenticate.
    """
    portal = Portal(_Realm(sessions), [KeyChecker(authorizedKeys)])
    if startups is None:
        startups = Startups()
    return _ServerFactory(key, portal, reactor, startups, loginGrace)
