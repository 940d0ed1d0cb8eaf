"""Typed reads and writes of DLBC state on a staged `View` (docs/transactions.md,
docs/rounds.md, docs/settlement.md, docs/economics.md); tasks, rounds and reveals are the
typed records of records.py, stored as their canonical JSON.

Key layout (all integers big-endian, addresses 20 raw bytes):

    meta/params            JSON Params              meta/chain_id       utf-8
    meta/next_task_id      u64                      meta/supply         decimal ascii
    meta/escrow            decimal ascii            meta/fee_pool       decimal ascii
    meta/last_time_ns      u64 (BFT time of the last finalized block)
    meta/pool_count        decimal ascii (number of pending tasks)
    acct/<addr>            balance u128 ‖ nonce u64
    miner/<addr>           bandwidth_bps u64 ‖ flops u64
    val/<addr>             ed25519 pub 32 ‖ power u64
    task/<id u64>          canonical JSON task record
    pool/<id u64>          id u64 ‖ size u64 ‖ reward u64 ‖ ln(FLOPs)·2^64 as i64 hi ‖ u64 lo
    round/current          u64 number of the latest round (0: none yet)
    round/<n u64>          canonical JSON round record
    commit/<n>/<addr>      32-byte commitment
    reveal/<n>/<addr>      canonical JSON reveal
    digest/<n>/<digest>    addr (one reveal per model digest per round)
    unselected/<n u64>     u64 ids of the tasks left pending when round n started

Economics (docs/economics.md; amounts u128 big-endian, totals decimal ascii):

    meta/bonded            sum of active miner bonds     meta/unbonding      sum of unbonding
    meta/deposits          sum of locked reveal deposits
    bond/<addr>            amount (present exactly while miner/<addr> is: a bonded miner)
    unbonding/<addr>       release time ns u64 ‖ amount (one entry per address; merged)
    unbondq/<ns u64><addr> b"\x01": the release queue, ordered by time then address
    deposit/<n u64><addr>  amount locked by the reveal of <addr> in round n
    pubpending/<addr>      decimal ascii: pending (pooled) tasks of publisher <addr>

Invariant (tested): sum(balances) + escrow + fee_pool + bonded + unbonding + deposits == supply,
where supply grows only by the block rewards minted at settlement.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from functools import lru_cache
from typing import Protocol

from abci_app.dlbc.codes import Code, InvalidTx
from abci_app.dlbc.params import Params
from abci_app.dlbc.records import (
    Address,
    Amount,
    Phase,
    Reveal,
    Round,
    RoundNo,
    Task,
    TaskId,
    canonical_json,
)

_U64 = struct.Struct(">Q")
_MINER = struct.Struct(">QQ")
_LO64 = (1 << 64) - 1
_POOL = struct.Struct(">QQQqQ")  # id, size, reward, ln_flops hi (signed), lo

K_PARAMS = b"meta/params"
K_CHAIN_ID = b"meta/chain_id"
K_NEXT_TASK = b"meta/next_task_id"
K_SUPPLY = b"meta/supply"
K_ESCROW = b"meta/escrow"
K_FEE_POOL = b"meta/fee_pool"
K_LAST_TIME = b"meta/last_time_ns"
K_ROUND_CURRENT = b"round/current"
K_POOL_COUNT = b"meta/pool_count"
P_ACCT = b"acct/"
P_MINER = b"miner/"
P_VAL = b"val/"
P_TASK = b"task/"
P_POOL = b"pool/"
P_ROUND = b"round/"
P_COMMIT = b"commit/"
P_REVEAL = b"reveal/"
P_DIGEST = b"digest/"
P_UNSELECTED = b"unselected/"
K_BONDED = b"meta/bonded"
K_UNBONDING = b"meta/unbonding"
K_DEPOSITS = b"meta/deposits"
P_BOND = b"bond/"
P_UNBONDING = b"unbonding/"
P_UNBOND_QUEUE = b"unbondq/"
P_DEPOSIT = b"deposit/"
P_PUB_PENDING = b"pubpending/"
_RELEASE = struct.Struct(">Q16s")  # release ns, amount u128


class KV(Protocol):
    """The part of abci_app.store.View the state machine uses."""

    def get(self, key: bytes) -> bytes | None: ...
    def set(self, key: bytes, value: bytes) -> None: ...
    def delete(self, key: bytes) -> None: ...
    def iter_prefix(self, prefix: bytes, *,
                    reverse: bool = False) -> Iterator[tuple[bytes, bytes]]: ...


def u64(n: int) -> bytes:
    return _U64.pack(n)


# -- chain metadata ------------------------------------------------------------------------------
def get_params(view: KV) -> Params:
    raw = view.get(K_PARAMS)
    return params_from_bytes(bytes(raw)) if raw else Params()


@lru_cache(maxsize=16)
def params_from_bytes(raw: bytes) -> Params:
    """Parse stored params once per distinct byte string: every CheckTx and block reads them,
    and JSON parsing + validation cost more than the rest of a transfer (issue 8 profile).
    Params is frozen, so sharing one instance is safe; a bad value still raises every time."""
    return Params.from_json(json.loads(raw))


def set_params(view: KV, params: Params) -> None:
    view.set(K_PARAMS, canonical_json(params.to_json()))


def get_chain_id(view: KV) -> str:
    raw = view.get(K_CHAIN_ID)
    return raw.decode() if raw else ""


def _get_int(view: KV, key: bytes) -> int:
    raw = view.get(key)
    return int(raw) if raw else 0


def _set_int(view: KV, key: bytes, value: int) -> None:
    view.set(key, str(value).encode())


def get_supply(view: KV) -> int:
    return _get_int(view, K_SUPPLY)


def add_supply(view: KV, amount: int) -> None:
    _set_int(view, K_SUPPLY, get_supply(view) + amount)


def get_escrow(view: KV) -> int:
    return _get_int(view, K_ESCROW)


def add_escrow(view: KV, delta: int) -> None:
    _set_int(view, K_ESCROW, get_escrow(view) + delta)


def get_fee_pool(view: KV) -> int:
    return _get_int(view, K_FEE_POOL)


def add_fee_pool(view: KV, amount: int) -> None:
    _set_int(view, K_FEE_POOL, get_fee_pool(view) + amount)


def get_last_time_ns(view: KV) -> int:
    raw = view.get(K_LAST_TIME)
    return _U64.unpack(raw)[0] if raw else 0


def next_task_id(view: KV) -> TaskId:
    """Allocate a task id (ids start at 1, increase by one)."""
    raw = view.get(K_NEXT_TASK)
    n = _U64.unpack(raw)[0] if raw else 1
    view.set(K_NEXT_TASK, u64(n + 1))
    return TaskId(n)


# -- accounts -----------------------------------------------------------------------------------
def get_account(view: KV, addr: Address) -> tuple[Amount, int]:
    """(balance, nonce); an unknown address has (0, 0)."""
    raw = view.get(P_ACCT + addr)
    if raw is None:
        return Amount(0), 0
    return Amount(int.from_bytes(raw[:16], "big")), _U64.unpack_from(raw, 16)[0]


def set_account(view: KV, addr: Address, balance: int, nonce: int) -> None:
    view.set(P_ACCT + addr, balance.to_bytes(16, "big") + _U64.pack(nonce))


def credit(view: KV, addr: Address, amount: int) -> None:
    bal, nonce = get_account(view, addr)
    set_account(view, addr, bal + amount, nonce)


def debit(view: KV, addr: Address, amount: int) -> None:
    bal, nonce = get_account(view, addr)
    # Verify the balance suffices
    if bal < amount:
        raise InvalidTx(Code.INSUFFICIENT_FUNDS,
                        f"account {addr.hex()} has {bal}, needs {amount}")
    set_account(view, addr, bal - amount, nonce)


def iter_accounts(view: KV) -> Iterator[tuple[Address, int, int]]:
    for key, raw in view.iter_prefix(P_ACCT):
        yield (Address(key[len(P_ACCT):]), int.from_bytes(raw[:16], "big"),
               _U64.unpack_from(raw, 16)[0])


# -- miners and validators ----------------------------------------------------------------------
def get_miner(view: KV, addr: Address) -> tuple[int, int] | None:
    raw = view.get(P_MINER + addr)
    return None if raw is None else _MINER.unpack(raw)


def set_miner(view: KV, addr: Address, bandwidth_bps: int, flops: int) -> None:
    view.set(P_MINER + addr, _MINER.pack(bandwidth_bps, flops))


def iter_miners(view: KV) -> Iterator[tuple[Address, int, int]]:
    """Bonded miners (a miner record exists exactly while its bond does), by address."""
    for key, raw in view.iter_prefix(P_MINER):
        bw, fl = _MINER.unpack(raw)
        yield Address(key[len(P_MINER):]), bw, fl


def delete_miner(view: KV, addr: Address) -> None:
    view.delete(P_MINER + addr)


# -- bonds, unbonding, reveal deposits ----------------------------------------------------------
def _u128(n: int) -> bytes:
    return n.to_bytes(16, "big")


def get_bonded_total(view: KV) -> int:
    return _get_int(view, K_BONDED)


def get_unbonding_total(view: KV) -> int:
    return _get_int(view, K_UNBONDING)


def get_deposits_total(view: KV) -> int:
    return _get_int(view, K_DEPOSITS)


def get_bond(view: KV, addr: Address) -> int:
    raw = view.get(P_BOND + addr)
    return 0 if raw is None else int.from_bytes(raw, "big")


def set_bond(view: KV, addr: Address, amount: int) -> None:
    """Record `amount` as `addr`'s active bond (0 deletes it), keeping meta/bonded in step."""
    old = get_bond(view, addr)
    if amount == 0:
        view.delete(P_BOND + addr)
    else:
        view.set(P_BOND + addr, _u128(amount))
    _set_int(view, K_BONDED, get_bonded_total(view) + amount - old)


