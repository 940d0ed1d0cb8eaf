"""Settlement of a round from validators' vote extensions (docs/settlement.md, paper
IV-C/IV-D/IV-H).

The proposer of height H+1 injects `Settle{round, extended_commit}` with the
`ExtendedCommitInfo` of height H. The proposer chooses which of the signed extensions it
received go in, so the rule below is built so that this choice cannot change the outcome.

The rule. Let T be the total voting power (from state, never from the message) and f < T/3 the
power of faulty validators. Every node, deterministically:

0. Requires the round to be in VERIFY since at least height H (every extension was made after
   the last possible reveal) and the Settle to fit `max_settle_bytes(params)`.
1. Verifies every entry of the commit: a known validator, each at most once (whatever its
   flag, so nothing can be padded in); COMMIT entries carry an ed25519 extension signature over
   CanonicalVoteExtension{ext, H, commit round, chain id}; other entries carry nothing. One bad
   entry rejects the whole Settle.
2. A validator is *present* when its extension is a valid, **complete** `VerdictSet` for this
   round (its verifier finished). Present power must exceed 2T/3.
3. For every revealed model m, over the present validators: confirmations C(m) = power of
   verdicts "watermark ok, trajectory not failed and |measured - claimed| <= tolerance",
   refutations R(m) = power of the other verdicts on m. m is **confirmed** when 3·C(m) > T and not 3·R(m) > T; **refuted** when
   3·R(m) > T and not 3·C(m) > T; otherwise undecided.
4. The verified score of m is the power-weighted (lower) median of the measured scores of all
   present verdicts on m. The winner is the confirmed model with the **highest verified score**
   that reaches the task's minimum (ties: earlier reveal height, then lower miner address).
   Claims only order the verifiers' work (paper IV-C); they never rank models.
5. No winner, and the present power saying "test set unusable" exceeds T/3: the publisher broke
   or withheld its test set after miners revealed: `economics.pay_publisher_fault`.
6. Pays: escrow → winner, block reward split by Eq. 5-6; reveal deposits back except for
   refuted models (forfeited). No winner and no publisher fault: the task goes back to the pool
   once (rounds.return_or_refund).

Why the outcome is the same for every admissible subset S (present power > 2T/3) as long as more
than 2T/3 of the power is honest and honest validators that finished agree on each verdict:
the honest power inside S is at least power(S) - f > 2T/3 - T/3 = T/3, so a model every honest
validator confirms (refutes, finds the test set of unusable) crosses the T/3 line in every S,
while the faulty power alone (f < T/3) never crosses it. Inside S the honest power is more than
half (power(S) - f > f because power(S) > 2T/3 > 2f), so the weighted median is an honest score:
the verified score, and with it the winner, is the same in every S.
`tests/abci_app/dlbc/test_settle_subsets.py` enumerates every admissible subset for 4 and 7 validators
with up to f Byzantine ones and several Byzantine strategies.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

from abci_app.dlbc import economics, state
from abci_app.dlbc.codes import Code, InvalidTx
from abci_app.dlbc.crypto import verify_vote_extension
from abci_app.dlbc.events import Event
from abci_app.dlbc.extensions import VERDICT_MAX_BYTES, VERDICT_SET_OVERHEAD, decode_verdict_set
from abci_app.dlbc.messages import Settle
from abci_app.dlbc.params import Params
from abci_app.dlbc.records import (
    Address,
    Amount,
    Height,
    ModelVerdict,
    Outcome,
    Phase,
    Reveal,
    Round,
    RoundNo,
    TaskStatus,
    VerdictStatus,
    Winner,
)
from abci_app.dlbc.rewards import split_block_reward
from abci_app.dlbc.rounds import close_round, return_or_refund
from abci_app.dlbc.state import KV

BLOCK_ID_FLAG_ABSENT = 1
BLOCK_ID_FLAG_COMMIT = 2
BLOCK_ID_FLAG_NIL = 3

#: Most validators a DLBC chain may have (checked at InitChain; the set is fixed after it).
#: Bounds the Settle tx together with the per-extension bound below.
MAX_VALIDATORS = 150
#: One ExtendedVoteInfo besides its extension: entry tag+len (4), validator{address 2+20,
#: power 1+10} with its tag+len (2), extension tag+len (4), signature (2+64), flag (2).
VOTE_INFO_OVERHEAD = 4 + 2 + 22 + 11 + 4 + 66 + 2
#: Settle besides its votes: round (1+10), extended_commit tag+len (6), commit round (1+10).
SETTLE_OVERHEAD = 32


def max_extension_bytes(params: Params) -> int:
    """The largest valid vote extension: one verdict per reveal the round may hold."""
    return VERDICT_SET_OVERHEAD + params.max_reveals_per_round * VERDICT_MAX_BYTES


def max_settle_bytes(params: Params) -> int:
    """The largest valid Settle: every validator's largest extension. An honest Settle always
    fits; `txs.MAX_SETTLE_BYTES` is this at the largest allowed `max_reveals_per_round`."""
    return SETTLE_OVERHEAD + MAX_VALIDATORS * (VOTE_INFO_OVERHEAD + max_extension_bytes(params))


# ------------------------------------------------------------------------------ extensions


def revealed_models(view: KV, round_no: RoundNo) -> dict[tuple[Address, bytes], int]:
    """(miner, model digest) -> claimed score of every reveal of the round."""
    return {(rev.miner, rev.model_digest): rev.claimed_score_ppm
            for rev in state.iter_reveals(view, round_no)}


def extension_round(view: KV) -> Round | None:
    """The round an extension of the next height may speak about: the active round when its
    committed phase is REVEAL or VERIFY. (An extension of height H is made and checked on the
    state of H-1; the block H that opens VERIFY runs no reveal, so the reveals of H-1 are final
    for every extension a Settle may use: those of heights >= verify_height.)"""
    return state.round_in_phase(view, Phase.REVEAL, Phase.VERIFY)


def check_extension(view: KV, ext: bytes) -> bool:
    """VerifyVoteExtension: empty, or a valid VerdictSet for `extension_round`.

    Checked against committed state, the same state the extension's author saw in ExtendVote."""
    if not ext:
        return True
    rec = extension_round(view)
    if rec is None:
        return False
    return decode_verdict_set(ext, rec.round, revealed_models(view, rec.round)) is not None


