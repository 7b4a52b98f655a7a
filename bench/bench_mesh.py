"""
Measure gossip in a mesh: N daemons (C{twistd -n gossip}) on loopback, each
reaching its neighbours in a chosen topology over SSH (Conch to Conch),
adds written on one node or all of them, each appended on its own, then a
node SIGKILLed and restarted.

    python bench/bench_mesh.py --nodes 5 --topology full
    python bench/bench_mesh.py --nodes 10 --topology full --writers all
    python bench/bench_mesh.py --nodes 5 --topology line --outage 10

Reported (docs/performance.md, "Many nodes", has the figures and what each
means):

- convergence: from the last add written to every log holding all;
- announced keys, control entries (keys announced, origins noted and
  origins streamed on or off: what nodes tell each other of what they
  hold, version 2 or 1), lines sent and Request keys per add written, and
  lines per C{Adds} message: counted inside each daemon, which runs twistd with
  L{gossip.sync.protocol.SyncProtocol.callRemote} wrapped (gossip itself
  logs none of these);
- duplication: lines received over lines new to their receiver;
- wire bytes over payload: the TCP bytes of the daemons' SSH connections
  (C{ss -ti}, both directions) over the bytes of the adds new to their
  receivers; AMP bytes over payload likewise, from what the sessions read;
- daemon CPU over the writes (from C{/proc/PID/stat}) and RSS;
- connect: from starting the daemons to every link having synced once;
- heal: a node SIGKILLed, adds written elsewhere (and into its log) while
  it is down for --outage seconds, then restarted: from its restart to
  every log holding all.

Each link is listed by one end only (the later node dials the earlier);
with --both-ends, by both, and each pair of daemons keeps one of the two
sessions they dial (docs/protocol.md, "Links listed at both ends").  Logs, keys and the
daemons' logs go under --dir (default /tmp/gossip-bench-mesh).
"""

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench_log import loadAverage, machine  # noqa: E402
from bench_ssh import Keys, freePort  # noqa: E402
import bench_sync  # noqa: E402
from bench_sync import codeVersion, environment, readStatus  # noqa: E402
from gossip.store.format import identify  # noqa: E402
from gossip.store.logfile import entries  # noqa: E402

NAME = "mesh.log"

# A daemon: twistd, with SyncProtocol's outgoing commands and incoming
# lines counted, the counts written to a JSON file when it is sent SIGUSR1
# (not on a timer: on this machine a process pays about half a millisecond
# of CPU for every wakeup, which the daemons' figures would include).
NODE = r"""
import json, os, sys
from gossip.store.intervals import count
from gossip.sync import protocol
from gossip.sync.amp import decodeOrigins, decodeRanges

out = sys.argv.pop(1)
counts = dict.fromkeys(
    ["announceMsgs", "announceKeys", "addsMsgs", "linesSent", "bytesSent",
     "requestMsgs", "requestKeys", "linesIn", "linesNew", "bytesNew", "ampIn",
     "noteMsgs", "noteOrigins", "streamMsgs", "streamOrigins"], 0)
P = protocol.SyncProtocol
callRemote, received, account, dataReceived = P.callRemote, P._received, P._account, P.dataReceived

def counted(self, command, **arguments):
    name = command.__name__
    if name == "Announce":
        counts["announceMsgs"] += 1
        counts["announceKeys"] += count(decodeRanges(arguments["ranges"]))
    elif name == "Note":
        counts["noteMsgs"] += 1
        counts["noteOrigins"] += len(decodeRanges(arguments["ranges"]))
    elif name == "Stream":
        counts["streamMsgs"] += 1
        counts["streamOrigins"] += len(decodeOrigins(arguments["origins"]))
    elif name == "Adds":
        counts["addsMsgs"] += 1
        counts["linesSent"] += arguments["lines"].count(b"\n")
        counts["bytesSent"] += len(arguments["lines"])
    elif name == "AddBegin":
        counts["linesSent"] += 1
        counts["bytesSent"] += arguments["size"]
    elif name == "Request":
        counts["requestMsgs"] += 1
        counts["requestKeys"] += count(decodeRanges(arguments["ranges"]))
    return callRemote(self, command, **arguments)

def countedReceived(self, data):
    counts["linesIn"] += data.count(b"\n") + (data[-1:] not in (b"", b"\n"))
    return received(self, data)

def countedAccount(self, result, size):
    counts["linesNew"] += result.count
    if result.count:
        counts["bytesNew"] += result.end - result.start
    return account(self, result, size)

def countedData(self, data):
    counts["ampIn"] += len(data)
    return dataReceived(self, data)

P.callRemote, P._received, P._account, P.dataReceived = (
    counted, countedReceived, countedAccount, countedData)

from twisted.internet import reactor
import cProfile, signal, time
dumps = [0]

def dump():
    dumps[0] += 1
    with open(out + ".tmp", "w") as f:
        json.dump(dict(counts, dumps=dumps[0]), f)
    os.replace(out + ".tmp", out)

signal.signal(signal.SIGUSR1, lambda *a: reactor.callFromThread(dump))

# --profile: the first SIGUSR2 starts cProfile, the second writes its
# figures beside the counts.  CPU time, not the wall clock: twenty daemons
# share two cores.
profile = cProfile.Profile(time.process_time)
profiling = [False]

def toggle():
    if not profiling[0]:
        profiling[0] = True
        profile.enable()
    else:
        profile.disable()
        profile.dump_stats(out + ".prof")

signal.signal(signal.SIGUSR2, lambda *a: reactor.callFromThread(toggle))
sys.argv[0] = "twistd"
from twisted.scripts.twistd import run
run()
"""

