"""What every scarce resource costs (issue "The chain against attackers" §4-§5; docs/economics.md).

- Tx fees: `tx_fee` = tx_base_fee + tx_fee_per_byte · raw tx bytes, charged by
  `process.apply_decoded` on every successful signed tx (CheckTx and blocks); Settle pays none.
  Fees, withhold fees, forfeited deposits and payout remainders go to the fee pool.
- The fee pool pays the validators: `begin_block` (the end of `rounds.advance_schedule`, so at
  the start of every block and before any tx) splits it pro rata by voting power among the
  validators in state, in increasing address; the integer remainder stays in the pool. A
  validator's account address is its validator address (both SHA-256(pub key)[:20]).
- Miner bond: RegisterMiner bonds `miner_bond`; only bonded miners have a miner record, so only
  they count in the medians of Eq. 2-3 and may commit. UnbondMiner stops that at once and queues
  the bond; `begin_block` credits it back once BFT time reaches the release time.
- Reveal deposit: RevealModel locks `reveal_deposit` per round; settlement returns it
  (`settle_reveal_deposits`) except to refuted miners, whose deposits go to the fee pool.
- Publisher fault (`pay_publisher_fault`): the publisher withheld or broke the test set after
  miners revealed; the whole escrow goes to the revealers, split equally.

Integers only, deterministic order (addresses sorted as state keys are), never raises for
input a tx can produce (amounts are bounded by params <= 2^63 and u128 balances).
"""

from __future__ import annotations

from dataclasses import replace

from abci_app.dlbc import state
from abci_app.dlbc.codes import Code, InvalidTx
from abci_app.dlbc.events import Event
from abci_app.dlbc.params import PPM, Params
from abci_app.dlbc.records import Address, Amount, Forfeit, RoundNo, Task, TaskStatus
from abci_app.dlbc.state import KV
from abci_app.rfc3339 import NS_PER_S


# -- fees -----------------------------------------------------------------------------------------
def tx_fee(params: Params, tx_bytes: int) -> int:
    """The fee of a signed tx of `tx_bytes` raw bytes (what clients must leave room for)."""
    return params.tx_base_fee + params.tx_fee_per_byte * tx_bytes


