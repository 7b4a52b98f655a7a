"""
Tests for L{gossip.tap} and the twistd plugin: the daemon's options and
services, then real daemons syncing real files through real processes.

Every wait for another process is bounded by a deadline, and polls rather
than sleeps; every process a test starts is killed when it ends.
"""

import io
import os
import pwd
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from twisted.application.internet import ClientService
from twisted.application.service import MultiService
from twisted.internet.endpoints import serverFromString
from twisted.internet.protocol import Factory
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import formatEvent, globalLogPublisher
from twisted.python import usage
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase

from gossip import tap
from gossip.control.server import Listener
from gossip.transport import reach
from gossip.sync.settings import SessionSettings
from gossip.store.logfile import Log
from gossip.sync.service import LogService
from gossip.transport.ssh.keys import hostKey
from gossip.transport.startups import MaxStartups
from tests.helpers import (
    DEADLINE,
    ENV,
    ROOT,
    Background,
    Daemon,
    contents,
    daemonCommand,
    flipByte,
    killMentioning,
    oneLine,
    processesMentioning,
    processesServing,
    run,
    say,
    serveCommand,
    twoLogs,
    waitFor,
)


def parse(*args):
    """
    Parse the daemon's options; unless the test says otherwise, with no SSH
    server (whose default host key would be made in the user's home).
    """
    if "--listen" not in args and "--host-key" not in args:
        args += ("--listen", "none")
    if "--control" not in args:
        # Not the user's own control socket.
        args += ("--control", "none")
    options = tap.Options()
    options.parseOptions(list(args))
    return options


