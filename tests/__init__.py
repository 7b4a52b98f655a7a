"""
gossip's tests, run with Trial: C{trial tests}.
"""

import os

from hypothesis import settings

# CI (.ci/run sets GOSSIP_HYPOTHESIS=ci) tries every property on the same
# examples each time, so that a change passes or fails its CI for what it
# did; anywhere else they are drawn afresh each run, which is how new
# failures are found (as one in the documents' renames was).
settings.register_profile("ci", derandomize=True)
if os.environ.get("GOSSIP_HYPOTHESIS") == "ci":
    settings.load_profile("ci")
