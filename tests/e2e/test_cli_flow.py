"""The operator's path (issue 6): `dlbc mine` x2, `dlbc verify`, `dlbc task submit` as separate
processes against a running chain, then `dlbc query winners --json` names the better miner."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from abci_app.keyfile import save_key
from dlbc_ops.supervisor import Supervisor
from tests.training.sidecars.helpers import MINER_START, key, local_chain, wait_for

pytestmark = pytest.mark.slow

# "direct": the 8-wide U-Net below (288 coordinates) cannot hold the default "diff" (2 x 256).
PARAMS = {"train_seconds": 20, "reveal_seconds": 6, "verify_seconds": 10,
          "watermark_matrix": "direct"}


def test_sidecar_commands_play_one_round(tmp_path: Path) -> None:
    pub, strong, weak = key(41), key(42), key(43)
    for name, k in (("pub", pub), ("strong", strong), ("weak", weak)):
        save_key(tmp_path / f"{name}.json", k)
    dlbc = [sys.executable, "-m", "dlbc_ops"]
    logs = tmp_path / "logs"
    with local_chain(tmp_path / "chain", params=PARAMS,
                     balances={pub.address.hex(): 100_000, strong.address.hex(): MINER_START,
                               weak.address.hex(): MINER_START}) as chain:
        common = ["--rpc", chain.rpc_url, "--rounds", "1", "--log-level", "info",
                  "--allow-private-networks"]
        miner = ["mine", "--artifact-port", "0", "--threads", "1", "--commit-margin", "3"]
        procs = {
            "strong": [*miner, "--key", str(tmp_path / "strong.json"),
                       "--workdir", str(tmp_path / "strong")],
            "weak": [*miner, "--key", str(tmp_path / "weak.json"), "--workdir",
                     str(tmp_path / "weak"), "--max-epochs", "1", "--max-train-seconds", "6"],
            "ver": ["verify", "--app-home", str(chain.app_home), "--per-model-seconds", "5"],
        }
        # The project's one launcher, as `dlbc localnet` starts these same commands.
        sup = Supervisor(logs)
        try:
            for n, a in procs.items():
                sup.start(n, [*dlbc, *a, *common])
            wait_for(lambda: all(chain.rpc.query_json(f"accounts/{k.address.hex()}")["miner"]
                                 for k in (strong, weak)), 60, "both miners registered")
            sup.start("pub", [
                *dlbc, "task", "submit", "--key", str(tmp_path / "pub.json"), "--demo",
                "--samples", "48", "--hparams", '{"depth": 2, "base_width": 8}',
                "--reward", "10777", "--artifact-port", "0", "--workdir", str(tmp_path / "pub"),
                *common])
            codes = {n: sup.child(n).popen.wait(timeout=150)
                     for n in ("strong", "weak", "ver", "pub")}
        finally:
            sup.stop()
        assert codes == {"strong": 0, "weak": 0, "ver": 0, "pub": 0}, {
            n: (logs / f"{n}.log").read_text()[-2000:] for n in codes}
        out = subprocess.run([*dlbc, "query", "winners", "--json", "--rpc", chain.rpc_url],
                             capture_output=True, text=True, check=True).stdout
    rounds = json.loads(out)
    assert rounds[0]["outcome"] == "settled"
    assert rounds[0]["winner"]["miner"] == strong.address.hex()
    log = (logs / "strong.log").read_text()
    assert "epoch 1 [" in log and "WON" in log  # progress bar and the round's outcome
    assert "httpx" not in log  # request spam is kept out of operator logs
