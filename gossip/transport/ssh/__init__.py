"""
Sync over SSH: the daemon's Conch server (L{server}), which offers the
C{gossip} subsystem to the keys an C{authorized_keys} file lists
(L{authorized}), and the client (L{client}) that reaches such a server, or
a stock OpenSSH server running C{gossip serve --stdio}.  Both ends carry the
sync protocol unchanged on one session channel (L{channel}).
"""
