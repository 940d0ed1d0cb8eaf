"""Which revealed models a verifier checks, in what order, and for how long (docs/verification.md
"Order, stop rule and budgets"). Pure bookkeeping: no I/O, no torch, so the rule is tested alone.

Order: decreasing claimed score, ties by miner address (paper IV-C: "validate submissions which
start from the best performance model").

Stop rule, from settlement (abci_app/dlbc/settle.py steps 3-4): a model can only win if it is
confirmed, i.e. its measured score s satisfies |s - claim| <= tolerance, so s <= claim +
tolerance; it must reach the task's minimum; and it must have the highest verified score
(ties go to the earlier reveal, so an equal score can still win). Honest verifiers measure the
same integer-exact score, so once this verifier has confirmed a model measured at `best`, a
reveal r can still change the winner only if

    claim(r) + tolerance >= max(best, min_score)

(with best = -inf before any confirmation). Every other reveal is *not needed*: it gets no
verdict and is never fetched. That is at most 2·tolerance below the confirmed claim (best >=
claim - tolerance), exactly as the paper's "start from the best" intends, and it bounds what
lying low can cost a verifier. Since claims only order the work, a model whose claim is below
the line gains nothing by being left unchecked (it cannot win), and it keeps its reveal deposit
(no verdict is no refutation).

A verdict set is *complete* (`VerdictFile.complete`, the flag settlement counts, settle.py step
2) when every needed reveal has an outcome: a verdict, or given up (unavailable, too slow, out
of its budget). Then the round can settle at the next height. When VERIFY is about to end the
verifier marks what it has complete anyway: an incomplete file makes its validator absent, and
with enough such validators the round cannot settle at all (the starvation of issue 13).

Budgets. `per_model_seconds` bounds the verifier's own work on one model (its download plus its
check; time spent waiting in the queue is not counted). The per-miner budget bounds what one
miner's *unconfirmed* reveals (no verdict, refuted) may cost over a window of recent rounds, so
an address that stalled or lied before gets less time next round; confirmed work costs a miner
nothing. Sybil addresses each get a fresh miner budget, so the defence against 50 sybils is the
per-model bound, the minimum download rate, concurrent downloads and the cheap checks first,
not this ledger: it is there so one address cannot buy more than its share round after round.
"""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from abci_app.dlbc.records import Reveal

#: A budget below this is not worth starting a download for.
MIN_USEFUL_SECONDS = 0.5


def check_order(reveals: Iterable[Reveal]) -> list[Reveal]:
    """Decreasing claimed score, ties by miner address (every verifier the same order)."""
    return sorted(reveals, key=lambda r: (-r.claimed_score_ppm, r.miner))


def can_still_win(claim_ppm: int, best_ppm: int | None, tolerance_ppm: int,
                  min_score_ppm: int) -> bool:
    """Whether a reveal claiming `claim_ppm` could still be the winner once a model measured at
    `best_ppm` is confirmed (None: none yet). See the module docstring."""
    line = min_score_ppm if best_ppm is None else max(best_ppm, min_score_ppm)
    return claim_ppm + tolerance_ppm >= line


@dataclass
class RoundPlan:
    """The stop rule for one round, fed with outcomes as they come in."""

    reveals: Sequence[Reveal]
    tolerance_ppm: int
    min_score_ppm: int
    best_ppm: int | None = None
    """Highest measured score among the models this verifier confirmed."""
    done: set[bytes] = field(default_factory=set)
    """Miners whose reveal has an outcome (a verdict or given up)."""

    def record(self, miner: bytes, *, verdict: bool, watermark_ok: bool = False,
               score_ppm: int = 0, claimed_ppm: int = 0) -> None:
        """Note an outcome; a confirmation (as settle.py counts it) may raise the line."""
        self.done.add(miner)
        if verdict and watermark_ok and abs(score_ppm - claimed_ppm) <= self.tolerance_ppm:
            self.best_ppm = score_ppm if self.best_ppm is None else max(self.best_ppm, score_ppm)

    def needed(self, rev: Reveal) -> bool:
        return can_still_win(rev.claimed_score_ppm, self.best_ppm, self.tolerance_ppm,
                             self.min_score_ppm)

    def pending(self) -> list[Reveal]:
        """Needed reveals without an outcome yet, in check order."""
        return [r for r in check_order(self.reveals) if r.miner not in self.done and self.needed(r)]

    def complete(self) -> bool:
        """Every reveal that can still matter to settlement has an outcome."""
        return not self.pending()


@dataclass
class MinerLedger:
    """Seconds each miner's unconfirmed reveals cost this verifier, per round, over a window."""

    per_miner_seconds: float
    window_rounds: int
    _spent: dict[bytes, deque[tuple[int, float]]] = field(
        default_factory=lambda: defaultdict(deque))

    def charge(self, miner: bytes, round_no: int, seconds: float) -> None:
        if seconds > 0:
            self._spent[miner].append((round_no, seconds))

    def spent(self, miner: bytes, round_no: int) -> float:
        """Charged seconds of `miner` in the window ending at `round_no` (older ones dropped)."""
        q = self._spent.get(miner)
        if not q:
            return 0.0
        while q and q[0][0] <= round_no - self.window_rounds:
            q.popleft()
        if not q:
            del self._spent[miner]
        return sum(s for _, s in q)

    def budget(self, miner: bytes, round_no: int, per_model_seconds: float) -> float:
        """What one reveal of `miner` may cost in `round_no`: the per-model bound, less whatever
        the miner's unconfirmed reveals already cost in the window."""
        return max(0.0, min(per_model_seconds,
                            self.per_miner_seconds - self.spent(miner, round_no)))
