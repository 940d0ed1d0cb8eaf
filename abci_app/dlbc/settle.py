"""Settlement of a round from validators' vote extensions (DESIGN §6, paper IV-D/IV-H).

The proposer of height H+1 injects `Settle{round, extended_commit}` with the
`ExtendedCommitInfo` of height H. Every node then, deterministically:

0. Requires the round to be in VERIFY since at least height H, so that every extension was
   made after the last possible reveal.
1. Verifies each COMMIT vote: a known validator (power from state, not from the message), no
   duplicates, and the ed25519 extension signature over CanonicalVoteExtension{ext, H,
   commit round, chain id}. One forged signature rejects the whole Settle.
2. Counts the power whose extension is a well-formed `VerdictSet` for this round; it must be
   more than 2/3 of the total power.
3. Walks the round's reveals in decreasing claimed score (ties: miner address): the first whose
   verdicts from > 2/3 of total power say "watermark ok and |measured - claimed| <= tolerance"
   wins, provided the power-weighted median of its measured scores (the verified score) reaches
   the task's minimum score. Weighted median: scores sorted ascending, the first whose
   cumulative power reaches half of the power that reported on that model.
4. Pays: escrowed task reward → winner; block reward (minted) split publisher/miner by
   Eq. 5-6 with the queue length at round start; records the winner; closes the round. With no
   winner the task goes back to the pool once (see rounds.return_or_refund).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from google.protobuf.message import DecodeError

from abci_app.dlbc import state
from abci_app.dlbc.codes import Code, InvalidTx
from abci_app.dlbc.crypto import ADDRESS_LEN, verify_vote_extension
from abci_app.dlbc.events import Event
from abci_app.dlbc.params import Params
from abci_app.dlbc.ranking import split_block_reward
from abci_app.dlbc.rounds import VERIFY, close_round, return_or_refund
from abci_app.dlbc.state import KV
from abci_app.pb.dlbc.v1 import tx_pb2, vote_pb2

BLOCK_ID_FLAG_COMMIT = 2
MAX_VERDICTS = 1_000
MAX_EXTENSION_BYTES = 128 * 1024


@dataclass(frozen=True, slots=True)
class VerdictVote:
    power: int
    watermark_ok: bool
    score_ppm: int


def decode_verdict_set(ext: bytes, round_no: int | None = None) -> vote_pb2.VerdictSet | None:
    """A well-formed VerdictSet (for `round_no` when given), else None. Never raises."""
    if not ext or len(ext) > MAX_EXTENSION_BYTES:
        return None
    try:
        vs: vote_pb2.VerdictSet = vote_pb2.VerdictSet.FromString(ext)
    except (DecodeError, RuntimeError, ValueError):
        return None
    if round_no is not None and vs.round != round_no:
        return None
    if len(vs.verdicts) > MAX_VERDICTS:
        return None
    for v in vs.verdicts:
        if len(v.miner) != ADDRESS_LEN or len(v.model_digest) != 32 or v.score_ppm > 1_000_000:
            return None
    return vs


def is_well_formed_extension(ext: bytes) -> bool:
    """VerifyVoteExtension's shape check: empty, or a well-formed VerdictSet."""
    return not ext or decode_verdict_set(ext) is not None


def weighted_median(votes: list[tuple[int, int]]) -> int:
    """Lower power-weighted median of (score, power) pairs (integers only)."""
    total = sum(p for _, p in votes)
    acc = 0
    for score, power in sorted(votes):
        acc += power
        if 2 * acc >= total:
            return score
    return 0


def collect_verdicts(view: KV, settle: tx_pb2.Settle, round_no: int, height: int,
                     chain_id: str) -> tuple[dict[tuple[bytes, bytes], list[VerdictVote]], int]:
    """Steps 1-2: verified verdicts keyed by (miner, digest), and the total power."""
    validators = state.get_validators(view)
    total_power = sum(p for _, p in validators.values())
    if total_power <= 0:
        raise InvalidTx(Code.BAD_SETTLE, "no validators in state")
    ec = settle.extended_commit
    seen: set[bytes] = set()
    present = 0
    verdicts: dict[tuple[bytes, bytes], list[VerdictVote]] = {}
    for vote in ec.votes:
        if vote.block_id_flag != BLOCK_ID_FLAG_COMMIT:
            continue
        addr = bytes(vote.validator.address)
        # Verify the voter is a current validator, counted once
        known = validators.get(addr)
        if known is None:
            raise InvalidTx(Code.SETTLE_UNKNOWN_VALIDATOR, f"unknown validator {addr.hex()}")
        if addr in seen:
            raise InvalidTx(Code.SETTLE_DUPLICATE_VOTE, f"validator {addr.hex()} voted twice")
        seen.add(addr)
        pub, power = known
        # Verify the extension signature exactly as CometBFT made it
        if not verify_vote_extension(pub, bytes(vote.extension_signature),
                                     bytes(vote.vote_extension), height - 1, ec.round, chain_id):
            raise InvalidTx(Code.SETTLE_BAD_SIGNATURE,
                            f"vote extension signature of {addr.hex()} does not verify "
                            f"for height {height - 1} round {ec.round}")
        vs = decode_verdict_set(bytes(vote.vote_extension), round_no)
        if vs is None:
            continue
        present += power
        mine: set[tuple[bytes, bytes]] = set()
        for v in vs.verdicts:
            key = (bytes(v.miner), bytes(v.model_digest))
            if key in mine:  # a validator's verdict on a model counts once (its first)
                continue
            mine.add(key)
            verdicts.setdefault(key, []).append(VerdictVote(power, v.watermark_ok, v.score_ppm))
    # Verify more than 2/3 of the voting power sent verdicts for this round
    if 3 * present <= 2 * total_power:
        raise InvalidTx(Code.SETTLE_INSUFFICIENT_POWER,
                        f"verdicts carry power {present} of {total_power}; need > 2/3")
    return verdicts, total_power


