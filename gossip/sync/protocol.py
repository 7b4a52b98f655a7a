# -*- test-case-name: tests.test_protocol -*-
"""
The sync session that brings two logs together over any byte stream,
speaking the commands of L{gossip.sync.amp}.

docs/protocol.md describes it; this module follows that document.  Both ends
run the same L{SyncProtocol}: each says hello, sends a summary of what it
has, requests what it lacks, and from then on announces its new adds so that
the other can request them.  What it sends of the adds the peer requests,
its L{gossip.sync.sender.Sender} reads and streams.  Where a session stands
is one L{SessionState}, moved only as the table L{TRANSITIONS} says.
"""

import random
from enum import Enum

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.logger import Logger
from twisted.protocols import amp
from twisted.protocols.policies import TimeoutMixin
from twisted.python.failure import Failure
from zope.interface import implementer

from gossip.store.format import CorruptLine
from gossip import counted
from gossip.store.intervals import (
    Intervals,
    addSpans,
    count,
    difference,
    gather,
    heldBy,
    merge,
    runs,
)
from gossip.store.logfile import LogError
from gossip.sync.amp import (
    COMMANDS,
    ERRORS,
    PROTOCOL_VERSION,
    AddBegin,
    AddEnd,
    AddPart,
    Adds,
    Announce,
    Have,
    Hello,
    Note,
    Ping,
    ProtocolError,
    Refused,
    Request,
    Stream,
    Synced,
    decodeOrigins,
    decodeRanges,
    encodeOrigins,
    encodeRanges,
    rangeParts,
)
from gossip.sync.interfaces import ISyncSession
# WINDOW is named here too, where it was first.
from gossip.sync.sender import WINDOW, Sender  # noqa: F401
from gossip.sync.settings import SessionSettings


__all__ = [
    "MIN_RATE",
    "REFUSALS",
    "TRANSITIONS",
    "End",
    "Gave",
    "Had",
    "SessionState",
    "SyncProtocol",
    "vouchFor",
]


# The life of a session, a SessionState that only TRANSITIONS moves.  Each
# end follows two lines at once, each at its own pace (docs/protocol.md, "A
# session": "each end, independently"): what it has had from its peer, and
# what its peer has had from it.  A peer's summary may come before its
# answer to our hello, and a session may catch up before that answer too,
# so neither line waits for the other.  A third line says whether the
# session is ending; the session is synced once both others have caught up.


class Had(Enum):
    """
    What a session has had from its peer.
    """

    NOTHING = "nothing"
    # Its hello, accepted.
    HELLO = "hello"
    # Its whole summary.
    SUMMARY = "summary"
    # The adds its summary and announcements listed that the log lacked:
    # Synced is sent.
    CAUGHT_UP = "caught up"


class Gave(Enum):
    """
    What a session's peer has had from it.
    """

    # Not even a hello: a server waits for the client's to choose its log.
    NOTHING = "nothing"
    # Its hello, not yet answered.
    HELLO = "hello"
    # Its hello accepted, and its summary sent.
    SUMMARY = "summary"
    # The peer said Synced: it holds what the summary listed.
    CAUGHT_UP = "caught up"


class End(Enum):
    """
    Whether a session is ending.
    """

    OPEN = "open"
    # Failed or refused: it reads nothing more, and waits for the
    # connection to close.
    CLOSING = "closing"
    # The connection is lost.
    CLOSED = "closed"


# (where a line stands, event) -> where the event moves it.
TRANSITIONS = {
    # The peer's hello accepted; its summary, a Have at a time; its
    # announcements, once the summary is in; the log caught up with it.
    (Had.NOTHING, "hello"): Had.HELLO,
    (Had.HELLO, "have"): Had.HELLO,
    (Had.HELLO, "lastHave"): Had.SUMMARY,
    (Had.SUMMARY, "announce"): Had.SUMMARY,
    (Had.SUMMARY, "caughtUp"): Had.CAUGHT_UP,
    (Had.CAUGHT_UP, "announce"): Had.CAUGHT_UP,
    # Version 2: its notes, once the summary is in; its streams, asked for
    # once it has had our summary, so whatever we have had of its.
    (Had.SUMMARY, "note"): Had.SUMMARY,
    (Had.CAUGHT_UP, "note"): Had.CAUGHT_UP,
    (Had.HELLO, "stream"): Had.HELLO,
    (Had.SUMMARY, "stream"): Had.SUMMARY,
    (Had.CAUGHT_UP, "stream"): Had.CAUGHT_UP,
    # Our hello sent, then accepted (our summary goes then); the peer
    # caught up, as often as it says so.
    (Gave.NOTHING, "helloSent"): Gave.HELLO,
    (Gave.HELLO, "helloAccepted"): Gave.SUMMARY,
    (Gave.SUMMARY, "peerSynced"): Gave.CAUGHT_UP,
    (Gave.CAUGHT_UP, "peerSynced"): Gave.CAUGHT_UP,
    # Failed (a fault of either end, a refusal), then the connection lost;
    # a failure after the first changes nothing.
    (End.OPEN, "fail"): End.CLOSING,
    (End.CLOSING, "fail"): End.CLOSING,
    (End.CLOSED, "fail"): End.CLOSED,
    (End.OPEN, "lost"): End.CLOSED,
    (End.CLOSING, "lost"): End.CLOSED,
}

# Why a peer's message is out of order where the table has no move for
# it: the session answers PROTOCOL_ERROR with this reason, and ends.  (Any
# message but a hello before the peer's hello is stopped before this, by
# SyncProtocol._misplaced, which names the command.)  An event with no move
# and no reason here is a fault of this node.
REFUSALS = {
    (Had.HELLO, "hello"): "a second hello",
    (Had.SUMMARY, "hello"): "a second hello",
    (Had.CAUGHT_UP, "hello"): "a second hello",
    (Had.SUMMARY, "have"): "a second summary",
    (Had.CAUGHT_UP, "have"): "a second summary",
    (Had.HELLO, "announce"): "an announcement before the summary",
    (Had.HELLO, "note"): "a note before the summary",
    # A peer cannot hold a summary it has not had: ours goes once it has
    # accepted our hello.
    (Gave.NOTHING, "peerSynced"): "Synced before our summary",
    (Gave.HELLO, "peerSynced"): "Synced before our summary",
}

# Which of a SessionState's fields each event moves.
_FIELDS = {Had: "had", Gave: "gave", End: "end"}
_LINES = {event: _FIELDS[type(state)] for state, event in TRANSITIONS}


