"""
Folders of documents kept in step by real daemons (issue 13), each figure
beside a floor measured in the same run:

- latency: two C{twistd gossip --folder} daemons, one reaching the other
  over SSH on loopback: how long a save on one takes to appear in the
  other's file, over --saves saves (half each way), beside an add said to
  one log appearing in the other (the sync alone, no folders);
- meet: three nodes each make --meet-saves saves to one 100 KB document
  while apart, then their daemons meet over SSH: the time from starting
  them until the three files hold identical bytes, beside the same
  merge in one process (logs exchanged, one folder pass each) and the
  updates replayed into a bare pycrdt document;
- startup: a folder of --documents documents and its state file: opening
  it and a first pass that finds nothing to do, in this process and as
  C{gossip folder --once}, beside the same with the state file deleted and
  a Python that only imports gossip; and one save's pass in that folder.

    python bench/bench_folder.py [--only latency,meet,startup] [--dir DIR]

Everything is made under --dir (default: a new temporary directory,
removed after unless --keep).  docs/performance.md has the figures.
"""

import argparse
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from cryptography.hazmat.primitives.asymmetric import ed25519  # noqa: E402
from twisted.conch.ssh import keys  # noqa: E402

from bench_documents import replay  # noqa: E402
from bench_log import loadAverage, machine  # noqa: E402
from gossip.documents.folder import Folder  # noqa: E402
from gossip.store.logfile import Log, entries  # noqa: E402

ENV = dict(os.environ, PYTHONPATH=ROOT)
WORDS = "the quick brown fox jumps over the lazy dog é ☃ 😀".split()
TARGETS = {"p50": 0.050, "p99": 0.200, "meet": 5.0, "startup": 1.0}


def met(value, target):
    return "met" if value <= target else "MISSED"


def quantile(values, q):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def spread(values):
    return (
        f"p50 {quantile(values, 0.5) * 1000:.1f} ms, p90 {quantile(values, 0.9) * 1000:.1f} ms, "
        f"p99 {quantile(values, 0.99) * 1000:.1f} ms, max {max(values) * 1000:.1f} ms, "
        f"mean {statistics.mean(values) * 1000:.1f} ms"
    )


def text(rng, size):
    """
    Lines of ten words, C{size} bytes of UTF-8 or a line more.
    """
    lines, length = [], 0
    while length < size:
        line = " ".join(rng.choice(WORDS) for _ in range(10)) + "\n"
        lines.append(line)
        length += len(line.encode("utf-8"))
    return "".join(lines)


def write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(data)


def read(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None


def lines(log):
    with open(log, "rb") as f:
        return [record + b"\n" for offset, record, body in entries(f) if body is not None]


def waitUntil(predicate, timeout, what, interval=0.0005):
    deadline = time.perf_counter() + timeout
    while not predicate():
        if time.perf_counter() > deadline:
            raise RuntimeError(f"{what}: not within {timeout} s")
        time.sleep(interval)
    return time.perf_counter()


# Nodes and daemons


class Node:
    """
    A log and its folder.
    """

    def __init__(self, directory, name):
        self.dir = os.path.join(directory, name)
        self.files = os.path.join(self.dir, "files")
        os.makedirs(self.files)
        self.log = os.path.join(self.dir, "notes.log")

    def path(self, name):
        return os.path.join(self.files, name)

    def sync(self):
        folder = Folder(self.log, self.files)
        folder.open()
        try:
            folder.sync()
        finally:
            folder.close()


def writeKey(path):
    key = keys.Key(ed25519.Ed25519PrivateKey.generate())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.toString("openssh"))
    return key


def publicLine(key):
    return key.public().toString("openssh").decode("ascii")


class Keys:
    """
    A host key for the daemon that listens, a client key for those that
    reach it, and the files saying who trusts whom.
    """

    def __init__(self, directory):
        os.makedirs(directory)
        self.host = os.path.join(directory, "host_key")
        self.hostKey = writeKey(self.host)
        self.client = os.path.join(directory, "id_ed25519")
        self.authorized = os.path.join(directory, "authorized_keys")
        with open(self.authorized, "w") as f:
            f.write(publicLine(writeKey(self.client)) + "\n")
        self.knownHosts = os.path.join(directory, "known_hosts")
        open(self.knownHosts, "w").close()

    def trust(self, port):
        with open(self.knownHosts, "a") as f:
            f.write(f"[127.0.0.1]:{port} {publicLine(self.hostKey)}\n")


