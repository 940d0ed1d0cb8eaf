"""Round pipeline benchmark on the devnet (issue 14): miner duty cycle and the 10x miner's win rate.

(a) Duty cycle. A fresh devnet (in-process `dlbc_ops.devnet.Devnet`: the real app, the embedded
    dev node, publisher, two miners and a verifier) with both miners at full budget, for
    `--warmup` + `--rounds` consecutive pipelined rounds; then the same with `--sequential`
    rounds (genesis rounds_in_flight=1) as the baseline, in the same run. Per miner:

        duty = sum over the measured rounds of its step_seconds
               / (last TRAIN end - first TRAIN start)

    step_seconds is the miner's own time inside optimizer steps (the `committed` event's, the
    trainer's `TrainResult.step_seconds`); the denominator is BFT time from the round records
    (`start_ns`, `train_end_ns`). The warm-up rounds (miner registration, first imports) are
    left out. Printed per round per miner: step seconds, the miner's idle gap before that
    round's training (its previous training end to this one's start: commit margin + key-release
    latency + data fetch), and the chain's gap between one round's TRAIN end and the next TRAIN
    start (0 when pipelined, REVEAL + VERIFY + settlement when sequential). Since the idle gap
    per round is about constant, duty ~ (1 - gap / TRAIN) x steps / training: the estimate for
    the genesis default TRAIN (300 s) is printed too.
    Last line of the part: `miner duty cycle: pipelined XX.X%, sequential YY.Y% over N rounds`
    (mean of the two miners).

(b) Win rate. A fresh pipelined devnet for `--win-rounds` rounds (demo phases 60/12/30) where
    miner-1 trains all of TRAIN less the commit margin and miner-2 a tenth of that
    (`MinerSpec.max_train_seconds`). Per round: each miner's verified score (the round record's
    `verdicts`; a claim the verifier skipped because it cannot beat a confirmed model is shown
    as claimed), epochs, and the winner. Last line: `win rate of the 10x miner: XX% over N rounds`
    (rounds won by miner-1 over all rounds closed). Its learning curves stay in OUT/plots/.

With both parts the win-rate line is last, the duty line just before it. Each devnet gets a
fresh folder under --workdir (kept, printed) and its own base port; the narration of each goes
to <folder>/narration.log. Runtimes: (a) ~ (warmup + rounds) x TRAIN pipelined plus
(warmup + rounds) x (TRAIN + REVEAL + VERIFY) sequential; (b) ~ win-rounds x 60 s.

Usage: python bench/round_pipeline.py [--duty-only | --win-only] [--rounds 5] [--warmup 1]
       [--train-seconds 90 --reveal-seconds 12 --verify-seconds 30] [--win-rounds 20]
       [--block-time 1] [--base-port 36100] [--workdir DIR]
Timings vary by machine (2 CPU cores here: the miners, the verifier, app and node share them);
nothing is asserted.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Run as `python bench/round_pipeline.py`, this file's directory comes first on sys.path and
# bench/training.py would shadow the `training` package; drop that entry.
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)

from abci_app.dlbc.params import PPM, Params
from dlbc_ops.devnet.config import DevnetConfig, MinerSpec
from dlbc_ops.devnet.devnet import Devnet
from dlbc_ops.localnet import demo
from training.sidecars.miner import MinerConfig

NS = 1_000_000_000
STRONG, WEAK = demo.MINERS
DEFAULT_TRAIN_S = Params().train_seconds


@dataclass(frozen=True, slots=True)
class MinerRound:
    """One miner's training in one round, from the history row of its `committed` event."""

    step_seconds: float
    train_seconds: float
    started_ns: int | None
    ended_ns: int | None


@dataclass
class DevnetRun:
    label: str
    out: Path
    rounds: list[dict[str, Any]]
    """`rounds/<n>` of every round closed, in order."""
    rows: dict[tuple[int, str], dict[str, Any]]
    """History rows by (round, miner name)."""
    names: dict[str, str]
    """Address hex -> miner name."""
    wall_seconds: float


