"""The verifier's stop rule and miner ledger (training/sidecars/verify_plan.py), against the
settlement rule they are derived from (abci_app/dlbc/settle.py `decide`)."""

from __future__ import annotations

import itertools

from abci_app.dlbc.records import Address, Height, Reveal
from abci_app.dlbc.settle import Report, decide
from training.sidecars.verify_plan import MinerLedger, RoundPlan, can_still_win, check_order

TOL = 20_000


def _rev(i: int, claim: int) -> Reveal:
    return Reveal(Address(bytes([i]) * 20), "http://m", bytes([i]) * 32, claim, Height(i), ())


def test_check_order_is_claimed_score_then_address() -> None:
    revs = [_rev(3, 500), _rev(1, 900), _rev(2, 900)]
    assert [r.miner[0] for r in check_order(revs)] == [1, 2, 3]


def test_can_still_win_line() -> None:
    assert can_still_win(0, None, TOL, 0)  # nothing confirmed, no minimum: everything
    assert not can_still_win(100_000, None, TOL, 200_000)  # cannot reach the task's minimum
    assert can_still_win(180_000, None, TOL, 200_000)
    assert can_still_win(880_000, 900_000, TOL, 0)  # 880k + 20k could tie the confirmed 900k
    assert not can_still_win(879_999, 900_000, TOL, 0)


def test_stop_rule_never_drops_a_possible_winner() -> None:
    """For every small world: the winner settlement picks from full verdicts is among the
    reveals the stop rule keeps once the best claim is confirmed."""
    for claims, scores in itertools.product(
            itertools.product([900_000, 880_000, 879_000, 850_000], repeat=3),
            itertools.product([900_000, 880_000, 860_000], repeat=3)):
        revs = [_rev(i + 1, c) for i, c in enumerate(claims)]
        report = Report(1, {(r.miner, r.model_digest): (True, s) for r, s in zip(revs, scores)},
                        False)
        winner = decide(revs, [report], 1, TOL, 0).winner
        plan = RoundPlan(check_order(revs), TOL, 0)
        for r in check_order(revs):
            if not plan.needed(r):
                continue
            s = scores[revs.index(r)]
            plan.record(r.miner, verdict=True, watermark_ok=True, score_ppm=s,
                        claimed_ppm=r.claimed_score_ppm)
        assert plan.complete()
        if winner is not None:
            assert plan.needed(winner[0]), (claims, scores)


def test_plan_completes_only_when_needed_reveals_have_outcomes() -> None:
    a, b, c = _rev(1, 900_000), _rev(2, 890_000), _rev(3, 500_000)
    plan = RoundPlan(check_order([c, b, a]), TOL, 0)
    assert [r.miner for r in plan.pending()] == [a.miner, b.miner, c.miner]
    plan.record(a.miner, verdict=True, watermark_ok=True, score_ppm=905_000,
                claimed_ppm=900_000)
    assert [r.miner for r in plan.pending()] == [b.miner]  # c can no longer win
    plan.record(b.miner, verdict=False)  # given up: an outcome too
    assert plan.complete()


def test_invalid_refuted_claim_does_not_raise_the_line() -> None:
    a, b = _rev(1, 900_000), _rev(2, 500_000)
    plan = RoundPlan(check_order([a, b]), TOL, 0)
    plan.record(a.miner, verdict=True, watermark_ok=True, score_ppm=700_000,
                claimed_ppm=900_000)  # measured far from the claim: refuted
    assert plan.best_ppm is None and plan.needed(b)


def test_miner_ledger_window_and_budget() -> None:
    led = MinerLedger(per_miner_seconds=10.0, window_rounds=2)
    m = b"\1" * 20
    assert led.budget(m, 1, 4.0) == 4.0
    led.charge(m, 1, 7.0)
    assert led.budget(m, 2, 4.0) == 3.0
    led.charge(m, 2, 3.0)
    assert led.budget(m, 2, 4.0) == 0.0
    assert led.budget(m, 3, 4.0) == 4.0  # round 1 left the window: 10 - 3 = 7, capped at 4
    assert led.spent(b"\2" * 20, 3) == 0.0
