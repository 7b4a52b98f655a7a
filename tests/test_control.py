"""
Tests for the daemon's control port (L{gossip.control}), C{gossip status},
C{reload}, C{connect} and C{stop} (L{gossip.cli.control}), and how the
daemon says why its peers fail (L{gossip.transport.reach.Peer},
L{gossip.transport.reasons}): first in this process, with a fake clock,
then against real daemons.
"""

import json
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time

from cryptography.hazmat.primitives.asymmetric import ed25519
from twisted.conch.ssh import keys
from twisted.internet import error
from twisted.internet.defer import Deferred, fail
from twisted.internet.task import Clock
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.protocols import amp
from twisted.test.iosim import connectedServerAndClient
from twisted.trial.unittest import SynchronousTestCase, TestCase

from gossip.cli.control import formatStatus
from gossip.control import server
from gossip.control.client import clientEndpoint
from gossip.control.commands import Status
from gossip.control.server import _claim, unixPath
from gossip.store.logfile import Log
from gossip.sync.sessions import Sessions
from gossip.transport.reach import UNREACHABLE_MAX, Peer, PeerService, _PeerFactory, retryDelay
from gossip.transport.reasons import inWords
from gossip.transport.ssh.authorized import Grant
from tests.helpers import (
    ENV,
    contents,
    Daemon,
    daemonCommand,
    freePort,
    killMentioning,
    processesServing,
    run,
    say,
    serveCommand,
    waitFor,
)


def shortDirectory(testCase):
    """
    A directory short enough to hold UNIX sockets (their paths are limited
    to 107 bytes), removed when the test ends.
    """
    directory = tempfile.mkdtemp(prefix="gossip-")
    testCase.addCleanup(shutil.rmtree, directory, True)
    return directory


class Events:
    """
    What the global log publisher publishes while a test runs.
    """

    def __init__(self, testCase):
        self.events = []
        globalLogPublisher.addObserver(self.events.append)
        testCase.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def text(self, level=LogLevel.warn):
        return [
            formatEvent(event)
            for event in self.events
            if event.get("log_level", LogLevel.info) >= level
        ]


class ReasonTests(SynchronousTestCase):
    """
    L{inWords} says why a connection failed as a person would.
    """

    def test_kinds(self):
        for exception, words in [
            (error.ConnectionRefusedError(), "connection refused"),
            (error.DNSLookupError("no such host"), "name not found"),
            (error.TimeoutError(), "timed out"),
        ]:
            self.assertTrue(inWords(exception).startswith(words), inWords(exception))

    def test_otherwise(self):
        """
        Anything else is its message, on one line.
        """
        self.assertEqual(inWords(ValueError("two\nlines")), "two lines")


class _Refusing:
    """
    An endpoint whose attempts all fail with C{error}.
    """

    peer = "ssh://nowhere:7422"

    def __init__(self, error):
        self.error = error
        self.attempts = 0

    def connect(self, factory):
        self.attempts += 1
        return fail(self.error)


class PeerTests(SynchronousTestCase):
    """
    L{PeerService} retries a peer that cannot be reached with backoff; its
    L{Peer} says why once, counts the attempts, and can retry at once.
    """

    def setUp(self):
        self.events = Events(self)
        self.clock = Clock()
        self.endpoint = _Refusing(error.ConnectionRefusedError())

    def service(self):
        peer = Peer("ssh://nowhere:7422", "a.log", self.clock, self.endpoint)
        factory = _PeerFactory(None, peer.name, tracker=peer)
        service = PeerService(self.endpoint, factory, lambda attempt: 2.0**attempt, self.clock, peer)
        service.startService()
        self.addCleanup(service.stopService)
        return service

    def test_onceAndCounted(self):
        """
        Failures for the same reason are logged once, naming the peer as
        given and the log, and counted; ClientService's own line for each
        retry is not logged.
        """
        peer = self.service().peer
        for delay in (2, 4, 8, 16):
            self.clock.advance(delay)
        self.assertEqual(self.endpoint.attempts, 5)
        self.assertEqual(
            self.events.text(),
            [
                "cannot sync a.log with ssh://nowhere:7422: connection refused (nothing "
                "listens there) (retrying; said again only if the reason changes)"
            ],
        )
        self.assertFalse(any("Scheduling" in formatEvent(e) for e in self.events.events))
        self.assertEqual((peer.state, peer.failures, peer.retry), ("waiting", 5, 5))
        self.assertEqual(peer.retryAt, self.clock.seconds() + 32)

    def test_reasonChanges(self):
        """
        A new reason is logged when it comes.
        """
        self.service()
        self.clock.advance(2)
        self.endpoint.error = error.DNSLookupError("nowhere")
        self.clock.advance(4)
        self.clock.advance(8)
        self.assertEqual(len(self.events.text()), 2)
        self.assertIn("name not found", self.events.text()[1])

    def test_refused(self):
        """
        A refusal (a key, a host key) is the state C{refused}.
        """
        self.endpoint.error = Exception("ssh://nowhere:7422: no key was accepted (tried: SHA256:x)")
        peer = self.service().peer
        self.assertEqual(peer.state, "refused")
        self.assertEqual(peer.why, "no key was accepted (tried: SHA256:x)")

    def test_retryNow(self):
        """
        L{Peer.retryNow} makes the retry waited for at once.
        """
        peer = self.service().peer
        self.assertTrue(peer.retryNow())
        self.clock.advance(0)
        self.assertEqual(self.endpoint.attempts, 2)
        self.assertEqual(peer.failures, 2)


