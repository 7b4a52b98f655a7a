# -*- test-case-name: tests.test_tls -*-
"""
Syncing over TLS, for sites without SSH: endpoints whose two ends prove who
they are with certificates signed by an authority both trust.

The listening node requires a client certificate signed by one of its
authorities; the connecting node requires the listener's certificate to be
signed by one of its authorities and to name the host it dialled.
"""

import attrs
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID
from OpenSSL import SSL
from OpenSSL.crypto import X509, PKey
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.endpoints import HostnameEndpoint, serverFromString, wrapClientTLS
from twisted.internet.interfaces import (
    IHandshakeListener,
    IOpenSSLClientConnectionCreator,
    IOpenSSLServerConnectionCreator,
    IStreamClientEndpoint,
    IStreamServerEndpoint,
)
from twisted.internet.protocol import Protocol
from twisted.internet.ssl import (
    Certificate,
    CertificateOptions,
    KeyPair,
    PrivateCertificate,
    optionsForClientTLS,
    trustRootFromCertificates,
)
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from zope.interface import implementer

from gossip.transport.startups import RefusalLog, Startup, source

from gossip.transport.errors import TLSError, TLSRefused

__all__ = [
    "Credentials",
    "HandshakeLimit",
    "TLSError",
    "TLSFiles",
    "TLSRefused",
    "clientEndpoint",
    "peerName",
    "serverEndpoint",
]

log = Logger()

_LISTEN_SYNTAX = "ssl:PORT[:interface=ADDRESS][:backlog=N]"


@attrs.frozen
class Credentials:
    """
    What a node presents to its peers and whom it trusts, loaded from
    L{TLSFiles}.

    @ivar certificate: this node's certificate with its private key.
    @type certificate: L{PrivateCertificate}

    @ivar authorities: the certificates of the authorities whose signature
        makes a peer a peer.
    @type authorities: L{tuple} of L{Certificate}
    """

    certificate = attrs.field()
    authorities = attrs.field()


@attrs.frozen
class TLSFiles:
    """
    The paths of a node's PEM files.

    @ivar key: this node's private key, unencrypted.
    @ivar cert: this node's certificate (the first one in the file).
    @ivar ca: the certificates of the authorities that sign peers'
        certificates, one or more.
    """

    key = attrs.field()
    cert = attrs.field()
    ca = attrs.field()

    def load(self):
        """
        Read and check the files.

        @rtype: L{Credentials}
        @raise TLSError: if a file is missing, unreadable or malformed, or
            the key is not the certificate's.
        """
        try:
            key = serialization.load_pem_private_key(_read(self.key), password=None)
        except TypeError:
            raise TLSError(f"{self.key}: the private key is encrypted; gossip needs it unencrypted") from None
        except (ValueError, UnsupportedAlgorithm):
            raise TLSError(f"{self.key}: not a PEM private key") from None
        certificate = _certificates(self.cert)[0]
        authorities = _certificates(self.ca)
        if key.public_key() != certificate.public_key():
            raise TLSError(f"{self.key}: not the private key of the certificate in {self.cert}")
        try:
            keyPair = KeyPair(PKey.from_cryptography_key(key))
        except TypeError:
            raise TLSError(f"{self.key}: a kind of key TLS cannot use") from None
        return Credentials(
            PrivateCertificate.fromCertificateAndKeyPair(_twisted(certificate), keyPair),
            tuple(_twisted(each) for each in authorities),
        )


def _read(path):
    """
    The bytes of a file, or a one-line L{TLSError}.
    """
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise TLSError(f"{path}: {e.strerror}") from None


def _certificates(path):
    """
    The certificates in a PEM file, at least one.

    @rtype: L{list} of L{cryptography.x509.Certificate}
    """
    try:
        return x509.load_pem_x509_certificates(_read(path))
    except ValueError:
        raise TLSError(f"{path}: not a PEM certificate") from None


def _twisted(certificate):
    """
    A L{cryptography.x509.Certificate} as a Twisted L{Certificate}.
    """
    return Certificate(X509.from_cryptography(certificate))


