"""The block-reward split between publisher and miner: paper Eq. 5-6 (docs/ranking.md), integers.

    pub    = max(0, 1 - (k·l/L)²)                          (Eq. 5)
    miner  = 1 - pub                                       (Eq. 6)

`l` is the queue length when the round started, `L` the estimated maximum queue length and `k`
the scaling factor (params `k_ppm`, `max_queue_len`). A short queue means publishers are scarce,
so they get most of the minted reward; a long one means miners are, so the miner gets it.

The share is fixed when a round starts (`rounds.start_round` stores `publisher_share_ppm` in the
round record) and paid when it settles with a winner (`settle.process_settle`): the winner also
receives the task's escrowed reward, the publisher only its part of the block reward.

Why integers: every node must pay the same amounts (docs/determinism.md). Shares are ppm; the
publisher amount is floored and the miner gets the rest, so the two parts always add up to the
block reward exactly.
"""

from __future__ import annotations

from abci_app.dlbc.params import PPM


def compute_publisher_share_ppm(k_ppm: int, queue_len: int, max_queue_len: int) -> int:
    """Paper Eq. 5 in ppm: max(0, 1 - (k·l/L)²), floored."""
    num = (k_ppm * queue_len) ** 2  # (k·l)² scaled by PPM²
    den = (PPM * max_queue_len) ** 2
    if num >= den:
        return 0
    return ((den - num) * PPM) // den


def split_block_reward(block_reward: int, publisher_share_ppm: int) -> tuple[int, int]:
    """Paper Eq. 5-6 as amounts: (publisher, miner), summing exactly to block_reward."""
    publisher = block_reward * publisher_share_ppm // PPM
    return publisher, block_reward - publisher
