# -*- test-case-name: tests.test_systemd -*-
"""
Telling systemd (or another manager that speaks its notify protocol) that
the daemon is ready, once it listens, and that it is stopping.
"""

import os
import socket

from twisted.application.service import Service
from twisted.internet.defer import Deferred, gatherResults
from twisted.logger import Logger
from twisted.python.failure import Failure

__all__ = ["NotifyService", "listening", "notify", "notifyAddress"]

log = Logger()


def notifyAddress(environ):
    """
    The address of the manager's notify socket, from C{$NOTIFY_SOCKET} in
    C{environ}: a path, or a name in Linux's abstract namespace when it
    starts with C{@}.

    @return: an address for C{socket.sendto}, or L{None} if there is none.
    """
    address = environ.get("NOTIFY_SOCKET")
    if not address:
        return None
    if address.startswith("@"):
        return "\0" + address[1:]
    return address


def notify(address, message):
    """
    Send one notify C{message} (C{"READY=1"}, say) to C{address}, a
    datagram UNIX socket.

    @return: whether it was sent; a manager that is gone is logged, and is
        no reason to stop.
    """
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        try:
            sock.sendto(message.encode("utf-8"), address)
        except OSError as e:
            log.warn(
                "could not tell the service manager {message} on {address}: {why}",
                message=message,
                address=address.replace("\0", "@", 1),
                why=e.strerror or e,
            )
            return False
    return True


def listening(service):
    """
    Whether C{service}, a started
    L{twisted.application.internet.StreamServerEndpointService}, listens.

    @return: a L{Deferred} that fires with C{True} once it listens, or
        C{False} if it cannot.
    """
    done = Deferred()

    def passOn(port):
        # Twisted's service keeps its port's Deferred to itself, and leaves
        # None in it for a port it could not have: chained onto, with the
        # result passed on untouched.
        done.callback(port is not None and not isinstance(port, Failure))
        return port

    service._waitingForPort.addBoth(passOn)
    return done


class NotifyService(Service):
    """
    Sends C{READY=1} once every listener listens and the reactor runs, and
    C{STOPPING=1} when the daemon stops; nothing without C{$NOTIFY_SOCKET}.

    Started after the services it waits for, and so stopped first: the
    manager hears C{STOPPING=1} before anything closes.

    @ivar listeners: the L{StreamServerEndpointService}s to wait for.
    """

    def __init__(self, reactor, listeners, environ=os.environ):
        self.reactor = reactor
        self.listeners = listeners
        self._address = notifyAddress(environ)

    def startService(self):
        Service.startService(self)
        if self._address is None:
            return
        # twistd starts its services before the reactor runs, and only a
        # running reactor has its SIGTERM handler: a manager told READY=1
        # before then could stop the daemon without its stopping cleanly.
        running = Deferred()
        self.reactor.callWhenRunning(running.callback, True)
        ready = gatherResults([running] + [listening(service) for service in self.listeners])
        # A listener that cannot listen stops the daemon's start (or is
        # logged): then it is not ready, and says nothing.
        ready.addCallback(lambda listen: all(listen) and notify(self._address, "READY=1"))

    def stopService(self):
        Service.stopService(self)
        if self._address is not None:
            notify(self._address, "STOPPING=1")
