"""State transitions: one `apply_tx` dispatching to `process_<msg>` (docs/transactions.md,
STYLE §2).

Each tx passes named stages: stateless (`txs.decode_tx`: size, shape, chain id, signature),
then stateful (`# Verify …` checks inside `process_<msg>`), then execution. A tx runs on a
child of the block's view that is written through only on success, so a rejected tx changes
nothing. The same `apply_tx` serves CheckTx (on the mempool's check view), PrepareProposal and
ProcessProposal (on throwaway views) and FinalizeBlock: one validity path.

Every successful signed tx pays its fee (tx_base_fee + tx_fee_per_byte * raw bytes) to the fee
pool before its message runs; RegisterMiner bonds, RevealModel locks a deposit, SubmitTask is
capped per publisher (economics.py, docs/economics.md).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from abci_app.dlbc import economics, state
from abci_app.dlbc.codes import Code, InvalidTx
from abci_app.dlbc.events import Event
from abci_app.dlbc.messages import (
    CommitModel,
    DecodedTx,
    RegisterMiner,
    ReleaseTrainKey,
    RevealModel,
    RevealTestSet,
    Settle,
    SubmitTask,
    Transfer,
    UnbondMiner,
)
from abci_app.dlbc.params import ARCHITECTURES, MAX_PARAM, PPM, Params
from abci_app.dlbc.ranking import compute_task_flops, ln_fp
from abci_app.dlbc.records import (
    Address,
    Height,
    Phase,
    Reveal,
    Round,
    RoundNo,
    Task,
    TaskId,
    TaskSpec,
    TaskStatus,
)
from abci_app.dlbc.rounds import advance_schedule
from abci_app.dlbc.settle import process_settle
from abci_app.dlbc.state import KV
from abci_app.dlbc.txs import decode_tx, key_commitment, model_commitment
from abci_app.dlbc.wire import WireError, parse_json_object

MAX_U63 = MAX_PARAM  # the largest int64: declared resources and sizes are bounded like params
_ARCH_RE = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
_URI_RE = re.compile(r"^(file|https?)://[\x21-\x7e]{1,1016}$")
METRICS = ("dice", "accuracy")


@dataclass(frozen=True, slots=True)
class BlockCtx:
    """What a tx may depend on besides state: all of it comes from the ABCI request."""

    chain_id: str
    height: Height
    time_ns: int
    params: Params
    in_block: bool  # False for CheckTx (a Settle may only come inside a block)


@dataclass(frozen=True, slots=True)
class TxOutcome:
    code: int
    log: str
    kind: str
    events: tuple[Event, ...]


# stateless failures and these (kind, code) pairs make ProcessProposal REJECT the block
_FATAL_ANY = {Code.MALFORMED_TX, Code.TX_TOO_LARGE, Code.BAD_PUBLIC_KEY, Code.BAD_SIGNATURE,
              Code.WRONG_CHAIN_ID, Code.EMPTY_MSG, Code.SIGNED_SETTLE, Code.SETTLE_NOT_ALLOWED}
_FATAL_BY_KIND = {
    "commit_model": {Code.WRONG_PHASE, Code.WRONG_ROUND, Code.NO_ACTIVE_ROUND},
    "reveal_model": {Code.REVEAL_MISMATCH, Code.WRONG_PHASE, Code.WRONG_ROUND},
}


def is_proposal_fatal(outcome: TxOutcome) -> bool:
    """An out-of-phase commit, a mismatching reveal or a wrong Settle REJECTs the block
    (docs/transactions.md, docs/settlement.md)."""
    if outcome.code == Code.OK:
        return False
    if outcome.code in _FATAL_ANY or outcome.kind == "settle":
        return True
    return outcome.code in _FATAL_BY_KIND.get(outcome.kind, ())


# -- per-message transitions ---------------------------------------------------------------------
def process_transfer(view: KV, ctx: BlockCtx, sender: Address, msg: Transfer) -> list[Event]:
    # Verify the recipient and amount
    if len(msg.to) != 20:
        raise InvalidTx(Code.BAD_ADDRESS, "recipient must be a 20-byte address")
    if msg.amount == 0:
        raise InvalidTx(Code.BAD_AMOUNT, "amount must be positive")
    state.debit(view, sender, msg.amount)
    state.credit(view, Address(msg.to), msg.amount)
    return [Event.of("dlbc", action="transfer", sender=sender.hex(), to=msg.to.hex(),
                     amount=msg.amount)]


def process_register_miner(view: KV, ctx: BlockCtx, sender: Address,
                           msg: RegisterMiner) -> list[Event]:
    # Verify declared resources are positive (they feed the medians of Eq. 2-3)
    if not (0 < msg.bandwidth_bps <= MAX_U63 and 0 < msg.flops <= MAX_U63):
        raise InvalidTx(Code.BAD_MINER_RESOURCES, "bandwidth_bps and flops must be in 1..2^63-1")
    # A new miner bonds miner_bond (docs/economics.md); a bonded one only updates its resources
    bonded = 0
    if state.get_miner(view, sender) is None:
        bonded = economics.bond_miner(view, ctx.params, sender)
    state.set_miner(view, sender, msg.bandwidth_bps, msg.flops)
    return [Event.of("dlbc", action="register_miner", sender=sender.hex(), miner=sender.hex(),
                     amount=bonded)]


def process_unbond_miner(view: KV, ctx: BlockCtx, sender: Address,
                         msg: UnbondMiner) -> list[Event]:
    # Verify the sender is a bonded miner
    if state.get_miner(view, sender) is None:
        raise InvalidTx(Code.NOT_REGISTERED_MINER, f"{sender.hex()} is not a bonded miner")
    release_ns, amount = economics.unbond_miner(view, ctx.params, sender, ctx.time_ns)
    return [Event.of("dlbc", action="unbond_miner", sender=sender.hex(), miner=sender.hex(),
                     amount=amount, release_ns=release_ns)]


def validate_task_spec(spec: TaskSpec) -> None:
    """Stateless checks of a TaskSpec (docs/transactions.md); raises BAD_TASK_SPEC naming the
    field, or UNKNOWN_ARCHITECTURE for a well-formed name outside the registry allow-list."""
    def bad(why: str) -> InvalidTx:
        return InvalidTx(Code.BAD_TASK_SPEC, f"task spec: {why}")

    if not _ARCH_RE.match(spec.architecture):
        raise bad("architecture must be a registry name ([a-z][a-z0-9_]{0,31})")
    # Verify the architecture is one every miner and validator can build (no code is shipped)
    if spec.architecture not in ARCHITECTURES:
        raise InvalidTx(Code.UNKNOWN_ARCHITECTURE,
                        f"task spec: unknown architecture {spec.architecture!r}; "
                        f"known: {', '.join(ARCHITECTURES)}")
    if len(spec.hyperparams_json) > 4096:
        raise bad("hyperparams_json longer than 4096 characters")
    # Verify the hyperparameters are a small JSON object, by a rule that does not depend on the
    # interpreter (wire.parse_json_object: bounded depth and size before parsing)
    try:
        parse_json_object(spec.hyperparams_json or "{}")
    except WireError as exc:
        raise bad(f"hyperparams_json: {exc}") from None
    for name in ("model_size_bytes", "flops_per_sample", "data_size_bytes", "num_samples"):
        if not 0 < getattr(spec, name) <= MAX_U63 // 4:
            raise bad(f"{name} must be positive and < 2^61")
    for name in ("data_uri", "test_uri"):
        if not _URI_RE.match(getattr(spec, name)):
            raise bad(f"{name} must be a file://, http:// or https:// URI")
    for name in ("data_sha256", "data_key_sha256", "test_sha256", "test_key_sha256"):
        if len(getattr(spec, name)) != 32:
            raise bad(f"{name} must be 32 bytes")
    if spec.metric not in METRICS:
        raise bad(f"metric must be one of {METRICS}")
    if spec.min_score_ppm > PPM:
        raise bad("min_score_ppm must be <= 1000000")
    if not 1 <= len(spec.input_shape) <= 5 or any(not 0 < d <= 65536 for d in spec.input_shape):
        raise bad("input_shape must have 1..5 dimensions of size 1..65536")
    if not 1 <= spec.num_classes <= 100_000:
        raise bad("num_classes must be in 1..100000")


def process_submit_task(view: KV, ctx: BlockCtx, sender: Address,
                        msg: SubmitTask) -> list[Event]:
    spec = msg.spec
    # Verify the spec and the reward
    validate_task_spec(spec)
    if msg.reward < ctx.params.min_task_reward:
        raise InvalidTx(Code.REWARD_TOO_SMALL,
                        f"reward {msg.reward} below min_task_reward {ctx.params.min_task_reward}")
    # Verify the pool, and the publisher's share of it, have room
    if state.pool_count(view) >= ctx.params.max_pending_tasks:
        raise InvalidTx(Code.POOL_FULL, f"pool holds max_pending_tasks="
                                        f"{ctx.params.max_pending_tasks}")
    if state.publisher_pending(view, sender) >= ctx.params.max_pending_per_publisher:
        raise InvalidTx(Code.PUBLISHER_CAP,
                        f"{sender.hex()} already has max_pending_per_publisher="
                        f"{ctx.params.max_pending_per_publisher} pending tasks")
    state.debit(view, sender, msg.reward)
    state.add_escrow(view, msg.reward)
    task_id = state.next_task_id(view)
    size = spec.model_size_bytes + spec.data_size_bytes
    flops = compute_task_flops(spec.flops_per_sample, spec.num_samples)
    state.put_task(view, Task(
        id=task_id, publisher=sender, spec=spec, reward=msg.reward, status=TaskStatus.PENDING,
        returned=0, rounds=(), submitted_height=ctx.height, size_bytes=size, flops=flops,
        train_key=None, test_key=None, winner=None))
    state.pool_add(view, task_id, size, msg.reward, ln_fp(flops), sender)
    return [Event.of("dlbc", action="submit_task", sender=sender.hex(), task_id=task_id,
                     amount=msg.reward)]


def _publisher_task_in_round(view: KV, sender: Address, task_id: TaskId,
                             phase: Phase) -> tuple[Task, Round]:
    task = state.get_task(view, task_id)
    # Verify the task exists, belongs to the sender and is this round's task in `phase`
    if task is None:
        raise InvalidTx(Code.UNKNOWN_TASK, f"no task {task_id}")
    if task.publisher != sender:
        raise InvalidTx(Code.NOT_TASK_PUBLISHER, f"task {task_id} was published by "
                                                 f"{task.publisher.hex()}, not {sender.hex()}")
    rec = state.get_round(view, task.rounds[-1]) if task.rounds else None
    if rec is None or not rec.is_active or rec.task_id != task_id:
        raise InvalidTx(Code.TASK_NOT_SELECTED,
                        f"task {task_id} is not the task of an active round")
    if rec.phase is not phase:
        raise InvalidTx(Code.WRONG_PHASE,
                        f"round {rec.round} is in {rec.phase}; this needs {phase}")
    return task, rec


def process_release_train_key(view: KV, ctx: BlockCtx, sender: Address,
                              msg: ReleaseTrainKey) -> list[Event]:
    task, rec = _publisher_task_in_round(view, sender, msg.task_id, Phase.TRAIN)
    # Verify the key opens the committed hash, once
    if rec.key_released:
        raise InvalidTx(Code.KEY_ALREADY_RELEASED, f"task {msg.task_id} key already released")
    if key_commitment(msg.key) != task.spec.data_key_sha256:
        raise InvalidTx(Code.KEY_MISMATCH, "SHA-256(key) differs from the task's data_key_sha256")
    state.put_task(view, replace(task, train_key=msg.key))
    state.put_round(view, replace(rec, key_released=True))
    return [Event.of("dlbc", action="release_train_key", sender=sender.hex(),
                     task_id=msg.task_id, round=rec.round, phase=Phase.TRAIN)]


def process_reveal_test_set(view: KV, ctx: BlockCtx, sender: Address,
                            msg: RevealTestSet) -> list[Event]:
    task, rec = _publisher_task_in_round(view, sender, msg.task_id, Phase.REVEAL)
    # Verify the test key opens the test-set commitment, once
    if rec.test_key_revealed:
        raise InvalidTx(Code.TEST_KEY_ALREADY_REVEALED, f"task {msg.task_id} test key revealed")
    if key_commitment(msg.test_key) != task.spec.test_key_sha256:
        raise InvalidTx(Code.TEST_KEY_MISMATCH,
                        "SHA-256(test_key) differs from the task's test_key_sha256")
    state.put_task(view, replace(task, test_key=msg.test_key))
    state.put_round(view, replace(rec, test_key_revealed=True))
    return [Event.of("dlbc", action="reveal_test_set", sender=sender.hex(),
                     task_id=msg.task_id, round=rec.round, phase=Phase.REVEAL)]


def _round_in_phase(view: KV, round_no: RoundNo, phase: Phase) -> Round:
    rec = state.get_round(view, round_no)
    # Verify the message is for an active round, in its phase
    if rec is None or not rec.is_active:
        actives = [r.round for r in state.active_rounds(view)]
        if not actives:
            raise InvalidTx(Code.NO_ACTIVE_ROUND, "no active round")
        raise InvalidTx(Code.WRONG_ROUND, f"message for round {round_no}, active round(s): "
                                          f"{', '.join(map(str, actives))}")
    if rec.phase is not phase:
        raise InvalidTx(Code.WRONG_PHASE, f"round {rec.round} is in {rec.phase}; "
                                          f"this needs {phase}")
    return rec


def process_commit_model(view: KV, ctx: BlockCtx, sender: Address,
                         msg: CommitModel) -> list[Event]:
    # Verify a bonded miner commits once, in TRAIN (commit-in-P1)
    if state.get_miner(view, sender) is None:
        raise InvalidTx(Code.NOT_REGISTERED_MINER,
                        f"{sender.hex()} is not a bonded miner (RegisterMiner bonds one)")
    rec = _round_in_phase(view, msg.round, Phase.TRAIN)
    if len(msg.commitment) != 32:
        raise InvalidTx(Code.BAD_COMMITMENT, "commitment must be 32 bytes (SHA-256)")
    if state.get_commitment(view, msg.round, sender) is not None:
        raise InvalidTx(Code.DUPLICATE_COMMIT,
                        f"{sender.hex()} already committed in round {msg.round}")
    state.set_commitment(view, msg.round, sender, msg.commitment)
    return [Event.of("dlbc", action="commit_model", sender=sender.hex(), miner=sender.hex(),
                     round=msg.round, task_id=rec.task_id, phase=Phase.TRAIN)]


def process_reveal_model(view: KV, ctx: BlockCtx, sender: Address,
                         msg: RevealModel) -> list[Event]:
    rec = _round_in_phase(view, msg.round, Phase.REVEAL)
    n = msg.round
    commitment = state.get_commitment(view, n, sender)
    # Verify the sender committed, reveals once, with a well-formed reveal
    if commitment is None:
        raise InvalidTx(Code.NO_COMMITMENT, f"{sender.hex()} has no commitment in round {n}")
    if state.has_reveal(view, n, sender):
        raise InvalidTx(Code.DUPLICATE_REVEAL, f"{sender.hex()} already revealed in round {n}")
    if (len(msg.model_digest) != 32 or len(msg.salt) > 64 or msg.claimed_score_ppm > PPM
            or not _URI_RE.match(msg.model_uri) or len(msg.checkpoint_digests) > 1000
            or any(len(d) != 32 for d in msg.checkpoint_digests)):
        raise InvalidTx(Code.BAD_REVEAL, "reveal needs a 32-byte digest, salt <= 64 bytes, "
                                         "score <= 1e6 ppm, a file/http(s) URI, "
                                         "<= 1000 32-byte checkpoint digests")
    # Verify a chain with the proof-of-learning check gets a trajectory to check: epoch 0 (the
    # anchored start) and at least one trained epoch (docs/proof_of_learning.md)
    if ctx.params.proof_of_learning and len(msg.checkpoint_digests) < 2:
        raise InvalidTx(Code.BAD_REVEAL, f"this chain checks training trajectories "
                                         f"(proof_of_learning={ctx.params.proof_of_learning}): "
                                         f"a reveal needs the digests of checkpoints 0..E, E >= 1,"
                                         f" got {len(msg.checkpoint_digests)}")
    # Verify the reveal opens the sender's own commitment
    digest = msg.model_digest
    if model_commitment(digest, sender, msg.salt) != commitment:
        raise InvalidTx(Code.REVEAL_MISMATCH,
                        "SHA-256(model_digest || sender || salt) differs from the commitment")
    # Verify no one revealed this model already, and the round has room
    if state.get_digest_owner(view, n, digest) is not None:
        raise InvalidTx(Code.DUPLICATE_MODEL, f"model {digest.hex()} already revealed in round {n}")
    if rec.reveals >= ctx.params.max_reveals_per_round:
        raise InvalidTx(Code.BAD_REVEAL, "round has max_reveals_per_round reveals")
    # Verify the miner can lock the reveal deposit (returned unless its claim is refuted)
    economics.lock_reveal_deposit(view, ctx.params, n, sender)
    state.put_round(view, replace(rec, reveals=rec.reveals + 1))
    state.set_digest_owner(view, n, digest, sender)
    state.put_reveal(view, n, Reveal(
        miner=sender, model_uri=msg.model_uri, model_digest=digest,
        claimed_score_ppm=msg.claimed_score_ppm, height=ctx.height,
        checkpoint_digests=msg.checkpoint_digests))
    return [Event.of("dlbc", action="reveal_model", sender=sender.hex(), miner=sender.hex(),
                     round=n, task_id=rec.task_id, phase=Phase.REVEAL)]


def process_message(view: KV, ctx: BlockCtx, tx: DecodedTx) -> list[Event]:
    """Dispatch a signed tx's message to its `process_<msg>` (one per dlbc.v1 message)."""
    sender, msg = tx.sender, tx.msg
    match msg:
        case Transfer():
            return process_transfer(view, ctx, sender, msg)
        case RegisterMiner():
            return process_register_miner(view, ctx, sender, msg)
        case UnbondMiner():
            return process_unbond_miner(view, ctx, sender, msg)
        case SubmitTask():
            return process_submit_task(view, ctx, sender, msg)
        case ReleaseTrainKey():
            return process_release_train_key(view, ctx, sender, msg)
        case CommitModel():
            return process_commit_model(view, ctx, sender, msg)
        case RevealTestSet():
            return process_reveal_test_set(view, ctx, sender, msg)
        case RevealModel():
            return process_reveal_model(view, ctx, sender, msg)
        case Settle():  # apply_decoded runs it unsigned, before this dispatch
            raise InvalidTx(Code.SETTLE_NOT_ALLOWED, "Settle is not a signed message")


