# -*- test-case-name: tests.test_service -*-
"""
Noticing that a log file has changed, driven by the reactor.

L{INotifyWatcher} watches the log's directory with inotify, whose descriptor
the reactor reads alongside every other (it is an C{IReactorFDSet} reader,
reading the events itself);
a directory watch also sees a log replaced by a rename.  Where inotify is
missing, L{PollingWatcher} looks at the file's size and identity instead.
Either way the service also rescans now and then, since inotify drops events
when its queue overflows.
"""

import os
import struct

from twisted.internet.interfaces import IReadDescriptor
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import Interface, implementer

from gossip.store.notify import (
    IN_CREATE,
    IN_MODIFY,
    IN_MOVED_TO,
    IN_Q_OVERFLOW,
    inotifyDescriptor,
)

__all__ = ["INotifyWatcher", "IWatcher", "PollingWatcher", "watcherFor"]

_log = Logger()

# An inotify event's head: watch, mask, cookie, and the length of the name
# that follows.
_EVENT = struct.Struct("=iIII")


class IWatcher(Interface):
    """
    Calls a function, with no arguments, soon after a file may have changed.
    """

    def start():
        """
        Start watching.
        """

    def stop():
        """
        Stop watching.
        """


@implementer(IWatcher, IReadDescriptor)
class INotifyWatcher:
    """
    A watcher driven by inotify events on the file's directory: the
    reactor reads the descriptor, and each read that brings events for the
    file (or says the queue overflowed) calls the callback once, however
    many it brings.  Events for the directory's other files are skipped by
    name, with nothing made of them.

    @raise OSError: there is no inotify here, or no watch left.
    """

    # Every write is an IN_MODIFY, and those that follow one another merge
    # in the kernel's queue until read; an IN_CLOSE_WRITE after each append
    # (a writer opens the log for each) would keep them apart, and wake the
    # service twice for every batch it writes.
    _MASK = IN_MODIFY | IN_MOVED_TO | IN_CREATE

    def __init__(self, reactor, path, callback):
        self._reactor = reactor
        path = os.path.abspath(path)
        self._directory = os.path.dirname(path)
        self._name = os.fsencode(os.path.basename(path))
        self._callback = callback
        self._fd = None
        self._buffer = b""
        # Fail here, not in start, so that watcherFor can poll instead.
        self._fd = inotifyDescriptor(self._directory, self._MASK)
        if self._fd is None:
            raise OSError(f"cannot watch {self._directory} with inotify")

    def start(self):
        self._reactor.addReader(self)

    def stop(self):
        if self._fd is not None:
            self._reactor.removeReader(self)
            self._close()

    def _close(self):
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def fileno(self):
        return -1 if self._fd is None else self._fd

    def logPrefix(self):
        return "inotify"

    def connectionLost(self, reason):
        # The reactor's shutdown, or a read that failed: closed once.
        self._close()

    def doRead(self):
        try:
            data = os.read(self._fd, 1 << 16)
        except BlockingIOError:
            return None
        except OSError as e:
            _log.error("reading inotify events failed: {why}", why=e)
            return Failure(e)
        data = self._buffer + data
        name = self._name
        ours = False
        offset = 0
        end = len(data)
        while offset + 16 <= end:
            mask, size = _EVENT.unpack_from(data, offset)[1::2]
            if offset + 16 + size > end:
                break
            start, offset = offset + 16, offset + 16 + size
            if mask & IN_Q_OVERFLOW or data[start:offset].rstrip(b"\0") == name:
                ours = True
        self._buffer = data[offset:]
        if ours:
            self._callback()
        return None


@implementer(IWatcher)
class PollingWatcher:
    """
    A watcher that looks at the file's size and identity every C{interval}
    seconds.
    """

    def __init__(self, reactor, path, callback, interval=0.05):
        self._path = path
        self._callback = callback
        self._seen = None
        self._call = LoopingCall(self._poll)
        self._call.clock = reactor
        self._interval = interval

    def start(self):
        self._call.start(self._interval)

    def stop(self):
        if self._call.running:
            self._call.stop()

    def _poll(self):
        try:
            st = os.stat(self._path)
        except OSError:
            return
        seen = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        if seen != self._seen:
            self._seen = seen
            self._callback()


def watcherFor(reactor, path, callback, useInotify=True):
    """
    The best watcher this platform has for C{path}.
    """
    if useInotify:
        try:
            return INotifyWatcher(reactor, path, callback)
        except Exception as e:
            _log.info("inotify unavailable ({why}); polling {path}", why=e, path=path)
    return PollingWatcher(reactor, path, callback)
