# -*- test-case-name: tests.test_ssh -*-
"""
Sync over SSH: the daemon's Conch server, which offers the C{gossip}
subsystem to peers whose keys an C{authorized_keys} file lists, and the
client that reaches such a server (or a stock OpenSSH server running
C{gossip serve --stdio}) from an C{ssh://} URL.

Both ends carry the sync protocol of L{gossip.sync.protocol} unchanged, on one
session channel whose writes wait for the peer's SSH window.
"""

import getpass
import os
import struct
from collections import deque
from urllib.parse import unquote, urlsplit

import attr
from cryptography.hazmat.primitives.asymmetric import ed25519
from twisted.conch.avatar import ConchUser
from twisted.conch.client.knownhosts import KnownHostsFile
from twisted.conch.error import HostKeyChanged
from twisted.conch.interfaces import IConchUser
from twisted.conch.ssh import keys
from twisted.conch.ssh.agent import SSHAgentClient
from twisted.conch.ssh.channel import SSHChannel
from twisted.conch.ssh.common import NS, getNS
from twisted.conch.ssh.connection import (
    MSG_CHANNEL_OPEN_FAILURE,
    OPEN_UNKNOWN_CHANNEL_TYPE,
    SSHConnection,
)
from twisted.conch.ssh.factory import SSHFactory
from twisted.conch.ssh.transport import (
    DISCONNECT_BY_APPLICATION,
    DISCONNECT_HOST_KEY_NOT_VERIFIABLE,
    DISCONNECT_NO_MORE_AUTH_METHODS_AVAILABLE,
    DISCONNECT_TOO_MANY_CONNECTIONS,
    MSG_DISCONNECT,
    SSHCiphers,
    SSHClientTransport,
    SSHServerTransport,
)
from twisted.conch.ssh.userauth import (
    MSG_USERAUTH_REQUEST,
    SSHUserAuthClient,
    SSHUserAuthServer,
)
from twisted.cred.error import UnauthorizedLogin
from twisted.cred.portal import IRealm, Portal
from twisted.internet.defer import Deferred, execute, fail
from twisted.internet.endpoints import HostnameEndpoint, UNIXClientEndpoint
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.protocol import Factory
from twisted.logger import Logger, LogLevel, globalLogPublisher
from twisted.python.failure import Failure
from twisted.python.filepath import FilePath
from zope.interface import implementer

from gossip.transport.authorized import KeyChecker, SSHPrivateKeyFrom
from gossip.transport.errors import CommandError
from gossip.transport.startups import RefusalLog, Startups, source

__all__ = [
    "SSHError",
    "SSHPeer",
    "SSHSyncEndpoint",
    "hostKey",
    "parseSSHURL",
    "serverFactory",
]

log = Logger()


def _warningsOnly(event):
    if event.get("log_level", LogLevel.info) >= LogLevel.warn:
        globalLogPublisher(event)


# Conch's own classes narrate every packet and channel at debug and info
# level; in gossip's subclasses only their warnings and errors are kept
# (gossip logs logins, refusals and sessions itself).
_conchLog = Logger(observer=_warningsOnly)

SUBSYSTEM = b"gossip"
# Channel window and packet size.  Conch's default window (128 KiB) holds
# bulk transfers to a fraction of the link's speed.
WINDOW = 4 * 1024 * 1024
PACKET = 32768
# The SHA-256 family is hashed in hardware where SHA-512 is not, and Conch
# has neither AES-GCM nor chacha20: prefer AES-CTR with HMAC-SHA-256.
_CIPHERS = [b"aes128-ctr", b"aes256-ctr", b"aes192-ctr"]
_MACS = [b"hmac-sha2-256", b"hmac-sha2-512"]
# Channels one authenticated connection may have open at once.
MAX_CHANNELS = 4
# Seconds a refused connection is kept half-open for its peer to read why,
# and how many may be at once (beyond, they are closed at once, so that a
# flood cannot use up the daemon's file descriptors).
REFUSAL_WAIT = 2.0
MAX_REFUSED_WAITING = 64


class SSHError(CommandError):
    """
    An SSH peer could not be reached, or would not let us in.
    """