class _Link:
    """
    A session with the peer's node that the service says serves the link.
    """

    peer = "the peer's session"

    def __init__(self):
        self.finished = []

    def whenFinished(self):
        d = Deferred()
        self.finished.append(d)
        return d


class _Linked:
    """
    A log service with one session, C{link}, linking it with node C{b"n"}.
    """

    def __init__(self):
        self.link = _Link()

    def linkWith(self, node):
        return self.link if node == b"n" else None


class LinkedTests(SynchronousTestCase):
    """
    A peer whose node has a session with this node already (the peer
    dialled it: both ends list the link) is not dialled until that session
    ends; then it is, at once.
    """

    def setUp(self):
        self.events = Events(self)
        self.clock = Clock()
        self.endpoint = _Refusing(error.ConnectionRefusedError())
        self.linked = _Linked()
        self.peer = Peer("ssh://nowhere:7422", "a.log", self.clock, self.endpoint)
        self.peer.node = b"n"
        factory = _PeerFactory(self.linked, self.peer.name, tracker=self.peer)
        self.service = PeerService(self.endpoint, factory, lambda attempt: 2.0, self.clock, self.peer)

    def test_waitsForLink(self):
        """
        While the link is served, the peer is C{linked} and not dialled,
        however long; when it ends, the peer is dialled at once.
        """
        self.service.startService()
        self.addCleanup(self.service.stopService)
        self.assertEqual((self.peer.state, self.endpoint.attempts), ("linked", 0))
        self.assertIn("another session with the same node serves the link", self.events.text(LogLevel.info)[-1])
        self.clock.advance(100)
        self.assertEqual(self.endpoint.attempts, 0)
        # The link ends: the peer is dialled at once.
        self.linked.link, link = None, self.linked.link
        link.finished[0].callback(False)
        self.assertEqual(self.endpoint.attempts, 1)
        self.assertEqual(self.peer.state, "waiting")

    def test_stopWhileLinked(self):
        """
        Stopping the daemon while it waits for the link dials nothing.
        """
        self.service.startService()
        self.successResultOf(self.service.stopService())
        self.assertEqual(self.endpoint.attempts, 0)


class RetryDelayTests(SynchronousTestCase):
    """
    L{retryDelay}: soon at first, never more than seconds apart while a
    peer cannot be reached, minutes apart while it refuses, spread.
    """

    def delays(self, why, spread=0.5, attempts=40):
        peer = Peer("ssh://nowhere", "a.log", Clock(), None)
        peer.why = why
        policy = retryDelay(peer, random=lambda: spread)
        return [policy(attempt) for attempt in range(attempts)]

    def test_unreachable(self):
        """
        While the peer cannot be reached, the first retry comes within a
        second and none is more than 10 seconds after the last, however
        long the outage: a peer back from an hour away is reached within
        seconds.
        """
        delays = self.delays("connection refused (nothing listens there)")
        self.assertLessEqual(delays[0], 1.0)
        self.assertEqual(delays, sorted(delays))
        # Within 10 s of coming back, whatever the spread and the start-up.
        self.assertLessEqual(max(self.delays("timed out", spread=0.999)), 6.25)
        # An hour of outage is hundreds of attempts, not a handful.
        self.assertGreater(3600 / max(delays), 400)

    def test_refused(self):
        """
        While the peer refuses this node, the retries grow to minutes.
        """
        delays = self.delays("no key was accepted (tried: SHA256:x)")
        self.assertEqual(max(delays), 300.0)
        self.assertLessEqual(delays[0], 1.0)

    def test_startUp(self):
        """
        For its first seconds, until it is first reached, an unreachable
        peer is tried every quarter second or so, not later and later: a
        peer started with this daemon is reached as soon as it listens.
        """
        clock = Clock()
        peer = Peer("ssh://nowhere", "a.log", clock, None)
        peer.startedAt = clock.seconds()
        peer.why = "connection refused (nothing listens there)"
        policy = retryDelay(peer, random=lambda: 0.999)
        delays = []
        while clock.seconds() < 9.9:
            delays.append(policy(len(delays)))
            clock.advance(delays[-1])
        self.assertGreater(len(delays), 30)
        self.assertLessEqual(max(delays), 0.32)
        # Then it backs off as before.
        clock.advance(0.2)
        self.assertGreater(policy(len(delays)), 5)
        # A peer reached once is backed off from at once.
        peer = Peer("ssh://nowhere", "a.log", Clock(), None)
        peer.startedAt, peer.node, peer.why = 0.0, b"n", "timed out"
        self.assertEqual(retryDelay(peer, random=lambda: 0.5)(10), 5.0)

    def test_spread(self):
        """
        Each delay is spread by a quarter either way, so that daemons
        restarted together retry apart.
        """
        low = self.delays("timed out", spread=0.0)
        high = self.delays("timed out", spread=0.999)
        for a, b in zip(low, high):
            self.assertAlmostEqual(b / a, 1.25 / 0.75, places=2)


