"""
The twistd plugin: C{twistd gossip --log LOG}.
"""

from twisted.application.service import ServiceMaker

gossip = ServiceMaker(
    "gossip",
    "gossip.tap",
    "Serve gossip logs and keep them synced with their peers.",
    "gossip",
)
