"""
Measure gossip's sync over SSH, Conch to Conch on loopback: a clone of a
large log from a gossip daemon, beside OpenSSH copying the same file; how
soon a sync's first add is in the local log; and the memory both sides of
the clone grow by.

    python bench/bench_ssh.py            # the full run: 1M adds, a few minutes
    python bench/bench_ssh.py --quick    # 100k adds, to check it works

Logs, keys and the servers' files are made under --dir (default
/tmp/gossip-bench-ssh), never in the repository.  The daemons and clients
run gossip from this checkout.  docs/performance-ssh.md says what is
measured, how, and the results.
"""

import argparse
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench_log import loadAverage, machine  # noqa: E402
from bench_sync import (  # noqa: E402
    FileWatch,
    LineTimes,
    buildLog,
    cachePath,
    calibrate,
    codeVersion,
    countLines,
    environment,
    fine,
    mb,
    median,
    met,
    readStatus,
    removeLog,
    spawn,
    sec,
    worst,
)
from gossip.store.logfile import Log  # noqa: E402

MB = 1e6
# Every log synced here has this base name: peers must share it.
NAME = "sync.log"
SSHD_PATH = shutil.which("sshd") or "/usr/sbin/sshd"
SSH_PATH = shutil.which("ssh") or "/usr/bin/ssh"
# The processes timed run here (the bench directory), never in the
# checkout: "python -m" puts the working directory first on sys.path.
WORKDIR = None

# Targets on a 2-core machine.
TARGETS = {
    "clone": 8.0,  # s, clone of 1M adds over SSH, whole command
    "ratio": 10.0,  # gossip clone / OpenSSH "ssh host cat LOG", whole commands
    "first": 0.300,  # s, connect to the first add in the local log
    "rss": 50.0,  # MB, peak RSS growth of each side of the clone
}

# A gossip command under cProfile, its figures written however it leaves:
# by os._exit, which skips the interpreter's exit, or by SystemExit.
PROFILED = """\
import cProfile, os, sys
out = sys.argv.pop(1)
profile = cProfile.Profile()
_exit = os._exit
def dump():
    profile.disable()
    profile.dump_stats(out)
def leave(status):
    dump()
    _exit(status)
os._exit = leave
sys.argv[0] = "gossip"
from gossip.cli.main import run
profile.enable()
try:
    run()
finally:
    dump()
"""


# Keys, servers and clients


def freePort():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def keygen(path):
    for p in (path, path + ".pub"):
        if os.path.exists(p):
            os.unlink(p)
    subprocess.run(["ssh-keygen", "-t", "ed25519", "-N", "", "-q", "-f", path], check=True)
    return path


def publicLine(path):
    with open(path + ".pub") as f:
        return f.read().strip()


class Keys:
    """
    The client's key, one host key for the gossip daemons and one for
    sshd, the C{authorized_keys} both servers read and the client's
    C{known_hosts}.
    """

    def __init__(self, directory):
        os.makedirs(directory, exist_ok=True)
        self.client = keygen(os.path.join(directory, "id_ed25519"))
        self.gossipHost = keygen(os.path.join(directory, "gossip_host_key"))
        self.sshdHost = keygen(os.path.join(directory, "sshd_host_key"))
        self.authorized = os.path.join(directory, "authorized_keys")
        with open(self.authorized, "w") as f:
            f.write(publicLine(self.client) + "\n")
        self.knownHosts = os.path.join(directory, "known_hosts")
        open(self.knownHosts, "w").close()

    def trust(self, port, hostKey):
        with open(self.knownHosts, "a") as f:
            f.write(f"[127.0.0.1]:{port} {publicLine(hostKey)}\n")


def waitIdle(pid, quiet=0.5, timeout=300.0):
    """
    Wait until process C{pid} has used no CPU for C{quiet} seconds.
    """
    deadline = time.perf_counter() + timeout
    last = readStatus(pid)
    since = time.perf_counter()
    while time.perf_counter() < deadline:
        time.sleep(0.1)
        status = readStatus(pid)
        if status is None:
            raise RuntimeError(f"process {pid} exited")
        if status[2] != last[2]:
            last, since = status, time.perf_counter()
        elif time.perf_counter() - since >= quiet:
            return
    raise RuntimeError(f"process {pid} still busy after {timeout:g} s")


