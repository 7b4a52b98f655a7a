# -*- test-case-name: tests.test_control -*-
"""
The daemon's side of the control port: what it answers, and the service
that listens (by default on a UNIX socket only its user can open) and
reloads on SIGHUP.
"""

import errno
import json
import os
import re
import signal
import socket
import stat

import attrs
from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import Service
from twisted.internet.endpoints import UNIXServerEndpoint, serverFromString
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.protocols import amp

from gossip.control.commands import Connect, ControlError, Reload, Status, Stop
from gossip.control.status import status
from gossip.transport.errors import TLSError

__all__ = ["Control", "ControlService", "HangUpService", "Listener", "controlEndpoint", "unixPath"]

log = Logger()


def listenOrExit(service, option, description):
    """
    Start C{service}, a L{StreamServerEndpointService} with a C{_listening}
    method, listening; an endpoint that cannot be had ends the daemon's
    start with one line naming C{option}.
    """
    try:
        StreamServerEndpointService.privilegedStartService(service)
    except Exception as e:
        raise SystemExit(f"gossip: cannot listen on {option} {description}: {e}") from None
    service._waitingForPort.addCallback(service._listening)


@attrs.define(eq=False)
class Listener:
    """
    One of the daemon's listeners, as its status shows it.

    @ivar description: its endpoint, as given to C{--listen}.
    @ivar kind: C{"SSH"} or C{"TLS"}.
    @ivar keys: the file of the keys (SSH: C{authorized_keys}) or
        authorities (TLS: the CA certificates) that let peers in.
    @ivar count: returns how many keys or authorities that file holds.
    @ivar endpoint: the endpoint, which a TLS one's C{reload} reads again.
    @ivar address: where it listens, once it does (C{HOST:PORT}).
    """

    description: str
    kind: str
    keys: str
    count: object
    endpoint: object = None
    address: str | None = None


@attrs.define(eq=False)
class Control:
    """
    What the control port acts on: the daemon's logs, peers, listeners and
    incoming sessions.

    @ivar reactor: the reactor, which C{stop} stops.
    @ivar services: the L{gossip.sync.service.LogService}s.
    @ivar peers: the L{gossip.transport.reach.PeerService}s.
    @ivar listeners: the L{Listener}s.
    @ivar sessions: the L{gossip.sync.sessions.Sessions} of incoming
        sessions, if the daemon listens.
    @ivar authorized: the L{gossip.transport.ssh.authorized.AuthorizedKeys}
        of its SSH listeners, if it has any.
    @ivar endpoint: where the control port listens, if it does.
    """

    reactor: object
    services: list
    peers: list = attrs.Factory(list)
    listeners: list = attrs.Factory(list)
    sessions: object = None
    authorized: object = None
    endpoint: str | None = None
    started: float = attrs.field(init=False)

    def __attrs_post_init__(self):
        self.started = self.reactor.seconds()

    def status(self):
        """
        The daemon's status, as a JSON-able dictionary.
        """
        return status(self)

    def reload(self):
        """
        Read C{authorized_keys} and the TLS files again, and end the incoming
        sessions whose keys may no longer do what they do.

        @return: what was done, in one line.
        """
        done = []
        if self.authorized is not None:
            self.authorized.refresh(force=True)
            ended, kept = self.sessions.revoke(self.authorized)
            done.append(
                f"{self.authorized.path}: {self.authorized.count} keys may connect; "
                f"{ended} sessions ended, {kept} kept"
            )
        reloadable = [listener.endpoint for listener in self.listeners if listener.kind == "TLS"]
        reloadable += [
            peer.peer.endpoint for peer in self.peers if hasattr(peer.peer.endpoint, "reload")
        ]
        if reloadable:
            try:
                for endpoint in reloadable:
                    endpoint.reload()
            except TLSError as e:
                done.append(f"TLS files not reloaded: {e}")
                log.error("reload: TLS files not reloaded: {why}", why=e)
            else:
                done.append("TLS files read again")
        # known_hosts is read at each connection: nothing to do for it.
        result = "; ".join(done) or "nothing to reload"
        log.info("reloaded: {result}", result=result)
        return result

    def connect(self, name=None):
        """
        Retry now the peers that wait to, all of them or those named C{name}
        (a peer's URL or command, or a part of it that names only one).

        @return: what was done, in one line.
        @raise ControlError: no peer has that name.
        """
        peers = [service.peer for service in self.peers]
        if name is not None:
            named = [peer for peer in peers if peer.name == name]
            if not named:
                named = [peer for peer in peers if name in peer.name]
            if not named:
                raise ControlError(f"no peer {name!r}; see gossip status")
            if len(named) > 1:
                raise ControlError(f"{name!r} names {len(named)} peers; give one's whole URL or command")
            peers = named
        retried = [peer.name for peer in peers if peer.retryNow()]
        if not retried:
            return "no peer was waiting to retry" if name is None else f"{peers[0].name} was not waiting to retry"
        if len(retried) == 1:
            return f"retrying {retried[0]} now"
        return f"retrying {len(retried)} peers now"

    def stop(self):
        """
        Stop the daemon, once the answer is on its way.
        """
        log.info("stopping, as the control port was asked")
        # Time for the answer to leave before the reactor stops.
        self.reactor.callLater(0.1, self.reactor.stop)
        return f"stopping the daemon (pid {os.getpid()})"


