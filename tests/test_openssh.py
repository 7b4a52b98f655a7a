"""
gossip and OpenSSH, for real: the stock OpenSSH client reaching a gossip
daemon's subsystem, gossip's client reaching a stock C{sshd} that runs
C{gossip serve --stdio}, and two daemons syncing over Conch.

Every process is real and every connection is loopback TCP.  The tests
that need OpenSSH skip, saying so, where it is not installed; C{.ci/run}
installs it, so in CI they run.
"""

import os
import shlex
import shutil
import socket
import subprocess
import tempfile
import sys
import time

from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from twisted.conch.ssh import keys
from twisted.trial.unittest import SkipTest, TestCase

from tests.helpers import (
    DEADLINE,
    ENV,
    ROOT,
    Background,
    Daemon,
    contents,
    freePort,
    gossipCommand,
    killMentioning,
    oneLine,
    run,
    say,
    twoLogs,
    waitFor,
)

SSH = shutil.which("ssh")
SSHD = shutil.which("sshd") or next(
    (path for path in ("/usr/sbin/sshd", "/usr/local/sbin/sshd") if os.path.exists(path)), None
)
NO_SSH = None if SSH else "the OpenSSH client (ssh) is not installed"
NO_SSHD = None if SSHD else "the OpenSSH server (sshd) is not installed"
if os.environ.get("GOSSIP_REQUIRE_OPENSSH") and (NO_SSH or NO_SSHD):
    # CI sets this: there, these tests must run.
    raise RuntimeError(f"GOSSIP_REQUIRE_OPENSSH is set, but {NO_SSH or NO_SSHD}")


