"""Paper Eq. 5-6 (abci_app/dlbc/rewards.py) against hand-computed values and edge cases."""

from __future__ import annotations

from abci_app.dlbc.rewards import compute_publisher_share_ppm, split_block_reward


def test_compute_publisher_share_ppm_eq5_hand_values() -> None:
    assert compute_publisher_share_ppm(1_000_000, 5, 10) == 750_000  # 1 - 0.5²
    assert compute_publisher_share_ppm(1_000_000, 1, 100) == 999_900  # 1 - 0.01²
    assert compute_publisher_share_ppm(1_000_000, 10, 10) == 0  # k·l = L
    assert compute_publisher_share_ppm(2_000_000, 100, 100) == 0  # k·l > L: max(0, ...)
    assert compute_publisher_share_ppm(500_000, 3, 10) == 977_500  # 1 - 0.15²


def test_split_block_reward_eq6_sums_exactly() -> None:
    assert split_block_reward(1000, 750_000) == (750, 250)
    assert split_block_reward(1001, 333_333) == (333, 668)
    assert split_block_reward(7, 0) == (0, 7)
    for reward in (0, 1, 999, 10**18 + 3):
        for share in (0, 1, 499_999, 1_000_000):
            p, m = split_block_reward(reward, share)
            assert p + m == reward and p >= 0 and m >= 0
