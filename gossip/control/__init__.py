"""
The daemon's control port: what C{gossip status}, C{reload}, C{connect} and
C{stop} ask a running daemon, over AMP on a UNIX socket only its user can
open; and what it tells systemd.
"""