# -- dispatch ------------------------------------------------------------------------------------
def apply_decoded(view: Any, ctx: BlockCtx, tx: DecodedTx, tx_index: int,
                  tx_bytes: int) -> list[Event]:
    """Run one decoded tx on a child of `view`; keep its writes only on success.

    A signed tx pays `economics.tx_fee(params, tx_bytes)` to the fee pool before its message
    runs (so the message sees the balance net of the fee); a failed tx pays nothing."""
    child = view.child()
    if isinstance(tx.msg, Settle):
        # Verify Settle comes from the proposer: inside a block, as its first tx
        if not ctx.in_block or tx_index != 0:
            raise InvalidTx(Code.SETTLE_NOT_ALLOWED,
                            "Settle is proposer-injected: only as the first tx of a block")
        events = process_settle(child, ctx.params, ctx.chain_id, ctx.height, tx.msg)
    else:
        balance, nonce = state.get_account(child, tx.sender)
        # Verify the nonce (replay protection)
        if tx.nonce != nonce:
            raise InvalidTx(Code.BAD_NONCE, f"nonce {tx.nonce} but account {tx.sender.hex()} "
                                            f"expects {nonce}")
        # Verify the sender can pay the fee (docs/economics.md)
        p = ctx.params
        fee = p.tx_base_fee + p.tx_fee_per_byte * tx_bytes  # economics.tx_fee, inlined
        if balance < fee:
            raise InvalidTx(Code.INSUFFICIENT_FEE,
                            f"account {tx.sender.hex()} has {balance}, the fee of this "
                            f"{tx_bytes}-byte tx is {fee}")
        # Fee and nonce before the message runs (no process_<msg> reads the nonce, and the child
        # is dropped if it fails): one account read per tx fewer than doing it afterwards.
        state.set_account(child, tx.sender, balance - fee, nonce + 1)
        state.add_fee_pool(child, fee)
        events = process_message(child, ctx, tx)
        if ctx.in_block:  # CheckTx events are never published (app.check_tx drops them)
            # the fee rides on the message's own event (every one names its sender): one
            # attribute is cheaper to build and index than one more event per tx
            if events:
                first = events[0]
                events[0] = Event(first.type, (*first.attributes, ("fee", str(fee))))
            else:
                events.append(Event.of("dlbc", action="fee", sender=tx.sender.hex(), fee=fee))
    child.write_through()
    return events