class Daemon:
    """
    C{twistd -n gossip} serving one log over SSH on a loopback port.
    """

    def __init__(self, directory, log, keys, label, profile=None):
        self.port = freePort()
        self.logfile = os.path.join(directory, f"twistd-{label}.log")
        if os.path.exists(self.logfile):
            os.unlink(self.logfile)
        command = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]
        command += ["-n", "--pidfile=", f"--logfile={self.logfile}"]
        if profile:
            command += [f"--profile={profile}", "--profiler=cprofile", "--savestats"]
        command += [
            "gossip",
            "--log", log,
            "--listen", f"tcp:{self.port}:interface=127.0.0.1",
            "--host-key", keys.gossipHost,
            "--authorized-keys", keys.authorized,
            # Not the user's control socket, which a second daemon could not have.
            "--control", "none",
        ]  # fmt: skip
        self.process = spawn(command, WORKDIR, stderr=subprocess.DEVNULL)
        self.pid = self.process.pid
        keys.trust(self.port, keys.gossipHost)

    def text(self):
        try:
            with open(self.logfile, encoding="utf-8", errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def ready(self, timeout=300.0):
        """
        Wait until it listens and has read its log (its CPU idle).
        """
        deadline = time.perf_counter() + timeout
        while "listening for SSH peers" not in self.text():
            if self.process.poll() is not None or time.perf_counter() > deadline:
                raise RuntimeError(f"the gossip daemon did not start:\n{self.text()}")
            time.sleep(0.05)
        # It listens before its log is read: wait for that to end.
        waitIdle(self.pid)

    def stop(self):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


class SSHD:
    """
    A stock OpenSSH sshd on a loopback port, with its own config and keys.
    """

    def __init__(self, directory, keys):
        self.port = freePort()
        config = os.path.join(directory, "sshd_config")
        with open(config, "w") as f:
            f.write(
                f"Port {self.port}\n"
                "ListenAddress 127.0.0.1\n"
                f"HostKey {keys.sshdHost}\n"
                f"PidFile {directory}/sshd.pid\n"
                f"AuthorizedKeysFile {keys.authorized}\n"
                "StrictModes no\n"
                "UsePAM no\n"
                "PasswordAuthentication no\n"
                "KbdInteractiveAuthentication no\n"
                "PermitRootLogin prohibit-password\n"
            )
        # sshd's privilege separation needs its empty directory.
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        self.errors = open(os.path.join(directory, "sshd.err"), "wb")
        self.process = subprocess.Popen(
            [SSHD_PATH, "-D", "-e", "-f", config],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self.errors,
        )
        keys.trust(self.port, keys.sshdHost)
        deadline = time.perf_counter() + 30
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"sshd exited ({self.process.returncode}): see {self.errors.name}"
                )
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if time.perf_counter() > deadline:
                    raise RuntimeError("sshd did not listen")
                time.sleep(0.05)

    def stop(self):
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        self.errors.close()


def sshCommand(keys, port, *args, cipher=None):
    """
    The stock OpenSSH client, told to use only the bench's files.
    """
    command = [
        SSH_PATH,
        "-F", "/dev/null",
        "-o", "BatchMode=yes",
        "-o", "IdentitiesOnly=yes",
        "-o", "IdentityAgent=none",
        "-o", f"UserKnownHostsFile={keys.knownHosts}",
        "-o", "StrictHostKeyChecking=yes",
        "-i", keys.client,
        "-p", str(port),
    ]  # fmt: skip
    if cipher is not None:
        command += ["-c", cipher[0], "-m", cipher[1]]
    return command + ["127.0.0.1", *args]


def opensshCipher(keys, port, cipher=None):
    """
    What OpenSSH's client negotiates with the bench's sshd: C{ssh -v}'s
    C{kex: server->client cipher: ... MAC: ...} line.
    """
    command = sshCommand(keys, port, "true", cipher=cipher)
    command.insert(1, "-v")
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    for line in result.stderr.splitlines():
        if "kex: server->client cipher:" in line:
            return line.split("cipher:", 1)[1].strip()
    return "unknown"


class Peaks(threading.Thread):
    """
    Reads the RSS of some processes every C{interval} seconds, keeping the
    largest seen of each.
    """

    def __init__(self, pids, interval):
        threading.Thread.__init__(self, daemon=True)
        self.pids = dict(pids)
        self.interval = interval
        self.peak = {}
        self._done = threading.Event()

    def run(self):
        while not self._done.is_set():
            for label, pid in list(self.pids.items()):
                status = readStatus(pid)
                if status is not None:
                    self.peak[label] = max(self.peak.get(label, 0), status[0])
            self._done.wait(self.interval)

    def stop(self):
        self._done.set()
        self.join()


def resetPeak(pid):
    """
    Reset process C{pid}'s VmHWM to its RSS now (Linux 4.0 and later).

    @return: whether it could be.
    """
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def gossipCommand(*args, profile=None):
    if profile:
        return [sys.executable, "-c", PROFILED, profile, *args]
    return [sys.executable, "-m", "gossip", *args]