@attrs.frozen
class SessionState:
    """
    Where a session stands on each of its lines.
    """

    had: Had = Had.NOTHING
    gave: Gave = Gave.NOTHING
    end: End = End.OPEN

    @property
    def summarised(self):
        """
        Whether the peer's whole summary is in.
        """
        return self.had in (Had.SUMMARY, Had.CAUGHT_UP)

    @property
    def synced(self):
        """
        Whether both ends have caught up.
        """
        return self.had is Had.CAUGHT_UP and self.gave is Gave.CAUGHT_UP

    def after(self, event):
        """
        Where C{event} moves this state, by L{TRANSITIONS}.

        @raise ProtocolError: if the event is a peer's message out of order
            (L{REFUSALS}).
        @raise ValueError: if the table has no move for it otherwise.
        """
        field = _LINES[event]
        key = (getattr(self, field), event)
        moved = TRANSITIONS.get(key)
        if moved is None:
            if key in REFUSALS:
                raise ProtocolError(REFUSALS[key])
            raise ValueError(f"no move for {event!r} from {field} {key[0].value!r}")
        if moved is key[0]:
            return self
        return attrs.evolve(self, **{field: moved})


# A large add may come in no more parts than one for each this many bytes
# (and one more): a peer cannot make its receiver answer without end.
_MIN_PART = 1024
# Yield to the reactor after reading this many lines that are not sent.
_SCAN_SLICE = 20000
# A peer's box may hold no more fields than this (AMP itself sets no limit).
_MAX_FIELDS = 16
# Nor may it name more origins than this: a node's work on a summary goes
# by origin too, and a log of more is not sane.
_MAX_ORIGINS = 10000
# Origins the peer asked not to be noted (their writer streams them to it)
# are still noted every QUIET_TICKS note periods: should the writer's link
# stall without ending, the peer learns what it misses from the others.
QUIET_TICKS = 6
# Nor may it, with its announcements, name more ranges than a summary of
# the longest allowed could at this many bytes a range ("10-11,"): what a
# peer holds costs the session memory and time however it was told.
_RANGE_BYTES = 8
# Work on what a peer holds goes a slice of origins a turn of the reactor,
# each slice about this many ranges, an origin counting as _ORIGIN_COST
# more (the work on one costs that much whatever its ranges).
_SLICE = 20000
_ORIGIN_COST = 100
# What a generator run by SyncProtocol._inTurns gives when it is over.
_done = object()
# Bytes a second a peer must move while a message of its is incomplete.
MIN_RATE = 1024


def _slices(items, cost):
    """
    Group C{items} into lists each costing about L{_SLICE}, C{cost(item)}
    and L{_ORIGIN_COST} an item: work that may take a turn of the reactor.

    @return: an iterator of C{(items, cost)}; the cost of a slice is below
        L{_SLICE} only for the last one.
    """
    taken, used = [], 0
    for item in items:
        taken.append(item)
        used += _ORIGIN_COST + cost(item)
        if used >= _SLICE:
            yield taken, used
            taken, used = [], 0
    if taken:
        yield taken, used


def _describe(failure):
    """
    A failure's message, or what kind of failure it is when it has none.
    """
    message = failure.getErrorMessage()
    if isinstance(failure.value, amp.TooLong):
        return "the peer sent something that is not the sync protocol"
    if type(failure.value) is ConnectionDone:
        return "the peer closed the connection"
    if type(failure.value) is ConnectionLost:
        return "the connection was lost"
    return message or type(failure.value).__name__


@attrs.define
class _Outcome:
    """
    What a session comes to (its handshake, its end), for any number of
    waiters: each gets a L{Deferred} of its own, so that what one's
    callbacks return never reaches another.

    @ivar known: whether the outcome is known.
    """

    _waiting: list = attrs.field(factory=list)
    _result: object = None
    known: bool = False

    def wait(self):
        """
        A new L{Deferred} that fires with the outcome, or fails with it if
        it is a L{Failure}: at once if it is known.
        """
        waiter = Deferred()
        if self.known:
            self._fire(waiter)
        else:
            self._waiting.append(waiter)
        return waiter

    def settle(self, result):
        """
        The outcome is C{result}: tell every waiter.
        """
        self.known = True
        self._result = result
        waiting, self._waiting = self._waiting, []
        for waiter in waiting:
            self._fire(waiter)

    def _fire(self, waiter):
        if isinstance(self._result, Failure):
            waiter.errback(self._result)
        else:
            waiter.callback(self._result)


def vouchFor(nodes, who):
    """
    A session's C{vouch} that lets its peer say it is only one of C{nodes}
    (node identities).

    @param who: who may not, for the refusal: C{"key SHA256:..."}.
    """

    def vouch(node):
        if node in nodes:
            return None
        shown = node.decode("ascii", "backslashreplace")
        return f"{who} may not speak for node {shown!r}"

    return vouch


