"""
C{python -m gossip}: the C{gossip} command.
"""

from gossip.cli import run

run()
