"""The round schedule on BFT time (docs/rounds.md): [ANNOUNCED →] TRAIN → REVEAL → VERIFY, task
selection, and with `rounds_in_flight = 2` two rounds in flight (docs/rounds.md "Pipelined
rounds": round n+1 is announced `announce_seconds` before round n's TRAIN ends and trains from
that instant, while round n reveals and verifies).

`advance_schedule` runs at the start of every block (FinalizeBlock, and on the throwaway view
of Prepare/ProcessProposal with the proposed block's time) before any tx, so every tx of a
block sees the phase that the block's own BFT time implies. Transitions, in a loop so a long
gap between blocks is handled in one step:

- no active round (pipelined: none training or announced) and a non-empty pool → start round n+1
  with the smallest-ranking task
  (paper Eq. 1-4); seed = hash of this block (docs/watermark.md); the still-unselected task ids are
  recorded in the round (the paper's "unselected task record").
- TRAIN ended and the publisher never released the data key → the task is refunded less the
  withhold fee (`economics.withhold_fee`, to the fee pool), the round closes "key_withheld".
- REVEAL ended with the test key never revealed → "test_key_withheld": if a model was revealed
  that is a publisher fault (the miners' models are public now), the escrow goes to the
  revealers (`economics.pay_publisher_fault`); else refund less the withhold fee. No model
  revealed → "no_reveal", task goes back to the pool once (refunded in full the second time).
- VERIFY ended without a Settle → "unsettled", task back to the pool once likewise.
Every close without a Settle returns the round's reveal deposits (nobody was refuted). Then
`economics.begin_block`: matured miner bonds are released and the fee pool is paid out.

Settlement itself (a winner) is `settle.process_settle`; the next round starts at the next block.
"""

from __future__ import annotations

from dataclasses import replace

from abci_app.dlbc import economics, state
from abci_app.dlbc.events import Event
from abci_app.dlbc.params import Params
from abci_app.dlbc.ranking import RankingContext, ln_fp, median, select_task
from abci_app.dlbc.records import (
    Height,
    Outcome,
    Phase,
    Round,
    RoundNo,
    RoundStatus,
    Task,
    TaskId,
    TaskStatus,
)
from abci_app.dlbc.rewards import compute_publisher_share_ppm
from abci_app.dlbc.state import KV
from abci_app.rfc3339 import NS_PER_S


def compute_ranking_context(view: KV, params: Params, queue_len: int) -> RankingContext:
    """Eq. 1 for this queue length and the medians of Eq. 2-3 over bonded miners."""
    bws: list[int] = []
    fls: list[int] = []
    for _addr, bw, fl in state.iter_miners(view):
        bws.append(bw)
        fls.append(fl)
    return RankingContext(params.k_ppm, queue_len, params.max_queue_len, median(bws), median(fls))


def select_next_task(view: KV, params: Params) -> tuple[TaskId, int, int, list[TaskId]] | None:
    """(task_id, score_e18, queue_len, all pending ids) or None when the pool is empty."""
    entries = list(state.iter_pool(view))
    if not entries:
        return None
    ctx = compute_ranking_context(view, params, len(entries))
    best = select_task(ctx, entries)
    if best is None:  # entries is non-empty, so select_task found one
        raise RuntimeError("select_task chose nothing from a non-empty pool")
    return TaskId(best[0]), best[1], len(entries), [e[0] for e in entries]


def _task_of(view: KV, rec: Round) -> Task:
    task = state.get_task(view, rec.task_id)
    if task is None:  # pool, rounds and tasks move together: a broken store, not bad input
        raise RuntimeError(f"round {rec.round} names task {rec.task_id}, which is not in state")
    return task


