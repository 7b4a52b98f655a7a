"""
Tests for L{gossip.transport.ssh} and L{gossip.sync.sessions}: gossip's Conch server and
client, in this process, over real loopback TCP connections and real files.

The tests that bring in OpenSSH's own client and server are in
L{tests.test_openssh}.
"""

import os
import socket
import struct

from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from twisted.conch.ssh import keys
from twisted.conch.ssh.common import getNS
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock, deferLater
from twisted.internet.testing import StringTransport
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from gossip.transport.ssh.authorized import AuthorizedKeys
from gossip.store.logfile import Log
from gossip.sync.factories import SyncFactory
from gossip.transport.errors import CommandError
from gossip.sync.service import LogService
from gossip.sync.sessions import Sessions
from gossip.sync.settings import SessionSettings
from gossip.transport.errors import SSHError
from gossip.transport.ssh.client import SSHSyncEndpoint
from gossip.transport.ssh.keys import hostKey
from gossip.transport.ssh.server import (
    MAX_REFUSED_WAITING,
    REFUSAL_WAIT,
    ServerConnection,
    serverFactory,
)
from gossip.transport.urls import PeerURL
from gossip.transport.startups import TRY_LATER, TRY_LATER_FROM_YOU, MaxStartups, Startups
from tests.helpers import contents

_RSA = keys.Key(rsa.generate_private_key(65537, 2048))


def newKey():
    return keys.Key(ed25519.Ed25519PrivateKey.generate())


def publicLine(key, options=b"", comment=b"test"):
    line = key.public().toString("openssh") + b" " + comment
    return (options + b" " + line if options else line) + b"\n"


class ErrorTests(SynchronousTestCase):
    """
    The errors of SSH peers.
    """

    def test_isCommandError(self):
        """
        Every SSH failure is a L{CommandError}, which the commands show as
        one line.
        """
        self.assertTrue(issubclass(SSHError, CommandError))


class HostKeyTests(SynchronousTestCase):
    """
    The server's host key.
    """

    def test_created(self):
        """
        A missing host key is made: ed25519, mode 0600, with its public
        half beside it; it reads back as the same key.
        """
        path = os.path.join(self.mktemp(), "sub", "host_key")
        key = hostKey(path, directories=True)
        self.assertEqual(key.type(), "Ed25519")
        self.assertEqual(os.stat(path).st_mode & 0o777, 0o600)
        self.assertEqual(hostKey(path), key)
        public = keys.Key.fromFile(path + ".pub")
        self.assertEqual(public, key.public())

    def test_cannotCreate(self):
        """
        A host key that cannot be made (its directory cannot be) is an
        L{SSHError} naming it.
        """
        blocker = self.mktemp()
        with open(blocker, "w"):
            pass
        path = os.path.join(blocker, "sub", "host_key")
        error = self.assertRaises(SSHError, hostKey, path)
        self.assertIn(path, str(error))

    def test_existingOpenSSHKey(self):
        """
        An existing OpenSSH RSA key is used as it is.
        """
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(_RSA.toString("openssh"))
        self.assertEqual(hostKey(path), _RSA)

    def test_bad(self):
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(b"not a key\n")
        error = self.assertRaises(SSHError, hostKey, path)
        self.assertIn(path, str(error))

    def test_public(self):
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(publicLine(newKey()))
        self.assertIn("public", str(self.assertRaises(SSHError, hostKey, path)))


def _freePort():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Node:
    """
    A log with its service, in a directory of its own.
    """

    def __init__(self, directory, name="a.log", says=()):
        os.makedirs(directory, exist_ok=True)
        self.path = os.path.join(directory, name)
        log = Log(self.path)
        log.state(create=True)
        for pairs in says:
            log.say(pairs)
        self.service = LogService(Log(self.path), reactor, rescanInterval=3600)

    def keys(self):
        return contents(self.path).keySet


