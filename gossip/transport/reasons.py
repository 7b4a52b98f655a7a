# -*- test-case-name: tests.test_control -*-
"""
Why a peer could not be reached, in words an operator can act on.
"""

from twisted.internet import error
from twisted.python.failure import Failure

__all__ = ["inWords"]

# Twisted's connection errors, each as a person would say it.
_WORDS = [
    (error.ConnectionRefusedError, "connection refused (nothing listens there)"),
    (error.DNSLookupError, "name not found"),
    (error.TimeoutError, "timed out"),
    (error.NoRouteError, "no route to the host"),
    (error.ConnectingCancelledError, "connecting was cancelled"),
]


def inWords(reason):
    """
    Say why a connection attempt failed.

    @param reason: a L{Failure} or an exception.
    @return: one line.
    """
    value = reason.value if isinstance(reason, Failure) else reason
    for kind, words in _WORDS:
        if isinstance(value, kind):
            return words
    message = str(value).strip() or type(value).__name__
    return " ".join(message.split())
