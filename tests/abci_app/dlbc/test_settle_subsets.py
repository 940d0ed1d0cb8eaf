"""No proposer can steer settlement: every admissible subset of extensions gives one outcome.

The proposer of the Settle picks which signed extensions go in. `settle.decide` must give the
same winner, verified score, refutations and publisher-fault verdict for every subset S of
present validators with more than 2/3 of the power, whatever up to f Byzantine validators put in
their extensions, as long as more than 2/3 of the power is honest (settle.py module docstring).
These tests enumerate all of it for 4 and 7 validators (equal and unequal power).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence

import pytest

from abci_app.dlbc.records import Address, Height, Reveal
from abci_app.dlbc.settle import Decision, Report, decide

TOL = 20_000
MIN_SCORE = 500_000


def addr(c: str) -> Address:
    return Address(c.encode() * 20)


def dig(c: str) -> bytes:
    return c.encode() * 32


# The round: four reveals (miner, claimed score) and what every honest verifier measures.
# A: honest, claims what it scores.      B: over-claims 0.95, really 0.88 (refuted).
# C: under-claims 0.905, really 0.92: within tolerance, confirmed, and the best verified model:
#    it must win although A's claim ties and B's claim beats it (claims only order the work).
# D: a copy, scores well but carries no watermark of its own (refuted).
REVEALS = {"A": 900_000, "B": 950_000, "C": 905_000, "D": 930_000}
HONEST_FINDINGS = {"A": (True, 900_000), "B": (True, 880_000), "C": (True, 920_000),
                   "D": (False, 930_000)}


def reveal(m: str, claimed: int, height: int = 10) -> Reveal:
    return Reveal(addr(m), f"file:///{m}", dig(m), claimed, Height(height), ())


def reveals() -> list[Reveal]:
    return [reveal(m, c) for m, c in REVEALS.items()]


Findings = dict[str, tuple[bool, int]]


def report(power: int, findings: Findings, unusable: bool = False) -> Report:
    return Report(power, {(addr(m), dig(m)): f for m, f in findings.items()}, unusable)


# What a Byzantine validator may put in its (validly signed, complete) extension.
BYZANTINE: dict[str, Callable[[], tuple[Findings, bool]]] = {
    "copy honest": lambda: (dict(HONEST_FINDINGS), False),
    "boost the over-claimer, sink the best": lambda: (
        {"A": (True, 900_000), "B": (True, 950_000), "C": (False, 0), "D": (True, 930_000)},
        False),
    "push A's verified score over C's": lambda: (
        {"A": (True, 919_000), "B": (True, 950_000), "C": (True, 890_000), "D": (True, 930_000)},
        False),
    "extreme scores": lambda: (
        {"A": (True, 1_000_000), "B": (True, 1_000_000), "C": (True, 0), "D": (True, 1_000_000)},
        False),
    "refute everything": lambda: ({m: (False, 0) for m in REVEALS}, False),
    "say nothing": lambda: ({}, False),
    "blame the publisher": lambda: ({}, True),
}


def admissible_subsets(powers: Sequence[int]) -> Iterator[tuple[int, ...]]:
    total = sum(powers)
    idx = range(len(powers))
    for k in range(1, len(powers) + 1):
        for subset in itertools.combinations(idx, k):
            if 3 * sum(powers[i] for i in subset) > 2 * total:
                yield subset


def byzantine_sets(powers: Sequence[int]) -> Iterator[tuple[int, ...]]:
    """Every set of validators holding less than 1/3 of the power (so > 2/3 is honest)."""
    total = sum(powers)
    for k in range(len(powers)):
        for subset in itertools.combinations(range(len(powers)), k):
            if 3 * sum(powers[i] for i in subset) < total:
                yield subset


def outcome(d: Decision) -> tuple[object, ...]:
    winner = None if d.winner is None else (d.winner[0].miner, d.winner[1])
    return winner, tuple(sorted(d.refuted)), d.publisher_fault


def check_every_subset(powers: Sequence[int], honest: Findings, honest_unusable: bool,
                       strategies: Sequence[str]) -> tuple[tuple[object, ...], int]:
    """The outcome with only honest validators, after checking every (Byzantine set,
    strategy assignment, admissible subset) gives it too; returns it and the cases checked."""
    total = sum(powers)
    all_honest = [report(p, honest, honest_unusable) for p in powers]
    expected = outcome(decide(reveals(), all_honest, total, TOL, MIN_SCORE))
    checked = 0
    for byz in byzantine_sets(powers):
        for assignment in itertools.product(strategies, repeat=len(byz)):
            reports = list(all_honest)
            for i, name in zip(byz, assignment, strict=True):
                findings, unusable = BYZANTINE[name]()
                reports[i] = report(powers[i], findings, unusable)
            for subset in admissible_subsets(powers):
                got = outcome(decide(reveals(), [reports[i] for i in subset], total, TOL,
                                     MIN_SCORE))
                assert got == expected, (powers, byz, assignment, subset)
                checked += 1
    return expected, checked


@pytest.mark.parametrize("powers", [
    [10] * 4,
    [10] * 7,
    [1, 1, 1, 2, 3, 5, 8],
    [3, 1, 1, 1],
], ids=["4-equal", "7-equal", "7-fibonacci", "4-unequal"])
def test_every_admissible_subset_settles_the_same_way(powers: list[int]) -> None:
    strategies = list(BYZANTINE)
    if len(powers) > 4:  # mixed strategies for pairs: 7 x 7 assignments per Byzantine pair
        strategies = strategies[:5]
    expected, checked = check_every_subset(powers, HONEST_FINDINGS, False, strategies)
    # The best *verified* model wins, not the best claim; copies and over-claims are refuted.
    assert expected == ((addr("C"), 920_000), (addr("B"), addr("D")), False)
    assert checked > 50


@pytest.mark.parametrize("powers", [[10] * 4, [10] * 7], ids=["4", "7"])
def test_broken_test_set_is_the_publishers_fault_in_every_subset(powers: list[int]) -> None:
    expected, _ = check_every_subset(powers, {}, True, list(BYZANTINE))
    assert expected == (None, (), True)


def test_invalid_overclaim_within_tolerance_does_not_beat_a_better_verified_model() -> None:
    """Class 3: a miner claiming up to the tolerance above its real score used to win on the
    claim; ranking is by verified score now."""
    powers = [10] * 4
    findings = {"A": (True, 900_000), "B": (True, 880_000), "C": (True, 920_000),
                "D": (False, 930_000)}
    inflated = dict(REVEALS, A=919_000)  # A claims +1.9 points: still "confirmed"
    revs = [reveal(m, c) for m, c in inflated.items()]
    d = decide(revs, [report(p, findings) for p in powers], 40, TOL, MIN_SCORE)
    assert d.winner is not None and d.winner[0].miner == addr("C") and d.winner[1] == 920_000
    statuses = {r.miner: r.status for r in d.results}
    assert statuses[addr("A")] == "confirmed"


def test_invalid_faulty_minority_alone_cannot_confirm_or_refute() -> None:
    """Below the T/3 line a claim is undecided: no win and no forfeit on a minority's word."""
    powers = [10] * 4
    honest_silent = [report(10, {}) for _ in range(3)]
    liar = report(10, {"B": (True, 950_000), "C": (False, 0)})
    d = decide(reveals(), [*honest_silent, liar], 40, TOL, MIN_SCORE)
    assert d.winner is None and d.refuted == set()
    assert {r.status for r in d.results} == {"undecided"}
    assert sum(powers) == 40


def test_weighted_median_is_an_honest_score_when_honest_power_is_a_majority() -> None:
    d = decide(reveals(), [report(10, HONEST_FINDINGS), report(10, HONEST_FINDINGS),
                           report(10, BYZANTINE["extreme scores"]()[0])], 40, TOL, MIN_SCORE)
    scores = {r.miner: r.verified_score_ppm for r in d.results}
    assert scores[addr("C")] == 920_000 and scores[addr("A")] == 900_000


def test_ties_in_verified_score_break_by_reveal_height_then_address() -> None:
    findings = {"A": (True, 920_000), "C": (True, 920_000)}
    revs = [reveal("A", 920_000, height=12), reveal("C", 920_000, height=11)]
    d = decide(revs, [report(10, findings)] * 4, 40, TOL, MIN_SCORE)
    assert d.winner is not None and d.winner[0].miner == addr("C")
    revs[1] = reveal("C", 920_000, height=12)
    d = decide(revs, [report(10, findings)] * 4, 40, TOL, MIN_SCORE)
    assert d.winner is not None and d.winner[0].miner == addr("A")