class PiecesTests(SynchronousTestCase):
    """
    The status, larger than one AMP value, crosses in pieces.
    """

    def test_large(self):
        document = {"peers": [{"peer": "x" * 1000, "n": i} for i in range(200)]}
        control = _FakeControl(document)
        client, serverProtocol, pump = connectedServerAndClient(
            lambda: server.ControlProtocol(control), amp.AMP
        )
        d = client.callRemote(Status)
        pump.flush()
        answer = self.successResultOf(d)
        self.assertGreater(len(answer["status"]), 65535)
        self.assertEqual(json.loads(answer["status"]), document)


class _FakeControl:
    def __init__(self, document):
        self.document = document

    def status(self):
        return self.document


class EndpointTests(SynchronousTestCase):
    """
    The control endpoint's descriptions, and the claim on a UNIX socket.
    """

    def test_unixPath(self):
        self.assertEqual(unixPath("unix:/a/b"), ("/a/b", 0o600))
        self.assertEqual(unixPath("unix:/a\\:b:mode=660"), ("/a:b", 0o660))
        self.assertEqual(unixPath("unix:address=/a"), ("/a", 0o600))
        self.assertIsNone(unixPath("tcp:0"))
        self.assertRaises(ValueError, unixPath, "unix:/a:backlog=5")

    def test_clientFromServer(self):
        """
        The client reaches a daemon by the description the daemon was given.
        """
        from twisted.internet import reactor

        endpoint = clientEndpoint(reactor, "tcp:7000:interface=127.0.0.2")
        self.assertEqual((endpoint._host, endpoint._port), ("127.0.0.2", 7000))
        endpoint = clientEndpoint(reactor, "tcp:7000")
        self.assertEqual((endpoint._host, endpoint._port), ("127.0.0.1", 7000))

    def test_claim(self):
        """
        The socket's directory is made (mode 0700); a socket nothing listens
        on is removed; one a daemon listens on stops this one, naming
        C{--control}.
        """
        directory = os.path.join(shortDirectory(self), "gossip")
        path = os.path.join(directory, "control.sock")
        _claim(path)
        self.assertEqual(stat.S_IMODE(os.stat(directory).st_mode), 0o700)
        listening = socket.socket(socket.AF_UNIX)
        self.addCleanup(listening.close)
        listening.bind(path)
        listening.listen(1)
        error = self.assertRaises(SystemExit, _claim, path)
        self.assertIn("--control", str(error.code))
        self.assertNotIn("\n", str(error.code))
        listening.close()
        _claim(path)
        self.assertFalse(os.path.exists(path))


def _grant(key=None, **restrictions):
    return Grant((key or newKey()).public(), "test", 1, **restrictions)


class _Store:
    def __init__(self, allowed):
        self.allowed = allowed

    def grantFor(self, blob, address):
        return next((grant for grant in self.allowed if grant.key.blob() == blob), None)


class RevokeTests(SynchronousTestCase):
    """
    L{Sessions.revoke} ends the incoming sessions whose keys no longer may,
    and keeps the others.
    """

    def test_revoke(self):
        sessions = Sessions(Clock(), {})
        kept, dropped = _grant(), _grant()
        protocols = [sessions.protocolFor(grant, "peer") for grant in (kept, dropped)]
        ended = self.watch(protocols)
        self.assertEqual(sessions.revoke(_Store([kept])), (1, 1))
        self.assertEqual(ended, [protocols[1]])
        self.assertIn(dropped.fingerprint, protocols[1].failure)
        self.assertIn("no longer may", protocols[1].failure)
        self.assertIsNone(protocols[0].failure)

    def test_revokeNode(self):
        """
        A key whose reloaded line no longer lets it speak for the node its
        session's peer said it is (C{gossip-nodes}) has that session ended.
        """
        sessions = Sessions(Clock(), {})
        key = newKey()
        protocols = [sessions.protocolFor(_grant(key), "peer") for _ in range(2)]
        protocols[0].peerNode, protocols[1].peerNode = b"laptop", b"phone"
        ended = self.watch(protocols)
        self.assertEqual(sessions.revoke(_Store([_grant(key, nodes=frozenset([b"laptop"]))])), (1, 1))
        self.assertEqual(ended, [protocols[1]])

    def watch(self, protocols):
        """
        Give each of C{protocols} a transport that records its being closed.

        @return: the list of those closed, in order.
        """
        ended = []
        for protocol in protocols:
            protocol.transport = type("T", (), {"loseConnection": lambda self, p=protocol: ended.append(p)})()
        return ended


