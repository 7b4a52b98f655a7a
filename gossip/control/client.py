# -*- test-case-name: tests.test_control -*-
"""
The command line's side of the control port: reach a daemon at an
endpoint and ask it one command.
"""

import re

from twisted.internet.endpoints import UNIXClientEndpoint, clientFromString
from twisted.internet.error import ConnectError
from twisted.internet.protocol import Factory
from twisted.protocols import amp

from gossip.control.server import unixPath

__all__ = ["NoDaemon", "ask", "clientEndpoint"]


class NoDaemon(Exception):
    """
    No daemon answers at the endpoint.
    """


def clientEndpoint(reactor, description):
    """
    The endpoint that reaches a daemon's C{--control DESCRIPTION}: the same
    description the daemon was given (C{unix:PATH}, C{tcp:PORT:interface=HOST}),
    or any client description of Twisted's (C{tcp:HOST:PORT}).
    """
    unix = unixPath(description)
    if unix is not None:
        return UNIXClientEndpoint(reactor, unix[0])
    server = re.fullmatch(r"tcp:(?:port=)?(\d+)(?::interface=([^:]+))?", description)
    if server is not None:
        port, host = server.groups()
        return clientFromString(reactor, f"tcp:host={host or '127.0.0.1'}:port={port}")
    return clientFromString(reactor, description)


async def ask(reactor, description, command, **arguments):
    """
    Ask the daemon at C{description} the AMP C{command}.

    @return: its answer.
    @raise NoDaemon: nothing answers there.
    @raise gossip.control.commands.ControlError: the daemon could not do it.
    """
    endpoint = clientEndpoint(reactor, description)
    factory = Factory.forProtocol(amp.AMP)
    factory.noisy = False
    try:
        protocol = await endpoint.connect(factory)
    except (ConnectError, OSError) as e:
        raise NoDaemon(str(e)) from None
    try:
        return await protocol.callRemote(command, **arguments)
    finally:
        protocol.transport.loseConnection()
