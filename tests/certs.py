"""
A small private PKI written to a directory, for tests of L{gossip.transport.tls}.
"""

import datetime
import ipaddress
import os

import attrs
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gossip.transport.tls import TLSFiles

__all__ = ["makeCertificates"]

# What every node certificate but "wrongname" names: the loopback host by
# name and by address, as a test dials it.
_LOOPBACK = [
    x509.DNSName("localhost"),
    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
    x509.IPAddress(ipaddress.ip_address("::1")),
]


def makeCertificates(directory, clients=("client",)):
    """
    Write two unrelated authorities and certificates for nodes into
    C{directory} (created if missing), each key in C{NAME.key} and each
    certificate in C{NAME.pem}.

    Every node certificate is good for both ends of a connection, and every
    node trusts only the first authority, C{ca.pem}; so that when a
    connection fails, it is the side under test that refuses it.

    @param clients: the names of the client nodes to make, each also the
        common name in its certificate.

    @return: a L{dict} mapping a node's name to its L{TLSFiles}:
        - C{"server"}: signed by C{ca.pem}, with common name C{server}, for
          C{localhost}, C{127.0.0.1} and C{::1};
        - each of C{clients}: the same, with its own common name;
        - C{"anonymous"}: the same, without a common name;
        - C{"wrongname"}: signed by C{ca.pem}, but only for
          C{elsewhere.example};
        - C{"stranger"}: like C{"server"} but signed by the other
          authority, C{other-ca.pem}.
    """
    os.makedirs(directory, exist_ok=True)
    authority = _Authority.make(directory, "ca", "gossip test CA")
    other = _Authority.make(directory, "other-ca", "unrelated test CA")
    made = {}

    def node(name, signer, commonName, names):
        key = ec.generate_private_key(ec.SECP256R1())
        subject = [] if commonName is None else [x509.NameAttribute(NameOID.COMMON_NAME, commonName)]
        builder = (
            _builder(x509.Name(subject), key)
            .add_extension(x509.SubjectAlternativeName(names), critical=not subject)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                critical=False,
            )
        )
        made[name] = TLSFiles(
            key=_writeKey(directory, name, key),
            cert=signer.sign(directory, name, builder),
            ca=authority.cert,
        )

    node("server", authority, "server", _LOOPBACK)
    for name in clients:
        node(name, authority, name, _LOOPBACK)
    node("anonymous", authority, None, _LOOPBACK)
    node("wrongname", authority, "wrongname", [x509.DNSName("elsewhere.example")])
    node("stranger", other, "stranger", _LOOPBACK)
    return made


@attrs.frozen
class _Authority:
    """
    A certificate authority: its key, its certificate and that
    certificate's path.
    """

    key = attrs.field()
    certificate = attrs.field()
    cert = attrs.field()

    @classmethod
    def make(cls, directory, name, commonName):
        """
        Make a self-signed authority and write its key and certificate.
        """
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, commonName)])
        certificate = (
            _builder(subject, key)
            .issuer_name(subject)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(key, hashes.SHA256())
        )
        _writeKey(directory, name, key)
        return cls(key, certificate, _writeCertificate(directory, name, certificate))

    def sign(self, directory, name, builder):
        """
        Sign a certificate and write it.

        @return: the certificate's path.
        """
        certificate = (
            builder.issuer_name(self.certificate.subject)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
            .sign(self.key, hashes.SHA256())
        )
        return _writeCertificate(directory, name, certificate)


def _builder(subject, key):
    """
    A certificate builder for C{key}, good from yesterday for a month.
    """
    now = datetime.datetime.now(datetime.timezone.utc)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )


def _writeKey(directory, name, key):
    """
    Write a private key, readable by its owner only, to C{NAME.key}.

    @return: its path.
    """
    path = os.path.join(directory, name + ".key")
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    return path


def _writeCertificate(directory, name, certificate):
    """
    Write a certificate to C{NAME.pem}.

    @return: its path.
    """
    path = os.path.join(directory, name + ".pem")
    with open(path, "wb") as f:
        f.write(certificate.public_bytes(serialization.Encoding.PEM))
    return path
