"""Chain parameters of DLBC, set in genesis `app_state["params"]` (docs/rounds.md,
docs/ranking.md, docs/settlement.md, docs/economics.md).

Every numeric field is an integer so that the consensus arithmetic is bit-identical on every node
(docs/ranking.md, docs/determinism.md). Fractions are in parts per million (ppm). Times are
seconds of BFT block time. The one string field, `watermark_matrix`, names a member of a fixed
set.

The `watermark_*` fields are the watermark scheme (docs/watermark.md, paper §IV-C): the chain never
runs detection itself, but miners embed and validators detect under exactly these values (read from
the `params` query), so they are protocol rules like the phase lengths, not package defaults that
two sidecar versions could disagree on. The defaults equal what `watermark/` measured best
(watermark/keys.py: 256 bits as in the paper, the "diff" matrix, row gain 1000). The embedding
temperature and λ are deliberately *not* params: they only change how a miner trains, never what a
validator accepts, so each miner tunes them (training/sidecars/miner.py `MinerConfig`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

PPM = 1_000_000
#: Upper bound of every integer param: amounts stay far inside the u128 balances (state.py).
MAX_PARAM = (1 << 63) - 1
#: Upper bound of `unbonding_seconds` (10 years): release times stay u64 nanoseconds.
MAX_UNBONDING_SECONDS = 10 * 365 * 86_400

#: Registry architectures a SubmitTask may name (docs/transactions.md: publishers never ship code;
#: miners and validators build the named module from training/models.py `ARCHITECTURES`). A plain,
#: torch-free tuple so consensus never imports torch; it must equal `sorted(ARCHITECTURES)` there
#: (the lead's consistency test checks it). Changing it changes which txs are valid: a chain
#: upgrade.
ARCHITECTURES: tuple[str, ...] = ("cnn", "fcn", "unet2d", "unet3d")

#: Projection-matrix families of the watermark (Uchida et al. 2017 §3.3; watermark/keys.py
#: `MATRIX_TYPES`, which a test keeps equal). Torch/numpy-free for the same reason as above.
WATERMARK_MATRICES: tuple[str, ...] = ("direct", "diff", "random")
#: Bounds of `watermark_bits`; the upper one is watermark/keys.py `MAX_N_BITS` (it caps the
#: T x m projection a validator builds per key to a few hundred MB for the widest layer).
WATERMARK_MAX_BITS = 4096
#: Bounds of `watermark_gain`: the weight-space margin a bit needs is logit(threshold) / gain, so
#: a huge gain makes any trained weight "carry" a mark (forgeable for free) and a tiny one makes
#: the threshold unreachable for real conv weights.
WATERMARK_MAX_GAIN = 1_000_000
#: Detection threshold bounds in ppm: below 0.5 a wrongly read bit would pass, at 1.0 none can
#: (watermark/detect.py `_check_threshold`).
WATERMARK_MIN_THRESHOLD_PPM = 500_000

#: Upper bound of `max_reveals_per_round`; with settle.MAX_VALIDATORS it fixes the largest
#: possible Settle tx (txs.MAX_SETTLE_BYTES).
MAX_REVEALS_PER_ROUND = 512

#: Params whose JSON value is a string; every other field is an integer.
_STRING_FIELDS = frozenset({"watermark_matrix"})
#: Params added after chains were running (issues 14, 15). Their stored form leaves them out
#: while they hold their default, so a chain whose genesis predates them keeps its state bytes,
#: and so its app hash (the golden chain): the default of each is the behaviour before it existed.
_LATE_FIELDS = ("rounds_in_flight", "announce_seconds", "proof_of_learning")
#: Most epochs a validator replays per revealed model (`proof_of_learning`).
MAX_PROOF_OF_LEARNING_EPOCHS = 64
#: Most rounds the schedule holds at once (docs/rounds.md "Pipelined rounds").
MAX_ROUNDS_IN_FLIGHT = 2


@dataclass(frozen=True, slots=True)
class Params:
    """Chain parameters with documented defaults (used when genesis gives none)."""

    train_seconds: int = 300
    """TRAIN phase (paper P1+P2): the data key is released and commitments are accepted only here."""
    reveal_seconds: int = 60
    """REVEAL phase (start of paper P3): test key and model reveals."""
    verify_seconds: int = 120
    """VERIFY phase (paper P3 validation): validators evaluate; the round settles by vote extensions."""
    k_ppm: int = 1_000_000
    """Paper Eq. 1/5 scaling factor k > 0, in ppm (1_000_000 is k = 1)."""
    max_queue_len: int = 100
    """Paper L: the estimated maximum task-queue length (>= 2 so that ln L > 0)."""
    block_reward: int = 1_000_000
    """Minted once per settled round with a winner; split publisher/miner by paper Eq. 5-6."""
    tolerance_ppm: int = 20_000
    """A verdict confirms a claim when |measured - claimed| <= tolerance (docs/settlement.md)."""
    watermark_threshold_ppm: int = 999_900
    """Per-bit confidence the verifier requires to detect a watermark (paper 0.9999,
    docs/watermark.md); in [500_000, 1_000_000)."""
    watermark_bits: int = 256
    """Watermark length T in bits (paper §IV-C.1: 256 = one SHA-256); in [1, 4096]."""
    watermark_matrix: str = "diff"
    """Projection X: "diff" (default: a difference of two weights per bit, hardest to remove),
    "direct" (one weight per bit, the paper's) or "random" (Uchida)."""
    watermark_gain: int = 1000
    """Euclidean norm of every row of X; a bit needs margin logit(threshold)/gain in weight
    space (watermark/keys.py). In [1, 1_000_000]."""
    withhold_fee_ppm: int = 50_000
    """Share of the reward kept (to the fee pool) when a task is refunded because its publisher
    withheld a key: fee = min(reward, max(withhold_fee_min, ceil(reward * ppm / 1e6))). 5 % makes
    a big task's withheld round cost in proportion to the queue time it held."""
    withhold_fee_min: int = 1_000
    """Absolute floor of the withhold fee (docs/economics.md): = min_task_reward / 10, a little
    under the ~1,100 an honest publisher pays in tx fees for a whole round, so withholding a key
    is never free however small the reward (before: 1 * 5 % rounded down to 0)."""
    min_task_reward: int = 10_000
    """Smallest escrow a SubmitTask may carry; it must pay for a round: ~1,100 of publisher fees
    plus ~700 of fees (commit + reveal) per miner at the default fees, i.e. a field of about ten
    miners (docs/economics.md). 1 % of block_reward; the demos' reward of 10,000 is exactly it."""
    max_pending_tasks: int = 100_000
    """Hard cap on the pending pool, bounding state and selection time."""
    max_pending_per_publisher: int = 100
    """Pending tasks one account may have in the pool (SubmitTask beyond it: PUBLISHER_CAP).
    100 tasks is ~13 h of rounds at the default phases, more than a publisher needs queued;
    filling the 100,000-task pool then takes 1,000 funded accounts escrowing 10^9 in all."""
    max_tx_bytes: int = 65_536
    """Largest accepted tx (CheckTx and FinalizeBlock reject bigger ones)."""
    max_reveals_per_round: int = 256
    """Cap on RevealModel per round, in [1, MAX_REVEALS_PER_ROUND]. It bounds the settlement loop
    and every vote extension (one verdict per reveal), and so the Settle tx: 150 validators x
    256 verdicts is about 2.5 MB, which fits CometBFT's default block (4 MiB in v1.0) beside the
    round's other txs (settle.max_settle_bytes). Sybil reveals are priced by the deposit."""
    tx_base_fee: int = 100
    """Fee of every successful signed tx, plus tx_fee_per_byte per raw byte, paid to the fee
    pool (which pays the validators by voting power every block). A 147-byte transfer costs
    247: a 5,000-tx block costs its senders ~1.2 M, more than a round's block reward."""
    tx_fee_per_byte: int = 1
    """Per raw tx byte (what every node stores forever): a 64 KiB tx costs 65,636."""
    miner_bond: int = 100_000
    """Stake a RegisterMiner bonds (10 minimum rewards). Only bonded miners count in the medians
    of Eq. 2-3 and may commit, so steering a median past n honest miners locks (n+1) bonds."""
    unbonding_seconds: int = 86_400
    """BFT seconds from UnbondMiner until the bond is credited back (one day, ~180 default
    rounds): a bond bought to steer one selection stays locked well past it. At least one
    round (train + reveal + verify seconds)."""
    reveal_deposit: int = 5_000
    """Locked by every RevealModel; returned at settlement unless validators refute the claim
    (wrong score, no watermark, model not fetchable), then forfeited to the fee pool. Half a
    minimum reward: filling a round's 256 reveal slots (max_reveals_per_round) with junk
    forfeits 1.28 M, more than the round's block reward, besides locking 256 miner bonds."""

    rounds_in_flight: int = 1
    """1: sequential rounds, the next TRAIN starts after a round closes (the schedule before
    issue 14, and the default of a genesis that does not name it). 2: pipelined rounds, round
    n+1's TRAIN starts when round n's TRAIN ends, while round n reveals and verifies, so a
    miner's GPU never waits for validation (paper IV-B). Needs reveal + verify <= train, which
    keeps at most one round in REVEAL/VERIFY beside the one in TRAIN. `dlbc genesis`, the
    devnet and the localnet write 2."""
    announce_seconds: int = 60
    """With pipelined rounds, the next round's task is selected (the round is ANNOUNCED) this
    long before the training round's TRAIN ends, so miners can fetch its encrypted data before
    its TRAIN starts; its key is still released only in TRAIN. Above train_seconds it means
    train_seconds: the round is announced as soon as the round before it starts training."""
    proof_of_learning: int = 0
    """Epochs of each revealed model's training that every validator replays (the spot-check of
    docs/proof_of_learning.md, issue 15); 0: no trajectory check (the chain before it). With it
    a reveal must name at least two checkpoints (epoch 0, the anchored start, and one trained
    epoch), and a validator whose replay fails says so in its verdict (`trajectory_failed`), a
    refutation. `dlbc genesis`, the devnet and the localnet write 4."""

    def to_json(self) -> dict[str, int | str]:
        out = asdict(self)
        for name in _LATE_FIELDS:
            if out[name] == _DEFAULTS[name]:
                del out[name]
        return out

    @property
    def pipelined(self) -> bool:
        return self.rounds_in_flight > 1

    @classmethod
    def from_json(cls, obj: Any) -> Params:
        """Parse and validate; unknown keys or bad values raise ValueError naming the field."""
        if obj is None:
            obj = {}
        if not isinstance(obj, dict):
            raise ValueError("params must be a JSON object")  # noqa: TRY004
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(obj) - known)
        if unknown:
            raise ValueError(f"unknown params: {', '.join(unknown)}")
        values: dict[str, Any] = {}
        for name, raw in obj.items():
            if name in _STRING_FIELDS:
                if not isinstance(raw, str):
                    raise ValueError(f"params.{name} must be a string, got {raw!r}")
                values[name] = raw
            else:
                values[name] = _as_int(raw, f"params.{name}")
        params = cls(**values)
        params.validate()
        return params

    def validate(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name in _STRING_FIELDS:
                if not isinstance(v, str):
                    raise ValueError(f"params.{f.name} must be a string, got {v!r}")
                continue
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise ValueError(f"params.{f.name} must be a non-negative integer, got {v!r}")
            if v > MAX_PARAM:
                raise ValueError(f"params.{f.name} must be <= 2^63-1, got {v!r}")
        for name in ("train_seconds", "reveal_seconds", "verify_seconds", "k_ppm",
                     "min_task_reward", "max_pending_tasks", "max_tx_bytes",
                     "max_reveals_per_round", "max_pending_per_publisher", "tx_base_fee",
                     "miner_bond", "reveal_deposit", "withhold_fee_min"):
            if getattr(self, name) <= 0:
                raise ValueError(f"params.{name} must be > 0 (every scarce resource costs "
                                 f"something: docs/economics.md)")
        round_seconds = self.train_seconds + self.reveal_seconds + self.verify_seconds
        if self.unbonding_seconds < round_seconds:
            raise ValueError(f"params.unbonding_seconds must be >= one round (train + reveal + "
                             f"verify = {round_seconds} s), got {self.unbonding_seconds}")
        if self.unbonding_seconds > MAX_UNBONDING_SECONDS:
            raise ValueError(f"params.unbonding_seconds must be <= {MAX_UNBONDING_SECONDS} "
                             f"(10 years), got {self.unbonding_seconds}")
        if self.max_queue_len < 2:
            raise ValueError("params.max_queue_len (L) must be >= 2 so that ln L > 0 (paper Eq. 1)")
        if self.max_reveals_per_round > MAX_REVEALS_PER_ROUND:
            raise ValueError(f"params.max_reveals_per_round must be <= {MAX_REVEALS_PER_ROUND} "
                             "(it bounds the Settle tx)")
        for name in ("tolerance_ppm", "watermark_threshold_ppm", "withhold_fee_ppm"):
            if getattr(self, name) > PPM:
                raise ValueError(f"params.{name} must be <= {PPM} (ppm)")
        self._validate_watermark()
        self._validate_pipeline()
        if self.proof_of_learning > MAX_PROOF_OF_LEARNING_EPOCHS:
            raise ValueError(f"params.proof_of_learning must be <= "
                             f"{MAX_PROOF_OF_LEARNING_EPOCHS} epochs, got {self.proof_of_learning}")

    def _validate_pipeline(self) -> None:
        """Pipelined rounds keep the invariants the schedule relies on (docs/rounds.md): round n
        closes by the time round n+1's TRAIN ends (reveal + verify <= train), so the chain never
        holds more than one round past TRAIN, and an announced round is announced within the
        TRAIN of the round before it (`announce_seconds` is capped at `train_seconds` where used)."""
        if not 1 <= self.rounds_in_flight <= MAX_ROUNDS_IN_FLIGHT:
            raise ValueError(f"params.rounds_in_flight must be 1 (sequential) or 2 "
                             f"(pipelined), got {self.rounds_in_flight}")
        if self.pipelined and self.reveal_seconds + self.verify_seconds > self.train_seconds:
            raise ValueError(
                f"pipelined rounds (rounds_in_flight=2) need reveal_seconds + verify_seconds "
                f"<= train_seconds, got {self.reveal_seconds} + {self.verify_seconds} > "
                f"{self.train_seconds}")

    def _validate_watermark(self) -> None:
        """The ranges detection accepts (watermark/keys.py derive_key, detect.py threshold)."""
        if not WATERMARK_MIN_THRESHOLD_PPM <= self.watermark_threshold_ppm < PPM:
            raise ValueError(
                f"params.watermark_threshold_ppm must be in [{WATERMARK_MIN_THRESHOLD_PPM}, "
                f"{PPM}) (a confidence in [0.5, 1)), got {self.watermark_threshold_ppm}")
        if not 1 <= self.watermark_bits <= WATERMARK_MAX_BITS:
            raise ValueError(f"params.watermark_bits must be in [1, {WATERMARK_MAX_BITS}], "
                             f"got {self.watermark_bits}")
        if self.watermark_matrix not in WATERMARK_MATRICES:
            raise ValueError(f"params.watermark_matrix must be one of "
                             f"{', '.join(WATERMARK_MATRICES)}; got {self.watermark_matrix!r}")
        if not 1 <= self.watermark_gain <= WATERMARK_MAX_GAIN:
            raise ValueError(f"params.watermark_gain must be in [1, {WATERMARK_MAX_GAIN}], "
                             f"got {self.watermark_gain}")


_DEFAULTS: dict[str, object] = {f.name: f.default for f in fields(Params)}

#: Longest decimal string `_as_int` parses (u128 amounts have 39 digits): refused before `int()`,
#: whose own limit is an environment setting.
MAX_INT_DIGITS = 40


def _as_int(raw: Any, where: str) -> int:
    """Integers may come as JSON numbers or decimal strings (64-bit values in JSON:
    docs/wire.md)."""
    if isinstance(raw, bool):
        raise ValueError(f"{where} must be an integer, got a boolean")  # noqa: TRY004
    if isinstance(raw, int):
        return raw
    if isinstance(raw, str) and raw.isascii() and raw.isdigit() and len(raw) <= MAX_INT_DIGITS:
        return int(raw)
    raise ValueError(f"{where} must be a non-negative integer or decimal string, got {raw!r}")
