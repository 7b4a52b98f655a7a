"""
Measure gossip's log reading and its command line against the original
gossip.py's decoding algorithm, in one run, and print every figure.

    python bench/bench_log.py            # the full run (several minutes)
    python bench/bench_log.py --quick    # small logs, a few seconds

Logs are generated under --dir (default /tmp/gossip-bench), never in the
repository: the full run writes about 200 MB there.  See bench/README.md.
"""

import argparse
import base64
import hashlib
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from gossip.store.format import decodeBody, encodeAdd  # noqa: E402
from gossip.store.logfile import entries  # noqa: E402
from tests import original  # noqa: E402

MB = 1e6

# Targets on a 2-core machine.
TARGETS = {
    "verify": 4.0,  # gossip's verify scan vs the original's full decoder
    "decode": 2.5,  # gossip's full decode vs the original's full decoder
    "bigRate": 200.0,  # MB/s full decode of 1 MB adds
    "say": 0.080,  # s, gossip say on the 1M-add log, cache built
    "coldSay": 0.080,  # s, gossip say creating a fresh log
    "rawAsk": 5.0,  # s, gossip ask --format raw of the 1M-add log
}

_WORDS = (
    "the of and to in is it you that he was for on are with as his they be "
    "at one have this from or had by hot word but what some we can out other "
    "were all there when up use your how said an each she which do their time "
    "if will way about many then them write would like so these her long make "
    "thing see him two has look more day could go come did number sound no "
    "most people my over know water than call first who may down side been "
    "now find any new work part take get place made live where after back "
    "little only round man year came show every good me give our under name "
    "very through just form sentence great think say help low line differ "
    "turn cause much mean before move right boy old too same tell does set "
    "three want air well also play small end put home read hand port large "
    "spell add even land here must big high such follow act why ask men"
).split()
# Bytes that the format escapes, sprinkled into the text.
_ESCAPED = ["&", "%", "<", ">", "+", "\n", "\t", '"', "é", "ß", "€", "日本"]


def _sentence(rng, words):
    text = " ".join(rng.choice(_WORDS) for _ in range(words))
    if rng.random() < 0.3:
        i = rng.randrange(len(text))
        text = text[:i] + rng.choice(_ESCAPED) + text[i:]
    return text.encode("utf-8")


def buildSmall(path, count, seed=1):
    """
    A log of C{count} adds of about 80 bytes a line, from three origins,
    written straight to the file with L{encodeAdd}, after an identity add.
    """
    rng = random.Random(seed)
    origins = [base64.urlsafe_b64encode(rng.randbytes(15)) for _ in range(3)]
    messages = [_sentence(rng, rng.randint(4, 7)) for _ in range(4096)]
    subjects = [b"chat", b"note", b"todo", b"log"]
    serials = [0, 0, 0]
    with open(path, "wb") as f:
        f.write(encodeAdd([(b"I", origins[0])]))
        batch = []
        for i in range(count):
            o = 0 if i % 5 < 3 else (1 if i % 5 == 3 else 2)
            pairs = [(b"by", origins[o]), (b"at", b"%d" % serials[o])]
            serials[o] += 1
            if i % 7 == 0:
                pairs.append((b"s", subjects[i % 4]))
            pairs.append((b"m", messages[i & 4095]))
            batch.append(encodeAdd(pairs))
            if len(batch) == 10000:
                f.write(b"".join(batch))
                batch = []
        f.write(b"".join(batch))


def buildBig(path, count, size=1_000_000, seed=2):
    """
    A log of C{count} adds whose one value is C{size} bytes of mostly text
    (lines of words, a few bytes that need escaping).
    """
    rng = random.Random(seed)
    origin = base64.urlsafe_b64encode(rng.randbytes(15))
    lines = []
    total = 0
    while total < 3 * size:
        line = _sentence(rng, rng.randint(8, 14)) + b"\n"
        lines.append(line)
        total += len(line)
    pool = b"".join(lines)
    with open(path, "wb") as f:
        f.write(encodeAdd([(b"I", origin)]))
        for i in range(count):
            start = rng.randrange(len(pool) - size)
            value = pool[start : start + size]
            f.write(
                encodeAdd(
                    [(b"by", origin), (b"at", b"%d" % i), (b"file", b"part%d.txt" % i), (b"data", value)]
                )
            )


# The four readers, each returning how many intact adds it found.


