"""`dlbc task submit` as an operator meets it (issue 13): `--rounds 1` waits for its own task's
round, a task already on chain is not sent again, a refused task ends the command, the devnet's
top-up outlives a refusal, and a sidecar whose publisher gave up is reported.

Real chains (app + dev node), the real CLI in-process or as a subprocess, real publishers.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from abci_app.keyfile import KeyPair, save_key
from dlbc_ops.cli.main import main as dlbc
from training.sidecars.publisher import DemoDataConfig, Publisher, PublisherConfig, SubmitRejected

from .helpers import TINY_TASK, key, local_chain, wait_for

PARAMS = {"train_seconds": 3, "reveal_seconds": 2, "verify_seconds": 2,
          "watermark_matrix": "direct"}
REWARD = 10_000  # params.min_task_reward
TINY_ARGS = ["--demo", "--samples", "24", "--hparams", json.dumps(TINY_TASK["hparams"]),
             "--artifact-port", "0", "--allow-private-networks", "--log-level", "warning"]


def _tasks_of(rpc: object, pub: KeyPair) -> list[dict]:
    """Every task on chain whose publisher is `pub` (ids are 1, 2, ...)."""
    found, tid = [], 1
    while (q := rpc.abci_query(f"tasks/{tid}")).ok:  # type: ignore[attr-defined]
        doc = q.json()
        if doc["publisher"] == pub.address.hex():
            found.append(doc)
        tid += 1
    return found


def test_rounds_1_counts_only_the_publishers_own_round(tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """B starts while round 1 (A's task) is closed: it must not stop on that round, but release
    both keys of its own task in round 2 and stop when round 2 closes."""
    a, b = key(61), key(62)
    save_key(tmp_path / "b.json", b)
    with local_chain(tmp_path / "chain", params=PARAMS,
                     balances={a.address.hex(): 200_000, b.address.hex(): 200_000}) as chain:
        pub_a = Publisher(PublisherConfig(rpc_url=chain.rpc_url, workdir=tmp_path / "a",
                                          poll_seconds=0.2, reward=REWARD,
                                          allow_private_networks=True), a)
        pub_a.add_prepared(pub_a.prepare_demo(DemoDataConfig(**TINY_TASK), "demo"))
        t = threading.Thread(target=pub_a.run, daemon=True)
        t.start()
        try:
            rpc = chain.rpc
            wait_for(lambda: rpc.abci_query("rounds/1").ok
                     and rpc.query_json("rounds/1")["status"] == "closed", 40, "round 1 to close")
            code = dlbc(["task", "submit", "--key", str(tmp_path / "b.json"), *TINY_ARGS,
                         "--name", "b", "--rounds", "1", "--workdir", str(tmp_path / "b"),
                         "--rpc", chain.rpc_url])
        finally:
            pub_a.stop()
            t.join(timeout=15)
        out = capsys.readouterr().out
        assert code == 0, out
        (mine,) = _tasks_of(rpc, b)
        rounds = [rpc.query_json(f"rounds/{n}") for n in range(1, 20)
                  if rpc.abci_query(f"rounds/{n}").ok]
    # Verify it ran to the end of its own round (not round 1, closed when it started, nor a
    # round of A's task): both keys released, round closed, no withhold fee. (Without miners
    # nobody reveals, so the chain queues the task again; only its first round is B's doing.)
    rec = next(r for r in rounds if r["task_id"] == mine["id"])
    assert rec["round"] > 1 and rec["status"] == "closed"
    assert rec["key_released"] and rec["test_key_revealed"]
    assert rec["outcome"] not in ("key_withheld", "test_key_withheld")
    assert re.search(rf"task {mine['id']} \('b'\): status \w+, rounds \[", out), out


def test_same_name_is_not_submitted_twice_even_without_the_local_record(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pub = key(63)
    save_key(tmp_path / "p.json", pub)
    argv = ["task", "submit", "--key", str(tmp_path / "p.json"), *TINY_ARGS, "--name", "dup",
            "--reward", str(REWARD), "--no-wait", "--workdir", str(tmp_path / "w")]
    with local_chain(tmp_path / "chain", params=PARAMS,
                     balances={pub.address.hex(): 200_000}) as chain:
        argv += ["--rpc", chain.rpc_url]
        assert dlbc(argv) == 0
        first = re.search(r"submitted as task (\d+)", capsys.readouterr().out)
        assert first, "first run did not submit"
        # Same name again: reused, and the chain already holds it
        assert dlbc(argv) == 0
        assert f"already on chain (not submitted again) as task {first.group(1)}" in \
            capsys.readouterr().out
        # The local record is gone (another machine, a crash before it was written): the chain
        # still says no, also once the task has left the pending pool
        (tmp_path / "w" / "submitted.json").unlink()
        wait_for(lambda: chain.rpc.query_json(f"tasks/{first.group(1)}")["status"] != "pending",
                 30, "the task to be selected")
        assert dlbc(argv) == 0
        assert f"already on chain (not submitted again) as task {first.group(1)}" in \
            capsys.readouterr().out
        tasks = _tasks_of(chain.rpc, pub)
    assert [t["id"] for t in tasks] == [int(first.group(1))]


def test_invalid_submission_refused_ends_the_command(tmp_path: Path) -> None:
    """A publisher that cannot pay: exit 1 at once with the app's code and a way out (it used
    to log the refusal and serve nothing forever)."""
    poor = key(64)
    save_key(tmp_path / "p.json", poor)
    with local_chain(tmp_path / "chain", params=PARAMS,
                     balances={poor.address.hex(): 5_000}) as chain:
        proc = subprocess.run(
            [sys.executable, "-m", "dlbc_ops", "task", "submit", "--key",
             str(tmp_path / "p.json"), *TINY_ARGS, "--rounds", "1", "--workdir",
             str(tmp_path / "w"), "--rpc", chain.rpc_url],
            capture_output=True, text=True, timeout=120, check=False)
        tasks = _tasks_of(chain.rpc, poor)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("dlbc: task 'task' was not accepted: SubmitTask rejected with code 10 "
                           "(INSUFFICIENT_FUNDS)"), proc.stderr
    assert "dlbc transfer" in last and poor.address.hex() in last
    assert tasks == []


def test_invalid_task_submit_wrong_rpc_gives_up(tmp_path: Path) -> None:
    from .helpers import free_port

    save_key(tmp_path / "p.json", key(65))
    url = f"http://127.0.0.1:{free_port()}"
    proc = subprocess.run(
        [sys.executable, "-m", "dlbc_ops", "task", "submit", "--key", str(tmp_path / "p.json"),
         *TINY_ARGS, "--node-wait", "2", "--workdir", str(tmp_path / "w"), "--rpc", url],
        capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"dlbc: node unreachable at {url}: no CometBFT RPC answered" in proc.stderr
    assert "Is `cometbft node` (or `dlbc node` / `dlbc devnet`) running?" in proc.stderr


def test_top_up_outlives_a_refusal_and_a_stopped_publisher_is_reported(tmp_path: Path) -> None:
    """Devnet mode: a refused top-up is retried (same prepared task) until the account is
    funded; a publisher whose own task is refused stops with `SubmitRejected`, which the
    devnet's thread wrapper reports instead of letting the thread die unseen."""
    from dlbc_ops.devnet.config import DevnetConfig
    from dlbc_ops.devnet.sidecars import start_threads

    poor, rich = key(66), key(67)
    save_key(tmp_path / "rich.json", rich)
    with local_chain(tmp_path / "chain", params=PARAMS,
                     balances={poor.address.hex(): 5_000, rich.address.hex(): 500_000}) as chain:
        # 1. a publisher whose task is refused: reported through on_crash
        gone = Publisher(PublisherConfig(rpc_url=chain.rpc_url, workdir=tmp_path / "gone",
                                         poll_seconds=0.2, reward=REWARD), poor)
        gone.add_prepared(gone.prepare_demo(DemoDataConfig(**TINY_TASK), "t"))
        crashed: list[tuple[str, BaseException]] = []
        (t1,) = start_threads({"publisher": gone}, DevnetConfig(out=tmp_path), lambda *_: None,
                              lambda _: None, lambda n, e: crashed.append((n, e)))
        t1.join(timeout=30)
        assert not t1.is_alive() and crashed and crashed[0][0] == "publisher"
        assert isinstance(crashed[0][1], SubmitRejected)
        # 2. the top-up: refused while poor, retried, accepted once funded
        pub = Publisher(PublisherConfig(rpc_url=chain.rpc_url, workdir=tmp_path / "pub",
                                        poll_seconds=0.2, reward=REWARD,
                                        top_up_retry_seconds=0.3), poor)
        pub.keep_pending = 1
        pub.demo_config = DemoDataConfig(**TINY_TASK)
        t2 = threading.Thread(target=pub.run, daemon=True)
        t2.start()
        try:
            wait_for(lambda: pub.metrics.get("errors_total", kind="tx_rejected") >= 3, 30,
                     "repeated top-up refusals")
            assert t2.is_alive() and pub.keep_pending == 1
            assert dlbc(["transfer", "--key", str(tmp_path / "rich.json"), "--to",
                         poor.address.hex(), "--amount", "100000", "--rpc", chain.rpc_url]) == 0
            pending = wait_for(lambda: [t for t in chain.rpc.query_json("tasks/pending")["tasks"]
                                        if t["publisher"] == poor.address.hex()]
                               or _tasks_of(chain.rpc, poor), 30, "the top-up task on chain")
        finally:
            pub.stop()
            t2.join(timeout=15)
    assert pending
    # the same prepared task was sent again each time: one demo folder, not one per refusal
    assert sorted(p.name for p in (tmp_path / "pub" / "artifacts").iterdir()) == ["demo-1"]
