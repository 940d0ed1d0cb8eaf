"""The same one-round flow as tests/e2e/test_round_e2e.py, against a real `cometbft node`.

Runs on each pinned release (conftest.py). The chain is one `cometbft init` home whose genesis
gets DLBC's app_state and vote extensions through `dlbc genesis`, paired with one
`python -m abci_app` (the README's recipe); the publisher, both miners and the verifier run in
process, so the test can look inside them (verdicts, served files, watermark keys).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.flow import GENESIS_BALANCES, PARAMS, capture_logs, check_round, run_round

pytestmark = [pytest.mark.slow]


@pytest.mark.timeout(300)
def test_round_pays_the_better_miner_on_cometbft(tmp_path: Path, single_node,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    capture_logs(caplog)
    node = single_node(params=PARAMS, funded=0, accounts=GENESIS_BALANCES)
    result = run_round(node.rpc_url, node.app_home, tmp_path, timeout=150)
    check_round(result, caplog)