def gossipDecode(path):
    count = 0
    with open(path, "rb") as f:
        for offset, record, body in entries(f):
            if body is not None:
                decodeBody(body)
                count += 1
    return count


def gossipVerify(path):
    count = 0
    with open(path, "rb") as f:
        for offset, record, body in entries(f):
            if body is not None:
                count += 1
    return count


def originalDecode(path):
    count = 0
    decodeAdd, Corrupt = original.decodeAdd, original.Corrupt
    with open(path, "rb") as f:
        for line in f:
            try:
                decodeAdd(line)
            except Corrupt:
                continue
            count += 1
    return count


def originalVerify(path):
    """
    The original's checks (its regular expression, both lengths and the
    hash) without parsing the pairs.
    """
    count = 0
    match = original._LINE.match
    encodebytes, sha256 = base64.encodebytes, hashlib.sha256
    with open(path, "rb") as f:
        for line in f:
            m = match(line)
            if not m:
                continue
            digest, size1, body, size2 = m.groups()
            if size1 != size2 or len(body) != int(size1):
                continue
            if digest != encodebytes(sha256(body).digest())[:11]:
                continue
            count += 1
    return count


READERS = [
    ("gossip decode", gossipDecode),
    ("original decode", originalDecode),
    ("gossip verify", gossipVerify),
    ("original verify", originalVerify),
]


def timeReaders(path, repeat):
    """
    Time each reader on C{path} C{repeat} times, taking turns so that a
    burst of other work on the machine slows them all alike, and keep each
    one's best time.

    @return: C{{name: (seconds, adds found)}}.
    """
    rates = {}
    for _ in range(repeat):
        for name, reader in READERS:
            start = time.perf_counter()
            adds = reader(path)
            seconds = time.perf_counter() - start
            if name not in rates or seconds < rates[name][0]:
                rates[name] = (seconds, adds)
    return rates


def checkAgreement(path, limit=20000):
    """
    Make sure gossip and the original read the first C{limit} lines alike.
    """
    with open(path, "rb") as f:
        for n, (offset, record, body) in enumerate(entries(f)):
            if n == limit:
                break
            assert original.decodeAdd(record + b"\n") == decodeBody(body), offset


def environment(path=ROOT):
    """
    The environment for the processes timed: gossip from C{path} (this
    checkout), and Python's ordinary buffering whatever this shell asks for.
    """
    env = dict(os.environ, PYTHONPATH=path)
    env.pop("PYTHONUNBUFFERED", None)
    return env


def compiledCopy(directory):
    """
    A copy of the gossip package with its bytecode compiled, as an install
    has it: this checkout may have none (PYTHONDONTWRITEBYTECODE), and then
    every process compiles gossip's modules again.

    @return: the directory to put on C{PYTHONPATH}.
    """
    import compileall

    shutil.rmtree(directory, ignore_errors=True)
    shutil.copytree(
        os.path.join(ROOT, "gossip"),
        os.path.join(directory, "gossip"),
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    compileall.compile_dir(directory, quiet=1)
    return directory


def gossip(*args, path=ROOT, **kwargs):
    """
    Run C{python -m gossip ARGS...} as a new process, with the gossip
    package from C{path}; return its wall time.
    """
    env = environment(path)
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "gossip", *args],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=kwargs.get("stdout", subprocess.DEVNULL),
        check=True,
    )
    return time.perf_counter() - start


def python(code, path=ROOT):
    env = environment(path)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], env=env, check=True)
    return time.perf_counter() - start


def profile(name, reader, path, lines=12):
    import cProfile
    import io
    import pstats

    profiler = cProfile.Profile()
    profiler.runcall(reader, path)
    report = io.StringIO()
    pstats.Stats(profiler, stream=report).sort_stats("tottime").print_stats(lines)
    print(f"  cProfile of {name} (times inflated by profiling):")
    for line in report.getvalue().splitlines():
        if line.strip() and not line.lstrip().startswith(("Ordered by", "List reduced")):
            print("    " + line.strip())


def cachePath(path):
    directory, name = os.path.split(path)
    return os.path.join(directory, "." + name + ".gossip-cache")


def removeCache(path):
    try:
        os.unlink(cachePath(path))
    except FileNotFoundError:
        pass


def ms(seconds):
    return f"{seconds * 1000:.1f} ms"