class OptionsTests(SynchronousTestCase):
    """
    C{twistd gossip}'s options.
    """

    def setUp(self):
        self.dir = os.path.abspath(self.mktemp())
        os.makedirs(self.dir)
        self.a = os.path.join(self.dir, "a.log")
        self.b = os.path.join(self.dir, "b.log")

    def test_logs(self):
        """
        C{--log} may be repeated; each C{--peer-command} belongs to the
        C{--log} before it, and is split as a shell would.
        """
        options = parse(
            "--log", self.a,
            "--peer-command", "ssh host 'gossip serve --stdio a.log'",
            "--log", self.b,
            "--peer-command", "one",
            "--peer-command", "two --x",
        )  # fmt: skip
        self.assertEqual(
            options["logs"],
            [
                (self.a, [["ssh", "host", "gossip serve --stdio a.log"]]),
                (self.b, [["one"], ["two", "--x"]]),
            ],
        )

    def test_defaults(self):
        """
        One log and no peers; timeouts and rescans as documented.
        """
        options = parse("--log", self.a)
        self.assertEqual(options["logs"], [(self.a, [])])
        self.assertEqual(
            (options["timeout"], options["keepalive"], options["rescan"]), (60.0, 20.0, 30.0)
        )
        self.assertFalse(options["any-name"])
        self.assertFalse(options["poll"])
        self.assertEqual(options["scrub-period"], 86400.0)

    def test_scrubPeriod(self):
        """
        The scrub's period is seconds, 0 for no scrub; nothing negative.
        """
        self.assertEqual(parse("--log", self.a, "--scrub-period", "0")["scrub-period"], 0.0)
        self.assertEqual(parse("--log", self.a, "--scrub-period", "3600")["scrub-period"], 3600.0)
        for bad in ["-1", "nan", "daily"]:
            self.assertRaises(usage.UsageError, parse, "--log", self.a, "--scrub-period", bad)

    def test_createsNothing(self):
        """
        Parsing the options writes nothing (under twistd C{--uid} it runs
        as root): a missing log, and a missing host key, are made when the
        daemon starts (see L{StartTests}).
        """
        key = os.path.join(self.dir, "host")
        parse("--log", self.a, "--listen", "tcp:0:interface=127.0.0.1", "--host-key", key)
        self.assertEqual(os.listdir(self.dir), [])

    def test_logNotUsable(self):
        """
        A log in a directory that is missing is a usage error naming it.
        """
        missing = os.path.join(self.dir, "nowhere", "a.log")
        error = self.assertRaises(usage.UsageError, parse, "--log", missing)
        self.assertEqual(str(error), f"{missing}: No such file or directory")

    def test_peerCommandFirst(self):
        """
        A C{--peer-command} before any C{--log} is a usage error.
        """
        error = self.assertRaises(
            usage.UsageError, parse, "--peer-command", "x", "--log", self.a
        )
        self.assertIn("--log", str(error))

    def test_noLog(self):
        """
        The daemon needs a log.
        """
        self.assertRaises(usage.UsageError, parse)
        self.assertRaises(usage.UsageError, parse, "--any-name")

    def test_directory(self):
        """
        A directory as a log is a usage error that names it and says why.
        """
        error = self.assertRaises(usage.UsageError, parse, "--log", self.dir)
        self.assertIn(self.dir, str(error))
        self.assertIn("directory", str(error))

    def test_badPeerCommand(self):
        """
        An empty peer command, or one a shell could not split, is a usage
        error.
        """
        for command in ("", "   ", "ssh 'host"):
            self.assertRaises(
                usage.UsageError, parse, "--log", self.a, "--peer-command", command
            )

    def test_peerURLs(self):
        """
        C{--peer URL} belongs to the C{--log} before it, beside its peer
        commands; a --peer that is not a URL is a usage error.
        """
        options = parse(
            "--log", self.a, "--peer", "ssh://h:2222/a.log", "--peer-command", "x y",
            "--peer", "tls://h:7423",
        )  # fmt: skip
        self.assertEqual(
            options["logs"], [(self.a, ["ssh://h:2222/a.log", ["x", "y"], "tls://h:7423"])]
        )
        self.assertRaises(usage.UsageError, parse, "--log", self.a, "--peer", self.b)
        self.assertRaises(usage.UsageError, parse, "--peer", "ssh://h", "--log", self.a)

    def test_badSSHPeer(self):
        """
        A malformed ssh:// URL, or an identity file that cannot be read, is
        a usage error at start, not a failure at each reconnect.
        """
        self.assertRaises(usage.UsageError, parse, "--log", self.a, "--peer", "ssh://h:x")
        missing = os.path.join(self.dir, "id_missing")
        error = self.assertRaises(
            usage.UsageError, parse, "--log", self.a, "--peer", "ssh://h", "--identity", missing
        )
        self.assertIn(missing, str(error))

    def test_listenDefault(self):
        """
        With no C{--listen}, the daemon serves SSH on loopback only.
        """
        key = os.path.join(self.dir, "host")
        options = parse("--log", self.a, "--host-key", key)
        self.assertEqual(options["listen"], [tap.DEFAULT_LISTEN])
        self.assertIn("interface=127.0.0.1", tap.DEFAULT_LISTEN)

    def test_hostKeyDirectories(self):
        """
        A C{--host-key} in a directory that does not exist is a typo: an
        error naming it, and nothing made.
        """
        typo = os.path.join(self.dir, "typo", "dir", "key")
        error = self.assertRaises(usage.UsageError, parse, "--log", self.a, "--host-key", typo)
        self.assertIn(typo, str(error))
        self.assertFalse(os.path.exists(os.path.join(self.dir, "typo")))

    def test_listenNone(self):
        """
        C{--listen none} serves nothing, and makes no host key; it cannot
        be mixed with endpoints.
        """
        key = os.path.join(self.dir, "host")
        options = parse("--log", self.a, "--listen", "none", "--host-key", key)
        self.assertEqual(options["listen"], [])
        self.assertFalse(os.path.exists(key))
        self.assertRaises(
            usage.UsageError, parse, "--log", self.a, "--listen", "none", "--listen", "tcp:1"
        )

    def test_badListen(self):
        """
        An endpoint description that Twisted cannot parse is a usage error
        naming it, found before anything listens.
        """
        key = os.path.join(self.dir, "host")
        for description in ["bogus:1", "tcp:abc", "tcp:1:bogus=2", ""]:
            error = self.assertRaises(
                usage.UsageError,
                parse, "--log", self.a, "--listen", description, "--host-key", key,
            )  # fmt: skip
            self.assertTrue(str(error).startswith(f"--listen {description}: "), str(error))
        options = parse("--log", self.a, "--listen", "tcp:0:interface=127.0.0.1", "--host-key", key)
        self.assertEqual(options["listen"], ["tcp:0:interface=127.0.0.1"])

    def test_metrics(self):
        """
        C{--metrics} is off by default and with C{none}; an endpoint that
        Twisted cannot parse is a usage error naming it.
        """
        self.assertIsNone(parse("--log", self.a)["metrics"])
        self.assertIsNone(parse("--log", self.a, "--metrics", "none")["metrics"])
        endpoint = "tcp:9422:interface=127.0.0.1"
        self.assertEqual(parse("--log", self.a, "--metrics", endpoint)["metrics"], endpoint)
        for description in ["bogus:1", "tcp:abc", ""]:
            error = self.assertRaises(
                usage.UsageError, parse, "--log", self.a, "--metrics", description
            )
            self.assertTrue(str(error).startswith(f"--metrics {description}: "), str(error))

    def test_badHostKey(self):
        """
        A host key that is not one is a usage error naming it.
        """
        key = os.path.join(self.dir, "host")
        with open(key, "w") as f:
            f.write("nonsense\n")
        error = self.assertRaises(usage.UsageError, parse, "--log", self.a, "--host-key", key)
        self.assertIn(key, str(error))

    def test_sameName(self):
        """
        Two logs of the same name could not be told apart by peers.
        """
        other = os.path.join(self.dir, "x", "a.log")
        os.makedirs(os.path.dirname(other))
        error = self.assertRaises(usage.UsageError, parse, "--log", self.a, "--log", other)
        self.assertIn("same name", str(error))

    def test_tlsIncomplete(self):
        """
        TLS needs a key, a certificate and a CA; a TLS endpoint without
        them is a usage error.
        """
        self.assertRaises(usage.UsageError, parse, "--log", self.a, "--tls-key", "k")
        self.assertRaises(usage.UsageError, parse, "--log", self.a, "--listen", "ssl:7423")

    def test_numbers(self):
        """
        Timeouts are numbers.
        """
        options = parse("--log", self.a, "--timeout", "2.5", "--rescan", "1")
        self.assertEqual((options["timeout"], options["rescan"]), (2.5, 1.0))
        self.assertRaises(usage.UsageError, parse, "--log", self.a, "--timeout", "soon")

    def test_startups(self):
        """
        Unauthenticated connections are limited as OpenSSH's defaults,
        C{MaxStartups 10:30:100}, and 3 from each address, unless told.
        """
        options = parse("--log", self.a)
        self.assertEqual(options["max-startups"], MaxStartups(10, 30, 100))
        self.assertEqual(options["per-source-max-startups"], 3)
        self.assertEqual(options["login-grace"], 30.0)
        options = parse(
            "--log", self.a, "--max-startups", "5:50:20", "--per-source-max-startups", "2",
            "--login-grace", "10",
        )  # fmt: skip
        self.assertEqual(options["max-startups"], MaxStartups(5, 50, 20))
        self.assertEqual(options["per-source-max-startups"], 2)
        self.assertEqual(options["login-grace"], 10.0)

    def test_badStartups(self):
        """
        A bad limit is a one-line usage error naming the option.
        """
        for option, value in [
            ("--max-startups", "10:30"),
            ("--max-startups", "0"),
            ("--max-startups", "10:0:100"),
            ("--max-startups", "20:30:10"),
            ("--per-source-max-startups", "0"),
            ("--per-source-max-startups", "many"),
            ("--login-grace", "0"),
            ("--login-grace", "-5"),
        ]:
            error = self.assertRaises(usage.UsageError, parse, "--log", self.a, option, value)
            self.assertTrue(str(error).startswith(option), str(error))
            self.assertNotIn("\n", str(error))


