# -*- test-case-name: tests.test_ssh -*-
"""
SSH keys as OpenSSH keeps them: the server's host key, the client's
identities, their fingerprints and C{known_hosts}' C{@revoked} lines.
"""

import os

from cryptography.hazmat.primitives.asymmetric import ed25519
from twisted.conch.ssh import keys
from twisted.logger import Logger

from gossip.transport.errors import SSHError

log = Logger()


def fingerprint(key):
    """
    A key's fingerprint as OpenSSH shows it: C{SHA256:...}.
    """
    return "SHA256:" + key.fingerprint(keys.FingerprintFormats.SHA256_BASE64).rstrip("=")


# Host keys


def hostKey(path, create=True, directories=False):
    """
    The server's host key, read from an OpenSSH private key file.

    @param create: make a new ed25519 key (mode 0600, its public half beside
        it in C{PATH.pub}) if there is no file at C{path}.
    @param directories: make the directories it goes in, too (for the
        default place only: elsewhere, a missing directory is a typo).
    @raise SSHError: the file cannot be read or is not an unencrypted key.
    """
    if create and not os.path.lexists(path):
        key = keys.Key(ed25519.Ed25519PrivateKey.generate())
        directory = os.path.dirname(os.path.abspath(path))
        try:
            if directories:
                os.makedirs(directory, mode=0o700, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            # Another process made it first: use theirs.
            return hostKey(path, create=False)
        except OSError as e:
            raise SSHError(f"cannot create host key {path}: {e.strerror}")
        with os.fdopen(fd, "wb") as f:
            f.write(key.toString("openssh"))
        with open(path + ".pub", "wb") as f:
            f.write(key.public().toString("openssh") + b" gossip host key\n")
        log.info("created host key {path} ({fingerprint})", path=path, fingerprint=fingerprint(key))
        return key
    try:
        key = keys.Key.fromFile(path)
    except OSError as e:
        raise SSHError(f"cannot read host key {path}: {e.strerror}")
    except keys.EncryptedKeyError:
        raise SSHError(f"host key {path} is encrypted: give one without a passphrase")
    except (keys.BadKeyError, ValueError) as e:
        raise SSHError(f"host key {path} is not an SSH private key: {e}")
    if key.isPublic():
        raise SSHError(f"host key {path} is a public key: give the private key")
    return key


def loadIdentity(path):
    """
    A private key from an OpenSSH key file, for the client.

    @raise SSHError: it cannot be read, is encrypted, or is no key.
    """
    try:
        return keys.Key.fromFile(path)
    except OSError as e:
        raise SSHError(f"identity {path}: {e.strerror}")
    except keys.EncryptedKeyError:
        raise SSHError(
            f"identity {path} is encrypted: add it to your ssh-agent (ssh-add {path})"
        )
    except (keys.BadKeyError, ValueError) as e:
        raise SSHError(f"identity {path} is not an SSH private key: {e}")


def defaultIdentities(home=None):
    """
    The key files OpenSSH's client would try, where they exist and can be
    used without a passphrase.
    """
    home = home or os.path.expanduser("~")
    found = []
    for name in ("id_ed25519", "id_ecdsa", "id_rsa"):
        path = os.path.join(home, ".ssh", name)
        if os.path.exists(path):
            try:
                found.append(loadIdentity(path))
            except SSHError as e:
                log.debug("{why}", why=str(e))
    return found


def defaultKnownHosts(home=None):
    return os.path.join(home or os.path.expanduser("~"), ".ssh", "known_hosts")


def revokedLine(path, key):
    """
    The number of the line of C{known_hosts} file C{path} that revokes
    C{key} (OpenSSH's C{@revoked} marker, whatever hosts it names), or
    L{None}.

    Conch's L{KnownHostsFile} keeps a marked line as an entry it cannot
    parse and never matches: a revoked key would be merely unknown there,
    and accepted with C{--accept-new-host-keys}.  This scan refuses it.
    """
    blob = key.blob()
    try:
        with open(path, "rb") as f:
            for number, line in enumerate(f, 1):
                fields = line.split()
                if len(fields) >= 4 and fields[0] == b"@revoked":
                    try:
                        if keys.Key.fromString(b" ".join(fields[2:4])).blob() == blob:
                            return number
                    except (keys.BadKeyError, ValueError):
                        continue
    except OSError:
        pass
    return None


def signatureAlgorithm(key):
    # RSA keys sign with SHA-256: OpenSSH refuses SHA-1 (ssh-rsa) signatures.
    if key.type() == "RSA":
        return b"rsa-sha2-256"
    return key.sshType()
