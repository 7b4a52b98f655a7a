"""
The original gossip.py's sync algorithm, restated in Python 3 as a baseline
for bench/bench_sync.py.  It is not gossip's code and gossip does not use it.

    python bench/original_sync.py --server [-q] [-v] LOG

speaks the original's protocol on standard input and output, as the
original's C{gossip.py --server LOG} did; two of them joined by two pipes
sync two logs (C{-q}: exit once both ends are synchronized)::

    mkfifo p; < p python bench/original_sync.py --server -q a/x.log \\
        | python bench/original_sync.py --server -q b/x.log > p

Restated from the description and behaviour of the original (see
/work/shared/reference/original-gossip.py.txt):

- the node individuates: it creates the log with an identity add if there
  is none, then parses the whole log with the original's decoder
  (C{tests/original.py}'s C{decodeAdd}) to learn its identity and the
  C{(by, at)} it has seen, as per-origin intervals;
- it writes its hello, C{{"me": ME, "has": [[BY, [[START, END], ...]], ...]}},
  as one JSON line;
- on the peer's hello it opens the log again and parses all of it a second
  time (the original's C{watch(future_only=False)} then C{list(get_more())}),
  writes C{{"w": [[NAME, VALUE], ...]}} for each add the peer lacks, then
  C{{"synchronized": "yes"}};
- on each C{w} it decodes the JSON and, unless it has seen that C{(by, at)},
  appends the add re-encoded with the original's encoder (C{encodeAdd}),
  opening the file and taking C{flock} for each add as the original's
  C{write} did;
- with C{-q} it exits once it has sent its C{synchronized} and received the
  peer's.

Names and values travel as JSON strings: the original's Python 2 C{json}
took its byte strings as text, which works only for text; here bytes are
mapped to strings as Latin-1, which carries any byte.  Standard input is
read without blocking and waited on with C{select}, as the original did,
through a small line buffer (the original relied on Python 2's file
C{readline} raising C{EAGAIN}).  The original also opened an inotify watch
that its sync loop never selects on (its C{watch_select} stays empty), so
this leaves it out: it makes no difference to a one-shot sync.

C{--mark} (for the benchmark, not in the original) writes C{ready} to
standard error once the modules are imported, before the log is read.
"""

import bisect
import errno
import fcntl
import getopt
import json
import os
import select
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tests.original import Corrupt, decodeAdd, encodeAdd  # noqa: E402


class Intervals:
    """
    The original's set of mostly-contiguous integers: sorted starts and
    ends, bisected.
    """

    def __init__(self, intervals=()):
        self.starts = [start for start, end in intervals]
        self.ends = [end for start, end in intervals]

    def add(self, n):
        if self.ends and n == self.ends[-1]:
            self.ends[-1] += 1
            return
        if n in self:
            return
        i = bisect.bisect_left(self.starts, n + 1)
        if i < len(self.starts) and self.starts[i] == n + 1:
            self.starts[i] = n
            if i > 0 and self.ends[i - 1] == n:
                self.ends.pop(i - 1)
                self.starts.pop(i)
        else:
            i = bisect.bisect_left(self.ends, n)
            if i < len(self.ends) and self.ends[i] == n:
                self.ends[i] += 1
            else:
                self.starts.insert(i, n)
                self.ends.insert(i, n + 1)

    def __contains__(self, n):
        i = bisect.bisect_right(self.starts, n)
        return i != 0 and self.starts[i - 1] <= n < self.ends[i - 1]

    def intervals(self):
        return list(zip(self.starts, self.ends))


def _text(data):
    return data.decode("latin-1")


def _bytes(text):
    return text.encode("latin-1")


class FileLocked:
    def __init__(self, fh):
        self.fh = fh

    def __enter__(self):
        fcntl.flock(self.fh.fileno(), fcntl.LOCK_EX)
        return self.fh

    def __exit__(self, *exc):
        self.fh.flush()
        fcntl.flock(self.fh.fileno(), fcntl.LOCK_UN)
        self.fh.close()


class LineReader:
    """
    Lines from a non-blocking descriptor: L{readline} returns a complete
    line, C{b""} at end of file, or raises C{EAGAIN} when none is ready.
    """

    def __init__(self, fd):
        self.fd = fd
        self.buffer = b""
        self.eof = False
        flags = fcntl.fcntl(fd, fcntl.F_GETFL)
        fcntl.fcntl(fd, fcntl.F_SETFL, flags | os.O_NONBLOCK)

    def fileno(self):
        return self.fd

    def readline(self):
        while True:
            i = self.buffer.find(b"\n")
            if i != -1:
                line, self.buffer = self.buffer[: i + 1], self.buffer[i + 1 :]
                return line
            if self.eof:
                line, self.buffer = self.buffer, b""
                return line
            try:
                data = os.read(self.fd, 65536)
            except BlockingIOError:
                raise OSError(errno.EAGAIN, "no line ready") from None
            if not data:
                self.eof = True
            self.buffer += data


