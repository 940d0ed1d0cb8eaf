"""Front-running defence and restarts on a real chain (issue: nothing of a round is fetchable
before the miner reveals it; restarted miners and publishers keep their round/task).

One round on a real app + dev node. A publisher submits a task, is stopped and restarted with the
same task name (it must reuse the same keys and not submit again: the chain checks the released
key against the on-chain commitment). A miner, stepped by hand with `tick()`, trains and commits;
between its commit and its reveal every path it could serve is fetched over HTTP (404), then the
miner is restarted from its workdir and reveals; the revealed URI serves the committed model,
which carries the round's watermark.
"""

from __future__ import annotations

import contextlib
import io
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch

from abci_app.keyfile import save_key
from dlbc_ops.cli.main import main as dlbc
from training.artifacts import fetch_bytes, load_model, sha256_bytes
from training.sidecars.miner import Miner, MinerConfig, RoundWork
from training.sidecars.publisher import DemoDataConfig, PreparedTask, Publisher, PublisherConfig
from watermark import detect

from .helpers import MINER_START, free_port, key, local_chain

PARAMS = {"train_seconds": 12, "reveal_seconds": 8, "verify_seconds": 2}
PUB, MINER = key(31), key(32)


class _Capture:
    """stdout/stderr of in-process `dlbc` calls (capsys is function-scoped, this fixture is not)."""

    def readouterr(self) -> tuple[str, str]:
        out, err = self._out.getvalue(), self._err.getvalue()
        self._out.truncate(0), self._out.seek(0), self._err.truncate(0), self._err.seek(0)
        return out, err

    def __init__(self) -> None:
        self._out, self._err = io.StringIO(), io.StringIO()


