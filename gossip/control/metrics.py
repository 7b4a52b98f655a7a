# -*- test-case-name: tests.test_metrics -*-
"""
The daemon's Prometheus metrics (C{--metrics ENDPOINT}): what its status
says of its logs and peers, read at each scrape and served over HTTP in
Prometheus' text format (see docs/operations.md).
"""

import os
import re

import attrs
from prometheus_client.core import (
    CollectorRegistry,
    CounterMetricFamily,
    GaugeMetricFamily,
    StateSetMetricFamily,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.process_collector import ProcessCollector
from twisted.application.internet import StreamServerEndpointService
from twisted.internet.endpoints import serverFromString
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import Site

__all__ = ["MetricsService", "StatusCollector", "registry", "site"]

log = Logger()

# The states of an outgoing peer (see gossip.transport.reach.Peer) and of
# an incoming one.
STATES = ("connecting", "syncing", "caught up", "waiting", "refused", "linked")
_UP = ("syncing", "caught up", "linked")

# What each peer has moved: the counter's name, its help, the status' key.
_MOVED = [
    ("received_adds", "adds received from the peer and written", "received"),
    ("received_bytes", "bytes of the adds received from the peer and written", "receivedBytes"),
    ("sent_adds", "adds sent to the peer that it said it wrote", "sent"),
    ("sent_bytes", "bytes of the adds sent to the peer that it said it wrote", "sentBytes"),
    ("dropped_corrupt_adds", "adds from the peer dropped as corrupt", "dropped"),
]

# What each log holds: the gauge's name, its help, the status' key.
_LOGS = [
    ("gossip_log_adds", "adds the log holds (identity adds excluded)", "adds"),
    ("gossip_log_bytes", "size of the log file", "bytes"),
    ("gossip_log_identities", "origins whose adds the log holds", "identities"),
    ("gossip_log_corrupt_lines", "corrupt lines skipped reading the log file", "corrupt"),
    ("gossip_log_sessions", "sessions under way with peers", "sessions"),
    (
        "gossip_log_last_add_timestamp_seconds",
        "when the log file was last written (an add)",
        "lastAdd",
    ),
]

_PEER = ["log", "direction", "peer"]

# The port at the end of an address, in a TLS peer's name: "TLS peer
# 127.0.0.1:5555", "CN=node-b (tls [::1]:5555)".
_PORT = re.compile(r":\d+(\)?)$")


def _peerName(peer):
    """
    A peer's label: an outgoing peer's URL or command as the user gave it;
    an incoming one's key fingerprint (SSH) or name and address (TLS),
    which stay the same from one session to the next, unlike its port.
    """
    if peer["direction"] == "outgoing":
        return peer["peer"]
    key = peer.get("key")
    if key is not None and key.get("fingerprint"):
        return key["fingerprint"]
    # A TLS peer, by its name and address: without the port, which is new
    # at each connection.
    return _PORT.sub(r"\1", peer["peer"])


def _byPeer(peers):
    """
    The peers of a status, one for each set of labels: two sessions of one
    incoming key on one log are one peer, their counts summed and the
    greater of their lags taken, since Prometheus wants each series once.

    @return: a dictionary from labels to C{(peer, total, lag, states)}.
    """
    merged = {}
    for peer in peers:
        labels = (peer.get("log") or "", peer["direction"], _peerName(peer))
        total = dict(peer["total"])
        lag = None if peer["peerLacks"] is None else (peer["peerLacks"], peer["weLack"])
        if labels not in merged:
            merged[labels] = (peer, total, lag, {peer["state"]})
            continue
        first, sums, seen, states = merged[labels]
        for name, count in total.items():
            sums[name] += count
        if lag is not None:
            seen = lag if seen is None else (max(seen[0], lag[0]), max(seen[1], lag[1]))
        merged[labels] = (first, sums, seen, states | {peer["state"]})
    return merged


@attrs.frozen
class StatusCollector:
    """
    A Prometheus collector that reads the daemon's status (what C{gossip
    status --json} says) at each scrape: nothing is counted twice.

    @ivar control: the L{gossip.control.server.Control} whose status it reads.
    """

    control: object

    def collect(self):
        status = self.control.status()
        yield from self._logs(status["logs"])
        yield from self._peers(status["peers"])

    def _logs(self, logs):
        for name, documentation, key in _LOGS:
            family = GaugeMetricFamily(name, documentation, labels=["log", "path"])
            for entry in logs:
                if entry[key] is not None:
                    family.add_metric([entry["name"], entry["path"]], entry[key])
            yield family

    def _peers(self, peers):
        merged = _byPeer(peers)
        for name, documentation, key in _MOVED:
            family = CounterMetricFamily(
                f"gossip_peer_{name}",
                documentation
                + " (outgoing: since the daemon started; incoming: in the sessions under way)",
                labels=_PEER,
            )
            for labels, (peer, total, lag, states) in merged.items():
                family.add_metric(labels, total[key])
            yield family
        behind = GaugeMetricFamily(
            "gossip_peer_behind_adds",
            "adds the log holds that the peer lacks, while connected",
            labels=_PEER,
        )
        ahead = GaugeMetricFamily(
            "gossip_peer_ahead_adds",
            "adds the peer holds that the log lacks, while connected",
            labels=_PEER,
        )
        up = GaugeMetricFamily(
            "gossip_peer_up", "1 if a session with the peer is under way, else 0", labels=_PEER
        )
        state = StateSetMetricFamily(
            "gossip_peer_state",
            "the peer's state: " + ", ".join(STATES),
            labels=_PEER,
        )
        failures = GaugeMetricFamily(
            "gossip_peer_failures",
            "attempts to reach an outgoing peer that have failed in a row",
            labels=_PEER,
        )
        contact = GaugeMetricFamily(
            "gossip_peer_last_contact_timestamp_seconds",
            "when the peer last sent a whole message, pings and answers included",
            labels=_PEER,
        )
        for labels, (peer, total, lag, states) in merged.items():
            if lag is not None:
                behind.add_metric(labels, lag[0])
                ahead.add_metric(labels, lag[1])
            up.add_metric(labels, 1 if states & set(_UP) else 0)
            state.add_metric(labels, {name: name in states for name in STATES})
            if peer["direction"] == "outgoing":
                failures.add_metric(labels, peer["failures"])
            if peer["lastContact"] is not None:
                contact.add_metric(labels, peer["lastContact"])
        yield from (behind, ahead, up, state, failures, contact)


def registry(control):
    """
    The registry of what the daemon serves: its status, and the process'
    own figures (memory, CPU, open files).
    """
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StatusCollector(control))
    ProcessCollector(registry=registry)
    return registry


