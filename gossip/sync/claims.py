# -*- test-case-name: tests.test_mesh -*-
"""
What the sync sessions of other processes on the same log are fetching:
a small file beside the log (C{.LOG.gossip-claims}), so that a daemon and
a C{gossip serve --stdio} that sshd started on its log do not both fetch
the same adds from their peers.
"""

import os
from fcntl import LOCK_EX, LOCK_SH, flock

from twisted.logger import Logger

from gossip.store.intervals import difference, merge
from gossip.sync.amp import ProtocolError, decodeRanges

__all__ = ["SharedClaims"]


def _alive(claimant):
    """
    Whether the process that wrote C{claimant}'s lines still runs.
    """
    try:
        pid = int(claimant.split(b".")[0])
    except ValueError:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


class SharedClaims:
    """
    The claims file of one log: a line for each origin a process is
    fetching, C{CLAIMANT SP HEX(by) SP START-END[,START-END]... LF}, the
    claimant being the process's id (and, for a second log service in one
    process, a tag).  It is read and rewritten whole under an exclusive
    C{flock} of its own; lines of processes that no longer run are
    dropped.

    @ivar path: the file's path.
    @ivar claimant: this process's name in it.
    """

    _log = Logger()

    def __init__(self, logPath, tag=None):
        directory, name = os.path.split(os.fsencode(logPath))
        self.path = os.path.join(directory, b"." + name + b".gossip-claims")
        self.claimant = b"%d" % (os.getpid(),)
        if tag is not None:
            self.claimant += b"." + tag
        self._broken = False
        # The lines last published.
        self._published = None

    def _open(self, lock):
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            flock(fd, lock)
        except BaseException:
            os.close(fd)
            raise
        return fd

    @staticmethod
    def _read(fd):
        chunks = []
        offset = 0
        while True:
            chunk = os.pread(fd, 1 << 16, offset)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
            offset += len(chunk)

    def _othersLines(self, data):
        """
        The whole lines of C{data}, the file's bytes, that other processes
        still running wrote: C{(claimant, rest)}, C{rest} with its LF.
        """
        alive = {}
        for line in data.splitlines(keepends=True):
            claimant, space, rest = line.partition(b" ")
            if not space or claimant == self.claimant or not line.endswith(b"\n"):
                continue
            if claimant not in alive:
                alive[claimant] = _alive(claimant)
            if alive[claimant]:
                yield claimant, rest

    def _failed(self, error):
        if not self._broken:
            self._broken = True
            self._log.warn(
                "cannot share what this process fetches in {path}: {why}",
                path=os.fsdecode(self.path),
                why=error,
            )

    def _lines(self, pending):
        return [
            b"%s %s %s\n"
            % (
                self.claimant,
                by.hex().encode("ascii"),
                b",".join(b"%d-%d" % pair for pair in held.iterRanges()),
            )
            for by, held in pending.items()
            if held.rangeCount()
        ]

    @staticmethod
    def _claimed(lines):
        claimed = {}
        for _, rest in lines:
            try:
                merge(claimed, decodeRanges(rest))
            except ProtocolError:
                continue
        return claimed

    def claim(self, wanted, pending):
        """
        Claim those of C{wanted} that no other process is fetching, in one
        step under the file's lock, so that two processes asking at once
        do not both claim the same adds.

        @param wanted: ranges by origin.
        @param pending: what this process fetches already (it goes on
            fetching it).
        @return: the part of C{wanted} claimed; all of it if the file
            cannot be used.
        """
        try:
            fd = self._open(LOCK_EX)
        except OSError as e:
            self._failed(e)
            return wanted
        try:
            others = list(self._othersLines(self._read(fd)))
            left = difference(wanted, self._claimed(others))
            mine = {}
            merge(mine, pending)
            merge(mine, left)
            lines = self._lines(mine)
            if lines != self._published:
                data = b"".join([claimant + b" " + rest for claimant, rest in others] + lines)
                os.ftruncate(fd, 0)
                os.pwrite(fd, data, 0)
                self._published = lines
            return left
        except OSError as e:
            self._failed(e)
            return wanted
        finally:
            os.close(fd)

    def publish(self, pending):
        """
        This process is fetching C{pending} (ranges by origin), and no more.
        """
        mine = self._lines(pending)
        if mine == self._published:
            return
        self._published = mine
        if not mine and not os.path.exists(self.path):
            return
        try:
            fd = self._open(LOCK_EX)
        except OSError as e:
            self._failed(e)
            return
        try:
            kept = [
                claimant + b" " + rest for claimant, rest in self._othersLines(self._read(fd))
            ]
            data = b"".join(kept + mine)
            os.ftruncate(fd, 0)
            os.pwrite(fd, data, 0)
        except OSError as e:
            self._failed(e)
        finally:
            os.close(fd)

    def close(self):
        """
        This process fetches nothing more: take its lines out, and the
        file away if no other process has any in it.
        """
        self.publish({})
        try:
            fd = self._open(LOCK_EX)
        except OSError:
            return
        try:
            if os.fstat(fd).st_size == 0:
                os.unlink(self.path)
        except OSError:
            pass
        finally:
            os.close(fd)

    def others(self):
        """
        What other running processes on the log are fetching, ranges by
        origin (nothing if the file cannot be read).
        """
        try:
            if os.stat(self.path).st_size == 0:
                return {}
        except FileNotFoundError:
            return {}
        except OSError as e:
            self._failed(e)
            return {}
        try:
            fd = self._open(LOCK_SH)
        except OSError as e:
            self._failed(e)
            return {}
        try:
            data = self._read(fd)
        except OSError as e:
            self._failed(e)
            return {}
        finally:
            os.close(fd)
        return self._claimed(self._othersLines(data))
