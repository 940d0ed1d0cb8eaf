"""What the devnet's main loop learns from each poll of the chain: phase changes and closes.

Why a tracker over `rounds/active` and not the `round` query: with pipelined rounds (issue 14,
docs/rounds.md) the chain holds up to three active rounds at once — one in REVEAL or VERIFY,
the next in TRAIN, the one after ANNOUNCED — and `round` shows only the newest. A close of the
older round would go unnoticed until the newer one moved on, or be reported out of order.

The tracker does no I/O: the loop hands it each `rounds/active` answer (and, only when nothing
is active, the newest round number from `round`), and gets back the records whose phase
changed and the rounds closed since the last poll, oldest first. A round is closed when it is
at or below the newest round seen and no longer active; rounds closed before the first poll
(a resumed devnet) are neither reported nor counted. A close is reported once: the loop calls
`reported(n)` only after it has told the operator, so a failed `rounds/<n>` query is retried.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Observation:
    """One poll's news for the main loop."""

    phases: list[dict[str, Any]] = field(default_factory=list)
    """Active round records whose phase is new since the last poll, oldest first."""
    closed: list[int] = field(default_factory=list)
    """Rounds that closed since the last poll and are not reported yet, in order."""
    active: list[dict[str, Any]] = field(default_factory=list)
    """Every active round record of this poll, oldest first (for the narration's context)."""


class RoundTracker:
    """Remembers each active round's phase and which closes were reported."""

    def __init__(self) -> None:
        self.newest = 0
        """The highest round number seen so far (0: none yet)."""
        self.baseline: int | None = None
        """Rounds 1..baseline had closed before the first poll: not reported, not counted."""
        self._phases: dict[int, str] = {}
        self._reported: set[int] = set()

    @property
    def closed_count(self) -> int:
        """Closes reported in this run (what `--rounds N` counts)."""
        return len(self._reported)

    def observe(self, active: Sequence[dict[str, Any]], newest: int = 0) -> Observation:
        """Digest one `rounds/active` answer's `rounds`; `newest` is the `round` query's round
        number, needed only when `active` is empty (the chain idle between rounds)."""
        recs = sorted(active, key=lambda r: int(r["round"]))
        numbers = {int(r["round"]) for r in recs}
        self.newest = max(self.newest, newest, *numbers, 0)
        if self.baseline is None:
            below = min(numbers) - 1 if numbers else self.newest
            self.baseline = max(below, 0)
        phases = []
        for rec in recs:
            n, phase = int(rec["round"]), str(rec.get("phase"))
            if self._phases.get(n) != phase:
                self._phases[n] = phase
                phases.append(rec)
        for n in [n for n in self._phases if n not in numbers]:
            del self._phases[n]  # closed: its phase no longer matters
        closed = [n for n in range(self.baseline + 1, self.newest + 1)
                  if n not in numbers and n not in self._reported]
        return Observation(phases, closed, recs)

    def reported(self, n: int) -> None:
        """Round `n`'s close was told to the operator: never again."""
        self._reported.add(n)
