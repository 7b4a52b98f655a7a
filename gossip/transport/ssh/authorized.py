# -*- test-case-name: tests.test_authorized -*-
"""
Who may connect to gossip's SSH server: the keys an OpenSSH
C{authorized_keys} file lists, and what each may do.

Each line is C{[options] keytype base64 [comment]}, as for sshd.  Besides
OpenSSH's own options gossip understands three of its own::

    gossip-logs="a.log,b.log",gossip-read-only ssh-ed25519 AAAA... alice
    gossip-nodes="KxNtKjY9ql_L8JPTQDft" ssh-ed25519 AAAA... laptop

C{gossip-logs} limits a key to the logs so named (their files' base names),
C{gossip-read-only} refuses the key's adds, and C{gossip-nodes} limits the
node identities its peer may say it is (the C{I} of its logs' first adds).  OpenSSH's C{from} and
C{expiry-time} are honoured; its options about shells, terminals,
forwarding, agents, X11 and the environment are accepted as already true,
since gossip's server offers none of those.  A line gossip cannot honour in
full (C{command=}, C{cert-authority}, C{principals=}, an unknown option, bad
quoting, a key it cannot use) is logged and grants nothing: gossip fails
closed rather than grant more than the line meant.
"""

import base64
import binascii
import calendar
import datetime
import ipaddress
import os
import re
import time

import attrs
from twisted.conch.error import ValidPublicKey
from twisted.conch.ssh import keys
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import ISSHPrivateKey
from twisted.cred.error import UnauthorizedLogin
from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import Interface, implementer

__all__ = [
    "AuthorizedKeys",
    "Grant",
    "IKeyStore",
    "KeyChecker",
    "SSHPrivateKeyFrom",
    "parseAuthorizedKeys",
]

_log = Logger()

# The first field of a line is a key type, not options, if it starts so:
# no option does, and Conch guesses a key's format from the same prefixes.
_KEY_TYPE_PREFIXES = (b"ssh-", b"ecdsa-", b"sk-")
_CERTIFICATE_SUFFIX = b"-cert-v01@openssh.com"

# Options about what gossip's server never offers: a shell or command,
# a terminal, forwarding, an agent, X11, user rc files, the environment, a
# tunnel.  OpenSSH accepts "no-" before each flag but "restrict".
_MOOT_FLAGS = frozenset(
    [b"restrict"]
    + [
        prefix + flag
        for flag in [
            b"port-forwarding",
            b"agent-forwarding",
            b"x11-forwarding",
            b"pty",
            b"user-rc",
            b"touch-required",
            b"verify-required",
        ]
        for prefix in [b"", b"no-"]
    ]
)
_MOOT_VALUED = frozenset([b"permitopen", b"permitlisten", b"environment", b"tunnel"])

_REFUSED = {
    b"command": (
        "the key is limited to a command (command=), and gossip runs no "
        "commands, so gossip does not grant it access"
    ),
    b"cert-authority": (
        "the key is a certificate authority (cert-authority), and gossip "
        "does not accept certificates"
    ),
    b"principals": (
        "principals= is for certificate authorities, and gossip does not "
        "accept certificates"
    ),
}

_FLAGS = _MOOT_FLAGS | {b"gossip-read-only"}
_VALUED = _MOOT_VALUED | {b"gossip-logs", b"gossip-nodes", b"from", b"expiry-time"}

_FIELD = re.compile(rb"[^ \t]*")
_FIELD_SEPARATOR = re.compile(rb"[ \t]+")
_OPTION_NAME = re.compile(rb'[^=," \t]*')
_EXPIRY = re.compile(rb"(\d{4})(\d\d)(\d\d)(?:(\d\d)(\d\d)(\d\d)?)?(z|utc)?", re.IGNORECASE)
# What an address pattern may hold: an IPv4 or IPv6 address's characters
# and the wildcards.  Anything else names a host, which gossip cannot match.
_ADDRESS_PATTERN = re.compile(r"[0-9a-fA-F.:*?]+")


