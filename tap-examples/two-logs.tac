"""
Serve two logs from this directory and keep one of them synced with a peer.

    twistd -ny tap-examples/two-logs.tac

The peer here is a second log on this machine, reached through the same
command a remote peer would be ("ssh HOST gossip serve --stdio notes.log"
in real use): edit PEER to point at yours.
"""

import os
import shlex
import sys

from twisted.application.service import Application

from gossip.tap import Options, makeService

HERE = os.path.abspath(os.path.dirname(__file__))
PEER = [sys.executable, "-m", "gossip", "serve", "--stdio", os.path.join(HERE, "peer", "notes.log")]

os.makedirs(os.path.join(HERE, "peer"), exist_ok=True)
options = Options()
options.parseOptions(
    [
        "--log", os.path.join(HERE, "notes.log"),
        "--peer-command", shlex.join(PEER),
        "--log", os.path.join(HERE, "chat.log"),
    ]
)
application = Application("gossip")
makeService(options).setServiceParent(application)
