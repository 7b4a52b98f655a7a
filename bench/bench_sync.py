"""
Measure gossip's sync: one-shot syncs of large logs beside the original
gossip.py's protocol, the memory each side grows by, and how soon an add
written to one log of a continuous sync is in the other.

    python bench/bench_sync.py            # the full run (a few minutes)
    python bench/bench_sync.py --quick    # small logs, about 15 seconds

Logs are generated under --dir (default /tmp/gossip-bench-sync), never in
the repository: the full run writes about 100 MB there.  The processes
timed run gossip from this checkout, or from --code DIR (a copy with a
change to measure); the logs and the in-process writes of the latency part
always use this checkout's gossip.store.format and gossip.store.logfile.
docs/performance-sync.md says what is measured, how, and the results.
"""

import argparse
import base64
import ctypes
import math
import os
import random
import select
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from gossip.store.format import encodeAdd  # noqa: E402
from gossip.store.logfile import Log  # noqa: E402
from bench_log import calibrate, codeVersion as _codeVersion, loadAverage, machine  # noqa: E402

MB = 1e6
ORIGINAL = os.path.join(ROOT, "bench", "original_sync.py")
# Where the gossip package timed comes from (--code): this checkout unless
# told otherwise, e.g. a copy with a change to measure.
CODE = ROOT
# The processes timed run here (the logs' directory), never in the
# checkout: "python -m" puts the working directory first on sys.path.
WORKDIR = None
# Every log synced here has this base name: peers must share it.
NAME = "sync.log"

# Targets on a 2-core machine.
TARGETS = {
    100_000: 1.0,  # s, one-shot sync of 100k adds into an empty log, whole command
    1_000_000: 8.0,  # s, the same for 1M adds
    "rss": 50.0,  # MB, peak RSS growth of each side
    "p50": 0.010,  # s, continuous sync latency, median
    "p99": 0.050,  # s, continuous sync latency, 99th percentile
}

_WORDS = (
    "the of and to in is it you that he was for on are with as his they be "
    "at one have this from or had by hot word but what some we can out other "
    "were all there when up use your how said an each she which do their time "
    "if will way about many then them write would like so these her long make "
    "thing see him two has look more day could go come did number sound no"
).split()
# Bytes the format escapes, put into about a third of the messages.
_ESCAPED = ["&", "%", "<", ">", "+", "\n", "é", "€"]


# Logs


def buildLog(path, count, seed=7):
    """
    Write a log of C{count} adds of about 80 bytes a line, after an identity
    add: three in four by the log's own node, the rest by another origin.

    @return: the log's size in bytes.
    """
    rng = random.Random(seed)
    origins = [base64.urlsafe_b64encode(rng.randbytes(15)) for _ in range(2)]
    messages = []
    for _ in range(4096):
        text = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(3, 6)))
        if rng.random() < 0.3:
            i = rng.randrange(len(text))
            text = text[:i] + rng.choice(_ESCAPED) + text[i:]
        messages.append(text.encode("utf-8"))
    serials = [0, 0]
    os.makedirs(os.path.dirname(path), exist_ok=True)
    removeLog(path)
    with open(path, "wb") as f:
        f.write(encodeAdd([(b"I", origins[0])]))
        batch = []
        for i in range(count):
            o = 1 if i % 4 == 3 else 0
            batch.append(
                encodeAdd(
                    [(b"by", origins[o]), (b"at", b"%d" % serials[o]), (b"m", messages[i & 4095])]
                )
            )
            serials[o] += 1
            if len(batch) == 10000:
                f.write(b"".join(batch))
                batch = []
        f.write(b"".join(batch))
    return os.path.getsize(path)


def cachePath(path):
    directory, name = os.path.split(path)
    return os.path.join(directory, "." + name + ".gossip-cache")


def removeLog(path):
    for p in (path, cachePath(path)):
        try:
            os.unlink(p)
        except FileNotFoundError:
            pass


def countLines(path):
    with open(path, "rb") as f:
        return sum(block.count(b"\n") for block in iter(lambda: f.read(1 << 20), b""))


# Processes: their memory and CPU, and their standard error as it comes


_TICK = os.sysconf("SC_CLK_TCK")