class _Refused(Exception):
    """
    A line of an C{authorized_keys} file grants nothing.

    @ivar message: why, in a phrase fit for an operator.
    @ivar blob: the blob of the key the line lists, if it could be read.
    """

    def __init__(self, message, blob=None):
        super().__init__(message)
        self.message = message
        self.blob = blob


@attrs.frozen
class _Source:
    """
    One entry of a C{from=} pattern list.

    @ivar text: the entry as written, without its C{!}.
    @ivar negated: whether a match refuses the key instead of admitting it.
    """

    text = attrs.field()
    negated = attrs.field()
    _network = attrs.field(default=None)
    _glob = attrs.field(default=None)

    def matches(self, address):
        """
        Whether C{address} (an L{ipaddress} address) matches this entry.
        """
        if self._network is not None:
            return address in self._network
        return self._glob.fullmatch(str(address)) is not None


@attrs.frozen
class Grant:
    """
    What one line of an C{authorized_keys} file lets its key do.

    @ivar key: the public key.
    @type key: L{keys.Key}

    @ivar comment: the line's comment (usually who holds the key).
    @type comment: L{str}

    @ivar line: the line's number, from 1.
    @type line: L{int}

    @ivar fingerprint: the key's fingerprint as OpenSSH shows it,
        C{SHA256:} and unpadded base64.
    @type fingerprint: L{str}

    @ivar logs: the names of the logs the key may open, or L{None} for all.
    @type logs: L{frozenset} of L{bytes} or L{None}

    @ivar readOnly: whether the key's adds are refused.
    @type readOnly: L{bool}

    @ivar nodes: the node identities the key's peer may say it is, or
        L{None} for any.
    @type nodes: L{frozenset} of L{bytes} or L{None}
    """

    key = attrs.field(repr=False, hash=False)
    comment = attrs.field()
    line = attrs.field()
    fingerprint = attrs.field(init=False)
    logs = attrs.field(default=None)
    readOnly = attrs.field(default=False)
    nodes = attrs.field(default=None)
    _sources = attrs.field(default=None, repr=False)
    _expires = attrs.field(default=None, repr=False)

    @fingerprint.default
    def _fingerprint(self):
        shown = self.key.fingerprint(keys.FingerprintFormats.SHA256_BASE64)
        if not shown.startswith("SHA256:"):
            shown = "SHA256:" + shown
        return shown.rstrip("=")

    def mayOpen(self, name):
        """
        Whether this key may open the log named C{name}.

        @type name: L{bytes}
        @rtype: L{bool}
        """
        return self.logs is None or name in self.logs

    def maySpeakFor(self, node):
        """
        Whether this key's peer may say it is the node whose identity is
        C{node}.

        @type node: L{bytes}
        @rtype: L{bool}
        """
        return self.nodes is None or node in self.nodes

    def _admits(self, address, now):
        """
        Whether the line lets its key in from C{address} at C{now}.

        @param address: the client's IP address, or L{None} if unknown.
        @type address: L{str} or L{None}

        @param now: seconds since the epoch.
        """
        if self._expires is not None and now > self._expires:
            return False
        if self._sources is None:
            return True
        client = _clientAddress(address)
        if client is None:
            return False
        admitted = False
        for source in self._sources:
            if source.matches(client):
                if source.negated:
                    return False
                admitted = True
        return admitted


def _clientAddress(address):
    """
    C{address} as an L{ipaddress} address, an IPv4-mapped IPv6 address as
    the IPv4 address it maps, or L{None} if it is no IP address.
    """
    if address is None:
        return None
    try:
        client = ipaddress.ip_address(address)
    except ValueError:
        return None
    if client.version == 6 and client.ipv4_mapped is not None:
        return client.ipv4_mapped
    return client


def _show(data, limit=60):
    """
    Some bytes from a file, quoted for a message.
    """
    text = data.decode("utf-8", "backslashreplace")
    if len(text) > limit:
        text = text[:limit] + "..."
    return repr(text)


