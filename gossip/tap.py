# -*- test-case-name: tests.test_tap -*-
"""
The daemon: C{twistd gossip --log LOG [--peer URL]... [--listen ENDPOINT]...}.
"""

import errno
import os
import shlex
import sys

import attrs
from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import MultiService
from twisted.logger import Logger
from twisted.python import usage

from gossip.cli.options import PEER, SESSION, reader, sessionSettings
from gossip.store.logfile import Log, LogError
from gossip.transport.reach import Reach, peerService
from gossip.transport.urls import URLError, isURL, parseURL
from gossip.sync.service import LogService
from gossip.transport.startups import DEFAULT_MAX_STARTUPS, DEFAULT_PER_SOURCE, MaxStartups, Startups

__all__ = ["DEFAULT_LISTEN", "Options", "makeService"]

# Loopback only: a node is reachable from elsewhere only when its user says.
DEFAULT_LISTEN = "tcp:7422:interface=127.0.0.1"

log = Logger()

SHARED = SESSION + PEER
[IDENTITY] = [option for option in SHARED if option.kind == "append"]


def _configHome():
    return os.environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config")


def _defaultHostKey():
    return os.path.join(_configHome(), "gossip", "ssh_host_ed25519_key")


def _metrics(description):
    """
    C{--metrics}: an endpoint Twisted can parse, or L{None} for C{none}.
    """
    if description == "none":
        return None
    from twisted.internet import reactor
    from twisted.internet.endpoints import serverFromString

    try:
        serverFromString(reactor, description)
    except Exception as e:
        # Twisted's parsers raise ValueError, TypeError or OSError.
        raise usage.UsageError(f"--metrics {description}: {e}")
    return description


def _shared(kind):
    """
    The shared options (see L{gossip.cli.options}) of C{kind} in
    usage.Options' form.
    """
    if kind == "flag":
        return [
            [option.name, option.short, option.help]
            for option in SHARED
            if option.kind == "flag"
        ]
    return [
        [option.name, option.short, option.default, option.help, reader(option.read, usage.UsageError)]
        for option in SHARED
        if option.kind == "value"
    ]


def _appender(option):
    """
    The C{opt_} method of a repeatable shared option: its values are a list.
    """

    def append(self, value):
        self[option.name].append(value)

    append.__doc__ = option.help
    return append


