"""The one set of shared test fixtures: ports, keys, waiting, and chains of real processes.

Every test folder takes these from here instead of keeping its own copy. Nothing here imports
torch, so the state-machine tests that run on the compat Python (no torch) can use it too.
"""
