"""
Tests for L{gossip.control.systemd}, and for running the daemon as a
service: the notify messages a real daemon sends, and two daemons started
in one directory as the docs say.
"""

import os
import re
import shlex
import shutil
import signal
import socket
import sys
import tempfile
import uuid

from twisted.internet.defer import Deferred
from twisted.internet.testing import MemoryReactor
from twisted.trial.unittest import SynchronousTestCase, TestCase

from gossip.control.systemd import NotifyService, notify, notifyAddress
from tests.helpers import DEADLINE, ENV, ROOT, Background, Daemon, killMentioning


def notifySocket(testCase, abstract=False):
    """
    A datagram socket bound as a service manager's notify socket, closed
    when the test ends.

    @return: the socket, and what C{$NOTIFY_SOCKET} would say to reach it.
    """
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    testCase.addCleanup(sock.close)
    if abstract:
        name = f"gossip-test-{uuid.uuid4().hex}"
        sock.bind("\0" + name)
        variable = "@" + name
    else:
        # A short directory: a UNIX socket's path is at most 107 bytes.
        directory = tempfile.mkdtemp(prefix="gossip-notify-")
        testCase.addCleanup(shutil.rmtree, directory)
        variable = os.path.join(directory, "notify")
        sock.bind(variable)
    sock.settimeout(DEADLINE)
    return sock, variable


def pending(sock):
    """
    The messages waiting on C{sock}, without waiting for more.
    """
    messages = []
    sock.setblocking(False)
    try:
        while True:
            messages.append(sock.recv(4096).decode("utf-8"))
    except BlockingIOError:
        return messages
    finally:
        sock.settimeout(DEADLINE)


def run(reactor):
    """
    Call what a L{MemoryReactor} was asked to call once it runs.
    """
    for f, args, kwargs in reactor.whenRunningHooks:
        f(*args, **kwargs)


class _Waiting:
    """
    A stand-in for a listener's service: its port's Deferred, which the
    test fires.
    """

    def __init__(self):
        self._waitingForPort = Deferred()


class NotifyTests(SynchronousTestCase):
    """
    L{notifyAddress}, L{notify} and L{NotifyService}.
    """

    def test_address(self):
        """
        C{$NOTIFY_SOCKET} is a path, or with C{@} a name in the abstract
        namespace; unset or empty, there is no manager to tell.
        """
        self.assertEqual(notifyAddress({"NOTIFY_SOCKET": "/run/x/notify"}), "/run/x/notify")
        self.assertEqual(notifyAddress({"NOTIFY_SOCKET": "@abc"}), "\0abc")
        self.assertIsNone(notifyAddress({"NOTIFY_SOCKET": ""}))
        self.assertIsNone(notifyAddress({}))

    def test_notify(self):
        """
        A message reaches a path's socket and an abstract one as one
        datagram; a socket that is gone is logged, not raised.
        """
        for abstract in (False, True):
            sock, variable = notifySocket(self, abstract)
            self.assertTrue(notify(notifyAddress({"NOTIFY_SOCKET": variable}), "READY=1"))
            self.assertEqual(sock.recv(4096), b"READY=1")
        self.assertFalse(notify("\0gossip-test-nobody-" + uuid.uuid4().hex, "READY=1"))

    def test_readyOnceListening(self):
        """
        C{READY=1} is sent once every listener listens and the reactor
        runs, not before; C{STOPPING=1} when the service stops.
        """
        sock, variable = notifySocket(self)
        listeners = [_Waiting(), _Waiting()]
        reactor = MemoryReactor()
        service = NotifyService(reactor, listeners, environ={"NOTIFY_SOCKET": variable})
        service.startService()
        listeners[0]._waitingForPort.callback(object())
        listeners[1]._waitingForPort.callback(object())
        # Nor before the reactor runs, with its SIGTERM handler.
        self.assertEqual(pending(sock), [])
        run(reactor)
        self.assertEqual(pending(sock), ["READY=1"])
        service.stopService()
        self.assertEqual(pending(sock), ["STOPPING=1"])

    def test_notReadyIfNotListening(self):
        """
        A listener that cannot listen (Twisted's service leaves L{None} for
        its port) makes no C{READY=1}.
        """
        sock, variable = notifySocket(self)
        listener = _Waiting()
        reactor = MemoryReactor()
        NotifyService(reactor, [listener], environ={"NOTIFY_SOCKET": variable}).startService()
        run(reactor)
        listener._waitingForPort.callback(None)
        self.assertEqual(pending(sock), [])

    def test_noManager(self):
        """
        Without C{$NOTIFY_SOCKET}, nothing is sent, and nothing waited for.
        """
        listener = _Waiting()
        service = NotifyService(MemoryReactor(), [listener], environ={})
        service.startService()
        service.stopService()
        self.assertEqual(listener._waitingForPort.callbacks, [])


