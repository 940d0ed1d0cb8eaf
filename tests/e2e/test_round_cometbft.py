"""The same one-round flow as test_round_e2e.py, against a real `cometbft node` (issue 6).

Skipped unless `cometbft` (v0.38.x / v1.0.x) is on PATH: the development machines cannot install
it (DESIGN §1). The chain is one `cometbft init` home whose genesis gets DLBC's app_state and
vote extensions through `dlbc genesis`, paired with one `python -m abci_app`.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sidecars.helpers import free_port

from abci_app.cli import main as dlbc
from training.rpc_client import RpcClient

from .flow import PARAMS, PUB, START, capture_logs, check_round, run_round

COMETBFT = shutil.which("cometbft")
pytestmark = [pytest.mark.slow, pytest.mark.cometbft,
              pytest.mark.skipif(COMETBFT is None, reason="needs a real `cometbft` on PATH")]


@pytest.mark.timeout(300)
def test_round_pays_the_better_miner_on_cometbft(tmp_path: Path,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    assert COMETBFT is not None
    capture_logs(caplog)
    home, app_home = tmp_path / "cometbft", tmp_path / "app"
    subprocess.run([COMETBFT, "init", "--home", str(home)], check=True, capture_output=True)
    args = ["genesis", "--genesis", str(home / "config" / "genesis.json"),
            "--account", f"{PUB.address.hex()}={START}"]
    for name, value in PARAMS.items():
        args += ["--param", f"{name}={value}"]
    assert dlbc(args) == 0
    abci, rpc_port, p2p = free_port(), free_port(), free_port()
    logs = open(tmp_path / "procs.log", "ab")  # noqa: SIM115 - closed below
    app = subprocess.Popen([sys.executable, "-m", "abci_app", "--home", str(app_home),
                            "--address", f"tcp://127.0.0.1:{abci}"], stdout=logs, stderr=logs)
    node = None
    try:
        time.sleep(2)
        node = subprocess.Popen([COMETBFT, "node", "--home", str(home),
                                 "--proxy_app", f"tcp://127.0.0.1:{abci}",
                                 "--rpc.laddr", f"tcp://127.0.0.1:{rpc_port}",
                                 "--p2p.laddr", f"tcp://127.0.0.1:{p2p}"],
                                stdout=logs, stderr=logs)
        url = f"http://127.0.0.1:{rpc_port}"
        with RpcClient(url) as rpc:
            deadline = time.monotonic() + 60
            last: Exception | None = None
            while True:  # the node may still be starting: keep asking until height 2
                try:
                    if rpc.latest_height() >= 2:
                        break
                except Exception as exc:  # noqa: BLE001 - NodeUnreachable while it boots
                    last = exc
                assert time.monotonic() < deadline, (
                    f"{last}\n" + (tmp_path / "procs.log").read_text()[-3000:])
                time.sleep(0.5)
        result = run_round(url, app_home, tmp_path, timeout=150)
    finally:
        for p in (node, app):
            if p is not None:
                p.terminate()
                try:
                    p.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    p.kill()
        logs.close()
    check_round(result, caplog)
