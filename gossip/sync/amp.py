# -*- test-case-name: tests.test_protocol -*-
"""
The sync protocol's messages: its AMP commands and errors, and the codec of
the summaries and announcements that say which adds a node holds.

docs/protocol.md describes them; L{gossip.sync.protocol} is the session
that speaks them.
"""

import re

from twisted.protocols import amp

from gossip.store.intervals import Intervals

__all__ = [
    "PROTOCOL_VERSION",
    "VALUE_LIMIT",
    "AddBegin",
    "AddEnd",
    "AddPart",
    "Adds",
    "Announce",
    "Have",
    "Hello",
    "Note",
    "Ping",
    "ProtocolError",
    "Refused",
    "Request",
    "Stream",
    "Synced",
    "decodeOrigins",
    "decodeRanges",
    "encodeOrigins",
    "encodeRanges",
    "rangeParts",
]

PROTOCOL_VERSION = 1

# AMP allows 65,535 bytes a value; leave room for nothing else to matter.
VALUE_LIMIT = 60000
# A value of ranges: lines of an origin in hex and its ranges, each number
# short enough to read in constant time and below 2**64 (no serial reaches 2**63).
ORIGINS = re.compile(rb"(?:[0-9a-fA-F]*\n)*")
RANGES = re.compile(rb"(?:[0-9a-fA-F]* [0-9]{1,19}-[0-9]{1,19}(?:,[0-9]{1,19}-[0-9]{1,19})*\n)*")


class Refused(Exception):
    """
    The peer will not sync: another protocol version, another log, itself.
    """


class ProtocolError(Exception):
    """
    The peer sent something that breaks the protocol.
    """


ERRORS = {Refused: b"REFUSED", ProtocolError: b"PROTOCOL_ERROR"}
# Either ends the session once answered.
FATAL = ERRORS


class Hello(amp.Command):
    """
    Who I am and which log I hold.
    """

    arguments = [
        (b"version", amp.Integer()),
        (b"node", amp.String()),
        (b"log", amp.String()),
        (b"anyName", amp.Boolean()),
        (b"want", amp.String(optional=True)),
        (b"readOnly", amp.Boolean(optional=True)),
        # Version 2's streams: a version-1 peer leaves it out, and ignores it.
        (b"stream", amp.Boolean(optional=True)),
        # With stream: names this process, among the node's (see
        # LogService.joined).
        (b"boot", amp.String(optional=True)),
    ]
    response = []
    errors = ERRORS
    fatalErrors = FATAL


class Have(amp.Command):
    """
    One part of the summary of what I hold; the last part says so.
    """

    arguments = [(b"ranges", amp.String()), (b"last", amp.Boolean())]
    response = []
    errors = ERRORS
    fatalErrors = FATAL


class Announce(amp.Command):
    """
    I now also hold these adds.
    """

    arguments = [(b"ranges", amp.String())]
    response = []
    errors = ERRORS
    fatalErrors = FATAL


class Stream(amp.Command):
    """
    Push me the new adds of these origins as you get them (C{on}), or stop;
    stopped, with C{quiet}, do not note them to me either (their writer
    streams them to me), until told otherwise.
    """

    arguments = [
        (b"origins", amp.String()),
        (b"on", amp.Boolean()),
        (b"quiet", amp.Boolean(optional=True)),
    ]
    response = []
    errors = ERRORS
    fatalErrors = FATAL


class Note(amp.Command):
    """
    I now also hold these adds (a lazy link's periodic word, not a request
    to fetch them at once).
    """

    arguments = [(b"ranges", amp.String())]
    response = []
    errors = ERRORS
    fatalErrors = FATAL


class Request(amp.Command):
    """
    Send me these adds; answered once they have all been sent and answered.
    """

    arguments = [(b"ranges", amp.String())]
    response = [(b"sent", amp.Integer())]
    errors = ERRORS
    fatalErrors = FATAL


class Adds(amp.Command):
    """
    Raw log lines, LF included; answered once they are in the log.
    """

    arguments = [(b"lines", amp.String())]
    response = []
    errors = ERRORS
    fatalErrors = FATAL


class AddBegin(amp.Command):
    """
    One add too large for one value follows in parts, C{size} bytes in all.
    """

    arguments = [(b"size", amp.Integer())]
    response = []
    errors = ERRORS
    fatalErrors = FATAL


class AddPart(amp.Command):
    """
    The next part of the large add.
    """

    arguments = [(b"data", amp.String())]
    response = []
    errors = ERRORS
    fatalErrors = FATAL