def run_devnet(label: str, cfg: DevnetConfig) -> DevnetRun:
    """Start a devnet, run it until `cfg.rounds` rounds closed, stop it (also on failure)."""
    cfg.out.mkdir(parents=True, exist_ok=True)
    with open(cfg.out / "narration.log", "a", buffering=1) as log:
        cfg.stream = log
        net = Devnet(cfg)
        t0 = time.monotonic()
        net.start()
        try:
            code = net.run()
        finally:
            net.shutdown()
    if code != 0:
        raise SystemExit(f"{label}: the devnet failed ({net.failure}); see {cfg.out}")
    rows = {(int(r["round"]), str(r["miner"])): r for r in net.history.snapshot()}
    return DevnetRun(label, cfg.out, list(net.rounds_closed), rows, dict(net.narrator.names),
                     time.monotonic() - t0)


def devnet_config(args: argparse.Namespace, out: Path, port: int, rounds: int,
                  phases: tuple[int, int, int], miners: list[MinerSpec], *,
                  sequential: bool = False, plots: bool = False) -> DevnetConfig:
    train, reveal, verify = phases
    cfg = DevnetConfig(out=out, base_port=port, rounds=rounds, block_time=args.block_time,
                       train_seconds=train, reveal_seconds=reveal, verify_seconds=verify,
                       sequential=sequential, miners=miners, plots=plots, log_level="warning")
    if args.samples is not None:
        cfg.samples = args.samples
    return cfg


def miner_round(run: DevnetRun, n: int, miner: str) -> MinerRound | None:
    row = run.rows.get((n, miner))
    if row is None or row.get("step_seconds") is None:
        return None  # skipped the round (or committed nothing)
    return MinerRound(float(row["step_seconds"]), float(row.get("train_seconds") or 0.0),
                      row.get("train_started_ns"), row.get("train_ended_ns"))


# ------------------------------------------------------------------------------- (a) duty cycle


@dataclass(frozen=True, slots=True)
class Duty:
    per_miner: dict[str, float]
    rounds: int
    span_seconds: float
    idle_gap: dict[str, float]
    """Mean seconds of each round's TRAIN the miner did not train (TRAIN - its training)."""
    inner: dict[str, float]
    """Mean share of its training time in optimizer steps."""
    chain_gap: float
    """Mean BFT seconds from a round's TRAIN end to the next round's TRAIN start."""

    @property
    def mean(self) -> float:
        return statistics.fmean(self.per_miner.values())


def duty_cycle(run: DevnetRun, warmup: int, miners: list[str]) -> Duty:
    measured = run.rounds[warmup:]
    if not measured:
        raise SystemExit(f"{run.label}: no round closed after the {warmup} warm-up round(s)")
    span = (int(measured[-1]["train_end_ns"]) - int(measured[0]["start_ns"])) / NS
    per, idle, inner = {}, {}, {}
    for m in miners:
        work = [(rec, miner_round(run, int(rec["round"]), m)) for rec in measured]
        per[m] = sum(w.step_seconds for _, w in work if w is not None) / span
        trained = [(rec, w) for rec, w in work if w is not None and w.train_seconds > 0]
        idle[m] = statistics.fmean(_train_phase_s(rec) - w.train_seconds for rec, w in trained) \
            if trained else float("nan")
        inner[m] = statistics.fmean(w.step_seconds / w.train_seconds for _, w in trained) \
            if trained else float("nan")
    gaps = [(int(b["start_ns"]) - int(a["train_end_ns"])) / NS
            for a, b in itertools.pairwise(measured)]
    return Duty(per, len(measured), span, idle, inner, statistics.fmean(gaps) if gaps else 0.0)


def _train_phase_s(rec: dict[str, Any]) -> float:
    return (int(rec["train_end_ns"]) - int(rec["start_ns"])) / NS


def print_rounds(run: DevnetRun, warmup: int, miners: list[str]) -> None:
    print(f"  {run.label}: {len(run.rounds)} round(s) in {run.wall_seconds:.0f} s wall "
          f"({warmup} warm-up), OUT {run.out}")
    prev: dict[str, MinerRound | None] = {}
    for i, rec in enumerate(run.rounds):
        n = int(rec["round"])
        nxt = run.rounds[i + 1] if i + 1 < len(run.rounds) else None
        gap = "" if nxt is None else \
            f", gap to round {nxt['round']}: {(int(nxt['start_ns']) - int(rec['train_end_ns'])) / NS:.1f} s"
        parts = []
        for m in miners:
            w = miner_round(run, n, m)
            if w is None:
                parts.append(f"{m} no commit")
            else:
                before = prev.get(m)
                idle = "" if before is None or before.ended_ns is None or w.started_ns is None \
                    else f", idle before {(w.started_ns - before.ended_ns) / NS:.1f} s"
                parts.append(f"{m} steps {w.step_seconds:.1f} s (training {w.train_seconds:.1f} s"
                             f"{idle})")
            prev[m] = w
        tag = " (warm-up)" if i < warmup else ""
        print(f"    round {n}{tag}: TRAIN {_train_phase_s(rec):.1f} s; {'; '.join(parts)}{gap}")


