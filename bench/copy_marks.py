"""Copy-defence bench (issue 13): cost of testing one revealed model against K earlier marks.

The verifier tests every revealed model against every earlier winner and reveal of the same
architecture (training/sidecars/copy_marks.py). For K = 1, 10, 100, 1000 marks it times, on the
mean kernel of a real (untrained) U-Net, in the same run:

- one by one (the baseline, what the verifier did before): `scheme.key` + `detect_vector` per
  key, i.e. a dense (T, m) matrix generated (watermark/keys.py caches 64 of them) and multiplied;
- batched, cold: `foreign_mark` with an empty key cache (each key's indices generated once);
- batched, warm: `foreign_mark` again, the indices cached (the verifier's case from the second
  model of a round on: the marks are the same for every model of a round).

K = 10,000 only at m = 1152 (one by one takes seconds there, so it runs once).

No mark is present, so every key is tested (the worst case). The chain's default scheme (256 bits,
"diff") on two layer sizes: m = 1152 (unet2d depth 2 width 32) and m = 4608 (width 128).
Then the index: memory (tracemalloc) and `marks()` time for a 10,000-round chain, 5 reveals a
round (winner among them), with 20 miners taking turns and with every reveal a new address.

Run: .venv/bin/python bench/copy_marks.py [--repeat 3] [--rounds 10000]
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this file's folder leads sys.path and bench/training.py, bench/watermark.py
# would shadow the `training` and `watermark` packages: search the repo root instead.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

import argparse
import functools
import hashlib
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import replace

import numpy as np
import numpy.typing as npt
import torch

from abci_app.dlbc.records import (
    Address,
    Amount,
    Height,
    Phase,
    RoundInfo,
    RoundStatus,
    Task,
    TaskId,
    TaskSpec,
    TaskStatus,
)
from training.models import build_model
from training.sidecars import mark_batch
from training.sidecars.copy_marks import MarkIndex, OtherMark, copy_bits_needed, foreign_mark
from training.sidecars.offline_records import round_info
from training.sidecars.scheme import WatermarkScheme
from watermark import WatermarkError, detect_vector
from watermark.layers import layer_from

COUNTS = (1, 10, 100, 1000, 10_000)


def _addr(i: int) -> bytes:
    return hashlib.sha256(b"bench miner %d" % i).digest()[:20]


def _seed(n: int) -> bytes:
    return hashlib.sha256(b"bench round %d" % n).digest()


def closed_round(n: int, miners: list[bytes]) -> RoundInfo:
    """A closed round `n` whose `miners` revealed, the first of them the winner (the fields the
    index reads are real; the rest are valid placeholders)."""
    base = round_info(n, _seed(n), [], miners, won_by=miners[0])
    rec = replace(base.record, status=RoundStatus.CLOSED, phase=Phase.DONE,
                  end_height=Height(2))
    return replace(base, record=rec)


def one_by_one(w: npt.NDArray[np.float64], layer: str, miner: str, others: list[OtherMark],
               scheme: WatermarkScheme) -> OtherMark | None:
    """The verifier's copy test before this issue: one key, one dense product, at a time."""
    need = copy_bits_needed(scheme.n_bits)
    assert need is not None
    for other in others:
        if other.miner == miner:
            continue
        try:
            key = scheme.key(other.seed, bytes.fromhex(other.miner), layer)
            det = detect_vector(w, key, scheme.threshold)
        except (WatermarkError, ValueError):
            continue
        if int(np.count_nonzero(det.confidences > scheme.threshold)) >= need:
            return other
    return None