class Options(usage.Options):
    """
    The daemon's options.
    """

    synopsis = "--log LOG [--peer URL | --peer-command CMD | --folder DIR]... [--log LOG2 ...]"
    longdesc = (
        "Serve one or more gossip logs: watch each for adds appended by any "
        "process, keep it synced with its peers, and let peers whose keys "
        "--authorized-keys lists sync with it over SSH (the 'gossip' "
        "subsystem) on each --listen endpoint (default "
        f"{DEFAULT_LISTEN}, loopback only; 'none' for no server).  Each "
        "--peer and --peer-command belongs to the --log before it: a URL "
        "(ssh://[USER@]HOST[:PORT][/LOG] or tls://HOST[:PORT][/LOG]), or a "
        "command whose standard input and output reach a peer (e.g. 'ssh "
        "host gossip serve --stdio LOG'); each is kept connected, with "
        "backoff after failures.  Each --folder DIR is kept in step with the "
        "documents of the --log before it (see docs/documents.md)."
    )
    optFlags = [
        ["poll", None, "poll the log files instead of using inotify"],
    ] + _shared("flag")
    optParameters = _shared("value") + [
        [
            "scrub-period",
            None,
            86400.0,
            "verify each whole log in the background once in this many seconds "
            "(at most 2% of a core), fetching damaged adds from peers; 0 for never",
            float,
        ],
        [
            "host-key",
            None,
            None,
            "the SSH server's host key, created (ed25519) if missing (default "
            "$XDG_CONFIG_HOME/gossip/ssh_host_ed25519_key, ~/.config without it)",
        ],
        [
            "authorized-keys",
            None,
            os.path.expanduser("~/.ssh/authorized_keys"),
            "the keys of peers that may connect, in OpenSSH's format",
        ],
        [
            "max-startups",
            None,
            str(DEFAULT_MAX_STARTUPS),
            "unauthenticated connections: from START open, refuse new ones with "
            "probability RATE%, rising to 100% at FULL (START:RATE:FULL, or N to "
            "refuse beyond N)",
        ],
        [
            "per-source-max-startups",
            None,
            str(DEFAULT_PER_SOURCE),
            "unauthenticated connections from one address (an IPv6 /64) at once",
        ],
        ["login-grace", None, 30.0, "seconds a connection has to authenticate (SSH) or finish its handshake (TLS)", float],
        [
            "metrics",
            None,
            None,
            "serve Prometheus metrics at /metrics over HTTP on this endpoint, e.g. "
            "tcp:9422:interface=127.0.0.1 (default none: off)",
            _metrics,
        ],
        [
            "control",
            None,
            None,
            "where to answer gossip status, reload, connect and stop: unix:PATH, "
            "tcp:PORT:interface=127.0.0.1, or none (default unix:"
            "$XDG_CONFIG_HOME/gossip/control.sock, ~/.config/gossip/control.sock "
            "without it)",
        ],
    ]
    opt_identity = _appender(IDENTITY)
    opt_i = opt_identity

    def __init__(self):
        usage.Options.__init__(self)
        self["logs"] = []
        self["folders"] = []
        self["listen"] = []
        self[IDENTITY.name] = []

    def parseOptions(self, options=None):
        try:
            super().parseOptions(options)
        except usage.UsageError as e:
            if getattr(self, "parent", None) is None:
                raise
            # Under twistd, which would print all of its usage and then the
            # error on standard output: one line on standard error instead,
            # as gossip's own commands do.
            sys.stderr.write(f"twistd gossip: {e} (see twistd gossip --help)\n")
            raise SystemExit(1) from None

    def opt_listen(self, description):
        """
        An endpoint to accept peers on (repeatable): SSH on tcp:..., TLS on
        ssl:PORT[:interface=ADDRESS]; 'none' for none.
        """
        self["listen"].append(description)

    def opt_peer(self, url):
        """
        The URL of a peer of the last --log (repeatable).
        """
        if not self["logs"]:
            raise usage.UsageError("--peer belongs to a --log: give --log first")
        if not isURL(url):
            raise usage.UsageError(
                f"--peer {url!r}: give ssh://[USER@]HOST[:PORT][/LOG] or tls://HOST[:PORT][/LOG]"
            )
        try:
            parseURL(url)
        except URLError as e:
            raise usage.UsageError(f"--peer: {e}")
        self["logs"][-1][1].append(url)

    def opt_log(self, path):
        """
        A log file to serve, created if missing (repeatable).
        """
        self["logs"].append((path, []))

    def opt_folder(self, directory):
        """
        A folder of files kept in step with the documents of the last
        --log (repeatable).
        """
        if not self["logs"]:
            raise usage.UsageError("--folder belongs to a --log: give --log first")
        if not os.path.isdir(directory):
            raise usage.UsageError(f"--folder {directory}: not a directory")
        if not os.access(directory, os.W_OK | os.X_OK):
            raise usage.UsageError(f"--folder {directory}: not writable")
        self["folders"].append((self["logs"][-1][0], directory))

    def opt_peer_command(self, command):
        """
        A command whose standard input and output reach a peer of the last
        --log (repeatable).
        """
        if not self["logs"]:
            raise usage.UsageError("--peer-command belongs to a --log: give --log first")
        try:
            argv = shlex.split(command)
        except ValueError as e:
            raise usage.UsageError(f"--peer-command {command!r}: {e}")
        if not argv:
            raise usage.UsageError("--peer-command needs a command")
        self["logs"][-1][1].append(argv)

    def postOptions(self):
        if not self["logs"]:
            raise usage.UsageError("give at least one --log")
        self._checkStartups()
        if not self["scrub-period"] >= 0:
            raise usage.UsageError("--scrub-period takes a number of seconds, 0 or more")
        names = {}
        for path, peers in self["logs"]:
            try:
                # Made when the daemon starts, as the user it runs as (twistd
                # --uid parses options as root).
                Log(path).checkUsable()
            except LogError as e:
                raise usage.UsageError(str(e))
            name = os.path.basename(path)
            if name in names:
                raise usage.UsageError(
                    f"{names[name]} and {path} have the same name, so peers could "
                    "not tell them apart"
                )
            names[name] = path
        listen = self["listen"] or [DEFAULT_LISTEN]
        self["listen"] = [] if listen == ["none"] else listen
        if "none" in self["listen"]:
            raise usage.UsageError("--listen none cannot be given with other endpoints")
        given = [self["tls-key"], self["tls-cert"], self["tls-ca"]]
        if any(given) and not all(given):
            raise usage.UsageError("give all of --tls-key, --tls-cert and --tls-ca, or none")
        self["tls"] = None
        if all(given):
            from gossip.transport.tls import TLSError, TLSFiles

            self["tls"] = TLSFiles(
                key=self["tls-key"], cert=self["tls-cert"], ca=self["tls-ca"]
            )
            try:
                self["tls"].load()
            except TLSError as e:
                raise usage.UsageError(str(e))
        for description in self["listen"]:
            if _isTLS(description) and self["tls"] is None:
                raise usage.UsageError(
                    f"--listen {description}: give --tls-key, --tls-cert and --tls-ca"
                )
            self._checkListen(description)
        if any(not _isTLS(description) for description in self["listen"]):
            from gossip.transport.errors import SSHError

            default = self["host-key"] is None
            if default:
                self["host-key"] = _defaultHostKey()
            # Only the default's directories are made: elsewhere, a
            # missing directory is a typo.
            self["ssh-host-key"] = _HostKey(self["host-key"], directories=default)
            try:
                self["ssh-host-key"].check()
            except SSHError as e:
                raise usage.UsageError(str(e))
        self._checkControl()
        self["settings"] = sessionSettings(self.__getitem__)
        self["reach"] = Reach(
            identities=self["identity"],
            knownHosts=self["known-hosts"],
            acceptNewHostKeys=self["accept-new-host-keys"],
            tls=self["tls"],
        )
        if any(
            isinstance(peer, str) and parseURL(peer).scheme == "ssh"
            for path, peers in self["logs"]
            for peer in peers
        ):
            from gossip.transport.errors import SSHError
            from gossip.transport.ssh.keys import loadIdentity

            try:
                for path in self["identity"]:
                    loadIdentity(path)
            except SSHError as e:
                raise usage.UsageError(str(e))


    def _checkControl(self):
        """
        Make the control endpoint, without listening: a mistake in it is a
        usage error now.
        """
        from twisted.internet import reactor

        from gossip.control.commands import defaultControl
        from gossip.control.server import controlEndpoint

        if self["control"] is None:
            self["control"] = defaultControl()
        elif self["control"] == "none":
            self["control"] = None
            return
        try:
            controlEndpoint(reactor, self["control"])
        except Exception as e:
            # Twisted's parsers raise ValueError, TypeError or OSError.
            raise usage.UsageError(f"--control {self['control']}: {e}")

    def _checkStartups(self):
        """
        Parse the limits on unauthenticated connections.
        """
        try:
            self["max-startups"] = MaxStartups.parse(self["max-startups"])
        except ValueError as e:
            raise usage.UsageError(f"--max-startups {e}")
        perSource = self["per-source-max-startups"]
        if not (perSource.isascii() and perSource.isdigit() and int(perSource) >= 1):
            raise usage.UsageError(
                f"--per-source-max-startups {perSource!r}: give a number of connections, at least 1"
            )
        self["per-source-max-startups"] = int(perSource)
        if not 0 < self["login-grace"] < 86400:
            raise usage.UsageError("--login-grace: give a number of seconds above 0 and below a day")

    def _checkListen(self, description):
        """
        Make the endpoint that a C{--listen} describes, without listening:
        a mistake in it is a usage error now, not a traceback later.
        """
        from twisted.internet import reactor

        if _isTLS(description):
            from gossip.transport.tls import TLSError, serverEndpoint

            try:
                serverEndpoint(reactor, description, self["tls"])
            except TLSError as e:
                raise usage.UsageError(f"--listen {description}: {e}")
            return
        from twisted.internet.endpoints import serverFromString

        try:
            serverFromString(reactor, description)
        except Exception as e:
            # Twisted's parsers raise ValueError, TypeError or OSError,
            # with messages that name what was wrong.
            raise usage.UsageError(f"--listen {description}: {e}")


