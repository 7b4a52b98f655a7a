"""
Tests for L{gossip.transport.ssh.authorized}: reading C{authorized_keys} files, their
options, noticing that they change, and checking SSH public key logins.
"""

import base64
import hashlib
import os
import time

from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.conch.error import ValidPublicKey
from twisted.conch.ssh import common, keys
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import ISSHPrivateKey, SSHPrivateKey
from twisted.cred.error import UnauthorizedLogin
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from gossip.transport.ssh.authorized import (
    AuthorizedKeys,
    Grant,
    IKeyStore,
    KeyChecker,
    SSHPrivateKeyFrom,
    parseAuthorizedKeys,
)

# Generating an RSA key takes a while: one will do for every test.
RSA_KEY = keys.Key(rsa.generate_private_key(65537, 2048))

# 2030-01-01T00:00:00Z
NEW_YEAR_2030 = 1893456000


def newKey():
    """
    A new Ed25519 private key.
    """
    return keys.Key(ed25519.Ed25519PrivateKey.generate())


def publicLine(key, comment=b""):
    """
    C{key}'s public half as a line of an C{authorized_keys} file, without
    options.
    """
    line = key.public().toString("openssh")
    return line + b" " + comment if comment else line


def blobOf(key):
    return key.public().blob()


class ParseTests(SynchronousTestCase):
    """
    L{parseAuthorizedKeys} reads lines with and without options, and
    refuses lines it cannot honour in full.
    """

    def parseOne(self, line):
        """
        Parse C{line} alone, and return its grant, failing if it has none.
        """
        grants, problems = parseAuthorizedKeys(line + b"\n")
        self.assertEqual(problems, [])
        [grant] = grants
        return grant

    def assertRefused(self, line, fragment):
        """
        C{line}, third in a file after a comment and another key's line,
        grants nothing and has one problem, whose message has C{fragment}.
        """
        other = newKey()
        data = b"# a comment\n" + publicLine(other) + b"\n" + line + b"\n"
        grants, problems = parseAuthorizedKeys(data)
        self.assertEqual([grant.key for grant in grants], [other.public()])
        self.assertEqual(len(problems), 1, problems)
        [(number, message)] = problems
        self.assertEqual(number, 3)
        self.assertIn(fragment, message)

    def test_plainLine(self):
        """
        A line of a key type, its base64 and a comment grants the key every
        log, for reading and writing.
        """
        key = newKey()
        grant = self.parseOne(publicLine(key, b"alice@example.org"))
        self.assertEqual(grant.key, key.public())
        self.assertEqual(grant.comment, "alice@example.org")
        self.assertEqual(grant.line, 1)
        self.assertIsNone(grant.logs)
        self.assertFalse(grant.readOnly)
        self.assertTrue(grant.mayOpen(b"any.log"))

    def test_fingerprint(self):
        """
        The fingerprint is OpenSSH's: C{SHA256:} and the base64 of the
        SHA-256 of the blob, unpadded.
        """
        key = newKey()
        grant = self.parseOne(publicLine(key))
        digest = base64.b64encode(hashlib.sha256(blobOf(key)).digest()).rstrip(b"=")
        self.assertEqual(grant.fingerprint, "SHA256:" + digest.decode("ascii"))

    def test_commentWithSpaces(self):
        """
        The comment is the rest of the line, spaces and all, without
        trailing whitespace.
        """
        grant = self.parseOne(publicLine(newKey(), b"Alice Smith  (laptop) \t"))
        self.assertEqual(grant.comment, "Alice Smith  (laptop)")

    def test_noComment(self):
        """
        A line need not have a comment.
        """
        self.assertEqual(self.parseOne(publicLine(newKey())).comment, "")

    def test_keyTypes(self):
        """
        RSA and ECDSA keys are read as well as Ed25519 keys.
        """
        ecdsa = keys.Key(ec.generate_private_key(ec.SECP256R1()))
        for key in [RSA_KEY, ecdsa]:
            self.assertEqual(self.parseOne(publicLine(key)).key, key.public())

    def test_commentsAndBlankLines(self):
        """
        Blank lines, lines of whitespace and comments are skipped; lines
        may have leading whitespace and end with CRLF; line numbers count
        every line.
        """
        first, second = newKey(), newKey()
        data = (
            b"# keys\r\n"
            b"\n"
            b" \t \n" + publicLine(first) + b"\r\n"
            b"    # " + publicLine(newKey()) + b"\n"
            b"\t " + publicLine(second, b"bob") + b"\r\n"
        )
        grants, problems = parseAuthorizedKeys(data)
        self.assertEqual(problems, [])
        self.assertEqual(
            [(grant.key, grant.line, grant.comment) for grant in grants],
            [(first.public(), 4, ""), (second.public(), 6, "bob")],
        )

    def test_empty(self):
        """
        An empty file grants nothing and has no problems.
        """
        self.assertEqual(parseAuthorizedKeys(b""), ([], []))

    def test_readOnly(self):
        """
        C{gossip-read-only} makes the grant read-only.
        """
        grant = self.parseOne(b"gossip-read-only " + publicLine(newKey()))
        self.assertTrue(grant.readOnly)
        self.assertIsNone(grant.logs)

    def test_logs(self):
        """
        C{gossip-logs} limits the key to the logs it names, a quoted list
        separated by commas.
        """
        grant = self.parseOne(b'gossip-logs="a.log,b.log" ' + publicLine(newKey()))
        self.assertEqual(grant.logs, frozenset([b"a.log", b"b.log"]))
        self.assertTrue(grant.mayOpen(b"a.log"))
        self.assertTrue(grant.mayOpen(b"b.log"))
        self.assertFalse(grant.mayOpen(b"c.log"))
        self.assertFalse(grant.mayOpen(b"a.lo"))
        self.assertFalse(grant.readOnly)

    def test_nodes(self):
        """
        C{gossip-nodes} limits the node identities the key's peer may say
        it is, a quoted list separated by commas.
        """
        grant = self.parseOne(
            b'gossip-nodes="KxNtKjY9ql_L8JPTQDft, snz0" ' + publicLine(newKey())
        )
        self.assertEqual(grant.nodes, frozenset([b"KxNtKjY9ql_L8JPTQDft", b"snz0"]))
        self.assertTrue(grant.maySpeakFor(b"snz0"))
        self.assertFalse(grant.maySpeakFor(b"snz"))
        self.assertIsNone(grant.logs)
        self.assertTrue(self.parseOne(publicLine(newKey())).maySpeakFor(b"anyone"))

    def test_logsAroundCommas(self):
        """
        Whitespace around a log name is not part of it; whitespace inside
        the quotes does not end the options.
        """
        grant = self.parseOne(b'gossip-logs="a.log, my notes ,c" ' + publicLine(newKey()))
        self.assertEqual(grant.logs, frozenset([b"a.log", b"my notes", b"c"]))

    def test_escapedQuote(self):
        """
        In a quoted value C{\\"} stands for a double quote; another
        backslash stands for itself.
        """
        grant = self.parseOne(b'gossip-logs="say \\"hi\\".log,a\\b" ' + publicLine(newKey()))
        self.assertEqual(grant.logs, frozenset([b'say "hi".log', b"a\\b"]))

    def test_bothGossipOptions(self):
        """
        The gossip options combine with each other and with others.
        """
        grant = self.parseOne(
            b'restrict,gossip-logs="a.log",no-pty,gossip-read-only,from="10.0.0.0/8" '
            + publicLine(newKey(), b"c")
        )
        self.assertEqual(grant.logs, frozenset([b"a.log"]))
        self.assertTrue(grant.readOnly)
        self.assertEqual(grant.comment, "c")

    def test_optionNamesAnyCase(self):
        """
        Option names are read without regard to case, as by sshd.
        """
        grant = self.parseOne(
            b'Gossip-Read-Only,GOSSIP-LOGS="A.log",No-PTY ' + publicLine(newKey())
        )
        self.assertTrue(grant.readOnly)
        self.assertEqual(grant.logs, frozenset([b"A.log"]))

    def test_mootOptions(self):
        """
        Options about what gossip's server never offers are accepted, and
        do not limit the key.
        """
        options = [
            b"restrict",
            b"no-port-forwarding",
            b"no-agent-forwarding",
            b"no-X11-forwarding",
            b"no-pty",
            b"no-user-rc",
            b"port-forwarding",
            b"agent-forwarding",
            b"X11-forwarding",
            b"pty",
            b"user-rc",
            b"no-touch-required",
            b"touch-required",
            b"verify-required",
            b'permitopen="localhost:80"',
            b'permitlisten="8080"',
            b'environment="NAME=value, with a comma"',
            b'tunnel="0"',
        ]
        for option in options:
            grant = self.parseOne(option + b" " + publicLine(newKey()))
            self.assertEqual((grant.logs, grant.readOnly), (None, False), option)
        grant = self.parseOne(b",".join(options) + b" " + publicLine(newKey()))
        self.assertEqual((grant.logs, grant.readOnly), (None, False))

    def test_command(self):
        """
        A key limited to a command is refused: gossip runs no commands.
        """
        self.assertRefused(
            b'command="/usr/bin/backup" ' + publicLine(newKey()), "limited to a command"
        )
        self.assertRefused(
            b'restrict,command="echo, \\"hi\\"" ' + publicLine(newKey()),
            "does not grant it access",
        )

    def test_certAuthority(self):
        """
        A certificate authority is refused.
        """
        self.assertRefused(b"cert-authority " + publicLine(newKey()), "certificate")

    def test_principals(self):
        """
        C{principals=} is refused.
        """
        self.assertRefused(b'principals="alice" ' + publicLine(newKey()), "principals")

    def test_unknownOption(self):
        """
        An option gossip does not know is refused, not ignored.
        """
        self.assertRefused(b"gossip-write-only " + publicLine(newKey()), "unknown option")
        self.assertRefused(b'gossip-log="a.log" ' + publicLine(newKey()), "unknown option")
        self.assertRefused(b"no-gossip-read-only " + publicLine(newKey()), "unknown option")
        self.assertRefused(b"no-restrict " + publicLine(newKey()), "unknown option")
        self.assertRefused(b"restrict,nonsense " + publicLine(newKey()), "'nonsense'")

    def test_flagWithValue(self):
        """
        An option that takes no value must not have one.
        """
        self.assertRefused(b'gossip-read-only="yes" ' + publicLine(newKey()), "no value")
        self.assertRefused(b'pty="yes" ' + publicLine(newKey()), "no value")

    def test_valueMissing(self):
        """
        An option that takes a value must have one.
        """
        self.assertRefused(b"gossip-logs " + publicLine(newKey()), "needs a value")
        self.assertRefused(b"from,restrict " + publicLine(newKey()), "needs a value")

    def test_unquotedValue(self):
        """
        Values must be quoted, as sshd requires.
        """
        self.assertRefused(b"gossip-logs=a.log " + publicLine(newKey()), "double quotes")

    def test_unclosedQuote(self):
        """
        A quoted value must end with a quote; an escaped quote does not end
        it.
        """
        key = newKey()
        self.assertRefused(b'gossip-logs="a.log ' + publicLine(key), "no closing quote")
        self.assertRefused(b'gossip-logs="a.log\\" ' + publicLine(key), "no closing quote")

    def test_missingComma(self):
        """
        Options are separated by commas.
        """
        key = newKey()
        self.assertRefused(b'gossip-logs="a"restrict ' + publicLine(key), "comma")
        self.assertRefused(b'restrict"x" ' + publicLine(key), "comma")

    def test_emptyOption(self):
        """
        There is no empty option between commas or after the last.
        """
        key = newKey()
        self.assertRefused(b"restrict,,no-pty " + publicLine(key), "option is missing")
        self.assertRefused(b"restrict, " + publicLine(key), "option is missing")
        self.assertRefused(b",restrict " + publicLine(key), "option is missing")

    def test_logsTwice(self):
        """
        C{gossip-logs} may appear only once.
        """
        self.assertRefused(
            b'gossip-logs="a",gossip-logs="b" ' + publicLine(newKey()), "only once"
        )

    def test_nodesTwiceOrEmpty(self):
        """
        C{gossip-nodes} may appear only once, and names no empty identity.
        """
        key = newKey()
        self.assertRefused(b'gossip-nodes="a",gossip-nodes="b" ' + publicLine(key), "only once")
        self.assertRefused(b'gossip-nodes="a,,b" ' + publicLine(key), "empty node identity")
        self.assertRefused(b"gossip-nodes " + publicLine(key), "needs a value")

    def test_badLogNames(self):
        """
        A log name is a file's base name, and not empty.
        """
        key = newKey()
        self.assertRefused(b'gossip-logs="" ' + publicLine(key), "empty log name")
        self.assertRefused(b'gossip-logs="a,,b" ' + publicLine(key), "empty log name")
        self.assertRefused(b'gossip-logs="a, " ' + publicLine(key), "empty log name")
        self.assertRefused(b'gossip-logs="logs/a.log" ' + publicLine(key), "base name")

    def test_noKey(self):
        """
        Options must be followed by a key.
        """
        self.assertRefused(b"restrict", "no key")
        self.assertRefused(b'gossip-logs="a.log"   ', "no key")

    def test_notAKeyType(self):
        """
        What follows the options must be a key type.
        """
        line = publicLine(newKey()).split(b" ")[1]
        self.assertRefused(b"restrict " + line, "not a key type")
        self.assertRefused(line, "unknown option")

    def test_noKeyData(self):
        """
        A key type must be followed by the key's base64.
        """
        self.assertRefused(b"ssh-ed25519", "no key data")
        self.assertRefused(b"restrict ssh-ed25519", "no key data")

    def test_notBase64(self):
        """
        The key's data must be base64.
        """
        keyType, data = publicLine(newKey()).split(b" ")
        self.assertRefused(keyType + b" " + data[:-3] + b"!!!", "not base64")
        self.assertRefused(keyType + b" " + data[:-1], "not base64")

    def test_truncatedKey(self):
        """
        A key whose blob is cut short is refused.
        """
        data = base64.b64encode(blobOf(newKey())[:-8])
        self.assertRefused(b"ssh-ed25519 " + data, "cannot load")
        data = base64.b64encode(common.NS(b"ssh-ed25519"))
        self.assertRefused(b"ssh-ed25519 " + data, "cannot load")

    def test_unknownKeyType(self):
        """
        A key type Conch cannot load is refused.
        """
        data = base64.b64encode(common.NS(b"ssh-foo") + common.NS(b"x" * 32))
        self.assertRefused(b"ssh-foo " + data, "cannot load")
        self.assertRefused(b"restrict ssh-foo " + data, "cannot load")

    def test_typeMismatch(self):
        """
        The key's blob must be of the type the line says.
        """
        data = publicLine(newKey()).split(b" ")[1]
        self.assertRefused(b"ssh-rsa " + data, "'ssh-ed25519' key")

    def test_securityKey(self):
        """
        Security keys are refused: Conch cannot check their signatures.
        """
        for keyType in [b"sk-ssh-ed25519@openssh.com", b"sk-ecdsa-sha2-nistp256@openssh.com"]:
            data = base64.b64encode(
                common.NS(keyType) + common.NS(os.urandom(32)) + common.NS(b"ssh:")
            )
            self.assertRefused(keyType + b" " + data, "security key")
            self.assertRefused(b"restrict " + keyType + b" " + data, "security key")

    def test_certificate(self):
        """
        Certificates are refused.
        """
        keyType = b"ssh-ed25519-cert-v01@openssh.com"
        data = base64.b64encode(common.NS(keyType) + common.NS(os.urandom(32)))
        self.assertRefused(keyType + b" " + data, "certificate")

    def test_refusedLineClaimsKey(self):
        """
        A refused line's key is refused on later lines too, so that a
        restriction gossip cannot honour does not fall through to a broader
        line.  Earlier lines still grant.
        """
        key, other = newKey(), newKey()
        data = b"\n".join(
            [
                publicLine(other),
                b'command="backup" ' + publicLine(key),
                publicLine(key),
                b"gossip-read-only " + publicLine(key),
                b"nonsense " + publicLine(other),
            ]
        )
        grants, problems = parseAuthorizedKeys(data)
        self.assertEqual([grant.line for grant in grants], [1])
        self.assertEqual([number for number, message in problems], [2, 3, 4, 5])
        self.assertIn("line 2", problems[1][1])
        self.assertIn("line 2", problems[2][1])
        self.assertIn("unknown option", problems[3][1])

    def test_sameKeyTwice(self):
        """
        A key may be listed on several lines; each grants.
        """
        key = newKey()
        grants, problems = parseAuthorizedKeys(
            b'from="10.0.0.0/8" ' + publicLine(key) + b"\n" + publicLine(key)
        )
        self.assertEqual(problems, [])
        self.assertEqual([grant.line for grant in grants], [1, 2])

    @settings(max_examples=150, deadline=None)
    @given(st.lists(st.binary(max_size=120).map(lambda b: b.replace(b"\n", b"")), max_size=8))
    def test_neverRaises(self, lines):
        """
        Whatever the lines, parsing does not raise, and every line that is
        neither blank nor a comment either grants or has one problem.
        """
        self.assertAccountedFor(lines)

    @settings(max_examples=150, deadline=None)
    @given(
        st.lists(
            st.sampled_from(
                [
                    b"restrict",
                    b"gossip-logs",
                    b"gossip-read-only",
                    b"from",
                    b"expiry-time",
                    b"command",
                    b"no-",
                    b"pty",
                    b"=",
                    b",",
                    b'"',
                    b"\\",
                    b" ",
                    b"\t",
                    b"!",
                    b"*",
                    b"10.0.0.",
                    b"/8",
                    b"2030",
                    b"0101",
                    b"Z",
                    b"a.log",
                    b"#",
                    b"\r",
                ]
            ),
            max_size=12,
        )
    )
    def test_optionsNeverRaise(self, pieces):
        """
        Whatever options come before a key, parsing does not raise, and the
        line either grants or has one problem.
        """
        self.assertAccountedFor([b"".join(pieces) + b" " + publicLine(RSA_KEY)])

    def assertAccountedFor(self, lines):
        grants, problems = parseAuthorizedKeys(b"\n".join(lines))
        numbers = sorted(
            [grant.line for grant in grants] + [number for number, message in problems]
        )
        expected = [
            number
            for number, line in enumerate(lines, 1)
            if line.strip(b" \t\r") and not line.strip(b" \t\r").startswith(b"#")
        ]
        self.assertEqual(numbers, expected)


