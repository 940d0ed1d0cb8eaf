"""What the devnet prints: one timestamped line per thing that happened on the chain.

Sidecar events (`Sidecar.emit`: task submitted, keys released, committed, revealed, verdicts)
arrive on the sidecars' threads; round phases and outcomes come from the main loop's queries.
Both go through `Narrator.say` (one lock, so lines never interleave), and the facts the plots
need are recorded into the `History` on the way.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any, TextIO

from abci_app.dlbc.params import PPM
from abci_app.dlbc.records import Phase
from dlbc_ops.devnet.history import History

_PHASE_END: dict[str, str] = {Phase.ANNOUNCED: "start_ns", Phase.TRAIN: "train_end_ns",
                              Phase.REVEAL: "reveal_end_ns", Phase.VERIFY: "verify_end_ns"}
#: Fields of the miner's `committed` event kept in the history: how long it trained and how much
#: of that was optimizer steps (`bench/round_pipeline.py` sums `step_seconds` into a duty cycle).
TIMING_FIELDS = ("step_seconds", "train_seconds", "train_started_ns", "train_ended_ns")


def describe_schedule(params: dict[str, Any]) -> str:
    """One line on how this chain's rounds follow each other (its genesis `params`; a param at
    its default is left out of the stored form, and `rounds_in_flight` defaults to 1)."""
    train, reveal, verify = (int(params.get(k) or 0) for k in ("train_seconds",
                                                                "reveal_seconds",
                                                                "verify_seconds"))
    phases = f"TRAIN {train} s, REVEAL {reveal} s, VERIFY {verify} s"
    if int(params.get("rounds_in_flight") or 1) > 1:
        return (f"rounds: pipelined ({phases}): round n+1 trains while round n reveals and "
                "verifies, its task ANNOUNCED before its TRAIN starts")
    return (f"rounds: sequential ({phases}): the next round starts once the one before it "
            "closed")


def _timing(f: dict[str, Any]) -> str:
    """", 55.2 s training (52.1 s in optimizer steps)" when the event says so."""
    if f.get("train_seconds") is None:
        return ""
    steps = f.get("step_seconds")
    inner = "" if steps is None else f" ({float(steps):.1f} s in optimizer steps)"
    return f", {float(f['train_seconds']):.1f} s training{inner}"


class Narrator:
    def __init__(self, stream: TextIO, history: History) -> None:
        self.stream = stream
        self.history = history
        self.names: dict[str, str] = {}
        """Address hex -> display name (publisher, miner-1, ...)."""
        self._lock = threading.Lock()

    def say(self, text: str) -> None:
        stamp = time.strftime("%H:%M:%S")
        with self._lock:
            print(f"[{stamp}] {text}", file=self.stream, flush=True)

    def name_of(self, addr: str | None) -> str:
        if not addr:
            return "-"
        return self.names.get(addr.lower(), addr[:12])

    # -- sidecar events (any thread)

    def on_event(self, event: str, f: dict[str, Any]) -> None:
        who = self.name_of(f.get("miner")) if f.get("miner") else f.get("role", "?")
        record = self.history.record
        if event == "task_submitted":
            self.say(f"publisher submitted task {f['task_id']} ({f['name']}), reward {f['reward']}")
        elif event == "miner_registered":
            self.say(f"{who} registered")
        elif event == "train_key_released":
            self.say(f"round {f['round']}: publisher released the data key of task {f['task_id']}")
        elif event == "test_key_revealed":
            self.say(f"round {f['round']}: publisher revealed the test key")
        elif event == "training_started":
            self.say(f"round {f['round']}: {who} training, budget {f['budget']:.0f}s")
        elif event == "committed":
            self.say(f"round {f['round']}: {who} committed its model ({f['epochs']} epoch(s)"
                     f"{_timing(f)}, watermark confidence {f['watermark_confidence']:.6f})")
            record(f["round"], who, watermark_confidence=f["watermark_confidence"],
                   epochs=f["epochs"], **{k: f[k] for k in TIMING_FIELDS if k in f})
        elif event == "revealed":
            self.say(f"round {f['round']}: {who} revealed, claims dice {f['score_ppm']/PPM:.4f}")
            record(f["round"], who, claimed_ppm=f["score_ppm"])
        elif event == "round_skipped":
            self.say(f"round {f['round']}: {who} skipped: {f['reason']}")
            if f.get("miner"):
                record(f["round"], who, skipped=str(f["reason"]))
        elif event == "verdicts":
            for c in f["checks"]:
                name = self.name_of(c.miner)
                if c.verdict:
                    self.say(f"round {f['round']}: verdict on {name}: watermark "
                             f"{'ok' if c.watermark_ok else 'MISSING'} "
                             f"({c.watermark_min_confidence:.6f}), measured dice "
                             f"{c.score_ppm/PPM:.4f}{' — ' + c.reason if c.reason else ''}")
                    record(f["round"], name, measured_ppm=c.score_ppm,
                           verifier_confidence=c.watermark_min_confidence)
                else:
                    self.say(f"round {f['round']}: no verdict on {name}: {c.reason}")

    # -- the chain's round record (main loop)

    def phase(self, rec: dict[str, Any], beside: Sequence[dict[str, Any]] = ()) -> None:
        """Round `rec` entered a new phase; `beside` are the other active rounds, named so a
        pipelined chain reads right ("round 4: phase TRAIN ... beside round 3 in REVEAL")."""
        n, phase = rec["round"], rec.get("phase")
        end_ns = int(rec.get(_PHASE_END.get(str(phase), ""), 0) or 0)
        left = max(0.0, (end_ns - time.time_ns()) / 1e9)  # display only: the chain keeps BFT time
        extra = ""
        if phase == Phase.ANNOUNCED:
            text = (f"round {n}: phase ANNOUNCED (TRAIN in ~{left:.0f}s), task "
                    f"{rec['task_id']}: its encrypted data can be fetched now")
        else:
            if phase == Phase.TRAIN:
                extra = f", task {rec['task_id']}, seed {str(rec.get('seed'))[:16]}…"
            elif phase == Phase.REVEAL:
                extra = f", {len(rec.get('commitments') or [])} commitment(s)"
            elif phase == Phase.VERIFY:
                extra = f", {len(rec.get('revealed') or [])} reveal(s)"
            text = f"round {n}: phase {phase} (~{left:.0f}s){extra}"
        others = [f"round {o['round']} in {o.get('phase')}" for o in beside
                  if o["round"] != n]
        self.say(text + (f" — beside {', '.join(others)}" if others else ""))

    def outcome(self, n: int, rec: dict[str, Any]) -> None:
        w = rec.get("winner")
        if w:
            score = int(w.get("verified_score_ppm") or w.get("claimed_score_ppm") or 0)
            self.say(f"round {n}: winner: {w['miner']} ({self.name_of(w['miner'])}) "
                     f"score {score/PPM:.4f}")
            self.say(f"round {n}: {self.payout(rec)}")
        else:
            self.say(f"round {n}: closed without a winner (outcome {rec.get('outcome')})")

    def payout(self, rec: dict[str, Any]) -> str:
        """What a settled round paid whom, each part labelled.

        Why spelled out: "block reward 100 miner / 999900 publisher" reads as a bug to a
        newcomer. It is paper Eq. 5-6: while few tasks are queued publishers are scarce, so
        they get most of the minted block reward, and the miner's pay is the task reward
        (README "The reward split, worked"; abci_app/dlbc/rewards.py)."""
        w = rec["winner"]
        miner, publisher = self.name_of(w["miner"]), self.name_of(rec.get("publisher"))
        if publisher != "publisher":
            publisher = f"publisher {publisher}"
        to_miner = int(w.get("block_reward_miner") or 0)
        to_pub = int(w.get("block_reward_publisher") or 0)
        text = (f"paid: {miner} gets the task reward {w.get('task_reward')} + {to_miner} of "
                f"the {to_miner + to_pub} block reward, {publisher} the other {to_pub}")
        if rec.get("publisher_share_ppm") is None or rec.get("queue_len") is None:
            return text
        share = int(rec["publisher_share_ppm"]) / PPM
        return (f"{text} (paper Eq. 5-6: publisher share {share:.2%} with {rec['queue_len']} "
                "task(s) queued)")

    def balances(self, n: int, balances: dict[str, Any]) -> None:
        listed = ", ".join(f"{name}={bal}" for name, bal in balances.items())
        self.say(f"round {n}: balances: {listed}")
