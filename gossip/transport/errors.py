# -*- test-case-name: tests.test_imports -*-
"""
The errors the transports share, in a module of their own that imports
nothing, so that every transport can raise them and the commands catch
them without one transport importing another.
"""

__all__ = ["CommandError", "SSHError", "TLSError", "URLError"]


class CommandError(Exception):
    """
    A peer could not be reached: its command could not be run, its URL is
    wrong, or it would not let us in.
    """


class SSHError(CommandError):
    """
    An SSH peer could not be reached, or would not let us in.
    """


class URLError(CommandError):
    """
    A peer's URL is not one gossip can read.
    """


class TLSError(Exception):
    """
    TLS cannot be set up as asked: a bad file, description or URL.  The
    message is one line, fit to show a user.
    """


class TLSRefused(Exception):
    """
    A TLS handshake failed: one end refused the other's certificate.  The
    message says which and why in words, fit to show a user.
    """