def readStatus(pid):
    """
    C{(VmRSS, VmHWM)} of process C{pid} in bytes, and its CPU seconds, or
    L{None} once it has gone (or is a zombie).
    """
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            status = f.read()
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    rss = hwm = None
    for line in status.split(b"\n"):
        if line.startswith(b"VmRSS:"):
            rss = int(line.split()[1]) * 1024
        elif line.startswith(b"VmHWM:"):
            hwm = int(line.split()[1]) * 1024
    if rss is None or hwm is None:
        return None
    fields = stat[stat.rfind(b")") + 2 :].split()
    cpu = (int(fields[11]) + int(fields[12])) / _TICK
    return rss, hwm, cpu


def commandLine(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().split(b"\0")
    except OSError:
        return []


def childrenOf(pid, word=None):
    """
    The pids of C{pid}'s children (only those with C{word} among their
    arguments, if given: a process may also run short-lived helpers, such as
    C{ldconfig} for C{ctypes.util.find_library}).
    """
    found = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/children") as f:
                found.extend(int(p) for p in f.read().split())
        except OSError:
            pass
    if word is not None:
        found = [p for p in found if word in commandLine(p)]
    return found


class Sampler:
    """
    Reads the RSS, high-water mark and CPU time of some processes every
    C{interval} seconds, on a thread, and follows the C{serve} child of any
    added with a C{childLabel} (the serve process a sync spawns).
    """

    def __init__(self, interval=0.05):
        self.interval = interval
        self.pids = {}
        self.peak = {}
        self.cpu = {}
        self.base = {}
        self._parents = {}
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def add(self, label, pid, childLabel=None):
        with self._lock:
            self.pids[label] = pid
            if childLabel is not None:
                self._parents[childLabel] = pid

    def start(self):
        self._thread.start()

    def stop(self):
        self._stop.set()
        self._thread.join()

    def sample(self):
        with self._lock:
            for label, parent in list(self._parents.items()):
                children = childrenOf(parent, b"serve")
                if children:
                    self.pids[label] = children[0]
                    del self._parents[label]
            pids = list(self.pids.items())
        for label, pid in pids:
            status = readStatus(pid)
            if status is None:
                continue
            rss, hwm, cpu = status
            self.peak[label] = max(self.peak.get(label, 0), hwm)
            self.cpu[label] = cpu
        return pids

    def mark(self):
        """
        Note each process's RSS now, as its start-up RSS.
        """
        for label, pid in self.sample():
            status = readStatus(pid)
            if status is not None and label not in self.base:
                self.base[label] = status[0]

    def _run(self):
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)


class LineTimes(threading.Thread):
    """
    Reads lines from a pipe as they arrive, with the time each came, and
    calls C{onLine(line)} for each.
    """

    def __init__(self, stream, onLine=None):
        threading.Thread.__init__(self, daemon=True)
        self.stream = stream
        self.onLine = onLine
        self.lines = []
        self.closed = None

    def run(self):
        for line in iter(self.stream.readline, b""):
            now = time.perf_counter()
            self.lines.append((now, line))
            if self.onLine is not None:
                self.onLine(line)
        self.closed = time.perf_counter()
        self.stream.close()

    def first(self, text):
        for t, line in self.lines:
            if text in line:
                return t
        return None

    def text(self):
        return b"".join(line for t, line in self.lines).decode("utf-8", "replace")


def environment():
    """
    The environment for the processes timed: gossip from this checkout, and
    Python's ordinary buffering whatever this shell asks for.
    """
    env = dict(os.environ, PYTHONPATH=CODE)
    env.pop("PYTHONUNBUFFERED", None)
    return env


def spawn(command, cwd, stderr=subprocess.PIPE):
    """
    Start a process timed: gossip from the code measured, no input, its
    output thrown away and its standard error to C{stderr}.
    """
    return subprocess.Popen(
        command,
        env=environment(),
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=stderr,
    )


def gossipCommand(*args, profile=None):
    command = [sys.executable]
    if profile:
        command += ["-m", "cProfile", "-o", profile]
    return command + ["-m", "gossip", *args]


class Result(dict):
    """
    One sync's figures (seconds, bytes), by name.
    """


