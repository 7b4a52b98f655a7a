# -*- test-case-name: tests.test_options -*-
"""
The options that the sync commands (C{gossip serve}, C{sync}, C{clone}) and
the daemon (C{twistd gossip}) share, each defined once: its name, default,
help and reader.  L{gossip.cli.main} makes argparse arguments of them, and
L{gossip.tap} usage.Options parameters.

This module imports nothing slow (no argparse, Twisted or attrs): the
command line reads it whenever it builds its full parser, and the daemon's
options import it from the layer above.
"""

from collections import namedtuple

from gossip.sync.defaults import KEEPALIVE, MAX_SUMMARY, TIMEOUT

__all__ = ["Option", "PEER", "SESSION", "megabytes", "reader", "sessionSettings"]


def megabytes(text):
    """
    A positive number of megabytes, as bytes.

    @raise ValueError: C{text} is not one; the message is fit to show.
    """
    try:
        value = float(text)
    except ValueError:
        value = 0
    if not value > 0:
        raise ValueError(f"not a positive number of megabytes: {text!r}")
    return int(value * 1024 * 1024)


def reader(read, error):
    """
    C{read} as a parser calls it: its L{ValueError}s become C{error}s with
    their message alone, which the parser shows.  L{float} and L{None} are
    left as they are, for each parser to word its own message.
    """
    if read is None or read is float:
        return read

    def readOrFail(text):
        try:
            return read(text)
        except ValueError as e:
            raise error(str(e)) from None

    readOrFail.__name__ = read.__name__
    return readOrFail


# A named tuple rather than an attrs class: attrs takes 25 ms to import,
# as long as the command line's whole parsing.
Option = namedtuple(
    "Option",
    ["name", "kind", "help", "default", "read", "metavar", "short", "shown", "setting", "hidden"],
    defaults=[None, None, None, None, None, None, False],
)
Option.__doc__ = """
An option of the sync commands and the daemon.

@ivar name: its long name, without C{--}.
@ivar kind: C{"flag"}, C{"value"} or C{"append"} (repeatable, a list).
@ivar help: what it does, in the words both parsers show.
@ivar default: its value when not given.
@ivar read: makes the value of the text given (raising L{ValueError}),
    or L{None} to keep the text.
@ivar metavar: what the command line's help calls the value.
@ivar short: its one-letter name, if any.
@ivar shown: the default as the command line's help shows it, if it does.
@ivar setting: the L{gossip.sync.settings.SessionSettings} field it sets.
@ivar hidden: left out of the command line's help.
"""

# How every session treats its peer.
SESSION = (
    Option(
        "any-name", "flag", "sync even if the logs' names differ", default=False,
        setting="anyName",
    ),
    Option(
        "timeout", "value",
        "give up on a peer that completes no message in this many seconds, or moves "
        "under 1 KB/s for as long mid-message",
        TIMEOUT, float, "SECONDS", shown=f"{TIMEOUT:g}", setting="timeout",
    ),
    Option(
        "keepalive", "value", "ping peers after this many idle seconds",
        KEEPALIVE, float, "SECONDS", shown=f"{KEEPALIVE:g}", setting="keepalive",
    ),
    Option(
        "max-summary", "value",
        "refuse a peer whose summary of what it holds is larger than this many "
        f"megabytes (default {MAX_SUMMARY // (1024 * 1024)})",
        MAX_SUMMARY, megabytes, "MB", setting="maxSummary",
    ),
    Option(
        "rescan", "value", "rescan each log this often, in seconds", 30.0, float,
        "SECONDS", hidden=True,
    ),
)  # fmt: skip

# How peers named by URL are reached.
PEER = (
    Option(
        "identity", "append",
        "an OpenSSH private key to offer to ssh:// peers (repeatable; default "
        "~/.ssh/id_ed25519, id_ecdsa, id_rsa; the ssh-agent's keys are offered first)",
        metavar="PATH", short="i",
    ),
    Option(
        "known-hosts", "value", "trusted host keys of peers (default ~/.ssh/known_hosts)",
        metavar="PATH",
    ),
    Option(
        "accept-new-host-keys", "flag",
        "record the key of a host not yet known (a changed key is still refused)",
        default=False,
    ),
    Option("tls-key", "value", "this node's TLS private key (PEM)", metavar="PATH"),
    Option("tls-cert", "value", "this node's TLS certificate (PEM)", metavar="PATH"),
    Option(
        "tls-ca", "value", "the CA certificate that signs TLS peers' certificates",
        metavar="PATH",
    ),
)  # fmt: skip


def sessionSettings(value):
    """
    The L{gossip.sync.settings.SessionSettings} that the L{SESSION} options
    give.

    @param value: returns the value of the option named (its long name).
    """
    from gossip.sync.settings import SessionSettings

    return SessionSettings(
        **{option.setting: value(option.name) for option in SESSION if option.setting}
    )