class MakeServiceTests(SynchronousTestCase):
    """
    L{tap.makeService}.
    """

    def test_services(self):
        """
        One L{LogService} per log, and one L{ClientService} per peer
        command, made for that log's service.
        """
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        a = os.path.join(directory, "a.log")
        b = os.path.join(directory, "b.log")
        options = parse(
            "--log", a, "--peer-command", "one a",
            "--log", b, "--peer-command", "two b", "--peer-command", "three b",
            "--timeout", "7", "--any-name", "--poll", "--scrub-period", "600",
        )  # fmt: skip
        made = []

        def peerService(reactor, service, command, settings, reach):
            made.append((reactor, service, command, settings))
            return realPeerService(reactor, service, command, settings, reach)

        realPeerService = reach.peerService
        self.patch(tap, "peerService", peerService)
        reactor = MemoryReactorClock()
        top = tap.makeService(options, reactor=reactor)

        self.assertIsInstance(top, MultiService)
        children = list(top)
        logs = [child for child in children if isinstance(child, LogService)]
        clients = [child for child in children if isinstance(child, ClientService)]
        # And one that reloads on SIGHUP, and one that tells systemd it is
        # ready; no control port, with --control none.
        self.assertEqual(len(children), 7)
        self.assertEqual(options["listen"], [])
        self.assertEqual([service.log.path for service in logs], [os.fsencode(a), os.fsencode(b)])
        self.assertEqual(len(clients), 3)
        for service in logs:
            self.assertIs(service.reactor, reactor)
            self.assertFalse(service.useInotify)
            self.assertEqual(service.scrubPeriod, 600.0)
            self.assertFalse(service.running)
        self.assertEqual(
            [(r, s, c) for r, s, c, kwargs in made],
            [
                (reactor, logs[0], ["one", "a"]),
                (reactor, logs[1], ["two", "b"]),
                (reactor, logs[1], ["three", "b"]),
            ],
        )
        for r, s, c, settings in made:
            self.assertEqual(settings, SessionSettings(anyName=True, timeout=7.0))

    def test_metrics(self):
        """
        With C{--metrics}, a service serves the metrics; without, none.
        """
        from gossip.control.metrics import MetricsService

        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        a = os.path.join(directory, "a.log")
        reactor = MemoryReactorClock()
        for given, count in [((), 0), (("--metrics", "tcp:0:interface=127.0.0.1"), 1)]:
            top = tap.makeService(parse("--log", a, *given), reactor=reactor)
            metrics = [child for child in top if isinstance(child, MetricsService)]
            self.assertEqual(len(metrics), count)