def _isTLS(description):
    return description.split(":", 1)[0] in ("ssl", "tls")


@attrs.define
class _HostKey:
    """
    The SSH listeners' host key: read while the options are parsed, if it
    exists, and made (ed25519) when the first SSH listener starts if not:
    as the user the daemon runs as, once twistd C{--uid} has dropped root.

    @ivar path: its file.
    @ivar directories: whether to make the directories it goes in.
    """

    path: str
    directories: bool
    _key: object = attrs.field(default=None, init=False)

    def check(self):
        """
        Read the key if there is one, or check that one can be made.

        @raise SSHError: it is no key, or it could not be made.
        """
        from gossip.transport.errors import SSHError
        from gossip.transport.ssh.keys import hostKey

        if os.path.lexists(self.path):
            self._key = hostKey(self.path, create=False)
        elif not (self.directories or os.path.isdir(os.path.dirname(os.path.abspath(self.path)))):
            raise SSHError(f"cannot create host key {self.path}: {os.strerror(errno.ENOENT)}")

    def key(self):
        """
        The key, made if missing.

        @raise SSHError: it could not be made, or read.
        """
        from gossip.transport.ssh.keys import hostKey

        if self._key is None:
            self._key = hostKey(self.path, directories=self.directories)
        return self._key


class _LogService(LogService):
    """
    A log's service, whose log is created (if missing) when it starts: a
    log that cannot be read or made stops the daemon's start, in one line.
    """

    def startService(self):
        try:
            LogService.startService(self)
        except LogError as e:
            raise SystemExit(f"gossip: {e}") from None


