# -*- test-case-name: tests.test_cli -*-
"""
Waiting for a file to grow, without a reactor, for the command line.

With inotify (Linux) a wait ends as soon as another process writes to the
file; a rescan every C{interval} seconds backs it up, since inotify drops
events when its queue overflows.  Without inotify the file is polled.
"""

import os
import select

from gossip.store.notify import (
    IN_ATTRIB,
    IN_CLOSE_WRITE,
    IN_DELETE_SELF,
    IN_MODIFY,
    IN_MOVE_SELF,
    inotifyDescriptor,
)

__all__ = ["FileWaiter"]

_MASK = IN_MODIFY | IN_ATTRIB | IN_CLOSE_WRITE | IN_MOVE_SELF | IN_DELETE_SELF


class FileWaiter:
    """
    Wait until a file may have changed, or another descriptor is readable.
    """

    def __init__(self, path, interval=1.0, pollInterval=0.05, useInotify=True):
        self._fd = inotifyDescriptor(path, _MASK) if useInotify else None
        self._timeout = interval if self._fd is not None else pollInterval

    def close(self):
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def wait(self, others=()):
        """
        Block until the file may have changed or one of C{others} (file
        descriptors) is readable.

        @return: those of C{others} that are readable.
        """
        fds = list(others)
        if self._fd is not None:
            fds.append(self._fd)
        while True:
            try:
                readable, _, _ = select.select(fds, [], [], self._timeout)
            except InterruptedError:
                continue
            break
        if self._fd is not None and self._fd in readable:
            try:
                while os.read(self._fd, 65536):
                    pass
            except BlockingIOError:
                pass
            readable.remove(self._fd)
        return readable