class ServerMixin:
    """
    A gossip SSH server on a loopback port, and a client's keys and files.
    """

    def setUp(self):
        self.dir = os.path.abspath(self.mktemp())
        self.server = Node(os.path.join(self.dir, "server"), says=[[(b"m", b"from server")]])
        self.server.service.startService()
        self.addCleanup(self.server.service.stopService)
        self.hostKey = newKey()
        self.clientKey = newKey()
        self.authorized = os.path.join(self.dir, "authorized_keys")
        self.authorize(publicLine(self.clientKey))
        self.knownHosts = os.path.join(self.dir, "known_hosts")
        self.factory = serverFactory(
            reactor,
            Sessions(reactor, {b"a.log": self.server.service}, SessionSettings(timeout=10)),
            self.hostKey,
            AuthorizedKeys(self.authorized),
            loginGrace=self.loginGrace,
            **self.limits(),
        )
        self.port = TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1")
        return self.port.listen(self.factory).addCallback(self._listening)

    loginGrace = 10.0

    def limits(self):
        """
        The server's limits on unauthenticated connections, beyond its
        defaults.
        """
        return {}

    def _listening(self, port):
        self.addCleanup(port.stopListening)
        self.portNumber = port.getHost().port
        self.peer = PeerURL("127.0.0.1", self.portNumber, "tester")

    def authorize(self, *lines):
        with open(self.authorized, "wb") as f:
            f.writelines(lines)
        # A rewrite within the same clock tick must still be noticed.
        stamp = os.stat(self.authorized).st_mtime_ns + len(lines)
        os.utime(self.authorized, ns=(stamp, stamp))

    def trustHost(self, key=None):
        with open(self.knownHosts, "ab") as f:
            name = f"[127.0.0.1]:{self.portNumber}".encode()
            f.write(name + b" " + (key or self.hostKey).public().toString("openssh") + b"\n")

    def client(self, name="a.log", says=((b"m", b"from client"),)):
        node = Node(os.path.join(self.dir, "client"), name, says=[list(says)])
        node.service.startService()
        self.addCleanup(node.service.stopService)
        return node

    def endpoint(self, **kwargs):
        kwargs.setdefault("identities", [self.clientKey])
        kwargs.setdefault("knownHosts", self.knownHosts)
        return SSHSyncEndpoint(reactor, kwargs.pop("peer", self.peer), **kwargs)

    async def syncOnce(self, node, endpoint=None, **kwargs):
        """
        Sync C{node} once with the server; return its session.
        """
        factory = SyncFactory(node.service, str(self.peer), SessionSettings(timeout=10), once=True, **kwargs)
        protocol = await (endpoint or self.endpoint()).connect(factory)
        await protocol.whenFinished()
        return protocol

    async def until(self, condition, timeout=10.0):
        for i in range(int(timeout / 0.01)):
            if condition():
                return
            await deferLater(reactor, 0.01, lambda: None)
        self.fail("timed out")

    async def refused(self, node, endpoint=None):
        """
        Syncing C{node} fails before a session begins; return the error.
        """
        try:
            await self.syncOnce(node, endpoint)
        except SSHError as e:
            return str(e)
        self.fail("the sync was not refused")


