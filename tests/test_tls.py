"""
Tests for L{gossip.transport.tls}: real TLS connections over loopback TCP between
nodes holding certificates from L{tests.certs}, and the parsing of files
and descriptions.
"""

import os

import attrs
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import (
    BestAvailableEncryption,
    Encoding,
    PrivateFormat,
)
from OpenSSL import SSL
from twisted.internet import reactor
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import (
    HostnameEndpoint,
    TCP4ClientEndpoint,
    connectProtocol,
    wrapClientTLS,
)
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.interfaces import IHandshakeListener
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.ssl import CertificateOptions, optionsForClientTLS, trustRootFromCertificates
from twisted.internet.task import deferLater
from twisted.internet.testing import MemoryReactor
from twisted.logger import formatEvent, globalLogPublisher
from twisted.protocols.basic import LineReceiver
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer

from gossip.transport.startups import Startups
from gossip.transport.tls import (
    TLSRefused,
    HandshakeLimit,
    TLSError,
    TLSFiles,
    clientEndpoint,
    peerName,
    serverEndpoint,
)
from tests.certs import makeCertificates


@implementer(IHandshakeListener)
class _End(LineReceiver):
    """
    One end of a test connection, recording what it hears and whom it
    authenticated.

    @ivar peer: L{peerName} of the other end once the handshake completes,
        else L{None}.
    @ivar reason: why the connection ended, once it has.
    @ivar lost: fires when the connection ends.
    """

    delimiter = b"\n"

    def __init__(self):
        self.lines = []
        self.peer = None
        self.lost = Deferred()

    def handshakeCompleted(self):
        self.peer = peerName(self.transport)

    def connectionLost(self, reason):
        self.reason = reason
        self.lost.callback(None)


class Echo(_End):
    """
    The listening end: echoes each line.
    """

    def lineReceived(self, line):
        self.lines.append(line)
        self.sendLine(b"echo: " + line)


class Greeter(_End):
    """
    The connecting end: says hello and hangs up on the first answer.
    """

    def connectionMade(self):
        self.address = self.transport.getHost()
        self.sendLine(b"hello")

    def lineReceived(self, line):
        self.lines.append(line)
        self.transport.loseConnection()


class EchoFactory(Factory):
    """
    Makes an L{Echo} per connection; C{accepted} fires with the first.
    """

    def __init__(self):
        self.accepted = Deferred()

    def buildProtocol(self, addr):
        protocol = Echo()
        if not self.accepted.called:
            self.accepted.callback(protocol)
        return protocol