class ControlProtocol(amp.AMP):
    """
    The control port's side of one connection.
    """

    def __init__(self, control):
        amp.AMP.__init__(self)
        self._control = control

    # AMP's own would log two lines for each gossip status.
    def makeConnection(self, transport):
        amp.BinaryBoxProtocol.makeConnection(self, transport)

    def connectionLost(self, reason):
        amp.BinaryBoxProtocol.connectionLost(self, reason)

    @Status.responder
    def _status(self):
        return {"status": json.dumps(self._control.status()).encode("utf-8")}

    @Reload.responder
    def _reload(self):
        return {"result": self._control.reload()}

    @Connect.responder
    def _connect(self, peer=None):
        return {"result": self._control.connect(peer)}

    @Stop.responder
    def _stop(self):
        return {"result": self._control.stop()}


class _ControlFactory(Factory):
    noisy = False

    def __init__(self, control):
        self._control = control

    def buildProtocol(self, addr):
        return ControlProtocol(self._control)


def unixPath(description):
    """
    The path and mode of a C{unix:PATH[:mode=NNN]} description.

    @return: C{(path, mode)}, or L{None} if C{description} is not one.
    @raise ValueError: it is C{unix:} with other options.
    """
    kind, colon, rest = description.partition(":")
    if kind != "unix":
        return None
    fields = [field.replace("\\:", ":") for field in re.split(r"(?<!\\):", rest)]
    path, mode = None, 0o600
    for field in fields:
        name, equals, value = field.partition("=")
        if equals and name == "mode":
            mode = int(value, 8)
        elif equals and name in ("address", "path"):
            path = value
        elif not equals and path is None:
            path = field
        else:
            raise ValueError(f"give unix:PATH[:mode=NNN], not {description!r}")
    if not path:
        raise ValueError(f"{description!r} names no path")
    return path, mode


def controlEndpoint(reactor, description):
    """
    The server endpoint of C{--control DESCRIPTION}: a UNIX socket (mode
    0600 unless given) or any endpoint Twisted's C{serverFromString} knows.

    @raise ValueError: or another error of Twisted's parser, if it is bad.
    """
    unix = unixPath(description)
    if unix is None:
        return serverFromString(reactor, description)
    path, mode = unix
    return UNIXServerEndpoint(reactor, path, mode=mode, wantPID=False)


def _claim(path):
    """
    Make ready to listen on the UNIX socket C{path}: create its directory
    (mode 0700) if missing, and remove a socket left by a daemon that is
    gone.

    @raise SystemExit: a live daemon listens there.
    """
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, mode=0o700, exist_ok=True)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise SystemExit(
            f"gossip: {path} is in the way of the control socket and is not a socket; "
            "remove it or give --control ENDPOINT"
        )
    probe = socket.socket(socket.AF_UNIX)
    try:
        probe.connect(path)
    except OSError as e:
        if e.errno not in (errno.ECONNREFUSED, errno.ENOENT):
            raise
        # Nothing listens: a daemon that ended without tidying up.
        os.remove(path)
    else:
        raise SystemExit(
            f"gossip: another daemon listens on the control socket {path}: give this one "
            "its own --control ENDPOINT (or --control none)"
        )
    finally:
        probe.close()


class ControlService(StreamServerEndpointService):
    """
    Listens for the control port's commands.

    An endpoint that cannot be had (another daemon's socket) stops the
    daemon's start with one line.
    """

    _raiseSynchronously = True

    def __init__(self, reactor, control, description):
        StreamServerEndpointService.__init__(
            self, controlEndpoint(reactor, description), _ControlFactory(control)
        )
        self._control = control
        self._description = description
        unix = unixPath(description)
        self._path = unix[0] if unix is not None else None
        self._listened = False

    def privilegedStartService(self):
        # Not yet: under twistd --uid this runs as root, and the socket (and
        # its directory) would be root's, which the daemon's user could not
        # open.  startService listens, as the user.
        Service.privilegedStartService(self)

    def startService(self):
        if self._path is not None:
            _claim(self._path)
        listenOrExit(self, "--control", self._description)
        Service.startService(self)

    def _listening(self, port):
        self._listened = True
        address = port.getHost()
        where = getattr(address, "name", None)
        if where is None:
            where = f"{address.host} port {address.port}"
        else:
            where = os.fsdecode(where)
        self._control.endpoint = self._description
        log.info("control port listening on {where}", where=where)
        return port

    def stopService(self):
        d = StreamServerEndpointService.stopService(self)
        if self._path is not None and self._listened:
            d.addBoth(self._tidy)
        return d

    def _tidy(self, passed):
        # The next daemon would remove it as stale; tidier to go now.
        try:
            os.remove(self._path)
        except OSError:
            pass
        return passed


class HangUpService(Service):
    """
    Reloads the daemon's keys and certificates (L{Control.reload}) on
    SIGHUP, as daemons do.
    """

    def __init__(self, reactor, control):
        self._reactor = reactor
        self._control = control
        self._previous = None

    def privilegedStartService(self):
        # Before any other service says it is ready: a SIGHUP sent once
        # the daemon listens must not end it.
        Service.privilegedStartService(self)
        self._previous = signal.signal(signal.SIGHUP, self._hangUp)

    def _hangUp(self, signum, frame):
        self._reactor.callFromThread(self._control.reload)

    def stopService(self):
        Service.stopService(self)
        if self._previous is not None:
            signal.signal(signal.SIGHUP, self._previous)
            self._previous = None