class StartTests(TestCase):
    """
    What the daemon makes when it starts, not while it parses its options.
    """

    def setUp(self):
        self.dir = os.path.abspath(self.mktemp())
        os.makedirs(self.dir)
        self.log = os.path.join(self.dir, "a.log")

    def start(self, *args):
        """
        Parse C{ARGS}, make the daemon's service on a fake reactor, and
        start it as twistd does, stopped when the test ends.
        """
        options = parse("--log", self.log, "--poll", "--listen", "tcp:0:interface=127.0.0.1", *args)
        top = tap.makeService(options, reactor=MemoryReactorClock())
        top.privilegedStartService()
        self.assertFalse(os.path.exists(self.log))
        top.startService()
        self.addCleanup(top.stopService)
        return top

    def sshFactory(self, top):
        """
        The factory of C{top}'s one SSH listener.
        """
        [listeners] = [child for child in top if isinstance(child, MultiService)]
        [listener] = listeners
        return listener.factory

    def test_makes(self):
        """
        A missing log is made, with its identity, and a missing host key
        (ed25519, mode 0600) where C{--host-key} says, once the daemon
        starts; the SSH listener serves with that key.
        """
        key = os.path.join(self.dir, "keys", "host")
        os.mkdir(os.path.dirname(key))
        top = self.start("--host-key", key)
        self.assertIsNotNone(contents(self.log).identity)
        self.assertEqual(os.stat(key).st_mode & 0o777, 0o600)
        [served] = self.sshFactory(top).privateKeys.values()
        self.assertEqual(served.type(), "Ed25519")
        self.assertEqual(served, hostKey(key, create=False))

    def test_existingKey(self):
        """
        A host key that exists is served as it is.
        """
        key = os.path.join(self.dir, "host")
        made = hostKey(key)
        top = self.start("--host-key", key)
        self.assertEqual(list(self.sshFactory(top).privateKeys.values()), [made])

    def test_defaultKeyDirectories(self):
        """
        The default host key's directories are made (mode 0700), with it.
        """
        self.patch(os, "environ", dict(os.environ, XDG_CONFIG_HOME=os.path.join(self.dir, "config")))
        made = os.path.join(self.dir, "config", "gossip", "ssh_host_ed25519_key")
        self.start()
        self.assertEqual(os.stat(made).st_mode & 0o777, 0o600)
        self.assertEqual(os.stat(os.path.dirname(made)).st_mode & 0o777, 0o700)

    def test_notALog(self):
        """
        A file that holds no gossip log stops the daemon's start in one
        line naming it.
        """
        with open(self.log, "w") as f:
            f.write("1\n2\n3\n")
        options = parse("--log", self.log, "--poll")
        top = tap.makeService(options, reactor=MemoryReactorClock())
        top.privilegedStartService()
        error = self.assertRaises(SystemExit, top.startService)
        self.assertEqual(error.code, f"gossip: {self.log}: not a gossip log (no intact add in it)")


class UidTests(TestCase):
    """
    A real C{twistd --uid} daemon, started as root.
    """

    def test_madeAsTheUser(self):
        """
        The log, host key and control socket that C{twistd --uid USER
        gossip} makes belong to USER, not to root: they are made once
        privileges are dropped.
        """
        if os.getuid() != 0:
            raise SkipTest("only root can give twistd --uid")
        try:
            nobody = pwd.getpwnam("nobody")
        except KeyError:
            raise SkipTest("no user nobody")
        # Outside the test's own directory, which only root may enter.
        directory = tempfile.mkdtemp(prefix="gossip-uid-")
        self.addCleanup(shutil.rmtree, directory)
        os.chmod(directory, 0o777)
        self.addCleanup(killMentioning, directory)
        log = os.path.join(directory, "a.log")
        key = os.path.join(directory, "host_key")
        logfile = os.path.join(directory, "twistd.log")
        # In a directory of its own, which the daemon makes.
        control = os.path.join(directory, "control", "control.sock")
        Background(
            self,
            [
                sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
                "-n", "--pidfile=", f"--logfile={logfile}",
                "--uid", str(nobody.pw_uid), "--gid", str(nobody.pw_gid),
                "gossip", "--log", log, "--host-key", key,
                "--authorized-keys", os.path.join(directory, "authorized_keys"),
                "--listen", "tcp:0:interface=127.0.0.1", "--control", f"unix:{control}",
            ],
        )  # fmt: skip

        def logged():
            with open(logfile) as f:
                return "created host key" in f.read()

        waitFor(lambda: os.path.exists(logfile) and logged(), message="the host key made")
        waitFor(lambda: os.path.exists(log), message="the log made")
        waitFor(lambda: os.path.exists(control), message="the control socket made")
        for path in (log, key, control, os.path.dirname(control)):
            self.assertEqual(os.stat(path).st_uid, nobody.pw_uid, path)