class ConnectionTests(TestCase):
    """
    L{serverEndpoint} and L{clientEndpoint} connect nodes whose certificates
    the same authority signed, and nothing else.
    """

    timeout = 30

    def setUp(self):
        self.certs = makeCertificates(self.mktemp())
        self.events = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def authenticated(self):
        """
        The peers that the endpoints logged as authenticated.
        """
        return [
            formatEvent(event)
            for event in self.events
            if event.get("log_namespace") == "gossip.transport.tls"
        ]

    async def exchange(self, serverFiles, connecting):
        """
        Listen on a loopback port with C{serverFiles}, greet from the
        endpoint C{connecting(port)} and wait for both ends to hang up.

        @return: the client's and the server's L{_End}.
        """
        factory = EchoFactory()
        listening = serverEndpoint(reactor, "ssl:0:interface=127.0.0.1", serverFiles)
        port = await listening.listen(factory)
        self.addCleanup(port.stopListening)
        self.port = port.getHost().port
        client = await connectProtocol(connecting(self.port), Greeter())
        await client.lost
        server = await factory.accepted
        await server.lost
        return client, server

    def connectAs(self, name, host="localhost"):
        """
        A function making an endpoint to the loopback C{port} with the files
        of C{name}.
        """
        return lambda port: clientEndpoint(reactor, host, port, self.certs[name])

    async def test_connect(self):
        """
        A client whose certificate the server's authority signed, dialling
        a name in the server's certificate, connects; data flows both ways
        and each end knows the other by the common name in its certificate.
        """
        client, server = await self.exchange(
            self.certs["server"], self.connectAs("client")
        )
        self.assertEqual(server.lines, [b"hello"])
        self.assertEqual(client.lines, [b"echo: hello"])
        self.assertEqual(server.peer, f"CN=client (tls 127.0.0.1:{client.address.port})")
        self.assertEqual(client.peer, f"CN=server (tls 127.0.0.1:{self.port})")
        # Each end logs whom it let in.
        self.assertEqual(
            sorted(self.authenticated()),
            [f"TLS peer authenticated: {server.peer}", f"TLS peer authenticated: {client.peer}"],
        )
        client.reason.trap(ConnectionDone)
        server.reason.trap(ConnectionDone)

    async def test_connectByAddress(self):
        """
        A client dialling an IP address checks it against the addresses in
        the server's certificate.
        """
        client, server = await self.exchange(
            self.certs["server"], self.connectAs("client", "127.0.0.1")
        )
        self.assertEqual(server.lines, [b"hello"])
        self.assertEqual(client.lines, [b"echo: hello"])
        self.assertEqual(client.peer, f"CN=server (tls 127.0.0.1:{self.port})")

    async def test_fingerprint(self):
        """
        A peer whose certificate has no common name is known by the SHA-256
        fingerprint of its certificate.
        """
        with open(self.certs["anonymous"].cert, "rb") as f:
            fingerprint = x509.load_pem_x509_certificate(f.read()).fingerprint(hashes.SHA256())
        client, server = await self.exchange(
            self.certs["server"], self.connectAs("anonymous")
        )
        self.assertEqual(server.lines, [b"hello"])
        self.assertEqual(
            server.peer, f"SHA256:{fingerprint.hex()} (tls 127.0.0.1:{client.address.port})"
        )

    def assertRefusedByServer(self, client, server):
        """
        The server refused the client's certificate: it never finished its
        handshake, neither end was given data, and the client learnt of
        the failure (from an alert, or a reset if the server hung up
        first), not from a clean close.
        """
        self.assertIsNone(server.peer)
        self.assertEqual(server.lines, [])
        self.assertEqual(client.lines, [])
        # Nor did the server log the client as authenticated (the client
        # may have finished its side of the handshake: TLS 1.3 checks the
        # client's certificate last).
        address = f"127.0.0.1:{client.address.port})"
        self.assertEqual([line for line in self.authenticated() if address in line], [])
        server.reason.trap(SSL.Error)
        # gossip's client says so in words; a bare TLS client, in OpenSSL's.
        if client.reason.check(TLSRefused):
            self.assertEqual(
                client.reason.getErrorMessage(),
                "localhost refused this node's certificate (no authority it trusts signed it)",
            )
        else:
            client.reason.trap(SSL.Error, ConnectionLost)

    def assertRefusedByClient(self, client, server):
        """
        The client refused the server's certificate: neither end finished
        its handshake or was given data, and the client gave the reason.
        """
        self.assertIsNone(client.peer)
        self.assertIsNone(server.peer)
        self.assertEqual(self.authenticated(), [])
        self.assertEqual(server.lines, [])
        self.assertEqual(client.lines, [])
        client.reason.trap(TLSRefused)
        self.assertFalse(server.reason.check(ConnectionDone))

    async def test_clientWithoutCertificate(self):
        """
        The server refuses a client that presents no certificate.
        """
        authorities = self.certs["client"].load().authorities

        def connecting(port):
            options = optionsForClientTLS("localhost", trustRoot=trustRootFromCertificates(authorities))
            return wrapClientTLS(options, HostnameEndpoint(reactor, "127.0.0.1", port))

        self.assertRefusedByServer(*await self.exchange(self.certs["server"], connecting))

    async def test_clientFromOtherAuthority(self):
        """
        The server refuses a client whose certificate another authority
        signed.
        """
        client, server = await self.exchange(self.certs["server"], self.connectAs("stranger"))
        self.assertRefusedByServer(client, server)

    async def test_serverWithWrongName(self):
        """
        The client refuses a server whose certificate, though signed by the
        right authority, does not name the host the client dialled.
        """
        client, server = await self.exchange(self.certs["wrongname"], self.connectAs("client"))
        self.assertRefusedByClient(client, server)
        self.assertEqual(
            client.reason.getErrorMessage(),
            "localhost's certificate does not name localhost (it names elsewhere.example)",
        )

    async def test_serverFromOtherAuthority(self):
        """
        The client refuses a server whose certificate another authority
        signed.
        """
        client, server = await self.exchange(self.certs["stranger"], self.connectAs("client"))
        self.assertRefusedByClient(client, server)
        self.assertEqual(
            client.reason.getErrorMessage(),
            "localhost's certificate is not signed by an authority in --tls-ca",
        )

    async def test_clientReloads(self):
        """
        A client endpoint reads its TLS files again when told to (as the
        daemon's reload does): a client whose certificate the server
        refuses is let in once its files hold one the server's authority
        signed and it has read them again; until then, the old ones hold.
        """
        directory = self.mktemp()
        os.makedirs(directory)
        files = TLSFiles(
            key=os.path.join(directory, "key.pem"),
            cert=os.path.join(directory, "cert.pem"),
            ca=self.certs["client"].ca,
        )

        def use(name):
            for mine, theirs in [(files.key, self.certs[name].key), (files.cert, self.certs[name].cert)]:
                with open(theirs, "rb") as source, open(mine, "wb") as target:
                    target.write(source.read())

        use("stranger")
        endpoint = clientEndpoint(reactor, "localhost", 1, files)
        connecting = lambda port: _sameEndpoint(endpoint, port)  # noqa: E731
        self.assertRefusedByServer(*await self.exchange(self.certs["server"], connecting))
        use("client")
        self.assertRefusedByServer(*await self.exchange(self.certs["server"], connecting))
        endpoint.reload()
        client, server = await self.exchange(self.certs["server"], connecting)
        self.assertEqual(client.lines, [b"echo: hello"])
        self.assertEqual(client.peer, f"CN=server (tls 127.0.0.1:{self.port})")