SAMPLE = {
    "version": 1,
    "pid": 42,
    "now": 1000.0,
    "started": 400.0,
    "control": "unix:/run/c.sock",
    "logs": [
        {
            "path": "/home/a/notes.log", "name": "notes.log", "node": "KxNtKjY9ql_L8JPTQDft",
            "adds": 1234, "bytes": 56789,
            "identities": 3, "corrupt": 0, "lastAdd": 995.0, "watcher": "inotify", "sessions": 1,
        }
    ],
    "peers": [
        {
            "direction": "outgoing", "peer": "ssh://laptop:7422", "log": "notes.log",
            "state": "caught up", "why": None, "failures": 0, "retry": None, "retryIn": None,
            "peerLacks": 0, "weLack": 2,
            "session": {"received": 5, "receivedBytes": 500, "sent": 1, "sentBytes": 100},
            "total": {"received": 9, "receivedBytes": 900, "sent": 1, "sentBytes": 100},
            "connectedSince": 700.0, "lastContact": 998.0,
        },
        {
            "direction": "outgoing", "peer": "ssh://server", "log": "notes.log",
            "state": "waiting", "why": "connection refused (nothing listens there)",
            "failures": 4, "retry": 4, "retryIn": 7.6, "peerLacks": None, "weLack": None,
            "session": None,
            "total": {"received": 0, "receivedBytes": 0, "sent": 0, "sentBytes": 0},
            "connectedSince": None, "lastContact": None,
        },
        {
            "direction": "incoming", "peer": "alice@127.0.0.1:4000 (key SHA256:abc alice)",
            "key": {"comment": "alice", "fingerprint": "SHA256:abc"}, "log": "notes.log",
            "state": "syncing", "why": None, "peerLacks": 3, "weLack": 0,
            "session": {"received": 0, "receivedBytes": 0, "sent": 3, "sentBytes": 300},
            "total": {"received": 0, "receivedBytes": 0, "sent": 3, "sentBytes": 300},
            "connectedSince": 990.0, "lastContact": 999.0,
        },
    ],
    "listeners": [
        {
            "endpoint": "tcp:7422:interface=127.0.0.1", "address": "127.0.0.1:7422",
            "kind": "SSH", "keys": "/home/a/.ssh/authorized_keys", "keyCount": 2,
        }
    ],
}  # fmt: skip


class FormatTests(SynchronousTestCase):
    """
    C{gossip status}'s text: short, aligned lines.
    """

    def test_format(self):
        text = formatStatus(SAMPLE)
        lines = text.splitlines()
        self.assertEqual(
            lines[0], "gossip daemon, pid 42, up 10 min, control unix:/run/c.sock"
        )
        self.assertIn("waiting 8 s before retry 4", text)
        self.assertIn("last failure (4 attempts in a row): connection refused", text)
        self.assertIn("alice SHA256:abc", text)
        self.assertRegex(text, r"/home/a/notes\.log +KxNtKjY9ql_L8JPTQDft +1234 ")
        self.assertIn("/home/a/.ssh/authorized_keys (2 keys)", text)
        # The peers' columns line up: each row's state starts where the
        # header's STATE does.
        header = next(line for line in lines if "STATE" in line)
        column = header.index("STATE")
        for line in lines:
            if line.startswith(("  out", "  in ")):
                self.assertEqual(line[column - 2 : column], "  ", line)
                self.assertNotEqual(line[column], " ", line)


def newKey():
    return keys.Key(ed25519.Ed25519PrivateKey.generate())


def writeKey(path, key, comment="test"):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.toString("openssh"))
    return path


def publicLine(key, comment):
    return key.public().toString("openssh").decode() + f" {comment}\n"


def fingerprint(key):
    return "SHA256:" + key.fingerprint(keys.FingerprintFormats.SHA256_BASE64).rstrip("=")


class DaemonMixin:
    """
    Real daemons in a test's own directories, with control sockets in a
    short one.
    """

    def setUp(self):
        self.dir = os.path.abspath(self.mktemp())
        os.makedirs(self.dir)
        self.addCleanup(killMentioning, self.dir)
        self.sockets = shortDirectory(self)

    def log(self, name, *pairs):
        path = os.path.join(self.dir, name, "a.log")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        say(path, *(pairs or ("m=" + name,)))
        return path

    def daemon(self, name, *args):
        control = f"unix:{os.path.join(self.sockets, name)}.sock"
        daemon = Daemon(self, "--control", control, *args)
        daemon.control = control
        daemon.waitForLog("control port listening")
        return daemon

    def status(self, daemon):
        status, out, err = run("status", "--json", "--control", daemon.control)
        self.assertEqual(status, 0, err)
        return json.loads(out)

    def peer(self, daemon, name):
        [peer] = [p for p in self.status(daemon)["peers"] if p["peer"] == name]
        return peer

    def until(self, daemon, name, state):
        """
        Wait until the peer C{name} of C{daemon} is in C{state}.

        @return: the peer's status then.
        """
        seen = []

        def inState():
            seen[:] = [self.peer(daemon, name)]
            return seen[0]["state"] == state

        waitFor(inState, message=f"{name} {state}")
        return seen[0]