class KeysFileMixin:
    """
    Writes C{authorized_keys} files.
    """

    def writeKeys(self, data, path=None):
        """
        Write C{data} to C{path}, a new file unless given.

        @return: the path.
        """
        if path is None:
            directory = self.mktemp()
            os.mkdir(directory)
            path = os.path.join(directory, "authorized_keys")
        with open(path, "wb") as f:
            f.write(data)
        return path

    def storeFor(self, data, clock=time.time):
        """
        An L{AuthorizedKeys} of a new file holding C{data}.
        """
        return AuthorizedKeys(self.writeKeys(data), clock=clock)

    def captureLogs(self):
        """
        Collect the events logged from now to the end of the test.
        """
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        return events


class FromTests(KeysFileMixin, SynchronousTestCase):
    """
    C{from=} lets a key in from the addresses it lists.
    """

    def assertAdmits(self, sources, admitted, refused):
        """
        A key whose line has C{from="<sources>"} may connect from each
        address in C{admitted} and not from any in C{refused}.
        """
        key = newKey()
        store = self.storeFor(b'from="' + sources + b'" ' + publicLine(key))
        self.assertEqual(store.problems, [])
        for address in admitted:
            self.assertIsNotNone(store.grantFor(blobOf(key), address), address)
        for address in refused:
            self.assertIsNone(store.grantFor(blobOf(key), address), address)

    def test_address(self):
        """
        An address admits that address.
        """
        self.assertAdmits(b"192.0.2.7", ["192.0.2.7"], ["192.0.2.8", "::1"])
        self.assertAdmits(b"2001:db8::1", ["2001:db8::1", "2001:0db8:0::1"], ["2001:db8::2"])

    def test_network(self):
        """
        A network in CIDR notation admits its addresses.
        """
        self.assertAdmits(
            b"10.0.0.0/8,192.168.1.0/24",
            ["10.0.0.1", "10.255.255.255", "192.168.1.200"],
            ["11.0.0.1", "192.168.2.1", "9.255.255.255"],
        )
        self.assertAdmits(b"2001:db8::/32", ["2001:db8:1::5"], ["2001:db9::1", "10.0.0.1"])

    def test_glob(self):
        """
        C{*} matches any characters of the address and C{?} one.
        """
        self.assertAdmits(
            b"192.168.1.*", ["192.168.1.1", "192.168.1.254"], ["192.168.10.1", "192.168.2.1"]
        )
        self.assertAdmits(b"10.0.0.?", ["10.0.0.1", "10.0.0.9"], ["10.0.0.10", "10.0.0.100"])
        self.assertAdmits(b"2001:DB8::*", ["2001:db8::1"], ["2001:db9::1"])
        self.assertAdmits(b"*", ["10.0.0.1", "::1"], [])

    def test_negation(self):
        """
        A negated entry that matches refuses the key, wherever it is in the
        list.
        """
        for sources in [b"10.0.0.0/8,!10.1.0.0/16", b"!10.1.0.0/16,10.0.0.0/8"]:
            self.assertAdmits(sources, ["10.0.0.1", "10.2.0.1"], ["10.1.0.1", "11.0.0.1"])
        self.assertAdmits(b"*,!192.168.1.?", ["192.168.1.10"], ["192.168.1.5"])
        self.assertAdmits(b"!10.0.0.1,10.0.0.1", [], ["10.0.0.1"])

    def test_onlyNegation(self):
        """
        As in sshd, an address must match some entry that is not negated.
        """
        self.assertAdmits(b"!10.0.0.1", [], ["10.0.0.1", "10.0.0.2"])

    def test_mappedAddress(self):
        """
        An IPv4 address mapped into IPv6 is matched as the IPv4 address.
        """
        self.assertAdmits(b"10.0.0.0/8,192.0.2.*", ["::ffff:10.1.2.3", "::ffff:192.0.2.1"], [])

    def test_unknownAddress(self):
        """
        When the address is unknown or not an IP address, a key with
        C{from=} is refused; a key without is not.
        """
        limited, free = newKey(), newKey()
        store = self.storeFor(
            b'from="*" ' + publicLine(limited) + b"\n" + publicLine(free) + b"\n"
        )
        self.assertIsNone(store.grantFor(blobOf(limited), None))
        self.assertIsNone(store.grantFor(blobOf(limited), "example.org"))
        self.assertIsNotNone(store.grantFor(blobOf(free), None))

    def test_firstAdmittingLineWins(self):
        """
        When several lines list a key, the first that admits it wins.
        """
        key = newKey()
        store = self.storeFor(
            b'from="10.0.0.0/8",gossip-logs="a" '
            + publicLine(key)
            + b"\ngossip-read-only "
            + publicLine(key)
        )
        inside = store.grantFor(blobOf(key), "10.0.0.1")
        outside = store.grantFor(blobOf(key), "192.0.2.1")
        self.assertEqual((inside.line, inside.logs, inside.readOnly), (1, {b"a"}, False))
        self.assertEqual((outside.line, outside.logs, outside.readOnly), (2, None, True))

    def assertBadSources(self, sources, fragment):
        """
        A line with C{from="<sources>"} is refused with a problem that says
        C{fragment}.
        """
        key = newKey()
        store = self.storeFor(b'from="' + sources + b'" ' + publicLine(key))
        self.assertIsNone(store.grantFor(blobOf(key), "10.0.0.1"))
        [(number, message)] = store.problems
        self.assertEqual(number, 1)
        self.assertIn(fragment, message)

    def test_hostNames(self):
        """
        gossip matches only addresses, so a host name (which could never
        match) is a problem, negated or not.
        """
        self.assertBadSources(b"*.example.org", "host name")
        self.assertBadSources(b"10.0.0.1,!evil.example.org", "host name")
        self.assertBadSources(b"localhost", "host name")

    def test_badNetworks(self):
        """
        A network must be a network: no host bits set, a sensible prefix.
        """
        self.assertBadSources(b"10.0.0.1/8", "host bits")
        self.assertBadSources(b"10.0.0.0/33", "not an IP address or network")
        self.assertBadSources(b"10.0.0.0/8/8", "not an IP address or network")

    def test_emptyEntry(self):
        """
        No entry of the list may be empty.
        """
        self.assertBadSources(b"", "empty entry")
        self.assertBadSources(b"10.0.0.1,,10.0.0.2", "empty entry")
        self.assertBadSources(b"10.0.0.1,!", "empty entry")

    def test_notASCII(self):
        """
        Addresses are ASCII.
        """
        self.assertBadSources("10.0.0.\N{DIGIT ONE}\N{SUPERSCRIPT ONE}".encode(), "ASCII")

    def test_fromTwice(self):
        """
        C{from=} may appear only once, as in sshd.
        """
        self.assertBadSources(b'10.0.0.1",from="10.0.0.2', "only once")


