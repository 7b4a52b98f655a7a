"""
gossip's tests, run with Trial: C{trial tests}.
"""