def runGossipSync(newLog, peerLog, interval, clientProfile=None, serveProfile=None):
    """
    Run C{gossip sync -v --once --create NEWLOG PEERLOG} (NEWLOG removed
    first) and measure it.
    """
    removeLog(newLog)
    if serveProfile:
        args = ["sync", "-v", "--once", "--create", newLog, "--"]
        args += gossipCommand("serve", "--stdio", "--", peerLog, profile=serveProfile)
    else:
        args = ["sync", "-v", "--once", "--create", newLog, peerLog]
    command = gossipCommand(*args, profile=clientProfile)
    sampler = Sampler(interval)

    def onLine(line):
        if b" that " in line and b" lacks" in line:
            sampler.mark()

    start = time.perf_counter()
    process = spawn(command, WORKDIR)
    sampler.add("client", process.pid, childLabel="serve")
    sampler.start()
    reader = LineTimes(process.stderr, onLine)
    reader.start()
    _, status, usage = os.wait4(process.pid, 0)
    end = time.perf_counter()
    process.returncode = os.waitstatus_to_exitcode(status)
    sampler.stop()
    reader.join(120)
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{reader.text()}")
    connected = reader.first(b"connected to")
    summary = reader.first(b" lacks")
    synced = reader.first(b"synced with")
    if connected is None or summary is None or synced is None:
        raise RuntimeError(f"no connected/synced lines from gossip sync -v:\n{reader.text()}")
    r = Result(
        wall=end - start,
        both=(reader.closed or end) - start,
        startup=connected - start,
        sync=synced - connected,
        handshake=summary - connected,
        transfer=synced - summary,
        shutdown=end - synced,
    )
    for side in ("client", "serve"):
        r[side + "Peak"] = sampler.peak.get(side)
        r[side + "Base"] = sampler.base.get(side)
        r[side + "Cpu"] = sampler.cpu.get(side)
        if r[side + "Peak"] is not None and r[side + "Base"] is not None:
            r[side + "Growth"] = r[side + "Peak"] - r[side + "Base"]
    r["ruMaxRss"] = usage.ru_maxrss * 1024
    r["lines"] = countLines(newLog)
    return r


def runOriginalSync(newLog, peerLog, interval):
    """
    Two of bench/original_sync.py joined by two pipes, syncing PEERLOG into
    NEWLOG (removed first), each with -q: measure until both have exited.
    """
    removeLog(newLog)
    toNew = os.pipe()
    toPeer = os.pipe()
    sampler = Sampler(interval)
    readers = {}
    ready = []

    def onLine(line):
        if line == b"ready\n":
            ready.append(time.perf_counter())
            if len(ready) == 2:
                sampler.mark()

    start = time.perf_counter()
    processes = {}
    for label, log, stdin, stdout in [
        ("peer", peerLog, toPeer[0], toNew[1]),
        ("new", newLog, toNew[0], toPeer[1]),
    ]:
        processes[label] = subprocess.Popen(
            [sys.executable, ORIGINAL, "--server", "-q", "--mark", log],
            env=environment(),
            cwd=WORKDIR,
            stdin=stdin,
            stdout=stdout,
            stderr=subprocess.PIPE,
        )
        sampler.add(label, processes[label].pid)
        readers[label] = LineTimes(processes[label].stderr, onLine)
        readers[label].start()
    for fd in toNew + toPeer:
        os.close(fd)
    sampler.start()
    ended = {}
    for label, process in processes.items():
        process.wait()
        ended[label] = time.perf_counter()
    end = max(ended.values())
    sampler.stop()
    for label, process in processes.items():
        readers[label].join(10)
        if process.returncode != 0:
            raise RuntimeError(f"original {label} failed:\n{readers[label].text()}")
    r = Result(wall=end - start, startup=max(ready) - start, sync=end - max(ready))
    for side in ("peer", "new"):
        r[side + "Peak"] = sampler.peak.get(side)
        r[side + "Base"] = sampler.base.get(side)
        r[side + "Cpu"] = sampler.cpu.get(side)
        if r[side + "Peak"] is not None and r[side + "Base"] is not None:
            r[side + "Growth"] = r[side + "Peak"] - r[side + "Base"]
    r["lines"] = countLines(newLog)
    return r


# Continuous sync


