"""
Tests for L{gossip.transport.urls}: the one reader of C{ssh://} and
C{tls://} URLs.
"""

import os
import subprocess
import sys

from twisted.trial.unittest import SynchronousTestCase

from gossip.transport.errors import CommandError
from gossip.transport.urls import DEFAULT_PORTS, PeerURL, URLError, isURL, parseURL

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class IsURLTests(SynchronousTestCase):
    """
    L{isURL} tells a peer's URL from a file's name.
    """

    def test_isURL(self):
        self.assertTrue(isURL("ssh://host/a.log"))
        self.assertTrue(isURL("tls://host:7423"))
        self.assertTrue(isURL("TLS://host"))
        self.assertFalse(isURL("ssh.log"))
        self.assertFalse(isURL("./ssh://x"))


class ParseTests(SynchronousTestCase):
    """
    L{parseURL} reads both schemes alike.
    """

    def test_good(self):
        """
        The port defaults by scheme; user and log are optional and
        percent-decoded, the log to bytes; an IPv6 host is in brackets; a
        host name is in lower case.
        """
        for url, expected in [
            ("ssh://alice@example.org:2222/a.log", PeerURL("example.org", 2222, "alice", b"a.log")),
            ("ssh://host", PeerURL("host", 22)),
            ("ssh://host/", PeerURL("host", 22)),
            ("SSH://Host.Example", PeerURL("host.example", 22)),
            ("ssh://[::1]:7422/x", PeerURL("::1", 7422, None, b"x")),
            ("ssh://al%20ice@h/my%20log", PeerURL("h", 22, "al ice", b"my log")),
            ("ssh://h/caf%C3%A9", PeerURL("h", 22, None, "café".encode())),
            ("ssh://h/café", PeerURL("h", 22, None, "café".encode())),
            ("tls://example.com", PeerURL("example.com", 7423, scheme="tls")),
            ("tls://example.com/", PeerURL("example.com", 7423, scheme="tls")),
            ("TLS://node-b.example:1234", PeerURL("node-b.example", 1234, scheme="tls")),
            ("tls://10.0.0.1:7/chat", PeerURL("10.0.0.1", 7, log=b"chat", scheme="tls")),
            ("tls://[::1]:99/log", PeerURL("::1", 99, log=b"log", scheme="tls")),
            ("tls://[fe80::2]/log", PeerURL("fe80::2", 7423, log=b"log", scheme="tls")),
            ("tls://host/a%2Fb%20c%25", PeerURL("host", 7423, log=b"a/b c%", scheme="tls")),
            ("tls://host/my%20log", PeerURL("host", 7423, log=b"my log", scheme="tls")),
            ("tls://host/caf%C3%A9", PeerURL("host", 7423, log="café".encode(), scheme="tls")),
            ("ssh://h/%FF", PeerURL("h", 22, None, b"\xff")),
            ("ssh://h/" + os.fsdecode(b"\xfe"), PeerURL("h", 22, None, b"\xfe")),
        ]:
            self.assertEqual(parseURL(url), expected, url)
        self.assertEqual(DEFAULT_PORTS, {"ssh": 22, "tls": 7423})

    def test_str(self):
        """
        A L{PeerURL} shows as its URL, without the scheme's default port.
        """
        self.assertEqual(str(parseURL("ssh://[::1]:7422/x")), "ssh://[::1]:7422/x")
        self.assertEqual(str(parseURL("ssh://a@h:22/x")), "ssh://a@h/x")
        self.assertEqual(str(parseURL("tls://h:7423/x")), "tls://h/x")
        self.assertEqual(str(parseURL("tls://h:22")), "tls://h:22")

    def test_knownHostsName(self):
        self.assertEqual(PeerURL("h", 22).knownHostsName, "h")
        self.assertEqual(PeerURL("h", 7422).knownHostsName, "[h]:7422")

    def test_bad(self):
        """
        A bad URL gives a one-line L{URLError} quoting it, which the
        commands show as they show any L{CommandError}.
        """
        for url in [
            "", "host:7423", "http://h", "tls:/host", "tls://", "ssh://", "tls://:7423",
            "tls://host:", "tls://host:0", "tls://host:65536", "ssh://[::1]:99999",
            "tls://host:x", "ssh://h:-1", "tls://host:1:2", "tls://::1", "tls://[::1",
            "ssh://[::1", "tls://[::1]x", "tls://[host]:1", "tls://[fe80::1%25eth0]",
            "tls://user@host", "ssh://a:secret@h", "ssh://@h", "ssh://%FF@h",
            "tls://-host", "tls://host..example", "tls://999.1.1.1", "tls://ho st",
            "ssh://h/my log", "tls://host/na me", "tls://host/a\nb", "tls://host/a/b",
            "ssh://h/a/b", "tls://host/log?x=1", "ssh://h/?q", "tls://host/log#top",
            "tls://host/%zz", "tls://host/50%", "ssh://café.example/x",
        ]:  # fmt: skip
            error = self.assertRaises(URLError, parseURL, url)
            self.assertIn(repr(url), str(error))
            self.assertNotIn("\n", str(error))
        self.assertTrue(issubclass(URLError, CommandError))


class CloneNameTests(SynchronousTestCase):
    """
    C{gossip clone} checks NEWLOG's name against the log a URL names,
    percent-decoded as the session asks for it.
    """

    def clone(self, *argv):
        done = subprocess.run(
            [sys.executable, "-m", "gossip", "clone", *argv],
            capture_output=True,
            env=dict(os.environ, PYTHONPATH=ROOT),
            # A name that agrees gets as far as reaching the peer, which
            # fails at once: no TLS files are given.
            timeout=60,
        )
        return done.returncode, done.stderr.decode()

    def test_percentDecoded(self):
        """
        C{ssh://h/my%20log} and C{tls://h/my%20log} clone as C{my log},
        not C{my%20log}.
        """
        directory = self.mktemp()
        os.mkdir(directory)
        for url in ["ssh://h.invalid/my%20log", "tls://h.invalid/my%20log"]:
            status, stderr = self.clone(url, os.path.join(directory, "my%20log"))
            self.assertEqual(status, 1)
            self.assertIn("is not named 'my log' like its source", stderr)
        status, stderr = self.clone("tls://h.invalid/my%20log", os.path.join(directory, "my log"))
        self.assertEqual(status, 1)
        self.assertEqual(
            stderr,
            "gossip: tls://h.invalid/my%20log: give --tls-key, --tls-cert and --tls-ca "
            "to reach it\n",
        )

    def test_badURL(self):
        """
        A clone from a bad URL is one line and exit status 1.
        """
        status, stderr = self.clone("ssh://h/a b", "a b")
        self.assertEqual(status, 1)
        self.assertTrue(stderr.startswith("gossip: clone: URL 'ssh://h/a b': "), stderr)
        self.assertEqual(stderr.count("\n"), 1)