def waitForPort(port, process, timeout=DEADLINE):
    def listening():
        if process.poll() is not None:
            raise AssertionError(f"exited ({process.returncode}) before listening on {port}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            return False

    waitFor(listening, timeout, message=f"port {port}")


def writeKey(path, key):
    """
    Write C{key} as OpenSSH writes private keys: mode 0600, and the public
    half in C{PATH.pub}.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.toString("openssh"))
    with open(path + ".pub", "wb") as f:
        f.write(key.public().toString("openssh") + b" test\n")
    return path


def publicLine(key, options=""):
    line = key.public().toString("openssh").decode() + " test"
    return f"{options} {line}" if options else line


class Keys:
    """
    Keys and files for a test: a client key pair, a host key pair, a
    C{known_hosts} file, in a directory of the test's own.
    """

    def __init__(self, directory):
        self.dir = directory
        os.makedirs(directory, exist_ok=True)
        self.clientKey = keys.Key(ed25519.Ed25519PrivateKey.generate())
        self.client = writeKey(os.path.join(directory, "id_ed25519"), self.clientKey)
        self.hostKey = keys.Key(ed25519.Ed25519PrivateKey.generate())
        self.host = writeKey(os.path.join(directory, "host_key"), self.hostKey)
        self.knownHosts = os.path.join(directory, "known_hosts")

    def trust(self, port, key=None):
        with open(self.knownHosts, "a") as f:
            f.write(f"[127.0.0.1]:{port} {(key or self.hostKey).public().toString('openssh').decode()}\n")


def sshCommand(keys, port, *args):
    """
    The stock OpenSSH client, told to use only this test's files.
    """
    return [
        SSH,
        "-F", "/dev/null",
        "-o", "BatchMode=yes",
        "-o", "IdentitiesOnly=yes",
        "-o", "IdentityAgent=none",
        "-o", f"UserKnownHostsFile={keys.knownHosts}",
        "-o", "StrictHostKeyChecking=yes",
        "-o", "LogLevel=ERROR",
        "-i", keys.client,
        "-p", str(port),
        *args,
    ]  # fmt: skip


class GossipDaemonMixin:
    """
    A C{twistd gossip} daemon serving C{a.log} over SSH on a loopback port.
    """

    def setUp(self):
        self.dir, self.served, self.local = twoLogs(self)
        self.keys = Keys(os.path.join(self.dir, "keys"))
        self.authorized = os.path.join(self.dir, "authorized_keys")
        with open(self.authorized, "w") as f:
            f.write(publicLine(self.keys.clientKey) + "\n")
        self.daemon = Daemon(
            self,
            "--log", self.served,
            "--listen", "tcp:0:interface=127.0.0.1",
            "--host-key", self.keys.host,
            "--authorized-keys", self.authorized,
        )  # fmt: skip
        self.port = self.daemon.listeningPort("SSH")
        self.keys.trust(self.port)


class OpenSSHClientTests(GossipDaemonMixin, TestCase):
    """
    The stock OpenSSH client and the gossip daemon's Conch server.
    """

    skip = NO_SSH

    def test_subsystem(self):
        """
        C{gossip sync --once LOG -- ssh -s ... gossip} syncs through the
        daemon's subsystem and exits 0, and so does ssh.
        """
        status, out, err = run(
            "sync", "--once", self.local, "--", *sshCommand(self.keys, self.port, "-s", "127.0.0.1", "gossip")
        )
        self.assertEqual(status, 0, err)
        self.assertEqual(contents(self.local).keySet, contents(self.served).keySet)
        self.assertEqual(len(contents(self.local).keySet), 2)
        self.assertNotIn("exit", err)

    def test_exitStatus(self):
        """
        The subsystem ends with an exit status: ssh exits 0 when its input
        ends at once, rather than OpenSSH's 255 for a channel closed
        without one.
        """
        done = subprocess.run(
            sshCommand(self.keys, self.port, "-s", "127.0.0.1", "gossip"),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=DEADLINE,
        )
        self.assertEqual(done.returncode, 0, done.stderr)

    def test_nothingElse(self):
        """
        No shell, no command, no other subsystem, no port forwarding; each
        refusal is logged.
        """
        for args in (
            ["127.0.0.1", "true"],
            ["-tt", "127.0.0.1"],
            ["-s", "127.0.0.1", "sftp"],
            ["-W", "127.0.0.1:22", "127.0.0.1"],
        ):
            done = subprocess.run(
                sshCommand(self.keys, self.port, *args),
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=DEADLINE,
            )
            self.assertNotEqual(done.returncode, 0, args)
        self.daemon.waitForLog(r"refused a 'exec' request")
        self.daemon.waitForLog(r"refused a 'shell' request")
        self.daemon.waitForLog(r"refused the 'sftp' subsystem")
        self.daemon.waitForLog(r"refused a 'direct-tcpip' channel")

    def test_publicKeyOnly(self):
        """
        The server offers public-key authentication and nothing else, and a
        key it does not list is refused.
        """
        done = subprocess.run(
            sshCommand(self.keys, self.port, "-v", "-o", "PubkeyAuthentication=no", "127.0.0.1", "true"),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=DEADLINE,
        )
        self.assertEqual(done.returncode, 255)
        offered = [
            line for line in done.stderr.decode().splitlines()
            if "Authentications that can continue" in line
        ]  # fmt: skip
        self.assertTrue(offered, done.stderr)
        for line in offered:
            self.assertTrue(line.endswith("continue: publickey"), line)

        stranger = Keys(os.path.join(self.dir, "stranger"))
        stranger.trust(self.port, self.keys.hostKey)
        done = subprocess.run(
            sshCommand(stranger, self.port, "-s", "127.0.0.1", "gossip"),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=DEADLINE,
        )
        self.assertEqual(done.returncode, 255)
        self.assertIn(b"Permission denied (publickey)", done.stderr)
        self.daemon.waitForLog(r"refused key SHA256:")


class GossipClientTests(GossipDaemonMixin, TestCase):
    """
    gossip's own client against the daemon, as real processes.
    """

    def sync(self, *args, url=None):
        url = url or f"ssh://127.0.0.1:{self.port}"
        return run(
            "sync", "--once",
            "--identity", self.keys.client,
            "--known-hosts", self.keys.knownHosts,
            *args, self.local, url,
        )  # fmt: skip

    def test_syncs(self):
        status, out, err = self.sync()
        self.assertEqual(status, 0, err)
        self.assertEqual(len(contents(self.local).keySet), 2)
        self.assertEqual(contents(self.local).keySet, contents(self.served).keySet)

    def test_unknownHost(self):
        """
        An unknown host key: one line naming its fingerprint, exit 1.
        """
        os.remove(self.keys.knownHosts)
        status, out, err = self.sync()
        self.assertEqual(status, 1)
        line = oneLine(self, err)
        self.assertIn(
            self.keys.hostKey.fingerprint(keys.FingerprintFormats.SHA256_BASE64).rstrip("="), line
        )
        status, out, err = self.sync("--accept-new-host-keys")
        self.assertEqual(status, 0, err)

    def test_clone(self):
        """
        C{gossip clone ssh://...} makes a new log from the daemon's.
        """
        new = os.path.join(self.dir, "new", "a.log")
        os.makedirs(os.path.dirname(new))
        status, out, err = run(
            "clone",
            "--identity", self.keys.client,
            "--known-hosts", self.keys.knownHosts,
            f"ssh://127.0.0.1:{self.port}/a.log", new,
        )  # fmt: skip
        self.assertEqual(status, 0, err)
        self.assertEqual(contents(new).keySet, contents(self.served).keySet)
        self.assertNotEqual(contents(new).identity, contents(self.served).identity)


class FloodTests(GossipDaemonMixin, TestCase):
    """
    The daemon, with its default limits, under a flood of unauthenticated
    connections from 127.0.0.2: peers from elsewhere get in, and refused
    peers are told why, by OpenSSH's client and by gossip's.
    """

    skip = NO_SSH

    def flood(self, count, host="127.0.0.2"):
        """
        Open C{count} connections from C{host} that send their version line
        and nothing more, and wait until the daemon has closed all but the
        3 it lets wait; return what each closed one received.
        """
        sockets = []
        for i in range(count):
            s = socket.socket()
            self.addCleanup(s.close)
            s.bind((host, 0))
            s.connect(("127.0.0.1", self.port))
            s.sendall(b"SSH-2.0-flooder\r\n")
            s.setblocking(False)
            sockets.append(s)
        received = {s: b"" for s in sockets}
        ended = []

        def refused():
            for s in sockets:
                if s in ended:
                    continue
                try:
                    data = s.recv(65536)
                except BlockingIOError:
                    continue
                except ConnectionResetError:
                    data = b""
                received[s] += data
                if not data:
                    ended.append(s)
            return len(ended) >= count - 3

        waitFor(refused, message="the flood's refusals")
        return [received[s] for s in ended]

    def test_peerGetsIn(self):
        """
        While a flooder on 127.0.0.2 holds all the unauthenticated
        connections it may and tries 47 more, each refused with the reason,
        peers on 127.0.0.1 sync with gossip's client and OpenSSH's; OpenSSH's
        client on 127.0.0.2 shows the reason.  The daemon logs the refusals
        from 127.0.0.2 once.
        """
        replies = self.flood(50)
        self.assertEqual(len(replies), 47)
        for reply in replies:
            self.assertIn(b"too many unauthenticated connections from your address", reply)
        status, out, err = run(
            "sync", "--once",
            "--identity", self.keys.client,
            "--known-hosts", self.keys.knownHosts,
            self.local, f"ssh://127.0.0.1:{self.port}",
        )  # fmt: skip
        self.assertEqual(status, 0, err)
        self.assertEqual(contents(self.local).keySet, contents(self.served).keySet)
        ssh = sshCommand(self.keys, self.port, "-s", "127.0.0.1", "gossip")
        status, out, err = run("sync", "--once", self.local, "--", *ssh)
        self.assertEqual(status, 0, err)
        done = subprocess.run(
            sshCommand(self.keys, self.port, "-b", "127.0.0.2", "-s", "127.0.0.1", "gossip"),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=DEADLINE,
        )
        self.assertEqual(done.returncode, 255)
        self.assertIn(
            b"too many unauthenticated connections from your address; try again later",
            done.stderr,
        )
        self.daemon.waitForLog(r"refused a connection from 127\.0\.0\.2:")
        self.assertEqual(self.daemon.log().count("refused a connection from 127.0.0.2:"), 1)

    def test_gossipClientTold(self):
        """
        gossip's client, refused, says why in one line and exits 1.
        """
        self.flood(3, "127.0.0.1")
        status, out, err = run(
            "sync", "--once",
            "--identity", self.keys.client,
            "--known-hosts", self.keys.knownHosts,
            self.local, f"ssh://127.0.0.1:{self.port}",
        )  # fmt: skip
        self.assertEqual(status, 1)
        self.assertIn(
            "the server hung up: too many unauthenticated connections from your "
            "address; try again later",
            oneLine(self, err),
        )


class OpenSSHServerTests(TestCase):
    """
    gossip's client against a stock OpenSSH server that runs C{gossip serve
    --stdio}: as the C{gossip} subsystem, or as a key's forced command.
    """

    skip = NO_SSHD

    def setUp(self):
        self.dir, self.served, self.local = twoLogs(self)
        self.keys = Keys(os.path.join(self.dir, "keys"))
        serve = shlex.join(
            ["env", f"PYTHONPATH={ROOT}", sys.executable, "-m", "gossip", "serve", "--stdio", self.served]
        )
        self.rsaKey = keys.Key(rsa.generate_private_key(65537, 2048))
        self.rsa = writeKey(os.path.join(self.dir, "keys", "id_rsa"), self.rsaKey)
        authorized = os.path.join(self.dir, "authorized_keys")
        with open(authorized, "w") as f:
            f.write(publicLine(self.keys.clientKey) + "\n")
            forced = serve.replace("\\", "\\\\").replace('"', '\\"')
            f.write(publicLine(self.rsaKey, f'restrict,command="{forced}"') + "\n")
        self.port = freePort()
        config = os.path.join(self.dir, "sshd_config")
        with open(config, "w") as f:
            f.write(
                f"Port {self.port}\n"
                "ListenAddress 127.0.0.1\n"
                f"HostKey {self.keys.host}\n"
                f"PidFile {self.dir}/sshd.pid\n"
                f"AuthorizedKeysFile {authorized}\n"
                "StrictModes no\n"
                "UsePAM no\n"
                "PasswordAuthentication no\n"
                "KbdInteractiveAuthentication no\n"
                "PermitRootLogin prohibit-password\n"
                f"Subsystem gossip {serve}\n"
            )
        # sshd's privilege separation needs its empty directory.
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        self.sshd = Background(self, [SSHD, "-D", "-e", "-f", config])
        waitForPort(self.port, self.sshd.process)
        self.keys.trust(self.port)

    def sync(self, identity):
        return run(
            "sync", "--once",
            "--identity", identity,
            "--known-hosts", self.keys.knownHosts,
            self.local, f"ssh://127.0.0.1:{self.port}",
        )  # fmt: skip

    def test_subsystem(self):
        """
        The C{Subsystem gossip ...} line: synced, exit 0.
        """
        status, out, err = self.sync(self.keys.client)
        self.assertEqual(status, 0, err + self.sshd.stderr())
        self.assertEqual(len(contents(self.local).keySet), 2)
        self.assertEqual(contents(self.local).keySet, contents(self.served).keySet)

    def agent(self, *keyFiles):
        """
        A real ssh-agent holding C{keyFiles}; return its socket's path.
        """
        if not shutil.which("ssh-agent") or not shutil.which("ssh-add"):
            if os.environ.get("GOSSIP_REQUIRE_OPENSSH"):
                self.fail("GOSSIP_REQUIRE_OPENSSH is set, but ssh-agent is not installed")
            raise SkipTest("ssh-agent and ssh-add are not installed")
        # A UNIX socket's path is limited to about 100 bytes, which a test's
        # own directory (in a checkout anywhere, under trial -j2's worker
        # directories) may exceed: the socket goes in a short one.
        directory = tempfile.mkdtemp(prefix="gossip-agent-", dir="/tmp")
        self.addCleanup(shutil.rmtree, directory, True)
        socketPath = os.path.join(directory, "agent.sock")
        agent = Background(self, ["ssh-agent", "-D", "-a", socketPath])
        waitFor(lambda: os.path.exists(socketPath), message="the agent's socket")
        for path in keyFiles:
            subprocess.run(
                ["ssh-add", "-q", path],
                env=dict(os.environ, SSH_AUTH_SOCK=socketPath),
                check=True,
                capture_output=True,
                timeout=DEADLINE,
            )
        self.assertIsNone(agent.process.poll())
        return socketPath

    def syncWithAgent(self, socketPath):
        """
        C{gossip sync} with no identity files at all (an empty home), and
        the agent.
        """
        home = os.path.join(self.dir, "home")
        os.makedirs(home, exist_ok=True)
        done = subprocess.run(
            gossipCommand(
                "sync", "--once", "--known-hosts", self.keys.knownHosts,
                self.local, f"ssh://127.0.0.1:{self.port}",
            ),
            env=dict(ENV, HOME=home, SSH_AUTH_SOCK=socketPath),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=DEADLINE,
        )  # fmt: skip
        return done.returncode, done.stderr.decode()

    def test_agent(self):
        """
        The ssh-agent's ed25519 key signs, as with OpenSSH's client.
        """
        status, err = self.syncWithAgent(self.agent(self.keys.client))
        self.assertEqual(status, 0, err + self.sshd.stderr())
        self.assertEqual(contents(self.local).keySet, contents(self.served).keySet)

    def test_agentRSA(self):
        """
        The agent's RSA key is asked for a SHA-256 signature, which OpenSSH
        accepts (it refuses SHA-1).
        """
        status, err = self.syncWithAgent(self.agent(self.rsa))
        self.assertEqual(status, 0, err + self.sshd.stderr())
        self.assertEqual(contents(self.local).keySet, contents(self.served).keySet)

    def test_noKeys(self):
        """
        No key accepted: one line saying which were tried, exit 1.
        """
        status, err = self.syncWithAgent(self.agent())
        self.assertEqual(status, 1)
        self.assertIn("no key was accepted (tried: none)", oneLine(self, err))

    def test_forcedCommand(self):
        """
        A key whose C{authorized_keys} line forces C{gossip serve --stdio}
        (an RSA key, which must sign with SHA-256 for OpenSSH to take it).
        """
        status, out, err = self.sync(self.rsa)
        self.assertEqual(status, 0, err + self.sshd.stderr())
        self.assertEqual(contents(self.local).keySet, contents(self.served).keySet)


class DaemonPairTests(TestCase):
    """
    Two daemons that reach each other over Conch, in continuous mode.
    """

    def daemon(self, name, keys, authorized, port, peerPort):
        log = os.path.join(self.dir, name, "a.log")
        return log, Daemon(
            self,
            "--log", log,
            "--peer", f"ssh://127.0.0.1:{peerPort}",
            "--listen", f"tcp:{port}:interface=127.0.0.1",
            "--host-key", keys.host,
            "--authorized-keys", authorized,
            "--identity", keys.client,
            "--known-hosts", keys.knownHosts,
        )  # fmt: skip

    def test_converge(self):
        """
        Adds said on both sides reach both logs, each exactly once.
        """
        self.dir = os.path.abspath(self.mktemp())
        self.addCleanup(killMentioning, self.dir)
        one, two = Keys(os.path.join(self.dir, "k1")), Keys(os.path.join(self.dir, "k2"))
        ports = freePort(), freePort()
        one.trust(ports[1], two.hostKey)
        two.trust(ports[0], one.hostKey)
        authorized = os.path.join(self.dir, "authorized_keys")
        with open(authorized, "w") as f:
            f.write(publicLine(one.clientKey) + "\n" + publicLine(two.clientKey) + "\n")
        for name in ("one", "two"):
            os.makedirs(os.path.join(self.dir, name))
        a, first = self.daemon("one", one, authorized, ports[0], ports[1])
        b, second = self.daemon("two", two, authorized, ports[1], ports[0])
        # Each lists the other: one session links them, dialled by either.
        first.waitForLog(r"synced with ")
        second.waitForLog(r"synced with ")
        rounds = 20
        start = time.monotonic()
        for i in range(rounds):
            # Said here, as gossip say says them, while both daemons write
            # the same logs.
            for log in (a, b):
                say(log, f"n={i}")
        identities = {contents(a).identity, contents(b).identity}
        wanted = {(by, at) for by in identities for at in range(rounds)}
        waitFor(
            lambda: contents(a).keySet == wanted and contents(b).keySet == wanted,
            message="both logs holding every add",
        )
        print(f"\n  converged {time.monotonic() - start:.2f} s after the first say")
        for log in (a, b):
            held = contents(log)
            self.assertEqual(held.corrupt, 0)
            self.assertEqual(len(held.keys), len(held.keySet), f"an add written twice in {log}")
