# -*- test-case-name: tests.test_service -*-
"""
inotify (Linux) descriptors, opened through the C library: for the command
line's waits, without a reactor, and for the daemon's watcher, with one.
Both read the events themselves.
"""

import os

__all__ = [
    "IN_ATTRIB",
    "IN_CLOSE_WRITE",
    "IN_CREATE",
    "IN_DELETE_SELF",
    "IN_MODIFY",
    "IN_MOVED_TO",
    "IN_MOVE_SELF",
    "IN_Q_OVERFLOW",
    "inotifyDescriptor",
]

IN_MODIFY = 0x2
IN_ATTRIB = 0x4
IN_CLOSE_WRITE = 0x8
IN_MOVED_TO = 0x80
IN_CREATE = 0x100
IN_DELETE_SELF = 0x400
IN_MOVE_SELF = 0x800
IN_Q_OVERFLOW = 0x4000


def inotifyDescriptor(path, mask):
    """
    A non-blocking inotify descriptor watching C{path} for the events of
    C{mask}, or L{None} where there is none (not Linux, no such path, no
    watches left).
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
    if addWatch(fd, os.fsencode(path), mask) < 0:
        os.close(fd)
        return None
    return fd