class StatusTests(DaemonMixin, TestCase):
    """
    C{gossip status} against a real daemon with a connected peer, a refused
    peer and a waiting peer.
    """

    def test_status(self):
        a = self.log("one")
        b = self.log("two")
        other = os.path.join(self.dir, "three", "b.log")
        os.makedirs(os.path.dirname(other))
        say(other, "m=other")
        connected = " ".join(serveCommand(b))
        refused = " ".join(serveCommand(other))
        waiting = f"ssh://127.0.0.1:{freePort()}"
        daemon = self.daemon(
            "one",
            "--log", a,
            "--peer-command", connected,
            "--peer-command", refused,
            "--peer", waiting,
            "--known-hosts", os.path.join(self.dir, "known_hosts"),
            "--identity", writeKey(os.path.join(self.dir, "id"), newKey()),
        )  # fmt: skip
        self.until(daemon, connected, "caught up")
        refusedPeer = self.until(daemon, refused, "refused")
        waitingPeer = self.until(daemon, waiting, "waiting")
        status = self.status(daemon)
        [log] = status["logs"]
        self.assertEqual((log["path"], log["adds"], log["identities"]), (a, 2, 2))
        self.assertEqual(log["node"].encode(), Log(a).state().identity)
        self.assertEqual(log["corrupt"], 0)
        self.assertIn(log["watcher"], ("inotify", "polling"))
        self.assertEqual(log["bytes"], os.path.getsize(a))
        peer = self.peer(daemon, connected)
        self.assertEqual((peer["peerLacks"], peer["weLack"]), (0, 0))
        self.assertEqual(peer["node"].encode(), Log(b).state().identity)
        self.assertIsNone(waitingPeer["node"])
        self.assertEqual(peer["session"]["received"], 1)
        self.assertEqual(peer["session"]["sent"], 1)
        self.assertGreater(peer["session"]["sentBytes"], 0)
        self.assertIsNotNone(peer["connectedSince"])
        self.assertIsNotNone(peer["lastContact"])
        self.assertIn("log names differ", refusedPeer["why"])
        self.assertGreaterEqual(refusedPeer["retry"], 1)
        self.assertEqual(waitingPeer["why"], "connection refused (nothing listens there)")
        # A retry may be due at the instant the status is taken (0); none
        # is further off than the longest wait for an unreachable peer.
        self.assertGreaterEqual(waitingPeer["retryIn"], 0)
        self.assertLessEqual(waitingPeer["retryIn"], UNREACHABLE_MAX * 1.25)

        status, out, err = run("status", "--control", daemon.control)
        self.assertEqual((status, err), (0, ""))
        text = out.decode()
        self.assertRegex(text, r"out +" + re.escape(connected[:20]) + r".* caught up ")
        # Unless a retry is under way as the status is taken.
        self.assertRegex(
            text,
            r"out +ssh://127\.0\.0\.1:\d+ +a\.log +(waiting \d+ s before retry \d|connecting)",
        )
        self.assertRegex(text, r"\.log +a\.log +(refused, \d+ s before retry \d|connecting)")
        self.assertIn("    last failure", text)
        self.assertIn("connection refused (nothing listens there)", text)
        self.assertIn("log names differ", text)
        self.assertNotIn("Traceback", text)

    def test_noDaemon(self):
        """
        No daemon: one line naming the endpoint, and exit status 1.
        """
        control = f"unix:{os.path.join(self.sockets, 'none.sock')}"
        status, out, err = run("status", "--control", control)
        self.assertEqual((status, out, err), (1, b"", f"gossip: no daemon at {control}\n"))

    def test_connectAndStop(self):
        """
        C{gossip connect} retries a waiting peer at once; C{gossip stop}
        stops the daemon, which removes its socket.
        """
        waiting = f"ssh://127.0.0.1:{freePort()}"
        daemon = self.daemon("one", "--log", self.log("one"), "--peer", waiting)
        retried = f"retrying {waiting} now\n".encode()
        # Its retries come every quarter second for its first 10 s, then
        # further apart: one may be under way as the command asks, which it
        # says.  Ask when the next is a second or more away, until one is
        # waiting.
        for attempt in range(100):
            peer = self.until(daemon, waiting, "waiting")
            if peer["retryIn"] < 1.0:
                time.sleep(0.1)
                continue
            before = peer["failures"]
            status, out, err = run("connect", "--control", daemon.control, "127.0.0.1")
            self.assertIn(
                (status, out, err),
                [(0, retried, ""), (0, f"{waiting} was not waiting to retry\n".encode(), "")],
            )
            if out == retried:
                break
        self.assertEqual(out, retried)
        waitFor(lambda: self.peer(daemon, waiting)["failures"] > before)
        status, out, err = run("connect", "--control", daemon.control, "nobody")
        self.assertEqual((status, err), (1, "gossip: no peer 'nobody'; see gossip status\n"))
        status, out, err = run("stop", "--control", daemon.control)
        self.assertEqual(status, 0, err)
        self.assertTrue(out.startswith(b"stopping the daemon (pid "), out)
        daemon.process.wait(30)
        self.assertEqual(daemon.process.returncode, 0)
        self.assertFalse(os.path.exists(unixPath(daemon.control)[0]))

    def test_defaultSocket(self):
        """
        By default the daemon listens on control.sock in
        C{$XDG_CONFIG_HOME/gossip} (mode 0700), mode 0600, where C{gossip
        status} finds it; a second daemon of the same user refuses to start,
        in one line naming C{--control}.
        """
        env = dict(ENV, XDG_CONFIG_HOME=self.sockets)

        def daemon(name):
            started = Daemon(self, "--log", self.log(name), "--control", "none", env=env)
            # Restarted as it is, but for the control port: the default.
            started.stop()
            started.process = subprocess.Popen(
                daemonCommand(started.logfile, "--log", self.log(name), "--listen", "none"),
                stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
            )  # fmt: skip
            return started

        first = daemon("one")
        first.waitForLog("control port listening")
        path = os.path.join(self.sockets, "gossip", "control.sock")
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
        self.assertEqual(stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode), 0o700)
        second = daemon("two")
        second.process.wait(30)
        self.assertNotEqual(second.process.returncode, 0)
        refusal = [line for line in second.log().splitlines() if "another daemon" in line]
        self.assertEqual(len(refusal), 1, second.log())
        self.assertIn("--control", refusal[0])
        self.assertNotIn("Traceback", second.log())
        done = subprocess.run(
            [sys.executable, "-m", "gossip", "status", "--json"],
            env=env, capture_output=True, timeout=30,
        )  # fmt: skip
        self.assertEqual(done.returncode, 0, done.stderr)
        self.assertEqual(json.loads(done.stdout)["pid"], first.process.pid)


