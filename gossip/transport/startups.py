# -*- test-case-name: tests.test_startups -*-
"""
Limits on connections that have not yet authenticated, as OpenSSH's
C{MaxStartups start:rate:full} and C{PerSourceMaxStartups} have them, so
that a flood from one address cannot lock out peers from others.
"""

import ipaddress
import random

import attrs
from twisted.logger import Logger

__all__ = [
    "DEFAULT_MAX_STARTUPS",
    "DEFAULT_PER_SOURCE",
    "MaxStartups",
    "RefusalLog",
    "Startup",
    "Startups",
    "TRY_LATER",
    "TRY_LATER_FROM_YOU",
    "source",
]

log = Logger()

# A peer that is refused reads this in its SSH client.
TRY_LATER = "too many unauthenticated connections; try again later"
TRY_LATER_FROM_YOU = "too many unauthenticated connections from your address; try again later"


@attrs.frozen
class MaxStartups:
    """
    When to refuse a new unauthenticated connection: never while fewer
    than C{start} are open, with probability C{rate} percent at C{start},
    rising linearly to certainty at C{full}.
    """

    start = attrs.field()
    rate = attrs.field()
    full = attrs.field()

    @classmethod
    def parse(cls, text):
        """
        Parse C{START:RATE:FULL}, or C{N} (refuse beyond N, as C{N:100:N}).

        @raise ValueError: with a one-line message, if C{text} is neither.
        """
        fields = text.split(":")
        if len(fields) not in (1, 3) or not all(f.isdigit() and f.isascii() for f in fields):
            raise ValueError(f"{text!r} is not START:RATE:FULL or N (e.g. 10:30:100)")
        if len(fields) == 1:
            number = int(fields[0])
            fields = [number, 100, number]
        start, rate, full = (int(f) for f in fields)
        if start < 1:
            raise ValueError(f"{text!r}: START must be at least 1")
        if not 1 <= rate <= 100:
            raise ValueError(f"{text!r}: RATE is a percentage from 1 to 100")
        if full < start:
            raise ValueError(f"{text!r}: FULL must be at least START")
        return cls(start, rate, full)

    def __str__(self):
        return f"{self.start}:{self.rate}:{self.full}"

    def refusal(self, count):
        """
        The percentage of new connections to refuse while C{count}
        unauthenticated connections are open.
        """
        if count < self.start:
            return 0
        if count >= self.full:
            return 100
        # Integer arithmetic, so that tests can name the exact threshold.
        return self.rate + (100 - self.rate) * (count - self.start) // (self.full - self.start)


DEFAULT_MAX_STARTUPS = MaxStartups(10, 30, 100)
# Below DEFAULT_MAX_STARTUPS.start, so that one address alone never brings
# on random refusals for others (three such addresses are needed); a real
# node authenticates within milliseconds, and the few connections it opens
# at once (one per log it syncs with the daemon) that are refused are tried
# again a second later, after the first have authenticated.
DEFAULT_PER_SOURCE = 3


def source(host):
    """
    The source a connection from C{host} is counted under: an IPv4
    address, or the /64 network of an IPv6 address (one host may have a
    whole /64 to itself); an IPv4 address mapped into IPv6 counts as IPv4.
    """
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host
    if address.version == 6:
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


@attrs.define
class Startups:
    """
    Counts unauthenticated connections in total and per source, and says
    which new ones to refuse.

    @ivar random: returns a float in [0, 1), as L{random.random} does;
        tests pass a predictable one.
    """

    maxStartups = attrs.field(default=DEFAULT_MAX_STARTUPS)
    perSource = attrs.field(default=DEFAULT_PER_SOURCE)
    random = attrs.field(default=random.random, repr=False)
    total = attrs.field(default=0, init=False)
    _bySource = attrs.field(factory=dict, init=False, repr=False)

    def admit(self, source):
        """
        Count a new connection from C{source}, unless it is to be refused.

        @return: L{None} if it was admitted (L{release} it once it
            authenticates or closes), else why not: a one-line reason for
            the daemon's log and one for the peer.
        @rtype: L{None} or a L{tuple} of two L{str}
        """
        fromSource = self._bySource.get(source, 0)
        if fromSource >= self.perSource:
            return (
                f"{fromSource} unauthenticated connections from {source} already "
                f"(--per-source-max-startups {self.perSource})",
                TRY_LATER_FROM_YOU,
            )
        percent = self.maxStartups.refusal(self.total)
        if percent == 100 or (percent and self.random() * 100 < percent):
            return (
                f"{self.total} unauthenticated connections already, refusing "
                f"{percent}% (--max-startups {self.maxStartups})",
                TRY_LATER,
            )
        self.total += 1
        self._bySource[source] = fromSource + 1
        return None

    def release(self, source):
        """
        A connection from C{source} that L{admit} counted has authenticated
        or closed.
        """
        self.total -= 1
        left = self._bySource[source] - 1
        if left:
            self._bySource[source] = left
        else:
            del self._bySource[source]

    def fromSource(self, source):
        """
        How many unauthenticated connections from C{source} are open.
        """
        return self._bySource.get(source, 0)


@attrs.define
class Startup:
    """
    One connection that L{Startups.admit} counted, until it authenticates
    or closes, and the timer that closes it if it takes too long.

    @ivar timer: an L{IDelayedCall}, or L{None} until it is started.
    """

    _startups = attrs.field()
    _source = attrs.field()
    timer = attrs.field(default=None)
    _counted = attrs.field(default=True, init=False)

    def end(self):
        """
        It has authenticated or closed: release it, and cancel its timer.
        Once is enough; again does nothing.
        """
        if self._counted:
            self._counted = False
            self._startups.release(self._source)
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None


@attrs.define
class RefusalLog:
    """
    Says which refusals to log: the first from each source, then at most
    one an C{interval}, which counts those left unlogged meanwhile, so that
    a flood costs a line a minute, not a line a connection.

    @ivar clock: an L{IReactorTime}.
    """

    clock = attrs.field()
    interval = attrs.field(default=60.0)
    # The most sources remembered: beyond it the quiet ones are forgotten.
    limit = attrs.field(default=1024)
    _sources = attrs.field(factory=dict, init=False, repr=False)

    def refused(self, source):
        """
        A connection from C{source} was refused.

        @return: L{None} if this refusal is not to be logged, else how many
            from C{source} were not logged since the last that was.
        """
        now = self.clock.seconds()
        logged, quiet = self._sources.get(source, (None, 0))
        if logged is not None and now - logged < self.interval:
            self._sources[source] = (logged, quiet + 1)
            return None
        if len(self._sources) >= self.limit:
            self._forget(now)
        self._sources[source] = (now, 0)
        return quiet

    def note(self, source, address, why):
        """
        Log that a connection from C{address} (from C{source}) was refused
        and C{why}, unless a line about C{source} was logged lately.
        """
        quiet = self.refused(source)
        if quiet is None:
            return
        more = f" ({quiet} more from {source} since the last such line)" if quiet else ""
        log.warn(
            "refused a connection from {address}: {why}{more}",
            address=address,
            why=why,
            more=more,
        )

    def _forget(self, now):
        for each, (logged, quiet) in list(self._sources.items()):
            if now - logged >= self.interval:
                del self._sources[each]
        if len(self._sources) >= self.limit:
            # Every source is recent: a wide flood; start again.
            self._sources.clear()
