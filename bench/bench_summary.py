"""
What a peer's summary costs the node that receives it.

A session on a small log, on a fake clock, is sent a hello and then a
summary (C{Have} boxes built here by hand) of many ranges it lacks, in
reads of 64 KiB as a socket would deliver them; what the session leaves for
later turns of the reactor then runs one call at a time.  It prints the
processor time of the whole and of the slowest read or call, which is how
long the reactor would be kept from everything else, and how much of that
was the garbage collector's passes (whose cost grows with all that the
process holds, not with the work of the turn).  The announcements shape
sends the ranges of the ascending one as announcements after an empty
summary.

    python bench/bench_summary.py                 # every shape below
    python bench/bench_summary.py descending      # one of them
"""

import argparse
import gc
import os
import struct
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from twisted.internet.task import Clock  # noqa: E402
from twisted.internet.testing import StringTransport  # noqa: E402

from gossip.store.intervals import count  # noqa: E402
from gossip.store.logfile import Log  # noqa: E402
from gossip.sync.defaults import MAX_SUMMARY  # noqa: E402
from gossip.sync.protocol import SyncProtocol  # noqa: E402
from gossip.sync.settings import SessionSettings  # noqa: E402
from gossip.sync.service import LogService  # noqa: E402

VALUE = 60000
READ = 65536


def box(*pairs):
    return b"".join(
        struct.pack(">H", len(k)) + k + struct.pack(">H", len(v)) + v for k, v in pairs
    ) + b"\x00\x00"


def command(name, ask, **arguments):
    return box((b"_command", name), (b"_ask", ask), *((k.encode(), v) for k, v in arguments.items()))


def values(origins, ranges, descending):
    """
    Summary values: C{ranges} ranges of every other serial for each of
    C{origins} origins, ascending or all in descending order, as long as
    the whole stays under the default limit.
    """
    lines = []
    # Room for the prefixes, and for values not quite full.
    room = MAX_SUMMARY - 10 * origins - MAX_SUMMARY // 50
    for i in range(origins):
        prefix = b"%08x " % (i,)
        # An origin goes on lines of at most a value each.
        line, length = [], len(prefix) + 1
        for n in range(ranges):
            text = b"%d-%d" % (2 * n, 2 * n + 1)
            room -= len(text) + 1
            if room < 0:
                break
            if length + len(text) + 1 > VALUE:
                lines.append((prefix, line))
                line, length = [], len(prefix) + 1
            line.append(text)
            length += len(text) + 1
        lines.append((prefix, line))
        if room < 0:
            break
    if descending:
        lines = [(prefix, line[::-1]) for prefix, line in reversed(lines)]
    out, current, length = [], [], 0
    for prefix, line in lines:
        text = prefix + b",".join(line) + b"\n"
        if length + len(text) > VALUE:
            out.append(b"".join(current))
            current, length = [], 0
        current.append(text)
        length += len(text)
    out.append(b"".join(current))
    return out


def measure(origins, ranges, descending, announced=False):
    parts = values(origins, ranges, descending)
    data = command(b"Hello", b"1", version=b"1", node=b"bench", log=b"log", anyName=b"False")
    if announced:
        data += command(b"Have", b"2", ranges=b"", last=b"True")
        data += b"".join(
            command(b"Announce", b"%d" % (i + 3,), ranges=part) for i, part in enumerate(parts)
        )
    else:
        data += b"".join(
            command(
                b"Have",
                b"%d" % (i + 2,),
                ranges=part,
                last=b"True" if i == len(parts) - 1 else b"False",
            )
            for i, part in enumerate(parts)
        )
    directory = tempfile.mkdtemp(prefix="gossip-bench-summary-")
    log = Log(os.path.join(directory, "log"))
    log.state(create=True)
    log.say([(b"m", b"x")])
    clock = Clock()
    service = LogService(log, clock, useInotify=False)
    service.startService()
    session = SyncProtocol(service, "bench", SessionSettings(keepalive=0), reactor=clock)
    session.makeConnection(StringTransport())
    collecting = [0.0, None]

    def collector(phase, info):
        if phase == "start":
            collecting[1] = time.process_time()
        else:
            collecting[0] += time.process_time() - collecting[1]

    def timed(function, *args, **kwargs):
        began, collected = time.process_time(), collecting[0]
        function(*args, **kwargs)
        spent = time.process_time() - began
        times.append((spent, spent - (collecting[0] - collected)))

    times = []
    gc.callbacks.append(collector)
    try:
        for start in range(0, len(data), READ):
            timed(session.dataReceived, data[start : start + READ])
        # One due call at a time, as each turn of a reactor runs them.
        while True:
            due = [call for call in clock.calls if call.getTime() <= clock.seconds()]
            if not due:
                break
            call = due[0]
            clock.calls.remove(call)
            call.called = 1
            timed(call.func, *call.args, **call.kw)
    finally:
        gc.callbacks.remove(collector)
    service.stopService()
    return (
        sum(map(len, parts)),
        session,
        sum(spent for spent, _ in times),
        max(spent for spent, _ in times),
        max(working for _, working in times),
    )


SHAPES = {
    "ascending": (1, 600000, False),
    "descending": (1, 600000, True),
    "origins": (10000, 60, False),
    "originsDescending": (10000, 60, True),
    "announcements": (1, 600000, False, True),
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("shapes", nargs="*", metavar="SHAPE", help=", ".join(SHAPES))
    options = parser.parse_args()
    unknown = set(options.shapes) - set(SHAPES)
    if unknown:
        parser.error(f"no shape {', '.join(sorted(unknown))}")
    print(f"load average: {' '.join('%.2f' % n for n in os.getloadavg())}")
    for name in options.shapes or list(SHAPES):
        size, session, total, worst, working = measure(*SHAPES[name])
        print(
            f"{name:18} {size / 1e6:4.1f} MB, {count(session.pending):,} adds asked for: "
            f"{total:5.2f} s in all, slowest read or call {worst * 1000:4.0f} ms"
            f" ({working * 1000:3.0f} ms without the collector)"
            + (f"  ({session.failure})" if session.failure else "")
        )

if __name__ == "__main__":
    main()
