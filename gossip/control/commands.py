# -*- test-case-name: tests.test_control -*-
"""
The control port's AMP commands, and where a daemon listens for them by
default.
"""

import os

from twisted.protocols import amp

__all__ = [
    "Connect",
    "ControlError",
    "Reload",
    "Status",
    "Stop",
    "defaultControl",
    "defaultPath",
]

# AMP allows 65,535 bytes a value: a larger one goes in pieces of this.
_PIECE = 60000


def defaultPath():
    """
    The control socket of the user's daemon: C{control.sock} in gossip's
    configuration directory (C{$XDG_CONFIG_HOME/gossip}, by default
    C{~/.config/gossip}).
    """
    home = os.environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config")
    return os.path.join(home, "gossip", "control.sock")


def defaultControl():
    """
    The default control endpoint, as C{--control} would name it.
    """
    return "unix:" + defaultPath().replace(":", "\\:")


class Pieces(amp.Argument):
    """
    A value of bytes of any length, sent as many AMP values: C{NAME} holds
    how many, C{NAME.0}, C{NAME.1}... the pieces.
    """

    def toBox(self, name, strings, objects, proto):
        value = objects[name.decode("ascii")]
        pieces = [value[i : i + _PIECE] for i in range(0, len(value), _PIECE)] or [b""]
        strings[name] = b"%d" % len(pieces)
        for i, piece in enumerate(pieces):
            strings[b"%s.%d" % (name, i)] = piece

    def fromBox(self, name, strings, objects, proto):
        count = int(strings[name])
        objects[name.decode("ascii")] = b"".join(
            strings[b"%s.%d" % (name, i)] for i in range(count)
        )


class ControlError(Exception):
    """
    The daemon cannot do what it was asked: the message says why.
    """


_ERRORS = {ControlError: b"CONTROL_ERROR"}


class Status(amp.Command):
    """
    What the daemon is doing: a JSON document (see docs/operations.md).
    """

    arguments = []
    response = [(b"status", Pieces())]
    errors = _ERRORS


class Reload(amp.Command):
    """
    Read C{authorized_keys} and the TLS files again; end the sessions whose
    keys no longer may.
    """

    arguments = []
    response = [(b"result", amp.Unicode())]
    errors = _ERRORS


class Connect(amp.Command):
    """
    Retry now the peers waiting to (those named C{peer}, or all).
    """

    arguments = [(b"peer", amp.Unicode(optional=True))]
    response = [(b"result", amp.Unicode())]
    errors = _ERRORS


class Stop(amp.Command):
    """
    Stop the daemon.
    """

    arguments = []
    response = [(b"result", amp.Unicode())]
    errors = _ERRORS