class ExpiryTests(KeysFileMixin, SynchronousTestCase):
    """
    C{expiry-time=} refuses a key after a time.
    """

    def assertExpires(self, expiry, when):
        """
        A key whose line has C{expiry-time="<expiry>"} is granted until
        C{when} and refused after.
        """
        key = newKey()
        now = [when - 3600]
        store = self.storeFor(
            b'expiry-time="' + expiry + b'" ' + publicLine(key), clock=lambda: now[0]
        )
        self.assertEqual(store.problems, [])
        self.assertIsNotNone(store.grantFor(blobOf(key), None))
        now[0] = when
        self.assertIsNotNone(store.grantFor(blobOf(key), None))
        now[0] = when + 1
        self.assertIsNone(store.grantFor(blobOf(key), None))

    def test_utc(self):
        """
        A time that ends in C{Z} or C{UTC} is in UTC; it may give the day,
        the minute or the second.
        """
        self.assertExpires(b"20300101Z", NEW_YEAR_2030)
        self.assertExpires(b"20300101utc", NEW_YEAR_2030)
        self.assertExpires(b"203001010101z", NEW_YEAR_2030 + 3660)
        self.assertExpires(b"20300101010101Z", NEW_YEAR_2030 + 3661)

    def test_localTime(self):
        """
        A time without a zone is local time.
        """
        self.assertExpires(b"20300615", time.mktime((2030, 6, 15, 0, 0, 0, 0, 0, -1)))
        self.assertExpires(
            b"203006151230", time.mktime((2030, 6, 15, 12, 30, 0, 0, 0, -1))
        )

    def test_earliestWins(self):
        """
        Of several expiry times, the earliest holds.
        """
        self.assertExpires(b'20310101Z",expiry-time="20300101Z', NEW_YEAR_2030)
        self.assertExpires(b'20300101Z",expiry-time="20310101Z', NEW_YEAR_2030)

    def test_combinedWithFrom(self):
        """
        A key must be both from the right place and in time.
        """
        key = newKey()
        now = [NEW_YEAR_2030]
        store = self.storeFor(
            b'from="10.0.0.0/8",expiry-time="20300101Z" ' + publicLine(key),
            clock=lambda: now[0],
        )
        self.assertIsNotNone(store.grantFor(blobOf(key), "10.0.0.1"))
        self.assertIsNone(store.grantFor(blobOf(key), "192.0.2.1"))
        now[0] += 1
        self.assertIsNone(store.grantFor(blobOf(key), "10.0.0.1"))

    def test_malformed(self):
        """
        A malformed time is a problem, and the key is refused.
        """
        for expiry in [
            b"2030",
            b"2030010",
            b"203001011",
            b"2030010101010",
            b"20301301",
            b"20300230",
            b"20300101250000Z",
            b"20300101X",
            b"2030-01-01",
            b"",
            "２０３００１０１".encode(),
        ]:
            key = newKey()
            store = self.storeFor(
                b'expiry-time="' + expiry + b'" ' + publicLine(key), clock=lambda: 0
            )
            self.assertIsNone(store.grantFor(blobOf(key), None), expiry)
            [(number, message)] = store.problems
            self.assertEqual(number, 1)
            self.assertIn("expiry-time", message)