def parseAuthorizedKeys(data):
    """
    Read the lines of an C{authorized_keys} file.

    A line gossip refuses still claims its key: any later line listing the
    same key is refused too, so that a restriction gossip cannot honour
    never falls through to a broader line.

    @param data: the file's contents.
    @type data: L{bytes}

    @return: the usable lines' grants in file order, and the problems, as
        C{(lineNumber, message)} pairs, of the lines that grant nothing.
    @rtype: L{tuple} of a L{list} of L{Grant} and a L{list} of
        L{tuple} of L{int} and L{str}
    """
    grants = []
    problems = []
    refusedAt = {}
    for number, line in enumerate(data.split(b"\n"), 1):
        line = line.strip(b" \t\r")
        if not line or line.startswith(b"#"):
            continue
        try:
            grant = _parseLine(line, number)
        except _Refused as refusal:
            problems.append((number, refusal.message))
            if refusal.blob is not None:
                refusedAt.setdefault(refusal.blob, number)
            continue
        earlier = refusedAt.get(grant.key.blob())
        if earlier is not None:
            problems.append(
                (number, f"line {earlier} lists the same key and was refused, so this line is too")
            )
            continue
        grants.append(grant)
    return grants, problems


def _parseLine(line, number):
    """
    The grant of one line, stripped, neither blank nor a comment.

    @raise _Refused: the line grants nothing.
    """
    # As sshd does, take the first field as a key type if it can be one.
    if _FIELD.match(line).group().startswith(_KEY_TYPE_PREFIXES):
        options = []
        rest = line
    else:
        options, end = _readOptions(line)
        rest = line[end:].lstrip(b" \t")
        if not rest:
            # An unknown option is the likelier mistake: a key without a type.
            _interpret(options)
            raise _Refused("there is no key after the options")
    key, comment = _readKey(rest)
    try:
        restrictions = _interpret(options)
    except _Refused as refusal:
        raise _Refused(refusal.message, key.blob())
    return Grant(key, comment, number, **restrictions)


def _readOptions(line):
    """
    Split the options at the start of C{line}, as sshd does.

    @return: the options as (lower-case name, value or L{None}) pairs, and
        where in C{line} they end.
    @raise _Refused: they are malformed.
    """
    options = []
    position = 0
    while True:
        name = _OPTION_NAME.match(line, position).group()
        position += len(name)
        if not name:
            raise _Refused(f"an option is missing at {_show(line[position:])}")
        value = None
        if line[position : position + 1] == b"=":
            value, position = _readQuoted(line, position + 1, name)
        options.append((name.lower(), value))
        following = line[position : position + 1]
        if following in (b"", b" ", b"\t"):
            return options, position
        if following != b",":
            raise _Refused(f"expected a comma after option {_show(name)}, not {_show(following)}")
        position += 1


def _readQuoted(line, position, name):
    """
    Read an option's double-quoted value starting at C{position}: only
    C{\\"} is an escape; other backslashes stand for themselves.

    @return: the value and the position after its closing quote.
    @raise _Refused: it is not quoted, or not closed.
    """
    if line[position : position + 1] != b'"':
        raise _Refused(f"the value of option {_show(name)} must be in double quotes")
    position += 1
    value = bytearray()
    while position < len(line):
        character = line[position : position + 1]
        if character == b'"':
            return bytes(value), position + 1
        if character == b"\\" and line[position + 1 : position + 2] == b'"':
            character = b'"'
            position += 1
        value += character
        position += 1
    raise _Refused(f"the value of option {_show(name)} has no closing quote")