class ListenerTests(TestCase):
    """
    The daemon's listeners, on real loopback ports: they log where they
    listen, and a port that cannot be had ends the start-up in one line.
    """

    def setUp(self):
        self.events = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def start(self, port):
        """
        Start a listener for SSH peers on loopback C{port}, stopped when the
        test ends.
        """
        from twisted.internet import reactor

        description = f"tcp:{port}:interface=127.0.0.1"
        listener = tap._Listener(
            serverFromString(reactor, description),
            Factory(),
            Listener(description, "SSH", None, None),
        )
        listener.privilegedStartService()
        listener.startService()
        self.addCleanup(listener.stopService)
        return listener

    def listening(self):
        """
        The ports that listeners said they listen on.
        """
        found = []
        for event in self.events:
            match = re.fullmatch(
                r"listening for SSH peers on 127\.0\.0\.1 port (\d+)", formatEvent(event)
            )
            if match is not None:
                found.append(int(match.group(1)))
        return found

    async def test_listens(self):
        """
        A listener says where it listens; stopped, it lets the port go.
        """
        listener = self.start(0)
        [port] = self.listening()
        self.assertNotEqual(port, 0)
        await listener.stopService()
        self.start(port)
        self.assertEqual(self.listening(), [port, port])

    def test_portTaken(self):
        """
        A port that another listener holds stops the daemon's start-up with
        one line naming the endpoint.
        """
        self.start(0)
        [port] = self.listening()
        error = self.assertRaises(SystemExit, self.start, port)
        message = str(error.code)
        self.assertTrue(
            message.startswith(f"gossip: cannot listen on tcp:{port}:interface=127.0.0.1: "),
            message,
        )
        self.assertNotIn("\n", message)
        self.assertEqual(self.listening(), [port])


class PluginTests(TestCase):
    """
    The twistd plugin, in fresh interpreters.
    """

    def python(self, code):
        done = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            env=ENV,
            timeout=DEADLINE,
        )
        self.assertEqual(done.returncode, 0, done.stderr)
        return done.stdout.decode()

    def test_listed(self):
        """
        C{twistd --help} lists gossip, whose plugin is this tree's.
        """
        elsewhere = os.path.abspath(self.mktemp())
        os.makedirs(elsewhere)
        done = subprocess.run(
            [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "--help"],
            capture_output=True,
            env=ENV,
            timeout=DEADLINE,
            cwd=elsewhere,
        )
        self.assertEqual(done.returncode, 0, done.stderr)
        self.assertRegex(done.stdout.decode(), r"\n\s+gossip\s+Serve gossip logs")
        found = self.python(
            "import sys\n"
            "from twisted.plugin import getPlugins\n"
            "from twisted.application.service import IServiceMaker\n"
            "[plugin] = [p for p in getPlugins(IServiceMaker) if p.tapname == 'gossip']\n"
            "print(sys.modules['twisted.plugins.gossip_plugin'].__file__)\n"
            "plugin.options\n"
            "print(sys.modules[plugin.module].__file__)\n"
        ).split("\n")
        # Installed (as CI does) the dropin may come from site-packages;
        # either way it is this tree's, and it names this tree's module.
        with open(found[0], "rb") as f, open(
            os.path.join(ROOT, "twisted", "plugins", "gossip_plugin.py"), "rb"
        ) as ours:
            self.assertEqual(f.read(), ours.read())
        self.assertEqual(found[1], os.path.join(ROOT, "gossip", "tap.py"))

    def test_usageError(self):
        """
        A mistake in C{twistd gossip}'s options is one line on standard
        error and exit status 1, not twistd's whole usage: for one mistake
        in a real C{twistd}, for each of the others as twistd parses them.
        """
        elsewhere = os.path.abspath(self.mktemp())
        os.makedirs(elsewhere)
        done = subprocess.run(
            daemonCommand(os.path.join(elsewhere, "twistd.log"), "--bogus"),
            capture_output=True,
            env=ENV,
            timeout=DEADLINE,
            cwd=elsewhere,
        )
        self.assertEqual(
            (done.returncode, done.stdout, done.stderr.decode()),
            (1, b"", "twistd gossip: option --bogus not recognized (see twistd gossip --help)\n"),
        )
        log = os.path.join(elsewhere, "a.log")
        for args, expected in [
            (["--peer", "ssh://h"], "--peer belongs to a --log: give --log first"),
            (["--log", elsewhere], "Is a directory"),
            (["--log", log, "--listen", "bogus:1"], "--listen bogus:1: Unknown endpoint type"),
            (["--log", log, "--listen", "tcp:1:bogus=2"], "--listen tcp:1:bogus=2: "),
        ]:
            status, out, err = self.twistdOptions(args)
            self.assertEqual((status, out), (1, ""), args)
            lines = err.splitlines()
            self.assertEqual(len(lines), 1, lines)
            self.assertTrue(lines[0].startswith("twistd gossip: "), lines)
            self.assertIn(expected, lines[0])

    def twistdOptions(self, args):
        """
        Parse C{twistd gossip ARGS...} in this process, as twistd does.

        @return: the exit status it asks for (L{None} if none), and what it
            wrote on standard output and standard error.
        """
        from twisted.scripts.twistd import ServerOptions

        out, err = io.StringIO(), io.StringIO()
        saved = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = out, err
        try:
            ServerOptions().parseOptions(["gossip", *args])
            status = None
        except SystemExit as e:
            status = e.code
        finally:
            sys.stdout, sys.stderr = saved
        return status, out.getvalue(), err.getvalue()

    def test_lightImport(self):
        """
        Finding the plugin imports neither gossip nor Conch: C{twistd --help}
        stays fast.
        """
        imported = self.python(
            "import sys\n"
            "import twisted.plugins.gossip_plugin\n"
            "from twisted.plugin import getPlugins\n"
            "from twisted.application.service import IServiceMaker\n"
            "plugins = list(getPlugins(IServiceMaker))\n"
            "print('\\n'.join(sys.modules))\n"
        ).split("\n")
        self.assertEqual([m for m in imported if m == "gossip" or m.startswith("gossip.")], [])
        self.assertEqual([m for m in imported if m.startswith("twisted.conch")], [])
        self.assertNotIn("twisted.internet.reactor", imported)


