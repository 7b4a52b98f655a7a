# -*- test-case-name: tests.test_cli -*-
"""
Waiting for a file to grow, without a reactor, for the command line.

With inotify (Linux) a wait ends as soon as another process writes to the
file; a rescan every C{interval} seconds backs it up, since inotify drops
events when its queue overflows.  Without inotify the file is polled.
"""

import os
import select

__all__ = ["FileWaiter"]

_IN_MODIFY = 0x2
_IN_ATTRIB = 0x4
_IN_CLOSE_WRITE = 0x8
_IN_MOVE_SELF = 0x800
_IN_DELETE_SELF = 0x400
_MASK = _IN_MODIFY | _IN_ATTRIB | _IN_CLOSE_WRITE | _IN_MOVE_SELF | _IN_DELETE_SELF


def _inotify(path):
    """
    An inotify descriptor watching C{path}, or L{None} where there is none.
    """
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        init = libc.inotify_init1
        addWatch = libc.inotify_add_watch
    except (OSError, AttributeError):
        return None
    fd = init(os.O_NONBLOCK | os.O_CLOEXEC)
    if fd < 0:
        return None
    if addWatch(fd, os.fsencode(path), _MASK) < 0:
        os.close(fd)
        return None
    return fd


class FileWaiter:
    """
    Wait until a file may have changed, or another descriptor is readable.
    """

    def __init__(self, path, interval=1.0, pollInterval=0.05, useInotify=True):
        self._fd = _inotify(path) if useInotify else None
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
