# -*- test-case-name: tests.test_commands -*-
"""
What makes a clone resumable: a file beside NEWLOG that names its SOURCE
from before the log is made until the clone is whole.  The same C{gossip
clone SOURCE NEWLOG} run again after a failure, or after the clone was
killed at any instant, goes on from what NEWLOG holds.

Standard library only: the command line reads it before it starts the
peer command and imports Twisted.
"""

import os

__all__ = ["cloneMarker", "markClone", "unfinishedClone"]


def cloneMarker(newlog):
    """
    The path of the file that marks C{newlog} as an unfinished clone.
    """
    directory, name = os.path.split(newlog)
    return os.path.join(directory, f".{name}.gossip-clone")


def unfinishedClone(newlog):
    """
    The SOURCE that C{newlog} is an unfinished clone of, or L{None}.

    @raise OSError: if the marker is there but cannot be read.
    """
    try:
        with open(cloneMarker(newlog), "rb") as f:
            return os.fsdecode(f.read())
    except FileNotFoundError:
        return None


def markClone(newlog, source):
    """
    Mark C{newlog}, not yet made, as an unfinished clone of C{source}.
    """
    with open(cloneMarker(newlog), "wb") as f:
        f.write(os.fsencode(source))
