# -*- test-case-name: tests.test_spawn -*-
"""
Starting a sync's peer command before Twisted is imported.

C{gossip sync} and C{gossip clone} run a command (another C{gossip serve},
or C{ssh host gossip serve ...}) and speak over its standard input and
output.  Importing Twisted takes most of a third of a second here, and so
does the command's own start-up: started first, the command starts up while
this process imports Twisted, rather than after.  This module imports only
the standard library.
"""

import os
import signal
import sys


__all__ = ["SpawnError", "Spawned", "peerCommand", "spawn", "spawnPeer"]


class SpawnError(Exception):
    """
    The peer command could not be run: the message is suitable to print.
    """


class Spawned:
    """
    A running peer command and this process's ends of its pipes.

    A plain class, not attrs: the peer is started before anything else is
    imported, so that its start-up overlaps ours, and importing attrs
    first would cost it some 25 ms.

    @ivar argv: its arguments.
    @ivar pid: its process id.
    @ivar stdin: the file descriptor that writes to its standard input.
    @ivar stdout: the file descriptor that reads its standard output.
    """

    __slots__ = ("argv", "pid", "stdin", "stdout")

    def __init__(self, argv, pid, stdin, stdout):
        self.argv = argv
        self.pid = pid
        self.stdin = stdin
        self.stdout = stdout

    def __repr__(self):
        return f"Spawned(argv={self.argv!r}, pid={self.pid!r})"


def peerCommand(peer, command=None, anyName=False):
    """
    The command to run to sync with C{peer}, a log file, unless C{command}
    is given.

    @raise SpawnError: if C{peer} does not exist (a mistyped PEER must not
        become a new log).
    """
    if command:
        return list(command)
    if not os.path.lexists(peer):
        raise SpawnError(f"{peer}: No such file or directory")
    argv = [sys.executable, "-m", "gossip", "serve", "--stdio"]
    if anyName:
        argv.append("--any-name")
    return argv + ["--", peer]


def spawn(argv):
    """
    Run C{argv} with pipes to its standard input and output; its standard
    error is this process's.

    @raise SpawnError: if it cannot be run.
    """
    toChild = os.pipe()
    fromChild = os.pipe()
    # Python ignores these signals; the command should not.
    defaults = [
        number
        for number in (signal.SIGPIPE, signal.SIGXFSZ)
        if signal.getsignal(number) == signal.SIG_IGN
    ]
    try:
        pid = os.posix_spawnp(
            argv[0],
            argv,
            os.environ,
            file_actions=[
                (os.POSIX_SPAWN_DUP2, toChild[0], 0),
                (os.POSIX_SPAWN_DUP2, fromChild[1], 1),
            ],
            setsigdef=defaults,
        )
    except OSError as e:
        for fd in toChild + fromChild:
            os.close(fd)
        raise SpawnError(f"cannot run {argv[0]}: {e.strerror}") from None
    os.close(toChild[0])
    os.close(fromChild[1])
    return Spawned(argv=list(argv), pid=pid, stdin=toChild[1], stdout=fromChild[0])


def spawnPeer(peer, command=None, anyName=False):
    """
    L{spawn} the command that L{peerCommand} gives.
    """
    return spawn(peerCommand(peer, command, anyName))