# ------------------------------------------------------------------------------ the decision


@dataclass(frozen=True, slots=True)
class Report:
    """One present validator's complete verdict set, decoded."""

    power: int
    verdicts: dict[tuple[bytes, bytes], tuple[bool, int]]  # looked up, never iterated
    test_set_unusable: bool


@dataclass(frozen=True, slots=True)
class Decision:
    winner: tuple[Reveal, int] | None  # (the winning reveal, its verified score)
    results: tuple[ModelVerdict, ...]  # one per reveal, by miner address
    publisher_fault: bool

    @property
    def refuted(self) -> set[Address]:
        return {r.miner for r in self.results if r.status is VerdictStatus.REFUTED}


def weighted_median(votes: list[tuple[int, int]]) -> int:
    """Lower power-weighted median of (score, power) pairs (integers only)."""
    total = sum(p for _, p in votes)
    acc = 0
    for score, power in sorted(votes):
        acc += power
        if 2 * acc >= total:
            return score
    return 0


def decide(reveals: Iterable[Reveal], reports: list[Report], total_power: int,
           tolerance_ppm: int, min_score_ppm: int) -> Decision:
    """Steps 3-5 of the module docstring; pure, so the subset tests can call it directly."""
    results: list[ModelVerdict] = []
    candidates: list[tuple[int, int, bytes, Reveal]] = []
    for rev in sorted(reveals, key=lambda r: r.miner):
        key = (rev.miner, rev.model_digest)
        claimed = rev.claimed_score_ppm
        confirm = refute = 0
        scores: list[tuple[int, int]] = []
        for r in reports:
            found = r.verdicts.get(key)
            if found is None:
                continue
            ok, score = found
            scores.append((score, r.power))
            if ok and abs(score - claimed) <= tolerance_ppm:
                confirm += r.power
            else:
                refute += r.power
        confirmed, refuted = 3 * confirm > total_power, 3 * refute > total_power
        status = (VerdictStatus.CONFIRMED if confirmed and not refuted
                  else VerdictStatus.REFUTED if refuted and not confirmed
                  else VerdictStatus.UNDECIDED)
        verified = weighted_median(scores) if scores else 0
        results.append(ModelVerdict(rev.miner, status, verified, confirm, refute))
        if status is VerdictStatus.CONFIRMED and verified >= min_score_ppm:
            candidates.append((-verified, rev.height, rev.miner, rev))
    winner = None
    if candidates:
        neg_score, _h, _miner, rev = min(candidates, key=lambda c: (c[0], c[1], c[2]))
        winner = (rev, -neg_score)
    unusable = sum(r.power for r in reports if r.test_set_unusable)
    fault = winner is None and 3 * unusable > total_power
    return Decision(winner, tuple(results), fault)