def get_unbonding(view: KV, addr: Address) -> tuple[int, int] | None:
    """(release time ns, amount) of `addr`'s unbonding bond, or None."""
    raw = view.get(P_UNBONDING + addr)
    if raw is None:
        return None
    release_ns, amount = _RELEASE.unpack(raw)
    return release_ns, int.from_bytes(amount, "big")


def add_unbonding(view: KV, addr: Address, amount: int, release_ns: int) -> tuple[int, int]:
    """Queue `amount` for release at `release_ns`; an entry already waiting is merged into it
    (released at the later time). Returns the entry's (release_ns, amount)."""
    release_ns = min(max(release_ns, 0), _LO64)  # a u64 key part whatever the params say
    old = get_unbonding(view, addr)
    total = amount
    if old is not None:
        view.delete(P_UNBOND_QUEUE + u64(old[0]) + addr)
        release_ns = max(release_ns, old[0])
        total += old[1]
    view.set(P_UNBONDING + addr, _RELEASE.pack(release_ns, _u128(total)))
    view.set(P_UNBOND_QUEUE + u64(release_ns) + addr, b"\x01")
    _set_int(view, K_UNBONDING, get_unbonding_total(view) + amount)
    return release_ns, total


def take_matured_unbondings(view: KV, time_ns: int) -> list[tuple[Address, int]]:
    """Remove every unbonding entry released at or before `time_ns`; (addr, amount) in queue
    order (release time, then address). The caller credits them."""
    n = len(P_UNBOND_QUEUE)
    due: list[bytes] = []
    for key, _ in view.iter_prefix(P_UNBOND_QUEUE):
        if _U64.unpack_from(key, n)[0] > time_ns:
            break
        due.append(key)
    out: list[tuple[Address, int]] = []
    for key in due:
        addr = Address(key[n + 8:])
        entry = get_unbonding(view, addr)
        view.delete(key)
        view.delete(P_UNBONDING + addr)
        amount = 0 if entry is None else entry[1]
        _set_int(view, K_UNBONDING, get_unbonding_total(view) - amount)
        out.append((addr, amount))
    return out