class _Listener(StreamServerEndpointService):
    """
    Twisted's service for one endpoint, as C{strports.service} makes it: a
    port that cannot be had fails the start-up, here as one line rather
    than a traceback; the address it listens on is logged.
    """

    # What strports.service sets: a port that cannot be had is raised from
    # privilegedStartService, rather than logged while the daemon runs on.
    _raiseSynchronously = True

    def __init__(self, endpoint, factory, listener, hostKey=None):
        StreamServerEndpointService.__init__(self, endpoint, factory)
        self._description = listener.description
        self._kind = listener.kind
        self._listener = listener
        self._hostKey = hostKey

    def privilegedStartService(self):
        try:
            StreamServerEndpointService.privilegedStartService(self)
        except Exception as e:
            raise SystemExit(f"gossip: cannot listen on {self._description}: {e}") from None
        self._waitingForPort.addCallback(self._listening)

    def startService(self):
        # After privilegedStartService, as the user the daemon runs as, and
        # before the reactor runs: before the first connection.
        if self._hostKey is not None:
            from gossip.transport.errors import SSHError

            try:
                self.factory.useKey(self._hostKey.key())
            except SSHError as e:
                raise SystemExit(f"gossip: {e}") from None
        StreamServerEndpointService.startService(self)

    def _listening(self, port):
        address = port.getHost()
        self._listener.address = f"{address.host}:{address.port}"
        log.info(
            "listening for {kind} peers on {host} port {port}",
            kind=self._kind,
            host=address.host,
            port=address.port,
        )
        return port


