# -*- test-case-name: tests.test_documents -*-
"""
A folder kept in step with its log as a Twisted service: a pass runs soon
after the log or the folder changes (inotify where there is one, polling
where not) and every few seconds regardless, since inotify drops events
when its queue overflows.
"""

import os

import attrs
from twisted.application.service import Service
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from gossip.documents.folder import FolderError
from gossip.sync.watcher import watcherFor

__all__ = ["FolderService"]

# How long after an event a pass runs, so that one save's several events
# make one pass.
_GATHER = 0.01


@attrs.define(eq=False)
class FolderService(Service):
    """
    Runs passes of a L{gossip.documents.folder.Folder}.

    @ivar folder: the folder, not yet opened.
    @ivar reactor: an C{IReactorTime} (and C{IReactorFDSet} for inotify).
    @ivar rescanInterval: seconds between passes that nothing asked for.
    @ivar pollInterval: seconds between looks at the folder without inotify.
    @ivar useInotify: whether to use inotify where it is available.
    @ivar passes: how many passes have run.
    """

    folder = attrs.field()
    reactor = attrs.field()
    rescanInterval = attrs.field(default=5.0)
    pollInterval = attrs.field(default=0.1)
    useInotify = attrs.field(default=True)
    passes = attrs.field(default=0, init=False)
    _pending = attrs.field(default=None, init=False)
    _watchers = attrs.field(factory=list, init=False)
    _rescan = attrs.field(default=None, init=False)
    _skipped = attrs.field(default=0, init=False)

    _log = Logger()

    def startService(self):
        """
        Open the folder and bring it up to the log now.

        @raise FolderError: the folder or the log cannot be used.
        """
        self.folder.report = self._report
        self.folder.open()
        Service.startService(self)
        self._log.info(
            "keeping {folder} in step with {log}",
            folder=self.folder.root,
            log=os.fsdecode(self.folder.log.path),
        )
        self._watchers.append(
            watcherFor(self.reactor, self.folder.log.path, self.changed, self.useInotify)
        )
        folderWatcher = self._folderWatcher()
        if folderWatcher is not None:
            self._watchers.append(folderWatcher)
            interval = self.rescanInterval
        else:
            interval = self.pollInterval
        for watcher in self._watchers:
            watcher.start()
        self._rescan = LoopingCall(self.changed)
        self._rescan.clock = self.reactor
        self._rescan.start(interval, now=False)
        self.runPass()

    def stopService(self):
        Service.stopService(self)
        for watcher in self._watchers:
            watcher.stop()
        self._watchers = []
        if self._rescan is not None and self._rescan.running:
            self._rescan.stop()
        if self._pending is not None and self._pending.active():
            self._pending.cancel()
        self._pending = None
        self.folder.saveState()
        self.folder.close()

    def _folderWatcher(self):
        if not self.useInotify:
            return None
        try:
            return _TreeWatcher(self.reactor, self.folder.root, self.changed)
        except Exception as e:
            self._log.info("inotify unavailable ({why}); polling {folder}", why=e, folder=self.folder.root)
            return None

    def _report(self, message):
        self._log.warn("{folder}: {message}", folder=self.folder.root, message=message)

    def changed(self):
        """
        The log or the folder may have changed: run a pass soon.
        """
        if self.running and (self._pending is None or not self._pending.active()):
            self._pending = self.reactor.callLater(_GATHER, self.runPass)

    def runPass(self):
        """
        Run a pass now; another once what it left has settled.
        """
        self._pending = None
        try:
            unsettled = self.folder.sync()
        except FolderError as e:
            self._log.error("{folder}: {why}", folder=self.folder.root, why=e)
            return
        self.passes += 1
        if self.folder.problems != self._skipped:
            self._log.info(
                "{folder}: {count} adds or files skipped so far",
                folder=self.folder.root,
                count=self.folder.problems,
            )
            self._skipped = self.folder.problems
        if unsettled and self.running:
            self._pending = self.reactor.callLater(self.folder.settle / 2 or _GATHER, self.runPass)


class _TreeWatcher:
    """
    Watches a folder and every folder in it with inotify.
    """

    def __init__(self, reactor, root, callback):
        from twisted.internet import inotify
        from twisted.python.filepath import FilePath

        self._inotify = inotify
        self._notifier = inotify.INotify(reactor)
        self._root = FilePath(root)
        self._callback = callback

    def start(self):
        inotify = self._inotify
        mask = (
            inotify.IN_CLOSE_WRITE
            | inotify.IN_MOVED_TO
            | inotify.IN_MOVED_FROM
            | inotify.IN_CREATE
            | inotify.IN_DELETE
            | inotify.IN_MODIFY
        )
        self._notifier.startReading()
        self._notifier.watch(
            self._root, mask=mask, autoAdd=True, recursive=True, callbacks=[self._notified]
        )

    def stop(self):
        self._notifier.loseConnection()

    def _notified(self, ignored, path, mask):
        self._callback()