class SyncTests(ServerMixin, TestCase):
    """
    Syncing through gossip's own SSH client and server.
    """

    async def test_syncs(self):
        """
        Both logs end with both adds; the session says it succeeded.
        """
        self.trustHost()
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        client = self.client()
        protocol = await self.syncOnce(client)
        self.assertTrue(protocol.succeeded)
        self.assertEqual(client.keys(), self.server.keys())
        self.assertEqual(len(client.keys()), 2)
        # A clean session ends with nothing logged as an error, on either
        # side, once the server has seen the client go.
        await self.until(lambda: any("logged out" in formatEvent(e) for e in events))
        errors = [
            formatEvent(e) for e in events if e.get("log_level", LogLevel.info) >= LogLevel.warn
        ]
        self.assertEqual(errors, [])

    async def test_rsaIdentity(self):
        """
        An RSA key signs with SHA-256, and is let in.
        """
        self.trustHost()
        self.authorize(publicLine(_RSA))
        client = self.client()
        protocol = await self.syncOnce(client, self.endpoint(identities=[_RSA]))
        self.assertTrue(protocol.succeeded)

    async def test_secondKeyAccepted(self):
        """
        Keys are offered in turn until one is accepted.
        """
        self.trustHost()
        client = self.client()
        protocol = await self.syncOnce(
            client, self.endpoint(identities=[newKey(), self.clientKey])
        )
        self.assertTrue(protocol.succeeded)

    async def test_wrongKey(self):
        """
        A key the server does not list is refused; the message names the
        keys tried, and the server's log is untouched.
        """
        self.trustHost()
        stranger = newKey()
        before = self.server.keys()
        why = await self.refused(self.client(), self.endpoint(identities=[stranger]))
        self.assertIn("no key was accepted", why)
        self.assertIn(stranger.fingerprint(keys.FingerprintFormats.SHA256_BASE64).rstrip("="), why)
        self.assertEqual(self.server.keys(), before)

    async def test_authorizedKeysChanged(self):
        """
        A key removed from C{authorized_keys} is refused from then on, with
        no restart.
        """
        self.trustHost()
        self.authorize(b"# nobody\n")
        why = await self.refused(self.client())
        self.assertIn("no key was accepted", why)

    async def test_unknownHostKey(self):
        """
        A host not in C{known_hosts} is refused, naming its key's
        fingerprint and how to accept it; nothing is recorded.
        """
        why = await self.refused(self.client())
        self.assertIn("unknown host key", why)
        self.assertIn(self.hostKey.fingerprint(keys.FingerprintFormats.SHA256_BASE64).rstrip("="), why)
        self.assertIn("--accept-new-host-keys", why)
        self.assertFalse(os.path.exists(self.knownHosts))

    async def test_acceptNewHostKey(self):
        """
        With C{acceptNewHostKeys} an unknown host's key is recorded (hashed,
        under C{[host]:port}) and the sync goes on; the next sync needs no
        acceptance.
        """
        client = self.client()
        protocol = await self.syncOnce(client, self.endpoint(acceptNewHostKeys=True))
        self.assertTrue(protocol.succeeded)
        with open(self.knownHosts, "rb") as f:
            recorded = f.read()
        self.assertTrue(recorded.startswith(b"|1|"))
        protocol = await self.syncOnce(client)
        self.assertTrue(protocol.succeeded)

    async def test_changedHostKey(self):
        """
        A host whose key changed is refused even with
        C{acceptNewHostKeys}, naming the file and line.
        """
        self.trustHost(newKey())
        why = await self.refused(self.client(), self.endpoint(acceptNewHostKeys=True))
        self.assertIn("HOST KEY CHANGED", why)
        self.assertIn(f"{self.knownHosts} line 1", why)

    async def test_revokedHostKey(self):
        """
        A host key that C{known_hosts} marks C{@revoked} is refused, even
        when the file also lists it as the host's, or would accept it new.
        """
        self.trustHost()
        with open(self.knownHosts, "ab") as f:
            f.write(b"@revoked * " + self.hostKey.public().toString("openssh") + b"\n")
        why = await self.refused(self.client(), self.endpoint(acceptNewHostKeys=True))
        self.assertIn("line 2 marks @revoked", why)

    async def test_readOnly(self):
        """
        A read-only key receives the server's adds, but its own are not
        taken.
        """
        self.trustHost()
        self.authorize(publicLine(self.clientKey, b"gossip-read-only"))
        client = self.client()
        protocol = await self.syncOnce(client)
        self.assertTrue(protocol.succeeded)
        self.assertTrue(protocol.peerReadOnly)
        self.assertEqual(len(self.server.keys()), 1)
        self.assertEqual(len(client.keys()), 2)

    async def test_readOnlyPushRefused(self):
        """
        Adds pushed by a read-only peer anyway end its session, and none is
        written.
        """
        self.trustHost()
        self.authorize(publicLine(self.clientKey, b"gossip-read-only"))
        client = self.client()
        factory = SyncFactory(client.service, "pusher", SessionSettings(timeout=10))
        protocol = await self.endpoint().connect(factory)
        await protocol.whenHandshaken()
        line = open(client.path, "rb").readlines()[-1]
        from gossip.sync.amp import Adds

        try:
            await protocol.callRemote(Adds, lines=line)
        except Exception as e:
            self.assertIn("may only read", str(e))
        else:
            self.fail("the adds were taken")
        await protocol.whenFinished()
        self.assertEqual(len(self.server.keys()), 1)

    async def hostile(self, data):
        """
        An authenticated peer sends C{data} once its hello is accepted: the
        server ends the session, logs why with the key's fingerprint, and
        its log is untouched.
        """
        self.trustHost()
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        with open(self.server.path, "rb") as f:
            before = f.read()
        client = self.client()
        factory = SyncFactory(client.service, "hostile", SessionSettings(timeout=10))
        protocol = await self.endpoint().connect(factory)
        await protocol.whenHandshaken()
        protocol.transport.write(data)
        await protocol.whenFinished()
        fingerprint = self.clientKey.fingerprint(keys.FingerprintFormats.SHA256_BASE64).rstrip("=")

        def failed():
            return [
                formatEvent(event)
                for event in events
                if formatEvent(event).startswith("sync with ")
                and "failed" in formatEvent(event)
                and fingerprint in formatEvent(event)
            ]

        await self.until(failed)
        self.assertEqual(len(failed()), 1)
        with open(self.server.path, "rb") as f:
            self.assertEqual(f.read(), before)
        return failed()[0]

    async def test_oversizedKey(self):
        """
        A key longer than AMP allows.
        """
        why = await self.hostile(b"\x01\x00" + b"k" * 256)
        self.assertIn("a key of 256 bytes", why)

    async def test_endlessBox(self):
        """
        A box that never ends, field after field.
        """
        field = b"\x00\x01k\x00\x01v"
        why = await self.hostile(b"".join(field.replace(b"k", bytes([65 + i % 26])) for i in range(100)))
        self.assertIn("more than 16 fields", why)

    async def test_garbageCommand(self):
        """
        A well-framed box that is no command of the protocol.
        """
        why = await self.hostile(
            b"\x00\x04_ask\x00\x02z9\x00\x08_command\x00\x04Nope\x00\x00"
        )
        self.assertIn("no command 'Nope'", why)

    async def test_answerToNothing(self):
        """
        An answer to a question never asked.
        """
        why = await self.hostile(b"\x00\x07_answer\x00\x02z9\x00\x00")
        self.assertIn("an answer to no question", why)

    async def test_otherLogRefused(self):
        """
        A key limited to other logs cannot open this one.
        """
        self.trustHost()
        self.authorize(publicLine(self.clientKey, b'gossip-logs="b.log"'))
        protocol = await self.syncOnce(self.client())
        self.assertFalse(protocol.succeeded)
        self.assertIn("may not open", protocol.failure)
        self.assertEqual(len(self.server.keys()), 1)

    async def test_limitedToThisLog(self):
        """
        A key limited to this log opens it.
        """
        self.trustHost()
        self.authorize(publicLine(self.clientKey, b'gossip-logs="x.log,a.log"'))
        protocol = await self.syncOnce(self.client())
        self.assertTrue(protocol.succeeded)

    async def test_otherNodeRefused(self):
        """
        A key limited to other nodes cannot say it is this one: the session
        is refused, naming the key and the node, and nothing is written.
        """
        self.trustHost()
        self.authorize(publicLine(self.clientKey, b'gossip-nodes="someone,else"'))
        client = self.client()
        protocol = await self.syncOnce(client)
        self.assertFalse(protocol.succeeded)
        shown = client.service.identity.decode()
        self.assertIn(f"may not speak for node {shown!r}", protocol.failure)
        self.assertEqual(len(self.server.keys()), 1)

    async def test_limitedToThisNode(self):
        """
        A key limited to nodes that include the peer's syncs.
        """
        self.trustHost()
        client = self.client()
        nodes = b'gossip-nodes="someone,' + client.service.identity + b'"'
        self.authorize(publicLine(self.clientKey, nodes))
        protocol = await self.syncOnce(client)
        self.assertTrue(protocol.succeeded)
        self.assertEqual(len(self.server.keys()), 2)

    async def test_noSuchLog(self):
        """
        A log the server does not serve is refused by name.
        """
        self.trustHost()
        protocol = await self.syncOnce(self.client("b.log"))
        self.assertFalse(protocol.succeeded)
        self.assertIn("no log named 'b.log'", protocol.failure)

    async def test_wantedLog(self):
        """
        The URL's log name chooses the server's log, given C{anyName}.
        """
        self.trustHost()
        client = self.client("b.log")
        factory = SyncFactory(
            client.service,
            "peer",
            SessionSettings(timeout=10, anyName=True),
            once=True,
            want=b"a.log",
        )
        protocol = await self.endpoint().connect(factory)
        self.assertTrue(await protocol.whenFinished())
        self.assertEqual(client.keys(), self.server.keys())

    async def test_connectionRefused(self):
        """
        Nothing listening: an L{SSHError} naming the peer.
        """
        peer = PeerURL("127.0.0.1", _freePort(), "tester")
        why = await self.refused(self.client(), self.endpoint(peer=peer))
        self.assertIn(str(peer), why)


