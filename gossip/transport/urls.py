# -*- test-case-name: tests.test_urls -*-
"""
Peers named by URLs: C{ssh://[USER@]HOST[:PORT][/LOG]} and
C{tls://HOST[:PORT][/LOG]}, read by one parser.

This module imports nothing from Twisted: the command line reads URLs
before it needs the reactor.
"""

import re
from urllib.parse import unquote_to_bytes

import attrs

from gossip.transport.errors import URLError

__all__ = ["DEFAULT_PORTS", "PeerURL", "URLError", "isURL", "parseURL"]

# The port of a URL that names none, by scheme.
DEFAULT_PORTS = {"ssh": 22, "tls": 7423}

_SYNTAX = {"ssh": "ssh://[USER@]HOST[:PORT][/LOG]", "tls": "tls://HOST[:PORT][/LOG]"}

# What a URL must percent-encode: spaces and control characters, which a
# user cannot see or mean; other characters beyond ASCII stand for their
# UTF-8 bytes.
_UNSEEN = re.compile(r"[\x00-\x20\x7f-\x9f]")
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
_HOSTNAME = re.compile(r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)(?:\.(?!-)[A-Za-z0-9_-]{1,63}(?<!-))*")
_PORT = re.compile(r"[0-9]{1,5}")


@attrs.frozen
class PeerURL:
    """
    A peer named by a URL.

    @ivar host: a DNS name (in lower case) or an IP address (an IPv6 one
        without its brackets).
    @ivar user: the user to log in as (C{ssh://} only), or L{None}.
    @ivar log: the name of the peer's log to sync with (L{bytes}), or
        L{None} if the URL names none.
    @ivar scheme: C{"ssh"} or C{"tls"}.
    """

    host: str
    port: int
    user: str | None = None
    log: bytes | None = None
    scheme: str = "ssh"

    def __str__(self):
        user = f"{self.user}@" if self.user else ""
        host = f"[{self.host}]" if ":" in self.host else self.host
        port = f":{self.port}" if self.port != DEFAULT_PORTS[self.scheme] else ""
        path = "/" + self.log.decode("utf-8", "replace") if self.log else ""
        return f"{self.scheme}://{user}{host}{port}{path}"

    @property
    def knownHostsName(self):
        """
        The name OpenSSH's C{known_hosts} files give this host.
        """
        if self.port == DEFAULT_PORTS["ssh"]:
            return self.host
        return f"[{self.host}]:{self.port}"


def isURL(text):
    """
    Whether C{text} names a peer by URL rather than as a file.
    """
    return text[:6].lower() in ("ssh://", "tls://")


def parseURL(url):
    """
    Read C{ssh://[USER@]HOST[:PORT][/LOG]} or C{tls://HOST[:PORT][/LOG]}.

    HOST is a DNS name, an IPv4 address or an IPv6 address in brackets.
    USER and LOG are percent-decoded, and any character beyond ASCII in
    them stands for its UTF-8 bytes; spaces and control characters must be
    percent-encoded.

    @type url: L{str} (from the command line: undecodable bytes as
        surrogates, which stand for themselves)
    @rtype: L{PeerURL}
    @raise URLError: it is not such a URL; the message is one line.
    """
    scheme = url.partition("://")[0].lower() if isURL(url) else None

    def bad(why):
        expected = _SYNTAX.get(scheme, " or ".join(_SYNTAX.values()))
        return URLError(f"URL {url!r}: {why}; expected {expected}")

    if scheme is None:
        raise bad("not an ssh:// or tls:// URL")
    if _UNSEEN.search(url):
        raise bad("spaces and control characters must be percent-encoded")
    rest = url[len("ssh://") :]
    if "?" in rest or "#" in rest:
        raise bad("queries and fragments mean nothing here")
    authority, _, path = rest.partition("/")
    userinfo, at, hostPort = authority.rpartition("@")
    user = None
    if at:
        if scheme != "ssh":
            raise bad("only ssh:// URLs name a user")
        user = _user(userinfo, bad)
    host, port = _hostPort(hostPort, DEFAULT_PORTS[scheme], bad)
    if "/" in path:
        raise bad("a log's name is one path segment (encode a slash in it as %2F)")
    return PeerURL(host, port, user, _decode(path, bad) or None, scheme)


def _decode(text, bad):
    """
    The bytes that the percent-encoded C{text} stands for.
    """
    if _BAD_ESCAPE.search(text):
        raise bad("a % must start an escape like %25")
    return unquote_to_bytes(text.encode("utf-8", "surrogateescape"))


def _user(text, bad):
    """
    The user name of an C{ssh://} URL's C{USER@}.
    """
    if ":" in text:
        raise bad("a password has no place in a URL")
    try:
        user = _decode(text, bad).decode("utf-8")
    except UnicodeDecodeError:
        raise bad("the user name is not UTF-8") from None
    if not user:
        raise bad("an empty user name")
    return user


def _hostPort(text, defaultPort, bad):
    """
    The host and port of C{HOST[:PORT]}.
    """
    if text.startswith("["):
        host, bracket, port = text[1:].partition("]")
        if not bracket or (port and not port.startswith(":")):
            raise bad("cannot tell the host from the port")
        if not _isIP(host, 6) or "%" in host:
            raise bad(f"{host!r} is not an IPv6 address")
        port = port[1:] if port else None
    else:
        if text.count(":") > 1:
            raise bad("put an IPv6 address in brackets, as in ssh://[::1]:7422")
        host, colon, port = text.partition(":")
        if not colon:
            port = None
        if not host:
            raise bad("no host")
        numeric = re.fullmatch("[0-9.]+", host)
        if not _HOSTNAME.fullmatch(host) or (numeric and not _isIP(host, 4)):
            raise bad(f"{host!r} is not a host name or an IP address")
        host = host.lower()
    if port is None:
        return host, defaultPort
    if not _PORT.fullmatch(port) or not 1 <= int(port) <= 65535:
        raise bad(f"port {port!r} is not a number from 1 to 65535")
    return host, int(port)


def _isIP(text, version):
    """
    Whether C{text} is an IP address of C{version}, 4 or 6.
    """
    # Imported here: gossip sync imports this module before it starts its
    # peer command, and only URLs need ipaddress.
    import ipaddress

    try:
        return ipaddress.ip_address(text).version == version
    except ValueError:
        return False
