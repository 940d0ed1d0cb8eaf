"""Task ranking: paper Eq. 1-4 (docs/ranking.md), in integer fixed point (Eq. 5-6: rewards.py).

    q      = ln(k·l) / ln(L)                               (Eq. 1)
    dn     = (model_size + data_size) / median_bandwidth   (Eq. 2)
    dc     = FLOPs / median_compute                        (Eq. 3)
    score  = (dn + dc^q) / reward                          (Eq. 4)   smallest is trained next

Why fixed point and not floats: every node must pick the same task and pay the same amounts
(docs/determinism.md). Logarithms are taken with `decimal` in a fixed 40-digit context (libmpdec
rounds `ln` correctly, so the result is platform independent) and converted once to binary fixed
point with 64 fractional bits (`ONE = 2**64`). The per-task power `dc^q = exp(q·ln dc)` uses only
Python integers: two 8-bit exp tables (built with the same decimal context) and a cubic Taylor tail,
so selecting among 10,000 pending tasks stays well under 50 ms. `ln(FLOPs)` is computed once per
task at submission and kept in the pool index.

Conventions (documented edge cases):
- `k` is given in ppm (`k_ppm`, 1_000_000 = 1); `l >= 1` and `L >= 2`. `k·l < 1` gives q < 0.
- Medians over registered miners: odd count → middle value, even → floor of the mean of the two
  middle values, none → 0. A zero median is treated as 1 (no division by zero; dn/dc then
  are the raw sizes).
- FLOPs of a task = flops_per_sample × num_samples (both >= 1, so dc > 0 and dc^q is defined).
- Ranking scores are integers in units of 1e-18 (`score_e18`); ties (e.g. tiny specs whose
  scores both round to 0) go to the higher reward, then the lowest task id: a reward-1 task can
  no longer out-rank a reward-1,000,000 one by being submitted first (docs/economics.md).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from decimal import ROUND_FLOOR, Context, Decimal

from abci_app.dlbc.params import PPM

FRAC_BITS = 64
ONE = 1 << FRAC_BITS
SCORE_SCALE = 10**18
_CTX = Context(prec=40)


def _to_fp(d: Decimal) -> int:
    return int(_CTX.multiply(d, Decimal(ONE)).to_integral_value(rounding=ROUND_FLOOR))


def ln_fp(numerator: int, denominator: int = 1) -> int:
    """ln(numerator/denominator) in 64-bit binary fixed point (floored)."""
    if numerator <= 0 or denominator <= 0:
        raise ValueError("ln of a non-positive number")
    return _to_fp(_CTX.ln(_CTX.divide(Decimal(numerator), Decimal(denominator))))


LN2_FP = ln_fp(2)
# exp(i / 2**8) and exp(j / 2**16) in fixed point: r = hi·2^56 + mid·2^48 + lo with r < ln 2.
_E_HI = tuple(_to_fp(_CTX.exp(_CTX.divide(Decimal(i), Decimal(256)))) for i in range(178))
_E_MID = tuple(_to_fp(_CTX.exp(_CTX.divide(Decimal(j), Decimal(65536)))) for j in range(256))
_LO_MASK = (1 << 48) - 1


def exp_fp(y: int) -> int:
    """exp(y / 2**64) in 64-bit fixed point, integers only (deterministic, ~1 µs)."""
    n, r = divmod(y, LN2_FP)  # y = n·ln2 + r, 0 <= r < ln2
    lo = r & _LO_MASK
    # exp(lo/2^64) with lo/2^64 < 2^-16: 1 + x + x²/2 + x³/6, error < 2^-66
    e_lo = ONE + lo + ((lo * lo) >> (FRAC_BITS + 1)) + (((lo * lo * lo) >> (2 * FRAC_BITS)) // 6)
    res = (_E_HI[r >> 56] * _E_MID[(r >> 48) & 0xFF]) >> FRAC_BITS
    res = (res * e_lo) >> FRAC_BITS
    return res << n if n >= 0 else res >> -n


def median(values: Sequence[int]) -> int:
    """Integer median (even count: floor of the mean of the middle two; empty: 0)."""
    if not values:
        return 0
    s = sorted(values)
    mid = len(s) // 2
    if len(s) % 2:
        return s[mid]
    return (s[mid - 1] + s[mid]) // 2


def compute_queue_index_fp(k_ppm: int, queue_len: int, max_queue_len: int) -> int:
    """Paper Eq. 1: q = ln(k·l)/ln(L), fixed point. Needs k_ppm > 0, l >= 1, L >= 2."""
    if k_ppm <= 0 or queue_len < 1 or max_queue_len < 2:
        raise ValueError("Eq. 1 needs k > 0, l >= 1 and L >= 2")
    q = _CTX.divide(
        _CTX.ln(_CTX.divide(Decimal(k_ppm * queue_len), Decimal(PPM))),
        _CTX.ln(Decimal(max_queue_len)),
    )
    return _to_fp(q)


def compute_task_flops(flops_per_sample: int, num_samples: int) -> int:
    return flops_per_sample * num_samples


class RankingContext:
    """What every task's score shares in one selection: q (Eq. 1) and the medians (Eq. 2-3)."""

    __slots__ = ("ln_median_compute_fp", "median_bandwidth", "median_compute", "q_fp")

    def __init__(self, k_ppm: int, queue_len: int, max_queue_len: int,
                 median_bandwidth: int, median_compute: int) -> None:
        self.q_fp = compute_queue_index_fp(k_ppm, queue_len, max_queue_len)
        self.median_bandwidth = max(1, median_bandwidth)
        self.median_compute = max(1, median_compute)
        self.ln_median_compute_fp = ln_fp(self.median_compute)

    def score_e18(self, size_bytes: int, ln_flops_fp: int, reward: int) -> int:
        """Paper Eq. 2-4 for one task; `size_bytes` = model + data size, reward >= 1."""
        dn_fp = (size_bytes << FRAC_BITS) // self.median_bandwidth
        y = (self.q_fp * (ln_flops_fp - self.ln_median_compute_fp)) >> FRAC_BITS
        return ((dn_fp + exp_fp(y)) * SCORE_SCALE) // (reward << FRAC_BITS)


