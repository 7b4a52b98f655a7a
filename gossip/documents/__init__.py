"""
Documents that merge themselves: each text file of a folder is a CRDT text
held in a log as one add per saved change, and the folder is kept in step
with the log both ways.
"""