class FileWatch:
    """
    Watch a file grow (inotify, falling back to polling every millisecond)
    and say when some bytes appear in what is appended.
    """

    IN_MODIFY = 0x2

    def __init__(self, path):
        self.file = open(path, "rb")
        self.file.seek(0, os.SEEK_END)
        self.fd = None
        self.poller = None
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
            if fd >= 0:
                if libc.inotify_add_watch(fd, os.fsencode(path), self.IN_MODIFY) >= 0:
                    self.fd = fd
                    self.poller = select.poll()
                    self.poller.register(fd, select.POLLIN)
                else:
                    os.close(fd)
        except (OSError, AttributeError):
            pass
        self.seen = b""

    def skip(self):
        """
        Forget what was appended so far.
        """
        self._drain()
        self.file.read()
        self.seen = b""

    def _drain(self):
        if self.fd is not None:
            try:
                while os.read(self.fd, 65536):
                    pass
            except BlockingIOError:
                pass

    def wait(self, needle, timeout=10.0):
        """
        Wait until C{needle} has been appended; return when it was seen, or
        L{None} after C{timeout} seconds.
        """
        deadline = time.perf_counter() + timeout
        while True:
            data = self.file.read()
            if data:
                self.seen = self.seen[-len(needle) :] + data
                if needle in self.seen:
                    return time.perf_counter()
            now = time.perf_counter()
            if now > deadline:
                return None
            if self.poller is not None:
                if self.poller.poll(1):
                    self._drain()
            else:
                time.sleep(0.001)

    def close(self):
        self.file.close()
        if self.fd is not None:
            os.close(self.fd)


def percentile(values, p):
    """
    The nearest-rank C{p}th percentile.
    """
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def continuous(directory, sourceLog, samples, subprocessSamples, rng):
    """
    Keep two logs in sync with C{gossip sync A B} and time adds written to
    one until they are in the other.

    @return: C{{series: [seconds, ...]}} and notes.
    """
    a = os.path.join(directory, "lat-a", NAME)
    b = os.path.join(directory, "lat-b", NAME)
    for path in (a, b):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        removeLog(path)
    shutil.copyfile(sourceLog, a)
    # The peer must exist: a new log, its identity add alone.
    Log(b).state(create=True)
    notes = {"adds": countLines(a) - 1}
    command = gossipCommand("sync", "-v", "--create", a, b)
    caughtUp = threading.Event()

    def onLine(line):
        if b"synced with" in line:
            caughtUp.set()

    start = time.perf_counter()
    process = spawn(command, WORKDIR)
    reader = LineTimes(process.stderr, onLine)
    reader.start()
    series = {}
    child = None
    try:
        deadline = time.perf_counter() + 300
        while not caughtUp.wait(0.1):
            if process.poll() is not None or time.perf_counter() > deadline:
                raise RuntimeError(f"continuous sync did not catch up:\n{reader.text()}")
        notes["catchUp"] = reader.first(b"synced with") - start
        children = childrenOf(process.pid, b"serve")
        child = children[0] if children else None
        # Let the first sync's cache writes and the like settle.
        time.sleep(1.0)
        run = rng.randrange(1 << 30)
        for label, source, target, count, external in [
            ("A to B, say in this process", a, b, samples, False),
            ("B to A, say in this process", b, a, samples, False),
            ("A to B, gossip say process", a, b, subprocessSamples, True),
        ]:
            if not count:
                continue
            log = Log(source)
            watch = FileWatch(target)
            delays = []
            fromCall = []
            says = []
            misses = 0
            for n in range(count):
                value = b"lat-%d-%d-%d" % (run, len(series), n)
                time.sleep(rng.uniform(0.01, 0.03))
                watch.skip()
                if external:
                    t0 = time.perf_counter()
                    subprocess.run(
                        gossipCommand("say", source, "m=" + value.decode("ascii")),
                        env=environment(), cwd=WORKDIR, check=True,
                    )
                else:
                    t0 = time.perf_counter()
                    log.say([(b"m", value)])
                said = time.perf_counter()
                seen = watch.wait(b"m=" + value + b">")
                if seen is None:
                    misses += 1
                    continue
                delays.append(seen - said)
                fromCall.append(seen - t0)
                says.append(said - t0)
            watch.close()
            series[label] = delays
            notes[label] = {"misses": misses, "say": says, "fromCall": fromCall}
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if child is not None:
            deadline = time.time() + 5
            while readStatus(child) is not None and time.time() < deadline:
                time.sleep(0.05)
            if readStatus(child) is not None:
                os.kill(child, signal.SIGKILL)
        reader.join(10)
    return series, notes


# Reporting


