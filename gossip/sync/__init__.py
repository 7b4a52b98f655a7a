"""
The sync protocol: the AMP session that brings two logs together, and the
service that watches a log and feeds its sessions.
"""
