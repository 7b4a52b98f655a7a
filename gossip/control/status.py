# -*- test-case-name: tests.test_control -*-
"""
The daemon's status, as the control port's C{Status} answers it: its logs,
its peers (outgoing and incoming) and its listeners, as a JSON document
(see docs/operations.md).
"""

import os

from gossip.store.intervals import count

__all__ = ["VERSION", "status"]

# The document's version: a script can tell a changed layout.
VERSION = 1


def status(control):
    """
    The status of the daemon that C{control} (a L{gossip.control.server.Control})
    acts on.
    """
    now = control.reactor.seconds()
    peers = [_outgoing(service.peer, now) for service in control.peers]
    if control.sessions is not None:
        peers += [_incoming(entry) for entry in control.sessions.incoming]
    return {
        "version": VERSION,
        "pid": os.getpid(),
        "now": now,
        "started": control.started,
        "control": control.endpoint,
        "logs": [_log(service) for service in control.services],
        "peers": peers,
        "listeners": [_listener(listener) for listener in control.listeners],
    }


def _log(service):
    path = os.fsdecode(service.log.path)
    try:
        st = os.stat(path)
        size, modified = st.st_size, st.st_mtime
    except OSError:
        size = modified = None
    return {
        "path": path,
        "name": service.name.decode("utf-8", "replace"),
        "node": _node(service.identity),
        "adds": count(service.have),
        "bytes": size,
        "identities": len(service.have),
        "corrupt": service.damaged,
        # Adds are only ever appended: the file's last change is the last add.
        "lastAdd": modified,
        "watcher": service.watcherKind,
        "sessions": len(service.sessions),
    }


def _moved(session):
    """
    What C{session} moved: adds and bytes each way, and the adds from the
    peer it dropped as corrupt.
    """
    return {
        "received": session.received,
        "receivedBytes": session.receivedBytes,
        "sent": session.acked,
        "sentBytes": session.ackedBytes,
        "dropped": session.badAdds,
    }


def _session(session):
    """
    What the status says of a session under way, outgoing or incoming.
    """
    peerLacks, weLack = session.lag()
    return {
        "log": session.service.name.decode("utf-8", "replace"),
        "peerLacks": peerLacks,
        "weLack": weLack,
        "session": _moved(session),
        "lastContact": session.lastContact,
        "node": _node(session.peerNode),
    }


def _node(identity):
    """
    A node's identity as text (it is ASCII as gossip makes it), or L{None}.
    """
    return None if identity is None else identity.decode("ascii", "backslashreplace")


def _outgoing(peer, now):
    peer.refresh()
    entry = {
        "direction": "outgoing",
        "peer": peer.name,
        "log": peer.log,
        "state": peer.state,
        "why": peer.why,
        "failures": peer.failures,
        "retry": None,
        "retryIn": None,
        "peerLacks": None,
        "weLack": None,
        "session": None,
        "connectedSince": None,
        "lastContact": None,
        "node": None,
    }
    if peer.state in ("waiting", "refused") and peer.retryAt is not None:
        entry["retry"] = peer.retry
        entry["retryIn"] = max(peer.retryAt - now, 0.0)
    session = peer.session if peer.state in ("syncing", "caught up") else None
    total = dict(peer.totals)
    if session is not None:
        entry.update(_session(session))
        entry["log"] = peer.log
        entry["connectedSince"] = peer.connectedSince
        for name, moved in entry["session"].items():
            total[name] += moved
    entry["total"] = total
    return entry


def _incoming(incoming):
    session = incoming.protocol
    grant = incoming.grant
    if session.service is None:
        state = "connecting"
    else:
        state = "caught up" if session.caughtUp else "syncing"
    entry = {
        "direction": "incoming",
        "peer": session.peer,
        "key": None if grant is None else {"comment": grant.comment, "fingerprint": grant.fingerprint},
        "state": state,
        "why": session.failure,
        "connectedSince": incoming.since,
        "peerLacks": None,
        "weLack": None,
        "session": _moved(session),
        "lastContact": session.lastContact,
        "node": None,
    }
    if session.service is not None:
        entry.update(_session(session))
    # An incoming peer's sessions are not kept after they end: its totals
    # are this session's.
    entry["total"] = dict(entry["session"])
    return entry


def _listener(listener):
    return {
        "endpoint": listener.description,
        "address": listener.address,
        "kind": listener.kind,
        "keys": listener.keys,
        "keyCount": listener.count(),
    }
