# -*- test-case-name: tests.test_commands -*-
"""
Reaching peers: sync sessions over a spawned command's standard input and
output, kept connected with backoff.
"""

import os
import shlex

import attr
from twisted.application.internet import ClientService, backoffPolicy
from twisted.internet.endpoints import ProcessEndpoint, StandardErrorBehavior
from twisted.internet.protocol import Factory

from gossip.protocol import SyncProtocol

__all__ = ["SyncFactory", "commandEndpoint", "peerService"]


@attr.s
class SyncFactory(Factory):
    """
    Makes a L{SyncProtocol} for each connection to or from a peer.
    """

    service = attr.ib()
    peer = attr.ib()
    once = attr.ib(default=False)
    anyName = attr.ib(default=False)
    timeout = attr.ib(default=60.0)
    keepalive = attr.ib(default=20.0)
    progress = attr.ib(default=None)

    def buildProtocol(self, addr):
        return SyncProtocol(
            self.service,
            self.peer,
            once=self.once,
            anyName=self.anyName,
            timeout=self.timeout,
            keepalive=self.keepalive,
            progress=self.progress,
        )


def commandEndpoint(reactor, command):
    """
    An endpoint that runs C{command} (a list of arguments, or a shell-style
    string) and speaks over its standard input and output; its standard
    error is passed through.
    """
    if isinstance(command, str):
        command = shlex.split(command)
    return ProcessEndpoint(
        reactor,
        command[0],
        command,
        env=os.environ,
        childFDs={0: "w", 1: "r", 2: 2},
        errFlag=StandardErrorBehavior.DROP,
    )


def peerService(reactor, service, command, anyName=False, timeout=60.0, keepalive=20.0):
    """
    A service that keeps a session with the peer reached by running
    C{command}, reconnecting with backoff (1 s growing to 5 minutes) when
    it fails.
    """
    if isinstance(command, str):
        command = shlex.split(command)
    factory = SyncFactory(
        service, shlex.join(command), anyName=anyName, timeout=timeout, keepalive=keepalive
    )
    return ClientService(
        commandEndpoint(reactor, command),
        factory,
        retryPolicy=backoffPolicy(initialDelay=1.0, maxDelay=300.0),
        clock=reactor,
        prepareConnection=lambda protocol: protocol.whenHandshaken(),
    )
