# -*- test-case-name: tests.test_service -*-
"""
Noticing that a log file has changed, driven by the reactor.

L{INotifyWatcher} watches the log's directory with inotify, whose descriptor
the reactor reads alongside every other (it is an C{IReactorFDSet} reader);
a directory watch also sees a log replaced by a rename.  Where inotify is
missing, L{PollingWatcher} looks at the file's size and identity instead.
Either way the service also rescans now and then, since inotify drops events
when its queue overflows.
"""

import os

from twisted.internet.error import ConnectionDone
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import Interface, implementer

__all__ = ["INotifyWatcher", "IWatcher", "PollingWatcher", "watcherFor"]

_log = Logger()


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


@implementer(IWatcher)
class INotifyWatcher:
    """
    A watcher driven by inotify events on the file's directory.
    """

    def __init__(self, reactor, path, callback):
        from twisted.internet import inotify
        from twisted.python.filepath import FilePath

        self._inotify = inotify
        self._notifier = inotify.INotify(reactor)
        self._directory = FilePath(os.path.dirname(os.path.abspath(path)))
        self._name = os.path.basename(path)
        self._callback = callback

    def start(self):
        # Every write is an IN_MODIFY, and those that follow one another
        # merge in the kernel's queue until read; an IN_CLOSE_WRITE after
        # each append (a writer opens the log for each) would keep them
        # apart, and wake the service twice for every batch it writes.
        mask = self._inotify.IN_MODIFY | self._inotify.IN_MOVED_TO | self._inotify.IN_CREATE
        self._notifier.startReading()
        self._notifier.watch(self._directory, mask=mask, callbacks=[self._notified])

    def stop(self):
        # Closed here, once, rather than by loseConnection, which closes the
        # descriptor when the reactor next writes; and not at all if the
        # reactor's shutdown (Ctrl-C, SIGTERM) has closed it already: a
        # second close would be of a number perhaps reused by then
        # ("Couldn't close INotify file descriptor").
        notifier, self._notifier = self._notifier, None
        if notifier is None or notifier.disconnected:
            return
        notifier.stopReading()
        notifier.connectionLost(Failure(ConnectionDone("stopped watching")))

    def _notified(self, ignored, path, mask):
        if path.asBytesMode().basename() == self._name:
            self._callback()


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