def duty_part(args: argparse.Namespace, work: Path) -> str:
    miners = [MinerSpec(STRONG, None), MinerSpec(WEAK, None)]
    names = [m.name for m in miners]
    phases = (args.train_seconds, args.reveal_seconds, args.verify_seconds)
    total = args.warmup + args.rounds
    print(f"(a) duty cycle: 2 miners at full budget, {total} rounds each mode "
          f"(TRAIN/REVEAL/VERIFY {'/'.join(map(str, phases))} s, block {args.block_time} s)")
    runs = {}
    for mode, sequential, port in (("pipelined", False, args.base_port),
                                   ("sequential", True, args.base_port + 100)):
        cfg = devnet_config(args, work / f"duty-{mode}", port, total, phases, miners,
                            sequential=sequential)
        runs[mode] = run_devnet(mode, cfg)
        print_rounds(runs[mode], args.warmup, names)
    duty = {mode: duty_cycle(run, args.warmup, names) for mode, run in runs.items()}
    for mode, d in duty.items():
        each = ", ".join(f"{m} {100 * v:.1f}%" for m, v in d.per_miner.items())
        idle = ", ".join(f"{m} {v:.1f} s" for m, v in d.idle_gap.items())
        inner = ", ".join(f"{m} {100 * v:.1f}%" for m, v in d.inner.items())
        print(f"  {mode}: duty {each} over {d.rounds} rounds ({d.span_seconds:.0f} s from first "
              f"TRAIN start to last TRAIN end); idle per round {idle}; steps/training {inner}; "
              f"chain gap between TRAINs {d.chain_gap:.1f} s")
    p = duty["pipelined"]
    idle_s = statistics.fmean(p.idle_gap.values())
    inner_s = statistics.fmean(p.inner.values())
    t = DEFAULT_TRAIN_S
    est = (t - idle_s) / t * inner_s
    s = duty["sequential"]
    # Sequential: REVEAL always runs to its end; VERIFY ends at the Settle, once the verdicts
    # are in, so what this run took beyond its REVEAL is kept as the settle time.
    reveal_d, verify_d = Params().reveal_seconds, Params().verify_seconds
    settle = max(0.0, s.chain_gap - args.reveal_seconds)
    seq_est = (t - idle_s) / (t + reveal_d + settle) * inner_s
    print(f"  estimate at the default phases (TRAIN {t} s, REVEAL {reveal_d} s, VERIFY "
          f"{verify_d} s): pipelined (1 - {idle_s:.1f}/{t}) x {100 * inner_s:.1f}% = "
          f"{100 * est:.1f}%; sequential ({t} - {idle_s:.1f}) / ({t} + {reveal_d} + "
          f"{settle:.1f} s to settle, as here) x {100 * inner_s:.1f}% = {100 * seq_est:.1f}% "
          f"({100 * t / (t + reveal_d + verify_d):.1f}% of BFT time is TRAIN when VERIFY runs "
          "its whole length)")
    return (f"miner duty cycle: pipelined {100 * p.mean:.1f}%, sequential {100 * s.mean:.1f}% "
            f"over {min(p.rounds, s.rounds)} rounds")


# ------------------------------------------------------------------------------- (b) win rate


def scores(run: DevnetRun, rec: dict[str, Any], miner: str) -> str:
    """A miner's score in a closed round: the validators' verified one ("0.8123"), else what
    they decided ("refuted"), else its claim (the verifier skips a claim that cannot beat a
    confirmed model), else why it had none (a skipped round)."""
    for v in rec.get("verdicts") or []:
        if run.names.get(str(v["miner"]).lower()) == miner:
            if v.get("status") == "confirmed":
                return f"{int(v['verified_score_ppm']) / PPM:.4f}"
            return str(v.get("status"))
    row = run.rows.get((int(rec["round"]), miner), {})
    if row.get("claimed_ppm") is not None:
        return f"claimed {int(row['claimed_ppm']) / PPM:.4f}, not verified"
    if row.get("skipped"):
        return f"skipped ({str(row['skipped'])[:60]})"
    return "no reveal"