def get_deposit(view: KV, n: RoundNo, addr: Address) -> int:
    raw = view.get(P_DEPOSIT + u64(n) + addr)
    return 0 if raw is None else int.from_bytes(raw, "big")


def lock_deposit(view: KV, n: RoundNo, addr: Address, amount: int) -> None:
    """Debit `amount` from `addr` (INSUFFICIENT_FUNDS if it cannot) into its round-n deposit."""
    debit(view, addr, amount)
    view.set(P_DEPOSIT + u64(n) + addr, _u128(get_deposit(view, n, addr) + amount))
    _set_int(view, K_DEPOSITS, get_deposits_total(view) + amount)


def take_deposits(view: KV, n: RoundNo) -> list[tuple[Address, int]]:
    """Remove every deposit of round n; (addr, amount) by address. The caller pays them out."""
    p = P_DEPOSIT + u64(n)
    items = [(Address(key[len(p):]), int.from_bytes(raw, "big"))
             for key, raw in view.iter_prefix(p)]
    for addr, _ in items:
        view.delete(p + addr)
    if items:
        _set_int(view, K_DEPOSITS, get_deposits_total(view) - sum(a for _, a in items))
    return items


def set_validator(view: KV, addr: Address, pub_key: bytes, power: int) -> None:
    if power == 0:
        view.delete(P_VAL + addr)
    else:
        view.set(P_VAL + addr, pub_key + _U64.pack(power))


