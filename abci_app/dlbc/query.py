"""Query paths of DLBC (CometBFT `abci_query`), JSON answers over committed state.

Paths (a leading "/" is ignored; addresses are 40 hex chars; integers are JSON numbers):

    params          chain parameters (params.Params fields)
    supply          {"supply", "escrow", "fee_pool", "bonded", "unbonding", "deposits",
                     "pending_tasks"}; supply == sum(balances) + escrow + fee_pool + bonded
                     + unbonding + deposits (docs/economics.md)
    accounts/<addr> {"address", "balance", "nonce", "miner": null | {"bandwidth_bps", "flops"},
                     "bonded": int (0 unless a bonded miner), "unbonding": null |
                     {"amount", "release_ns"}, "deposit": reveal deposits locked in the
                     active rounds, "pending_tasks": its tasks in the pool}
    miners          {"miners": [{"address", "bandwidth_bps", "flops", "bonded"}, ...]}  bonded
                     miners (those counted in Eq. 2-3), by address
    tasks/pending   {"queue_len", "tasks": [{"id", "publisher", "reward",
                     "ranking_score_e18"}, ...]}   best (next to be selected) first, ties by
                     higher reward then lower id, at most 1,000 entries (queue_len counts all)
    tasks/<id>      task record: {"id", "publisher", "spec": {...hex digests}, "reward",
                     "status": pending|selected|done|refunded|forfeited, "returned", "rounds",
                     "train_key": hex|null, "test_key": hex|null, "winner": hex|null,
                     "forfeit" (forfeited only): {"round", "miners", "share", "to_fee_pool"},
                     ...}
    round           the latest round: rounds/<n> of it, or {"round": 0, "phase": "IDLE"}
    rounds/active   {"rounds": [rounds/<n> of every active round, oldest first],
                     "last_block_time_ns"}: with pipelined rounds one trains while the one
                     before it reveals or verifies, and the next may be ANNOUNCED
    rounds/<n>      {"round", "task_id", "publisher", "status": active|closed,
                     "phase": ANNOUNCED|TRAIN|REVEAL|VERIFY|DONE, "outcome": null|settled|no_winner|
                     no_reveal|unsettled|key_withheld|test_key_withheld|publisher_fault,
                     "start_ns" (TRAIN start), "train_end_ns", "reveal_end_ns", "verify_end_ns",
                     "start_height", "end_height", "seed": hex (watermark seed, docs/watermark.md),
                     "queue_len", "publisher_share_ppm", "ranking_score_e18", "unselected",
                     "key_released", "test_key_revealed", "reveals", "verify_height",
                     "winner": null | {"miner", "model_digest", "model_uri",
                        "claimed_score_ppm", "verified_score_ppm", "checkpoint_digests",
                        "task_reward", "block_reward_miner", "block_reward_publisher"},
                     "commitments": [{"miner", "commitment"}],
                     "revealed": [{"miner", "model_uri", "model_digest",
                                   "claimed_score_ppm", "checkpoint_digests", "height"}],
                     "last_block_time_ns"}
"""

from __future__ import annotations

import json
from typing import Any

from abci_app.dlbc import state
from abci_app.dlbc.codes import Code
from abci_app.dlbc.records import Address, Commitment, RoundInfo, RoundNo, TaskId, idle_answer
from abci_app.dlbc.rounds import compute_ranking_context
from abci_app.dlbc.state import KV

PENDING_LIMIT = 1_000


def round_info(view: KV, n: RoundNo) -> RoundInfo | None:
    """Round n with what it holds besides its record (records.RoundInfo is the answer's shape)."""
    rec = state.get_round(view, n)
    if rec is None:
        return None
    return RoundInfo(rec, tuple(state.get_unselected(view, n)),
                     tuple(Commitment(a, c) for a, c in state.iter_commitments(view, n)),
                     tuple(state.iter_reveals(view, n)), state.get_last_time_ns(view))


def _round_json(view: KV, n: RoundNo) -> dict[str, Any] | None:
    info = round_info(view, n)
    return None if info is None else info.to_json()


