"""Verifier benchmark: one honest reveal among 50 hostile ones (issue 13 "Verifier").

Every hostile reveal claims a perfect score, so in claimed order all 50 come before the honest
one: slow drips (one byte a second), huge declared sizes (1 TiB Content-Length), digest
mismatches, pickled files, truncated files, unwatermarked models and lying claims (a valid
model with its miner's own watermark, claiming 1.0). All are real files behind a real HTTP
server on 127.0.0.1 (`training.sidecars.hostile_server`, fetched with allow_private), checked
by the real `Verifier.check_round` (what `verify_round` runs after reading the chain; the round
records are built here, not read from a chain), with its download pool, minimum rate and
killable check process, at the default VerifierConfig and the genesis default VERIFY length
(`abci_app.dlbc.params.Params.verify_seconds`).

Baseline, same run: the honest reveal alone. Reported: when the honest verdict landed in the
verdict file (what ExtendVote reads), when the file was marked complete (the round can settle
at the next height), the VERIFY wall against the phase length, and what became of each
hostile kind.

Usage: python bench/verifier.py [--hostile 50] [--kinds drip,huge,...] [--test-samples 128]
       [--workdir DIR]
Timings vary by machine (2 CPU cores here); nothing is asserted.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

# Run as `python bench/verifier.py`, this file's directory comes first on sys.path and would
# shadow the `training` package through bench/training.py; drop that entry.
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)

import torch

from abci_app.dlbc.params import Params
from abci_app.dlbc.records import (
    Address,
    Amount,
    Height,
    Reveal,
    RoundInfo,
    Task,
    TaskId,
    TaskSpec,
    TaskStatus,
)
from abci_app.dlbc.verdicts import read_verdicts
from training.data import ArrayDataset, make_segmentation_2d
from training.sidecars.base import WatermarkScheme
from training.sidecars.hostile_round import KINDS, make_round
from training.sidecars.hostile_server import HostileServer
from training.sidecars.offline_records import round_info as offline_round_info
from training.sidecars.offline_records import task_spec
from training.sidecars.verifier import ModelCheck, Verifier, VerifierConfig

SEED = hashlib.sha256(b"bench verifier round").digest()


def spec() -> TaskSpec:
    return replace(task_spec("unet2d", '{"base_width": 16, "depth": 2}', "dice"),
                   data_uri="http://data", test_uri="http://test", input_shape=(1, 16, 16),
                   num_classes=2)


def round_info(n: int, reveals: tuple[Reveal, ...], verify_seconds: int) -> RoundInfo:
    now = time.time_ns()
    base = offline_round_info(n, SEED, [r.miner for r in reveals], [])
    rec = replace(base.record, start_ns=now, train_end_ns=now, reveal_end_ns=now,
                  verify_end_ns=now + verify_seconds * 1_000_000_000, reveals=len(reveals))
    return replace(base, record=rec, revealed=reveals)


def run_round(work: Path, n: int, reveals: tuple[Reveal, ...], test: ArrayDataset,
              honest: bytes, verify_seconds: int) -> dict[str, Any]:
    """One VERIFY: the verifier's check process is started first (as `Verifier.setup` does);
    a watcher reads the verdict file every 20 ms like ExtendVote would at every height."""
    app = work / f"app-{n}"
    app.mkdir()
    v = Verifier(VerifierConfig(workdir=work / f"verifier-{n}", app_home=app,
                                allow_private_networks=True))
    v.cfg.workdir.mkdir()
    v.worker.start()
    t0 = time.monotonic()
    marks: dict[str, float] = {}
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(0.02):
            found = read_verdicts(app, n)
            if found is None:
                continue
            if "honest" not in marks and any(x.miner == honest for x in found.verdicts):
                marks["honest"] = time.monotonic() - t0
            if found.complete and "complete" not in marks:
                marks["complete"] = time.monotonic() - t0

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        checks = v.check_round(round_info(n, reveals, verify_seconds), Task(
            TaskId(1), Address(b"\1" * 20), spec(), Amount(10_000), TaskStatus.SELECTED, 0, (),
            Height(1), 1, 1, None, b"k" * 32, None), test, WatermarkScheme.genesis_default(),
            Params().tolerance_ppm)
        wall = time.monotonic() - t0
    finally:
        time.sleep(0.05)
        stop.set()
        watcher.join()
        start_s = v.worker.start_seconds
        v.close()
    return {"checks": checks, "wall": wall, "start": start_s, **marks}


def outcome(c: ModelCheck, tol: int) -> str:
    if not c.verdict:
        return "no verdict: " + c.reason.split(":")[0].split(" (")[0]
    if c.watermark_ok and abs(c.score_ppm - c.claimed_score_ppm) <= tol:
        return "confirmed"
    return "refuted: " + (c.reason.split(":")[0].split(" (")[0]
                          or "measured score far from the claim")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hostile", type=int, default=50)
    parser.add_argument("--kinds", default=",".join(KINDS),
                        help="hostile kinds, dealt round-robin (e.g. drip: 50 slow drips)")
    parser.add_argument("--test-samples", type=int, default=128,
                        help="test set size (16x16 images); larger makes each scoring dearer")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    logging.getLogger("dlbc").setLevel(logging.ERROR)  # the per-model warnings: in the table
    torch.set_num_threads(1)
    verify_seconds = Params().verify_seconds
    tol = Params().tolerance_ppm
    dealt = args.kinds.split(",")
    kinds = [dealt[i % len(dealt)] for i in range(args.hostile)]
    with tempfile.TemporaryDirectory(dir=args.workdir, prefix="dlbc-bench-verifier-") as tmp:
        work = Path(tmp)
        root = work / "served"
        root.mkdir()
        test = make_segmentation_2d(args.test_samples, 16, seed=3)
        with HostileServer(root, drip_seconds=1.0) as srv:
            t0 = time.monotonic()
            files = make_round(root, srv, SEED, WatermarkScheme.genesis_default(), test, kinds)
            print(f"made 1 honest + {len(kinds)} hostile reveals in "
                  f"{time.monotonic() - t0:.1f}s: {dict(Counter(kinds))}")
            honest = files.honest.miner
            base = run_round(work, 1, (files.honest,), test, honest, verify_seconds)
            full = run_round(work, 2, files.reveals, test, honest, verify_seconds)
    print(f"VERIFY phase: {verify_seconds} s (genesis default); per-model budget "
          f"{VerifierConfig.per_model_seconds:.0f} s, min rate "
          f"{VerifierConfig.min_rate_bps // 1024} KiB/s, {VerifierConfig.download_workers} "
          f"downloads at once; check process start {full['start']:.2f}s "
          f"(baseline run {base['start']:.2f}s)")
    for name, r in (("baseline (honest alone)", base), (f"honest + {len(kinds)} hostile", full)):
        print(f"  {name:24s} honest verdict in file at {r.get('honest', float('nan')):6.2f}s  "
              f"complete at {r.get('complete', float('nan')):6.2f}s  wall {r['wall']:6.2f}s")
    ratio = full.get("honest", float("nan")) / max(base.get("honest", float("nan")), 1e-9)
    print(f"  honest verdict {ratio:.1f}x later than alone; wall "
          f"{full['wall'] / max(base['wall'], 1e-9):.1f}x the baseline, "
          f"{100 * full['wall'] / verify_seconds:.0f} % of VERIFY")
    by_miner = {c.miner: c for c in full["checks"]}
    table: dict[str, Counter[str]] = {}
    secs: dict[str, float] = {}
    for kind, rev in files.hostile:
        c = by_miner[rev.miner.hex()]
        table.setdefault(kind, Counter())[outcome(c, tol)] += 1
        secs[kind] = max(secs.get(kind, 0.0), c.seconds)
    print("  hostile kind   n  outcome" + " " * 42 + "max s")
    for kind in KINDS:
        if kind in table:
            what = ", ".join(f"{k} x{v}" for k, v in table[kind].items())
            print(f"  {kind:10s} {sum(table[kind].values()):3d}  {what:48s} {secs[kind]:5.1f}")
    hc = by_miner[honest.hex()]
    ok = outcome(hc, tol) == "confirmed"
    print(f"honest model confirmed: {'yes' if ok else 'no'}, verify wall {full['wall']:.1f} s "
          f"of {verify_seconds:.1f} s")


if __name__ == "__main__":
    main()
