# -*- test-case-name: tests.test_protocol -*-
"""
The sending side of a sync session: the adds a peer asks for and lacks,
read from the log, batched into L{Adds} and streamed with a bounded number
unanswered, a large add in L{AddBegin}/L{AddPart}/L{AddEnd} parts.
"""

from collections import deque

import attrs
from twisted.internet.defer import DeferredLock, ensureDeferred
from twisted.internet.task import deferLater

from gossip.store.intervals import Intervals, addSpans, difference, merge, overlapping
from gossip.store.logfile import LargeLine, Stretch
from gossip.sync.amp import VALUE_LIMIT, AddBegin, AddEnd, AddPart, Adds

__all__ = ["WINDOW", "Sender"]


# How many batches (or chunks of a large add) may be unanswered at once.
WINDOW = 8


def _wholeStretch(stretch, peerHave):
    """
    Whether a L{Stretch} can be sent as it is: the peer has none of it and
    every line fits in one L{Adds}.
    """
    return stretch.longest < VALUE_LIMIT and not overlapping(peerHave, stretch.spans)


@attrs.define
class Sender:
    """
    What a session sends of the adds its peer asks for: one request at a
    time, each add once, no more than the peer lacks.

    @ivar sent: how many adds it has sent.
    """

    # The session (a SyncProtocol) whose peer it sends to: its callRemote,
    # its service (chosen when the peer's hello arrives, so looked up each
    # time) and what the peer holds, peerHave, which its receiving side
    # updates too.
    _session: object
    _reactor: object
    sent: int = 0
    # Requests are answered one after another, each from what the peer
    # holds once the one before it has been sent.
    _sending: DeferredLock = attrs.field(factory=DeferredLock)
    # Adds to push, by origin, and whether a push is under way.
    _pushes: dict = attrs.field(factory=dict)
    _pushing: bool = False

    def request(self, wanted):
        """
        The peer asks for C{wanted}, ranges by origin: send what it lacks
        of them.

        @return: a L{Deferred} that fires with how many adds were sent.
        """
        # The peer asks for what it lacks now, whatever it held before: a
        # damaged disk loses adds, which its scrub or check asks for again.
        peerHave = self._session.peerHave
        for by, held in wanted.items():
            mine = peerHave.get(by)
            if mine is not None:
                peerHave[by] = mine.difference(held)
        return ensureDeferred(self._send(wanted))

    async def _send(self, wanted):
        await self._sending.acquire()
        inflight = deque()
        try:
            sent = await self._sendFrom(wanted, inflight)
            while inflight:
                await inflight.popleft()
            self.sent += sent
            return sent
        finally:
            for d in inflight:
                d.addErrback(lambda failure: None)
            self._sending.release()

    def push(self, added):
        """
        New adds of origins the peer streams from this node, ranges by
        origin that it is not known to hold: send them unasked.

        A lone add goes at once.  While a pushed batch is unanswered, the
        adds that come meanwhile gather into the next, so a relay forwards
        full batches while adds keep arriving and no add waits longer than
        an answer.
        """
        merge(self._pushes, added)
        if not self._pushing:
            self._pushing = True
            ensureDeferred(self._sendPushes()).addErrback(self._session.pushFailed)

    async def _sendPushes(self):
        await self._sending.acquire()
        inflight = deque()
        try:
            while self._pushes or inflight:
                if self._pushes:
                    wanted, self._pushes = self._pushes, {}
                    self.sent += await self._sendFrom(wanted, inflight)
                if inflight:
                    await inflight.popleft()
        except BaseException:
            self._pushes = {}
            raise
        finally:
            self._pushing = False
            for d in inflight:
                d.addErrback(lambda failure: None)
            self._sending.release()

    async def _sendFrom(self, wanted, inflight):
        """
        Send what the peer lacks of C{wanted}, leaving the last batches
        unanswered in C{inflight}.

        @return: how many adds were sent.
        """
        wanted = difference(wanted, self._session.peerHave)
        batch = []
        size = 0
        sent = 0
        peerHave = self._session.peerHave
        for found in self._session.service.linesFor(wanted):
            if not found:
                # A stretch of the log without any: let others run.
                await deferLater(self._reactor, 0, lambda: None)
                continue
            if isinstance(found, Stretch) and _wholeStretch(found, peerHave):
                # Adds the peer lacks, every one: send their bytes as
                # they are, cut between lines.
                addSpans(peerHave, found.spans)
                sent += len(found)
                data = found.data
                position = 0
                while position < len(data):
                    room = VALUE_LIMIT - size
                    if len(data) - position <= room:
                        batch.append(data[position:])
                        size += len(data) - position
                        break
                    cut = data.rfind(b"\n", position, position + room) + 1
                    if cut > position:
                        batch.append(data[position:cut])
                        position = cut
                    await self._push(inflight, Adds, lines=b"".join(batch))
                    batch, size = [], 0
                continue
            for line, (by, at) in found:
                held = peerHave.get(by)
                if held is None:
                    held = peerHave[by] = Intervals()
                elif at in held:
                    continue
                held.add(at)
                sent += 1
                if len(line) > VALUE_LIMIT:
                    if batch:
                        await self._push(inflight, Adds, lines=b"".join(batch))
                        batch, size = [], 0
                    await self._sendLarge(inflight, line)
                    continue
                if size + len(line) > VALUE_LIMIT:
                    await self._push(inflight, Adds, lines=b"".join(batch))
                    batch, size = [], 0
                batch.append(line)
                size += len(line)
        if batch:
            await self._push(inflight, Adds, lines=b"".join(batch))
        return sent

    async def _push(self, inflight, command, **arguments):
        inflight.append(self._session.callRemote(command, **arguments))
        if len(inflight) >= WINDOW:
            await inflight.popleft()

    async def _sendLarge(self, inflight, line):
        """
        Send one add too large for one value in parts, read from the log
        as they go (when it is a L{LargeLine}), with no more than L{WINDOW}
        unanswered: however slow the peer, no more of it is in memory.
        """
        size = len(line)
        if isinstance(line, LargeLine):
            read = self._session.service.readLine
        else:
            view = memoryview(line)

            def read(large, start, length):
                return bytes(view[start : start + length])

        await self._push(inflight, AddBegin, size=size)
        for start in range(0, size, VALUE_LIMIT):
            part = read(line, start, min(VALUE_LIMIT, size - start))
            await self._push(inflight, AddPart, data=part)
        await self._push(inflight, AddEnd)