class _HalfClosingTransport(StringTransport):
    """
    A L{StringTransport} that records a half-close and an abort.
    """

    writeClosed = aborted = False

    def loseWriteConnection(self):
        self.writeClosed = True

    def abortConnection(self):
        self.aborted = True


class StartupLimitTests(SynchronousTestCase):
    """
    The server's transport admits, refuses and releases unauthenticated
    connections as its L{Startups} says, with no sockets and a fake clock.
    """

    def setUp(self):
        self.clock = Clock()
        self.startups = Startups(MaxStartups(2, 100, 2), perSource=1)
        authorized = self.mktemp()
        with open(authorized, "wb"):
            pass
        self.factory = serverFactory(
            self.clock, None, newKey(), AuthorizedKeys(authorized), startups=self.startups,
            loginGrace=30.0,
        )  # fmt: skip

    def connect(self, host):
        address = IPv4Address("TCP", host, 40000)
        server = self.factory.buildProtocol(address)
        transport = _HalfClosingTransport(peerAddress=address)
        server.makeConnection(transport)
        return server, transport

    def disconnect(self, server):
        server.connectionLost(Failure(ConnectionDone()))

    def test_refusedTold(self):
        """
        A refused connection receives the server's version line and a
        disconnect message (too many connections) saying why, in clear, as
        OpenSSH's client shows it; the server closes its half, and aborts
        the connection if the peer does not close its own.
        """
        self.connect("10.0.0.1")
        refused, transport = self.connect("10.0.0.1")
        version, packet = transport.value().split(b"\r\n", 1)
        self.assertTrue(version.startswith(b"SSH-2.0-"))
        length, padding = struct.unpack(">LB", packet[:5])
        self.assertEqual(len(packet), 4 + length)
        payload = packet[5 : 4 + length - padding]
        self.assertEqual(payload[0], 1)
        self.assertEqual(struct.unpack(">L", payload[1:5])[0], 12)
        self.assertEqual(getNS(payload[5:])[0], TRY_LATER_FROM_YOU.encode())
        self.assertTrue(transport.writeClosed)
        self.assertFalse(transport.aborted)
        # What the peer sends meanwhile is read and dropped.
        refused.dataReceived(b"SSH-2.0-client\r\n" + b"\x00" * 100)
        self.clock.advance(REFUSAL_WAIT)
        self.assertTrue(transport.aborted)
        self.disconnect(refused)
        self.assertEqual(self.startups.total, 1)

    def test_refusedWaitingBounded(self):
        """
        Refused connections wait for their peers to hang up only so many
        at once; beyond, they are closed as soon as they are told why.
        """
        self.connect("10.0.0.1")
        waiting = [self.connect("10.0.0.1") for i in range(MAX_REFUSED_WAITING)]
        self.assertTrue(all(t.writeClosed and not t.disconnecting for s, t in waiting))
        refused, transport = self.connect("10.0.0.1")
        self.assertIn(TRY_LATER_FROM_YOU.encode(), transport.value())
        self.assertFalse(transport.writeClosed)
        self.assertTrue(transport.disconnecting)
        self.disconnect(waiting[0][0])
        refused, transport = self.connect("10.0.0.1")
        self.assertTrue(transport.writeClosed)
        self.assertFalse(transport.disconnecting)

    def test_releasedOnDisconnect(self):
        """
        An admitted connection that closes frees its slot, and its grace
        timer is cancelled.
        """
        first, transport = self.connect("10.0.0.1")
        self.assertEqual(self.startups.total, 1)
        self.assertFalse(transport.writeClosed)
        self.disconnect(first)
        self.assertEqual(self.startups.total, 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.connect("10.0.0.1")
        self.assertEqual(self.startups.fromSource("10.0.0.1"), 1)

    def test_releasedOnAuthentication(self):
        """
        A connection that authenticates (its connection service starts)
        frees its slot, and has no more grace time to keep.
        """
        first, transport = self.connect("10.0.0.1")
        first.setService(ServerConnection())
        self.assertEqual(self.startups.total, 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_graceTime(self):
        """
        An admitted connection that does not authenticate in time is
        aborted, and frees its slot when it closes.
        """
        first, transport = self.connect("10.0.0.1")
        self.clock.advance(29.9)
        self.assertFalse(transport.aborted)
        self.clock.advance(0.1)
        self.assertTrue(transport.aborted)
        self.disconnect(first)
        self.assertEqual(self.startups.total, 0)

    def test_total(self):
        """
        Beyond the total, connections from new sources are refused too.
        """
        self.connect("10.0.0.1")
        self.connect("10.0.0.2")
        refused, transport = self.connect("10.0.0.3")
        self.assertIn(TRY_LATER.encode(), transport.value())
        self.assertNotIn(TRY_LATER_FROM_YOU.encode(), transport.value())


class Flooder(Protocol):
    """
    Opens an SSH connection and sends its version line, then nothing more:
    it holds one of the server's unauthenticated slots for as long as the
    server lets it.
    """

    def __init__(self):
        self.received = b""
        self.closed = Deferred()

    def connectionMade(self):
        self.transport.write(b"SSH-2.0-flooder\r\n")

    def dataReceived(self, data):
        self.received += data

    def connectionLost(self, reason):
        self.closed.callback(None)


class LimitTests(ServerMixin, TestCase):
    """
    Connections that do not authenticate are few and short-lived.
    """

    loginGrace = 1.0

    def limits(self):
        return {"startups": Startups(MaxStartups(10, 100, 10), perSource=3)}

    async def flood(self, count, fromHost="127.0.0.1"):
        """
        Open C{count} connections from C{fromHost} that never authenticate;
        return their L{Flooder}s.
        """
        flooders = []
        endpoint = TCP4ClientEndpoint(
            reactor, "127.0.0.1", self.portNumber, bindAddress=(fromHost, 0)
        )
        for i in range(count):
            flooder = await endpoint.connect(Factory.forProtocol(Flooder))
            self.addCleanup(flooder.transport.abortConnection)
            flooders.append(flooder)
        return flooders

    async def test_graceTime(self):
        """
        A connection that does not authenticate in time is closed.
        """
        [flooder] = await self.flood(1)
        await flooder.closed
        self.assertTrue(flooder.received.startswith(b"SSH-2.0-"))

    async def test_flood(self):
        """
        Connections beyond the cap from one address are refused at once,
        each told why; a session that had authenticated goes on syncing new
        adds meanwhile, and new peers get in once the flood has timed out.
        """
        self.trustHost()
        client = self.client()
        factory = SyncFactory(client.service, "steady", SessionSettings(timeout=10))
        protocol = await self.endpoint().connect(factory)
        await protocol.whenHandshaken()
        flood = await self.flood(10)
        refused = flood[3:]
        for flooder in refused:
            await flooder.closed
        self.assertFalse(any(flooder.closed.called for flooder in flood[:3]))
        for flooder in refused:
            self.assertIn(TRY_LATER_FROM_YOU.encode(), flooder.received)
        Log(self.server.path).say([(b"m", b"during the flood")])
        await self.until(lambda: len(client.keys()) == 3)
        for flooder in flood:
            await flooder.closed
        other = Node(os.path.join(self.dir, "other"), says=[[(b"m", b"late")]])
        other.service.startService()
        self.addCleanup(other.service.stopService)
        later = await self.syncOnce(other)
        self.assertTrue(later.succeeded)
        protocol.transport.loseConnection()
        await protocol.whenFinished()

    async def test_refusedPeerTold(self):
        """
        gossip's client, refused, says why in one line, rather than that
        the connection was lost.
        """
        self.trustHost()
        await self.flood(3)
        why = await self.refused(self.client())
        self.assertEqual(
            why, f"{self.peer}: the server hung up: {TRY_LATER_FROM_YOU}"
        )

    async def test_refusalsLoggedOnce(self):
        """
        A flood's refusals from one address are logged once, not once a
        connection.
        """
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        flood = await self.flood(13)
        for flooder in flood[3:]:
            await flooder.closed
        lines = [formatEvent(e) for e in events if "refused a connection" in formatEvent(e)]
        self.assertEqual(len(lines), 1, lines)
        self.assertIn("3 unauthenticated connections from 127.0.0.1 already", lines[0])


class FloodTests(ServerMixin, TestCase):
    """
    A flood of unauthenticated connections from one address, with the
    server's default limits, does not lock out a peer from another.
    """

    loginGrace = 60.0

    async def test_peerGetsIn(self):
        """
        While a flooder on 127.0.0.2 holds as many unauthenticated
        connections as the server lets it, and tries 50 more, a peer on
        127.0.0.1 connects with its key and syncs; the flooder's extra
        connections are refused, each told why.
        """
        self.trustHost()
        endpoint = TCP4ClientEndpoint(
            reactor, "127.0.0.1", self.portNumber, bindAddress=("127.0.0.2", 0)
        )
        flood = []
        for i in range(50):
            flooder = await endpoint.connect(Factory.forProtocol(Flooder))
            self.addCleanup(flooder.transport.abortConnection)
            flood.append(flooder)
        # Those refused are closed at once; those let in stay open, waiting.
        await self.until(lambda: sum(f.closed.called for f in flood) >= 40)
        client = self.client()
        protocol = await self.syncOnce(client)
        self.assertTrue(protocol.succeeded)
        self.assertEqual(client.keys(), self.server.keys())
        refused = [f for f in flood if f.closed.called]
        self.assertTrue(refused)
        for flooder in refused:
            self.assertIn(b"too many unauthenticated connections", flooder.received)


class _RecordingConnection:
    """
    Stands where an L{SSHConnection} would under a channel, recording what
    the channel sends.
    """

    def __init__(self):
        self.sent = []
        self.requests = []
        self.eof = self.closed = False
        self.channelsToRemoteChannel = {}

    def sendData(self, channel, data):
        self.sent.append(data)

    def sendRequest(self, channel, requestType, data, wantReply=0):
        self.requests.append((requestType, data))

    def sendEOF(self, channel):
        self.eof = True

    def sendClose(self, channel):
        self.closed = True
        channel.localClosed = True


class ChannelWindowTests(SynchronousTestCase):
    """
    The session channel sends no more than the peer's window allows, and
    ends only once everything queued is sent.
    """

    def channel(self, window):
        from gossip.transport.ssh.channel import SyncChannel as _SyncChannel

        connection = _RecordingConnection()
        channel = _SyncChannel(remoteWindow=window, remoteMaxPacket=1000, conn=connection)
        return channel, connection

    def test_window(self):
        """
        Writes beyond the window wait for the peer to open it, then go in
        order, in packets no larger than the peer allows.
        """
        channel, connection = self.channel(2500)
        channel.write(b"a" * 2000)
        channel.write(b"b" * 2000)
        self.assertEqual(b"".join(connection.sent), b"a" * 2000 + b"b" * 500)
        self.assertTrue(all(len(packet) <= 1000 for packet in connection.sent))
        channel.addWindowBytes(1000)
        self.assertEqual(b"".join(connection.sent), b"a" * 2000 + b"b" * 1500)
        channel.addWindowBytes(10000)
        self.assertEqual(b"".join(connection.sent), b"a" * 2000 + b"b" * 2000)
        self.assertEqual(channel.remoteWindowLeft, 10000 - 500)

    def test_batchInOnePacket(self):
        """
        The channel tells its peer it takes packets that hold the largest
        batch of adds a session sends, AMP box and all, so that each batch
        costs one packet and not two.
        """
        from twisted.protocols.amp import AmpBox

        from gossip.sync.amp import VALUE_LIMIT
        from gossip.transport.ssh.channel import SyncChannel as _SyncChannel

        box = AmpBox(_command=b"Adds", _ask=b"ffffffff", lines=b"x" * VALUE_LIMIT)
        channel = _SyncChannel(conn=_RecordingConnection())
        self.assertGreaterEqual(channel.localMaxPacket, len(box.serialize()))

    def test_endAfterQueued(self):
        """
        Hanging up with data queued sends the data first, then the end of
        file and the close.
        """
        channel, connection = self.channel(100)
        channel.write(b"x" * 300)
        channel.loseConnection()
        self.assertFalse(connection.eof or connection.closed)
        channel.write(b"too late")
        channel.addWindowBytes(200)
        self.assertEqual(b"".join(connection.sent), b"x" * 300)
        self.assertTrue(connection.eof and connection.closed)

    def test_exitStatus(self):
        """
        The server's channel ends with an exit status, before its end of
        file: 0 unless the session failed.
        """
        from gossip.transport.ssh.server import ServerChannel as _ServerChannel

        class Session:
            def __init__(self, failure):
                self.failure = failure

        for failure, status in ((None, 0), ("it broke", 1)):
            connection = _RecordingConnection()
            channel = _ServerChannel(
                remoteWindow=100, remoteMaxPacket=100, conn=connection, avatar=None
            )
            channel.protocol = Session(failure)
            channel.loseConnection()
            self.assertEqual(connection.requests, [(b"exit-status", bytes([0, 0, 0, status]))])
            self.assertTrue(connection.eof and connection.closed)