def _sameEndpoint(endpoint, port):
    """
    C{endpoint}, a L{clientEndpoint}, pointed at C{port} with the TLS
    options it holds.
    """
    return attrs.evolve(
        endpoint,
        endpoint=wrapClientTLS(endpoint.options, HostnameEndpoint(reactor, "localhost", port)),
    )


class _Silent(Protocol):
    """
    A raw TCP connection that never starts its TLS handshake.
    """

    def __init__(self):
        self.closed = Deferred()

    def connectionLost(self, reason):
        self.closed.callback(None)


class _Handshaken(Echo):
    """
    An L{Echo} that tells its factory once its handshake is complete.
    """

    def handshakeCompleted(self):
        Echo.handshakeCompleted(self)
        self.factory.handshaken.callback(self)


class HandshakeLimitTests(TestCase):
    """
    L{HandshakeLimit}: connections whose handshake is not complete are
    limited per source and in all, and in time, so that a flood from one
    address does not lock out peers from others.
    """

    timeout = 30

    async def listen(self, grace=30.0):
        self.certs = makeCertificates(self.mktemp())
        self.startups = Startups()
        self.factory = Factory.forProtocol(_Handshaken)
        self.factory.handshaken = Deferred()
        listening = serverEndpoint(reactor, "ssl:0:interface=127.0.0.1", self.certs["server"])
        port = await listening.listen(HandshakeLimit(self.factory, self.startups, reactor, grace))
        self.addCleanup(port.stopListening)
        self.port = port.getHost().port

    async def flood(self, count, fromHost="127.0.0.2"):
        """
        Open C{count} raw connections from C{fromHost} that never start a
        handshake; return their L{_Silent}s.
        """
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", self.port, bindAddress=(fromHost, 0))
        flood = []
        for i in range(count):
            silent = await endpoint.connect(Factory.forProtocol(_Silent))
            self.addCleanup(silent.transport.abortConnection)
            flood.append(silent)
        return flood

    async def test_peerGetsIn(self):
        """
        A flooder on 127.0.0.2 has 3 connections held, the rest closed at
        once; a peer on 127.0.0.1 completes its handshake and exchanges
        data meanwhile, and its connection counts no more once it has.
        """
        await self.listen()
        flood = await self.flood(20)
        for silent in flood[3:]:
            await silent.closed
        self.assertFalse(any(silent.closed.called for silent in flood[:3]))
        client = await connectProtocol(
            clientEndpoint(reactor, "localhost", self.port, self.certs["client"]), Greeter()
        )
        await client.lost
        server = await self.factory.handshaken
        await server.lost
        self.assertEqual(client.lines, [b"echo: hello"])
        self.assertEqual(server.peer, f"CN=client (tls 127.0.0.1:{client.address.port})")
        self.assertEqual(self.startups.total, 3)
        for silent in flood[:3]:
            silent.transport.abortConnection()
            await silent.closed
        for i in range(100):
            if self.startups.total == 0:
                break
            await deferLater(reactor, 0.01, lambda: None)
        self.assertEqual(self.startups.total, 0)

    async def test_graceTime(self):
        """
        A connection that does not complete its handshake in time is
        closed, with a line in the log, and counts no more.
        """
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        await self.listen(grace=0.2)
        [silent] = await self.flood(1)
        await silent.closed
        self.assertIn(
            "no handshake within 0.2 seconds", " ".join(formatEvent(e) for e in events)
        )
        for i in range(100):
            if self.startups.total == 0:
                break
            await deferLater(reactor, 0.01, lambda: None)
        self.assertEqual(self.startups.total, 0)