class SSHMixin(DaemonMixin):
    """
    A daemon that serves C{a.log} over SSH on a loopback port, with a host
    key and an C{authorized_keys} of its own.
    """

    def setUp(self):
        DaemonMixin.setUp(self)
        self.hostKey = newKey()
        self.hostKeyPath = writeKey(os.path.join(self.dir, "host_key"), self.hostKey)
        self.authorized = os.path.join(self.dir, "authorized_keys")
        self.knownHosts = os.path.join(self.dir, "known_hosts")

    def authorize(self, *keyed):
        with open(self.authorized, "w") as f:
            f.writelines(publicLine(key, comment) for key, comment in keyed)

    def serve(self, name="server"):
        daemon = self.daemon(
            name,
            "--log", self.log(name),
            "--listen", "tcp:0:interface=127.0.0.1",
            "--host-key", self.hostKeyPath,
            "--authorized-keys", self.authorized,
        )  # fmt: skip
        self.port = daemon.listeningPort("SSH")
        return daemon

    def trust(self):
        with open(self.knownHosts, "w") as f:
            f.write(f"[127.0.0.1]:{self.port} " + publicLine(self.hostKey, ""))

    def identity(self, key, name):
        return writeKey(os.path.join(self.dir, name + ".key"), key)


class ReasonsLoggedTests(SSHMixin, TestCase):
    """
    Each kind of failure of an outgoing SSH peer is logged once, in one line
    that names the peer as given and says why in words, however many times
    it is retried.
    """

    def test_once(self):
        mine, stranger = newKey(), newKey()
        self.authorize((mine, "mine"))
        self.serve()
        url = f"ssh://127.0.0.1:{self.port}"
        nowhere = f"ssh://127.0.0.1:{freePort()}"
        known = os.path.join(self.dir, "known_hosts")
        client = self.daemon(
            "client",
            "--log", self.log("client"),
            "--peer", url,
            "--peer", nowhere,
            "--identity", self.identity(mine, "mine"),
            "--known-hosts", known,
        )  # fmt: skip

        def failedTimes(name, times):
            # Retry at once rather than wait out the backoff.
            run("connect", "--control", client.control, name)
            return self.peer(client, name)["failures"] >= times

        waitFor(lambda: failedTimes(url, 3), message="three failures")
        waitFor(lambda: failedTimes(nowhere, 3), message="three failures")
        log = client.log()
        unknown = [line for line in log.splitlines() if "unknown host key" in line]
        self.assertEqual(len(unknown), 1, log)
        self.assertIn(f"cannot sync a.log with {url}: unknown host key {fingerprint(self.hostKey)}", unknown[0])
        self.assertIn("--accept-new-host-keys", unknown[0])
        self.assertIn(f"echo '[127.0.0.1]:{self.port} ssh-ed25519 ", unknown[0])
        refused = [line for line in log.splitlines() if nowhere in line]
        self.assertEqual(len(refused), 1, log)
        self.assertIn("connection refused (nothing listens there)", refused[0])
        self.assertNotIn("Traceback", log)
        self.assertNotIn("Scheduling retry", log)
        self.assertEqual(self.peer(client, url)["state"], "refused")

        # Once the host is known, the key is refused: that is news, once.
        self.trust()
        client.stop()
        client = self.daemon(
            "client2",
            "--log", self.log("client2"),
            "--peer", url,
            "--identity", self.identity(stranger, "stranger"),
            "--known-hosts", known,
        )  # fmt: skip
        waitFor(lambda: failedTimes(url, 3), message="three failures")
        log = client.log()
        keyRefused = [line for line in log.splitlines() if "no key was accepted" in line]
        self.assertEqual(len(keyRefused), 1, log)
        self.assertIn(fingerprint(stranger), keyRefused[0])
        self.assertIn(url, keyRefused[0])