def serverEndpoint(reactor, description, files):
    """
    An endpoint listening for TLS connections from peers, which must present
    a certificate signed by one of the authorities in C{files.ca}.

    @param reactor: an L{IReactorTCP} provider.
    @param description: where to listen, C{ssl:PORT[:interface=ADDRESS]
        [:backlog=N]} (or C{tls:...}): after its type, a C{tcp:}
        description for Twisted's L{serverFromString}, colons in values
        escaped as C{\\:}.
    @type description: L{str}
    @type files: L{TLSFiles}

    @rtype: L{IStreamServerEndpoint}
    @raise TLSError: if the description or the files are bad.
    """
    kind, colon, rest = description.partition(":")
    if kind.lower() not in ("ssl", "tls"):
        raise _badListen(description, f"{kind!r} is not ssl or tls")
    try:
        endpoint = serverFromString(reactor, "tcp:" + rest)
    except Exception as e:
        # Twisted's parser raises ValueError, TypeError or RuntimeError,
        # with messages that name what was wrong.
        raise _badListen(description, str(e)) from None

    def options():
        credentials = files.load()
        return CertificateOptions(
            trustRoot=trustRootFromCertificates(credentials.authorities),
            **_presenting(credentials.certificate),
        )

    return _TLSServerEndpoint(endpoint, _Reloadable(options))


@implementer(IOpenSSLServerConnectionCreator, IOpenSSLClientConnectionCreator)
class _Reloadable:
    """
    TLS options made from a node's files, and made from them again when the
    daemon reloads: connections made after use the new ones, those made
    before keep theirs.
    """

    def __init__(self, make):
        self._make = make
        self.options = make()

    def reload(self):
        """
        Read the files again.

        @raise TLSError: if they are now bad; the options stay as they were.
        """
        self.options = self._make()

    def serverConnectionForTLS(self, protocol):
        return self.options.serverConnectionForTLS(protocol)

    def clientConnectionForTLS(self, protocol):
        connection = self.options.clientConnectionForTLS(protocol)
        _keepNames(protocol, connection)
        return connection


def _keepNames(protocol, connection):
    """
    Have a client's failed verification note, on its failure, the names
    that the peer's certificate has, so that L{_inWords} can say them: by
    the time the failure reaches the session, the certificate is gone.
    Verification itself is Twisted's, untouched.

    @param protocol: the L{TLSMemoryBIOProtocol} of the connection.
    @param connection: its L{OpenSSL.SSL.Connection}.
    """
    fail = protocol.failVerification

    def failVerification(reason):
        try:
            chain = connection.get_peer_cert_chain()
            if chain:
                reason.value.peerNames = _namesOf(chain[0].to_cryptography())
        except Exception:
            # Only words for a message: verification fails all the same.
            pass
        fail(reason)

    protocol.failVerification = failVerification


