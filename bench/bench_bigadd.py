"""
Measure syncing one large add between two real processes: the peak memory
(RSS) of the sender and of the receiver, and the time.

Two `gossip serve --stdio --once` processes, one for a log holding one add
of --size MiB (a line of that many bytes), one for an empty log, talk to
each other over two pipes, as `gossip sync --once A B` does with the
process it starts.  Each one's peak RSS is its own, from wait4(2).

    python bench/bench_bigadd.py --size 256 [--checkout DIR] [--dir DIR] [--stalls]

--checkout runs gossip from another checkout (to compare commits).
--stalls also reports each process's longest stall of its reactor: a
timer due every 10 ms in each notes the longest it ran late.

    python bench/bench_bigadd.py --size 256 --said [--checkout DIR]

--said measures instead a continuous `gossip sync A B` while `gossip say
--file v=FILE A` appends an add of --size MiB to A: the peak RSS of the
sync process (it serves A, and starts the process serving B), until B
holds the add.
"""

import argparse
import hashlib
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from binascii import b2a_base64

_PIECE = 1 << 20
_ORIGIN = b"benchOriginBigAdd000"
_SAFE = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-~"


def _values(size, seed=1):
    """
    The value's bytes, C{size} of them, a piece at a time: letters and
    digits, which the format writes as they are.
    """
    rng = random.Random(seed)
    table = bytes(_SAFE[i % len(_SAFE)] for i in range(256))
    left = size
    while left:
        n = min(_PIECE, left)
        yield rng.randbytes(n).translate(table)
        left -= n


def writeLargeAdd(path, size):
    """
    Append to the log at C{path} one add by another node whose line is
    C{size} bytes long, LF included, written a piece at a time.

    @return: the SHA-256 of the line.
    """
    head = b"by=" + _ORIGIN + b"&at=0&v="
    # The line is HASH SP LENGTH < BODY > LENGTH LF: 15 bytes and the
    # length twice around the body.
    bodyLength = size - 15
    while True:
        digits = len(b"%d" % (bodyLength,))
        body = size - 15 - 2 * digits
        if body == bodyLength:
            break
        bodyLength = body
    valueLength = bodyLength - len(head)
    digest = hashlib.sha256(head)
    for piece in _values(valueLength):
        digest.update(piece)
    length = b"%d" % (bodyLength,)
    whole = hashlib.sha256()
    with open(path, "ab") as f:
        for piece in [b2a_base64(digest.digest()[:9])[:11], b" ", length, b"<", head]:
            f.write(piece)
            whole.update(piece)
        for piece in _values(valueLength):
            f.write(piece)
            whole.update(piece)
        for piece in [b">", length, b"\n"]:
            f.write(piece)
            whole.update(piece)
    return whole.hexdigest()


# Runs gossip with a timer due every 10 ms on its reactor, and writes the
# longest it has run late, in seconds, to the file named first each time
# that grows (gossip may leave by os._exit).
_STALLS = r"""
import sys, time
from twisted.internet import reactor, task
from gossip.cli.main import main

report = sys.argv.pop(1)
late = [0.0, None]

def tick():
    now = time.monotonic()
    if late[1] is not None and now - late[1] - 0.01 > late[0]:
        late[0] = now - late[1] - 0.01
        with open(report, "w") as f:
            f.write("%f\n" % late[0])
    late[1] = now

with open(report, "w") as f:
    f.write("0\n")
# From when the reactor runs: gossip's start before it is not a stall.
reactor.callWhenRunning(task.LoopingCall(tick).start, 0.01)
sys.exit(main(sys.argv[1:]))
"""


def gossip(checkout, *args, stalls=None):
    """
    The argv and keyword arguments to run C{gossip ARGS} from C{checkout}
    (in it, since C{python -m} looks in the current directory first).

    @param stalls: if given, a file to write the longest stall of the
        process's reactor to.
    """
    environment = dict(os.environ, PYTHONPATH=checkout)
    if stalls is not None:
        return [sys.executable, "-c", _STALLS, stalls, *args], dict(env=environment, cwd=checkout)
    return [sys.executable, "-m", "gossip", *args], dict(env=environment, cwd=checkout)


def prepare(directory, checkout, size):
    """
    Make C{a/x.log} holding one add of C{size} bytes, with its cache as
    any writer leaves it, and an empty C{b/x.log}.
    """
    for side in "ab":
        os.makedirs(os.path.join(directory, side))
        argv, where = gossip(checkout, "say", os.path.join(directory, side, "x.log"), "k=small")
        subprocess.run(argv, check=True, **where)
    a = os.path.join(directory, "a", "x.log")
    expected = writeLargeAdd(a, size)
    # Bring the cache up to date, as the writer of the add would have.
    argv, where = gossip(checkout, "say", a, "k=after")
    subprocess.run(argv, check=True, **where)
    return expected