def _readKey(rest):
    """
    Read C{keytype base64 [comment]}.

    @return: the public key and the comment.
    @raise _Refused: there is no key gossip can use.
    """
    fields = _FIELD_SEPARATOR.split(rest, 2)
    keyType = fields[0]
    shown = _show(keyType)
    if not keyType.startswith(_KEY_TYPE_PREFIXES):
        raise _Refused(f"{shown} is not a key type")
    if keyType.endswith(_CERTIFICATE_SUFFIX):
        raise _Refused(f"{shown} is a certificate, and gossip does not accept certificates")
    if keyType.startswith(b"sk-"):
        raise _Refused(
            f"{shown} is a security key, and gossip cannot check its signatures "
            "(Conch does not support them)"
        )
    if len(fields) < 2:
        raise _Refused(f"the {shown} key has no key data")
    try:
        base64.b64decode(fields[1], validate=True)
    except binascii.Error:
        raise _Refused(f"the {shown} key's data is not base64")
    try:
        key = keys.Key.fromString(keyType + b" " + fields[1])
    except Exception as e:
        # Conch raises all sorts of errors for a malformed key.
        raise _Refused(f"cannot load the {shown} key: {e}")
    if key.sshType() != keyType:
        raise _Refused(f"the {shown} key's data is a {_show(key.sshType())} key")
    comment = fields[2] if len(fields) > 2 else b""
    return key, comment.decode("utf-8", "replace")


def _interpret(options):
    """
    What C{options} ask of gossip.

    @param options: (lower-case name, value or L{None}) pairs.

    @return: the L{Grant} arguments they set.
    @rtype: L{dict}
    @raise _Refused: gossip cannot honour them.
    """
    restrictions = {}
    for name, value in options:
        shown = _show(name)
        if name in _REFUSED:
            raise _Refused(_REFUSED[name])
        if name in _FLAGS:
            if value is not None:
                raise _Refused(f"option {shown} takes no value")
        elif name in _VALUED:
            if value is None:
                raise _Refused(f"option {shown} needs a value")
        else:
            raise _Refused(f"unknown option {shown}")
        if name == b"gossip-read-only":
            restrictions["readOnly"] = True
        elif name == b"gossip-logs":
            if "logs" in restrictions:
                raise _Refused(f"option {shown} may appear only once")
            restrictions["logs"] = _readLogs(value)
        elif name == b"gossip-nodes":
            if "nodes" in restrictions:
                raise _Refused(f"option {shown} may appear only once")
            restrictions["nodes"] = _readNodes(value)
        elif name == b"from":
            if "sources" in restrictions:
                raise _Refused(f"option {shown} may appear only once")
            restrictions["sources"] = _readSources(value)
        elif name == b"expiry-time":
            # As in sshd, the earliest of several expiry times holds.
            expires = _readExpiry(value)
            restrictions["expires"] = min(expires, restrictions.get("expires", expires))
    return restrictions


def _readNames(value, option, what):
    """
    Read the value of C{option}: names separated by commas, none empty.

    @rtype: L{frozenset} of L{bytes}
    """
    names = frozenset(name.strip(b" \t") for name in value.split(b","))
    if b"" in names:
        raise _Refused(f"{option} has an empty {what}")
    return names


def _readLogs(value):
    """
    Read a C{gossip-logs} value: log names separated by commas.

    @rtype: L{frozenset} of L{bytes}
    """
    names = _readNames(value, "gossip-logs", "log name")
    for name in names:
        if b"/" in name:
            raise _Refused(
                f"gossip-logs names {_show(name)}, but a log's name is its file's base name"
            )
    return names


def _readNodes(value):
    """
    Read a C{gossip-nodes} value: node identities separated by commas.

    @rtype: L{frozenset} of L{bytes}
    """
    return _readNames(value, "gossip-nodes", "node identity")


