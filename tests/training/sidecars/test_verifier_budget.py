"""The verifier against hostile reveals (issue 13 "Verifier"): claimed order, the stop rule,
per-model and per-miner budgets, verdicts written as they come, nothing left running.

Real parts throughout: a real threaded HTTP server on 127.0.0.1 (`HostileServer`) serving real
safetensors files of real watermarked U-Nets, the real `Verifier.check_round` (what
`verify_round` runs once it has read the chain) with its download threads and its check
process, and the real verdict file. The round records are built directly (training/sidecars/offline_records.py),
as the `round` query would give them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch

from abci_app.dlbc.params import Params
from abci_app.dlbc.records import (
    Address,
    Amount,
    Commitment,
    Height,
    RoundInfo,
    Task,
    TaskId,
    TaskStatus,
)
from abci_app.dlbc.verdicts import read_verdicts
from training.data import make_segmentation_2d
from training.sidecars.base import WatermarkScheme
from training.sidecars.hostile_round import RoundFiles, make_round
from training.sidecars.hostile_server import HostileServer
from training.sidecars.offline_records import round_info, task_spec
from training.sidecars.verifier import ModelCheck, Verifier, VerifierConfig

SEED = hashlib.sha256(b"budget round").digest()
SCHEME = WatermarkScheme.genesis_default()
TOL = Params().tolerance_ppm
SPEC = task_spec("unet2d", '{"base_width": 16, "depth": 2}', "dice")
TASK = Task(TaskId(1), Address(b"\1" * 20), SPEC, Amount(10_000), TaskStatus.SELECTED, 0, (),
            Height(1), 1, 1, None, b"k" * 32, None)
ALL_KINDS = ["drip", "huge", "digest", "pickle", "truncated", "nomark", "liar"]


def _info(n: int, files_reveals: Any, verify_seconds: float) -> RoundInfo:
    base = round_info(n, SEED, [], [])
    rec = replace(base.record, verify_end_ns=time.time_ns() + int(verify_seconds * 1e9),
                  reveals=len(files_reveals))
    return RoundInfo(rec, (), tuple(Commitment(r.miner, b"\0" * 32) for r in files_reveals),
                     tuple(files_reveals), 0)


def _verifier(tmp: Path, **kw: Any) -> Verifier:
    cfg = VerifierConfig(workdir=tmp / "verifier", app_home=tmp / "app",
                         allow_private_networks=True, check_threads=1,
                         verify_margin_seconds=0.5, **kw)
    (tmp / "app").mkdir(parents=True, exist_ok=True)
    cfg.workdir.mkdir(parents=True, exist_ok=True)
    return Verifier(cfg)


def _fetch_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("verify-fetch")]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Any:
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("hostile")
    test = make_segmentation_2d(8, 16, seed=3)
    with HostileServer(root, drip_seconds=1.0) as srv:
        files = make_round(root, srv, SEED, SCHEME, test, ALL_KINDS)
        yield {"root": root, "srv": srv, "files": files, "test": test}


@pytest.fixture(scope="module")
def all_kinds(world: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """One round: the honest reveal and one reveal of every hostile kind, all claiming 1.0."""
    tmp = tmp_path_factory.mktemp("all-kinds")
    files: RoundFiles = world["files"]
    v = _verifier(tmp)
    v.worker.start()  # as Verifier.setup does, before the first VERIFY
    seen: list[tuple[float, Any]] = []
    stop = threading.Event()

    def watch() -> None:  # what ExtendVote would read at each height
        while not stop.wait(0.05):
            found = read_verdicts(tmp / "app", 1)
            if found is not None:
                seen.append((time.monotonic(), found))

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        t0 = time.monotonic()
        checks = v.check_round(_info(1, files.reveals, 40.0), TASK, world["test"], SCHEME, TOL)
        wall = time.monotonic() - t0
        worker_pid = v.worker.pid
    finally:
        stop.set()
        watcher.join()
        v.close()
    by_kind = {kind: next(c for c in checks if c.miner == rev.miner.hex())
               for kind, rev in files.hostile}
    honest = next(c for c in checks if c.miner == files.honest.miner.hex())
    return {"checks": checks, "by_kind": by_kind, "honest": honest, "wall": wall,
            "seen": seen, "final": read_verdicts(tmp / "app", 1), "worker_pid": worker_pid,
            "verifier": v}


def _refuted(chk: ModelCheck) -> bool:
    """What settle.py counts as a refutation: a verdict that is not a confirmation."""
    return chk.verdict and not (chk.watermark_ok
                                and abs(chk.score_ppm - chk.claimed_score_ppm) <= TOL)


def test_honest_model_confirmed_and_written_while_sybils_stall(all_kinds: Any,
                                                               world: Any) -> None:
    honest = all_kinds["honest"]
    assert honest.verdict and honest.watermark_ok and honest.reason == ""
    assert honest.score_ppm == world["files"].honest_score_ppm
    final = all_kinds["final"]
    assert final is not None and final.complete
    assert {v.miner.hex() for v in final.verdicts} >= {honest.miner}
    # Verify the honest verdict was in the file, marked incomplete, while the slow drip (which
    # claims more) was still being waited for: an ExtendVote then already carried it
    early = [(t, f) for t, f in all_kinds["seen"]
             if not f.complete and honest.miner in {v.miner.hex() for v in f.verdicts}]
    assert early, "the honest verdict only appeared with the final file"
    # Verify the whole round took the drip's grace, not its 1 B/s transfer or 40 s of VERIFY
    assert all_kinds["wall"] < 15, all_kinds["wall"]


def test_invalid_slow_drip_aborts_on_min_rate(all_kinds: Any) -> None:
    chk = all_kinds["by_kind"]["drip"]
    assert not chk.verdict and "too slow" in chk.reason
    assert chk.seconds < 9  # the rate grace (5 s), far below per_model_seconds of 10 s


def test_invalid_huge_declared_size(all_kinds: Any) -> None:
    chk = all_kinds["by_kind"]["huge"]
    assert _refuted(chk) and "too large" in chk.reason and chk.seconds < 2


def test_invalid_digest_mismatch(all_kinds: Any) -> None:
    chk = all_kinds["by_kind"]["digest"]
    assert _refuted(chk) and "digest mismatch" in chk.reason


def test_invalid_pickle(all_kinds: Any) -> None:
    chk = all_kinds["by_kind"]["pickle"]
    assert _refuted(chk) and "safetensors" in chk.reason and chk.score_ppm == 0


def test_invalid_truncated(all_kinds: Any) -> None:
    chk = all_kinds["by_kind"]["truncated"]
    assert _refuted(chk) and "safetensors" in chk.reason


def test_invalid_unwatermarked_is_not_scored(all_kinds: Any) -> None:
    chk = all_kinds["by_kind"]["nomark"]
    assert _refuted(chk) and "watermark not detected" in chk.reason and chk.score_ppm == 0


def test_invalid_lying_claim_is_refuted(all_kinds: Any) -> None:
    chk = all_kinds["by_kind"]["liar"]
    assert chk.verdict and chk.watermark_ok and chk.reason == ""
    assert chk.claimed_score_ppm - chk.score_ppm > TOL and _refuted(chk)


def test_verdict_file_holds_every_verdict_and_only_verdicts(all_kinds: Any) -> None:
    final = all_kinds["final"]
    written = {v.miner.hex(): v for v in final.verdicts}
    for c in all_kinds["checks"]:
        assert (c.miner in written) == c.verdict, c
        if c.verdict:
            assert written[c.miner].watermark_ok == c.watermark_ok
            assert written[c.miner].score_ppm == c.score_ppm


def test_nothing_left_running_after_the_round(all_kinds: Any) -> None:
    """The download threads all ended; the check process is gone once the verifier closes."""
    assert _fetch_threads() == []
    pid = all_kinds["worker_pid"]
    assert pid is not None and all_kinds["verifier"].worker.pid is None
    assert not Path(f"/proc/{pid}").exists()


def test_invalid_check_over_budget_is_killed_and_replaced(world: Any, tmp_path: Path) -> None:
    """A check that outlives its budget: the process running it is killed (not abandoned), the
    model gets no verdict, and the next round's checks run in a fresh process."""
    files: RoundFiles = world["files"]
    # a test set big enough that scoring one model takes well over the 0.3 s left to check it
    big = make_segmentation_2d(1500, 64, seed=4)
    v = _verifier(tmp_path, per_model_seconds=0.8)
    try:
        v.worker.start()
        first = v.worker.pid
        chk = v.check_round(_info(1, [files.honest], 20.0), TASK, big, SCHEME, TOL)[0]
        assert not chk.verdict and "out of time" in chk.reason
        assert first is not None and not Path(f"/proc/{first}").exists()
        assert v.worker.pid is None or v.worker.pid != first
        t0 = time.monotonic()
        again = v.check_round(_info(2, [files.honest], 20.0), TASK, world["test"], SCHEME,
                              TOL)[0]
        assert again.verdict and again.watermark_ok and again.score_ppm > 0
        assert v.worker.starts == 2
        assert time.monotonic() - t0 < 15  # a fresh process with torch: a few seconds
    finally:
        v.close()
    assert _fetch_threads() == []
    assert v.worker.pid is None


