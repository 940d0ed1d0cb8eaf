"""The chain's torch-free architecture allow-list must name exactly the training registry.

`abci_app/dlbc/params.py` keeps consensus code free of torch, so it carries its own copy of the
registry's names; a task naming an architecture the miners cannot build would be accepted on chain
and then fail every miner, and a new registry entry would be refused on chain.
"""

from abci_app.dlbc.params import ARCHITECTURES as CHAIN_ARCHITECTURES
from training.models import ARCHITECTURES as REGISTRY


def test_chain_allow_list_matches_training_registry() -> None:
    assert tuple(sorted(CHAIN_ARCHITECTURES)) == tuple(sorted(REGISTRY))