def profileReport(path, lines=18):
    import io
    import pstats

    out = []
    for key in ("tottime", "cumulative"):
        report = io.StringIO()
        pstats.Stats(path, stream=report).sort_stats(key).print_stats(lines)
        out.append(f"  sorted by {key}:")
        for line in report.getvalue().splitlines():
            if line.strip() and not line.lstrip().startswith(("Ordered by", "List reduced")):
                out.append("    " + line.rstrip())
    return "\n".join(out)


def codeVersion():
    """
    The gossip code timed: this checkout's, or --code's.
    """
    return _codeVersion(CODE)


def ms(seconds):
    return "-" if seconds is None else f"{seconds * 1000:.0f} ms"


def fine(seconds):
    return "-" if seconds is None else f"{seconds * 1000:.1f} ms"


def sec(seconds):
    return "-" if seconds is None else f"{seconds:.2f} s"


def mb(size):
    return "-" if size is None else f"{size / MB:.1f} MB"


def median(results, key):
    values = [r[key] for r in results if r.get(key) is not None]
    return statistics.median(values) if values else None


def worst(results, key):
    values = [r[key] for r in results if r.get(key) is not None]
    return max(values) if values else None


def printRuns(title, results, keys):
    print(title)
    for key, show in keys:
        values = [r.get(key) for r in results]
        shown = ", ".join(show(v) for v in values)
        print(f"  {key:12} median {show(median(results, key)):>9}   runs: {shown}")


GOSSIP_KEYS = [
    ("wall", sec),
    ("both", sec),
    ("startup", sec),
    ("sync", sec),
    ("handshake", sec),
    ("transfer", sec),
    ("shutdown", sec),
    ("clientCpu", sec),
    ("serveCpu", sec),
    ("clientBase", mb),
    ("clientPeak", mb),
    ("clientGrowth", mb),
    ("serveBase", mb),
    ("servePeak", mb),
    ("serveGrowth", mb),
]
ORIGINAL_KEYS = [
    ("wall", sec),
    ("startup", sec),
    ("sync", sec),
    ("peerCpu", sec),
    ("newCpu", sec),
    ("peerBase", mb),
    ("peerPeak", mb),
    ("peerGrowth", mb),
    ("newBase", mb),
    ("newPeak", mb),
    ("newGrowth", mb),
]


