"""
The log on disk: the line format, sets of serials, the log file and its
cache, and asks.  Only the standard library is imported here, so that the
command line's C{say} and C{ask} start fast.
"""
