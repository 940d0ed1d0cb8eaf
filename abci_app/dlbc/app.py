"""The DLBC ABCI application: translates ABCI 2.0 calls into the state machine (docs/wire.md,
docs/transactions.md, docs/rounds.md, docs/settlement.md).

`DlbcApplication(home)` keeps its LMDB store under `home/data` (StatefulApplication) and reads
this validator's verdicts from `home/verdicts/` (see verdicts.py). Handlers only translate:
the logic is in process/rounds/settle, one validity path for CheckTx, Prepare-, ProcessProposal
and FinalizeBlock.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from abci_app.application import (
    BlockResult,
    StatefulApplication,
    validator_update_pub_key,
)
from abci_app.dlbc import state
from abci_app.dlbc.codes import Code, InvalidTx
from abci_app.dlbc.crypto import address_of
from abci_app.dlbc.events import INDEXED_KEYS, Event
from abci_app.dlbc.extensions import decode_verdict_set, extension_bytes
from abci_app.dlbc.genesis import parse_app_state
from abci_app.dlbc.process import BlockCtx, TxOutcome, apply_block, apply_tx, is_proposal_fatal
from abci_app.dlbc.query import handle_query
from abci_app.dlbc.records import Height, Phase
from abci_app.dlbc.rounds import advance_schedule
from abci_app.dlbc.settle import (
    MAX_VALIDATORS,
    check_extension,
    extension_round,
    revealed_models,
)
from abci_app.dlbc.txs import build_settle_tx, decode_tx
from abci_app.dlbc.verdicts import read_verdicts
from abci_app.pb.tendermint.abci import types_pb2 as abci
from abci_app.rfc3339 import NS_PER_S
from abci_app.store import View

log = logging.getLogger("abci_app.dlbc")


def time_ns_of(ts: object) -> int:
    """BFT time of a request (google.protobuf.Timestamp) in ns: the only clock we use."""
    return int(ts.seconds) * NS_PER_S + int(ts.nanos)  # type: ignore[attr-defined]


def add_abci_events(target: Any, events: tuple[Event, ...] | list[Event]) -> None:
    """Append `events` to a repeated `abci.Event` field, building them in place: upb copies a
    message passed to a constructor or `extend`, so this is ~2x cheaper per tx in a block.
    Only lookup keys are indexed (`events.INDEXED_KEYS`: each indexed attribute costs the node)."""
    for e in events:
        add = target.add(type=e.type).attributes.add
        for k, v in e.attributes:
            add(key=k, value=v, index=k in INDEXED_KEYS)


def to_abci_events(events: tuple[Event, ...] | list[Event]) -> list[abci.Event]:
    holder = abci.ExecTxResult()
    add_abci_events(holder.events, events)
    return list(holder.events)


def exec_tx_result(outcome: TxOutcome) -> abci.ExecTxResult:
    result = abci.ExecTxResult(code=outcome.code, log=outcome.log)
    add_abci_events(result.events, outcome.events)
    return result


Writes = list[tuple[bytes, bytes | None]]


@dataclass(frozen=True, slots=True)
class ExecutedBlock:
    """A block the app already executed on a throwaway view of committed state.

    Execution is deterministic: the same txs at the same height and BFT time on the same
    committed state (`base`) with the same block hash give the same writes, outcomes and
    events. So ProcessProposal reuses the proposer's own PrepareProposal run, and FinalizeBlock
    the run of ProcessProposal, instead of executing every tx again (each reuse checks all of
    these first and otherwise executes normally).
    """

    height: int
    time_ns: int
    base: tuple[int, bytes]  # (last committed height, its app hash) the run started from
    block_hash: bytes | None  # None: PrepareProposal's run (schedule advanced with b"")
    txs: list[bytes]
    writes: Writes  # every write of the block (schedule + txs), key-sorted
    outcomes: list[TxOutcome]
    block_events: list[Event]
    schedule_writes: Writes | None = None  # PrepareProposal: the writes of the schedule alone

    def matches(self, height: int, time_ns: int, base: tuple[int, bytes],
                txs: list[bytes]) -> bool:
        return (self.height == height and self.time_ns == time_ns and self.base == base
                and self.txs == txs)


class DlbcApplication(StatefulApplication):
    version = "dlbc-0.1.0"

    def __init__(self, home: Path) -> None:
        super().__init__(home)
        # Mempool state: a view accumulating admitted txs (nonces) and the context they are
        # checked in; both are fixed until the next Commit, so they are built once, not per tx.
        self._check: tuple[View, BlockCtx] | None = None
        # This height's latest PrepareProposal and ProcessProposal runs (see ExecutedBlock).
        self._prepared: ExecutedBlock | None = None
        self._proposed: ExecutedBlock | None = None

    # -- helpers -----------------------------------------------------------------------------
    def _base_view(self) -> View:
        """A throwaway child of committed state (plus staged genesis before block 1): what it
        stages is dropped with it."""
        return self.committed_view().child()

    def _ctx(self, view: View, height: int, time_ns: int, in_block: bool) -> BlockCtx:
        return BlockCtx(chain_id=state.get_chain_id(view), height=Height(height), time_ns=time_ns,
                        params=state.get_params(view), in_block=in_block)

    def _base_key(self) -> tuple[int, bytes]:
        """Which committed state a throwaway view starts from (genesis: InitChain resets)."""
        return self.store.last_height, self.store.last_app_hash

    def _forget_blocks(self) -> None:
        self._prepared = None
        self._proposed = None

    # -- consensus connection ------------------------------------------------------------------
    def genesis(self, view: View, req: abci.RequestInitChain) -> abci.ResponseInitChain | None:
        """InitChain: params, balances and validators from genesis (empty app_state → defaults)."""
        gen = parse_app_state(req.app_state_bytes)
        self._check = None  # a CheckTx before InitChain saw no chain
        self._forget_blocks()
        state.set_params(view, gen.params)
        view.set(state.K_CHAIN_ID, req.chain_id.encode())
        total = 0
        for addr, bal in gen.balances:
            state.set_account(view, addr, bal, 0)
            total += bal
        state.add_supply(view, total)
        # Verify the validator set fits the Settle bound (settle.max_settle_bytes); the set is
        # fixed after InitChain, so this one check bounds every Settle of the chain
        if len(req.validators) > MAX_VALIDATORS:
            raise ValueError(f"genesis has {len(req.validators)} validators; DLBC settles rounds "
                             f"with at most {MAX_VALIDATORS}")
        for v in req.validators:
            pub = validator_update_pub_key(v)
            state.set_validator(view, address_of(pub), pub, int(v.power))
        return None

    def execute_block(self, view: View, req: abci.RequestFinalizeBlock) -> BlockResult:
        """FinalizeBlock: schedule, then every tx; one ExecTxResult per tx (docs/wire.md).

        When ProcessProposal ran this very block (same hash, height, time, txs, committed
        state), its staged writes and outcomes are replayed instead of executing it again."""
        time_ns = time_ns_of(req.time)
        txs = list(req.txs)
        done = self._proposed
        if (done is not None and done.block_hash == bytes(req.hash)
                and done.matches(req.height, time_ns, self._base_key(), txs)):
            view.replay(done.writes)
            outcomes, block_events = done.outcomes, done.block_events
        else:
            ctx = self._ctx(view, req.height, time_ns, in_block=True)
            outcomes, block_events = apply_block(view, ctx, bytes(req.hash), txs)
        results = [exec_tx_result(o) for o in outcomes]
        return BlockResult(tx_results=results, events=to_abci_events(block_events))

    def commit(self, req: abci.RequestCommit) -> abci.ResponseCommit:
        resp = super().commit(req)
        self._check = None  # CometBFT rechecks the remaining mempool txs on fresh state
        self._forget_blocks()
        return resp

    def prepare_proposal(self, req: abci.RequestPrepareProposal) -> abci.ResponsePrepareProposal:
        """Proposer: inject Settle first when the extensions allow it, then valid txs that fit."""
        self._prepared = None
        base = self._base_key()
        view = self._base_view()
        ctx = self._ctx(view, req.height, time_ns_of(req.time), in_block=True)
        schedule_events = advance_schedule(view, ctx.params, ctx.height, ctx.time_ns, b"")
        schedule_writes = view.writes()
        limit = req.max_tx_bytes if req.max_tx_bytes > 0 else 1 << 62
        out: list[bytes] = []
        outcomes: list[TxOutcome] = []
        total = 0
        view_is_block = True  # the view holds exactly the writes of schedule + `out`
        rec = state.round_in_phase(view, Phase.VERIFY)
        if rec is not None and req.local_last_commit.votes:
            settle = build_settle_tx(rec.round, req.local_last_commit)
            outcome = apply_tx(view, ctx, settle, 0)
            if outcome.code == 0 and len(settle) <= limit:
                out.append(settle)
                outcomes.append(outcome)
                total += len(settle)
            else:
                view_is_block = outcome.code != 0  # an applied but left-out Settle stays staged
                log.debug("no Settle at height %d: %s", req.height, outcome.log)
        for tx in req.txs:
            if total + len(tx) > limit:
                continue
            try:
                if decode_tx(tx, ctx.chain_id, ctx.params.max_tx_bytes).kind == "settle":
                    continue  # only the proposer's own Settle
            except InvalidTx:
                continue
            outcome = apply_tx(view, ctx, tx, len(out))
            if outcome.code == 0:
                out.append(tx)
                outcomes.append(outcome)
                total += len(tx)
        if view_is_block:
            self._prepared = ExecutedBlock(
                height=req.height, time_ns=ctx.time_ns, base=base, block_hash=None, txs=out,
                writes=view.writes(), outcomes=outcomes, block_events=schedule_events,
                schedule_writes=schedule_writes)
        return abci.ResponsePrepareProposal(txs=out)

    def _reuse_prepared(self, req: abci.RequestProcessProposal, time_ns: int,
                        txs: list[bytes]) -> ExecutedBlock | None:
        """Our own proposal: PrepareProposal ran these txs in this order on this state, with
        the schedule advanced under an empty block hash. The schedule is run again under the
        real hash (it seeds a new round with it); equal writes and events mean every tx saw
        the same state, so the rest of that run is this block's run."""
        prep = self._prepared
        base = self._base_key()
        if prep is None or prep.schedule_writes is None or not prep.matches(
                req.height, time_ns, base, txs):
            return None
        view = self._base_view()
        ctx = self._ctx(view, req.height, time_ns, in_block=True)
        events = advance_schedule(view, ctx.params, ctx.height, ctx.time_ns, bytes(req.hash))
        if view.writes() != prep.schedule_writes or events != prep.block_events:
            return None
        return replace(prep, block_hash=bytes(req.hash), schedule_writes=None)

    def process_proposal(self, req: abci.RequestProcessProposal) -> abci.ResponseProcessProposal:
        """Every validator: REJECT bad envelopes, out-of-phase commits, bad reveals, wrong Settle."""
        reject = abci.ResponseProcessProposal(status=abci.ResponseProcessProposal.REJECT)
        self._proposed = None
        try:
            time_ns = time_ns_of(req.time)
            txs = list(req.txs)
            done = self._reuse_prepared(req, time_ns, txs)
            if done is None:
                base = self._base_key()
                view = self._base_view()
                ctx = self._ctx(view, req.height, time_ns, in_block=True)
                outcomes, block_events = apply_block(view, ctx, bytes(req.hash), txs)
                done = ExecutedBlock(
                    height=req.height, time_ns=time_ns, base=base, block_hash=bytes(req.hash),
                    txs=txs, writes=view.writes(), outcomes=outcomes, block_events=block_events)
            self._proposed = done
            outcomes = done.outcomes
        except Exception:  # a bug must not halt the node with UNKNOWN/exception
            log.exception("ProcessProposal failed at height %d; rejecting", req.height)
            return reject
        for i, o in enumerate(outcomes):
            if is_proposal_fatal(o):
                log.info("REJECT proposal at height %d: tx %d %s code %d: %s",
                         req.height, i, o.kind or "?", o.code, o.log)
                return reject
        return abci.ResponseProcessProposal(status=abci.ResponseProcessProposal.ACCEPT)

    def extend_vote(self, req: abci.RequestExtendVote) -> abci.ResponseExtendVote:
        """Attach this validator's verdicts for the round being verified; empty when none
        (never fails: CometBFT halts on an error here). Verdicts on models the round did not
        reveal are left out, and what is sent is exactly what `check_extension` accepts."""
        try:
            view = self._base_view()
            rec = extension_round(view)
            if rec is None or self.home is None:
                return abci.ResponseExtendVote()
            found = read_verdicts(self.home, rec.round)
            if found is None:
                return abci.ResponseExtendVote()
            revealed = revealed_models(view, rec.round)
            found = replace(found, verdicts=tuple(
                v for v in found.verdicts if (v.miner, v.model_digest) in revealed))
            ext = extension_bytes(rec.round, found)
            if decode_verdict_set(ext, rec.round, revealed) is None:
                log.warning("ExtendVote at height %d: verdicts of round %d are not a valid "
                            "extension; sending none", req.height, rec.round)
                return abci.ResponseExtendVote()
            return abci.ResponseExtendVote(vote_extension=ext)
        except Exception:
            log.exception("ExtendVote failed at height %d; sending an empty extension", req.height)
            return abci.ResponseExtendVote()

    def verify_vote_extension(
        self, req: abci.RequestVerifyVoteExtension
    ) -> abci.ResponseVerifyVoteExtension:
        """docs/settlement.md, settle.check_extension: empty, or a canonical VerdictSet for the
        round in VERIFY with at most one verdict per revealed model and nothing else (no
        padding)."""
        try:
            ok = check_extension(self._base_view(), bytes(req.vote_extension))
        except Exception:  # a bug must not halt consensus; refuse the unverifiable extension
            log.exception("VerifyVoteExtension failed at height %d; rejecting", req.height)
            ok = False
        return abci.ResponseVerifyVoteExtension(
            status=abci.ResponseVerifyVoteExtension.ACCEPT if ok
            else abci.ResponseVerifyVoteExtension.REJECT)

    # -- mempool connection ----------------------------------------------------------------------
    def check_tx(self, req: abci.RequestCheckTx) -> abci.ResponseCheckTx:
        """Mempool admission on a check view that accumulates until the next Commit (nonces)."""
        if self._check is None:
            view = self._base_view()
            self._check = (view, self._ctx(view, self.store.last_height + 1,
                                           state.get_last_time_ns(view), in_block=False))
        view, ctx = self._check
        if not ctx.chain_id:
            self._check = None  # InitChain may come next; look again then
            return abci.ResponseCheckTx(code=int(Code.WRONG_CHAIN_ID),
                                        log="chain not initialised (no InitChain yet)")
        o: TxOutcome = apply_tx(view, ctx, bytes(req.tx), 0)
        # No events: CometBFT neither indexes nor publishes CheckTx events (FinalizeBlock's
        # ExecTxResult carries them), and building them cost ~5 us of a ~25 us non-crypto budget.
        return abci.ResponseCheckTx(code=o.code, log=o.log, gas_wanted=1)

    # -- query connection ------------------------------------------------------------------------
    def query(self, req: abci.RequestQuery) -> abci.ResponseQuery:
        """JSON answers over committed state; paths in query.py."""
        path = req.path or req.data.decode("utf-8", errors="replace")
        code, text, value = handle_query(self._base_view(), path)
        return abci.ResponseQuery(code=code, log=text, value=value,
                                  height=self.store.last_height)