def withhold_fee(params: Params, reward: int) -> int:
    """Kept from a refunded task whose publisher withheld a key: 5 % rounded *up*, at least
    `withhold_fee_min`, never more than the reward itself."""
    proportional = -(-reward * params.withhold_fee_ppm // PPM)
    return min(reward, max(params.withhold_fee_min, proportional))


def distribute_fee_pool(view: KV) -> list[Event]:
    """Pay the fee pool to the validators pro rata by power (address order); the remainder of
    the integer division stays in the pool for the next block."""
    pool = state.get_fee_pool(view)
    if pool <= 0:
        return []
    validators = list(state.iter_validators(view))
    total = sum(p for _, p in validators)
    if total <= 0:
        return []
    events: list[Event] = []
    paid = 0
    for addr, power in validators:
        share = pool * power // total
        if share == 0:
            continue
        state.credit(view, addr, share)
        paid += share
        events.append(Event.of("dlbc", action="fee_payout", validator=addr.hex(), amount=share))
    if paid:
        state.add_fee_pool(view, -paid)
    return events


# -- miner bonds ----------------------------------------------------------------------------------
def bond_miner(view: KV, params: Params, addr: Address) -> int:
    """Move `miner_bond` from `addr`'s balance into its bond (INSUFFICIENT_FUNDS otherwise)."""
    amount = params.miner_bond
    bal, _ = state.get_account(view, addr)
    # Verify the balance covers the bond (the fee is already paid)
    if bal < amount:
        raise InvalidTx(Code.INSUFFICIENT_FUNDS,
                        f"account {addr.hex()} has {bal}, registering needs the miner_bond "
                        f"{amount}")
    state.debit(view, addr, amount)
    state.set_bond(view, addr, amount)
    return amount


def unbond_miner(view: KV, params: Params, addr: Address, time_ns: int) -> tuple[int, int]:
    """The miner stops counting now; its bond is released at time_ns + unbonding_seconds.
    Returns (release_ns, amount waiting for that address)."""
    amount = state.get_bond(view, addr)
    state.set_bond(view, addr, 0)
    state.delete_miner(view, addr)
    return state.add_unbonding(view, addr, amount, time_ns + params.unbonding_seconds * NS_PER_S)


def release_unbonded(view: KV, time_ns: int) -> list[Event]:
    """Credit every bond whose unbonding delay has passed at BFT time `time_ns`."""
    events: list[Event] = []
    for addr, amount in state.take_matured_unbondings(view, time_ns):
        state.credit(view, addr, amount)
        events.append(Event.of("dlbc", action="unbonded", miner=addr.hex(), amount=amount))
    return events


def begin_block(view: KV, time_ns: int) -> list[Event]:
    """The per-block economics step (end of `rounds.advance_schedule`, before any tx)."""
    return release_unbonded(view, time_ns) + distribute_fee_pool(view)


# -- reveal deposits and publisher faults -----------------------------------------------------------
def lock_reveal_deposit(view: KV, params: Params, round_no: RoundNo, addr: Address) -> None:
    bal, _ = state.get_account(view, addr)
    # Verify the balance covers the deposit (the fee is already paid)
    if bal < params.reveal_deposit:
        raise InvalidTx(Code.INSUFFICIENT_FUNDS,
                        f"account {addr.hex()} has {bal}, a reveal locks the reveal_deposit "
                        f"{params.reveal_deposit}")
    state.lock_deposit(view, round_no, addr, params.reveal_deposit)


def settle_reveal_deposits(view: KV, round_no: RoundNo, refuted: set[Address]) -> list[Event]:
    """Return each revealer's round deposit, except the refuted miners' (to the fee pool).

    Idempotent: the deposits are removed, so a second call for the round pays nothing."""
    events: list[Event] = []
    forfeited = 0
    for addr, amount in state.take_deposits(view, round_no):
        if addr in refuted:
            forfeited += amount
            events.append(Event.of("dlbc", action="deposit_forfeited", miner=addr.hex(),
                                   round=round_no, amount=amount))
        else:
            state.credit(view, addr, amount)
            events.append(Event.of("dlbc", action="deposit_returned", miner=addr.hex(),
                                   round=round_no, amount=amount))
    if forfeited:
        state.add_fee_pool(view, forfeited)
    return events


def pay_publisher_fault(view: KV, task: Task, round_no: RoundNo) -> list[Event]:
    """The publisher withheld or broke the test set after miners revealed in `round_no`: the
    task's whole escrow goes to those miners in equal parts (the remainder, and everything when
    nobody revealed, to the fee pool), the task is "forfeited", every deposit is returned.

    A task no longer in escrow (done, refunded, forfeited) is left alone: nothing is paid twice.
    """
    if not task.in_escrow:
        return []
    reward = task.reward
    miners = [rev.miner for rev in state.iter_reveals(view, round_no)]
    share = reward // len(miners) if miners else 0
    remainder = reward - share * len(miners)
    state.add_escrow(view, -reward)
    events: list[Event] = []
    for addr in miners:
        if share:
            state.credit(view, addr, share)
        events.append(Event.of("dlbc", action="publisher_fault", task_id=task.id,
                               round=round_no, miner=addr.hex(), amount=share))
    if remainder:
        state.add_fee_pool(view, remainder)
    state.put_task(view, replace(task, status=TaskStatus.FORFEITED, forfeit=Forfeit(
        round=round_no, miners=tuple(miners), share=Amount(share),
        to_fee_pool=Amount(remainder))))
    return events + settle_reveal_deposits(view, round_no, set())


__all__ = [
    "begin_block",
    "bond_miner",
    "distribute_fee_pool",
    "lock_reveal_deposit",
    "pay_publisher_fault",
    "release_unbonded",
    "settle_reveal_deposits",
    "tx_fee",
    "unbond_miner",
    "withhold_fee",
]