class Log:
    def __init__(self, filename):
        self.filename = filename
        self.me = None
        self.seen_indices = {}

    def sync(self, infh, outfh, quit=True, verbose=False):
        if self.me is None:
            self.individuate()
        outfh.write(json.dumps(self.hi()) + "\n")
        outfh.flush()
        their_identity = "unknown"
        we_synced = False
        they_synced = False
        they_have = None
        while True:
            try:
                line = infh.readline()
            except OSError as e:
                if e.errno != errno.EAGAIN:
                    raise
                select.select([infh.fileno()], [], [])
                continue
            if not line:
                sys.stderr.write("hangup, exiting\n")
                return
            if verbose:
                sys.stderr.write("%s got %r\n" % (_text(self.me), line))
            req = json.loads(line)
            if "w" in req:
                add = [(_bytes(n), _bytes(v)) for n, v in req["w"]]
                d = dict(add)
                mid = self.message_id(d)
                if mid:
                    by, at = mid
                    if by not in self.seen_indices or at not in self.seen_indices[by]:
                        self.write(add)
                    self.update_seen_indices(d)
                else:
                    sys.stderr.write("got weird message %r\n" % (add,))
            elif "has" in req:
                if "me" in req:
                    their_identity = req["me"]
                if they_have is None:
                    they_have = self.parse_hi(req)
                    initial_adds = list(self.get_all())
                    self.send_missing_adds(they_have, outfh, initial_adds)
                    outfh.write(json.dumps({"synchronized": "yes"}) + "\n")
                    outfh.flush()
                    sys.stderr.write("%s is up-to-date\n" % their_identity)
                    we_synced = True
                    if they_synced and quit:
                        break
                else:
                    they_have = self.parse_hi(req)
            elif "synchronized" in req:
                sys.stderr.write("%s am up-to-date\n" % _text(self.me))
                they_synced = True
                if we_synced and quit:
                    break
            else:
                sys.stderr.write("surprising request %r\n" % line)

    def get_all(self):
        """
        The original's C{watch(future_only=False)} then C{get_more()}: every
        complete line of the log, parsed.
        """
        with open(self.filename, "rb") as data_fh:
            for line in data_fh:
                if line.endswith(b"\n"):
                    yield self.parse(line)

    def parse_hi(self, req):
        return {_bytes(k): Intervals(v) for k, v in req["has"]}

    def send_missing_adds(self, they_have, outfh, lines):
        for line in lines:
            if line is None:
                continue
            d = dict(line)
            mid = self.message_id(d)
            if mid:
                by, at = mid
                if by not in they_have:
                    they_have[by] = Intervals()
                if at not in they_have[by]:
                    outfh.write(json.dumps({"w": [[_text(n), _text(v)] for n, v in line]}) + "\n")
                    they_have[by].add(at)
                self.update_seen_indices(d)
        outfh.flush()

    def message_id(self, d):
        try:
            return d[b"by"], int(d[b"at"])
        except (KeyError, ValueError):
            return None

    def hi(self):
        return {
            "me": _text(self.me),
            "has": [(_text(k), v.intervals()) for k, v in self.seen_indices.items()],
        }

    def write(self, nvpairs):
        with FileLocked(open(self.filename, "ab")) as log:
            log.write(encodeAdd(nvpairs))
        self.update_seen_indices(dict(nvpairs))

    def individuate(self):
        self.counter = 0
        if not os.path.exists(self.filename):
            import base64
            import random

            n = random.SystemRandom().getrandbits(24)
            self.me = base64.encodebytes(n.to_bytes(3, "little")).strip()
            self.write([(b"I", self.me)])
        for line in self:
            if line is None:
                continue
            d = dict(line)
            if self.me is None:
                self.me = d[b"I"]
            if self.me == d.get(b"by") and b"at" in d:
                self.counter = max(self.counter, int(d[b"at"]) + 1)
            self.update_seen_indices(d)

    def update_seen_indices(self, d):
        mid = self.message_id(d)
        if mid:
            by, at = mid
            if by not in self.seen_indices:
                self.seen_indices[by] = Intervals()
            self.seen_indices[by].add(at)

    def __iter__(self):
        with open(self.filename, "rb") as f:
            for line in f:
                yield self.parse(line)

    def parse(self, line):
        try:
            return decodeAdd(line)
        except Corrupt:
            return None


def main(argv):
    opts, args = getopt.getopt(argv[1:], "qv", ["server", "mark"])
    names = [opt for opt, v in opts]
    if "--mark" in names:
        sys.stderr.write("ready\n")
        sys.stderr.flush()
    if "--server" not in names or len(args) != 1:
        sys.stderr.write(__doc__)
        return 2
    out = open(sys.stdout.fileno(), "w", encoding="ascii", closefd=False)
    Log(os.fsencode(args[0])).sync(
        LineReader(sys.stdin.fileno()), out, quit="-q" in names, verbose="-v" in names
    )
    out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