def syncOnce(directory, checkout, stalls=False):
    """
    Sync the two logs with two `gossip serve --stdio --once`, connected by
    pipes.

    @param stalls: whether to time each process's longest reactor stall.
    @return: seconds taken, each process's peak RSS in MiB and (if
        C{stalls}) its longest stall in seconds.
    """
    aIn, bOut = os.pipe()
    bIn, aOut = os.pipe()
    started = time.monotonic()
    processes = {}
    for side, stdin, stdout in [("sender", aIn, aOut), ("receiver", bIn, bOut)]:
        log = os.path.join(directory, "a" if side == "sender" else "b", "x.log")
        report = os.path.join(directory, side + ".stall") if stalls else None
        argv, where = gossip(checkout, "serve", "--stdio", "--once", log, stalls=report)
        processes[side] = subprocess.Popen(argv, stdin=stdin, stdout=stdout, **where)
    for fd in (aIn, bOut, bIn, aOut):
        os.close(fd)
    peaks = {}
    statuses = {}
    for side, process in processes.items():
        pid, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        statuses[side] = process.returncode
        peaks[side] = usage.ru_maxrss / 1024
    elapsed = time.monotonic() - started
    if any(statuses.values()):
        raise SystemExit(f"a process failed: {statuses}")
    late = {}
    if stalls:
        for side in processes:
            with open(os.path.join(directory, side + ".stall")) as f:
                late[side] = float(f.read())
    return elapsed, peaks, late


def sayWhileSyncing(directory, checkout, size):
    """
    Append an add of about C{size} bytes to a log with C{gossip say --file}
    while a continuous C{gossip sync} serves it to another.

    @return: seconds from the say until the other log held the add, and
        the sync process's peak RSS in MiB.
    """
    a, b = (os.path.join(directory, side, "x.log") for side in "ab")
    for path in (a, b):
        os.makedirs(os.path.dirname(path))
        argv, where = gossip(checkout, "say", path, "k=small")
        subprocess.run(argv, check=True, **where)
    value = os.path.join(directory, "value.bin")
    with open(value, "wb") as f:
        for piece in _values(size):
            f.write(piece)
    argv, where = gossip(checkout, "sync", a, b)
    sync = subprocess.Popen(argv, **where)
    try:
        # Both logs hold both small adds once the first sync is done.
        _waitUntil(lambda: _lines(a) == _lines(b) == 3)
        argv, where = gossip(checkout, "say", "--file", "v=" + value, a)
        started = time.monotonic()
        subprocess.run(argv, check=True, **where)
        _waitUntil(lambda: _lines(b) == 4)
        elapsed = time.monotonic() - started
    finally:
        sync.terminate()
        pid, status, usage = os.wait4(sync.pid, 0)
    return elapsed, usage.ru_maxrss / 1024


def _lines(path):
    """
    How many complete lines the file at C{path} holds.
    """
    count = 0
    with open(path, "rb") as f:
        for piece in iter(lambda: f.read(_PIECE), b""):
            count += piece.count(b"\n")
    return count


def _waitUntil(condition, timeout=120):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit("timed out")
        time.sleep(0.2)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=256, help="the add's size in MiB")
    parser.add_argument(
        "--checkout",
        default=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        help="the gossip checkout to run",
    )
    parser.add_argument("--dir", help="where to make the logs (default: a temporary directory)")
    parser.add_argument(
        "--stalls", action="store_true", help="time each process's longest reactor stall"
    )
    parser.add_argument(
        "--said", action="store_true", help="measure a sync serving a log that say appends to"
    )
    options = parser.parse_args()
    size = options.size << 20
    parent = os.path.abspath(options.dir or tempfile.gettempdir())
    directory = tempfile.mkdtemp(prefix="bench-bigadd-", dir=parent)
    try:
        if options.said:
            elapsed, peak = sayWhileSyncing(directory, options.checkout, size)
            print(f"{options.size} MiB add said: synced in {elapsed:.1f} s; peak RSS sync {peak:.0f} MiB")
            return 0
        expected = prepare(directory, options.checkout, size)
        elapsed, peaks, late = syncOnce(directory, options.checkout, options.stalls)
        intact = _holds(os.path.join(directory, "b", "x.log"), expected, size)
        print(
            f"{options.size} MiB add: {elapsed:.1f} s; peak RSS sender {peaks['sender']:.0f} MiB, "
            f"receiver {peaks['receiver']:.0f} MiB; arrived intact: {'yes' if intact else 'NO'}"
        )
        if late:
            print(
                f"longest reactor stall: sender {late['sender'] * 1000:.0f} ms, "
                f"receiver {late['receiver'] * 1000:.0f} ms"
            )
        return 0 if intact else 1
    finally:
        shutil.rmtree(directory)


def _holds(path, expected, size):
    """
    Whether some line of the log at C{path}, C{size} bytes long, has the
    SHA-256 C{expected}: the large add need not be the receiver's last.
    """
    with open(path, "rb") as f:
        for line in f:
            if len(line) == size:
                return hashlib.sha256(line).hexdigest() == expected
    return False


if __name__ == "__main__":
    sys.exit(main())