def test_stop_after_confirmed(world: Any, tmp_path: Path) -> None:
    """Once the best claim is confirmed at score s, a lower claim c is still checked when
    c + tolerance >= s (it could still win) and gets no verdict otherwise, even a refutation
    that was already at hand (a digest mismatch), so every verifier's set is the same."""
    files: RoundFiles = world["files"]
    root, srv = world["root"], world["srv"]
    honest, s = files.honest, files.honest_score_ppm
    close_by = replace(files.hostile[-1][1], claimed_score_ppm=s - TOL)  # the liar's model
    far = replace(files.hostile[-1][1], miner=Address(b"\x77" * 20),
                  model_uri=srv.url_for("files", "far.safetensors"),
                  claimed_score_ppm=s - TOL - 1)
    (root / "far.safetensors").write_bytes((root / "honest.safetensors").read_bytes())
    v = _verifier(tmp_path)
    try:
        checks = v.check_round(_info(1, [far, honest, close_by], 20.0), TASK, world["test"],
                               SCHEME, TOL)
    finally:
        v.close()
    assert [c.claimed_score_ppm for c in checks] == [s, s - TOL, s - TOL - 1]  # claimed order
    assert checks[0].verdict and checks[0].watermark_ok
    assert checks[1].verdict  # within reach of the winner: checked
    assert not checks[2].verdict and "not needed" in checks[2].reason
    # (the download pool may have fetched it speculatively; its finding is not reported)
    final = read_verdicts(tmp_path / "app", 1)
    assert final is not None and final.complete
    assert sorted(v.miner for v in final.verdicts) == sorted([honest.miner, close_by.miner])