# ------------------------------------------------------------------------------ Settle


def collect_reports(view: KV, settle: Settle, round_no: RoundNo, height: Height,
                    chain_id: str) -> tuple[list[Report], int]:
    """Steps 1-2: the present validators' reports and the total power; raises on a bad entry."""
    validators = state.get_validators(view)
    total_power = sum(p for _, p in validators.values())
    if total_power <= 0:
        raise InvalidTx(Code.BAD_SETTLE, "no validators in state")
    revealed = revealed_models(view, round_no)
    seen: set[bytes] = set()
    reports: list[Report] = []
    for vote in settle.votes:
        addr = vote.validator
        # Verify every entry names a current validator, once
        known = validators.get(Address(addr))
        if known is None:
            raise InvalidTx(Code.SETTLE_UNKNOWN_VALIDATOR, f"unknown validator {addr.hex()}")
        if addr in seen:
            raise InvalidTx(Code.SETTLE_DUPLICATE_VOTE, f"validator {addr.hex()} voted twice")
        seen.add(addr)
        if vote.block_id_flag != BLOCK_ID_FLAG_COMMIT:
            # Verify an entry without a commit vote carries nothing (no padding)
            if vote.vote_extension or vote.extension_signature:
                raise InvalidTx(Code.BAD_SETTLE, f"non-commit entry of {addr.hex()} carries an "
                                                 "extension")
            continue
        pub, power = known
        # Verify the extension signature exactly as CometBFT made it
        if not verify_vote_extension(pub, vote.extension_signature, vote.vote_extension,
                                     height - 1, settle.commit_round, chain_id):
            raise InvalidTx(Code.SETTLE_BAD_SIGNATURE,
                            f"vote extension signature of {addr.hex()} does not verify "
                            f"for height {height - 1} round {settle.commit_round}")
        vs = decode_verdict_set(vote.vote_extension, round_no, revealed)
        if vs is None or not vs.complete:
            continue  # signed by its validator, but not a finished verdict set: not present
        reports.append(Report(power, {
            (v.miner, v.model_digest): (v.provenance_ok, v.score_ppm)
            for v in vs.verdicts}, vs.test_set_unusable))
    present = sum(r.power for r in reports)
    # Verify more than 2/3 of the voting power finished verifying this round
    if 3 * present <= 2 * total_power:
        raise InvalidTx(Code.SETTLE_INSUFFICIENT_POWER,
                        f"complete verdicts carry power {present} of {total_power}; need > 2/3")
    return reports, total_power