_TICK = os.sysconf("SC_CLK_TCK")


def machineCpu():
    """
    CPU seconds the whole machine has spent busy (not idle, waiting for I/O
    or stolen by the hypervisor), and stolen, since boot.
    """
    with open("/proc/stat") as f:
        fields = [int(n) for n in f.readline().split()[1:]]
    user, nice, system, idle, iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return (user + nice + system + irq + softirq) / _TICK, steal / _TICK


def runClone(daemon, keys, newLog, interval, profile=None, source=None):
    """
    C{gossip clone -v ssh://127.0.0.1:PORT/sync.log NEWLOG} (NEWLOG removed
    first), with the daemon's and its own memory and CPU; or, given a
    C{source} file, C{gossip clone -v SOURCE NEWLOG} (over the pipes of a
    C{gossip serve --stdio} child: no SSH), with its CPU and the child's.
    """
    removeLog(newLog)
    if source is None:
        source = f"ssh://127.0.0.1:{daemon.port}/{NAME}"
        args = ["--identity", keys.client, "--known-hosts", keys.knownHosts]
    else:
        daemon, args = None, []
    command = gossipCommand("clone", "-v", *args, source, newLog, profile=profile)
    reset = False
    if daemon is not None:
        reset = resetPeak(daemon.pid)
        daemonRss, daemonHwm, daemonCpu = readStatus(daemon.pid)
    marks = {}

    def onLine(line):
        if b" that " in line and b" lacks" in line:
            status = readStatus(process.pid)
            if status is not None:
                marks["cloneBase"] = status[0]

    busy, stolen = machineCpu()
    start = time.perf_counter()
    process = spawn(command, WORKDIR)
    pids = {"clone": process.pid}
    if daemon is not None:
        pids["daemon"] = daemon.pid
    peaks = Peaks(pids, interval)
    peaks.start()
    reader = LineTimes(process.stderr, onLine)
    reader.start()
    _, status, usage = os.wait4(process.pid, 0)
    end = time.perf_counter()
    busyAfter, stolenAfter = machineCpu()
    peaks.stop()
    reader.join(60)
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{reader.text()}")
    connected = reader.first(b"connected to")
    summary = reader.first(b" lacks")
    synced = reader.first(b"synced with")
    if connected is None or summary is None or synced is None:
        raise RuntimeError(f"no connected/synced lines from gossip clone -v:\n{reader.text()}")
    # The clone's own figures include those of the children it waited
    # for: the serve process of a clone from a file.
    clonePeak = usage.ru_maxrss * 1024
    r = dict(
        wall=end - start,
        startup=connected - start,
        handshake=summary - connected,
        transfer=synced - summary,
        shutdown=end - synced,
        cloneCpu=usage.ru_utime + usage.ru_stime,
        cloneBase=marks.get("cloneBase"),
        clonePeak=clonePeak,
        lines=countLines(newLog),
        peakReset=reset,
        stolen=stolenAfter - stolen,
    )
    ours = r["cloneCpu"]
    if daemon is not None:
        after = readStatus(daemon.pid)
        daemonPeak = peaks.peak.get("daemon", 0)
        if reset and after is not None:
            daemonPeak = max(daemonPeak, after[1])
        r.update(
            daemonCpu=None if after is None else after[2] - daemonCpu,
            daemonBase=daemonRss,
            daemonPeak=daemonPeak,
            daemonGrowth=daemonPeak - daemonRss,
            daemonAfter=None if after is None else after[0],
        )
        ours += r["daemonCpu"] or 0
    # What else ran meanwhile (this script's sampling threads included).
    r["others"] = max(busyAfter - busy - ours, 0.0)
    if r["cloneBase"] is not None:
        r["cloneGrowth"] = clonePeak - r["cloneBase"]
    return r