def start_round(view: KV, params: Params, height: Height, time_ns: int,
                block_hash: bytes, *, train_start_ns: int | None = None) -> list[Event]:
    """Open round n+1 with the best pending task: in TRAIN now, or ANNOUNCED with its TRAIN at
    `train_start_ns` (pipelined rounds). Every deadline is fixed here, from its TRAIN start."""
    picked = select_next_task(view, params)
    if picked is None:
        return []
    task_id, score, queue_len, ids = picked
    n = RoundNo(state.get_current_round_no(view) + 1)
    task = state.get_task(view, task_id)
    if task is None:
        raise RuntimeError(f"pooled task {task_id} is not in state")
    announced = train_start_ns is not None and train_start_ns > time_ns
    start = train_start_ns if announced and train_start_ns is not None else time_ns
    train_end = start + params.train_seconds * NS_PER_S
    reveal_end = train_end + params.reveal_seconds * NS_PER_S
    rec = Round(
        round=n, task_id=task_id, publisher=task.publisher, status=RoundStatus.ACTIVE,
        phase=Phase.ANNOUNCED if announced else Phase.TRAIN, outcome=None,
        start_height=height, end_height=None,
        start_ns=start, train_end_ns=train_end, reveal_end_ns=reveal_end,
        verify_end_ns=reveal_end + params.verify_seconds * NS_PER_S,
        seed=block_hash, queue_len=queue_len, ranking_score_e18=score,
        publisher_share_ppm=compute_publisher_share_ppm(params.k_ppm, queue_len,
                                                        params.max_queue_len),
        key_released=False, test_key_revealed=False, winner=None, reveals=0,
        verify_height=None,
    )
    # kept beside the record so the record stays small however long the pool is
    state.set_unselected(view, n, [i for i in ids if i != task_id])
    state.pool_remove(view, task_id, task.publisher)
    state.put_task(view, replace(task, status=TaskStatus.SELECTED, rounds=(*task.rounds, n)))
    state.put_round(view, rec)
    view.set(state.K_ROUND_CURRENT, state.u64(n))
    if announced:
        return [Event.of("dlbc.round", round=n, phase=Phase.ANNOUNCED, task_id=task_id,
                         action="announce", seed=rec.seed.hex(), start_ns=start)]
    return [Event.of("dlbc.round", round=n, phase=Phase.TRAIN, task_id=task_id, action="start",
                     seed=rec.seed.hex())]


def refund_task(view: KV, task: Task, fee: int) -> tuple[int, int]:
    """Escrow back to the publisher less `fee` (to the fee pool). Returns (refund, fee)."""
    reward = task.reward
    fee = min(fee, reward)
    state.add_escrow(view, -reward)
    state.add_fee_pool(view, fee)
    state.credit(view, task.publisher, reward - fee)
    state.put_task(view, replace(task, status=TaskStatus.REFUNDED))
    return reward - fee, fee


def return_or_refund(view: KV, task: Task) -> str:
    """A round with no winner returns its task to the pool once, then refunds it in full."""
    if task.returned < 1:
        state.put_task(view, replace(task, returned=task.returned + 1,
                                     status=TaskStatus.PENDING))
        state.pool_add(view, task.id, task.size_bytes, task.reward, ln_fp(task.flops),
                       task.publisher)
        return "returned"
    refund_task(view, task, 0)
    return "refunded"


def close_round(view: KV, rec: Round, outcome: Outcome, height: Height) -> None:
    state.put_round(view, replace(rec, status=RoundStatus.CLOSED, outcome=outcome,
                                  phase=Phase.DONE, end_height=height))


def close_unsettled(view: KV, rec: Round, outcome: Outcome, height: Height) -> list[Event]:
    """Close a round that ends without a Settle: nobody was refuted, every deposit returns."""
    events = economics.settle_reveal_deposits(view, rec.round, set())
    close_round(view, rec, outcome, height)
    return events


def _withheld(view: KV, params: Params, rec: Round, task: Task, outcome: Outcome,
              height: Height) -> list[Event]:
    """The publisher withheld a key before any model was public: refund less the withhold fee."""
    refund, _fee = refund_task(view, task, economics.withhold_fee(params, task.reward))
    events = close_unsettled(view, rec, outcome, height)
    events.append(Event.of("dlbc.round", round=rec.round, phase=Phase.DONE, task_id=task.id,
                           outcome=outcome, amount=refund))
    return events


def _no_winner(view: KV, rec: Round, task: Task, outcome: Outcome,
               height: Height) -> list[Event]:
    """Nothing to settle: the task goes back to the pool once (then is refunded)."""
    what = return_or_refund(view, task)
    events = close_unsettled(view, rec, outcome, height)
    events.append(Event.of("dlbc.round", round=rec.round, phase=Phase.DONE, task_id=task.id,
                           outcome=outcome, task=what))
    return events