def apply_tx(view: Any, ctx: BlockCtx, raw: bytes, tx_index: int) -> TxOutcome:
    """Decode + apply one tx; never raises for bad input (the outcome carries code and log)."""
    kind = ""
    try:
        tx = decode_tx(raw, ctx.chain_id, ctx.params.max_tx_bytes)
        kind = tx.kind
        events = apply_decoded(view, ctx, tx, tx_index, len(raw))
    except InvalidTx as e:
        return TxOutcome(int(e.code), e.log, kind, ())
    return TxOutcome(0, "", kind, tuple(events))


def apply_block(view: Any, ctx: BlockCtx, block_hash: bytes,
                txs: Sequence[bytes]) -> tuple[list[TxOutcome], list[Event]]:
    """Begin-block schedule (with the economics step: bonds released, fee pool paid out), then
    every tx in order: exactly one outcome per tx (docs/wire.md)."""
    block_events = advance_schedule(view, ctx.params, ctx.height, ctx.time_ns, block_hash)
    outcomes = [apply_tx(view, ctx, raw, i) for i, raw in enumerate(txs)]
    return outcomes, block_events


__all__ = [
    "BlockCtx",
    "TxOutcome",
    "apply_block",
    "apply_decoded",
    "apply_tx",
    "is_proposal_fatal",
    "validate_task_spec",
]