def met(ok):
    return "yes" if ok else "**NO**"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small logs, few runs")
    parser.add_argument("--dir", default="/tmp/gossip-bench-sync", help="where to write the logs")
    parser.add_argument(
        "--sizes", help="log sizes to sync, comma-separated (default 10,100000,1000000)"
    )
    parser.add_argument("--runs", type=int, help="timed one-shot syncs per log size")
    parser.add_argument("--original-runs", type=int, help="timed runs of the original's sync")
    parser.add_argument("--samples", type=int, help="continuous-sync latency samples per series")
    parser.add_argument("--interval", type=float, default=0.05, help="RSS sampling interval (s)")
    parser.add_argument("--keep", action="store_true", help="reuse logs already built in --dir")
    parser.add_argument(
        "--code",
        default=ROOT,
        help="directory holding the gossip package to time (default: this checkout)",
    )
    parser.add_argument(
        "--only",
        choices=("oneshot", "latency", "profile"),
        help="run only one part of the benchmark (profile: only the --profile run)",
    )
    parser.add_argument(
        "--profile", action="store_true",
        help="also run one sync (the largest, or --profile-count) with both sides under cProfile",
    )
    parser.add_argument("--profile-count", type=int, help="which log size to profile")
    options = parser.parse_args(argv)
    global CODE, WORKDIR
    CODE = os.path.abspath(options.code)

    if options.quick:
        counts, runs, originalRuns, samples = [10, 10_000, 50_000], 2, 1, 20
    else:
        counts, runs, originalRuns, samples = [10, 100_000, 1_000_000], 5, 3, 200
    if options.sizes:
        counts = [int(size) for size in options.sizes.split(",")]
    # The first size is tiny: what a sync costs whatever it moves.  The
    # original's protocol is measured on the next.
    originalCount = next((count for count in counts if count >= 10_000), counts[-1])
    runs = options.runs or runs
    originalRuns = options.original_runs if options.original_runs is not None else originalRuns
    samples = options.samples or samples
    directory = os.path.abspath(options.dir)
    if directory == ROOT or directory.startswith(ROOT + os.sep):
        parser.error("--dir must be outside the repository")
    os.makedirs(directory, exist_ok=True)
    WORKDIR = directory
    rng = random.Random()

    print(f"machine: {machine()}")
    print(f"command: {' '.join([os.path.basename(sys.executable)] + sys.argv)}")
    print(f"code: {codeVersion()}")
    print(
        "bytecode of this checkout: "
        + ("not written (PYTHONDONTWRITEBYTECODE)" if sys.flags.dont_write_bytecode else "cached")
    )
    print(f"logs in {directory}; RSS sampled every {options.interval * 1000:.0f} ms")
    print(f"load average at start: {loadAverage()}; calibration loop {calibrate() * 1000:.0f} ms")
    print()

    peers = {}
    for count in counts:
        path = os.path.join(directory, f"peer-{count}", NAME)
        if not (options.keep and os.path.exists(path) and countLines(path) == count + 1):
            t = time.perf_counter()
            size = buildLog(path, count)
            took = time.perf_counter() - t
            print(f"built {path}: {count:,} adds, {size / MB:.1f} MB in {took:.1f} s")
        peers[count] = path
    newLog = os.path.join(directory, "new", NAME)
    originalNew = os.path.join(directory, "original-new", NAME)
    os.makedirs(os.path.dirname(newLog), exist_ok=True)
    os.makedirs(os.path.dirname(originalNew), exist_ok=True)

    gossipResults = {}
    originalResults = []
    firstRuns = {}
    if options.only in (None, "oneshot"):
        for count in counts:
            peer = peers[count]
            size = os.path.getsize(peer)
            # The first sync of a log generated here has no cache beside it:
            # the serving side reads the whole log to build one.  Untimed
            # runs after it warm the page cache.
            removeLog(cachePath(peer))
            first = runGossipSync(newLog, peer, options.interval)
            firstRuns[count] = first
            print(
                f"{count:,} adds ({size / MB:.1f} MB): first sync, peer without its cache: "
                f"{sec(first['wall'])} (connected to synced {sec(first['sync'])}); "
                f"load {loadAverage()}"
            )
            results = []
            withOriginal = count == originalCount
            for i in range(max(runs, originalRuns if withOriginal else 0)):
                if i < runs:
                    r = runGossipSync(newLog, peer, options.interval)
                    assert r["lines"] == count + 1, r["lines"]
                    results.append(r)
                if withOriginal and i < originalRuns:
                    o = runOriginalSync(originalNew, peer, options.interval)
                    assert o["lines"] == count + 1, o["lines"]
                    originalResults.append(o)
            gossipResults[count] = results
            printRuns(
                f"gossip sync --once --create, {count:,} adds; load {loadAverage()}",
                results,
                GOSSIP_KEYS,
            )
            if withOriginal and originalResults:
                printRuns(
                    f"original's protocol (bench/original_sync.py x2), {count:,} adds; "
                    f"load {loadAverage()}",
                    originalResults,
                    ORIGINAL_KEYS,
                )
            print()

    if options.profile or options.only == "profile":
        count = options.profile_count or counts[-1]
        if count not in peers:
            parser.error(f"--profile-count must be one of {counts}")
        profiles = os.path.join(directory, "profiles")
        os.makedirs(profiles, exist_ok=True)
        client = os.path.join(profiles, f"client-{count}.prof")
        serve = os.path.join(profiles, f"serve-{count}.prof")
        r = runGossipSync(newLog, peers[count], options.interval, client, serve)
        print(f"cProfile, {count:,} adds, both sides profiled: wall {sec(r['wall'])}, "
              f"connected to synced {sec(r['sync'])} (inflated by profiling)")
        print(f"client (gossip sync), {client}:")
        print(profileReport(client))
        print(f"serve (gossip serve --stdio), {serve}:")
        print(profileReport(serve))
        print()

    series, notes = {}, {}
    if options.only in (None, "latency"):
        print(f"continuous sync: load {loadAverage()}")
        series, notes = continuous(
            directory, peers[originalCount], samples, max(samples // 4, 5), rng
        )
        print(
            f"  gossip sync -v --create A B, A holding {notes['adds']:,} adds: "
            f"caught up in {sec(notes['catchUp'])}"
        )
        for label, delays in series.items():
            info = notes[label]
            print(f"  {label}: {len(delays)} adds, {info['misses']} not seen within 10 s")
            for name, values in [
                ("from say returning", delays),
                ("from say called", info["fromCall"]),
                ("say itself", info["say"]),
            ]:
                if values:
                    print(
                        f"    {name:20} p50 {fine(percentile(values, 50)):>9}  "
                        f"p90 {fine(percentile(values, 90)):>9}  "
                        f"p99 {fine(percentile(values, 99)):>9}  max {fine(max(values)):>9}"
                    )
        print()

    print(f"load average at end: {loadAverage()}; calibration loop {calibrate() * 1000:.0f} ms")
    print()
    print("| figure | measured | target | met |")
    print("| --- | --- | --- | --- |")
    for count, results in gossipResults.items():
        n = len(results)
        wall = median(results, "wall")
        goal = TARGETS.get(count)
        print(
            f"| one-shot sync of {count:,} adds, whole command, median of {n} "
            f"| {sec(wall)} | " + (f"<= {goal:g} s | {met(wall <= goal)} |" if goal else "| |")
        )
        print(
            f"| one-shot sync of {count:,} adds, `connected` to `synced`, median of {n} "
            f"| {sec(median(results, 'sync'))} | | |"
        )
        for key, what in [
            ("startup", "start to `connected` (client start-up)"),
            ("handshake", "`connected` to the peer's summary (serve start-up, hello)"),
            ("transfer", "the peer's summary to `synced` (the adds moving)"),
            ("shutdown", "`synced` to exit"),
        ]:
            print(
                f"| one-shot sync of {count:,} adds, {what}, median "
                f"| {sec(median(results, key))} | | |"
            )
        for side in ("client", "serve"):
            growth = worst(results, side + "Growth")
            print(
                f"| one-shot sync of {count:,} adds, {side} RSS growth, worst of {n} "
                f"(peak {mb(worst(results, side + 'Peak'))}) | {mb(growth)} "
                f"| <= {TARGETS['rss']:g} MB "
                f"| {met(growth is not None and growth <= TARGETS['rss'] * MB)} |"
            )
        if count in firstRuns:
            print(
                f"| one-shot sync of {count:,} adds, first run, peer without its cache "
                f"| {sec(firstRuns[count]['wall'])} | | |"
            )
    if originalResults:
        count = originalCount
        wall = median(originalResults, "wall")
        ours = median(gossipResults[count], "wall")
        print(
            f"| original's protocol, {count:,} adds, both processes, median of "
            f"{len(originalResults)} | {sec(wall)} | | |"
        )
        print(
            f"| original's protocol, {count:,} adds, excluding start-up "
            f"| {sec(median(originalResults, 'sync'))} | | |"
        )
        print(f"| original / gossip, whole command | {wall / ours:.1f}x | | |")
        theirs = median(originalResults, "sync")
        print(
            f"| original (excluding start-up) / gossip `connected` to `synced` (the serve "
            f"process's start-up included) "
            f"| {theirs / median(gossipResults[count], 'sync'):.1f}x | | |"
        )
        print(
            f"| original (excluding start-up) / gossip summary to `synced` "
            f"| {theirs / median(gossipResults[count], 'transfer'):.1f}x | | |"
        )
        for side in ("peer", "new"):
            print(
                f"| original's protocol, {count:,} adds, {side} side RSS growth, worst "
                f"| {mb(worst(originalResults, side + 'Growth'))} | | |"
            )
    for label, delays in series.items():
        for name, values in [
            ("from say returning", delays),
            ("from say called", notes[label]["fromCall"]),
        ]:
            if not values:
                continue
            p50, p99 = percentile(values, 50), percentile(values, 99)
            if "gossip say process" in label and name == "from say called":
                print(
                    f"| continuous sync, {label}, {name} (process start-up included), "
                    f"p50 / p99 of {len(values)} | {fine(p50)} / {fine(p99)} | | |"
                )
                continue
            print(
                f"| continuous sync, {label}, {name}, p50 of {len(values)} | {fine(p50)} "
                f"| <= {ms(TARGETS['p50'])} | {met(p50 <= TARGETS['p50'])} |"
            )
            print(
                f"| continuous sync, {label}, {name}, p99 of {len(values)} | {fine(p99)} "
                f"| <= {ms(TARGETS['p99'])} | {met(p99 <= TARGETS['p99'])} |"
            )


if __name__ == "__main__":
    main()
