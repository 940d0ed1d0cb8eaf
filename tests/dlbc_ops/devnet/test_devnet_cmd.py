"""`dlbc devnet` (issue 7 main job): one full round as a subprocess, checked against the chain.

After the devnet exits, the test restarts the same chain from the saved state (app LMDB + node
block store, i.e. what a second `dlbc devnet` run resumes from) and asks the app, through the
node's RPC, who won round 1: it must be the winner the devnet printed.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from dlbc_ops.cli.main import main as dlbc
from dlbc_ops.devnode.launch import LocalChain
from dlbc_ops.ports import port_is_free
from tests.support.ports import devnet_base
from tests.support.processes import default_sigint, stop_cli

pytestmark = pytest.mark.slow


def test_devnet_one_round(tmp_path: Path) -> None:
    out = tmp_path / "devnet"
    base = devnet_base()
    proc = subprocess.run(
        [sys.executable, "-m", "dlbc_ops.cli.main", "devnet", "--rounds", "1", "--out", str(out),
         "--base-port", str(base), "--block-time", "0.5", "--train-seconds", "24",
         "--reveal-seconds", "6", "--verify-seconds", "16", "--samples", "48",
         "--small-budget", "4"],
        capture_output=True, text=True, timeout=150, check=False)
    text = proc.stdout
    assert proc.returncode == 0, text + proc.stderr
    assert "DEVELOPMENT STAND-IN for CometBFT" in text
    for needle in ("phase TRAIN", "phase REVEAL", "phase VERIFY", "committed its model",
                   "revealed, claims dice", "verdict on miner-1", "balances:"):
        assert needle in text, f"{needle!r} missing from:\n{text}"
    m = re.search(r"round 1: winner: ([0-9a-f]{40}) \((miner-\d)\)", text)
    assert m, text
    printed_winner = m.group(1)
    # a fresh devnet pipelines its rounds: round 2 is announced while round 1 trains
    assert "rounds: pipelined (TRAIN 24 s, REVEAL 6 s, VERIFY 16 s)" in text, text
    assert "round 2: phase ANNOUNCED" in text, text
    for png in ("dice.png", "watermark.png", "learning_curves.png"):
        data = (out / "plots" / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    # the learning curves of round 1's revealers, scored on its revealed test set, are kept
    rows = [r for r in json.loads((out / "history.json").read_text()) if r["round"] == 1]
    curves = {r["miner"]: r["curve"] for r in rows if r.get("curve")}
    assert "miner-1" in curves, rows
    for points in curves.values():
        assert [p["epoch"] for p in points] == sorted(p["epoch"] for p in points)
        assert all(0.0 <= p["score"] <= 1.0 and p["seconds"] > 0 for p in points)
    assert "round 1: learning curves" in text
    assert list((out / "models").glob("round-1-winner-*.safetensors"))

    chain = LocalChain(out, rpc_port=base, app_port=base + 1, block_time=0.5)
    try:
        chain.start_app()
        chain.start_node()
        rpc = chain.rpc
        assert rpc is not None
        rec = rpc.query_json("rounds/1")
        rpc_height = rpc.latest_height()
    finally:
        chain.stop()
    assert rec["status"] == "closed" and rec["winner"]["miner"] == printed_winner
    height = int(rpc_height)

    # A second run resumes the same chain (no new genesis, heights continue, round 2 on), and
    # its faucet still pays a new key (a Transfer, not a genesis balance: issue 13)
    assert (out / "keys" / "faucet.json").exists()
    newbie = "ab" * 20
    again = subprocess.run(
        [sys.executable, "-m", "dlbc_ops.cli.main", "devnet", "--rounds", "1", "--out", str(out),
         "--base-port", str(base), "--block-time", "0.5", "--train-seconds", "24",
         "--reveal-seconds", "6", "--verify-seconds", "16", "--samples", "48", "--no-plots",
         "--fund", f"{newbie}=4321", "--sequential"],
        capture_output=True, text=True, timeout=150, check=False)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "resuming saved state" in again.stdout
    # the resumed chain keeps its genesis params, and says so
    assert "--sequential is ignored: a resumed chain keeps its genesis params" in again.stdout
    assert "rounds: pipelined" in again.stdout
    assert re.search(f"faucet: sent 4321 to {newbie} .*its balance is now 4321", again.stdout), \
        again.stdout
    m2 = re.search(r"chain dlbc-devnet at height (\d+)", again.stdout)
    assert m2 and int(m2.group(1)) >= height, again.stdout
    assert re.search(r"round ([2-9]|\d\d+): ", again.stdout), again.stdout
    assert "round 1: phase" not in again.stdout


def test_invalid_devnet_port_in_use(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = devnet_base()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", base + 1))
        busy.listen(1)
        code = dlbc(["devnet", "--rounds", "1", "--out", str(tmp_path / "d"),
                     "--base-port", str(base)])
    err = capsys.readouterr().err
    assert code == 1
    assert f"already in use on 127.0.0.1: {base + 1} (app ABCI)" in err and "--base-port" in err
    assert not (tmp_path / "d" / "logs").exists()  # nothing was started


def test_invalid_devnet_unwritable_out(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    code = dlbc(["devnet", "--rounds", "1", "--out", str(blocker / "sub"),
                 "--base-port", str(devnet_base())])
    err = capsys.readouterr().err
    assert code == 1 and "not writable" in err and "--out" in err


def test_devnet_ctrl_c_stops_everything(tmp_path: Path) -> None:
    """SIGINT mid-round: exit code 130, and the app's and node's ports are free again."""
    import queue
    import signal
    import threading
    import time

    base = devnet_base()
    proc = subprocess.Popen(
        [sys.executable, "-m", "dlbc_ops.cli.main", "devnet", "--out", str(tmp_path / "d"),
         "--base-port", str(base), "--block-time", "0.5", "--train-seconds", "30",
         "--samples", "48", "--no-plots"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        preexec_fn=default_sigint)  # noqa: PLW1509 - only a signal reset before exec
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(ln) for ln in proc.stdout], daemon=True).start()
    seen = []
    try:
        deadline = time.monotonic() + 60
        while not any("training, budget" in ln for ln in seen):
            assert time.monotonic() < deadline, "".join(seen)
            try:
                seen.append(lines.get(timeout=1))
            except queue.Empty:
                assert proc.poll() is None, "".join(seen)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 130
    finally:
        stop_cli(proc, str(tmp_path / "d"))
    time.sleep(0.5)
    while not lines.empty():
        seen.append(lines.get())
    assert any("Ctrl-C: stopping" in ln for ln in seen), "".join(seen)
    # SO_REUSEADDR (in port_is_free) ignores TIME_WAIT leftovers but not a live listener
    busy = [p for p in (base, base + 1, base + 10, base + 11) if not port_is_free(p)]
    assert not busy, f"still listening after Ctrl-C: {busy}"
