"""
The C{gossip} command line.  C{say} and C{ask} import nothing from Twisted;
the commands that need the reactor import it when they run.
"""