class AddEnd(amp.Command):
    """
    The large add is complete; answered once it is in the log.
    """

    arguments = []
    response = []
    errors = ERRORS
    fatalErrors = FATAL


class Synced(amp.Command):
    """
    I hold everything your summary said you held.
    """

    arguments = []
    response = []
    errors = ERRORS
    fatalErrors = FATAL


class Ping(amp.Command):
    """
    I am still here.
    """

    arguments = []
    response = []
    errors = ERRORS
    fatalErrors = FATAL


# Every command a peer may send, by the name it goes by on the wire.
COMMANDS = {
    command.commandName: command
    for command in (
        Hello,
        Have,
        Announce,
        Stream,
        Note,
        Request,
        Adds,
        AddBegin,
        AddPart,
        AddEnd,
        Synced,
        Ping,
    )
}


def encodeRanges(have, limit=VALUE_LIMIT):
    """
    Encode per-origin L{Intervals} as values of at most C{limit} bytes.

    Each value is lines of C{HEX(by) SP start-end,start-end...}; an origin
    whose ranges do not fit in one value continues on a line of the next.

    @return: a list of values, at least one (possibly empty).
    """
    return [value for value, named in rangeParts(have, limit)] or [b""]


def rangeParts(have, limit=VALUE_LIMIT):
    """
    Encode per-origin L{Intervals} as L{encodeRanges} does, a value at a
    time, so that a caller can let others run between values.

    @return: an iterator of C{(value, named)}, where C{named} maps each
        origin to the L{Intervals} that the value names; nothing when
        C{have} names nothing.
    """
    lines = []
    named = {}
    size = 0
    for by, held in have.items():
        origin = by.hex().encode("ascii") + b" "
        if len(origin) + 4 > limit:
            raise ValueError("an origin too long to encode")
        taken, starts, ends = [], [], []
        # The bytes this origin's line would add to the value: its origin,
        # its ranges, a comma or LF after each.
        used = len(origin)
        for pair in held.iterRanges():
            text = b"%d-%d" % pair
            if size + used + len(text) + 1 > limit:
                if not (taken or lines):
                    raise ValueError("a range too long to encode")
                if taken:
                    lines.append(origin + b",".join(taken) + b"\n")
                    named[by] = Intervals.fromPairs(starts, ends)
                yield b"".join(lines), named
                lines, named, size = [], {}, 0
                taken, starts, ends = [], [], []
                used = len(origin)
            taken.append(text)
            starts.append(pair[0])
            ends.append(pair[1])
            used += len(text) + 1
        if taken:
            lines.append(origin + b",".join(taken) + b"\n")
            size += used
            named[by] = Intervals.fromPairs(starts, ends)
    if lines:
        yield b"".join(lines), named


def decodeRanges(value):
    """
    Decode one value written by L{encodeRanges}, in time linear in its
    length whatever the order of its ranges.

    @raise ProtocolError: if it is malformed.
    """
    if RANGES.fullmatch(value) is None:
        raise ProtocolError("malformed ranges")
    pairs = {}
    for line in value.split(b"\n")[:-1]:
        origin, ranges = line.split(b" ")
        try:
            by = bytes.fromhex(origin.decode("ascii"))
        except ValueError:
            raise ProtocolError("malformed ranges") from None
        numbers = pairs.setdefault(by, [])
        numbers += map(int, ranges.replace(b"-", b",").split(b","))
    return {
        by: Intervals.fromPairs(numbers[0::2], numbers[1::2]) for by, numbers in pairs.items()
    }


def encodeOrigins(origins, limit=VALUE_LIMIT):
    """
    Encode origins, one hex line each, as values of at most C{limit} bytes.

    @return: a list of values, none empty.
    """
    values, lines, size = [], [], 0
    for by in origins:
        line = by.hex().encode("ascii") + b"\n"
        if len(line) > limit:
            raise ValueError("an origin too long to encode")
        if size + len(line) > limit:
            values.append(b"".join(lines))
            lines, size = [], 0
        lines.append(line)
        size += len(line)
    if lines:
        values.append(b"".join(lines))
    return values


def decodeOrigins(value):
    """
    Decode one value written by L{encodeOrigins}.

    @return: a list of origins.
    @raise ProtocolError: if it is malformed.
    """
    if ORIGINS.fullmatch(value) is None:
        raise ProtocolError("malformed origins")
    try:
        return [bytes.fromhex(line.decode("ascii")) for line in value.split(b"\n")[:-1]]
    except ValueError:
        raise ProtocolError("malformed origins") from None