def win_part(args: argparse.Namespace, work: Path) -> str:
    train = args.win_train_seconds
    full = train - MinerConfig.commit_margin_seconds
    weak = full / 10
    miners = [MinerSpec(STRONG, None), MinerSpec(WEAK, weak)]
    phases = (train, args.win_reveal_seconds, args.win_verify_seconds)
    print(f"(b) win rate: {STRONG} trains all of TRAIN (~{full:.1f} s), {WEAK} {weak:.1f} s, "
          f"{args.win_rounds} pipelined rounds (TRAIN/REVEAL/VERIFY {'/'.join(map(str, phases))} s)")
    cfg = devnet_config(args, work / "win-rate", args.base_port + 200, args.win_rounds, phases,
                        miners, plots=True)
    run = run_devnet("win rate", cfg)
    wins = contested = contested_wins = 0
    for rec in run.rounds:
        n = int(rec["round"])
        w = rec.get("winner")
        winner = run.names.get(str(w["miner"]).lower(), "?") if w else "none"
        wins += winner == STRONG
        revealed = {run.names.get(str(r["miner"]).lower()) for r in rec.get("revealed") or []}
        if {STRONG, WEAK} <= revealed:  # both models were in the competition
            contested += 1
            contested_wins += winner == STRONG
        parts = []
        for m in (STRONG, WEAK):
            row = run.rows.get((n, m), {})
            parts.append(f"{m} {scores(run, rec, m)} ({row.get('epochs', 0)} epochs)")
        print(f"    round {n}: {'; '.join(parts)}; winner {winner} "
              f"({rec.get('outcome')})")
    print(f"  {len(run.rounds)} rounds in {run.wall_seconds:.0f} s wall; learning curves "
          f"{run.out / 'plots' / 'learning_curves.png'}, history {run.out / 'history.json'}")
    print(f"  both miners revealed in {contested} of {len(run.rounds)} rounds; the 10x miner "
          f"won {contested_wins} of those (a round the weak miner skipped is a win by default)")
    n = len(run.rounds)
    return f"win rate of the 10x miner: {100 * wins / max(n, 1):.0f}% over {n} rounds"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--duty-only", action="store_true", help="only (a), the duty cycle")
    which.add_argument("--win-only", action="store_true", help="only (b), the win rate")
    parser.add_argument("--rounds", type=int, default=5, help="(a) measured rounds per mode")
    parser.add_argument("--warmup", type=int, default=1, help="(a) rounds left out first")
    parser.add_argument("--train-seconds", type=int, default=90)
    parser.add_argument("--reveal-seconds", type=int, default=12)
    parser.add_argument("--verify-seconds", type=int, default=30)
    parser.add_argument("--win-rounds", type=int, default=20, help="(b) rounds")
    phases = dict(demo.DEMO_PARAMS)
    parser.add_argument("--win-train-seconds", type=int, default=phases["train_seconds"])
    parser.add_argument("--win-reveal-seconds", type=int, default=phases["reveal_seconds"])
    parser.add_argument("--win-verify-seconds", type=int, default=phases["verify_seconds"])
    parser.add_argument("--samples", type=int, default=None,
                        help="demo images per task (default: the devnet's)")
    parser.add_argument("--block-time", type=float, default=1.0)
    parser.add_argument("--base-port", type=int, default=36100,
                        help="RPC port of the first devnet; the others +100, +200")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="where the devnets' folders go (kept; default: a new temp folder)")
    args = parser.parse_args()
    if args.rounds < 1 or args.win_rounds < 1 or args.warmup < 0:
        parser.error("--rounds and --win-rounds must be >= 1, --warmup >= 0")
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="dlbc-bench-round-pipeline-", dir=args.workdir))
    print(f"devnets under {work} (kept)")
    lines = []
    if not args.win_only:
        lines.append(duty_part(args, work))
        print(lines[-1], flush=True)
    if not args.duty_only:
        win = win_part(args, work)
        if lines:
            print(lines[-1])  # the duty line just before the win-rate line, as issue 14 asks
        print(win)
    return 0


if __name__ == "__main__":
    sys.exit(main())