def _active_json(view: KV) -> dict[str, Any]:
    """Every active round, oldest first: with pipelined rounds a sidecar has work in two of them
    at once (train one, reveal or verify the one before), which `round` (the newest) alone does
    not show."""
    infos = [round_info(view, r.round) for r in state.active_rounds(view)]
    return {"rounds": [i.to_json() for i in infos if i is not None],
            "last_block_time_ns": state.get_last_time_ns(view)}


def _pending(view: KV) -> dict[str, Any]:
    entries = list(state.iter_pool(view))
    if not entries:
        return {"queue_len": 0, "tasks": []}
    ctx = compute_ranking_context(view, state.get_params(view), len(entries))
    ranked = sorted((ctx.score_e18(size, lnf, reward), -reward, tid)
                    for tid, size, lnf, reward in entries)
    tasks = []
    for score, _neg_reward, tid in ranked[:PENDING_LIMIT]:
        t = state.get_task(view, tid)
        tasks.append({"id": tid, "publisher": None if t is None else t.publisher.hex(),
                      "reward": None if t is None else t.reward, "ranking_score_e18": score})
    return {"queue_len": len(entries), "tasks": tasks}


def handle_query(view: KV, path: str) -> tuple[int, str, bytes]:
    """(code, log, JSON value) for `path`; never raises for bad input."""
    parts = path.strip("/").split("/")
    try:
        answer = _dispatch(view, parts)
    except (ValueError, IndexError) as e:
        return int(Code.QUERY_BAD_PATH), f"bad query path {path!r}: {e}", b""
    if answer is None:
        return int(Code.QUERY_NOT_FOUND), f"nothing at {path!r}", b""
    return 0, "", json.dumps(answer, sort_keys=True).encode()


def _dispatch(view: KV, parts: list[str]) -> Any:
    head = parts[0]
    if head == "params" and len(parts) == 1:
        return state.get_params(view).to_json()
    if head == "supply" and len(parts) == 1:
        return {"supply": state.get_supply(view), "escrow": state.get_escrow(view),
                "fee_pool": state.get_fee_pool(view), "bonded": state.get_bonded_total(view),
                "unbonding": state.get_unbonding_total(view),
                "deposits": state.get_deposits_total(view), "pending_tasks": state.pool_count(view)}
    if head == "accounts" and len(parts) == 2:
        addr = Address(bytes.fromhex(parts[1]))
        if len(addr) != 20:
            raise ValueError("address must be 40 hex characters")
        bal, nonce = state.get_account(view, addr)
        m = state.get_miner(view, addr)
        unbonding = state.get_unbonding(view, addr)
        return {"address": addr.hex(), "balance": bal, "nonce": nonce,
                "miner": None if m is None else {"bandwidth_bps": m[0], "flops": m[1]},
                "bonded": state.get_bond(view, addr),
                "unbonding": None if unbonding is None else {"release_ns": unbonding[0],
                                                              "amount": unbonding[1]},
                "deposit": sum(state.get_deposit(view, r.round, addr)
                               for r in state.active_rounds(view)),
                "pending_tasks": state.publisher_pending(view, addr)}
    if head == "miners" and len(parts) == 1:
        return {"miners": [{"address": a.hex(), "bandwidth_bps": bw, "flops": fl,
                            "bonded": state.get_bond(view, a)}
                           for a, bw, fl in state.iter_miners(view)]}
    if head == "tasks" and len(parts) == 2:
        if parts[1] == "pending":
            return _pending(view)
        task = state.get_task(view, TaskId(_int(parts[1])))
        return None if task is None else task.to_json()
    if head == "round" and len(parts) == 1:
        n = state.get_current_round_no(view)
        if n == 0:
            return idle_answer(state.get_last_time_ns(view))
        return _round_json(view, n)
    if head == "rounds" and len(parts) == 2 and parts[1] == "active":
        return _active_json(view)
    if head == "rounds" and len(parts) == 2:
        return _round_json(view, RoundNo(_int(parts[1])))
    raise ValueError("unknown path; see abci_app/dlbc/query.py")


def _int(text: str) -> int:
    if not text.isascii() or not text.isdigit() or len(text) > 19:
        raise ValueError(f"{text!r} is not a non-negative integer")
    return int(text)