def runCat(keys, port, log, cipher=None):
    """
    C{ssh -p PORT 127.0.0.1 cat LOG > /dev/null}: wall time.
    """
    command = sshCommand(keys, port, "cat", log, cipher=cipher)
    start = time.perf_counter()
    result = subprocess.run(
        command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    end = time.perf_counter()
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed: {result.stderr.decode()}")
    return end - start


def runTrue(keys, port):
    """
    C{ssh -p PORT 127.0.0.1 true}: OpenSSH's connect, log in and exit.
    """
    command = sshCommand(keys, port, "true")
    start = time.perf_counter()
    subprocess.run(command, stdin=subprocess.DEVNULL, check=True, capture_output=True)
    return time.perf_counter() - start


def runFirstAdd(daemon, keys, local):
    """
    C{gossip sync --once -v LOCAL ssh://...}, LOCAL a new log: the time from
    the process's start to its first synced add in LOCAL, to its
    C{connected to} line (the SSH session open) and to its exit.
    """
    removeLog(local)
    Log(local).state(create=True)
    watch = FileWatch(local)
    command = gossipCommand(
        "sync", "--once", "-v",
        "--identity", keys.client,
        "--known-hosts", keys.knownHosts,
        local,
        f"ssh://127.0.0.1:{daemon.port}",
    )  # fmt: skip
    start = time.perf_counter()
    process = spawn(command, WORKDIR)
    reader = LineTimes(process.stderr)
    reader.start()
    seen = watch.wait(b"\n", timeout=30)
    process.wait(60)
    end = time.perf_counter()
    reader.join(10)
    watch.close()
    if process.returncode != 0 or seen is None:
        raise RuntimeError(f"{' '.join(command)} failed:\n{reader.text()}")
    connected = reader.first(b"connected to")
    return dict(
        first=seen - start,
        connected=None if connected is None else connected - start,
        wall=end - start,
    )


def importTime():
    """
    Wall time of a Python that imports what C{gossip sync} over SSH needs,
    and leaves as gossip's commands do (C{os._exit}: no teardown).
    """
    command = [
        sys.executable, "-c", "import os, gossip.cli.main, gossip.cli.commands, gossip.transport.ssh.client; os._exit(0)"
    ]
    start = time.perf_counter()
    subprocess.run(command, env=environment(), cwd=WORKDIR, check=True)
    return time.perf_counter() - start


# In this process: connect to the first add


class _TimedFactory:
    """
    Notes when its connection is made (its protocol built), for a factory
    that it otherwise stands in for.
    """

    def __init__(self, factory, marks):
        self._factory = factory
        self._marks = marks

    def buildProtocol(self, addr):
        self._marks["tcp"] = time.perf_counter()
        return self._factory.buildProtocol(addr)

    def __getattr__(self, name):
        return getattr(self._factory, name)


def timedReactor(reactor, marks):
    """
    The reactor, but noting when C{connectTCP} is called and when its
    connection is made.
    """
    from zope.interface import directlyProvides, providedBy

    class TimedReactor:
        def __getattr__(self, name):
            return getattr(reactor, name)

        def connectTCP(self, host, port, factory, *args, **kwargs):
            marks["tcpStart"] = time.perf_counter()
            return reactor.connectTCP(host, port, _TimedFactory(factory, marks), *args, **kwargs)

    timed = TimedReactor()
    directlyProvides(timed, providedBy(reactor))
    return timed


def inProcessFirstAdd(daemon, keys, directory, samples):
    """
    In this process, under the reactor: L{gossip.transport.ssh.client.SSHSyncEndpoint},
    L{gossip.sync.factories.SyncFactory} and L{gossip.sync.service.LogService} syncing a
    new log once with the daemon, C{samples} times after one untimed run.

    @return: one dict of times (seconds after C{endpoint.connect()}) a run,
        the untimed first one first, and the cipher and MAC negotiated.
    """
    from twisted.internet import reactor
    from twisted.internet.defer import ensureDeferred

    from gossip.sync.factories import SyncFactory
    from gossip.sync.service import LogService
    from gossip.sync.settings import SessionSettings
    from gossip.transport.ssh.client import SSHSyncEndpoint
    from gossip.transport.ssh.keys import loadIdentity
    from gossip.transport.urls import PeerURL

    local = os.path.join(directory, "in-process", NAME)
    os.makedirs(os.path.dirname(local), exist_ok=True)
    identity = loadIdentity(keys.client)
    peer = PeerURL("127.0.0.1", daemon.port, None, NAME.encode())
    runs = []
    negotiated = {}
    failures = []

    async def once():
        removeLog(local)
        Log(local).state(create=True)
        size = os.path.getsize(local)
        marks = {}

        def progress(session):
            if "first" not in marks and os.path.getsize(local) > size:
                marks["first"] = time.perf_counter()

        def handshaken(protocol):
            marks["hello"] = time.perf_counter()
            return protocol

        service = LogService(Log(local), reactor, rescanInterval=3600)
        service.startService()
        try:
            factory = SyncFactory(
                service, str(peer), SessionSettings(timeout=30), once=True, progress=progress
            )
            endpoint = SSHSyncEndpoint(
                timedReactor(reactor, marks), peer, [identity], knownHosts=keys.knownHosts
            )
            start = time.perf_counter()
            protocol = await endpoint.connect(factory)
            marks["open"] = time.perf_counter()
            protocol.whenHandshaken().addCallbacks(handshaken, lambda failure: None)
            ssh = protocol.transport.conn.transport
            negotiated["cipher"] = ssh.currentEncryptions.outCipType.decode()
            negotiated["mac"] = ssh.currentEncryptions.outMACType.decode()
            negotiated["kex"] = ssh.kexAlg.decode()
            succeeded = await protocol.whenFinished()
            marks["end"] = time.perf_counter()
        finally:
            service.stopService()
        if not succeeded or "first" not in marks:
            raise RuntimeError(f"in-process sync failed: {protocol.failure}")
        return {key: value - start for key, value in marks.items()}

    async def main():
        try:
            for i in range(samples + 1):
                runs.append(await once())
        except Exception as e:
            failures.append(e)
        finally:
            reactor.stop()

    reactor.callWhenRunning(lambda: ensureDeferred(main()))
    reactor.run()
    if failures:
        raise failures[0]
    return runs, negotiated


# Reporting


def ms(seconds):
    return "-" if seconds is None else f"{seconds * 1000:.0f} ms"


def stats(values, show):
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    return (
        f"median {show(statistics.median(values))}, worst {show(max(values))}, "
        f"best {show(min(values))}"
    )


CLONE_KEYS = [
    ("wall", sec),
    ("startup", sec),
    ("handshake", sec),
    ("transfer", sec),
    ("shutdown", sec),
    ("cloneCpu", sec),
    ("daemonCpu", sec),
    ("others", sec),
    ("stolen", sec),
    ("daemonBase", mb),
    ("daemonPeak", mb),
    ("daemonGrowth", mb),
    ("daemonAfter", mb),
    ("cloneBase", mb),
    ("clonePeak", mb),
    ("cloneGrowth", mb),
]


PIPE_KEYS = [
    ("wall", sec),
    ("startup", sec),
    ("handshake", sec),
    ("transfer", sec),
    ("shutdown", sec),
    ("cloneCpu", sec),
    ("others", sec),
    ("stolen", sec),
]


def profileReport(path, lines=25):
    """
    A cProfile file's costliest functions by their own time, then gossip's,
    Conch's SSH and AMP's by cumulative time.
    """
    import io
    import pstats

    out = []
    for key, restriction in [
        ("tottime", ()),
        ("cumulative", (r"gossip/|conch/ssh/|protocols/amp\.py|protocols/basic\.py",)),
    ]:
        report = io.StringIO()
        pstats.Stats(path, stream=report).sort_stats(key).print_stats(*restriction, lines)
        shown = f"sorted by {key}" + (", gossip, Conch's SSH and AMP only" if restriction else "")
        out.append(f"  {shown}:")
        for line in report.getvalue().splitlines():
            if line.strip() and not line.lstrip().startswith(("Ordered by", "List reduced")):
                out.append("    " + line.rstrip())
    return "\n".join(out)


def sshShare(path):
    """
    From a cProfile file: the seconds spent in Conch's receive path (the
    transport's C{dataReceived} less what the channel hands on to the
    session) and in its C{sendPacket} (encrypting, MAC and framing), and
    the seconds profiled less those waiting in C{epoll}.  Where one holds
    part of the other (data sent on a window adjustment) they overlap:
    their sum is an upper bound.
    """
    import pstats

    stats = pstats.Stats(path)

    def cumulative(fileEnd, name):
        return sum(
            value[3]
            for (filename, line, function), value in stats.stats.items()
            if filename.endswith(fileEnd) and function == name
        )

    received = cumulative("conch/ssh/transport.py", "dataReceived") - cumulative(
        "conch/ssh/connection.py", "ssh_CHANNEL_DATA"
    )
    sent = cumulative("conch/ssh/transport.py", "sendPacket")
    waiting = cumulative("~", "<method 'poll' of 'select.epoll' objects>")
    return received, sent, stats.total_tt - waiting


def printRuns(title, results, keys):
    print(title)
    for key, show in keys:
        values = [r.get(key) for r in results]
        shown = ", ".join(show(v) for v in values)
        print(f"  {key:12} median {show(median(results, key)):>9}   runs: {shown}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="100k adds, few runs")
    parser.add_argument("--dir", default="/tmp/gossip-bench-ssh", help="where to write files")
    parser.add_argument("--count", type=int, help="adds in the log cloned (default 1,000,000)")
    parser.add_argument("--runs", type=int, help="timed clones and OpenSSH copies (default 3)")
    parser.add_argument("--samples", type=int, help="first-add latency samples (default 20)")
    parser.add_argument("--small", type=int, default=100, help="adds in the latency test's log")
    parser.add_argument("--interval", type=float, default=0.05, help="RSS sampling interval (s)")
    parser.add_argument("--keep", action="store_true", help="reuse a log already built in --dir")
    parser.add_argument(
        "--no-pipes", dest="pipes", action="store_false",
        help="leave out the reference clone from the file, without SSH",
    )  # fmt: skip
    parser.add_argument(
        "--profile", action="store_true",
        help="also run one clone with both sides under cProfile, and show where the time goes",
    )  # fmt: skip
    options = parser.parse_args(argv)
    global WORKDIR

    if options.quick:
        count, runs, samples = 100_000, 1, 5
    else:
        count, runs, samples = 1_000_000, 3, 20
    count = options.count or count
    runs = options.runs or runs
    samples = options.samples or samples
    directory = os.path.abspath(options.dir)
    if directory == ROOT or directory.startswith(ROOT + os.sep):
        parser.error("--dir must be outside the repository")
    os.makedirs(directory, exist_ok=True)
    WORKDIR = directory

    print(f"machine: {machine()}")
    print(f"command: {' '.join([os.path.basename(sys.executable)] + sys.argv)}")
    print(f"code: {codeVersion()}")
    version = subprocess.run([SSH_PATH, "-V"], capture_output=True, text=True).stderr.strip()
    print(f"openssh: {version}")
    print(
        "bytecode of this checkout: "
        + ("not written (PYTHONDONTWRITEBYTECODE)" if sys.flags.dont_write_bytecode else "cached")
    )
    print(f"files in {directory}; RSS sampled every {options.interval * 1000:.0f} ms")
    print(f"load average at start: {loadAverage()}; calibration loop {calibrate() * 1000:.0f} ms")
    print()

    big = os.path.join(directory, "served", NAME)
    if not (options.keep and os.path.exists(big) and countLines(big) == count + 1):
        t = time.perf_counter()
        size = buildLog(big, count)
        took = time.perf_counter() - t
        print(f"built {big}: {count:,} adds, {size / MB:.1f} MB in {took:.1f} s")
    size = os.path.getsize(big)
    small = os.path.join(directory, "small", NAME)
    buildLog(small, options.small, seed=11)
    newLog = os.path.join(directory, "clone", NAME)
    local = os.path.join(directory, "local", NAME)
    for path in (newLog, local):
        os.makedirs(os.path.dirname(path), exist_ok=True)
    keys = Keys(os.path.join(directory, "keys"))

    # The first daemon builds its log's cache; later ones read it.
    removeLog(cachePath(big))
    t = time.perf_counter()
    servers = []
    try:
        daemon = Daemon(directory, big, keys, "big")
        servers.append(daemon)
        smallDaemon = Daemon(directory, small, keys, "small")
        servers.append(smallDaemon)
        sshd = SSHD(directory, keys)
        servers.append(sshd)
        daemon.ready()
        print(f"gossip daemon on port {daemon.port} ready in {time.perf_counter() - t:.1f} s "
              f"(reading {count:,} adds), RSS {mb(readStatus(daemon.pid)[0])}")
        smallDaemon.ready()
        print(f"small-log daemon on port {smallDaemon.port}; sshd on port {sshd.port}")
        defaultCipher = opensshCipher(keys, sshd.port)
        likeCipher = ("aes128-ctr", "hmac-sha2-256")
        print(f"OpenSSH client to sshd negotiates: {defaultCipher}")
        print(
            f"  with -c {likeCipher[0]} -m {likeCipher[1]}: "
            + opensshCipher(keys, sshd.port, likeCipher)
        )
        print()

        # The clone, beside OpenSSH copying the same file and gossip cloning
        # it without SSH, in turns.
        first = runClone(daemon, keys, newLog, options.interval)
        assert first["lines"] == count + 1, first["lines"]
        print(f"first clone (untimed, warms up): {sec(first['wall'])}; load {loadAverage()}")
        clones, pipes, cats, likeCats = [], [], [], []
        runCat(keys, sshd.port, big)
        for i in range(runs):
            r = runClone(daemon, keys, newLog, options.interval)
            assert r["lines"] == count + 1, r["lines"]
            clones.append(r)
            cats.append(runCat(keys, sshd.port, big))
            likeCats.append(runCat(keys, sshd.port, big, likeCipher))
            if options.pipes:
                p = runClone(None, keys, newLog, options.interval, source=big)
                assert p["lines"] == count + 1, p["lines"]
                pipes.append(p)
            print(
                f"run {i + 1}: clone {sec(r['wall'])} (others' CPU {sec(r['others'])}), "
                f"ssh cat {sec(cats[-1])}, ssh -c aes128-ctr cat {sec(likeCats[-1])}"
                + (f", clone from the file {sec(pipes[-1]['wall'])}" if pipes else "")
                + f"; load {loadAverage()}"
            )
        printRuns(
            f"gossip clone -v ssh://127.0.0.1:{daemon.port}/{NAME}, {count:,} adds "
            f"({size / MB:.1f} MB); load {loadAverage()}",
            clones,
            CLONE_KEYS,
        )
        if not all(r["peakReset"] for r in clones):
            print("  (the daemon's VmHWM could not be reset: its peak is sampled)")
        if pipes:
            printRuns(
                f"gossip clone -v {big} (no SSH: a gossip serve --stdio child over pipes; "
                "CPU and peak are both processes')",
                pipes,
                PIPE_KEYS,
            )
        print(f"ssh cat ({defaultCipher}): " + stats(cats, sec))
        print("ssh -c aes128-ctr -m hmac-sha2-256 cat: " + stats(likeCats, sec))
        print()

        # Connect to the first add.
        print(f"first add of a {options.small}-add log: load {loadAverage()}")
        inProcess, negotiated = inProcessFirstAdd(smallDaemon, keys, directory, samples)
        warm, inProcess = inProcess[0], inProcess[1:]
        print(
            f"  Conch negotiates: {negotiated['cipher']} {negotiated['mac']} "
            f"({negotiated['kex']})"
        )
        print(
            f"  in this process, first (untimed) run: first add {fine(warm['first'])} "
            "after connect()"
        )
        for key, what in [
            ("tcp", "connect() to TCP connected"),
            ("open", "connect() to session open (SSH handshake, auth, subsystem)"),
            ("hello", "connect() to hello answered"),
            ("first", "connect() to first add in the log"),
            ("end", "connect() to session ended"),
        ]:
            print(f"  {what}: " + stats([r.get(key) for r in inProcess], fine))
        fromTcp = [r["first"] - r["tcp"] for r in inProcess]
        print("  TCP connected to first add: " + stats(fromTcp, fine))
        processes = [runFirstAdd(smallDaemon, keys, local) for _ in range(samples)]
        for key, what in [
            ("connected", "process start to `connected to` (session open)"),
            ("first", "process start to first add in the log"),
            ("wall", "process start to exit"),
        ]:
            print(f"  gossip sync --once, {what}: " + stats([r[key] for r in processes], ms))
        trues = [runTrue(keys, sshd.port) for _ in range(samples)]
        imports = [importTime() for _ in range(samples)]
        print("  ssh 127.0.0.1 true (OpenSSH connect, log in, exit): " + stats(trues, ms))
        print(
            "  python -c 'import gossip.cli.main, gossip.cli.commands, gossip.transport.ssh.client; os._exit(0)': "
            + stats(imports, ms)
        )
        print()

        profiles = None
        if options.profile:
            profiles = os.path.join(directory, "profiles")
            os.makedirs(profiles, exist_ok=True)
            serverProfile = os.path.join(profiles, "daemon.prof")
            clientProfile = os.path.join(profiles, "clone.prof")
            for path in (serverProfile, clientProfile):
                if os.path.exists(path):
                    os.unlink(path)
            profiled = Daemon(directory, big, keys, "profiled", profile=serverProfile)
            servers.append(profiled)
            profiled.ready()
            r = runClone(profiled, keys, newLog, options.interval, profile=clientProfile)
            profiled.stop()
            print(
                f"cProfile, {count:,} adds, both sides profiled: wall {sec(r['wall'])}, "
                f"transfer {sec(r['transfer'])} (inflated by profiling); "
                f"CPU: clone {sec(r['cloneCpu'])}, daemon {sec(r['daemonCpu'])}"
            )
            for label, path in [("daemon", serverProfile), ("clone", clientProfile)]:
                received, sent, total = sshShare(path)
                print(
                    f"{label}: Conch's receive path {sec(received)}, its sendPacket "
                    f"{sec(sent)}: together at most {(received + sent) / total:.1%} "
                    f"of its {sec(total)} profiled outside epoll"
                )
            print(f"daemon (twistd --profiler cprofile), {serverProfile}:")
            print(profileReport(serverProfile, 25))
            print(f"clone (gossip clone), {clientProfile}:")
            print(profileReport(clientProfile, 25))
            print()
    finally:
        for server in servers:
            server.stop()

    print(f"load average at end: {loadAverage()}; calibration loop {calibrate() * 1000:.0f} ms")
    print()
    n = len(clones)
    wall = median(clones, "wall")
    cat = statistics.median(cats)
    likeCat = statistics.median(likeCats)
    print("| figure | measured | target | met |")
    print("| --- | --- | --- | --- |")
    goal = TARGETS["clone"] if count == 1_000_000 else None
    print(
        f"| gossip clone of {count:,} adds ({size / MB:.0f} MB) over SSH, Conch to Conch, "
        f"whole command, median / worst of {n} | {sec(wall)} / {sec(worst(clones, 'wall'))} | "
        + (f"<= {goal:g} s | {met(wall <= goal)} |" if goal else "| |")
    )
    for key, what in [
        ("startup", "process start to `connected to` (start-up, SSH handshake, auth)"),
        ("handshake", "`connected to` to the peer's summary"),
        ("transfer", "the peer's summary to `synced with` (the adds moving)"),
        ("shutdown", "`synced with` to exit"),
    ]:
        print(f"| clone: {what}, median | {sec(median(clones, key))} | | |")
    print(
        f"| clone: CPU seconds, clone / daemon, median | {sec(median(clones, 'cloneCpu'))} / "
        f"{sec(median(clones, 'daemonCpu'))} | | |"
    )
    print(f"| clone: rate, log bytes / whole command | {size / MB / wall:.0f} MB/s | | |")
    print(
        f"| clone: CPU of other processes meanwhile, median / worst "
        f"| {sec(median(clones, 'others'))} / {sec(worst(clones, 'others'))} | | |"
    )
    if pipes:
        pipeWall = median(pipes, "wall")
        print(
            f"| reference: `gossip clone -v LOG NEWLOG` (no SSH: `gossip serve --stdio` over "
            f"pipes), median / worst of {len(pipes)} | {sec(pipeWall)} / "
            f"{sec(worst(pipes, 'wall'))} | | |"
        )
        print(
            f"| reference: the same, summary to `synced with`, median "
            f"| {sec(median(pipes, 'transfer'))} | | |"
        )
        print(f"| clone over SSH / clone from the file, medians | {wall / pipeWall:.2f}x | | |")
    print(
        f"| OpenSSH `ssh 127.0.0.1 cat LOG > /dev/null` ({defaultCipher}), median / worst of "
        f"{len(cats)} | {sec(cat)} / {sec(max(cats))} | | |"
    )
    print(
        f"| OpenSSH `ssh -c aes128-ctr -m hmac-sha2-256 ... cat LOG`, median / worst of "
        f"{len(likeCats)} | {sec(likeCat)} / {sec(max(likeCats))} | | |"
    )
    for floor, what in [(cat, defaultCipher.split()[0]), (likeCat, "aes128-ctr, hmac-sha2-256")]:
        ratio = wall / floor
        print(
            f"| gossip clone / OpenSSH cat ({what}), medians | {ratio:.1f}x | "
            # The ratio's target is for the 1M-add clone, like the clone's.
            + (f"<= {TARGETS['ratio']:g}x | {met(ratio <= TARGETS['ratio'])} |" if goal else "| |")
        )
    for side, label in [("daemon", "daemon"), ("clone", "clone process")]:
        growth = worst(clones, side + "Growth")
        print(
            f"| clone: {label} RSS growth, worst of {n} "
            f"(base {mb(median(clones, side + 'Base'))}, peak {mb(worst(clones, side + 'Peak'))}) "
            f"| {mb(growth)} | <= {TARGETS['rss']:g} MB "
            f"| {met(growth is not None and growth <= TARGETS['rss'] * MB)} |"
        )
    firstAdd = statistics.median(r["first"] for r in inProcess)
    print(
        f"| first add, in process: `endpoint.connect()` to the first add in the log, "
        f"median / worst of {len(inProcess)} | {fine(firstAdd)} / "
        f"{fine(max(r['first'] for r in inProcess))} | <= {ms(TARGETS['first'])} "
        f"| {met(firstAdd <= TARGETS['first'])} |"
    )
    print(
        f"| first add, in process: TCP connected to the first add, median "
        f"| {fine(statistics.median(fromTcp))} | | |"
    )
    print(
        f"| first add, in process: `connect()` to SSH session open, median "
        f"| {fine(statistics.median(r['open'] for r in inProcess))} | | |"
    )
    print(
        f"| first add, `gossip sync --once` process start to the first add, median / worst of "
        f"{len(processes)} | {ms(statistics.median(r['first'] for r in processes))} / "
        f"{ms(max(r['first'] for r in processes))} | | |"
    )
    print(
        f"| first add, `gossip sync --once` process start to exit, median "
        f"| {ms(statistics.median(r['wall'] for r in processes))} | | |"
    )
    print(f"| `ssh 127.0.0.1 true` (OpenSSH), median | {ms(statistics.median(trues))} | | |")
    print(
        f"| `python -c 'import os, gossip.cli.main, gossip.cli.commands, gossip.transport.ssh.client; os._exit(0)'`, "
        f"median "
        f"| {ms(statistics.median(imports))} | | |"
    )
    print()
    print(f"Conch to Conch: {negotiated['cipher']} + {negotiated['mac']} ({negotiated['kex']}); "
          f"OpenSSH to sshd by default: {defaultCipher}")


if __name__ == "__main__":
    main()