# A writer: appends adds to one log by the Log API, each on its own (as
# separate `gossip say`s would), once told to go; prints when it is done.
WRITER = r"""
import sys, time
from gossip.store.logfile import Log
path, n, tag = sys.argv[1], int(sys.argv[2]), sys.argv[3].encode()
log = Log(path)
print("ready", flush=True)
sys.stdin.readline()
for i in range(n):
    log.say([(b"m", b"%s add %d of the mesh benchmark" % (tag, i))])
print(time.time(), flush=True)
"""


def edges(topology, n):
    """
    The links of C{topology} on nodes 0..n-1, as C{(i, j)} with C{i < j}.
    """
    if topology == "line":
        return [(i, i + 1) for i in range(n - 1)]
    if topology == "ring":
        return [(i, i + 1) for i in range(n - 1)] + ([(0, n - 1)] if n > 2 else [])
    if topology == "star":
        return [(0, j) for j in range(1, n)]
    if topology == "full":
        return [(i, j) for i in range(n) for j in range(i + 1, n)]
    raise ValueError(topology)


class Node:
    """
    One daemon of the mesh, its log, its counts and its twistd log.
    """

    def __init__(self, directory, index, keys):
        self.index = index
        self.directory = os.path.join(directory, f"node{index}")
        os.makedirs(self.directory, exist_ok=True)
        self.log = os.path.join(self.directory, NAME)
        self.counts = os.path.join(self.directory, "counts.json")
        self.twistdLog = os.path.join(self.directory, "twistd.log")
        self.port = freePort()
        self.keys = keys
        keys.trust(self.port, keys.gossipHost)
        self.peers = []
        self.process = None
        self._dumps = 0
        self._offset = 0
        self._lines = 0

    def start(self):
        self._dumps = 0
        for path in (self.counts, self.twistdLog):
            if os.path.exists(path):
                os.unlink(path)
        command = [sys.executable, "-c", NODE, self.counts, "-n", "--pidfile=",
                   f"--logfile={self.twistdLog}", "gossip", "--control", "none", "--log", self.log,
                   "--listen", f"tcp:{self.port}:interface=127.0.0.1",
                   "--host-key", self.keys.gossipHost,
                   "--authorized-keys", self.keys.authorized,
                   "--identity", self.keys.client,
                   "--known-hosts", self.keys.knownHosts]  # fmt: skip
        for peer in self.peers:
            command += ["--peer", f"ssh://127.0.0.1:{peer.port}/{NAME}"]
        self.process = subprocess.Popen(
            command, env=environment(), cwd=self.directory,
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        self.pid = self.process.pid

    def text(self):
        try:
            with open(self.twistdLog, encoding="utf-8", errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def listening(self):
        return "listening for SSH peers" in self.text()

    def syncedLinks(self):
        """
        How many sessions have said they caught up, and how many this
        node has caught up with.
        """
        text = self.text()
        return text.count(" has caught up\n"), text.count(" has caught up with ")

    def lines(self):
        """
        How many whole lines the log holds, read on from where last asked.
        """
        try:
            with open(self.log, "rb") as f:
                f.seek(self._offset)
                data = f.read()
        except FileNotFoundError:
            return 0
        end = data.rfind(b"\n") + 1
        self._lines += data.count(b"\n", 0, end)
        self._offset += end
        return self._lines

    def readCounts(self):
        """
        The daemon's counts, which it writes when asked.
        """
        self._dumps += 1
        self.process.send_signal(signal.SIGUSR1)

        def read():
            try:
                with open(self.counts) as f:
                    counts = json.load(f)
            except (FileNotFoundError, ValueError):
                return None
            return counts if counts.get("dumps") == self._dumps else None

        if waitFor(read, 10, poll=0.01) is None:
            raise RuntimeError(f"node {self.index} did not write its counts")
        counts = read()
        del counts["dumps"]
        return counts

    def cpu(self):
        status = readStatus(self.pid)
        return None if status is None else status[2]

    def rss(self):
        status = readStatus(self.pid)
        return None if status is None else status[0]

    def kill(self):
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self):
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def wireBytes(ports):
    """
    The bytes sent and received so far on the established TCP connections
    whose local port is one of C{ports} (the accepting ends of the links),
    by C{ss -ti}.
    """
    output = subprocess.run(
        ["ss", "-tinHO", "state", "established"], capture_output=True, text=True, check=True
    ).stdout
    total = 0
    for row in output.splitlines():
        fields = row.split()
        if len(fields) < 3:
            continue
        local = fields[2]
        try:
            port = int(local.rsplit(":", 1)[1])
        except (IndexError, ValueError):
            continue
        if port not in ports:
            continue
        for name in ("bytes_acked", "bytes_received"):
            match = re.search(rf"\b{name}:(\d+)", row)
            if match:
                total += int(match.group(1))
    return total


def keysOf(path):
    """
    The C{(by, at)} of every add in the log at C{path}, in order.
    """
    found = []
    with open(path, "rb") as f:
        for offset, record, body in entries(f):
            if body is None:
                raise AssertionError(f"{path}: damaged line at {offset}")
            key = identify(body)
            if key is not None:
                found.append(key)
    return found


def checkLogs(nodes):
    """
    Every log holds the same adds, each once: or say what differs.
    """
    sets = []
    for node in nodes:
        keys = keysOf(node.log)
        if len(keys) != len(set(keys)):
            return f"node {node.index} holds {len(keys) - len(set(keys))} adds twice"
        sets.append(set(keys))
    for node, keys in zip(nodes, sets):
        if keys != sets[0]:
            return f"node {node.index} differs from node 0"
    return "ok"


def waitFor(condition, timeout, poll=0.005):
    """
    Poll C{condition} until true; the time it became so, or None.
    """
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return time.time()
        time.sleep(poll)
    return None


def startWriters(nodes, count, tag):
    writers = []
    for node in nodes:
        process = subprocess.Popen(
            [sys.executable, "-c", WRITER, node.log, str(count), f"{tag}{node.index}"],
            env=environment(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        writers.append(process)
    for process in writers:
        assert process.stdout.readline().strip() == "ready"
    return writers


def go(writers):
    for process in writers:
        process.stdin.write("go\n")
        process.stdin.flush()
    ends = [float(process.stdout.readline()) for process in writers]
    for process in writers:
        process.wait()
    return max(ends)


def totals(nodes, before):
    after = [node.readCounts() for node in nodes]
    keys = set().union(*after)
    return {
        key: sum(a.get(key, 0) - b.get(key, 0) for a, b in zip(after, before)) for key in keys
    }


def run(options):
    directory = options.dir
    if os.path.exists(directory):
        shutil.rmtree(directory)
    os.makedirs(directory)
    keys = Keys(os.path.join(directory, "keys"))
    n = options.nodes
    nodes = [Node(directory, i, keys) for i in range(n)]
    links = edges(options.topology, n)
    degree = [0] * n
    for i, j in links:
        nodes[j].peers.append(nodes[i])
        if options.bothEnds:
            nodes[i].peers.append(nodes[j])
        degree[i] += 1
        degree[j] += 1
    ports = {node.port for node in nodes}
    result = {"load before": loadAverage()}
    try:
        started = time.time()
        for node in nodes:
            node.start()

        def connected():
            return all(
                node.syncedLinks()[0] >= d and node.syncedLinks()[1] >= d
                for node, d in zip(nodes, degree)
            )

        ready = waitFor(connected, 120, poll=0.05)
        if ready is None:
            raise RuntimeError("the mesh did not connect in 120 s")
        result["connect"] = ready - started
        time.sleep(0.5)
        base = [node.lines() for node in nodes]
        writing = nodes if options.writers == "all" else nodes[:1]
        total = options.adds * len(writing)
        writers = startWriters(writing, options.adds, "w")
        before = [node.readCounts() for node in nodes]
        if options.profile:
            for node in nodes:
                node.process.send_signal(signal.SIGUSR2)
        cpuBefore = [node.cpu() for node in nodes]
        wireBefore = wireBytes(ports)
        first = time.time()
        last = go(writers)

        def converged():
            return all(node.lines() - b >= total for node, b in zip(nodes, base))

        done = waitFor(converged, 300)
        if done is None:
            raise RuntimeError("the mesh did not converge in 300 s")
        result["write"] = last - first
        result["converge"] = max(0.0, done - last)
        # Let the announcements, notes and answers that follow the last add
        # settle: a note period (drawn within 20% of 5 s) and the switch
        # delay after it.
        time.sleep(options.settle)
        cpu = [after - before for after, before in zip((node.cpu() for node in nodes), cpuBefore)]
        if options.profile:
            for node in nodes:
                node.process.send_signal(signal.SIGUSR2)
            time.sleep(1)
            showProfiles(nodes)
        wire = wireBytes(ports) - wireBefore
        counts = totals(nodes, before)
        result.update(
            adds=total,
            announce=counts.get("announceKeys", 0) / total,
            control=(
                counts.get("announceKeys", 0)
                + counts.get("noteOrigins", 0)
                + counts.get("streamOrigins", 0)
            )
            / total,
            notes=counts.get("noteOrigins", 0) / total,
            streams=counts.get("streamOrigins", 0) / total,
            sent=counts.get("linesSent", 0) / total,
            requested=counts.get("requestKeys", 0) / total,
            batch=counts.get("linesSent", 0) / max(1, counts.get("addsMsgs", 0)),
            dup=counts.get("linesIn", 0) / max(1, counts.get("linesNew", 0)),
            wire=wire / max(1, counts.get("bytesNew", 0)),
            amp=counts.get("ampIn", 0) / max(1, counts.get("bytesNew", 0)),
            cpu=sum(cpu),
            cpuMax=max(cpu),
            rss=max(node.rss() or 0 for node in nodes),
            check=checkLogs(nodes),
        )
        if options.outage > 0:
            result.update(heal(nodes, options, base, total))
        result["load after"] = loadAverage()
    finally:
        for node in nodes:
            node.stop()
    return result


def showProfiles(nodes):
    """
    Print where the daemons' time went over the writes, all together.
    """
    import pstats

    paths = [node.counts + ".prof" for node in nodes if os.path.exists(node.counts + ".prof")]
    if not paths:
        print("no profiles written")
        return
    stats = pstats.Stats(*paths)
    stats.sort_stats("tottime").print_stats(35)
    stats.sort_stats("cumulative").print_stats(45)


def heal(nodes, options, base, total):
    """
    SIGKILL a node, write adds on the others and on its log while it is
    down, restart it: the time until every log holds all.
    """
    victim = nodes[options.victim if options.victim is not None else len(nodes) // 2]
    others = [node for node in nodes if node is not victim]
    victim.kill()
    down = time.time()
    writing = others if options.writers == "all" else [others[0]]
    extra = options.outageAdds
    writers = startWriters(writing + [victim], extra, "h")
    go(writers)
    expected = total + extra * (len(writing) + 1)
    time.sleep(max(0.0, options.outage - (time.time() - down)))
    victim.start()
    restarted = time.time()

    def healed():
        return all(node.lines() - b >= expected for node, b in zip(nodes, base))

    done = waitFor(healed, 600, poll=0.01)
    listening = waitFor(victim.listening, 1, poll=0.01)
    return {
        "heal": None if done is None else done - restarted,
        "heal check": checkLogs(nodes) if done is not None else "not healed in 600 s",
        "victim": victim.index,
        "victim listening": None if listening is None else listening - restarted,
    }


def wakeupCost(wakeups=300, interval=0.01):
    """
    The CPU seconds a process is charged for waking from a short sleep,
    doing nothing: a figure of the machine that every daemon pays for each
    turn of its reactor.
    """
    started = time.process_time()
    for _ in range(wakeups):
        time.sleep(interval)
    return (time.process_time() - started) / wakeups


def show(options, results):
    def f(value, form):
        return "-" if value is None else format(value, form)

    print(
        f"{options.nodes} nodes, {options.topology}"
        f"{' listed at both ends' if options.bothEnds else ''}, writers {options.writers}, "
        f"{options.adds} adds each; {machine()}, {os.cpu_count()} cores; code {codeVersion()}"
    )
    print(f"CPU charged for a wakeup from a 10 ms sleep: {wakeupCost() * 1e6:.0f} us")
    header = ("run", "connect s", "write s", "converge s", "announced/add", "control/add", "sent/add",
              "requested/add", "lines/Adds", "dup", "wire/payload", "amp/payload",
              "CPU s (all)", "CPU s (max)", "RSS MB", "heal s", "load", "check")  # fmt: skip
    rows = []
    for i, r in enumerate(results, 1):
        rows.append((
            str(i), f(r.get("connect"), ".2f"), f(r.get("write"), ".2f"),
            f(r.get("converge"), ".3f"), f(r.get("announce"), ".1f"), f(r.get("control"), ".1f"),
            f(r.get("sent"), ".2f"),
            f(r.get("requested"), ".2f"), f(r.get("batch"), ".1f"), f(r.get("dup"), ".2f"),
            f(r.get("wire"), ".2f"), f(r.get("amp"), ".2f"), f(r.get("cpu"), ".2f"),
            f(r.get("cpuMax"), ".2f"), f((r.get("rss") or 0) / 1e6, ".0f"),
            f(r.get("heal"), ".2f"),
            f"{r['load before']} -> {r.get('load after', '?')}",
            r.get("check", "?") + (f"; heal {r['heal check']}" if "heal check" in r else ""),
        ))  # fmt: skip
    widths = [max(len(h), *(len(row[k]) for row in rows)) for k, h in enumerate(header)]
    print(" | ".join(h.ljust(w) for h, w in zip(header, widths)))
    print("-|-".join("-" * w for w in widths))
    for row in rows:
        print(" | ".join(c.ljust(w) for c, w in zip(row, widths)))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=5)
    parser.add_argument("--topology", choices=["line", "ring", "star", "full"], default="full")
    parser.add_argument("--writers", choices=["one", "all"], default="all")
    parser.add_argument("--adds", type=int, default=100, help="adds each writer appends")
    parser.add_argument("--outage", type=float, default=5.0,
                        help="seconds a node is down for the heal figure (0: no heal)")
    parser.add_argument("--outage-adds", dest="outageAdds", type=int, default=20,
                        help="adds each writer (and the node down) appends meanwhile")
    parser.add_argument("--victim", type=int, default=None,
                        help="the node killed (default the middle one, N // 2)")
    parser.add_argument("--settle", type=float, default=8.0,
                        help="seconds after convergence still counted (notes included)")
    parser.add_argument("--both-ends", dest="bothEnds", action="store_true",
                        help="list each link at both ends, not only at the later node")
    parser.add_argument("--profile", action="store_true",
                        help="profile the daemons over the writes (cProfile) and print the sum")
    parser.add_argument("--code", default=ROOT,
                        help="directory holding the gossip package the daemons run "
                        "(default: this checkout)")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--dir", default="/tmp/gossip-bench-mesh")
    parser.add_argument("--json", help="also write the figures to this file")
    options = parser.parse_args(argv)
    if options.nodes < 2:
        parser.error("--nodes: at least 2")
    bench_sync.CODE = os.path.abspath(options.code)
    results = []
    for _ in range(options.repeat):
        results.append(run(options))
    show(options, results)
    if options.json:
        with open(options.json, "w") as f:
            json.dump({"options": vars(options), "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