def makeService(config, reactor=None):
    """
    A service of one L{LogService} per log, a peer service per peer, and a
    listener per endpoint.
    """
    if reactor is None:
        from twisted.internet import reactor
    from gossip.control.server import Control, ControlService, HangUpService

    from gossip.control.systemd import NotifyService

    top = MultiService()
    services = {}
    control = Control(reactor, [])
    # What the service manager waits for before it calls the daemon ready.
    ports = []
    HangUpService(reactor, control).setServiceParent(top)
    if config.get("control") is not None:
        # First, so that a daemon that would take another's socket stops
        # before it connects to a peer or lets one in.
        port = ControlService(reactor, control, config["control"])
        port.setServiceParent(top)
        ports.append(port)
    for path, peers in config["logs"]:
        service = _LogService(
            Log(path),
            reactor,
            rescanInterval=config["rescan"],
            useInotify=not config["poll"],
            scrubPeriod=config["scrub-period"],
            shareClaims=True,
        )
        service.setServiceParent(top)
        services[service.name] = service
        control.services.append(service)
        for peer in peers:
            client = peerService(reactor, service, peer, config["settings"], config["reach"])
            client.setServiceParent(top)
            control.peers.append(client)
    if config.get("folders"):
        from gossip.documents.folder import Folder
        from gossip.documents.service import FolderService

        for path, directory in config["folders"]:
            FolderService(
                Folder(Log(path), directory, settle=0.5), reactor, useInotify=not config["poll"]
            ).setServiceParent(top)
    if config["listen"]:
        listeners = _listeners(reactor, config, services, control)
        listeners.setServiceParent(top)
        ports.extend(listeners)
    if config.get("metrics") is not None:
        from gossip.control.metrics import MetricsService

        metrics = MetricsService(reactor, control, config["metrics"])
        metrics.setServiceParent(top)
        ports.append(metrics)
    # Last, so that it is started once the others listen, and stopped first.
    NotifyService(reactor, ports).setServiceParent(top)
    return top


def _listeners(reactor, config, services, control):
    from twisted.internet.endpoints import serverFromString

    from gossip.control.server import Listener
    from gossip.sync.sessions import Sessions

    sessions = Sessions(reactor, services, config["settings"])
    control.sessions = sessions
    # One budget of unauthenticated connections (SSH connections not yet
    # authenticated, TLS handshakes not yet complete) for all endpoints.
    startups = Startups(config["max-startups"], config["per-source-max-startups"])
    listeners = MultiService()
    for description in config["listen"]:
        if _isTLS(description):
            from gossip.transport.tls import HandshakeLimit, serverEndpoint

            endpoint = serverEndpoint(reactor, description, config["tls"])
            factory = HandshakeLimit(
                sessions.tlsFactory(), startups, reactor, config["login-grace"]
            )
            tls = config["tls"]
            listener = Listener(
                description,
                "TLS",
                tls.ca,
                lambda: len(tls.load().authorities),
                endpoint,
            )
        else:
            from gossip.transport.ssh.authorized import AuthorizedKeys
            from gossip.transport.ssh.server import serverFactory

            endpoint = serverFromString(reactor, description)
            if control.authorized is None:
                # One reading of the file for every SSH endpoint, which a
                # reload reads again.
                control.authorized = AuthorizedKeys(config["authorized-keys"])
                # Report a missing file or bad lines now, not at the first login.
                control.authorized.refresh()
            authorized = control.authorized
            # The host key is given when the listener starts.
            factory = serverFactory(
                reactor,
                sessions,
                None,
                authorized,
                startups=startups,
                loginGrace=config["login-grace"],
            )
            listener = Listener(
                description, "SSH", authorized.path, lambda: authorized.count, endpoint
            )
        control.listeners.append(listener)
        hostKey = None if _isTLS(description) else config["ssh-host-key"]
        _Listener(endpoint, factory, listener, hostKey).setServiceParent(listeners)
    return listeners