@implementer(ISyncSession)
class SyncProtocol(amp.AMP, TimeoutMixin):
    """
    One end of a sync session.

    @ivar peer: the peer's name for log messages (a command, an address).
    @ivar once: end the session once both ends have caught up.
    @ivar sessionState: the L{SessionState} where it stands (AMP's own
        C{state} is its parser's).
    @ivar readOnly: take no adds from the peer (and say so in the hello).
    @ivar want: the name of the log to ask the peer for, if not ours.
    @ivar settings: the L{SessionSettings} it keeps to.
    @ivar dialled: this end made the connection (the other accepted it).
    @ivar peerBoot: the name of the peer's process, from its hello (a
        session that streams only).
    @ivar superseded: why the session ended in favour of another with the
        same peer, if it did (docs/protocol.md, "Links listed at both ends").

    A session made without a service gets one when the peer's hello
    arrives: C{choose(name, anyName)} returns the service of the log the
    peer wants, or raises L{Refused}.  With C{vouch}, C{vouch(node)} says
    why the peer may not say it is the node whose identity is C{node}, or
    returns L{None} if it may.
    """

    log = Logger()

    def __init__(
        self,
        service,
        peer,
        settings=SessionSettings(),
        once=False,
        reactor=None,
        progress=None,
        choose=None,
        readOnly=False,
        want=None,
        dialled=False,
        vouch=None,
    ):
        amp.AMP.__init__(self)
        self.settings = settings
        self.service = service
        self._choose = choose
        self._vouch = vouch
        self.want = want
        self.readOnly = readOnly
        self.peerReadOnly = False
        self.peer = peer
        self.once = once
        self.dialled = dialled
        self.peerBoot = None
        self.superseded = None
        # TimeoutMixin's: the timeout in force.
        self.timeOut = settings.timeout
        self._reactor = reactor if reactor is not None else service.reactor
        self._progress = progress
        self.sessionState = SessionState()
        self.peerNode = None
        self.failure = None
        # What the peer holds, as far as this session knows.
        self.peerHave = {}
        # What this session has asked the peer for and not yet had answered.
        self.pending = {}
        self._summary = {}
        self._summaryBytes = 0
        # The ranges of the summary so far, and of all the peer holds.
        self._summaryRanges = 0
        self._peerRanges = 0
        # Whether a pass over what the peer holds is under way, and whether
        # another must follow it.
        self._seeking = False
        self._seekAgain = False
        # Whether the next such pass is the first after the summary, and
        # says how much of it the log lacks.
        self._counting = False
        self._requests = 0
        self._announce = {}
        self._announceCall = None
        # Version 2 (docs/protocol.md, "Many nodes"): whether both ends
        # speak it; the origins the peer streams from this node; what to
        # note on the next tick, and the origins to note at once; the
        # streams to turn on or off; the adds notes said the peer holds, to
        # fetch if no stream brings them in time.  (Which origins this node
        # streams from the peer, the service keeps: sourceOf.)
        self.streams = False
        self.txStreams = set()
        # The origins the peer asked this node not to note (their writer
        # streams them to it), and those this node asked the peer not to.
        self.txQuiet = set()
        self.rxQuiet = set()
        # Origins of txQuiet the log gained adds of since they were last
        # noted: their notes are worked out when they go.
        self._quietGained = set()
        self._notes = {}
        # Origins whose adds this session has noted at least once.
        self._told = set()
        self._noteSoon = set()
        self._ticks = 0
        self._noteCall = None
        self._noteSoonCall = None
        self._streamChanges = {}
        self._streamCall = None
        self._noted = {}
        self._notedCall = None
        # The large add being received: an Incoming, spooled to a file.
        self._large = None
        self._largeParts = 0
        self._handshaken = _Outcome()
        self._finished = _Outcome()
        self._pinger = None
        # How long the peer has been mid-message since its rate was last
        # checked (not counting the stretch begun at _midSince, if it is
        # mid-message now), and the bytes it moved meanwhile.
        self._midTime = 0.0
        self._midSince = None
        self._midBytes = 0
        self._rateCall = None
        self.received = 0
        # Adds from the peer dropped as damaged.
        self.badAdds = 0
        self.receivedBytes = 0
        self.expected = 0
        self._sender = Sender(self, self._reactor)

    # Life cycle

    def connectionMade(self):
        amp.AMP.connectionMade(self)
        self.setTimeout(self.timeOut)
        self.reportConnected()
        if self.service is not None:
            self._begin()

    def _begin(self):
        """
        Say hello: the session's log is known.
        """
        self.service.sessionStarted(self)
        arguments = dict(
            version=PROTOCOL_VERSION,
            node=self.service.identity,
            log=self.service.name,
            anyName=self.settings.anyName,
        )
        if self.want is not None:
            arguments["want"] = self.want
        if self.readOnly:
            arguments["readOnly"] = True
        if self.settings.streams and not self.once:
            arguments["stream"] = True
            arguments["boot"] = self.service.boot
        self._move("helloSent")
        self.callRemote(Hello, **arguments).addCallbacks(self._helloAccepted, self._fail)

    def lengthLimitExceeded(self, length):
        # A key longer than AMP allows: no box can follow.
        self.failure = self.failure or f"peer broke the protocol: a key of {length} bytes"
        self._close()
        amp.AMP.lengthLimitExceeded(self, length)

    def proto_done(self, string):
        # The session failed: what else the peer sends is ignored.
        return "done"

    def proto_value(self, string):
        # A hostile peer could otherwise grow one box without end.
        state = amp.AMP.proto_value(self, string)
        if self._currentBox is not None and len(self._currentBox) > _MAX_FIELDS:
            self._fail(ProtocolError(f"a message of more than {_MAX_FIELDS} fields"))
            return "done"
        return state

    def dispatchCommand(self, box):
        # An error answered to the peer ends the session (the commands list
        # these errors as fatal): read nothing more, and note why, for the
        # log.
        def noted(failure):
            error = failure.value
            if isinstance(error, amp.RemoteAmpError) and error.fatal:
                self._close()
                if self.failure is None:
                    self.failure = (
                        "peer broke the protocol: " + error.description
                        if error.errorCode == ERRORS[ProtocolError]
                        else "refused: " + error.description
                    )
            return failure

        return amp.AMP.dispatchCommand(self, box).addErrback(noted)

    def ampBoxReceived(self, box):
        # A whole message: the peer is not silent.  Bytes that complete
        # none do not count (see _watchRate).
        self.resetTimeout()
        self.lastContact = self._reactor.seconds()
        # AMP trusts its peer: that a box is a command it has, with the
        # arguments it takes, or an answer to a question it asked.  gossip
        # checks first, and ends the session on anything else.
        why = self._misplaced(box)
        if why is not None:
            self._fail(ProtocolError(f"peer broke the protocol: {why}"))
            return
        amp.AMP.ampBoxReceived(self, box)

    def _misplaced(self, box):
        """
        Why the peer may not send C{box} now, or L{None} if it may.
        """
        if amp.COMMAND in box:
            return self._misplacedCommand(box)
        if amp.ANSWER in box:
            tag = box[amp.ANSWER]
        elif amp.ERROR in box:
            tag = box[amp.ERROR]
            if amp.ERROR_CODE not in box or amp.ERROR_DESCRIPTION not in box:
                return "a malformed error"
        else:
            return "an empty message" if not box else "a message that is no command or answer"
        if tag not in self._outstandingRequests:
            return "an answer to no question"
        # The peer says hello before it answers ours; it may refuse ours
        # without one.
        if self.sessionState.had is Had.NOTHING and amp.ANSWER in box:
            return "an answer before its hello"
        return None

    def _misplacedCommand(self, box):
        """
        Why the peer may not send the command in C{box} now, or L{None}.
        """
        name = box[amp.COMMAND]
        command = COMMANDS.get(name)
        shown = repr(name[:40].decode("ascii", "replace"))
        if command is None:
            return f"no command {shown}"
        if amp.ASK not in box:
            return f"{shown} asks for no answer"
        if self.sessionState.had is Had.NOTHING and command is not Hello:
            return f"{shown} before its hello"
        try:
            command.parseArguments(box, self)
        except (KeyError, ValueError, TypeError):
            return f"a malformed {shown}"
        return None

    def _move(self, event):
        """
        Move the session's L{sessionState} by C{event}, as L{TRANSITIONS} says.

        @raise ProtocolError: if C{event} is the peer's, out of order.
        """
        self.sessionState = self.sessionState.after(event)

    def _check(self, event):
        """
        Raise L{ProtocolError} if C{event}, the peer's, is out of order now.
        """
        self.sessionState.after(event)

    def _over(self):
        """
        Whether the session is ending: it sends and asks nothing more.
        """
        return self.sessionState.end is not End.OPEN

    def _close(self):
        """
        The session has failed: deliver nothing more the peer sends, not
        even what arrived with what ended it.
        """
        self._move("fail")
        # IntNStringReceiver stops taking strings from its buffer.
        self.paused = True

    def callLater(self, period, function):
        # TimeoutMixin's clock: this session's reactor, not the global one.
        return self._reactor.callLater(period, function)

    def dataReceived(self, data):
        if self._over():
            return
        continued = self._midSince is not None
        amp.AMP.dataReceived(self, data)
        if continued or self._midMessage():
            self._midBytes += len(data)
        self._watchRate()

    def timeoutConnection(self):
        self._fail(ProtocolError(f"no message in {self.timeOut:g} seconds"))

    def _midMessage(self):
        """
        Whether the peer has begun a message it has not finished.
        """
        return bool(self._unprocessed) or self._currentBox is not None

    def _watchRate(self):
        """
        Time the peer while it is mid-message: a peer that trickles its
        messages in holds a session as surely as a silent one, and silence
        alone does not catch it.
        """
        if self._over() or not self.timeOut:
            return
        now = self._reactor.seconds()
        if not self._midMessage():
            if self._midSince is not None:
                self._midTime += now - self._midSince
                self._midSince = None
                self._rateCall.cancel()
                self._rateCall = None
        elif self._midSince is None:
            self._midSince = now
            self._rateCall = self.callLater(self.timeOut - self._midTime, self._checkRate)

    def _checkRate(self):
        """
        The peer has been mid-message for C{timeOut} seconds in all since
        the last check: drop it if it moved less than L{MIN_RATE} bytes a
        second meanwhile.
        """
        moved = self._midBytes
        if moved < MIN_RATE * self.timeOut:
            self._rateCall = None
            self._fail(
                ProtocolError(
                    f"{moved} bytes in {self.timeOut:g} seconds mid-message, "
                    f"less than {MIN_RATE} a second"
                )
            )
            return
        self._midTime = 0.0
        self._midBytes = 0
        self._midSince = self._reactor.seconds()
        self._rateCall = self.callLater(self.timeOut, self._checkRate)

    def connectionLost(self, reason):
        # What AMP's does but for its log line: "disconnected from" below
        # says more.
        amp.BinaryBoxProtocol.connectionLost(self, reason)
        self.transport = None
        self._move("lost")
        self.setTimeout(None)
        if self._rateCall is not None:
            self._rateCall.cancel()
            self._rateCall = None
        for call in (
            self._pinger,
            self._announceCall,
            self._noteCall,
            self._noteSoonCall,
            self._streamCall,
            self._notedCall,
        ):
            if call is not None and call.active():
                call.cancel()
        self.pending = {}
        if self._large is not None:
            self._large.discard()
            self._large = None
        if self.superseded is None and self.peerBoot is not None:
            # The peer may have ended this session before this end saw why.
            self.superseded = self.service.keptOver(self)
        if self.service is not None:
            self.service.sessionEnded(self)
        if self.failure is None and not self.succeeded and self.superseded is None:
            self.failure = f"{_describe(reason)} before the logs were in sync"
        self.reportEnd()
        if not self._handshaken.known:
            self._handshaken.settle(Failure(Exception(self.failure or self.superseded)))
        self._finished.settle(self.succeeded)

    @property
    def succeeded(self):
        """
        Whether both ends have caught up (the session may have ended since).
        """
        return self.sessionState.synced

    def whenHandshaken(self):
        """
        A new L{Deferred} that fires with this session once the peer has
        accepted our hello, or fails with why it never will.
        """
        return self._handshaken.wait()

    def whenFinished(self):
        """
        A new L{Deferred} that fires with L{succeeded} when the session ends.
        """
        return self._finished.wait()

    def supersede(self, why):
        """
        End the session, which another with the same peer replaces: no
        failure, C{why} said at info.
        """
        self.superseded = why
        self._close()
        if self.transport is not None:
            # After the answer to the hello being handled, if that is
            # what found the other session.
            self._reactor.callLater(0, self._hangUp)

    def _hangUp(self):
        if self.transport is not None:
            self.transport.loseConnection()

    def _fail(self, failure):
        """
        End the session for a reason worth logging.

        What a peer can cause (its error or refusal, a message that is not
        the protocol, a connection lost) is the one line the session's end
        logs; anything else is a fault of this node, logged now with its
        traceback.

        @param failure: an exception that breaks the protocol, or a
            L{Failure}.
        """
        # Once synced, a connection lost is how sessions end; anything else
        # is still a failure worth logging.
        lost = False
        if isinstance(failure, Exception):
            why = str(failure)
        else:
            error = failure.value
            lost = failure.check(ConnectionDone, ConnectionLost) is not None
            if isinstance(error, amp.RemoteAmpError):
                why = f"peer refused: {error.description}"
            elif lost and not self._handshaken.known:
                why = "the peer hung up before the handshake"
                if type(error) not in (ConnectionDone, ConnectionLost):
                    # A transport's own words, e.g. how a command ended.
                    why += f": {failure.getErrorMessage()}"
            elif (
                lost
                # The questions outstanding when the connection was lost
                # fail with why it was (a TLS alert, say), and AMP asks no
                # more after.
                or self._outstandingRequests is None
                # A peer's refusal or error comes as the exception its
                # command lists for that error code.
                or failure.check(Refused, ProtocolError, amp.TooLong)
            ):
                why = _describe(failure)
            else:
                self.log.failure(
                    "unexpected error in the sync with {peer}", failure, peer=self.peer
                )
                why = f"unexpected error: {_describe(failure)}"
        if self.failure is None and not (lost and self.succeeded) and self.superseded is None:
            self.failure = why
        self._close()
        if self.transport is not None:
            self.transport.loseConnection()

    # Hello

    @Hello.responder
    def hello(
        self, version, node, log, anyName, want=None, readOnly=False, stream=False, boot=None
    ):
        self._check("hello")
        chosen = self.service is None
        if chosen:
            # The peer's hello names the log this session serves.
            try:
                self.service = self._choose(want if want is not None else log, anyName)
            except Refused as e:
                self.failure = f"refused: {e}"
                raise
        why = None
        if version != PROTOCOL_VERSION:
            why = f"protocol version {version} is not {PROTOCOL_VERSION}: upgrade one end"
        elif node == self.service.identity:
            why = "that is this same node (the same log)"
        elif self._vouch is not None and (unvouched := self._vouch(node)) is not None:
            why = unvouched
        elif self.want is not None and log != self.want and not self.settings.anyName:
            # A forced command or a Subsystem line serves one log whatever
            # is asked for: not the one the user named.
            why = (
                f"the peer serves {log.decode('utf-8', 'replace')!r}, not "
                f"{self.want.decode('utf-8', 'replace')!r} as asked; give --any-name "
                "to sync with it anyway"
            )
        elif log != self.service.name and not (anyName or self.settings.anyName):
            why = (
                f"log names differ ({log.decode('utf-8', 'replace')!r} there, "
                f"{self.service.name.decode('utf-8', 'replace')!r} here); give "
                "--any-name to sync them anyway"
            )
        if why is not None:
            self.failure = f"refused: {why}"
            raise Refused(why)
        self._move("hello")
        self.peerNode = node
        self.peerReadOnly = bool(readOnly)
        self.streams = bool(stream) and self.settings.streams and not self.once
        if self.peerReadOnly:
            self.log.info("{peer} takes no adds from this node", peer=self.peer)
        if chosen:
            self._begin()
        if self.streams and boot is not None:
            self.peerBoot = boot
            self.service.joined(self)
        return {}

    def _helloAccepted(self, result):
        self._handshaken.settle(self)
        self._move("helloAccepted")
        if self.settings.keepalive:
            self.lastContact = self._reactor.seconds()
            self._keepalive()
        # Adds appended since the watcher last looked belong in the summary.
        self.service.changed()
        parts = encodeRanges(self.service.have)
        for i, part in enumerate(parts):
            self.callRemote(Have, ranges=part, last=i == len(parts) - 1).addErrback(
                self._fail
            )

    def _keepalive(self):
        """
        Ping the peer once it has been silent for the keepalive period, each
        time drawn up to a tenth longer: the two ends of an idle link do not
        both ping, the first ping heard sparing the other end its own.
        """
        self._pinger = None
        if self._over():
            return
        period = self.settings.keepalive * random.uniform(1.0, 1.1)
        silent = self._reactor.seconds() - self.lastContact
        if silent >= period:
            self.callRemote(Ping).addErrback(self._fail)
            silent = 0.0
        self._pinger = self._reactor.callLater(period - silent, self._keepalive)

    @Ping.responder
    def ping(self):
        return {}

    # Learning what the peer has, and asking for what we lack

    @Have.responder
    def have(self, ranges, last):
        self._move("have")
        self._summaryBytes += len(ranges)
        if self._summaryBytes > self.settings.maxSummary:
            raise Refused(
                f"a summary longer than {self.settings.maxSummary} bytes (--max-summary)"
            )
        # Each part costs time linear in its length; they are put together
        # once all are in, in time linear in their total whatever their
        # order, as long as they do not overlap.
        for by, held in decodeRanges(ranges).items():
            self._summary.setdefault(by, []).append(held)
            self._summaryRanges += held.rangeCount()
        if len(self._summary) > _MAX_ORIGINS:
            raise Refused(f"a summary of more than {_MAX_ORIGINS} origins")
        if self._summaryRanges > self._maxRanges():
            raise Refused(
                f"a summary of more than {self._maxRanges()} ranges (--max-summary)"
            )
        if last:
            self._move("lastHave")
            parts, self._summary = self._summary, {}
            # Until the summary is taken in, the session has not caught up.
            self._requests += 1
            self._reactor.callLater(0, self._inTurns, self._takeSummary(parts))
        return {}

    def _maxRanges(self):
        """
        How many ranges the peer may hold, by its summary and announcements.
        """
        return self.settings.maxSummary // _RANGE_BYTES

    def _inTurns(self, steps):
        """
        Run C{steps}, a generator, up to its next C{yield} now and from
        each C{yield} to the next in later turns of the reactor, while the
        session lasts.
        """
        if self._over():
            return
        if next(steps, _done) is not _done:
            self._reactor.callLater(0, self._inTurns, steps)

    def _takeSummary(self, parts):
        """
        Put the peer's summary together a slice of origins at a time, say
        how much of it the log lacks, then ask for that.

        @param parts: each origin's L{Intervals}, one for each C{Have}.
        """
        for i, (taken, _) in enumerate(
            _slices(parts.items(), lambda item: sum(part.rangeCount() for part in item[1]))
        ):
            if i:
                yield
            for by, pieces in taken:
                held = gather(pieces)
                # The parts are no longer needed: less for the memory and
                # for the garbage collector's passes.
                pieces.clear()
                mine = self.peerHave.get(by)
                if mine is None:
                    # Gathered afresh: the peer's now, without a copy.
                    self.peerHave[by] = held
                else:
                    mine.update(held)
                self._peerRanges += held.rangeCount()
        # The next pass over what the peer holds says how much the log lacks.
        self._counting = True
        self._requests -= 1
        if self.streamsFrom():
            # The peer's own adds are streamed from it from the start, even
            # before it has written any.
            self.service.offered(self, [self.peerNode, *self.peerHave])
        self.requestMissing()

    @Announce.responder
    def announce(self, ranges):
        self._move("announce")
        announced = decodeRanges(ranges)
        self._hold(announced)
        self._want(announced)
        self._checkCaughtUp()
        return {}

    def _hold(self, more):
        """
        Add C{more} to what the peer holds, within the limits of a summary.

        @raise Refused: if the peer would hold more origins or ranges than
            a summary may name.
        """
        before = sum(self.peerHave[by].rangeCount() for by in more if by in self.peerHave)
        merge(self.peerHave, more)
        self._peerRanges += sum(self.peerHave[by].rangeCount() for by in more) - before
        if len(self.peerHave) > _MAX_ORIGINS:
            raise Refused(f"announcements of more than {_MAX_ORIGINS} origins")
        if self._peerRanges > self._maxRanges():
            raise Refused(
                f"a summary and announcements of more than {self._maxRanges()} ranges"
                " (--max-summary)"
            )

    def requestMissing(self):
        """
        Ask the peer for what it has that the log lacks and no session is
        already fetching, a slice of origins a turn of the reactor.
        """
        if not self.sessionState.summarised or self._over():
            return
        if self.readOnly and not self._counting:
            # This peer may not add to the log: ask it for nothing.
            self._checkCaughtUp()
            return
        if self._seeking:
            self._seekAgain = True
            return
        self._seeking = True
        # Until the pass is over, the session has not caught up.
        self._requests += 1
        self._inTurns(self._seekMissing())

    def _seekMissing(self):
        """
        Ask for what the peer holds that the log lacks, a slice of origins
        (or of one origin's ranges) a step, and again from the start if
        asked to meanwhile.
        """
        while True:
            self._seekAgain = False
            counting, self._counting = self._counting, False
            lacking = 0
            pieces = self._pieces(list(self.peerHave.items()))
            for i, (taken, _) in enumerate(_slices(pieces, lambda item: item[1].rangeCount())):
                if i:
                    yield
                lacking += self._want(dict(taken))
            if counting:
                self.expected = lacking
                self.log.info(
                    "{peer} has {adds} that {log} lacks",
                    peer=self.peer,
                    count=lacking,
                    adds=counted(lacking, "add"),
                    log=self.service.name.decode("utf-8", "replace"),
                )
            if not self._seekAgain:
                break
            yield
        self._seeking = False
        self._requests -= 1
        self._checkCaughtUp()

    @staticmethod
    def _pieces(items):
        """
        Each origin's ranges in C{items} in pieces of at most L{_SLICE}:
        what one turn of the reactor may work on.
        """
        for by, held in items:
            for piece in held.chunks(_SLICE):
                yield by, piece

    def _want(self, held):
        """
        Ask for what of C{held}, ranges the peer holds, the log lacks and
        no session is already fetching.

        @return: how many adds of C{held} the log lacks.
        """
        lacking = difference(held, self.service.have)
        if self.readOnly:
            # This peer may not add to the log: ask it for nothing.
            return count(lacking)
        now = lacking
        if self.streams:
            # What another session streams to this node, that stream gets
            # a while to bring (docs/protocol.md, "Many nodes").
            sourceOf = self.service.sourceOf
            now, later = {}, {}
            for by, held in lacking.items():
                source = sourceOf(by)
                (now if source is None or source is self else later)[by] = held
            if later:
                self._fetchLater(later)
        self._fetch(self.service.unclaimed(now))
        return count(lacking)

    def _fetch(self, wanted):
        """
        Ask for C{wanted}, adds no session is fetching: they are pending
        for this session until the peer answers.
        """
        if wanted:
            merge(self.pending, wanted)
            self.service.claimsChanged()
            # Until every part is asked for, the session has not caught up.
            self._requests += 1
            self._request(rangeParts(wanted))

    def _fetchLater(self, held):
        """
        Fetch what of C{held}, adds the peer holds, the log still lacks
        after L{SessionSettings.switchDelay} seconds, and stream their
        origins from this peer from then on.
        """
        merge(self._noted, held)
        if self._notedCall is None or not self._notedCall.active():
            # Until the check is done, the session has not caught up.
            self._requests += 1
            self._notedCall = self._reactor.callLater(self.settings.switchDelay, self._checkNoted)

    def _request(self, parts):
        """
        Ask for the next of C{parts}, and for the rest in later turns of
        the reactor: a peer that holds many ranges this log lacks may not
        keep the reactor from others while they are encoded.
        """
        if self._over():
            return
        part = next(parts, None)
        if part is None:
            self._requests -= 1
            self._checkCaughtUp()
            return
        value, named = part
        self._requests += 1
        d = self.callRemote(Request, ranges=value)
        d.addCallback(self._requestAnswered, named)
        d.addErrback(self._fail)
        self._reactor.callLater(0, self._request, parts)

    def _requestAnswered(self, result, asked):
        self._requests -= 1
        for by, held in asked.items():
            mine = self.pending.get(by)
            if mine is not None:
                left = mine.difference(held)
                if left.ranges():
                    self.pending[by] = left
                else:
                    del self.pending[by]
        self.service.claimsChanged()
        # What the peer could not send (damaged on its disk) is not asked
        # again on this connection: it no longer counts as held there.
        lacking = difference(asked, self.service.have)
        if lacking:
            self.log.warn(
                "{peer} did not send {adds} it said it held",
                peer=self.peer,
                count=count(lacking),
                adds=counted(count(lacking), "add"),
            )
            for by, held in lacking.items():
                self.peerHave[by] = self.peerHave[by].difference(held)
        self.service.released()
        self._checkCaughtUp()

    def _checkCaughtUp(self):
        if self.sessionState.had is not Had.SUMMARY or self._requests:
            return
        self._move("caughtUp")
        self.log.info(
            "{log} has caught up with {peer} ({adds} received)",
            log=self.service.name.decode("utf-8", "replace"),
            peer=self.peer,
            count=self.received,
            adds=counted(self.received, "add"),
        )
        self.callRemote(Synced).addErrback(self._fail)
        self._checkDone()

    @Synced.responder
    def synced(self):
        already = self.succeeded
        self._move("peerSynced")
        self.log.info("{peer} has caught up", peer=self.peer)
        if not already:
            self._checkDone()
        return {}

    def _checkDone(self):
        """
        Both ends may have just caught up: if they have, say so, and end a
        session that was to sync once.
        """
        if self.succeeded:
            self.log.info(
                "synced with {peer}: {adds} received, {sent} sent",
                peer=self.peer,
                received=self.received,
                adds=counted(self.received, "add"),
                sent=self.sent,
            )
            if self.once:
                self.transport.loseConnection()

    # Receiving adds

    def _received(self, data):
        if self.readOnly:
            raise Refused("this peer may only read this log")
        d = self.service.receive(data, source=self)
        return d.addCallback(self._account, len(data))

    def _account(self, result, size):
        """
        Note what the peer holds and what it sent, C{size} bytes of lines.
        """
        corrupt = result.corrupt
        self.badAdds += corrupt
        peerHave = self.peerHave
        if result.spans is not None:
            addSpans(peerHave, result.spans)
        else:
            for by, start, end in runs(result.held):
                held = peerHave.get(by)
                if held is None:
                    held = peerHave[by] = Intervals()
                if not held.covers(start, end):
                    held.addRange(start, end)
        if corrupt:
            self.log.warn(
                "dropped {count} corrupt adds from {peer}", count=corrupt, peer=self.peer
            )
        self.received += result.count
        self.receivedBytes += size
        if self._progress is not None:
            self._progress(self)

    @Adds.responder
    def adds(self, lines):
        return self._received(lines).addCallback(lambda ignored: {})

    @AddBegin.responder
    def addBegin(self, size):
        if self.readOnly:
            raise Refused("this peer may only read this log")
        if self._large is not None:
            self._refuseLarge("a large add inside another")
        if size < 0 or size > self.service.maxAddSize:
            raise ProtocolError(f"an add of {size} bytes is larger than allowed")
        # Spooled to a file as it comes: the add is never held in memory.
        try:
            self._large = self.service.log.incoming(size)
        except LogError as e:
            raise Refused(f"cannot take a large add: {e}") from None
        self._largeParts = 0
        return {}

    @AddPart.responder
    def addPart(self, data):
        if self._large is None:
            raise ProtocolError("a part outside a large add")
        self._largeParts += 1
        if not data or self._largeParts > 1 + self._large.size // _MIN_PART:
            self._refuseLarge("a large add in too many parts")
        try:
            self._large.write(data)
        except CorruptLine as e:
            self._refuseLarge(f"a damaged large add ({e})")
        return {}

    @AddEnd.responder
    def addEnd(self):
        if self._large is None:
            raise ProtocolError("the end of a large add never begun")
        incoming, self._large = self._large, None
        try:
            incoming.finish()
        except CorruptLine as e:
            incoming.discard()
            self.badAdds += 1
            raise ProtocolError(f"a damaged large add ({e})") from None
        # Copied in a piece at a time, while the reactor serves others.
        d = self.service.receiveIncoming(incoming, source=self)

        def copied(result):
            self._account(result, incoming.size)
            return {}

        def cleanUp(passed):
            incoming.discard()
            return passed

        return d.addBoth(cleanUp).addCallback(copied)

    def _refuseLarge(self, why):
        """
        Drop the large add being received, and end the session.
        """
        self._large.discard()
        self._large = None
        self.badAdds += 1
        raise ProtocolError(why)

    # Sending adds

    @Request.responder
    def request(self, ranges):
        return self._sender.request(decodeRanges(ranges)).addCallbacks(
            lambda sent: {"sent": sent}, self._requestCut
        )

    def _requestCut(self, failure):
        """
        The connection was lost while a request was answered: the session's
        end says so, and no answer can go; anything else goes to AMP.
        """
        failure.trap(ConnectionDone, ConnectionLost)
        return {"sent": self.sent}

    @property
    def sent(self):
        """
        How many adds this session has sent.
        """
        return self._sender.sent

    # Announcing new adds

    def localAdds(self, added):
        """
        The log has new adds, C{added}, ranges by origin: announce those
        the peer lacks (version 2: push or note them).
        """
        # Until the summary has gone, it carries the new adds itself.
        if (
            self.sessionState.gave not in (Gave.SUMMARY, Gave.CAUGHT_UP)
            or self._over()
            or self.peerReadOnly
        ):
            return
        if self.streams:
            self._streamOrNote(added)
            return
        peerHave = self.peerHave
        for by, new in added.items():
            held = peerHave.get(by)
            if held is not None:
                new = new.difference(held)
            heldBy(self._announce, by).update(new)
        if self._announce and (self._announceCall is None or not self._announceCall.active()):
            self._announceCall = self._reactor.callLater(0, self._sendAnnouncements)

    def _sendAnnouncements(self):
        announce, self._announce = self._announce, {}
        if self._over():
            return
        for part in encodeRanges(announce):
            self.callRemote(Announce, ranges=part).addErrback(self._fail)

    # Version 2: streams and notes (docs/protocol.md, "Many nodes")

    def streamsFrom(self):
        """
        Whether this session may stream origins from its peer.
        """
        return self.streams and not self.readOnly and not self._over()

    def _streamOrNote(self, added):
        """
        New adds of the log, ranges by origin: push those of the origins
        the peer streams from this node, and note the rest on the next tick
        (at once for an origin the peer is not known to hold any of).
        """
        peerHave = self.peerHave
        txStreams = self.txStreams
        txQuiet = self.txQuiet
        pushed = {}
        for by, new in added.items():
            if by in txQuiet:
                # Kept back: what the peer lacks of it is worked out when
                # it is noted (see _noteLacking).
                self._quietGained.add(by)
                continue
            held = peerHave.get(by)
            if held is not None:
                new = new.difference(held)
                if not new.rangeCount():
                    continue
            if by in txStreams:
                pushed[by] = new
                continue
            heldBy(self._notes, by).update(new)
            if held is None and by not in self._told:
                # An origin the peer may not have heard of: it learns of
                # it now, and can stream it.
                self._noteAtOnce([by])
        if self._notes or self._quietGained:
            self._noteLater()
        if pushed:
            self._sender.push(pushed)

    def pushFailed(self, failure):
        """
        Pushing adds to the peer failed: end the session.
        """
        self._fail(failure)

    def _noteLater(self):
        """
        Tick the note timer a period from now, unless it is ticking: it
        ticks while there is something to note (kept back or not), and an
        idle session does not wake for it.
        """
        if self._noteCall is None or not self._noteCall.active():
            period = self.settings.notePeriod
            self._noteCall = self._reactor.callLater(
                period * random.uniform(0.8, 1.2), self._noteTick
            )

    def _noteTick(self):
        if self._over():
            return
        self._ticks += 1
        pulse = self._ticks % QUIET_TICKS == 0
        if pulse:
            gained, self._quietGained = self._quietGained, set()
            self._noteLacking(gained)
        self._sendNotes(list(self._notes), pulse=pulse)
        if self._notes or self._quietGained:
            self._noteLater()

    def _noteAtOnce(self, origins):
        self._noteSoon.update(origins)
        if self._noteSoonCall is None or not self._noteSoonCall.active():
            self._noteSoonCall = self._reactor.callLater(0, self._noteSoonTick)

    def _noteSoonTick(self):
        origins, self._noteSoon = self._noteSoon, set()
        if not self._over():
            self._sendNotes(origins)

    def _sendNotes(self, origins, pulse=False):
        """
        Note to the peer what the log gained of C{origins} that the peer is
        not known to hold; with C{pulse}, of those it asked not to be noted
        too.
        """
        noting = {}
        quiet = () if pulse else self.txQuiet
        for by in origins:
            if by in quiet:
                # Kept, and noted if the peer asks for notes again.
                continue
            held = self._notes.pop(by, None)
            if held is None:
                continue
            peerHeld = self.peerHave.get(by)
            if peerHeld is not None:
                held = held.difference(peerHeld)
            if held.ranges():
                noting[by] = held
                self._told.add(by)
        if noting:
            for part in encodeRanges(noting):
                self.callRemote(Note, ranges=part).addErrback(self._fail)

    def stream(self, by, on, quiet=False):
        """
        Ask the peer to stream origin C{by} to this node, or to stop; and,
        stopped, with C{quiet}, not to note it either.
        """
        if quiet:
            self.rxQuiet.add(by)
        else:
            self.rxQuiet.discard(by)
        self._streamChanges[by] = (on, quiet and not on)
        if self._streamCall is None or not self._streamCall.active():
            self._streamCall = self._reactor.callLater(0, self._sendStreams)

    def _sendStreams(self):
        changes, self._streamChanges = self._streamChanges, {}
        if self._over():
            return
        for on, quiet in ((False, True), (False, False), (True, False)):
            origins = [by for by, wanted in changes.items() if wanted == (on, quiet)]
            arguments = {"quiet": True} if quiet else {}
            for part in encodeOrigins(origins):
                self.callRemote(Stream, origins=part, on=on, **arguments).addErrback(
                    self._fail
                )

    @Stream.responder
    def streamAsked(self, origins, on, quiet=False):
        if not self.streams:
            raise ProtocolError("a Stream from a peer that did not say it streams")
        self._move("stream")
        named = decodeOrigins(origins)
        if not on:
            self.streamsStopped += len(self.txStreams.intersection(named))
            self.txStreams.difference_update(named)
            if quiet:
                if len(self.txQuiet.union(named)) > _MAX_ORIGINS:
                    raise Refused(f"quiet on more than {_MAX_ORIGINS} origins")
                self.txQuiet.update(named)
            else:
                # Noted again: what was kept back goes now.
                loud = self.txQuiet.intersection(named)
                self.txQuiet.difference_update(loud)
                if loud:
                    self._quietGained.difference_update(loud)
                    self._noteLacking(loud)
                    self._noteAtOnce(loud)
            return {}
        if len(self.txStreams.union(named)) > _MAX_ORIGINS:
            raise Refused(f"streams of more than {_MAX_ORIGINS} origins")
        self.txQuiet.difference_update(named)
        self._quietGained.difference_update(named)
        self.txStreams.update(named)
        # What the log holds of them that the peer is not known to, it
        # learns now (and asks for); what comes from now on is pushed.
        self._noteLacking(named)
        self._sendNotes(named)
        return {}

    def _noteLacking(self, origins):
        """
        Note, when the session next notes them, all that the log holds of
        C{origins} that the peer is not known to hold.
        """
        have = self.service.have
        for by in origins:
            held = have.get(by)
            if held is not None:
                peerHeld = self.peerHave.get(by)
                lacking = held if peerHeld is None else held.difference(peerHeld)
                if lacking.rangeCount():
                    heldBy(self._notes, by).update(lacking)

    @Note.responder
    def note(self, ranges):
        if not self.streams:
            raise ProtocolError("a Note from a peer that did not say it streams")
        self._move("note")
        noted = decodeRanges(ranges)
        self._hold(noted)
        if not self.readOnly:
            self.service.noted(self, noted)
            self._want(noted)
        self._checkCaughtUp()
        return {}

    def _checkNoted(self):
        """
        The peer said it holds adds that another peer streams to this node:
        those the stream has not brought yet are fetched from this peer,
        and their origins streamed from it from now on.
        """
        noted, self._noted = self._noted, {}
        if self._over():
            return
        self._requests -= 1
        lacking = self.service.unclaimed(difference(noted, self.service.have))
        for by in lacking:
            self.service.switchSource(by, self)
        self._fetch(lacking)
        self._checkCaughtUp()

    # What a session says of itself, and what it has moved: the daemon's
    # peer services (gossip.transport.reach) say their sessions' start and
    # end in their own way, once for many attempts, and its control port
    # (gossip.control) shows the rest.

    # Adds (and their bytes) the peer has acknowledged writing: what
    # actually moved, even when the session dies mid-transfer.
    acked = 0
    ackedBytes = 0
    # Origins this node streamed to the peer until the peer asked it to
    # stop (their stream moved elsewhere).
    streamsStopped = 0
    # When the peer's last whole message came (a ping or an answer to one,
    # at least), by the session's reactor's clock.
    lastContact = None
    _partBytes = 0

    def makeConnection(self, transport):
        # AMP's logs a line of its own for every connection, even an attempt
        # that fails at once: reportConnected says what is worth saying.
        amp.BinaryBoxProtocol.makeConnection(self, transport)

    def reportConnected(self):
        """
        Say that the session's connection is made.
        """
        self.log.info("connected to {peer}", peer=self.peer)

    def reportEnd(self):
        """
        Say, in one line, how the session ended, and what it moved.
        """
        if self.superseded is not None:
            emit, why = self.log.info, self.superseded
            text = "left the session with {peer}: {why} ({adds} received, {sent} sent)"
        elif self.failure is not None:
            emit, why = self.log.error, self.failure
            text = "sync with {peer} failed: {why} ({adds} received, {sent} sent)"
        else:
            emit, why = self.log.info, None
            text = "disconnected from {peer}: {adds} received, {sent} sent"
        emit(
            text,
            peer=self.peer,
            why=why,
            received=self.received,
            adds=counted(self.received, "add"),
            sent=self.acked,
        )

    def callRemote(self, command, **arguments):
        d = amp.AMP.callRemote(self, command, **arguments)
        if command is Adds:
            lines = arguments["lines"]
            d.addCallback(self._moved, lines.count(b"\n") + (not lines.endswith(b"\n")), len(lines))
        elif command is AddPart:
            d.addCallback(self._moved, 0, len(arguments["data"]))
        elif command is AddEnd:
            d.addCallback(self._moved, 1, 0)
        else:
            d.addCallback(self._moved, 0, 0)
        return d

    def _moved(self, result, adds, size):
        self.acked += adds
        if adds:
            self.ackedBytes += self._partBytes + size
            self._partBytes = 0
        else:
            self._partBytes += size
        return result

    @property
    def caughtUp(self):
        """
        Whether both ends hold all the other has said it holds, and nothing
        is being fetched.
        """
        return self.succeeded and not self.pending and not self._requests

    def lag(self):
        """
        How far apart the two logs are, from the peer's summary and
        announcements and what has moved since.

        @return: the adds the peer lacks that the log holds, and the adds
            the log lacks that the peer holds.
        """
        if self.service is None or not self.sessionState.summarised:
            return None, None
        have = self.service.have
        return count(difference(have, self.peerHave)), count(difference(self.peerHave, have))