def iter_validators(view: KV) -> Iterator[tuple[Address, int]]:
    """(address, power) of every validator in state, in increasing address (deterministic)."""
    n = len(P_VAL)
    for key, raw in view.iter_prefix(P_VAL):
        yield Address(key[n:]), _U64.unpack_from(raw, 32)[0]


def get_validators(view: KV) -> dict[Address, tuple[bytes, int]]:
    """address -> (pub key, power) (a dict used only for lookups, never iterated for output)."""
    out: dict[Address, tuple[bytes, int]] = {}
    for key, raw in view.iter_prefix(P_VAL):
        out[Address(key[len(P_VAL):])] = (raw[:32], _U64.unpack_from(raw, 32)[0])
    return out


# -- tasks and the pool -------------------------------------------------------------------------
def get_task(view: KV, task_id: TaskId) -> Task | None:
    raw = view.get(P_TASK + u64(task_id))
    return None if raw is None else Task.from_json(raw)


def put_task(view: KV, task: Task) -> None:
    view.set(P_TASK + u64(task.id), task.to_bytes())


def pool_count(view: KV) -> int:
    return _get_int(view, K_POOL_COUNT)


def publisher_pending(view: KV, publisher: Address) -> int:
    """Tasks of `publisher` in the pool (max_pending_per_publisher caps SubmitTask on it)."""
    return _get_int(view, P_PUB_PENDING + publisher)


def _add_publisher_pending(view: KV, publisher: Address, delta: int) -> None:
    n = publisher_pending(view, publisher) + delta
    if n <= 0:
        view.delete(P_PUB_PENDING + publisher)
    else:
        _set_int(view, P_PUB_PENDING + publisher, n)


def pool_add(view: KV, task_id: TaskId, size: int, reward: int, ln_flops_fp: int,
             publisher: Address) -> None:
    if view.get(P_POOL + u64(task_id)) is None:
        _set_int(view, K_POOL_COUNT, pool_count(view) + 1)
        _add_publisher_pending(view, publisher, 1)
    view.set(P_POOL + u64(task_id),
             _POOL.pack(task_id, size, reward, ln_flops_fp >> 64, ln_flops_fp & _LO64))


def pool_remove(view: KV, task_id: TaskId, publisher: Address) -> None:
    if view.get(P_POOL + u64(task_id)) is not None:
        _set_int(view, K_POOL_COUNT, pool_count(view) - 1)
        _add_publisher_pending(view, publisher, -1)
    view.delete(P_POOL + u64(task_id))


def iter_pool(view: KV) -> Iterator[tuple[TaskId, int, int, int]]:
    """(task_id, size, ln_flops_fp, reward) in increasing task id."""
    unpack = _POOL.unpack
    for _key, raw in view.iter_prefix(P_POOL):
        task_id, size, reward, hi, lo = unpack(raw)
        yield TaskId(task_id), size, (hi << 64) | lo, reward


