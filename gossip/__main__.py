"""
C{python -m gossip}: the C{gossip} command.
"""

from gossip.cli.main import run

run()
