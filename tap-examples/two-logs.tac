"""
Serve two logs from this directory, keep one of them synced with a peer,
and let the keys in authorized_keys here sync either over SSH on loopback
port 7422.

    twistd -ny tap-examples/two-logs.tac

The peer here is a second log on this machine, reached through the same
command a remote peer would be ("ssh HOST gossip serve --stdio notes.log",
or --peer ssh://HOST:7422 instead of --peer-command, in real use): edit
PEER to point at yours.
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
        "--listen", "tcp:7422:interface=127.0.0.1",
        "--host-key", os.path.join(HERE, "ssh_host_ed25519_key"),
        "--authorized-keys", os.path.join(HERE, "authorized_keys"),
    ]
)
application = Application("gossip")
makeService(options).setServiceParent(application)