def _namesOf(certificate):
    """
    The DNS names and addresses a certificate is for (or its common name,
    if it lists none), as strings.
    """
    try:
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return [name.value for name in certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    return [str(name.value) for name in names]


class _Refused(Protocol):
    """
    A connection refused before its handshake.  A TLS peer cannot be told
    why before then: it is closed at once, as OpenSSH closes those it
    refuses, having sent nothing.
    """

    def connectionMade(self):
        self.transport.abortConnection()


@implementer(IHandshakeListener)
class _Handshaking(ProtocolWrapper):
    """
    A connection counted as unauthenticated until its TLS handshake
    completes, and closed if that takes longer than the grace time.
    """

    def __init__(self, factory, wrappedProtocol, where):
        ProtocolWrapper.__init__(self, factory, wrappedProtocol)
        self._startup = Startup(factory.startups, where)

    def makeConnection(self, transport):
        self._startup.timer = self.factory.clock.callLater(self.factory.grace, self._tooSlow)
        ProtocolWrapper.makeConnection(self, transport)

    def _tooSlow(self):
        self._startup.timer = None
        address = self.transport.getPeer()
        log.info(
            "closed the TLS connection from {address}: no handshake within {grace:g} seconds",
            address=f"{address.host}:{address.port}",
            grace=self.factory.grace,
        )
        self.transport.abortConnection()

    def handshakeCompleted(self):
        self._startup.end()
        if IHandshakeListener.providedBy(self.wrappedProtocol):
            self.wrappedProtocol.handshakeCompleted()

    def connectionLost(self, reason):
        self._startup.end()
        ProtocolWrapper.connectionLost(self, reason)


class HandshakeLimit(WrappingFactory):
    """
    Limits the connections whose TLS handshake is not complete, as the SSH
    server limits those not yet authenticated: in number, by a
    L{gossip.transport.startups.Startups}, and in time.

    It wraps the factory of what runs over TLS, under the TLS layer.

    @ivar startups: the L{gossip.transport.startups.Startups} to count them in.
    @ivar clock: an L{IReactorTime}.
    @ivar grace: how many seconds a handshake may take.
    """

    noisy = False

    def __init__(self, wrappedFactory, startups, clock, grace):
        WrappingFactory.__init__(self, wrappedFactory)
        self.startups = startups
        self.clock = clock
        self.grace = grace
        self.refusals = RefusalLog(clock)

    def buildProtocol(self, addr):
        where = source(addr.host)
        refusal = self.startups.admit(where)
        if refusal is not None:
            self.refusals.note(where, f"{addr.host}:{addr.port}", refusal[0])
            return _Refused()
        return _Handshaking(self, self.wrappedFactory.buildProtocol(addr), where)


def _badListen(description, why):
    """
    The one-line L{TLSError} for a bad listening description.
    """
    return TLSError(f"listening description {description!r}: {why}; expected {_LISTEN_SYNTAX}")


@implementer(IStreamServerEndpoint)
@attrs.frozen
class _TLSServerEndpoint:
    """
    TLS over a TCP endpoint.

    Twisted's own C{ssl:} endpoint reads its certificate from files its
    description names and cannot ask for a client's certificate; here TLS
    is layered over the TCP endpoint as Twisted's C{listenSSL} does it,
    with the peer's certificate name logged (see L{_Authenticated}).

    @ivar endpoint: the TCP endpoint.
    @ivar options: the L{_Reloadable} options of the server's side.
    """

    endpoint = attrs.field()
    options = attrs.field()

    def listen(self, factory):
        return self.endpoint.listen(
            TLSMemoryBIOFactory(self.options, False, _AuthenticatingFactory(factory))
        )

    def reload(self):
        """
        Read the TLS files again, for the connections that follow.
        """
        self.options.reload()


def clientEndpoint(reactor, host, port, files):
    """
    An endpoint connecting to a peer over TLS: it presents this node's
    certificate, and requires the peer's to be signed by one of the
    authorities in C{files.ca} and to name C{host}.

    @param reactor: a reactor providing L{IReactorTCP} and L{IReactorTime}.
    @param host: the peer's DNS name or IP address.
    @type host: L{str}
    @type port: L{int}
    @type files: L{TLSFiles}

    @rtype: L{IStreamClientEndpoint}
    @raise TLSError: if the files are bad.
    """

    def options():
        credentials = files.load()
        return optionsForClientTLS(
            host,
            trustRoot=trustRootFromCertificates(credentials.authorities),
            extraCertificateOptions=_presenting(credentials.certificate),
        )

    reloadable = _Reloadable(options)
    return _TLSClientEndpoint(
        wrapClientTLS(reloadable, HostnameEndpoint(reactor, host, port), clock=reactor),
        reloadable,
        host,
    )


@implementer(IStreamClientEndpoint)
@attrs.frozen
class _TLSClientEndpoint:
    """
    Twisted's TLS client endpoint, with the peer's certificate name logged
    (see L{_Authenticated}).

    @ivar endpoint: the endpoint that L{wrapClientTLS} made.
    @ivar options: the client's TLS options, which can read the files again.
    @ivar host: the name or address dialled, to say what went wrong.
    """

    endpoint = attrs.field()
    options = attrs.field(default=None)
    host = attrs.field(default=None)

    def connect(self, factory):
        connecting = self.endpoint.connect(_AuthenticatingFactory(factory, self.host))
        return connecting.addCallback(lambda wrapper: wrapper.wrappedProtocol)

    def reload(self):
        """
        Read the TLS files again, for the connections that follow.
        """
        self.options.reload()


@implementer(IHandshakeListener)
class _Authenticated(ProtocolWrapper):
    """
    Stands between TLS and a session to log whom the peer's certificate
    names once the handshake has verified it: the session, made when the
    connection opened, knows only the peer's address.
    """

    def handshakeCompleted(self):
        log.info("TLS peer authenticated: {peer}", peer=peerName(self.transport))
        if IHandshakeListener.providedBy(self.wrappedProtocol):
            self.wrappedProtocol.handshakeCompleted()

    def connectionLost(self, reason):
        # OpenSSL's and service_identity's errors, put in words for the
        # user of a client (a server logs its refusals itself).
        host = self.factory.host
        why = None if host is None else _inWords(reason.value, host)
        if why is not None:
            reason = Failure(TLSRefused(why))
        ProtocolWrapper.connectionLost(self, reason)


class _AuthenticatingFactory(WrappingFactory):
    """
    Puts an L{_Authenticated} under each protocol its factory makes.

    @ivar host: the name or address the client dialled.
    """

    protocol = _Authenticated

    def __init__(self, wrappedFactory, host=None):
        WrappingFactory.__init__(self, wrappedFactory)
        self.host = host


# What OpenSSL says (the last words of each of its errors) when the peer
# refused this node's certificate, by alert, on this node's side.
_THEY_REFUSED = (
    "alert unknown ca",
    "alert bad certificate",
    "alert certificate required",
    "alert certificate unknown",
    "alert decrypt error",
    "alert handshake failure",
)


def _inWords(error, host):
    """
    Why a TLS connection to C{host} failed, in words, if it failed in the
    handshake: that the peer's certificate is not signed by an authority
    in --tls-ca, that it does not name the host dialled (and the names it
    has), or that the peer refused this node's certificate.

    @return: L{None} for any other failure.
    """
    if _isVerificationError(error):
        named = getattr(error, "peerNames", None)
        return f"{host}'s certificate does not name {host}" + (
            f" (it names {', '.join(named)})" if named else ""
        )
    if not isinstance(error, SSL.Error):
        return None
    reasons = [
        str(part[-1]) for part in (error.args[0] if error.args else []) if isinstance(part, tuple)
    ]
    if any("certificate verify failed" in reason for reason in reasons):
        return f"{host}'s certificate is not signed by an authority in --tls-ca"
    if any(reason.endswith(_THEY_REFUSED) for reason in reasons):
        return f"{host} refused this node's certificate (no authority it trusts signed it)"
    return "TLS failed: " + ("; ".join(reason for reason in reasons if reason) or repr(error))


def _isVerificationError(error):
    """
    Whether C{error} is service_identity's: the certificate does not name
    the host (imported only here, since Twisted imports it as it must).
    """
    from service_identity import VerificationError

    return isinstance(error, VerificationError)


def _presenting(certificate):
    """
    The arguments of L{CertificateOptions} that present a certificate.

    They are C{cryptography} objects rather than the pyOpenSSL ones a
    L{PrivateCertificate} holds, which pyOpenSSL deprecates here.

    @type certificate: L{PrivateCertificate}
    @rtype: L{dict}
    """
    return dict(
        privateKey=certificate.privateKey.original.to_cryptography_key(),
        certificate=certificate.original.to_cryptography(),
    )


def peerName(transport):
    """
    Describe the peer at the other end of a transport for log messages: the
    common name in its certificate, or the certificate's SHA-256
    fingerprint if it has none, and its address, as in
    C{"CN=node-b (tls 127.0.0.1:5555)"}.

    @param transport: the transport of a connection, TLS or not.
    @rtype: L{str}
    """
    getPeerCertificate = getattr(transport, "getPeerCertificate", None)
    certificate = None if getPeerCertificate is None else getPeerCertificate()
    address = _address(transport.getPeer(), "tcp" if getPeerCertificate is None else "tls")
    if certificate is None:
        return f"unauthenticated ({address})"
    certificate = certificate.to_cryptography()
    names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if names:
        # A peer chooses its common name: keep log lines one line each.
        name = "".join(c if c.isprintable() else ascii(c)[1:-1] for c in names[0].value)
        return f"CN={name} ({address})"
    return f"SHA256:{certificate.fingerprint(hashes.SHA256()).hex()} ({address})"


def _address(address, kind):
    """
    Describe an address for L{peerName}.
    """
    if isinstance(address, IPv6Address):
        return f"{kind} [{address.host}]:{address.port}"
    if isinstance(address, IPv4Address):
        return f"{kind} {address.host}:{address.port}"
    return str(address)
