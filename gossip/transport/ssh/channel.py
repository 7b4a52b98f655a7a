# -*- test-case-name: tests.test_ssh -*-
"""
The SSH session channel that carries one sync session, shared by gossip's
server and client: its writes wait for the peer's window, and Conch's own
narration is kept to warnings and errors.
"""

from collections import deque

from twisted.conch.ssh.channel import SSHChannel
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.logger import Logger, LogLevel, globalLogPublisher
from twisted.python.failure import Failure




def _warningsOnly(event):
    if event.get("log_level", LogLevel.info) >= LogLevel.warn:
        globalLogPublisher(event)


# Conch's own classes narrate every packet and channel at debug and info
# level; in gossip's subclasses only their warnings and errors are kept
# (gossip logs logins, refusals and sessions itself).
conchLog = Logger(observer=_warningsOnly)

SUBSYSTEM = b"gossip"
# Channel window and packet size.  Conch's default window (128 KiB) holds
# bulk transfers to a fraction of the link's speed.  Packets of up to 64
# KiB take a whole batch of adds (an AMP box of up to 64 KiB) in one: in
# 32 KiB ones each batch cost its receiver two packets to decrypt, check
# and hand on, and its sender two to make.  (This is what the peer may
# send; what this end sends, the peer's own maximum bounds.)
WINDOW = 4 * 1024 * 1024
PACKET = 65536
# The SHA-256 family is hashed in hardware where SHA-512 is not, and Conch
# has neither AES-GCM nor chacha20: prefer AES-CTR with HMAC-SHA-256.
CIPHERS = [b"aes128-ctr", b"aes256-ctr", b"aes192-ctr"]
MACS = [b"hmac-sha2-256", b"hmac-sha2-512"]


def prefer(supported, preferred):
    first = [name for name in preferred if name in supported]
    return first + [name for name in supported if name not in first]


class SyncChannel(SSHChannel):
    """
    A session channel as the transport of one sync session.

    Writes wait for the peer's window (Conch's own buffering has no bound
    and re-slices its whole buffer at each window adjustment).  When the
    session hangs up, what is queued is sent first, then the end of file
    and the close.
    """

    _log = conchLog

    name = b"session"

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("localWindow", WINDOW)
        kwargs.setdefault("localMaxPacket", PACKET)
        SSHChannel.__init__(self, *args, **kwargs)
        self.protocol = None
        self._queue = deque()
        self._ending = False

    # What the session sees as its transport

    def write(self, data):
        if data and not self._ending:
            self._queue.append(data)
            self._flush()

    def writeSequence(self, data):
        for piece in data:
            self.write(piece)

    def loseConnection(self):
        if not self._ending:
            self._ending = True
            self._flush()

    def _flush(self):
        queue = self._queue
        while queue and self.remoteWindowLeft > 0:
            data = queue[0]
            room = self.remoteWindowLeft
            if len(data) > room:
                queue[0] = data[room:]
                data = data[:room]
            else:
                queue.popleft()
            SSHChannel.write(self, data)
        if self._ending and not queue and not self.localClosed:
            self._finish()

    def _finish(self):
        """
        Everything is sent: end the channel.
        """
        self.conn.sendEOF(self)
        SSHChannel.loseConnection(self)

    # The channel's events

    def addWindowBytes(self, data):
        self.remoteWindowLeft += data
        self._flush()

    def dataReceived(self, data):
        if self.protocol is not None:
            self.protocol.dataReceived(data)

    def eofReceived(self):
        # The peer will send nothing more: no request of ours can be answered.
        self.loseConnection()

    def closeReceived(self):
        self._queue.clear()
        self._ending = True
        SSHChannel.loseConnection(self)

    def closed(self):
        protocol, self.protocol = self.protocol, None
        if protocol is not None:
            reason = ConnectionDone() if self.remoteClosed else ConnectionLost()
            protocol.connectionLost(Failure(reason))
