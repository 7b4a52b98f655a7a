"""
Tests for L{gossip.transport.spawn} and L{gossip.transport.command.SpawnedEndpoint}: a peer
command started before the reactor, then spoken to through it, as real
processes; and L{gossip.transport.command.CommandEndpoint}, which starts its
command through the reactor.
"""

import os
import signal
import sys
import time

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone, ProcessTerminated
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.stdio import PipeAddress
from twisted.trial.unittest import TestCase

from gossip.transport.command import CommandAddress, CommandEndpoint, SpawnedEndpoint
from gossip.sync.defaults import MAX_SUMMARY
from gossip.transport.spawn import SpawnError, peerCommand, spawn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _reap(spawned):
    for fd in (spawned.stdin, spawned.stdout):
        try:
            os.close(fd)
        except OSError:
            pass
    try:
        os.kill(spawned.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        os.waitpid(spawned.pid, 0)
    except ChildProcessError:
        pass


class PeerCommandTests(TestCase):
    """
    The command a sync runs for its peer.
    """

    def test_given(self):
        self.assertEqual(peerCommand("ignored", ["ssh", "host"]), ["ssh", "host"])

    def test_logFile(self):
        path = self.mktemp()
        open(path, "wb").close()
        self.assertEqual(
            peerCommand(path),
            [sys.executable, "-m", "gossip", "serve", "--stdio", "--", path],
        )
        self.assertIn("--any-name", peerCommand(path, anyName=True))

    def test_missingLog(self):
        """
        A peer log that does not exist is an error, not a new log.
        """
        error = self.assertRaises(SpawnError, peerCommand, "no-such.log")
        self.assertEqual(str(error), "no-such.log: No such file or directory")


class SpawnTests(TestCase):
    """
    L{spawn} starts a command with pipes to its standard input and output.
    """

    def test_pipes(self):
        spawned = spawn(["cat"])
        self.addCleanup(_reap, spawned)
        os.write(spawned.stdin, b"hello\n")
        os.close(spawned.stdin)
        received = b""
        while True:
            data = os.read(spawned.stdout, 4096)
            if not data:
                break
            received += data
        self.assertEqual(received, b"hello\n")
        pid, status = os.waitpid(spawned.pid, 0)
        self.assertEqual(os.waitstatus_to_exitcode(status), 0)

    def test_missing(self):
        error = self.assertRaises(SpawnError, spawn, ["/no/such/command"])
        self.assertEqual(str(error), "cannot run /no/such/command: No such file or directory")

    def test_signals(self):
        """
        The command does not inherit Python's ignoring of SIGPIPE: a peer
        like C{cat} dies quietly when its reader goes away.
        """
        self.assertEqual(signal.getsignal(signal.SIGPIPE), signal.SIG_IGN)
        spawned = spawn(["sleep", "30"])
        self.addCleanup(_reap, spawned)
        _waitForExec(spawned.pid, b"sleep\x0030\x00")
        with open(f"/proc/{spawned.pid}/status") as f:
            status = dict(line.split(":", 1) for line in f if ":" in line)
        ignored = int(status["SigIgn"].strip(), 16)
        self.assertFalse(ignored & (1 << (signal.SIGPIPE - 1)))

    def test_noLeakedDescriptors(self):
        """
        The command holds only its own ends of the pipes: this process's
        ends are not inherited (else the command would never see EOF).
        """
        spawned = spawn(["sleep", "30"])
        self.addCleanup(_reap, spawned)
        _waitForExec(spawned.pid, b"sleep\x0030\x00")
        ours = os.readlink(f"/proc/self/fd/{spawned.stdin}")
        targets = {}
        for fd in os.listdir(f"/proc/{spawned.pid}/fd"):
            try:
                targets[int(fd)] = os.readlink(f"/proc/{spawned.pid}/fd/{fd}")
            except FileNotFoundError:
                # A file the command had open for a moment.
                pass
        self.assertEqual(targets[0], ours)
        self.assertEqual([fd for fd, target in targets.items() if target == ours], [0])


def _waitForExec(pid, cmdline, deadline=30.0):
    """
    Wait until process C{pid} runs C{cmdline} (as /proc shows it): until
    then, it may still hold what it had before its exec.
    """
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            if f.read() == cmdline:
                return
        time.sleep(0.005)
    raise AssertionError(f"process {pid} did not start {cmdline!r}")


class _Echo(Protocol):
    def __init__(self):
        self.received = b""
        self.lost = Deferred()

    def connectionMade(self):
        self.addresses = self.transport.getHost(), self.transport.getPeer()
        self.transport.write(b"ping\n")

    def dataReceived(self, data):
        self.received += data
        if self.received.endswith(b"\n"):
            self.transport.loseConnection()

    def connectionLost(self, reason):
        self.reason = reason
        self.lost.callback(None)


class SpawnedEndpointTests(TestCase):
    """
    L{SpawnedEndpoint} speaks over a spawned command's pipes and reports
    how it exited once it has.
    """

    def connect(self, argv):
        spawned = spawn(argv)
        self.addCleanup(_reap, spawned)
        endpoint = SpawnedEndpoint(reactor, spawned, grace=5)
        return endpoint.connect(Factory.forProtocol(_Echo))

    async def test_exchange(self):
        protocol = await self.connect(["cat"])
        await protocol.lost
        reason = protocol.reason
        self.assertEqual(protocol.received, b"ping\n")
        # A clean exit is a clean end of the connection.
        self.assertTrue(reason.check(ConnectionDone))
        # This end is a pipe, the other the command.
        host, peer = protocol.addresses
        self.assertIsInstance(host, PipeAddress)
        self.assertEqual(peer, CommandAddress(["cat"]))

    async def test_exitStatus(self):
        """
        A command that fails ends the connection with its exit status.
        """
        protocol = await self.connect(["sh", "-c", "read line; echo \"$line\"; exit 3"])
        await protocol.lost
        reason = protocol.reason
        self.assertEqual(protocol.received, b"ping\n")
        self.assertTrue(reason.check(ProcessTerminated))
        self.assertEqual(reason.value.exitCode, 3)

    async def test_hangUpStopsCommand(self):
        """
        Hanging up on a command that ignores end of input terminates it
        after the grace period.
        """
        spawned = spawn(["sh", "-c", "trap '' HUP; echo ping; exec sleep 60"])
        self.addCleanup(_reap, spawned)
        endpoint = SpawnedEndpoint(reactor, spawned, grace=0.5)
        protocol = await endpoint.connect(Factory.forProtocol(_Echo))
        await protocol.lost
        reason = protocol.reason
        self.assertTrue(reason.check(ProcessTerminated))
        self.assertEqual(reason.value.signal, signal.SIGTERM)


class CommandEndpointTests(TestCase):
    """
    L{CommandEndpoint} starts its command through the reactor and speaks
    over its pipes, as L{SpawnedEndpoint} does over a command already
    started.
    """

    async def test_exchange(self):
        protocol = await CommandEndpoint(reactor, ["cat"], grace=5).connect(
            Factory.forProtocol(_Echo)
        )
        await protocol.lost
        self.assertEqual(protocol.received, b"ping\n")
        self.assertTrue(protocol.reason.check(ConnectionDone))
        host, peer = protocol.addresses
        self.assertIsInstance(host, PipeAddress)
        self.assertEqual(peer, CommandAddress(["cat"]))


class LateSpawnTests(TestCase):
    """
    A sync whose command line did not start the peer command (LOG was
    missing then) starts it itself if LOG is there by the time it runs.
    """

    async def test_startsPeer(self):
        from argparse import Namespace

        from gossip.cli import commands
        from gossip.store.logfile import Log

        directory = self.mktemp()
        os.makedirs(os.path.join(directory, "peer"))
        mine = os.path.join(directory, "a.log")
        theirs = os.path.join(directory, "peer", "a.log")
        Log(mine).say([(b"m", b"mine")])
        Log(theirs).say([(b"m", b"theirs")])
        options = Namespace(
            log=mine, peer=theirs, peerCommand=None, spawned=None, any_name=False,
            create=False, once=True, timeout=30.0, keepalive=20.0, max_summary=MAX_SUMMARY, rescan=30.0,
            verbose=False,
        )
        self.patch(os, "environ", dict(os.environ, PYTHONPATH=ROOT))
        status = await commands._sync(reactor, options)
        self.assertEqual(status, 0)
        self.assertEqual(
            sorted(Log(mine).state().have), sorted(Log(theirs).state().have)
        )