class ReloadTests(SSHMixin, TestCase):
    """
    C{gossip reload} reads C{authorized_keys} again: a key removed ends its
    session, a key added may connect, and the session of a key still listed
    goes on.
    """

    def sync(self, key, name, *args):
        return [
            sys.executable, "-m", "gossip", "sync", *args,
            "--identity", self.identity(key, name),
            "--known-hosts", self.knownHosts,
            self.log(name), f"ssh://127.0.0.1:{self.port}",
        ]  # fmt: skip

    def incoming(self, daemon):
        return {
            peer["key"]["comment"]: peer
            for peer in self.status(daemon)["peers"]
            if peer["direction"] == "incoming" and peer["key"] is not None
        }

    def test_reload(self):
        kept, removed, added = newKey(), newKey(), newKey()
        self.authorize((kept, "kept"), (removed, "removed"))
        server = self.serve()
        self.trust()
        clients = {}
        for key, name in [(kept, "kept"), (removed, "removed")]:
            clients[name] = subprocess.Popen(
                self.sync(key, name), stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, env=ENV
            )
            self.addCleanup(clients[name].kill)
        waitFor(lambda: {
            name: peer["state"] for name, peer in self.incoming(server).items()
        } == {"kept": "caught up", "removed": "caught up"}, message="both clients caught up")
        since = self.incoming(server)["kept"]["connectedSince"]
        # Not allowed yet.
        status, out, err = run(*self.sync(added, "added", "--once")[3:])
        self.assertEqual(status, 1, err)
        self.assertIn("no key was accepted", err)

        self.authorize((kept, "kept"), (added, "added"))
        status, out, err = run("reload", "--control", server.control)
        self.assertEqual(status, 0, err)
        self.assertEqual(
            out.decode(),
            f"{self.authorized}: 2 keys may connect; 1 sessions ended, 1 kept\n",
        )
        clients["removed"].wait(30)
        self.assertNotEqual(clients["removed"].returncode, 0)
        waitFor(lambda: "removed" not in self.incoming(server), message="the session ending")
        self.assertIsNone(clients["kept"].poll())
        self.assertEqual(self.incoming(server)["kept"]["connectedSince"], since)
        status, out, err = run(*self.sync(added, "added", "--once")[3:])
        self.assertEqual(status, 0, err)
        self.assertIn("no longer may", server.log())
        self.assertEqual(self.status(server)["listeners"][0]["keyCount"], 2)

    def test_hangUp(self):
        """
        SIGHUP reloads too.
        """
        self.authorize()
        server = self.serve()
        self.authorize((newKey(), "new"))
        server.process.send_signal(signal.SIGHUP)
        server.waitForLog(r"reloaded: .*1 keys may connect")


class DiesMidTransferTests(DaemonMixin, TestCase):
    """
    A peer killed while adds are sent to it: one line saying what it
    acknowledged, and no traceback.
    """

    def test_oneLine(self):
        big = self.log("big")
        log = Log(big)
        for i in range(2000):
            log.say([(b"m", b"%d " % i + b"x" * 10000)])
        small = self.log("small")
        daemon = self.daemon("one", "--log", big, "--peer-command", " ".join(serveCommand(small)))
        waitFor(lambda: os.path.getsize(small) > 2_000_000, message="adds arriving")
        for pid in processesServing(small):
            os.kill(pid, signal.SIGKILL)
        daemon.waitForLog(r"sync with .* failed: .*\((\d+) adds? received, (\d+) sent\)")
        log = daemon.log()
        self.assertNotIn("Traceback", log)
        self.assertNotIn("critical", log)
        sent = int(re.search(r"failed: .*, (\d+) sent\)", log).group(1))
        self.assertGreater(sent, 0)