def compute_ranking_score_e18(model_size: int, data_size: int, flops: int, reward: int,
                              k_ppm: int, queue_len: int, max_queue_len: int,
                              median_bandwidth: int, median_compute: int) -> int:
    """Eq. 1-4 end to end for one task (tests, queries); selection uses RankingContext."""
    if reward < 1 or flops < 1:
        raise ValueError("reward and FLOPs must be >= 1")
    ctx = RankingContext(k_ppm, queue_len, max_queue_len, median_bandwidth, median_compute)
    return ctx.score_e18(model_size + data_size, ln_fp(flops), reward)


def select_task(ctx: RankingContext,
                entries: Iterable[tuple[int, int, int, int]]) -> tuple[int, int] | None:
    """The (task_id, score_e18) with the smallest score; ties → higher reward, then lowest id.

    `entries` yields (task_id, size_bytes, ln_flops_fp, reward) in increasing task id. The loop
    is `RankingContext.score_e18` + `exp_fp` inlined (same integer operations, same results;
    a test checks they agree) because it runs over the whole pool at every round boundary.
    """
    best_id = -1
    best = 0
    best_reward = 0
    q, lnm, bw = ctx.q_fp, ctx.ln_median_compute_fp, ctx.median_bandwidth
    ln2, e_hi, e_mid, mask, one = LN2_FP, _E_HI, _E_MID, _LO_MASK, ONE
    for task_id, size, ln_flops, reward in entries:
        n, r = divmod((q * (ln_flops - lnm)) >> 64, ln2)
        lo = r & mask
        e = (e_hi[r >> 56] * e_mid[(r >> 48) & 0xFF]) >> 64
        e = (e * (one + lo + ((lo * lo) >> 65) + (((lo * lo * lo) >> 128) // 6))) >> 64
        e = e << n if n >= 0 else e >> -n
        s = ((((size << 64) // bw) + e) * SCORE_SCALE) // (reward << 64)
        if best_id < 0 or s < best or (s == best and reward > best_reward):
            best_id, best, best_reward = task_id, s, reward
    return None if best_id < 0 else (best_id, best)