def _best(fn: Callable[[], object], repeat: int, before: Callable[[], None] = lambda: None
          ) -> float:
    """Best of `repeat` wall-clock seconds (`before` runs untimed ahead of each)."""
    best = float("inf")
    for _ in range(repeat):
        before()
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def bench_check(width: int, repeat: int, counts: tuple[int, ...] = COUNTS
                ) -> list[tuple[int, float, float, float]]:
    scheme = WatermarkScheme.genesis_default()  # 256 bits, "diff"
    model = build_model("unet2d", {"depth": 2, "base_width": width}, seed=0)
    layer = scheme.layer(model)
    w = layer_from(model, layer)
    me = _addr(10**6).hex()
    rows = []
    for k in counts:
        others = [OtherMark(_addr(i).hex(), _seed(i), f"revealed in round {i}") for i in range(k)]
        assert foreign_mark(w, layer, me, others, scheme) is None  # all K keys are tested
        def batched(marks: list[OtherMark] = others) -> object:
            return foreign_mark(w, layer, me, marks, scheme)

        # one by one at 10,000 keys takes seconds: once is enough to see it
        base = _best(functools.partial(one_by_one, w, layer, me, others, scheme),
                     1 if k > 1000 else repeat)
        cold = _best(batched, repeat, before=mark_batch.clear_cache)
        batched()
        warm = _best(batched, repeat)
        rows.append((k, base, cold, warm))
    print(f"m = {w.shape[0]} ({layer}, unet2d depth 2 width {width}), {scheme.n_bits} bits "
          f"{scheme.matrix}:")
    print("      K   one by one     batched cold        batched warm")
    for k, base, cold, warm in rows:
        print(f"  {k:5d}  {base * 1e3:9.2f} ms  {cold * 1e3:8.2f} ms {base / cold:5.1f}x  "
              f"{warm * 1e3:8.3f} ms {base / warm:6.1f}x")
    return rows


def bench_index(n_rounds: int, distinct: bool) -> tuple[float, float, int]:
    """(MiB held, ms per marks() call, marks) of an index over n_rounds closed rounds."""
    rounds = [closed_round(n, [_addr(5 * n + j if distinct else (5 * n + j) % 20)
                               for j in range(5)]) for n in range(1, n_rounds + 1)]
    tracemalloc.start()
    start = tracemalloc.take_snapshot()
    index = MarkIndex(None)
    for info in rounds:
        index.add_round(info, "unet2d")
    held = tracemalloc.take_snapshot().compare_to(start, "filename")
    tracemalloc.stop()
    mib = sum(s.size_diff for s in held) / 2**20
    now = replace(closed_round(n_rounds + 1, [_addr(0)]), commitments=())
    spec = TaskSpec("unet2d", "{}", 0, 1, "https://d.example/x", 1, b"\0" * 32, b"\0" * 32,
                    "https://d.example/y", b"\0" * 32, b"\0" * 32, "dice", 0, (1,), 1, 1)
    task = Task(TaskId(1), Address(b"\1" * 20), spec, Amount(10_000), TaskStatus.PENDING, 0, (),
                Height(1), 1, 1, None, None, None)
    t = _best(lambda: index.marks(now, task), 3)
    return mib, t * 1e3, len(index.marks(now, task))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3, help="best of N per timing")
    ap.add_argument("--rounds", type=int, default=10_000, help="closed rounds in the index")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    small = bench_check(32, args.repeat)
    bench_check(128, args.repeat, COUNTS[:-1])
    scheme = WatermarkScheme.genesis_default()
    rows = mark_batch._make_rows((_seed(0), _addr(0), "x", scheme.matrix, scheme.n_bits, 4608),
                                 scheme)
    print(f"key cache: {mark_batch.KEY_CACHE_BYTES >> 20} MiB budget; a 256-bit diff key takes "
          f"{rows.nbytes} bytes there (the dense X at m = 4608: {256 * 4608 * 8 >> 20} MiB, "
          "of which watermark.keys keeps the last 64)")
    for distinct in (False, True):
        mib, ms, n = bench_index(args.rounds, distinct)
        who = "every reveal a new address" if distinct else "20 miners taking turns"
        print(f"index of {args.rounds} rounds x 5 reveals ({who}): {mib:.1f} MiB held, "
              f"marks() {ms:.1f} ms for {n} marks")
    k, base, _, warm = small[COUNTS.index(1000)]
    print(f"copy check: {k} marks in {warm * 1e3:.2f} ms per model "
          f"({base / warm:.0f}x faster than one by one)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