class AuthorizedKeysTests(KeysFileMixin, SynchronousTestCase):
    """
    L{AuthorizedKeys} reads its file when it changes, and logs its
    problems.
    """

    def test_grantFor(self):
        """
        L{AuthorizedKeys.grantFor} returns the grant of a listed key, and
        L{None} for any other.
        """
        key = newKey()
        store = self.storeFor(b'gossip-logs="a.log" ' + publicLine(key, b"alice"))
        grant = store.grantFor(blobOf(key), "10.0.0.1")
        self.assertIsInstance(grant, Grant)
        self.assertEqual((grant.comment, grant.logs), ("alice", {b"a.log"}))
        self.assertIsNone(store.grantFor(blobOf(newKey()), "10.0.0.1"))
        self.assertIsNone(store.grantFor(b"not a key", "10.0.0.1"))
        self.assertEqual(store.problems, [])

    def test_rsa(self):
        """
        An RSA key is found by its blob.
        """
        store = self.storeFor(publicLine(RSA_KEY))
        self.assertEqual(store.grantFor(blobOf(RSA_KEY), None).key, RSA_KEY.public())

    def test_problemsLogged(self):
        """
        Each problem is logged as a warning naming the path, the line and
        the reason, once for each time the file is read.
        """
        events = self.captureLogs()
        path = self.writeKeys(b"\n" + b'command="x" ' + publicLine(newKey()) + b"\n")
        store = AuthorizedKeys(path)
        store.refresh()
        store.grantFor(blobOf(newKey()), None)
        warnings = [event for event in events if event["log_level"] == LogLevel.warn]
        self.assertEqual(len(warnings), 1)
        [warning] = warnings
        self.assertEqual((warning["path"], warning["line"]), (path, 2))
        text = formatEvent(warning)
        self.assertIn(path, text)
        self.assertIn("line 2", text)
        self.assertIn("limited to a command", text)
        self.assertEqual(store.problems, [(2, warning["problem"])])

    def test_missingFile(self):
        """
        A missing file grants nothing; that is a problem, logged once.
        """
        events = self.captureLogs()
        directory = self.mktemp()
        os.mkdir(directory)
        store = AuthorizedKeys(os.path.join(directory, "authorized_keys"))
        key = newKey()
        self.assertIsNone(store.grantFor(blobOf(key), None))
        self.assertIsNone(store.grantFor(blobOf(key), None))
        [(number, message)] = store.problems
        self.assertIsNone(number)
        self.assertIn("no such file", message)
        warnings = [event for event in events if event["log_level"] == LogLevel.warn]
        self.assertEqual(len(warnings), 1)
        self.assertIn(store.path, formatEvent(warnings[0]))

    def test_fileAppears(self):
        """
        A file created after a missing one was looked for is read.
        """
        directory = self.mktemp()
        os.mkdir(directory)
        path = os.path.join(directory, "authorized_keys")
        store = AuthorizedKeys(path)
        key = newKey()
        self.assertIsNone(store.grantFor(blobOf(key), None))
        self.writeKeys(publicLine(key), path)
        self.assertIsNotNone(store.grantFor(blobOf(key), None))
        self.assertEqual(store.problems, [])

    def test_fileRemoved(self):
        """
        When the file is removed, its keys may no longer connect.
        """
        key = newKey()
        store = self.storeFor(publicLine(key))
        self.assertIsNotNone(store.grantFor(blobOf(key), None))
        os.remove(store.path)
        self.assertIsNone(store.grantFor(blobOf(key), None))

    def test_unreadable(self):
        """
        A file that cannot be read grants nothing; that is a problem,
        logged once.
        """
        events = self.captureLogs()
        directory = self.mktemp()
        os.mkdir(directory)
        store = AuthorizedKeys(directory)
        self.assertIsNone(store.grantFor(blobOf(newKey()), None))
        self.assertIsNone(store.grantFor(blobOf(newKey()), None))
        [(number, message)] = store.problems
        self.assertIsNone(number)
        self.assertIn("cannot read", message)
        warnings = [event for event in events if event["log_level"] == LogLevel.warn]
        self.assertEqual(len(warnings), 1)

    def test_rewritten(self):
        """
        A rewritten file is read again.
        """
        first, second = newKey(), newKey()
        store = self.storeFor(publicLine(first))
        self.assertIsNotNone(store.grantFor(blobOf(first), None))
        self.writeKeys(publicLine(second, b"a longer line"), store.path)
        self.assertIsNone(store.grantFor(blobOf(first), None))
        self.assertIsNotNone(store.grantFor(blobOf(second), None))

    def test_rewrittenSameSize(self):
        """
        A file rewritten in place with the same size is read again when its
        modification time differs.
        """
        first, second = newKey(), newKey()
        store = self.storeFor(publicLine(first, b"one"))
        os.utime(store.path, ns=(1_000_000_000_000_000_000, 1_000_000_000_000_000_000))
        self.assertIsNotNone(store.grantFor(blobOf(first), None))
        self.writeKeys(publicLine(second, b"two"), store.path)
        os.utime(store.path, ns=(1_000_000_000_000_000_000, 1_000_000_000_000_000_001))
        self.assertIsNone(store.grantFor(blobOf(first), None))
        self.assertIsNotNone(store.grantFor(blobOf(second), None))

    def test_replaced(self):
        """
        A file replaced by a rename is read again, even if size and
        modification time are the same.
        """
        first, second = newKey(), newKey()
        store = self.storeFor(publicLine(first))
        stat = os.stat(store.path)
        replacement = self.writeKeys(publicLine(second), store.path + ".new")
        os.utime(replacement, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        self.assertIsNotNone(store.grantFor(blobOf(first), None))
        os.rename(replacement, store.path)
        self.assertIsNone(store.grantFor(blobOf(first), None))
        self.assertIsNotNone(store.grantFor(blobOf(second), None))

    def test_notReadAgainUnchanged(self):
        """
        An unchanged file is not read again, so its problems are logged
        once.
        """
        events = self.captureLogs()
        store = self.storeFor(b"nonsense " + publicLine(newKey()))
        for i in range(3):
            store.grantFor(blobOf(newKey()), None)
        warnings = [event for event in events if event["log_level"] == LogLevel.warn]
        self.assertEqual(len(warnings), 1)
        self.assertEqual(len(store.problems), 1)

    def test_problemsReplaced(self):
        """
        L{AuthorizedKeys.problems} holds the problems of the latest reading.
        """
        store = self.storeFor(b"nonsense " + publicLine(newKey()))
        store.refresh()
        self.assertEqual([number for number, message in store.problems], [1])
        self.writeKeys(publicLine(newKey()), store.path)
        store.refresh()
        self.assertEqual(store.problems, [])


@implementer(IKeyStore)
class MemoryKeys:
    """
    A key store in memory: a grant for each listed key, from anywhere; it
    notes the addresses it is asked about.
    """

    def __init__(self, grants):
        self.grants = grants
        self.asked = []

    def grantFor(self, keyBlob, address):
        self.asked.append(address)
        return self.grants.get(keyBlob)


class KeyCheckerTests(KeysFileMixin, SynchronousTestCase):
    """
    L{KeyChecker} accepts logins signed by a key that may connect.
    """

    def setUp(self):
        self.key = newKey()
        self.limited = newKey()
        self.store = self.storeFor(
            publicLine(self.key, b"alice")
            + b"\n"
            + publicLine(RSA_KEY)
            + b'\nfrom="10.0.0.0/8" '
            + publicLine(self.limited)
            + b"\n"
        )
        self.checker = KeyChecker(self.store)

    def credentials(self, key, signer=None, data=b"session and request", address="10.0.0.1"):
        """
        Credentials for C{key}, signed by C{signer} unless it is L{None}.
        """
        signature = None if signer is None else signer.sign(data)
        return SSHPrivateKeyFrom(
            b"gossip", key.sshType(), blobOf(key), data, signature, address=address
        )

    def test_interfaces(self):
        """
        L{KeyChecker} is a credentials checker of L{ISSHPrivateKey}, which
        L{SSHPrivateKeyFrom} provides.
        """
        self.assertTrue(verifyObject(ICredentialsChecker, self.checker))
        self.assertEqual(self.checker.credentialInterfaces, (ISSHPrivateKey,))
        self.assertTrue(verifyObject(ISSHPrivateKey, self.credentials(self.key)))
        self.assertTrue(verifyObject(IKeyStore, self.store))
        self.assertTrue(verifyObject(IKeyStore, MemoryKeys({})))

    def test_anyStore(self):
        """
        L{KeyChecker} asks its store, whatever it is, for the grant of the
        credentials' key from their address.
        """
        grant = Grant(self.key.public(), "alice", 1)
        store = MemoryKeys({blobOf(self.key): grant})
        checker = KeyChecker(store)
        signed = self.credentials(self.key, self.key, address="192.0.2.7")
        self.assertIs(self.successResultOf(checker.requestAvatarId(signed)), grant)
        stranger = self.credentials(self.limited, self.limited)
        self.failureResultOf(checker.requestAvatarId(stranger), UnauthorizedLogin)
        self.assertEqual(store.asked, ["192.0.2.7", "10.0.0.1"])

    def test_unsigned(self):
        """
        Unsigned credentials of a key that may connect fail with
        L{ValidPublicKey}, which asks the client to sign.
        """
        self.failureResultOf(
            self.checker.requestAvatarId(self.credentials(self.key)), ValidPublicKey
        )

    def test_signed(self):
        """
        Credentials signed by their key succeed with the key's grant.
        """
        grant = self.successResultOf(
            self.checker.requestAvatarId(self.credentials(self.key, self.key))
        )
        self.assertEqual((grant.line, grant.comment), (1, "alice"))
        self.assertEqual(grant, self.store.grantFor(blobOf(self.key), None))

    def test_rsa(self):
        """
        RSA keys sign with SHA-2, or SHA-1.
        """
        for algorithm in [b"rsa-sha2-512", b"rsa-sha2-256", b"ssh-rsa"]:
            credentials = SSHPrivateKeyFrom(
                b"gossip", algorithm, blobOf(RSA_KEY), b"data", RSA_KEY.sign(b"data", algorithm)
            )
            grant = self.successResultOf(self.checker.requestAvatarId(credentials))
            self.assertEqual(grant.line, 2)

    def assertRefused(self, credentials):
        failure = self.failureResultOf(
            self.checker.requestAvatarId(credentials), UnauthorizedLogin
        )
        self.assertNotIsInstance(failure.value, ValidPublicKey)

    def test_wrongData(self):
        """
        A signature of other data is refused.
        """
        credentials = self.credentials(self.key, self.key)
        self.assertRefused(
            SSHPrivateKeyFrom(
                credentials.username,
                credentials.algName,
                credentials.blob,
                b"other data",
                credentials.signature,
            )
        )

    def test_wrongKey(self):
        """
        A signature by another key is refused.
        """
        self.assertRefused(self.credentials(self.key, newKey()))
        self.assertRefused(self.credentials(self.key, RSA_KEY))

    def test_malformedSignature(self):
        """
        A malformed signature is refused, not an error.
        """
        for signature in [b"", b"\x00\x00\x00\x0bssh-ed25519", b"\xff" * 40, b"junk"]:
            credentials = SSHPrivateKeyFrom(
                b"gossip", b"ssh-ed25519", blobOf(self.key), b"data", signature
            )
            self.assertRefused(credentials)

    def test_unknownKey(self):
        """
        A key not listed is refused, signed or not.
        """
        stranger = newKey()
        self.assertRefused(self.credentials(stranger))
        self.assertRefused(self.credentials(stranger, stranger))

    def test_address(self):
        """
        The address of L{SSHPrivateKeyFrom} is matched against C{from=}.
        """
        self.successResultOf(
            self.checker.requestAvatarId(self.credentials(self.limited, self.limited))
        )
        self.assertRefused(
            self.credentials(self.limited, self.limited, address="192.0.2.1")
        )
        self.assertRefused(self.credentials(self.limited, address="192.0.2.1"))

    def test_withoutAddress(self):
        """
        Credentials without an address, such as Twisted's own, may log in
        with a key whose line has no C{from=}, and not with one that has.
        """
        data = b"data"
        self.successResultOf(
            self.checker.requestAvatarId(
                SSHPrivateKey(b"u", b"ssh-ed25519", blobOf(self.key), data, self.key.sign(data))
            )
        )
        self.assertRefused(
            SSHPrivateKey(
                b"u", b"ssh-ed25519", blobOf(self.limited), data, self.limited.sign(data)
            )
        )