def _step(view: KV, params: Params, rec: Round, height: Height,
          time_ns: int) -> list[Event] | None:
    """The one transition BFT time `time_ns` implies for active round `rec`, or None."""
    n = rec.round
    task = _task_of(view, rec)
    if rec.phase is Phase.ANNOUNCED and time_ns >= rec.start_ns:
        state.put_round(view, replace(rec, phase=Phase.TRAIN))
        return [Event.of("dlbc.round", round=n, phase=Phase.TRAIN, task_id=task.id,
                         action="start", seed=rec.seed.hex())]
    if rec.phase is Phase.TRAIN and time_ns >= rec.train_end_ns:
        if not rec.key_released:
            return _withheld(view, params, rec, task, Outcome.KEY_WITHHELD, height)
        state.put_round(view, replace(rec, phase=Phase.REVEAL))
        return [Event.of("dlbc.round", round=n, phase=Phase.REVEAL, task_id=task.id)]
    if rec.phase is Phase.REVEAL and time_ns >= rec.reveal_end_ns:
        revealed = state.any_reveal(view, n)
        if not rec.test_key_revealed:
            if revealed:
                # Publisher fault (§5): the models are public, the test set never came
                events = economics.pay_publisher_fault(view, task, n)
                close_round(view, rec, Outcome.TEST_KEY_WITHHELD, height)
                events.append(Event.of("dlbc.round", round=n, phase=Phase.DONE,
                                       task_id=task.id, outcome=Outcome.TEST_KEY_WITHHELD,
                                       task="forfeited", amount=0))
                return events
            return _withheld(view, params, rec, task, Outcome.TEST_KEY_WITHHELD, height)
        if not revealed:
            return _no_winner(view, rec, task, Outcome.NO_REVEAL, height)
        state.put_round(view, replace(rec, phase=Phase.VERIFY, verify_height=height))
        return [Event.of("dlbc.round", round=n, phase=Phase.VERIFY, task_id=task.id)]
    if rec.phase is Phase.VERIFY and time_ns >= rec.verify_end_ns:
        return _no_winner(view, rec, task, Outcome.UNSETTLED, height)
    return None


def _open_next(view: KV, params: Params, actives: list[Round], height: Height, time_ns: int,
               block_hash: bytes) -> list[Event]:
    """Start or announce the next round once nothing else is due (docs/rounds.md).

    Sequential: only when no round is active. Pipelined: when no round trains or is announced,
    start one now (the round before it, if any, is past TRAIN and closes before this one's TRAIN
    ends); while one trains, announce the next `announce_seconds` before that TRAIN ends, with
    its own TRAIN starting exactly then."""
    if not actives:
        return start_round(view, params, height, time_ns, block_hash)
    if not params.pipelined or any(r.phase is Phase.ANNOUNCED for r in actives):
        return []
    training = [r for r in actives if r.phase is Phase.TRAIN]
    if not training:
        return start_round(view, params, height, time_ns, block_hash)
    end = training[0].train_end_ns
    lead = min(params.announce_seconds, params.train_seconds) * NS_PER_S
    if time_ns >= end - lead:
        return start_round(view, params, height, time_ns, block_hash, train_start_ns=end)
    return []


def advance_schedule(view: KV, params: Params, height: Height, time_ns: int,
                     block_hash: bytes) -> list[Event]:
    """Apply every phase transition that BFT time `time_ns` implies (see module docstring).

    Each pass applies the transition due for the oldest active round that has one (rounds close
    in the order they started), and once none is due opens the next round; a long gap between
    blocks is worked off in this one block."""
    events: list[Event] = []
    for _ in range(64):  # each pass closes or advances; bounded for safety
        actives = state.active_rounds(view)
        for rec in actives:
            stepped = _step(view, params, rec, height, time_ns)
            if stepped is not None:
                events += stepped
                break
        else:
            events += _open_next(view, params, actives, height, time_ns, block_hash)
            break
    events += economics.begin_block(view, time_ns)
    view.set(state.K_LAST_TIME, state.u64(max(time_ns, 0)))
    return events