def peerCommand(log):
    # The peer's log may not exist yet: its serve makes it.
    return shlex.join(serveCommand(log, "--create"))


class DaemonTests(TestCase):
    """
    Real daemons, syncing through C{gossip serve} processes they start.
    """

    def setUp(self):
        self.dir = os.path.abspath(self.mktemp())
        self.a = os.path.join(self.dir, "one", "a.log")
        self.b = os.path.join(self.dir, "two", "a.log")
        os.makedirs(os.path.dirname(self.a))
        os.makedirs(os.path.dirname(self.b))
        # Whatever a test leaves running (serve processes), by its unique
        # directory.
        self.addCleanup(killMentioning, self.dir)

    def test_converge(self):
        """
        Two daemons, each reaching the other's log through a serve process,
        while adds are said on both sides at once: both logs end up with
        every add, each exactly once.  Their logs say whom they connected
        to and how much moved.
        """
        one = Daemon(self, "--log", self.a, "--peer-command", peerCommand(self.b))
        two = Daemon(self, "--log", self.b, "--peer-command", peerCommand(self.a))
        one.waitForLog(r"synced with ")
        two.waitForLog(r"synced with ")
        self.assertIn(f"connected to {peerCommand(self.b)}", one.log())
        self.assertIn(f"connected to {peerCommand(self.a)}", two.log())

        # Said here, as gossip say says them, while both daemons write the
        # same logs.
        rounds = 50
        for i in range(rounds):
            for log in (self.a, self.b):
                say(log, f"n={i}")
        identities = {contents(self.a).identity, contents(self.b).identity}
        wanted = {(by, at) for by in identities for at in range(rounds)}

        start = time.monotonic()
        waitFor(
            lambda: contents(self.a).keySet == wanted and contents(self.b).keySet == wanted,
            message="both logs holding every add",
        )
        print(f"\n  converged {time.monotonic() - start:.2f} s after the last say")
        for log in (self.a, self.b):
            held = contents(log)
            self.assertEqual(held.corrupt, 0)
            self.assertEqual(len(held.keys), len(held.keySet), f"an add written twice in {log}")

        # Stopped, each daemon says what its session moved; between them,
        # every add crossed.
        one.shutDown()
        two.shutDown()
        counts = {}
        for name, daemon in ("one", one), ("two", two):
            match = re.search(
                r"disconnected from .*: (\d+) adds? received, (\d+) sent", daemon.log()
            )
            self.assertIsNotNone(match, daemon.log())
            counts[name] = int(match.group(1)), int(match.group(2))
            # One line for the session's end, not AMP's as well.
            self.assertNotIn("connection lost", daemon.log())
        self.assertGreaterEqual(counts["one"][1] + counts["two"][0], rounds)
        self.assertGreaterEqual(counts["one"][0] + counts["two"][1], rounds)
        # Stopping a daemon ends the serve processes it started.
        waitFor(lambda: not processesMentioning(self.dir), message="serve processes exiting")

    def test_reconnects(self):
        """
        When its peer's process dies, the daemon starts it again, and adds
        flow again.
        """
        one = Daemon(self, "--log", self.a, "--peer-command", peerCommand(self.b))
        one.waitForLog(r"synced with ")
        (first,) = processesServing(self.b)
        os.kill(first, signal.SIGKILL)
        killed = time.monotonic()
        one.waitForLog(r"disconnected from ")

        say(self.b, "m=after")
        wanted = contents(self.b).keySet
        waitFor(lambda: contents(self.a).keySet >= wanted, message="the add arriving")
        print(f"\n  add arrived {time.monotonic() - killed:.2f} s after the peer was killed")
        self.assertEqual(len(re.findall(r"connected to ", one.log())), 2, one.log())
        (second,) = processesServing(self.b)
        self.assertNotEqual(first, second)

        # And the new session streams as the first did.
        say(self.a, "m=later")
        wanted = contents(self.a).keySet
        waitFor(lambda: contents(self.b).keySet == wanted, message="an add going back")

    def test_peerFails(self):
        """
        A peer that cannot be reached is retried without stopping the
        daemon, and is logged.
        """
        missing = os.path.join(self.dir, "no-such-command")
        one = Daemon(self, "--log", self.a, "--peer-command", missing)
        one.waitForLog(r"no-such-command", count=2)
        self.assertIsNone(one.process.poll())
        self.assertNotIn("Traceback", one.log())

    def test_peerErrorsLogged(self):
        """
        What a peer command writes on its standard error goes to the
        daemon's log, a line at a time, naming the command.
        """
        command = "sh -c 'echo first trouble >&2; printf \"second trouble\" >&2; exit 3'"
        one = Daemon(self, "--log", self.a, "--peer-command", command)
        one.waitForLog(r"says: second trouble")
        self.assertIn("sh -c 'echo first trouble", one.log())
        self.assertIn("says: first trouble\n", one.log())
        self.assertNotIn("trouble", one.stderr())

    def test_peerRefuses(self):
        """
        A peer that refuses the session (its log has another name) is
        retried, less and less often, without upsetting the daemon, which
        says why once.
        """
        other = os.path.join(self.dir, "two", "b.log")
        attempts = os.path.join(self.dir, "attempts")
        command = f"sh -c 'echo >> {attempts}; exec \"$@\"' sh {peerCommand(other)}"
        one = Daemon(self, "--log", self.a, "--peer-command", command)
        one.waitForLog(r"refused: .*--any-name")

        def tried():
            with open(attempts) as f:
                return len(f.readlines())

        # The third attempt comes a second and then two after the first.
        waitFor(lambda: tried() >= 3, message="three attempts")
        self.assertIsNone(one.process.poll())
        log = one.log()
        self.assertNotIn("Traceback", log)
        self.assertEqual(len(re.findall("refused: ", log)), 1, log)
        self.assertNotIn("Scheduling retry", log)

    def test_stopsWithHungPeer(self):
        """
        A daemon whose peer hangs (a stuck ssh) still stops promptly, and
        stops the peer's process.
        """
        marker = os.path.join(self.dir, "hung-peer")
        hung = shlex.join([sys.executable, "-c", "import time; time.sleep(100)", marker])
        one = Daemon(self, "--log", self.a, "--peer-command", hung)
        waitFor(lambda: processesMentioning(marker), message="the peer starting")
        start = time.monotonic()
        one.shutDown()
        self.assertLess(time.monotonic() - start, 20)
        waitFor(lambda: not processesMentioning(marker), message="the peer stopping")