def _prefer(supported, preferred):
    first = [name for name in preferred if name in supported]
    return first + [name for name in supported if name not in first]


def fingerprint(key):
    """
    A key's fingerprint as OpenSSH shows it: C{SHA256:...}.
    """
    return "SHA256:" + key.fingerprint(keys.FingerprintFormats.SHA256_BASE64).rstrip("=")


# Host keys


def hostKey(path, create=True):
    """
    The server's host key, read from an OpenSSH private key file.

    @param create: make a new ed25519 key (mode 0600, its public half beside
        it in C{PATH.pub}) if there is no file at C{path}.
    @raise SSHError: the file cannot be read or is not an unencrypted key.
    """
    if create and not os.path.lexists(path):
        key = keys.Key(ed25519.Ed25519PrivateKey.generate())
        directory = os.path.dirname(os.path.abspath(path))
        try:
            os.makedirs(directory, mode=0o700, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            # Another process made it first: use theirs.
            return hostKey(path, create=False)
        except OSError as e:
            raise SSHError(f"cannot create host key {path}: {e.strerror}")
        with os.fdopen(fd, "wb") as f:
            f.write(key.toString("openssh"))
        with open(path + ".pub", "wb") as f:
            f.write(key.public().toString("openssh") + b" gossip host key\n")
        log.info("created host key {path} ({fingerprint})", path=path, fingerprint=fingerprint(key))
        return key
    try:
        key = keys.Key.fromFile(path)
    except OSError as e:
        raise SSHError(f"cannot read host key {path}: {e.strerror}")
    except keys.EncryptedKeyError:
        raise SSHError(f"host key {path} is encrypted: give one without a passphrase")
    except (keys.BadKeyError, ValueError) as e:
        raise SSHError(f"host key {path} is not an SSH private key: {e}")
    if key.isPublic():
        raise SSHError(f"host key {path} is a public key: give the private key")
    return key


# The server


class _SyncChannel(SSHChannel):
    """
    A session channel as the transport of one sync session.

    Writes wait for the peer's window (Conch's own buffering has no bound
    and re-slices its whole buffer at each window adjustment).  When the
    session hangs up, what is queued is sent first, then the end of file
    and the close.
    """

    _log = _conchLog

    name = b"session"

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("localWindow", WINDOW)
        kwargs.setdefault("localMaxPacket", PACKET)
        SSHChannel.__init__(self, *args, **kwargs)
        self.protocol = None
        self._queue = deque()
        self._ending = False

    # What the session sees as its transport

    def write(self, data):
        if data and not self._ending:
            self._queue.append(data)
            self._flush()

    def writeSequence(self, data):
        for piece in data:
            self.write(piece)

    def loseConnection(self):
        if not self._ending:
            self._ending = True
            self._flush()

    def _flush(self):
        queue = self._queue
        while queue and self.remoteWindowLeft > 0:
            data = queue[0]
            room = self.remoteWindowLeft
            if len(data) > room:
                queue[0] = data[room:]
                data = data[:room]
            else:
                queue.popleft()
            SSHChannel.write(self, data)
        if self._ending and not queue and not self.localClosed:
            self._finish()

    def _finish(self):
        """
        Everything is sent: end the channel.
        """
        self.conn.sendEOF(self)
        SSHChannel.loseConnection(self)

    # The channel's events

    def addWindowBytes(self, data):
        self.remoteWindowLeft += data
        self._flush()

    def dataReceived(self, data):
        if self.protocol is not None:
            self.protocol.dataReceived(data)

    def eofReceived(self):
        # The peer will send nothing more: no request of ours can be answered.
        self.loseConnection()

    def closeReceived(self):
        self._queue.clear()
        self._ending = True
        SSHChannel.loseConnection(self)

    def closed(self):
        protocol, self.protocol = self.protocol, None
        if protocol is not None:
            reason = ConnectionDone() if self.remoteClosed else ConnectionLost()
            protocol.connectionLost(Failure(reason))


class _ServerChannel(_SyncChannel):
    """
    A session channel on the server: it offers the C{gossip} subsystem and
    nothing else, and ends with an exit status.
    """

    def __init__(self, *args, avatar, **kwargs):
        _SyncChannel.__init__(self, *args, **kwargs)
        self.avatar = avatar

    def requestReceived(self, requestType, data):
        if requestType == b"subsystem":
            name = getNS(data)[0]
            if name == SUBSYSTEM and self.protocol is None:
                self.protocol = self.avatar.sessions.protocolFor(
                    self.avatar.grant, self.avatar.description
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
        _SyncChannel.closed(self)

    def _finish(self):
        if self.protocol is not None:
            status = 1 if self.protocol.failure else 0
            # OpenSSH's client exits with this status (255 without it).
            self.conn.sendRequest(self, b"exit-status", struct.pack(">L", status))
        _SyncChannel._finish(self)


class _Avatar(ConchUser):
    """
    An authenticated peer: it may open session channels for the C{gossip}
    subsystem and do nothing else.
    """

    def __init__(self, grant, sessions, description):
        ConchUser.__init__(self)
        self.grant = grant
        self.sessions = sessions
        self.description = description
        self.channels = 0

    def lookupChannel(self, channelType, windowSize, maxPacket, data):
        self.channels += 1
        return _ServerChannel(
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
@attr.s
class _Realm:
    """
    Makes an L{_Avatar} for each peer the key checker lets in.
    """

    sessions = attr.ib()

    def requestAvatar(self, grant, mind, *interfaces):
        if IConchUser not in interfaces:
            raise NotImplementedError("gossip offers SSH only")
        user, address = mind
        description = f"{user}@{address} (key {grant.fingerprint}"
        if grant.comment:
            description += f" {grant.comment}"
        description += ")"
        avatar = _Avatar(grant, self.sessions, description)
        log.info("{peer} logged in", peer=description)
        return IConchUser, avatar, avatar.logout


class _UserAuthServer(SSHUserAuthServer):
    """
    Public-key authentication only, with the peer's address in the
    credentials (C{from=} options need it).
    """

    _log = _conchLog

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


class _ServerConnection(SSHConnection):
    """
    The server's connection service: session channels only, a few at once.
    """

    _log = _conchLog

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

    _log = _conchLog

    supportedCiphers = _prefer(SSHServerTransport.supportedCiphers, _CIPHERS)
    supportedMACs = _prefer(SSHServerTransport.supportedMACs, _MACS)

    _counted = False
    _refused = False
    _waiting = False
    # What ends this connection if nothing else does first: its grace time
    # to authenticate, or the wait after a refusal.
    _timer = None

    def connectionMade(self):
        factory = self.factory
        address = self.transport.getPeer()
        self._address = f"{address.host}:{address.port}"
        self._source = source(address.host)
        refusal = factory.startups.admit(self._source)
        if refusal is not None:
            self._refuse(*refusal)
            return
        self._counted = True
        self._timer = factory.reactor.callLater(factory.loginGrace, self._tooSlow)
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
        self._timer = factory.reactor.callLater(REFUSAL_WAIT, self.transport.abortConnection)

    def _tooSlow(self):
        self._timer = None
        log.info(
            "closed the connection from {address}: not authenticated within "
            "{grace:g} seconds",
            address=self._address,
            grace=self.factory.loginGrace,
        )
        self.transport.abortConnection()

    def _uncount(self):
        if self._counted:
            self._counted = False
            self.factory.startups.release(self._source)
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

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
        if not self._refused:
            SSHServerTransport.connectionLost(self, reason)


class _ServerFactory(SSHFactory):
    _log = _conchLog

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
        self._keyType = key.sshType()
        self.publicKeys = {self._keyType: key.public()}
        self.privateKeys = {self._keyType: key}
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
            b"ssh-connection": _ServerConnection,
        }


def serverFactory(reactor, sessions, key, authorizedKeys, startups=None, loginGrace=30.0):
    """
    The factory of gossip's SSH server.

    @param sessions: the L{Sessions} it offers.
    @param key: its host key (a private L{keys.Key}).
    @param authorizedKeys: the L{gossip.transport.authorized.AuthorizedKeys} that
        says who may connect.
    @param startups: the L{Startups} that says which connections may wait
        to authenticate (by default OpenSSH's C{MaxStartups 10:30:100},
        and 3 from each source).
    @param loginGrace: how many seconds a connection has to authenticate.
    """
    portal = Portal(_Realm(sessions), [KeyChecker(authorizedKeys)])
    if startups is None:
        startups = Startups()
    return _ServerFactory(key, portal, reactor, startups, loginGrace)


# The client


@attr.frozen
class SSHPeer:
    """
    A peer named by C{ssh://[USER@]HOST[:PORT][/LOGNAME]}.
    """

    host = attr.ib()
    port = attr.ib(default=22)
    user = attr.ib(default=None)
    log = attr.ib(default=None)

    def __str__(self):
        user = f"{self.user}@" if self.user else ""
        host = f"[{self.host}]" if ":" in self.host else self.host
        port = f":{self.port}" if self.port != 22 else ""
        path = "/" + self.log.decode("utf-8", "replace") if self.log else ""
        return f"ssh://{user}{host}{port}{path}"

    @property
    def knownHostsName(self):
        """
        The name OpenSSH's C{known_hosts} files give this host.
        """
        if self.port == 22:
            return self.host
        return f"[{self.host}]:{self.port}"


def parseSSHURL(url):
    """
    Parse C{ssh://[USER@]HOST[:PORT][/LOGNAME]}.

    @raise SSHError: it is not such a URL.
    """
    try:
        parts = urlsplit(url)
    except ValueError as e:
        # An unclosed "[", for one.
        raise SSHError(f"{url}: {e}") from None
    if parts.scheme != "ssh" or parts.query or parts.fragment:
        raise SSHError(f"{url}: not an ssh://[USER@]HOST[:PORT][/LOGNAME] URL")
    try:
        port = parts.port
    except ValueError:
        raise SSHError(f"{url}: bad port")
    if not parts.hostname:
        raise SSHError(f"{url}: no host")
    path = parts.path.lstrip("/")
    if "/" in path:
        raise SSHError(f"{url}: a log is named without directories")
    return SSHPeer(
        host=parts.hostname,
        port=22 if port is None else port,
        user=unquote(parts.username) if parts.username else None,
        log=unquote(path).encode("utf-8", "surrogateescape") if path else None,
    )


def loadIdentity(path):
    """
    A private key from an OpenSSH key file, for the client.

    @raise SSHError: it cannot be read, is encrypted, or is no key.
    """
    try:
        return keys.Key.fromFile(path)
    except OSError as e:
        raise SSHError(f"identity {path}: {e.strerror}")
    except keys.EncryptedKeyError:
        raise SSHError(
            f"identity {path} is encrypted: add it to your ssh-agent (ssh-add {path})"
        )
    except (keys.BadKeyError, ValueError) as e:
        raise SSHError(f"identity {path} is not an SSH private key: {e}")


def defaultIdentities(home=None):
    """
    The key files OpenSSH's client would try, where they exist and can be
    used without a passphrase.
    """
    home = home or os.path.expanduser("~")
    found = []
    for name in ("id_ed25519", "id_ecdsa", "id_rsa"):
        path = os.path.join(home, ".ssh", name)
        if os.path.exists(path):
            try:
                found.append(loadIdentity(path))
            except SSHError as e:
                log.debug("{why}", why=str(e))
    return found


def defaultKnownHosts(home=None):
    return os.path.join(home or os.path.expanduser("~"), ".ssh", "known_hosts")


def _revokedLine(path, key):
    """
    The number of the line of C{known_hosts} file C{path} that revokes
    C{key} (OpenSSH's C{@revoked} marker, whatever hosts it names), or
    L{None}.

    Conch's L{KnownHostsFile} keeps a marked line as an entry it cannot
    parse and never matches: a revoked key would be merely unknown there,
    and accepted with C{--accept-new-host-keys}.  This scan refuses it.
    """
    blob = key.blob()
    try:
        with open(path, "rb") as f:
            for number, line in enumerate(f, 1):
                fields = line.split()
                if len(fields) >= 4 and fields[0] == b"@revoked":
                    try:
                        if keys.Key.fromString(b" ".join(fields[2:4])).blob() == blob:
                            return number
                    except (keys.BadKeyError, ValueError):
                        continue
    except OSError:
        pass
    return None


def _algorithm(key):
    # RSA keys sign with SHA-256: OpenSSH refuses SHA-1 (ssh-rsa) signatures.
    if key.type() == "RSA":
        return b"rsa-sha2-256"
    return key.sshType()


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

    _log = _conchLog

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
        self.askForAuth(b"publickey", b"\x00" + NS(_algorithm(key)) + NS(key.blob()))
        return True

    def auth_password(self):
        return False

    def auth_keyboard_interactive(self):
        return False

    def ssh_USERAUTH_PK_OK_publickey(self, packet):
        key, private = self._current
        algorithm = _algorithm(key)
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
    _log = _conchLog

    def __init__(self, channel):
        SSHConnection.__init__(self)
        self._channel = channel

    def serviceStarted(self):
        SSHConnection.serviceStarted(self)
        self._channel.conn = self
        self.openChannel(self._channel)


class _ClientChannel(_SyncChannel):
    """
    The client's session channel: asks for the C{gossip} subsystem, then
    carries the session.

    Conch's client endpoint (L{twisted.conch.endpoints.SSHCommandClientEndpoint})
    can only run a command (an C{exec} request), not ask for a subsystem:
    hence this channel, and the client transport and connection around it.
    """

    def __init__(self, protocol, opened, **kwargs):
        _SyncChannel.__init__(self, **kwargs)
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
        _SyncChannel.closed(self)
        # One session a connection: hang up, as OpenSSH's client does
        # (Conch's sendDisconnect would log this as an error).
        transport = self.conn.transport
        transport.sendPacket(
            MSG_DISCONNECT,
            struct.pack(">L", DISCONNECT_BY_APPLICATION) + NS(b"disconnected by user") + NS(b""),
        )
        transport.transport.loseConnection()


class _ClientTransport(SSHClientTransport):
    _log = _conchLog

    supportedCiphers = _prefer(SSHClientTransport.supportedCiphers, _CIPHERS)
    supportedMACs = _prefer(SSHClientTransport.supportedMACs, _MACS)

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
@attr.s
class SSHSyncEndpoint:
    """
    Reaches a peer's C{gossip} subsystem over SSH.

    @ivar identities: private keys to offer after the agent's.
    @ivar agentPath: the ssh-agent's socket, or L{None}.
    @ivar knownHosts: the C{known_hosts} file that names trusted host keys.
    @ivar acceptNewHostKeys: record a host's key when the file has none for
        it (never when it has another).
    """

    reactor = attr.ib(repr=False)
    peer = attr.ib()
    identities = attr.ib(factory=list, repr=False)
    agentPath = attr.ib(default=None)
    knownHosts = attr.ib(default=None)
    acceptNewHostKeys = attr.ib(default=False)
    timeout = attr.ib(default=30)

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
                opened.errback(SSHError(f"{self.peer}: {failure.getErrorMessage()}"))

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

        @raise SSHError: it is unknown (and not to be accepted) or changed.
        """
        path = self.knownHosts or defaultKnownHosts()
        name = self.peer.knownHostsName
        revoked = _revokedLine(path, key)
        if revoked is not None:
            raise SSHError(
                f"{self.peer}: the host offers {fingerprint(key)}, which {path} "
                f"line {revoked} marks @revoked"
            )
        known = KnownHostsFile.fromPath(FilePath(path))
        try:
            if known.hasHostKey(name.encode("utf-8"), key):
                return True
        except HostKeyChanged as e:
            where = f"{e.path.path} line {e.lineno}" if e.path is not None else path
            raise SSHError(
                f"{self.peer}: HOST KEY CHANGED: the host offers {fingerprint(key)} "
                f"but {where} holds another key for {name}; if you know why, "
                f"remove that line (ssh-keygen -R '{name}' -f {path})"
            )
        if not self.acceptNewHostKeys:
            raise SSHError(
                f"{self.peer}: unknown host key {fingerprint(key)} "
                f"({key.sshType().decode()}) for {name}; if that is the host's "
                f"key, give --accept-new-host-keys or add it to {path}"
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