def find_winner(reveals: list[tuple[bytes, dict[str, Any]]],
                verdicts: dict[tuple[bytes, bytes], list[VerdictVote]], total_power: int,
                tolerance_ppm: int, min_score_ppm: int) -> tuple[bytes, dict[str, Any], int] | None:
    """Step 3: (miner, reveal, verified score) of the winner, or None."""
    order = sorted(reveals, key=lambda r: (-r[1]["claimed_score_ppm"], r[0]))
    for miner, rev in order:
        claimed = rev["claimed_score_ppm"]
        votes = verdicts.get((miner, bytes.fromhex(rev["model_digest"])), [])
        confirmed = sum(v.power for v in votes
                        if v.watermark_ok and abs(v.score_ppm - claimed) <= tolerance_ppm)
        if 3 * confirmed <= 2 * total_power:
            continue
        score = weighted_median([(v.score_ppm, v.power) for v in votes])
        if score < min_score_ppm:
            continue
        return miner, rev, score
    return None


def process_settle(view: KV, params: Params, chain_id: str, height: int,
                   settle: tx_pb2.Settle) -> list[Event]:
    rec = state.get_active_round(view)
    # Verify a round is in VERIFY and this Settle is for it
    if rec is None:
        raise InvalidTx(Code.NO_ACTIVE_ROUND, "no active round to settle")
    n = rec["round"]
    if settle.round != n:
        raise InvalidTx(Code.WRONG_ROUND, f"Settle for round {settle.round}, current is {n}")
    if rec["phase"] != VERIFY:
        raise InvalidTx(Code.WRONG_PHASE, f"round {n} is in {rec['phase']}, Settle needs VERIFY")
    # Verify the extensions were made once every reveal was final (at or after VERIFY began)
    if height - 1 < rec["verify_height"]:
        raise InvalidTx(Code.WRONG_PHASE, f"extensions of height {height - 1} predate VERIFY "
                                          f"(height {rec['verify_height']}) of round {n}")
    verdicts, total_power = collect_verdicts(view, settle, n, height, chain_id)
    task = state.get_task(view, rec["task_id"])
    assert task is not None
    reveals = list(state.iter_reveals(view, n))
    won = find_winner(reveals, verdicts, total_power, params.tolerance_ppm,
                      task["spec"]["min_score_ppm"])
    if won is None:
        what = return_or_refund(view, task)
        close_round(view, rec, "no_winner", height)
        return [Event.of("dlbc.round", round=n, phase="DONE", task_id=task["id"],
                         outcome="no_winner", task=what)]
    miner, rev, score = won
    publisher = bytes.fromhex(task["publisher"])
    reward = task["reward"]
    pub_amt, miner_amt = split_block_reward(params.block_reward, rec["publisher_share_ppm"])
    state.add_escrow(view, -reward)
    state.add_supply(view, params.block_reward)
    state.credit(view, miner, reward + miner_amt)
    state.credit(view, publisher, pub_amt)
    task["status"] = "done"
    task["winner"] = miner.hex()
    state.put_task(view, task)
    rec["winner"] = {
        "miner": miner.hex(), "model_digest": rev["model_digest"], "model_uri": rev["model_uri"],
        "claimed_score_ppm": rev["claimed_score_ppm"], "verified_score_ppm": score,
        "checkpoint_digests": rev["checkpoint_digests"], "task_reward": reward,
        "block_reward_miner": miner_amt, "block_reward_publisher": pub_amt,
    }
    close_round(view, rec, "settled", height)
    return [Event.of("dlbc.round", round=n, phase="DONE", task_id=task["id"],
                     outcome="settled", miner=miner.hex(), score_ppm=score,
                     amount=reward + miner_amt)]
