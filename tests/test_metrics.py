"""
Tests for L{gossip.control.metrics}: the collector against status
documents, then a real daemon scraped over HTTP.
"""

import os
import re
import socket
import subprocess
import sys
import urllib.error
import urllib.request

from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from twisted.trial.unittest import SynchronousTestCase, TestCase

from gossip.control.metrics import MetricsService, StatusCollector, registry
from tests.helpers import (
    DEADLINE,
    ENV,
    Daemon,
    killMentioning,
    say,
    serveCommand,
    waitFor,
)
from tests.test_control import SSHMixin, fingerprint, newKey


class _Control:
    """
    A control whose status is a given document.
    """

    def __init__(self, document):
        self.document = document

    def status(self):
        return self.document


def _moved(received=0, receivedBytes=0, sent=0, sentBytes=0, dropped=0):
    return {
        "received": received,
        "receivedBytes": receivedBytes,
        "sent": sent,
        "sentBytes": sentBytes,
        "dropped": dropped,
    }


def _incoming(fingerprint, state, moved, lag):
    return {
        "direction": "incoming",
        "peer": "127.0.0.1:40000",
        "key": {"comment": "alice", "fingerprint": fingerprint},
        "log": "a.log",
        "state": state,
        "why": None,
        "peerLacks": lag[0],
        "weLack": lag[1],
        "session": moved,
        "total": moved,
        "lastContact": 1000.0,
    }


STATUS = {
    "logs": [
        {
            "path": "/home/me/a.log",
            "name": "a.log",
            "adds": 12,
            "bytes": 800,
            "identities": 3,
            "corrupt": 1,
            "lastAdd": 999.0,
            "watcher": "inotify",
            "sessions": 2,
        }
    ],
    "peers": [
        {
            "direction": "outgoing",
            "peer": "ssh://laptop",
            "log": "a.log",
            "state": "waiting",
            "why": "connection refused (nothing listens there)",
            "failures": 3,
            "peerLacks": None,
            "weLack": None,
            "session": None,
            "total": _moved(received=4, receivedBytes=400, sent=2, sentBytes=200, dropped=1),
            "lastContact": None,
        },
        _incoming("SHA256:abc", "caught up", _moved(received=1, receivedBytes=10), (0, 2)),
        _incoming("SHA256:abc", "syncing", _moved(received=2, receivedBytes=20), (5, 1)),
        {
            "direction": "incoming",
            "peer": "CN=node-b (tls 127.0.0.1:5555)",
            "key": None,
            "state": "connecting",
            "why": None,
            "peerLacks": None,
            "weLack": None,
            "session": _moved(),
            "total": _moved(),
            "lastContact": None,
        },
    ],
}


def scrape(collector):
    """
    What C{collector} serves, parsed: a dictionary from each sample's name
    and labels (a frozenset of pairs) to its value.
    """
    samples = {}
    for family in text_string_to_metric_families(generate_latest(collector).decode("utf-8")):
        for sample in family.samples:
            labels = frozenset(sample.labels.items())
            if (sample.name, labels) in samples:
                raise AssertionError(f"{sample.name} {dict(labels)} twice")
            samples[sample.name, labels] = sample.value
    return samples


def labels(**pairs):
    return frozenset(pairs.items())


