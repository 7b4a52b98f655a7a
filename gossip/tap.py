# -*- test-case-name: tests.test_tap -*-
"""
The daemon: C{twistd gossip --log LOG [--peer-command CMD]...}.
"""

import shlex

from twisted.application.service import MultiService
from twisted.python import usage

from gossip.log import Log, LogError
from gossip.peer import peerService
from gossip.service import LogService

__all__ = ["Options", "makeService"]


class Options(usage.Options):
    """
    The daemon's options.
    """

    synopsis = "--log LOG [--peer-command CMD]... [--log LOG2 ...]"
    longdesc = (
        "Serve one or more gossip logs: watch each for adds appended by any "
        "process and keep it synced with its peers.  Each --peer-command "
        "belongs to the --log before it; the daemon runs it (for example "
        "'ssh host gossip serve --stdio LOG') and syncs over its standard "
        "input and output, starting it again with backoff when it ends."
    )
    optFlags = [
        ["any-name", None, "sync with peers whose log has another name"],
        ["poll", None, "poll the log files instead of using inotify"],
    ]
    optParameters = [
        ["timeout", None, 60.0, "give up on a peer silent this many seconds", float],
        ["keepalive", None, 20.0, "ping peers after this many idle seconds", float],
        ["rescan", None, 30.0, "rescan each log this often, in seconds", float],
    ]

    def __init__(self):
        usage.Options.__init__(self)
        self["logs"] = []

    def opt_log(self, path):
        """
        A log file to serve, created if missing (repeatable).
        """
        self["logs"].append((path, []))

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
        for path, peers in self["logs"]:
            try:
                Log(path).state(create=True)
            except LogError as e:
                raise usage.UsageError(str(e))


def makeService(config, reactor=None):
    """
    A service of one L{LogService} per log and a peer service per peer.
    """
    if reactor is None:
        from twisted.internet import reactor
    top = MultiService()
    for path, peers in config["logs"]:
        service = LogService(
            Log(path),
            reactor,
            rescanInterval=config["rescan"],
            useInotify=not config["poll"],
        )
        service.setServiceParent(top)
        for argv in peers:
            peerService(
                reactor,
                service,
                argv,
                anyName=config["any-name"],
                timeout=config["timeout"],
                keepalive=config["keepalive"],
            ).setServiceParent(top)
    return top