def _tick_until(miner: Miner, cond: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        miner.tick()
        time.sleep(0.2)


def _get(base: str, path: str) -> int:
    return httpx.get(f"{base}/{path}", timeout=5).status_code


def _probe_paths(miner: Miner, n: int) -> list[str]:
    """Every URL path an attacker could try: each file of the miner's workdir relative to the
    workdir, to the served root, to the round folder, by bare name, and the old layout's."""
    work = miner.cfg.workdir
    files = [p for p in work.rglob("*") if p.is_file()]
    paths = {f"round-{n}/model.safetensors", f"round-{n}/state.json", "state.json",
             "model.safetensors", f"rounds/{n}/state.json", f"{n}/state.json",
             f"{n}/model.safetensors"}
    for f in files:
        paths.add(f.relative_to(work).as_posix())
        paths.add(f.name)
        if f.is_relative_to(miner.round_dir(n)):
            rel = f.relative_to(miner.round_dir(n)).as_posix()
            paths |= {rel, f"round-{n}/{rel}", f"{n}/{rel}"}
    return sorted(paths)


@pytest.fixture(scope="module")
def round_one(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    capsys_like = _Capture()
    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("frontrun")
    pub_port = free_port()  # fixed: the task's URIs on chain name it, restarts must reuse it
    demo = DemoDataConfig(samples=40)  # what `dlbc task submit --demo --samples 40` prepares
    out: dict[str, Any] = {}
    with local_chain(tmp / "chain", params=PARAMS,
                     balances={PUB.address.hex(): 100_000,
                               MINER.address.hex(): MINER_START}) as chain:
        mcfg = MinerConfig(allow_private_networks=True, rpc_url=chain.rpc_url, workdir=tmp / "miner", poll_seconds=0.2,
                           max_train_seconds=2.0, max_epochs=1, commit_margin_seconds=2.0,
                           progress=False)
        miner = Miner(mcfg, MINER)
        miner.setup()  # registers, starts its artifact server
        # `dlbc task submit --no-wait` twice with the same --name, then with other data.
        save_key(tmp / "pub.json", PUB)
        argv = ["task", "submit", "--demo", "--key", str(tmp / "pub.json"), "--rpc",
                chain.rpc_url, "--workdir", str(tmp / "pub"), "--name", "demo", "--samples",
                str(demo.samples), "--seed", str(demo.seed), "--artifact-port", str(pub_port),
                "--reward", "10000", "--no-wait"]
        out["cli"] = []
        for extra in ([], [], ["--seed", "8"]):
            with contextlib.redirect_stdout(capsys_like._out), \
                    contextlib.redirect_stderr(capsys_like._err):
                code = dlbc([*argv, *extra])
            out["cli"].append((code, capsys_like.readouterr()))
            if not out["cli"][0][0]:
                keys_path = tmp / "pub" / "private" / "demo" / "keys.json"
                out.setdefault("keys_after", []).append(keys_path.read_bytes())
        task1 = PreparedTask.load(tmp / "pub" / "artifacts" / "demo")
        # The publisher restarts as a long-running sidecar: same keys, same files, no new submit.
        pcfg = PublisherConfig(allow_private_networks=True, rpc_url=chain.rpc_url, workdir=tmp / "pub", poll_seconds=0.2,
                               reward=10_000, artifact_port=pub_port)
        second = Publisher(pcfg, PUB)
        task2 = second.prepare_demo(demo, "demo")
        out["pub_reused"] = (task2.reused, task2.train_key == task1.train_key,
                             task2.test_key == task1.test_key, task2.spec == task1.spec)
        pub_thread = threading.Thread(target=second.run, daemon=True)
        pub_thread.start()
        try:
            _tick_until(miner, lambda: 1 in miner.work and miner.work[1].committed, 40,
                        "the miner to commit")
            work = miner.work[1]
            rec = miner.chain.round_record(1)
            out["phase_at_probe"] = rec.record.phase if rec else None
            out["served_files_before"] = [p for p in miner.artifact_root.rglob("*") if p.is_file()]
            base = miner.server.base_url if miner.server else ""
            out["probes"] = {p: _get(base, p) for p in _probe_paths(miner, 1)}
            out["uri_before"] = work.model_uri
            # The miner restarts between commit and reveal: state on disk must be enough.
            miner.teardown()
            again = Miner(mcfg, MINER)
            again.setup()
            try:
                _tick_until(again, lambda: (w := again.work.get(1)) is not None and w.revealed,
                            40, "the restarted miner to reveal")
                w = again.work[1]
                out["work"] = w
                out["saved"] = RoundWork.load(again.round_dir(1))
                out["base_after"] = again.server.base_url if again.server else ""
                out["rec"] = again.chain.round_record(1)
                out["scheme"] = again.chain.watermark_scheme()
                out["model_bytes"] = fetch_bytes(w.model_uri, max_bytes=1 << 24,
                                                 sha256=w.model_digest, allow_private=True)
                pub_dir = w.model_uri.rsplit("/", 2)[-2]
                out["ckpt_digests"] = [
                    sha256_bytes(httpx.get(f"{out['base_after']}/{pub_dir}/checkpoints/"
                                           f"{Path(p).name}", timeout=5).content)
                    for p in sorted((again.round_dir(1) / "checkpoints").glob("epoch-*"))]
                out["manifest"] = httpx.get(f"{out['base_after']}/{pub_dir}/checkpoints/"
                                            "manifest.json", timeout=5).json()
                out["after_probes"] = {p: _get(out["base_after"], p) for p in
                                       ("state.json", f"{pub_dir}/state.json", "rounds/1/state.json",
                                        "round-1/model.safetensors", "1/state.json")}
                out["pub_tasks"] = sorted(second.tasks)
                out["task2_exists"] = again.chain.task(2) is not None
                out["tmp"] = tmp
            finally:
                again.teardown()
        finally:
            second.stop()
            pub_thread.join(timeout=15)
    return out


def test_nothing_of_the_round_is_served_between_commit_and_reveal(round_one: dict) -> None:
    # Verify the probe happened after the commit and before any reveal
    assert round_one["phase_at_probe"] in ("TRAIN", "REVEAL")
    assert round_one["uri_before"] == ""
    # Verify the served root held no file at all, so every GET misses
    assert round_one["served_files_before"] == []
    probes = round_one["probes"]
    assert "round-1/model.safetensors" in probes and "rounds/1/state.json" in probes
    assert any(p.startswith("rounds/1/checkpoints/") for p in probes)  # every file was tried
    assert {p: c for p, c in probes.items() if c != 404} == {}


def test_after_reveal_the_model_is_fetchable_and_verifies(round_one: dict) -> None:
    w, rec, scheme = round_one["work"], round_one["rec"], round_one["scheme"]
    # Verify the revealed URI on chain is the unguessable published one and serves the model
    revealed = {r.miner: r for r in rec.revealed}
    assert revealed[MINER.address].model_uri == w.model_uri
    assert w.model_uri.startswith(round_one["base_after"] + "/")
    token = w.model_uri.rsplit("/", 2)[-2]
    assert token == w.public_dir and len(token) == 32 and int(token, 16) >= 0
    assert sha256_bytes(round_one["model_bytes"]) == w.model_digest
    assert round_one["ckpt_digests"] == w.checkpoint_digests and w.checkpoint_digests
    # ... and the manifest published beside them lists the same (docs/proof_of_learning.md)
    assert [c["sha256"] for c in round_one["manifest"]["checkpoints"]] == w.checkpoint_digests
    # Verify it loads into the registry architecture and carries this miner's round watermark
    path = round_one["tmp"] / "fetched.safetensors"
    path.write_bytes(round_one["model_bytes"])
    model = load_model(path, "unet2d", DemoDataConfig().hparams, sha256=w.model_digest)
    wm_key = scheme.key(rec.record.seed, MINER.address, scheme.layer(model))
    assert detect(model, wm_key, threshold=scheme.threshold).ok
    # Verify the restart kept the round: the saved state is the revealed one
    saved = round_one["saved"]
    assert saved.revealed and saved.public_dir == w.public_dir and saved.salt == w.salt
    # Verify the salt and round state are still never served
    assert set(round_one["after_probes"].values()) == {404}


def test_restarted_publisher_reuses_its_task_and_does_not_resubmit(round_one: dict) -> None:
    reused, same_train, same_test, same_spec = round_one["pub_reused"]
    assert reused and same_train and same_test and same_spec
    assert round_one["pub_tasks"] == [1] and not round_one["task2_exists"]
    # The chain accepted the restarted publisher's keys (it checks them against the spec's
    # commitments) and the miner trained on the data: the reveal above proves both.
    assert round_one["rec"].record.key_released and round_one["rec"].record.test_key_revealed


def test_cli_submit_restart_reuses_the_task_and_refuses_other_data(round_one: dict) -> None:
    (c1, (o1, _)), (c2, (o2, _)), (c3, (_, e3)) = round_one["cli"]
    # Verify the first run submitted task 1 and the second reused it without a new SubmitTask
    assert c1 == 0 and "submitted as task 1" in o1
    assert c2 == 0 and "reusing the task prepared earlier" in o2
    assert "already on chain (not submitted again) as task 1" in o2
    # Verify a different data set under the same name is refused with a clear message
    assert c3 == 2 and "already prepared" in e3 and "seed" in e3 and "another --name" in e3
    # Verify the keys file never changed across the three runs
    keys = round_one["keys_after"]
    assert len(keys) == 3 and keys[0] == keys[1] == keys[2]