class CollectorTests(SynchronousTestCase):
    """
    L{StatusCollector} says in Prometheus' terms what the status says.
    """

    def setUp(self):
        self.samples = scrape(StatusCollector(_Control(STATUS)))

    def test_logs(self):
        """
        Each log's size, identities, corrupt lines, sessions and last add.
        """
        log = labels(log="a.log", path="/home/me/a.log")
        self.assertEqual(
            [
                self.samples[name, log]
                for name in [
                    "gossip_log_adds",
                    "gossip_log_bytes",
                    "gossip_log_identities",
                    "gossip_log_corrupt_lines",
                    "gossip_log_sessions",
                    "gossip_log_last_add_timestamp_seconds",
                ]
            ],
            [12, 800, 3, 1, 2, 999.0],
        )

    def test_outgoing(self):
        """
        A waiting peer: its totals as counters, its failures, its state,
        and no lag.
        """
        peer = labels(log="a.log", direction="outgoing", peer="ssh://laptop")
        self.assertEqual(
            [
                self.samples[f"gossip_peer_{name}_total", peer]
                for name in [
                    "received_adds",
                    "received_bytes",
                    "sent_adds",
                    "sent_bytes",
                    "dropped_corrupt_adds",
                ]
            ],
            [4, 400, 2, 200, 1],
        )
        self.assertEqual(self.samples["gossip_peer_up", peer], 0)
        self.assertEqual(self.samples["gossip_peer_failures", peer], 3)
        waiting = peer | {("gossip_peer_state", "waiting")}
        self.assertEqual(self.samples["gossip_peer_state", waiting], 1)
        connecting = peer | {("gossip_peer_state", "connecting")}
        self.assertEqual(self.samples["gossip_peer_state", connecting], 0)
        self.assertNotIn(("gossip_peer_behind_adds", peer), self.samples)
        self.assertNotIn(("gossip_peer_last_contact_timestamp_seconds", peer), self.samples)

    def test_incomingMerged(self):
        """
        Two sessions of one key on one log are one series, named by the
        key's fingerprint: counts summed, the greater lag each way.
        """
        peer = labels(log="a.log", direction="incoming", peer="SHA256:abc")
        self.assertEqual(self.samples["gossip_peer_received_adds_total", peer], 3)
        self.assertEqual(self.samples["gossip_peer_received_bytes_total", peer], 30)
        self.assertEqual(self.samples["gossip_peer_behind_adds", peer], 5)
        self.assertEqual(self.samples["gossip_peer_ahead_adds", peer], 2)
        self.assertEqual(self.samples["gossip_peer_up", peer], 1)
        self.assertNotIn(("gossip_peer_failures", peer), self.samples)

    def test_incomingConnecting(self):
        """
        A TLS peer, connecting (no log yet): named without its port, which
        is new at each connection.
        """
        peer = labels(log="", direction="incoming", peer="CN=node-b (tls 127.0.0.1)")
        self.assertEqual(self.samples["gossip_peer_up", peer], 0)
        connecting = peer | {("gossip_peer_state", "connecting")}
        self.assertEqual(self.samples["gossip_peer_state", connecting], 1)

    def test_registry(self):
        """
        The registry served holds the status and the process' own figures.
        """
        samples = scrape(registry(_Control(STATUS)))
        names = {name for name, labels in samples}
        self.assertIn("gossip_log_adds", names)
        self.assertIn("process_resident_memory_bytes", names)


METRICS = r"metrics served on 127\.0\.0\.1 port (\d+)"


def metricsURL(daemon):
    """
    Where C{daemon} serves its metrics, once it does.
    """
    daemon.waitForLog(METRICS)
    port = int(re.search(METRICS, daemon.log()).group(1))
    return f"http://127.0.0.1:{port}/metrics"


def scrapeURL(url):
    """
    Scrape C{url} over HTTP, as Prometheus would.

    @return: as L{scrape} does.
    """
    with urllib.request.urlopen(url, timeout=DEADLINE) as response:
        if not response.headers["Content-Type"].startswith("text/plain"):
            raise AssertionError(f"{url} served {response.headers['Content-Type']}")
        text = response.read().decode("utf-8")
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[sample.name, frozenset(sample.labels.items())] = sample.value
    return samples


def scrapeUntil(url, name, labels, value):
    """
    Scrape C{url} until its sample C{name} with C{labels} is C{value}.

    @return: the samples then, as L{scrape} gives them.
    """
    seen = {}

    def reached():
        seen.clear()
        seen.update(scrapeURL(url))
        return seen.get((name, labels)) == value

    waitFor(reached, message=f"{name} {dict(labels)} {value}")
    return seen


def peerSamples(samples, labels):
    """
    What C{samples} say of the peer of C{labels}: moved each way, lag, and
    whether it is up.
    """
    return [
        samples[f"gossip_peer_{name}", labels]
        for name in [
            "received_adds_total",
            "received_bytes_total",
            "sent_adds_total",
            "sent_bytes_total",
            "dropped_corrupt_adds_total",
            "behind_adds",
            "ahead_adds",
            "up",
        ]
    ]


