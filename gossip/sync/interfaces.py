# -*- test-case-name: tests.test_service -*-
"""
The seams of a sync: what a session needs of the service of its log, and
what that service needs of each of its sessions.
"""

from zope.interface import Attribute, Interface

__all__ = ["ILogService", "ISyncSession"]


class ILogService(Interface):
    """
    One log as its sync sessions share it: what it holds, where its adds
    are, and the sessions that fetch for it.

    Ranges of adds are given as dicts that map each origin's C{by} to the
    L{gossip.store.intervals.Intervals} of its serials.
    """

    reactor = Attribute("The reactor (an IReactorTime) the sessions run on.")
    identity = Attribute("The log's node identity (bytes), once started.")
    name = Attribute("The log's name (bytes), which peers must share.")
    have = Attribute("The adds the log holds, by origin.")
    maxAddSize = Attribute("The largest add in bytes that a peer may send.")
    boot = Attribute(
        "This service's name for its peers (bytes), new in each process: a "
        "session's hello says it."
    )
    log = Attribute(
        "The gossip.store.logfile.Log, whose incoming(size) spools a large "
        "add from a peer."
    )

    def sessionStarted(session):
        """
        C{session}, an L{ISyncSession}, has begun: tell it of new adds.
        """

    def sessionEnded(session):
        """
        C{session} has ended: what it was fetching, others may now fetch.
        """

    def joined(session):
        """
        C{session}'s peer has said hello: if another session links this
        service with the same service of the peer, end one of the two.
        """

    def keptOver(session):
        """
        Why C{session}, ending, gave way to another session with the same
        peer service, or L{None} if it did not.
        """

    def changed():
        """
        The log may hold adds the service has not read: read them, and tell
        the sessions.
        """

    def unclaimed(wanted):
        """
        Those of the adds C{wanted} that no session is already fetching.
        """

    def claimsChanged():
        """
        What the sessions are fetching changed: tell other processes on the
        log, so they fetch something else.
        """

    def released():
        """
        A session's requests ended: others may now fetch what it did not.
        """

    def receive(lines, source=None):
        """
        Append what the log lacks of C{lines}, raw lines from a peer, and
        tell the sessions but C{source}.

        @return: the L{gossip.store.logfile.Received}.
        """

    def receiveIncoming(incoming, source=None):
        """
        Append a large add from a peer, spooled by C{log.incoming}, unless
        the log holds it, and tell the sessions but C{source}.

        @return: the L{gossip.store.logfile.Received}.
        """

    def linesFor(wanted):
        """
        The lines of the adds C{wanted}, read from the log.

        @return: an iterator, one item for each stretch of the log read:
            a list of C{(line, (by, at))}, LF included, perhaps empty, or a
            L{gossip.store.logfile.Stretch} of adds that are all wanted.
        """

    def sourceOf(by):
        """
        The session that streams origin C{by} to this node (version 2), or
        L{None}.
        """

    def offered(session, origins, summary=True):
        """
        C{session}'s peer holds adds of C{origins}, by its summary (or
        wrote them): stream from it those that no session streams, or that
        it is the better source of.
        """

    def noted(session, noted):
        """
        C{session}'s peer notes that it holds C{noted}: stream from it the
        origins no session streams, and those it wrote.
        """

    def switchSource(by, session):
        """
        Stream origin C{by} from C{session}, and from no other.
        """

    def readLine(line, start, length):
        """
        C{length} bytes from C{start} on of a
        L{gossip.store.logfile.LargeLine} that L{linesFor} gave.
        """


class ISyncSession(Interface):
    """
    A sync session with one peer, as the service of its log sees it.
    """

    pending = Attribute(
        "The adds, by origin, that this session has asked its peer for and "
        "not yet had answered."
    )
    peerNode = Attribute("The peer's node identity, once its hello is accepted.")
    peerHave = Attribute("The adds, by origin, that the peer is known to hold.")
    peerBoot = Attribute(
        "The name of the peer's service, from its hello, if the session lasts "
        "and streams; else None."
    )
    dialled = Attribute("Whether this end made the connection.")
    superseded = Attribute(
        "Why the session ended for another with the same peer, or None."
    )

    def supersede(why):
        """
        End the session, which another with the same peer replaces.
        """

    def streamsFrom():
        """
        Whether origins may be streamed from this session's peer (both ends
        speak version 2, and the peer may add to the log).
        """

    rxQuiet = Attribute(
        "The origins this session asked its peer not to note (their writer "
        "streams them here)."
    )

    def stream(by, on, quiet=False):
        """
        Ask the peer to stream origin C{by} to this node, or to stop; and,
        stopped, with C{quiet}, to note it only now and then.
        """

    def localAdds(added):
        """
        The log has new adds, ranges by origin (not to be changed or kept):
        announce, push or note those the peer lacks.
        """

    def requestMissing():
        """
        Ask the peer for what it has that the log lacks and no session is
        already fetching.
        """