class ScrubDaemonTests(TestCase):
    """
    A real daemon's scrub finds damage on its disk and fetches the add lost
    from its peer.
    """

    def test_heals(self):
        directory = os.path.abspath(self.mktemp())
        self.addCleanup(killMentioning, directory)
        a = os.path.join(directory, "one", "a.log")
        b = os.path.join(directory, "two", "a.log")
        os.makedirs(os.path.dirname(a))
        os.makedirs(os.path.dirname(b))
        log = Log(a)
        for n in range(300):
            log.say([(b"n", b"%d" % n)])
        daemon = Daemon(self, "--log", b, "--peer-command", peerCommand(a), "--scrub-period", "2")
        daemon.waitForLog(r"synced with ")
        wanted = contents(a).keySet
        waitFor(lambda: contents(b).keySet >= wanted, message="the sync")
        offset, length = flipByte(b, 150)
        self.assertLess(contents(b).keySet, wanted)
        daemon.waitForLog(rf"a.log: damaged: {length} bytes at byte {offset}")
        waitFor(lambda: contents(b).keySet >= wanted, message="the add fetched again")
        self.assertIn("1 add lost to damage; fetching from peers", daemon.log())
        daemon.shutDown()


class TLSDaemonTests(TestCase):
    """
    A daemon serving its log over TLS, and C{gossip sync} reaching it with
    a C{tls://} URL, as real processes.
    """

    def setUp(self):
        from tests.certs import makeCertificates

        self.dir, self.served, self.local = twoLogs(self)
        self.files = makeCertificates(os.path.join(self.dir, "pki"))
        server = self.files["server"]
        self.daemon = Daemon(
            self,
            "--log", self.served,
            "--listen", "ssl:0:interface=127.0.0.1",
            "--tls-key", server.key, "--tls-cert", server.cert, "--tls-ca", server.ca,
        )  # fmt: skip
        self.port = self.daemon.listeningPort("TLS")

    def sync(self, name):
        files = self.files[name]
        return run(
            "sync", "--once",
            "--tls-key", files.key, "--tls-cert", files.cert, "--tls-ca", files.ca,
            self.local, f"tls://localhost:{self.port}",
        )  # fmt: skip

    def test_syncs(self):
        """
        A client whose certificate the CA signed syncs, and exits 0.
        """
        status, out, err = self.sync("client")
        self.assertEqual(status, 0, err)
        # The daemon logs whom the client's certificate names.
        self.daemon.waitForLog(r"TLS peer authenticated: CN=client \(tls 127\.0\.0\.1:\d+\)")
        self.assertEqual(len(contents(self.local).keySet), 2)
        self.assertEqual(contents(self.local).keySet, contents(self.served).keySet)

    def test_stranger(self):
        """
        A certificate from another CA is refused: exit 1, one line, and
        nothing moves.
        """
        before = contents(self.served).keySet
        status, out, err = self.sync("stranger")
        self.assertEqual(status, 1)
        oneLine(self, err)
        self.assertEqual(contents(self.served).keySet, before)
        self.assertEqual(len(contents(self.local).keySet), 1)

    def test_clonePercentDecoded(self):
        """
        C{gossip clone tls://HOST:PORT/my%20log "my log"} clones the log
        the daemon serves as C{my log}.
        """
        from tests.helpers import freePort, run

        served = os.path.join(self.dir, "server", "my log")
        say(served, "m=spaced")
        port = freePort()
        server = self.files["server"]
        daemon = Daemon(
            self,
            "--log", served,
            "--listen", f"ssl:{port}:interface=127.0.0.1",
            "--tls-key", server.key, "--tls-cert", server.cert, "--tls-ca", server.ca,
        )  # fmt: skip
        daemon.waitForLog(rf"listening for TLS peers on 127\.0\.0\.1 port {port}")
        clone = os.path.join(self.dir, "client", "my log")
        files = self.files["client"]
        status, out, err = run(
            "clone",
            "--tls-key", files.key, "--tls-cert", files.cert, "--tls-ca", files.ca,
            f"tls://localhost:{port}/my%20log", clone,
        )  # fmt: skip
        self.assertEqual(status, 0, err)
        self.assertEqual(contents(clone).keySet, contents(served).keySet)