class FilesTests(SynchronousTestCase):
    """
    L{TLSFiles.load} reads a node's files, or says in one line which one is
    wrong.
    """

    def setUp(self):
        self.directory = self.mktemp()
        self.certs = makeCertificates(self.directory)
        self.server = self.certs["server"]

    def assertBad(self, files, path, *words):
        """
        Loading C{files} raises a one-line L{TLSError} naming C{path} and
        containing C{words}.
        """
        message = str(self.assertRaises(TLSError, files.load))
        self.assertTrue(message.startswith(path + ": "), message)
        self.assertNotIn("\n", message)
        for word in words:
            self.assertIn(word, message)

    def garbage(self):
        """
        The path of a file that is not PEM.
        """
        path = os.path.join(self.directory, "garbage")
        with open(path, "wb") as f:
            f.write(b"-----BEGIN NONSENSE-----\nnot base64\n")
        return path

    def test_load(self):
        """
        The loaded credentials hold this node's certificate and key and the
        authority's certificate.
        """
        credentials = self.server.load()
        certificate = credentials.certificate.original.to_cryptography()
        self.assertEqual(
            certificate.subject.rfc4514_string(),
            "CN=server",
        )
        self.assertTrue(credentials.certificate.privateKey.matches(credentials.certificate.getPublicKey()))
        self.assertEqual(
            [each.original.to_cryptography().subject.rfc4514_string() for each in credentials.authorities],
            ["CN=gossip test CA"],
        )

    def test_severalAuthorities(self):
        """
        A CA file may hold several authorities' certificates.
        """
        both = os.path.join(self.directory, "both.pem")
        with open(both, "wb") as out:
            for name in ["ca.pem", "other-ca.pem"]:
                with open(os.path.join(self.directory, name), "rb") as f:
                    out.write(f.read())
        credentials = TLSFiles(self.server.key, self.server.cert, both).load()
        self.assertEqual(len(credentials.authorities), 2)

    def test_missing(self):
        """
        A missing file is named.
        """
        missing = os.path.join(self.directory, "missing.pem")
        self.assertBad(TLSFiles(missing, self.server.cert, self.server.ca), missing, "No such file")
        self.assertBad(TLSFiles(self.server.key, missing, self.server.ca), missing, "No such file")
        self.assertBad(TLSFiles(self.server.key, self.server.cert, missing), missing, "No such file")

    def test_garbage(self):
        """
        A file that does not hold what it should is named.
        """
        garbage = self.garbage()
        self.assertBad(TLSFiles(garbage, self.server.cert, self.server.ca), garbage, "private key")
        self.assertBad(TLSFiles(self.server.key, garbage, self.server.ca), garbage, "certificate")
        self.assertBad(TLSFiles(self.server.key, self.server.cert, garbage), garbage, "certificate")

    def test_swapped(self):
        """
        A certificate given as the key, or a key as a certificate, is
        refused.
        """
        self.assertBad(TLSFiles(self.server.cert, self.server.cert, self.server.ca), self.server.cert)
        self.assertBad(TLSFiles(self.server.key, self.server.key, self.server.ca), self.server.key)

    def test_mismatchedKey(self):
        """
        A key that is not the certificate's is refused.
        """
        client = self.certs["client"]
        self.assertBad(TLSFiles(client.key, self.server.cert, self.server.ca), client.key, self.server.cert)

    def test_encryptedKey(self):
        """
        An encrypted key is refused rather than prompted for.
        """
        path = os.path.join(self.directory, "encrypted.key")
        with open(path, "wb") as f:
            f.write(
                ec.generate_private_key(ec.SECP256R1()).private_bytes(
                    Encoding.PEM, PrivateFormat.PKCS8, BestAvailableEncryption(b"secret")
                )
            )
        self.assertBad(TLSFiles(path, self.server.cert, self.server.ca), path, "encrypted")

    def test_endpoints(self):
        """
        Both endpoints load their files when made, so that bad files are
        reported at once.
        """
        missing = TLSFiles("missing.key", self.server.cert, self.server.ca)
        self.assertRaises(TLSError, serverEndpoint, MemoryReactor(), "ssl:0", missing)
        self.assertRaises(TLSError, clientEndpoint, MemoryReactor(), "localhost", 1, missing)