def pool_ids(view: KV) -> list[TaskId]:
    n = len(P_POOL)
    return [TaskId(_U64.unpack_from(k, n)[0]) for k, _ in view.iter_prefix(P_POOL)]


# -- rounds, commitments, reveals ----------------------------------------------------------------
def get_current_round_no(view: KV) -> RoundNo:
    raw = view.get(K_ROUND_CURRENT)
    return RoundNo(_U64.unpack(raw)[0] if raw else 0)


def get_round(view: KV, n: RoundNo) -> Round | None:
    raw = view.get(P_ROUND + u64(n))
    return None if raw is None else Round.from_json(raw)


def put_round(view: KV, rec: Round) -> None:
    view.set(P_ROUND + u64(rec.round), rec.to_bytes())


#: Most rounds that can be active at once: MAX_ROUNDS_IN_FLIGHT in flight (one training, one
#: revealing or verifying) plus one ANNOUNCED beside them (docs/rounds.md).
MAX_ACTIVE_ROUNDS = 3


def active_rounds(view: KV) -> list[Round]:
    """The active rounds, oldest first.

    Rounds close in the order they started (a round's TRAIN ends only after the round before it
    closed: params `_validate_pipeline`), so the active ones are the newest few, and a scan down
    from `round/current` that stops at the first closed one finds all of them."""
    out: list[Round] = []
    n = get_current_round_no(view)
    while n > 0 and len(out) < MAX_ACTIVE_ROUNDS:
        rec = get_round(view, n)
        if rec is None or not rec.is_active:
            break
        out.append(rec)
        n = RoundNo(n - 1)
    out.reverse()
    return out


def round_in_phase(view: KV, *phases: Phase) -> Round | None:
    """The oldest active round in one of `phases` (at most one is past TRAIN at a time)."""
    for rec in active_rounds(view):
        if rec.phase in phases:
            return rec
    return None


def set_unselected(view: KV, n: RoundNo, ids: list[TaskId]) -> None:
    view.set(P_UNSELECTED + u64(n), b"".join(u64(i) for i in ids))


def get_unselected(view: KV, n: RoundNo) -> list[TaskId]:
    raw = view.get(P_UNSELECTED + u64(n)) or b""
    return [TaskId(x[0]) for x in struct.iter_unpack(">Q", raw)]


def get_commitment(view: KV, n: RoundNo, addr: Address) -> bytes | None:
    return view.get(P_COMMIT + u64(n) + addr)


def set_commitment(view: KV, n: RoundNo, addr: Address, commitment: bytes) -> None:
    view.set(P_COMMIT + u64(n) + addr, commitment)


def iter_commitments(view: KV, n: RoundNo) -> Iterator[tuple[Address, bytes]]:
    p = P_COMMIT + u64(n)
    for key, raw in view.iter_prefix(p):
        yield Address(key[len(p):]), raw


def has_reveal(view: KV, n: RoundNo, addr: Address) -> bool:
    return view.get(P_REVEAL + u64(n) + addr) is not None


def get_reveal(view: KV, n: RoundNo, addr: Address) -> Reveal | None:
    raw = view.get(P_REVEAL + u64(n) + addr)
    return None if raw is None else Reveal.from_json(raw)


def put_reveal(view: KV, n: RoundNo, reveal: Reveal) -> None:
    view.set(P_REVEAL + u64(n) + reveal.miner, reveal.to_bytes())


def any_reveal(view: KV, n: RoundNo) -> bool:
    return next(view.iter_prefix(P_REVEAL + u64(n)), None) is not None


def iter_reveals(view: KV, n: RoundNo) -> Iterator[Reveal]:
    """The reveals of round n, by miner address (state key order)."""
    for _key, raw in view.iter_prefix(P_REVEAL + u64(n)):
        yield Reveal.from_json(raw)


def get_digest_owner(view: KV, n: RoundNo, digest: bytes) -> Address | None:
    raw = view.get(P_DIGEST + u64(n) + digest)
    return None if raw is None else Address(raw)


def set_digest_owner(view: KV, n: RoundNo, digest: bytes, addr: Address) -> None:
    view.set(P_DIGEST + u64(n) + digest, addr)