class MetricsResource(Resource):
    """
    The registry in the format the scraper asks for (Prometheus' text, or
    OpenMetrics).

    Not C{prometheus_client.twisted.MetricsResource}: that one collects in
    a thread of the reactor's pool, where the daemon's status cannot be
    read safely, and waiting there for the reactor could hang its
    shutdown, which joins that pool.
    """

    isLeaf = True

    def __init__(self, registry):
        Resource.__init__(self)
        self._registry = registry

    def render_GET(self, request):
        encoder, contentType = choose_encoder(request.getHeader("accept") or "")
        request.setHeader(b"content-type", contentType.encode("ascii"))
        return encoder(self._registry)


class MetricsSite(Site):
    noisy = False

    def log(self, request):
        # A line for each scrape, every 15 s, would bury the daemon's log.
        pass


def site(control):
    """
    The web site of the metrics: C{/metrics}.
    """
    root = Resource()
    root.putChild(b"metrics", MetricsResource(registry(control)))
    return MetricsSite(root)


class MetricsService(StreamServerEndpointService):
    """
    Serves the daemon's metrics on an endpoint; one that cannot be had
    stops the daemon's start with one line.
    """

    _raiseSynchronously = True

    def __init__(self, reactor, control, description):
        StreamServerEndpointService.__init__(
            self, serverFromString(reactor, description), site(control)
        )
        self._description = description

    def privilegedStartService(self):
        from gossip.control.server import listenOrExit

        listenOrExit(self, "--metrics", self._description)

    def _listening(self, port):
        address = port.getHost()
        name = getattr(address, "name", None)
        if name is None:
            log.info(
                "metrics served on {host} port {port} (http://{host}:{port}/metrics)",
                host=address.host,
                port=address.port,
            )
        else:
            log.info("metrics served on {path}", path=os.fsdecode(name))
        return port
