"""End-to-end: one DLBC round on the embedded devnet with every real part (issue 6 "Shown by").

`python -m abci_app` + `dlbc node` (the development stand-in for CometBFT, 1 validator, vote
extensions on) as subprocesses; in this process: one publisher with one task, two miners with
different budgets training real U-Nets on CPU with their watermarks, and the validator's
verifier. The verifier's verdicts flow through ExtendVote into the proposer's Settle, and the
better miner is paid the escrowed reward plus its share of the block reward (see flow.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.training.sidecars.helpers import local_chain

from .flow import GENESIS_BALANCES, PARAMS, capture_logs, check_round, run_round

pytestmark = pytest.mark.slow


def test_round_pays_the_better_miner(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    capture_logs(caplog)
    with local_chain(tmp_path / "chain", params=PARAMS,
                     balances=GENESIS_BALANCES) as chain:
        result = run_round(chain.rpc_url, chain.app_home, tmp_path)
    check_round(result, caplog)