def test_invalid_miner_over_its_budget_gets_no_time(world: Any, tmp_path: Path) -> None:
    """A miner whose reveals stalled in earlier rounds is not fetched again until its window
    passes; the honest miner in the same round is unaffected."""
    files: RoundFiles = world["files"]
    drip = dict(files.hostile)["drip"]
    v = _verifier(tmp_path, per_miner_seconds=8.0, per_miner_rounds=3)
    try:
        v.ledger.charge(drip.miner, 1, 6.0)  # as if its drip cost 6 s in round 1
        v.ledger.charge(drip.miner, 2, 2.0)
        checks = v.check_round(_info(3, [drip, files.honest], 20.0), TASK, world["test"],
                               SCHEME, TOL)
    finally:
        v.close()
    by_miner = {c.miner: c for c in checks}
    assert not by_miner[drip.miner.hex()].verdict
    assert by_miner[drip.miner.hex()].reason == "per-miner budget spent"
    assert by_miner[files.honest.miner.hex()].verdict
    assert v.ledger.budget(drip.miner, 4, 10.0) == pytest.approx(6.0)  # round 1 left the window


def test_check_worker_start_cost_is_seconds(tmp_path: Path) -> None:
    v = _verifier(tmp_path)
    try:
        v.worker.start()
        assert 0 < v.worker.start_seconds < 30
    finally:
        v.close()


def test_verdict_file_is_json_with_complete_flag(all_kinds: Any) -> None:
    """The file ExtendVote reads says complete: the round can settle at the next height."""
    path = all_kinds["verifier"].vcfg.app_home / "verdicts" / "round-1.json"
    doc = json.loads(path.read_text())
    assert doc["complete"] is True and doc["round"] == 1


def test_invalid_lying_claims_are_deferred_behind_the_honest_model(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Liars claiming 1.0 come first in claimed order; each is scored on a slice of the test set
    first and, far from its claim, scored in full only after the honest model: the honest
    verdict is recorded (and written) before any liar's, and every liar is still refuted."""
    root = tmp_path / "served"
    root.mkdir()
    test = make_segmentation_2d(128, 16, seed=5)
    with HostileServer(root) as srv:
        files = make_round(root, srv, SEED, SCHEME, test, ["liar"] * 3)
        v = _verifier(tmp_path)
        v.worker.start()
        try:
            with caplog.at_level(logging.INFO, logger="dlbc.verifier"):
                checks = v.check_round(_info(1, files.reveals, 30.0), TASK, test, SCHEME, TOL)
        finally:
            v.close()
    by_miner = {c.miner: c for c in checks}
    honest = by_miner[files.honest.miner.hex()]
    liars = [by_miner[r.miner.hex()] for _, r in files.hostile]
    assert honest.verdict and honest.watermark_ok and honest.score_ppm == files.honest_score_ppm
    assert all(_refuted(c) and c.watermark_ok for c in liars)
    recorded = [r.getMessage().split()[2].rstrip(":") for r in caplog.records
                if " measured " in r.getMessage()]
    assert recorded[0] == honest.miner, recorded
    deferred = [r.getMessage() for r in caplog.records if "deferred" in r.getMessage()]
    assert len(deferred) == 3


def test_invalid_private_address_is_refused_and_says_nothing(world: Any, tmp_path: Path) -> None:
    """Without --allow-private-networks a reveal naming 127.0.0.1 is refuted unfetched, and an
    open port reads exactly like a closed one: the verdict tells the miner nothing."""
    files: RoundFiles = world["files"]
    srv = world["srv"]
    closed = replace(files.hostile[0][1], miner=Address(b"\x55" * 20),
                     model_uri="http://127.0.0.1:1/model.safetensors")
    before = sum(srv.requests.values())
    cfg = VerifierConfig(workdir=tmp_path / "verifier", app_home=tmp_path / "app",
                         check_threads=1, verify_margin_seconds=0.5)
    (tmp_path / "app").mkdir()
    v = Verifier(cfg)
    try:
        checks = v.check_round(_info(1, [files.honest, closed], 20.0), TASK, world["test"],
                               SCHEME, TOL)
    finally:
        v.close()
    assert sum(srv.requests.values()) == before  # nothing reached the server
    assert [c.reason for c in checks] == ["model URI refused", "model URI refused"]
    assert all(_refuted(c) for c in checks)