def _readSources(value):
    """
    Read a C{from} value: a list of addresses, networks and address patterns
    separated by commas, each perhaps negated by C{!}.

    @rtype: L{tuple} of L{_Source}
    """
    try:
        text = value.decode("ascii")
    except UnicodeDecodeError:
        raise _Refused(f"from= {_show(value)} is not ASCII")
    sources = []
    for entry in text.split(","):
        negated = entry.startswith("!")
        if negated:
            entry = entry[1:]
        if not entry:
            raise _Refused(f"from= {_show(value)} has an empty entry")
        if "*" in entry or "?" in entry:
            if _ADDRESS_PATTERN.fullmatch(entry) is None:
                raise _Refused(
                    f"from= entry {entry!r} is not an address pattern: gossip "
                    "matches the client's IP address, never its host name"
                )
            glob = "".join(
                {"*": ".*", "?": "."}.get(character, re.escape(character))
                for character in entry
            )
            sources.append(_Source(entry, negated, glob=re.compile(glob, re.IGNORECASE)))
            continue
        try:
            network = ipaddress.ip_network(entry)
        except ValueError as e:
            if "/" in entry:
                why = str(e)
            else:
                why = "gossip matches the client's IP address, never its host name"
            raise _Refused(f"from= entry {entry!r} is not an IP address or network: {why}")
        sources.append(_Source(entry, negated, network=network))
    return tuple(sources)


def _readExpiry(value):
    """
    Read an C{expiry-time} value, C{YYYYMMDD[HHMM[SS]]} in local time or,
    ending in C{Z} or C{UTC}, in UTC.

    @return: seconds since the epoch.
    """
    match = _EXPIRY.fullmatch(value)
    if match is None:
        raise _Refused(f"expiry-time {_show(value)} is not YYYYMMDD[HHMM[SS]][Z]")
    fields = [int(field or 0) for field in match.groups()[:6]]
    try:
        when = datetime.datetime(*fields).timetuple()
        if match.group(7) is None:
            return time.mktime(when)
        return calendar.timegm(when)
    except (ValueError, OverflowError):
        raise _Refused(f"expiry-time {_show(value)} is not a time")


# The stamp of a file that is not there.
_MISSING = "missing"


def _stamp(status):
    """
    What tells one version of a file from another.

    The change time is there too, because a chmod that makes an unreadable
    file readable changes nothing else.
    """
    return (
        status.st_dev,
        status.st_ino,
        status.st_size,
        status.st_mtime_ns,
        status.st_ctime_ns,
    )


class IKeyStore(Interface):
    """
    Who may connect, and what each may do: what L{KeyChecker} asks, as
    L{twisted.conch.checkers.IAuthorizedKeysDB} is what Conch's key checker
    asks (which knows keys only, not what they may do or from where).
    """

    def grantFor(keyBlob, address):
        """
        What the key C{keyBlob} may do when it connects from C{address}.

        @param keyBlob: the public key blob the client offers.
        @type keyBlob: L{bytes}

        @param address: the client's IP address, or L{None} if unknown.
        @type address: L{str} or L{None}

        @return: the grant, or L{None} if the key may not connect.
        @rtype: L{Grant} or L{None}
        """


