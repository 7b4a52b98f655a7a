"""
How peers are reached: spawned commands, SSH (the daemon's server and the
client) and TLS.
"""