class DaemonTests(TestCase):
    """
    A real daemon with C{--metrics}, scraped over HTTP.
    """

    def setUp(self):
        self.dir = os.path.abspath(self.mktemp())
        os.makedirs(self.dir)
        self.addCleanup(killMentioning, self.dir)

    def log(self, name, pair):
        path = os.path.join(self.dir, name, "a.log")
        os.makedirs(os.path.dirname(path))
        say(path, pair)
        return path

    def test_synced(self):
        """
        With a peer synced, the metrics say what moved each way, the log's
        size and the peer's state, as Prometheus' text.
        """
        a = self.log("one", "m=one")
        b = self.log("two", "m=two")
        sizes = os.path.getsize(a), os.path.getsize(b)
        peer = " ".join(serveCommand(b))
        daemon = Daemon(
            self, "--log", a, "--peer-command", peer, "--metrics", "tcp:0:interface=127.0.0.1"
        )
        url = metricsURL(daemon)
        labels = frozenset({"log": "a.log", "direction": "outgoing", "peer": peer}.items())
        state = labels | {("gossip_peer_state", "caught up")}
        seen = scrapeUntil(url, "gossip_peer_state", state, 1)
        grown = os.path.getsize(a) - sizes[0], os.path.getsize(b) - sizes[1]
        self.assertEqual(peerSamples(seen, labels), [1, grown[0], 1, grown[1], 0, 0, 0, 1])
        self.assertEqual(seen["gossip_peer_failures", labels], 0)
        log = frozenset({"log": "a.log", "path": a}.items())
        self.assertEqual(
            [
                seen[name, log]
                for name in [
                    "gossip_log_adds",
                    "gossip_log_bytes",
                    "gossip_log_identities",
                    "gossip_log_sessions",
                ]
            ],
            [2, os.path.getsize(a), 2, 1],
        )
        self.assertIn(("process_resident_memory_bytes", frozenset()), seen)
        # Only /metrics is served.
        error = self.assertRaises(
            urllib.error.HTTPError,
            urllib.request.urlopen,
            url.removesuffix("metrics"),
            timeout=DEADLINE,
        )
        error.close()
        self.assertEqual(error.code, 404)
        # Scrapes are not logged.
        self.assertNotIn("GET /metrics", daemon.log())

    def test_portTaken(self):
        """
        A metrics endpoint that cannot be had stops the daemon's start with
        one line naming it.
        """
        from twisted.internet import reactor

        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            description = f"tcp:{taken.getsockname()[1]}:interface=127.0.0.1"
            service = MetricsService(reactor, _Control(STATUS), description)
            error = self.assertRaises(SystemExit, service.privilegedStartService)
        message = str(error.code)
        self.assertTrue(
            message.startswith(f"gossip: cannot listen on --metrics {description}: "), message
        )
        self.assertNotIn("\n", message)


class IncomingTests(SSHMixin, TestCase):
    """
    A real daemon with C{--metrics} that a peer reaches over SSH.
    """

    def test_incoming(self):
        """
        An incoming peer is named by its key's fingerprint; what moved each
        way, in its session, is counted.
        """
        key = newKey()
        self.authorize((key, "client"))
        server = self.log("server")
        daemon = self.daemon(
            "server",
            "--log", server,
            "--listen", "tcp:0:interface=127.0.0.1",
            "--host-key", self.hostKeyPath,
            "--authorized-keys", self.authorized,
            "--metrics", "tcp:0:interface=127.0.0.1",
        )  # fmt: skip
        self.port = daemon.listeningPort("SSH")
        self.trust()
        client = self.log("client")
        sizes = os.path.getsize(server), os.path.getsize(client)
        sync = subprocess.Popen(
            [
                sys.executable, "-m", "gossip", "sync",
                "--identity", self.identity(key, "client"),
                "--known-hosts", self.knownHosts,
                client, f"ssh://127.0.0.1:{self.port}",
            ],
            stdin=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=ENV,
        )  # fmt: skip
        self.addCleanup(sync.wait)
        self.addCleanup(sync.kill)
        labels = frozenset(
            {"log": "a.log", "direction": "incoming", "peer": fingerprint(key)}.items()
        )
        state = labels | {("gossip_peer_state", "caught up")}
        seen = scrapeUntil(metricsURL(daemon), "gossip_peer_state", state, 1)
        grown = os.path.getsize(server) - sizes[0], os.path.getsize(client) - sizes[1]
        self.assertEqual(peerSamples(seen, labels), [1, grown[0], 1, grown[1], 0, 0, 0, 1])
        self.assertNotIn(("gossip_peer_failures", labels), seen)