@implementer(IKeyStore)
@attrs.define(eq=False)
class AuthorizedKeys:
    """
    The grants of an C{authorized_keys} file, read again whenever it
    changes.

    Conch's own store (L{twisted.conch.checkers.UNIXAuthorizedKeysFiles},
    read by C{readAuthorizedKeyFile}) takes each line as a bare key: a line
    with options is skipped as unparsable, so neither OpenSSH's C{from=}
    and C{expiry-time=} nor gossip's own options could be honoured.

    @ivar path: the file's path.

    @ivar problems: the problems of the last reading, as C{(lineNumber,
        message)} pairs; the line number is L{None} for a problem with the
        whole file.
    @type problems: L{list}
    """

    path = attrs.field()
    _clock = attrs.field(default=time.time)
    problems = attrs.field(init=False, factory=list)
    _grants = attrs.field(init=False, factory=dict)
    _read = attrs.field(init=False, default=None)

    @property
    def count(self):
        """
        How many keys may connect, as of the last reading.
        """
        return len(self._grants)

    def grantFor(self, keyBlob, address):
        """
        What the key C{keyBlob} may do when it connects from C{address}.

        When several lines list the key, the first that lets it in wins.

        @param keyBlob: the public key blob the client offers.
        @type keyBlob: L{bytes}

        @param address: the client's IP address, or L{None} if unknown (then
            a line with C{from=} does not let the key in).
        @type address: L{str} or L{None}

        @return: the grant, or L{None} if the key may not connect: it is not
            listed, or has expired, or comes from elsewhere.
        @rtype: L{Grant} or L{None}
        """
        self.refresh()
        now = self._clock()
        for grant in self._grants.get(keyBlob, ()):
            if grant._admits(address, now):
                return grant
        return None

    def refresh(self, force=False):
        """
        Read the file again if it has changed since it was last read (or if
        it has not been read, or C{force}), and log its problems.
        """
        try:
            stamp = _stamp(os.stat(self.path))
        except FileNotFoundError:
            stamp = _MISSING
        except OSError as e:
            stamp = ("stat failed", e.errno)
        if force or stamp != self._read:
            self._load(stamp)

    def _load(self, stamp):
        """
        Read the file and log its problems.

        @param stamp: the file's L{_stamp} just before, if it cannot be read.
        """
        grants = []
        try:
            with open(self.path, "rb") as f:
                # The stamp of the very version read, should it change now.
                self._read = _stamp(os.fstat(f.fileno()))
                data = f.read()
        except FileNotFoundError:
            self._read = _MISSING
            problems = [(None, "there is no such file, so no key may connect")]
        except OSError as e:
            self._read = stamp
            problems = [(None, f"cannot read it ({e.strerror}), so no key may connect")]
        else:
            grants, problems = parseAuthorizedKeys(data)
        self._grants = {}
        for grant in grants:
            self._grants.setdefault(grant.key.blob(), []).append(grant)
        self.problems = problems
        for line, problem in problems:
            if line is None:
                _log.warn("{path}: {problem}", path=self.path, problem=problem)
            else:
                _log.warn(
                    "{path}, line {line}: {problem}; that line grants nothing",
                    path=self.path,
                    line=line,
                    problem=problem,
                )
        _log.info(
            "{path}: {count} keys may connect", path=self.path, count=len(self._grants)
        )


@implementer(ISSHPrivateKey)
@attrs.frozen
class SSHPrivateKeyFrom:
    """
    Public key credentials, as L{twisted.cred.credentials.SSHPrivateKey},
    with the address they come from.

    @ivar address: the client's IP address, or L{None} if unknown.
    @type address: L{str} or L{None}
    """

    username = attrs.field()
    algName = attrs.field()
    blob = attrs.field()
    sigData = attrs.field()
    signature = attrs.field()
    address = attrs.field(default=None)


@implementer(ICredentialsChecker)
@attrs.define
class KeyChecker:
    """
    Checks public key credentials against the grants of a store, such as
    L{AuthorizedKeys}; the avatar ID of a login is its L{Grant}.

    @ivar _store: an L{IKeyStore}.
    """

    credentialInterfaces = (ISSHPrivateKey,)

    _store = attrs.field()

    def requestAvatarId(self, credentials):
        """
        The grant of C{credentials}' key, if they are signed by it.

        @return: a L{defer.Deferred} that fires with the L{Grant}, or fails
            with L{ValidPublicKey} if the key may connect but the
            credentials are not signed, or with L{UnauthorizedLogin}.
        """
        return defer.maybeDeferred(self._check, credentials)

    def _check(self, credentials):
        grant = self._store.grantFor(credentials.blob, getattr(credentials, "address", None))
        if grant is None:
            raise UnauthorizedLogin("key not authorized")
        if credentials.signature is None:
            # Tells the client to go on and sign with this key.
            raise ValidPublicKey()
        try:
            verified = grant.key.verify(credentials.signature, credentials.sigData)
        except Exception:
            # Conch raises all sorts of errors for a malformed signature.
            verified = False
        if not verified:
            raise UnauthorizedLogin("bad signature")
        return grant