class WatchTests(DaemonMixin, TestCase):
    """
    C{gossip status --watch} shows the status again every second, until
    Ctrl-C, which ends it with status 130 and nothing said.
    """

    def test_interrupted(self):
        daemon = self.daemon("one", "--log", self.log("one"))
        shown = os.path.join(self.dir, "shown")
        with open(shown, "wb") as out:
            watch = subprocess.Popen(
                [sys.executable, "-m", "gossip", "status", "--watch", "--control", daemon.control],
                stdout=out, stderr=subprocess.PIPE, env=ENV,
                # As from a shell, whatever this test's own handling of SIGINT.
                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
            )  # fmt: skip
        self.addCleanup(watch.kill)

        def times():
            with open(shown, "rb") as f:
                return f.read().count(b"gossip daemon, pid ")

        waitFor(lambda: times() >= 2, message="the status shown twice")
        watch.send_signal(signal.SIGINT)
        out, err = watch.communicate(timeout=30)
        self.assertEqual((watch.returncode, err), (130, b""))


class BothEndsTests(DaemonMixin, TestCase):
    """
    Two daemons over SSH, each listing the other as a peer: one session
    links them, and whichever end restarts restores it.
    """

    def setUp(self):
        DaemonMixin.setUp(self)
        self.nodes = {}
        for name in ("one", "two"):
            key, hostKey = newKey(), newKey()
            self.nodes[name] = {
                "port": freePort(),
                "key": key,
                "hostKey": hostKey,
                "log": self.log(name),
            }

    def start(self, name):
        node = self.nodes[name]
        [other] = [n for n in self.nodes.values() if n is not node]
        files = os.path.join(self.dir, name)
        with open(os.path.join(files, "authorized_keys"), "w") as f:
            f.write(publicLine(other["key"], "other"))
        with open(os.path.join(files, "known_hosts"), "w") as f:
            f.write(f"[127.0.0.1]:{other['port']} " + publicLine(other["hostKey"], ""))
        node["daemon"] = self.daemon(
            name + str(len(self.tried)),
            "--log", node["log"],
            "--listen", f"tcp:{node['port']}:interface=127.0.0.1",
            "--host-key", writeKey(os.path.join(files, "host_key"), node["hostKey"]),
            "--authorized-keys", os.path.join(files, "authorized_keys"),
            "--identity", writeKey(os.path.join(files, "id"), node["key"]),
            "--known-hosts", os.path.join(files, "known_hosts"),
            "--peer", f"ssh://127.0.0.1:{other['port']}",
        )  # fmt: skip
        self.tried.append(name)
        return node["daemon"]

    tried = ()

    def linked(self):
        """
        Whether each daemon has one session with the other, and the two
        agree on which: one dials it (its peer syncing), the other's peer
        is C{linked}.
        """
        states = []
        for node in self.nodes.values():
            status = self.status(node["daemon"])
            [peer] = [p for p in status["peers"] if p["direction"] == "outgoing"]
            incoming = [p for p in status["peers"] if p["direction"] == "incoming"]
            if peer["state"] == "linked":
                if len(incoming) != 1 or incoming[0]["state"] not in ("syncing", "caught up"):
                    return False
            elif peer["state"] in ("syncing", "caught up"):
                if incoming:
                    return False
            else:
                return False
            states.append(peer["state"])
        return sorted(states) == ["caught up", "linked"] or sorted(states) == ["linked", "syncing"]

    def converged(self):
        keys = [contents(node["log"]).keySet for node in self.nodes.values()]
        return keys[0] == keys[1] and len(keys[0]) >= 2

    def test_oneSessionEitherEndRestores(self):
        self.tried = []
        self.start("one")
        self.start("two")
        waitFor(self.linked, message="one session between the daemons")
        say(self.nodes["one"]["log"], "m=from one")
        say(self.nodes["two"]["log"], "m=from two")
        waitFor(self.converged, message="the logs converging")

        # Restart the end that did not dial: it dials at start, and its
        # adds reach the other.
        [name] = [
            name
            for name, node in self.nodes.items()
            if self.peer(node["daemon"], f"ssh://127.0.0.1:{self.otherPort(name)}")["state"]
            == "linked"
        ]
        self.nodes[name]["daemon"].process.kill()
        self.nodes[name]["daemon"].process.wait()
        restarted = self.start(name)
        say(self.nodes[name]["log"], "m=after the restart")
        waitFor(self.converged, message="the logs converging again")
        waitFor(self.linked, message="one session between the daemons again")
        self.assertNotIn("failed", restarted.log())
        self.assertNotIn("Traceback", restarted.log())
        for node in self.nodes.values():
            held = contents(node["log"])
            self.assertEqual((held.corrupt, len(held.keys)), (0, len(held.keySet)))

    def otherPort(self, name):
        [other] = [node for n, node in self.nodes.items() if n != name]
        return other["port"]