class DaemonNotifyTests(TestCase):
    """
    A real C{twistd -n gossip}, with C{$NOTIFY_SOCKET} naming a socket the
    test binds, as systemd would for C{Type=notify}.
    """

    def test_readyAndStopping(self):
        """
        C{READY=1} arrives once the daemon listens for peers and on its
        control socket; C{STOPPING=1} on SIGTERM, and the daemon ends as
        twistd does, by the signal again, which systemd counts as a clean
        stop.
        """
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        self.addCleanup(killMentioning, directory)
        sock, variable = notifySocket(self, abstract=True)
        control = os.path.join(tempfile.mkdtemp(prefix="gossip-control-"), "control.sock")
        self.addCleanup(shutil.rmtree, os.path.dirname(control))
        daemon = Daemon(
            self,
            "--log", os.path.join(directory, "a.log"),
            "--listen", "tcp:0:interface=127.0.0.1",
            "--host-key", os.path.join(directory, "host_key"),
            "--authorized-keys", os.path.join(directory, "authorized_keys"),
            "--control", f"unix:{control}",
            env=dict(ENV, NOTIFY_SOCKET=variable),
        )  # fmt: skip
        self.assertEqual(sock.recv(4096), b"READY=1")
        # Ready means listening: the port takes connections, and the
        # control socket is there.
        port = int(re.search(r"listening for SSH peers on 127\.0\.0\.1 port (\d+)", daemon.log()).group(1))
        socket.create_connection(("127.0.0.1", port), timeout=DEADLINE).close()
        self.assertTrue(os.path.exists(control))
        daemon.shutDown()
        self.assertEqual(sock.recv(4096), b"STOPPING=1")
        self.assertEqual(daemon.process.returncode, -signal.SIGTERM)
        self.assertEqual(pending(sock), [])


def documentedCommand(*args, pidfile=True):
    """
    C{twistd -n --pidfile= gossip ARGS...}, as the README and the systemd
    unit run the daemon (without C{--pidfile=} if not C{pidfile}).
    """
    twistd = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "-n"]
    return twistd + (["--pidfile="] if pidfile else []) + ["gossip", *args]


class OneDirectoryTests(TestCase):
    """
    Two daemons started in one directory.
    """

    def setUp(self):
        self.dir = os.path.abspath(self.mktemp())
        os.makedirs(self.dir)
        self.addCleanup(killMentioning, self.dir)
        self.sockets = tempfile.mkdtemp(prefix="gossip-two-")
        self.addCleanup(shutil.rmtree, self.sockets)

    def start(self, name, pidfile=True):
        """
        Start a daemon for C{NAME.log} in the test's directory, with its
        own control socket and no listener, as docs/operations.md says two
        daemons of one user are run.

        @return: the daemon, and the socket it tells it is ready on.
        """
        sock, variable = notifySocket(self, abstract=True)
        daemon = Background(
            self,
            documentedCommand(
                "--log", os.path.join(self.dir, f"{name}.log"),
                "--listen", "none",
                "--control", f"unix:{os.path.join(self.sockets, name + '.sock')}",
                pidfile=pidfile,
            ),
            cwd=self.dir,
            env=dict(ENV, NOTIFY_SOCKET=variable),
        )  # fmt: skip
        return daemon, sock

    def test_both(self):
        """
        Run as documented (C{--pidfile=}), both start, and leave no
        C{twistd.pid} behind.
        """
        started = [self.start("one"), self.start("two")]
        for daemon, sock in started:
            self.assertEqual(sock.recv(4096), b"READY=1")
            self.assertIsNone(daemon.process.poll())
        self.assertFalse(os.path.exists(os.path.join(self.dir, "twistd.pid")))

    def test_withoutPidfile(self):
        """
        Without C{--pidfile=}, the second is refused for the first's
        C{twistd.pid}: what the docs warn of.
        """
        first, sock = self.start("one", pidfile=False)
        self.assertEqual(sock.recv(4096), b"READY=1")
        second, sock = self.start("two", pidfile=False)
        second.process.wait(DEADLINE)
        self.assertNotEqual(second.process.returncode, 0)
        self.assertIn("Another twistd server is running", second.stderr())
        self.assertIsNone(first.process.poll())


class UnitTests(TestCase):
    """
    The systemd unit in C{tap-examples/}.
    """

    def unit(self):
        """
        The unit's C{[Service]} settings.
        """
        settings = {}
        section = None
        with open(os.path.join(ROOT, "tap-examples", "gossip.service")) as f:
            for line in f:
                line = line.strip()
                if line.startswith("["):
                    section = line
                elif line and not line.startswith("#") and section == "[Service]":
                    name, value = line.split("=", 1)
                    settings[name] = value
        return settings

    def test_runs(self):
        """
        The unit's C{ExecStart}, with C{%h} a home of the test's and its
        twistd this tree's, starts a daemon that tells the manager it is
        ready.
        """
        settings = self.unit()
        self.assertEqual((settings["Type"], settings["Restart"]), ("notify", "on-failure"))
        home = os.path.abspath(self.mktemp())
        os.makedirs(home)
        self.addCleanup(killMentioning, home)
        argv = shlex.split(settings["ExecStart"].replace("%h", home))
        self.assertEqual(argv[0], os.path.join(home, "gossip", "venv", "bin", "twistd"))
        self.assertEqual(argv[1:4], ["-n", "--pidfile=", "gossip"])
        sock, variable = notifySocket(self, abstract=True)
        sockets = tempfile.mkdtemp(prefix="gossip-unit-")
        self.addCleanup(shutil.rmtree, sockets)
        # Not the user's own control socket, nor port 7422.
        extra = ["--listen", "none", "--control", f"unix:{os.path.join(sockets, 'control.sock')}"]
        Background(
            self,
            documentedCommand(*argv[4:], *extra),
            cwd=home,
            env=dict(ENV, NOTIFY_SOCKET=variable, HOME=home),
        )
        self.assertEqual(sock.recv(4096), b"READY=1")
        self.assertTrue(os.path.exists(os.path.join(home, "notes.log")))
