"""
The metadata is in setup.cfg; this adds what it cannot declare: the
optional C module that speeds up reading logs (gossip/store/_speedups.c).

Where it cannot be built (no C compiler, no Python headers), gossip
installs without it and uses the same code in Python.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension("gossip.store._speedups", ["gossip/store/_speedups.c"], optional=True),
    ],
)