def machine():
    model = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return (
        f"{os.cpu_count()} CPUs ({len(os.sched_getaffinity(0))} usable), {model}; "
        f"Python {platform.python_version()} ({platform.python_implementation()}) "
        f"on {platform.system()} {platform.release()}"
    )


def loadAverage():
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "unknown"


def calibrate():
    """
    Seconds for a fixed pure-Python loop: compare runs, or the start and
    end of one run, to see whether something else was using the CPU.
    """
    start = time.perf_counter()
    total = 0
    for i in range(2_000_000):
        total += i
    return time.perf_counter() - start


# The modules this benchmark's figures depend on.
MODULES = ["format.py", "log.py", "cli.py", "output.py", "query.py", "intervals.py"]


def codeVersion(code=ROOT, names=None):
    """
    Which gossip code was measured: the commit, and a digest of the
    modules the figures depend on (the working tree may differ from it).

    @param code: the directory whose C{gossip} package was timed.
    @param names: the modules that matter; by default, all of them.
    """
    try:
        commit = subprocess.run(
            ["git", "-C", ROOT, "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        commit = ""
    package = os.path.join(code, "gossip")
    if names is None:
        names = sorted(name for name in os.listdir(package) if name.endswith(".py"))
    digest = hashlib.sha256()
    for name in names:
        try:
            with open(os.path.join(package, name), "rb") as f:
                digest.update(name.encode() + b"\0" + f.read())
        except OSError:
            pass
    where = "" if code == ROOT else f"; gossip timed from {code}"
    return f"{commit or 'unknown'}, gossip/*.py digest {digest.hexdigest()[:12]}{where}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small logs and few repeats")
    parser.add_argument("--dir", default="/tmp/gossip-bench", help="where to write the logs")
    parser.add_argument("--repeat", type=int, help="timed passes per reader (best is kept)")
    parser.add_argument("--runs", type=int, help="processes per command-line figure")
    parser.add_argument("--keep", action="store_true", help="reuse logs already built in --dir")
    parser.add_argument(
        "--profile", action="store_true", help="also print cProfile's view of gossip's readers"
    )
    options = parser.parse_args(argv)

    if options.quick:
        smallCounts, bigCount = [10_000, 100_000], 10
        repeat, runs = options.repeat or 1, options.runs or 5
    else:
        smallCounts, bigCount = [100_000, 1_000_000], 100
        repeat, runs = options.repeat or 5, options.runs or 20
    largest = smallCounts[-1]

    os.makedirs(options.dir, exist_ok=True)
    print(f"machine: {machine()}")
    print(f"command: {' '.join([os.path.basename(sys.executable)] + sys.argv)}")
    print(f"code: {codeVersion(names=MODULES)}")
    print(
        "bytecode of this checkout: "
        + ("not written (PYTHONDONTWRITEBYTECODE)" if sys.flags.dont_write_bytecode else "cached")
    )
    print(f"logs in {options.dir}; readers: best of {repeat}, in turn; processes: {runs} runs")
    print(f"load average at start: {loadAverage()}; calibration loop {calibrate() * 1000:.0f} ms")
    print()

    logs = []
    for count in smallCounts:
        path = os.path.join(options.dir, f"small-{count}.log")
        logs.append((f"{count:,} adds of ~80 B", path, lambda p, c=count: buildSmall(p, c)))
    path = os.path.join(options.dir, f"big-{bigCount}.log")
    logs.append((f"{bigCount} adds of 1 MB", path, lambda p: buildBig(p, bigCount)))

    results = {}
    for label, path, build in logs:
        if not (options.keep and os.path.exists(path)):
            start = time.perf_counter()
            build(path)
            print(f"built {path} in {time.perf_counter() - start:.1f} s")
        removeCache(path)
        size = os.path.getsize(path)
        checkAgreement(path)
        # Read it once so that every reader finds it in the page cache.
        with open(path, "rb") as f:
            while f.read(1 << 24):
                pass
        print(f"{label}: {size / MB:.1f} MB")
        rates = timeReaders(path, repeat)
        for name, (seconds, adds) in rates.items():
            print(
                f"  {name:16} {seconds:8.3f} s  {adds / seconds:12,.0f} adds/s  "
                f"{size / MB / seconds:8.1f} MB/s"
            )
        counts = {adds for seconds, adds in rates.values()}
        assert len(counts) == 1, f"readers disagree on the number of adds: {rates}"
        results[label] = (size, rates)
        if options.profile:
            for name, reader in READERS:
                if name.startswith("gossip"):
                    profile(name, reader, path)

    print()
    smallLog = logs[len(smallCounts) - 1][1]
    cli = {}
    cli["python -c pass"] = [python("pass") for _ in range(runs)]
    cli["python -c 'import gossip.cli.main'"] = [python("import gossip.cli.main") for _ in range(runs)]

    fresh = os.path.join(options.dir, "fresh")
    shutil.rmtree(fresh, ignore_errors=True)
    os.makedirs(fresh)
    cli["say, fresh log (cold)"] = [
        gossip("say", os.path.join(fresh, f"f{i}.log"), "m=hello") for i in range(runs)
    ]
    compiled = compiledCopy(os.path.join(options.dir, "compiled"))
    cli["python -c 'import gossip.cli.main', bytecode compiled"] = [
        python("import gossip.cli.main", path=compiled) for _ in range(runs)
    ]
    cli["say, fresh log (cold), bytecode compiled"] = [
        gossip("say", os.path.join(fresh, f"c{i}.log"), "m=hello", path=compiled)
        for i in range(runs)
    ]
    building = []
    for _ in range(3):
        removeCache(smallLog)
        building.append(gossip("say", smallLog, "m=first say, no cache"))
    cli[f"say, {largest:,} adds, no cache"] = building
    cli[f"say, {largest:,} adds, cache"] = [
        gossip("say", smallLog, f"m=say {i}") for i in range(runs)
    ]
    cli[f"ask --last 10, {largest:,} adds"] = [
        gossip("ask", "--last", "10", smallLog) for _ in range(runs)
    ]
    with open(os.devnull, "wb") as null:
        for fmt in ["raw", "text", "json"]:
            cli[f"ask --format {fmt}, {largest:,} adds"] = [
                gossip("ask", "--format", fmt, smallLog, stdout=null)
                for _ in range(3 if fmt == "raw" else 1)
            ]
        cli[f"ask m='hello', {largest:,} adds"] = [
            gossip("ask", smallLog, "m=hello", stdout=null)
        ]
    print("command line (wall time of a new process)")
    for name, times in cli.items():
        print(
            f"  {name:50} median {ms(statistics.median(times)):>10}  "
            f"min {ms(min(times)):>10}  max {ms(max(times)):>10}  ({len(times)} runs)"
        )

    print()
    print(f"load average at end: {loadAverage()}; calibration loop {calibrate() * 1000:.0f} ms")
    print()
    print(
        "| log | gossip reader | gossip | original decoder | original verify-only "
        "| vs decoder | vs verify-only | target | met |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")

    def rate(size, seconds, adds):
        return f"{adds / seconds:,.0f} adds/s, {size / MB / seconds:,.1f} MB/s"

    for label, (size, rates) in results.items():
        oDecode, adds = rates["original decode"]
        oVerify, _ = rates["original verify"]
        for kind, name in [("decode", "full decode"), ("verify", "verify scan")]:
            seconds, _ = rates[f"gossip {kind}"]
            goal = TARGETS[kind]
            print(
                f"| {label} | {name} | {rate(size, seconds, adds)} "
                f"| {rate(size, oDecode, adds)} | {rate(size, oVerify, adds)} "
                f"| {oDecode / seconds:.2f}x | {oVerify / seconds:.2f}x "
                f"| >= {goal}x decoder | {'yes' if oDecode / seconds >= goal else 'NO'} |"
            )
    size, rates = results[logs[-1][0]]
    seconds, _ = rates["gossip decode"]
    bigRate = size / MB / seconds
    print()
    print("| figure | gossip | target | met |")
    print("| --- | --- | --- | --- |")
    print(
        f"| 1 MB adds, full decode | {bigRate:,.1f} MB/s | >= {TARGETS['bigRate']:.0f} MB/s "
        f"| {'yes' if bigRate >= TARGETS['bigRate'] else 'NO'} |"
    )
    for name, key in [
        (f"say, {largest:,} adds, cache", "say"),
        ("say, fresh log (cold)", "coldSay"),
        ("say, fresh log (cold), bytecode compiled", "coldSay"),
        (f"ask --format raw, {largest:,} adds", "rawAsk"),
    ]:
        median = statistics.median(cli[name])
        goal = TARGETS[key]
        print(
            f"| {name}, median | {ms(median)} | < {ms(goal)} "
            f"| {'yes' if median < goal else 'NO'} |"
        )

if __name__ == "__main__":
    main()