class Daemon:
    """
    C{twistd -n gossip --log LOG --folder DIR}: listening on a port the
    system chooses, or reaching a peer that does.
    """

    def __init__(self, node, keys, label, peerPort=None):
        self.logfile = os.path.join(node.dir, f"twistd-{label}.log")
        self.started = time.perf_counter()
        command = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
                   "-n", "--pidfile=", f"--logfile={self.logfile}", "gossip",
                   "--control", "none", "--log", node.log, "--folder", node.files]
        if peerPort is None:
            command += ["--listen", "tcp:0:interface=127.0.0.1", "--host-key", keys.host,
                        "--authorized-keys", keys.authorized]
        else:
            command += ["--listen", "none", "--peer", f"ssh://127.0.0.1:{peerPort}",
                        "--identity", keys.client, "--known-hosts", keys.knownHosts]
        self.process = subprocess.Popen(
            command, env=ENV, cwd=node.dir, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )

    def text(self):
        try:
            with open(self.logfile, encoding="utf-8", errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def waitFor(self, pattern, timeout=120.0):
        """
        Wait until the daemon's log matches C{pattern}.

        @return: the match, and when (perf_counter) it was seen.
        """
        found = []

        def seen():
            if self.process.poll() is not None:
                raise RuntimeError(f"the daemon exited:\n{self.text()}")
            match = re.search(pattern, self.text())
            if match:
                found.append(match)
            return bool(match)

        when = waitUntil(seen, timeout, f"{pattern!r} in {self.logfile}", interval=0.005)
        return found[0], when

    def port(self):
        match, when = self.waitFor(r"listening for SSH peers on 127\.0\.0\.1 port (\d+)")
        return int(match.group(1))

    def stop(self):
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def pair(directory, nodes):
    """
    Daemons for C{nodes}: the first listens, the others reach it.
    """
    keyring = Keys(os.path.join(directory, "keys"))
    first = Daemon(nodes[0], keyring, nodes[0].dir.rsplit("/", 1)[-1])
    port = first.port()
    keyring.trust(port)
    others = [Daemon(node, keyring, node.dir.rsplit("/", 1)[-1], port) for node in nodes[1:]]
    return [first] + others


# Latency


def latency(directory, saves, rng):
    print(f"\n== latency: {saves} saves between two daemons over SSH on loopback")
    a, b = Node(directory, "a"), Node(directory, "b")
    daemons = pair(directory, [a, b])
    try:
        daemons[1].waitFor(r"synced with ssh://")
        name = "latency.md"
        body = text(rng, 5000).splitlines(keepends=True)
        write(a.path(name), "".join(body))
        waitUntil(lambda: read(b.path(name)) == "".join(body).encode(), 30, "the first file")
        # The floor: an add said to one log (by another process, as
        # gossip say does), until it is in the other log.
        floor = []
        for i in range(saves):
            source, destination = (a, b) if i % 2 == 0 else (b, a)
            size = os.path.getsize(destination.log)
            marker = b"probe%d=%d" % (i, rng.randrange(1 << 30))
            started = time.perf_counter()
            Log(source.log).say([(marker.split(b"=")[0], marker.split(b"=")[1])])
            arrived = waitUntil(
                lambda: os.path.getsize(destination.log) > size and marker in tail(destination.log, size),
                10, "an add",
            )
            floor.append(arrived - started)
        times = []
        for i in range(saves):
            source, destination = (a, b) if i % 2 == 0 else (b, a)
            where = rng.randrange(len(body))
            body.insert(where, f"save {i}: {' '.join(rng.choice(WORDS) for _ in range(6))}\n")
            expected = "".join(body).encode()
            started = time.perf_counter()
            write(source.path(name), "".join(body))
            arrived = waitUntil(lambda: read(destination.path(name)) == expected, 10, f"save {i}")
            times.append(arrived - started)
            # The side that wrote has its own save in its log: let it settle.
            waitUntil(lambda: read(source.path(name)) == expected, 10, f"save {i} at home")
        print(f"save to the other's file: {spread(times)}")
        print(f"  targets p50 <= 50 ms: {met(quantile(times, 0.5), TARGETS['p50'])}; "
              f"p99 <= 200 ms: {met(quantile(times, 0.99), TARGETS['p99'])}")
        print(f"floor, an add said to one log into the other log: {spread(floor)}")
        print(f"document: {len(expected)} bytes at the end")
    finally:
        for daemon in daemons:
            daemon.stop()


def tail(path, offset):
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read()


# Three nodes meet


def edit(rng, body):
    """
    A save's worth of editing: a few words typed somewhere, a few
    characters deleted somewhere else.
    """
    at = rng.randrange(len(body))
    body = body[:at] + " " + " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 4))) + body[at:]
    at = rng.randrange(len(body) - 10)
    return body[:at] + body[at + rng.randint(1, 8):]


def meet(directory, count, rng):
    print(f"\n== meet: three nodes, {count} saves each to one 100 KB document while apart")
    nodes = [Node(directory, f"n{i}") for i in range(3)]
    name = "shared.md"
    start = text(rng, 100_000)
    write(nodes[0].path(name), start)
    nodes[0].sync()
    for node in nodes[1:]:
        Log(node.log).receive(b"".join(lines(nodes[0].log)))
        node.sync()
    folders = []
    for node in nodes:
        folder = Folder(node.log, node.files)
        folder.open()
        folders.append(folder)
    bodies = [start] * 3
    began = time.perf_counter()
    for i in range(count):
        for k, (node, folder) in enumerate(zip(nodes, folders)):
            bodies[k] = edit(rng, bodies[k])
            write(node.path(name), bodies[k])
            folder.sync()
    making = time.perf_counter() - began
    for folder in folders:
        folder.close()
    sizes = [os.path.getsize(node.log) for node in nodes]
    print(f"made {3 * count} saves in {making:.1f} s ({making / (3 * count) * 1000:.1f} ms a save); "
          f"logs {', '.join(f'{s / 1e6:.1f} MB' for s in sizes)}")

    # The floor: every update into a bare pycrdt document.
    every = {}
    for node in nodes:
        for line in lines(node.log):
            every[line] = None
    floor, merged = replay(list(every))
    merged = merged.encode("utf-8")

    # The same merge in one process: copies of the nodes take each other's
    # logs and run one pass each.
    copies = os.path.join(directory, "inprocess")
    shutil.copytree(directory, copies, ignore=shutil.ignore_patterns("inprocess", "keys"))
    copyNodes = [os.path.join(copies, f"n{i}") for i in range(3)]
    for copy in copyNodes:
        # The state file names the folder it belongs to.
        state = os.path.join(copy, ".notes.log.gossip-folder")
        with open(state) as f:
            data = json.load(f)
        data["folder"] = os.path.realpath(os.path.join(copy, "files"))
        with open(state, "w") as f:
            json.dump(data, f)
    theirs = [lines(node.log) for node in nodes]
    started = time.perf_counter()
    for k, copy in enumerate(copyNodes):
        log = os.path.join(copy, "notes.log")
        for j in range(3):
            if j != k:
                Log(log).receive(b"".join(theirs[j]))
        folder = Folder(log, os.path.join(copy, "files"))
        folder.open()
        folder.sync()
        folder.close()
    inProcess = time.perf_counter() - started
    same = all(read(os.path.join(copy, "files", name)) == merged for copy in copyNodes)
    print(f"floor, {len(every) - 1} updates into a bare pycrdt Doc: {floor:.2f} s")
    print(f"in one process, three logs exchanged and a pass each: {inProcess:.2f} s "
          f"({inProcess / 3:.2f} s a node); files identical to the floor's text: {same}")

    daemons = pair(directory, nodes)
    try:
        launched = daemons[0].started
        ready = {}

        def converged():
            for k, daemon in enumerate(daemons):
                if k not in ready and "in step with" in daemon.text():
                    ready[k] = time.perf_counter() - daemon.started
            return all(read(node.path(name)) == merged for node in nodes)

        converged = waitUntil(converged, 300, "convergence", interval=0.005)
        ready = [ready.get(k, float("nan")) for k in range(len(daemons))]
        print(f"daemons over SSH, from starting the first to identical files: "
              f"{converged - launched:.2f} s (target <= 5 s: {met(converged - launched, TARGETS['meet'])})")
        print(f"  of which each daemon's start-up to its folder in step: "
              f"{', '.join(f'{r:.2f} s' for r in ready)}")
        print(f"identical bytes on all three, equal to the floor's text: "
              f"{len({read(node.path(name)) for node in nodes}) == 1} ({len(merged)} bytes)")
    finally:
        for daemon in daemons:
            daemon.stop()


# Start-up on many documents


def startup(directory, count, rng):
    print(f"\n== startup: a folder of {count} documents, three saves each")
    node = Node(directory, "many")
    names = [f"d{i // 100}/note{i}.md" for i in range(count)]
    bodies = {name: text(rng, rng.randint(500, 4000)) for name in names}
    for name, body in bodies.items():
        write(node.path(name), body)
    node.sync()
    for round in range(2):
        for name in names:
            bodies[name] = edit(rng, bodies[name])
            write(node.path(name), bodies[name])
        node.sync()
    state = os.path.join(node.dir, ".notes.log.gossip-folder")
    print(f"log {os.path.getsize(node.log) / 1e6:.1f} MB, state file {os.path.getsize(state) / 1e6:.1f} MB")

    def opening():
        started = time.perf_counter()
        node.sync()
        return time.perf_counter() - started

    warm = [opening() for _ in range(5)]
    print(f"open and a pass with the state file, in this process: median {statistics.median(warm):.3f} s, "
          f"best {min(warm):.3f} s (target <= 1 s: {met(statistics.median(warm), TARGETS['startup'])})")
    command = [sys.executable, "-m", "gossip", "folder", "--once", node.log, node.files]
    bare = [sys.executable, "-c", "import gossip.documents.folder, gossip.cli.main"]
    runs = {"gossip folder --once": [], "python importing gossip (the floor)": []}
    for _ in range(5):
        for label, argv in (("gossip folder --once", command), ("python importing gossip (the floor)", bare)):
            started = time.perf_counter()
            subprocess.run(argv, env=ENV, check=True, stdout=subprocess.DEVNULL)
            runs[label].append(time.perf_counter() - started)
    for label, values in runs.items():
        print(f"{label}, whole command: median {statistics.median(values):.3f} s")

    # One save in the big folder: a pass that makes one add.
    folder = Folder(node.log, node.files)
    folder.open()
    folder.sync()
    passes = []
    for i in range(20):
        name = rng.choice(names)
        bodies[name] = edit(rng, bodies[name])
        write(node.path(name), bodies[name])
        started = time.perf_counter()
        folder.sync()
        passes.append(time.perf_counter() - started)
    folder.close()
    print(f"one save's pass in the {count}-document folder: median {statistics.median(passes) * 1000:.1f} ms")

    os.unlink(state)
    started = time.perf_counter()
    node.sync()
    print(f"open and a pass with the state file deleted (the whole log read): "
          f"{time.perf_counter() - started:.2f} s")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", default="latency,meet,startup")
    parser.add_argument("--saves", type=int, default=200)
    parser.add_argument("--meet-saves", type=int, default=1000)
    parser.add_argument("--documents", type=int, default=1000)
    parser.add_argument("--dir")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    directory = args.dir or tempfile.mkdtemp(prefix="gossip-bench-folder-")
    os.makedirs(directory, exist_ok=True)
    print(machine())
    print(f"load average at the start: {loadAverage()}")
    rng = random.Random(13)
    try:
        for part in args.only.split(","):
            work = os.path.join(directory, part)
            if os.path.exists(work):
                shutil.rmtree(work)
            os.makedirs(work)
            {"latency": lambda: latency(work, args.saves, rng),
             "meet": lambda: meet(work, args.meet_saves, rng),
             "startup": lambda: startup(work, args.documents, rng)}[part]()
            print(f"load average: {loadAverage()}")
    finally:
        if not args.keep:
            shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