class ExampleTests(TestCase):
    """
    The example in C{tap-examples/}, run as its README says, from a copy.
    """

    def test_twoLogs(self):
        """
        The daemon serves both logs, syncs the peer's add into notes.log,
        and listens for SSH peers.
        """
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        self.addCleanup(killMentioning, directory)
        tac = os.path.join(directory, "two-logs.tac")
        with open(os.path.join(ROOT, "tap-examples", "two-logs.tac")) as f:
            example = f.read()
        # The example's port may be taken on this machine: any free one will do.
        self.assertIn('"tcp:7422:', example)
        with open(tac, "w") as f:
            f.write(example.replace('"tcp:7422:', '"tcp:0:'))
        os.makedirs(os.path.join(directory, "peer"))
        say(os.path.join(directory, "peer", "notes.log"), "m=from the peer")
        logfile = os.path.join(directory, "twistd.log")
        # In a directory of its own, which the daemon makes.
        control = os.path.join(directory, "control", "control.sock")
        Background(
            self,
            [
                sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
                "-ny", tac, "--pidfile=", f"--logfile={logfile}",
            ],
        )  # fmt: skip

        def logged(text):
            try:
                with open(logfile) as f:
                    return text in f.read()
            except FileNotFoundError:
                return False

        waitFor(lambda: logged("listening for SSH peers on 127.0.0.1 port "))
        waitFor(lambda: logged("synced with "))
        notes = os.path.join(directory, "notes.log")
        self.assertEqual(
            contents(notes).keySet, contents(os.path.join(directory, "peer", "notes.log")).keySet
        )
        self.assertTrue(os.path.exists(os.path.join(directory, "chat.log")))
        self.assertTrue(os.path.exists(os.path.join(directory, "ssh_host_ed25519_key")))
