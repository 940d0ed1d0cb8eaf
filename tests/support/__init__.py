"""The one set of shared test fixtures: ports, keys, waiting, and chains of real processes.

Every test folder takes these from here instead of keeping its own copy. Nothing here imports
torch, so the state-machine tests that run on the compat Python (no torch) can use it too.
"""

from pathlib import Path

#: The repository root (tests/support/__init__.py is two levels below it).
REPO = Path(__file__).resolve().parents[2]

#: BFT time of the tests' genesis (2023-11-14T22:13:20Z): fixed so hashes are reproducible.
GENESIS_NS = 1_700_000_000 * 1_000_000_000