class ServerDescriptionTests(SynchronousTestCase):
    """
    L{serverEndpoint} listens where its description says, requiring client
    certificates.
    """

    def setUp(self):
        self.files = makeCertificates(self.mktemp())["server"]

    def listen(self, description):
        """
        Listen on a L{MemoryReactor} as C{description} says.

        @return: the port, the TLS options, the backlog and the interface;
            TLS is layered over what was given to C{listenTCP}.
        """
        memory = MemoryReactor()
        endpoint = serverEndpoint(memory, description, self.files)
        self.successResultOf(endpoint.listen(Factory()))
        [(port, factory, backlog, interface)] = memory.tcpServers
        self.assertIsInstance(factory, TLSMemoryBIOFactory)
        return port, endpoint.options.options, backlog, interface

    def test_port(self):
        """
        The port may be given by position or by name, and may be 0; by
        default the endpoint listens on all interfaces.
        """
        self.assertEqual(self.listen("ssl:7423")[::2], (7423, 50))
        self.assertEqual(self.listen("ssl:port=0")[0], 0)
        self.assertEqual(self.listen("ssl:0")[3], "")

    def test_parameters(self):
        """
        The interface and backlog may be given, an IPv6 interface with its
        colons escaped; C{tls:} means the same as C{ssl:}.
        """
        self.assertEqual(self.listen("tls:99:interface=127.0.0.1:backlog=5")[::2], (99, 5))
        self.assertEqual(self.listen("tls:99:interface=127.0.0.1")[3], "127.0.0.1")
        self.assertEqual(self.listen("ssl:backlog=7:interface=\\:\\:1:port=8")[::3], (8, "::1"))

    def test_requiresClientCertificate(self):
        """
        The server verifies and requires a client's certificate.
        """
        options = self.listen("ssl:0")[1]
        self.assertIsInstance(options, CertificateOptions)
        self.assertTrue(options.verify)
        self.assertTrue(options.requireCertificate)
        self.assertIsNotNone(options.trustRoot)

    def test_bad(self):
        """
        A bad description gives a one-line L{TLSError} quoting it.
        """
        for description in [
            "",
            "ssl",
            "ssl:",
            "tcp:7423",
            "ssl:x",
            "ssl:interface=127.0.0.1",
            "ssl:0:port=1",
            "ssl:0:interface=::1",
            "ssl:0:backlog=x",
            "ssl:0:privateKey=server.pem",
            "ssl:0\\",
        ]:
            error = self.assertRaises(TLSError, serverEndpoint, MemoryReactor(), description, self.files)
            self.assertIn(repr(description), str(error))
            self.assertNotIn("\n", str(error))


class ServerPortTests(TestCase):
    """
    What Twisted's endpoint descriptions leave to the operating system is
    found when the server listens.
    """

    def test_portOutOfRange(self):
        """
        A port beyond 65535 fails to listen, with a one-line reason.
        """
        files = makeCertificates(self.mktemp())["server"]
        endpoint = serverEndpoint(reactor, "ssl:65536:interface=127.0.0.1", files)
        failure = self.failureResultOf(endpoint.listen(Factory()))
        self.assertIn("65535", failure.getErrorMessage())
        self.assertNotIn("\n", failure.getErrorMessage())


class PeerNameTests(SynchronousTestCase):
    """
    L{peerName} says who is at the other end of transports without a
    certificate.
    """

    class Transport:
        """
        A transport without TLS.
        """

        def __init__(self, address):
            self.address = address

        def getPeer(self):
            return self.address

    class TLSTransport(Transport):
        """
        A TLS transport before its handshake.
        """

        def getPeerCertificate(self):
            return None

    def test_plain(self):
        """
        A transport without TLS is unauthenticated.
        """
        transport = self.Transport(IPv4Address("TCP", "192.0.2.1", 5555))
        self.assertEqual(peerName(transport), "unauthenticated (tcp 192.0.2.1:5555)")

    def test_noCertificate(self):
        """
        A TLS transport with no peer certificate (yet) is unauthenticated;
        an IPv6 address is in brackets.
        """
        transport = self.TLSTransport(IPv6Address("TCP", "::1", 5555))
        self.assertEqual(peerName(transport), "unauthenticated (tls [::1]:5555)")
