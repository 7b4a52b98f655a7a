# -*- test-case-name: tests.test_ssh -*-
"""
Peers named by URLs: C{ssh://[USER@]HOST[:PORT][/LOGNAME]}.
"""

from urllib.parse import unquote, urlsplit

import attr

from gossip.transport.errors import SSHError

__all__ = ["SSHPeer", "parseSSHURL"]


@attr.frozen
class SSHPeer:
    """
    A peer named by C{ssh://[USER@]HOST[:PORT][/LOGNAME]}.
    """

    host = attr.ib()
    port = attr.ib(default=22)
    user = attr.ib(default=None)
    log = attr.ib(default=None)

    def __str__(self):
        user = f"{self.user}@" if self.user else ""
        host = f"[{self.host}]" if ":" in self.host else self.host
        port = f":{self.port}" if self.port != 22 else ""
        path = "/" + self.log.decode("utf-8", "replace") if self.log else ""
        return f"ssh://{user}{host}{port}{path}"

    @property
    def knownHostsName(self):
        """
        The name OpenSSH's C{known_hosts} files give this host.
        """
        if self.port == 22:
            return self.host
        return f"[{self.host}]:{self.port}"


def parseSSHURL(url):
    """
    Parse C{ssh://[USER@]HOST[:PORT][/LOGNAME]}.

    @raise SSHError: it is not such a URL.
    """
    try:
        parts = urlsplit(url)
    except ValueError as e:
        # An unclosed "[", for one.
        raise SSHError(f"{url}: {e}") from None
    if parts.scheme != "ssh" or parts.query or parts.fragment:
        raise SSHError(f"{url}: not an ssh://[USER@]HOST[:PORT][/LOGNAME] URL")
    try:
        port = parts.port
    except ValueError:
        raise SSHError(f"{url}: bad port")
    if not parts.hostname:
        raise SSHError(f"{url}: no host")
    path = parts.path.lstrip("/")
    if "/" in path:
        raise SSHError(f"{url}: a log is named without directories")
    return SSHPeer(
        host=parts.hostname,
        port=22 if port is None else port,
        user=unquote(parts.username) if parts.username else None,
        log=unquote(path).encode("utf-8", "surrogateescape") if path else None,
    )