def process_settle(view: KV, params: Params, chain_id: str, height: Height,
                   settle: Settle) -> list[Event]:
    actives = state.active_rounds(view)
    # Verify a round is in VERIFY and this Settle is for it
    if not actives:
        raise InvalidTx(Code.NO_ACTIVE_ROUND, "no active round to settle")
    rec = next((r for r in actives if r.round == settle.round), None)
    if rec is None:
        raise InvalidTx(Code.WRONG_ROUND, f"Settle for round {settle.round}, active round(s): "
                                          f"{', '.join(str(r.round) for r in actives)}")
    n = rec.round
    if rec.phase is not Phase.VERIFY or rec.verify_height is None:
        raise InvalidTx(Code.WRONG_PHASE, f"round {n} is in {rec.phase}, Settle needs VERIFY")
    # Verify the extensions were made once every reveal was final (at or after VERIFY began)
    if height - 1 < rec.verify_height:
        raise InvalidTx(Code.WRONG_PHASE, f"extensions of height {height - 1} predate VERIFY "
                                          f"(height {rec.verify_height}) of round {n}")
    # Verify the size: an honest Settle of every validator's largest extension fits
    if settle.encoded_bytes > max_settle_bytes(params):
        raise InvalidTx(Code.BAD_SETTLE, f"Settle is {settle.encoded_bytes} bytes, max is "
                                         f"{max_settle_bytes(params)}")
    reports, total_power = collect_reports(view, settle, n, height, chain_id)
    task = state.get_task(view, rec.task_id)
    if task is None:  # rounds and tasks are written together: a broken store, not bad input
        raise RuntimeError(f"round {n} names task {rec.task_id}, which is not in state")
    decision = decide(state.iter_reveals(view, n), reports, total_power, params.tolerance_ppm,
                      task.spec.min_score_ppm)
    rec = replace(rec, verdicts=decision.results)
    if decision.winner is None:
        if decision.publisher_fault:
            events = economics.pay_publisher_fault(view, task, n)
            close_round(view, rec, Outcome.PUBLISHER_FAULT, height)
            return [*events, Event.of("dlbc.round", round=n, phase=Phase.DONE, task_id=task.id,
                                      outcome=Outcome.PUBLISHER_FAULT)]
        events = economics.settle_reveal_deposits(view, n, decision.refuted)
        what = return_or_refund(view, task)
        close_round(view, rec, Outcome.NO_WINNER, height)
        return [*events, Event.of("dlbc.round", round=n, phase=Phase.DONE, task_id=task.id,
                                  outcome=Outcome.NO_WINNER, task=what)]
    rev, score = decision.winner
    miner = rev.miner
    events = economics.settle_reveal_deposits(view, n, decision.refuted)
    reward = task.reward
    # Pay: the escrow to the winner, the minted block reward split by Eq. 5-6 (rewards.py)
    pub_amt, miner_amt = split_block_reward(params.block_reward, rec.publisher_share_ppm)
    state.add_escrow(view, -reward)
    state.add_supply(view, params.block_reward)
    state.credit(view, miner, reward + miner_amt)
    state.credit(view, task.publisher, pub_amt)
    state.put_task(view, replace(task, status=TaskStatus.DONE, winner=miner))
    rec = replace(rec, winner=Winner(
        miner=miner, model_digest=rev.model_digest, model_uri=rev.model_uri,
        claimed_score_ppm=rev.claimed_score_ppm, verified_score_ppm=score,
        checkpoint_digests=rev.checkpoint_digests, task_reward=reward,
        block_reward_miner=Amount(miner_amt), block_reward_publisher=Amount(pub_amt)))
    close_round(view, rec, Outcome.SETTLED, height)
    return [*events, Event.of("dlbc.round", round=n, phase=Phase.DONE, task_id=task.id,
                              outcome=Outcome.SETTLED, miner=miner.hex(), score_ppm=score,
                              amount=reward + miner_amt)]
