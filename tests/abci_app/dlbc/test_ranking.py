"""Paper Eq. 1-4 (abci_app/dlbc/ranking.py) against hand-computed values and edge cases."""

from __future__ import annotations

import math

import pytest

from abci_app.dlbc.ranking import (
    ONE,
    SCORE_SCALE,
    RankingContext,
    compute_queue_index_fp,
    compute_ranking_score_e18,
    exp_fp,
    ln_fp,
    median,
    select_task,
)

REL = 1e-12  # fixed point keeps ~18 significant digits; hand values are exact to far more


def approx_e18(value: float) -> object:
    return pytest.approx(value * SCORE_SCALE, rel=REL)


def test_compute_queue_index_fp_hand_values() -> None:
    # q = ln(k·l)/ln(L): k=1, l=10, L=100 -> ln 10 / ln 100 = 1/2 exactly
    assert compute_queue_index_fp(1_000_000, 10, 100) == pytest.approx(ONE // 2, abs=2)
    # l = 1, k = 1 -> ln 1 = 0 -> q = 0
    assert compute_queue_index_fp(1_000_000, 1, 100) == 0
    # k·l < 1 -> q < 0: k = 0.5, l = 1, L = 4 -> ln 0.5 / ln 4 = -1/2
    assert compute_queue_index_fp(500_000, 1, 4) == pytest.approx(-ONE // 2, abs=2)


def test_compute_ranking_score_e18_eq4_hand_value() -> None:
    # dn = 3000/1000 = 3, dc = 16/1 = 16, q = 1/2 -> dc^q = 4, score = (3 + 4)/7 = 1
    s = compute_ranking_score_e18(1000, 2000, 16, 7, 1_000_000, 10, 100, 1000, 1)
    assert s == approx_e18(1.0)


def test_compute_ranking_score_e18_single_task_queue_l1() -> None:
    # l = 1 -> q = 0 -> dc^0 = 1 whatever the FLOPs: (1000/1000 + 1)/4 = 0.5
    for flops in (1, 7, 10**12):
        s = compute_ranking_score_e18(400, 600, flops, 4, 1_000_000, 1, 100, 1000, 50)
        assert s == approx_e18(0.5)


def test_compute_ranking_score_e18_k_l_above_L() -> None:
    # k = 2, l = 100, L = 100: q = ln 200/ln 100; dc = 10 -> 10^q = 200^(1/2) = sqrt(200)
    s = compute_ranking_score_e18(0, 0, 10, 1, 2_000_000, 100, 100, 1, 1)
    assert s == approx_e18(math.sqrt(200))


def test_compute_ranking_score_e18_negative_q() -> None:
    # k = 0.5, l = 1, L = 100: q = ln 0.5/ln 100; dc = 100 -> 100^q = 0.5; dn = 2; reward 5
    s = compute_ranking_score_e18(1, 1, 100, 5, 500_000, 1, 100, 1, 1)
    assert s == approx_e18((2 + 0.5) / 5)


def test_compute_ranking_score_e18_zero_medians_count_as_one() -> None:
    with_zero = compute_ranking_score_e18(10, 20, 9, 3, 1_000_000, 10, 100, 0, 0)
    with_one = compute_ranking_score_e18(10, 20, 9, 3, 1_000_000, 10, 100, 1, 1)
    assert with_zero == with_one
    assert with_one == approx_e18((30 + 3) / 3)  # dn = 30, dc^q = 9^(1/2) = 3


def test_median_edge_cases() -> None:
    assert median([]) == 0
    assert median([5]) == 5  # a single miner
    assert median([3, 1, 2]) == 2
    assert median([10, 1, 3, 2]) == 2  # floor((2 + 3) / 2)
    assert median([0, 0]) == 0


def test_exp_fp_and_ln_fp_accuracy() -> None:
    assert exp_fp(0) == pytest.approx(ONE, abs=4)
    assert exp_fp(ONE) / ONE == pytest.approx(math.e, rel=1e-15)
    assert exp_fp(-50 * ONE) / ONE == pytest.approx(math.exp(-50), rel=1e-12)
    assert exp_fp(ln_fp(12345)) / ONE == pytest.approx(12345, rel=1e-15)
    assert ln_fp(1) == 0
    with pytest.raises(ValueError):
        ln_fp(0)


def test_select_task_smallest_score_then_lowest_id() -> None:
    ctx = RankingContext(1_000_000, 3, 10, 1000, 1000)
    lnf = ln_fp(1000)
    # task 2 has the biggest reward -> smallest score
    assert select_task(ctx, [(1, 500, lnf, 10), (2, 500, lnf, 20), (3, 500, lnf, 5)])[0] == 2
    # equal scores: lowest id wins
    assert select_task(ctx, [(4, 500, lnf, 10), (7, 500, lnf, 10)])[0] == 4
    assert select_task(ctx, []) is None


def test_select_task_inlined_loop_matches_score_e18() -> None:
    import random

    rng = random.Random(7)
    for queue_len in (1, 3, 50, 400):
        ctx = RankingContext(rng.choice([250_000, 1_000_000, 3_000_000]), queue_len, 100,
                             rng.randint(0, 10**7), rng.randint(0, 10**12))
        entries = [(i, rng.randint(1, 10**10), ln_fp(rng.randint(1, 10**16)),
                    rng.randint(1, 10**9)) for i in range(1, 300)]
        expected = min((ctx.score_e18(s, f, r), i) for i, s, f, r in entries)
        assert select_task(ctx, entries) == (expected[1], expected[0])
