"""The DLBC ABCI application: translates ABCI 2.0 calls into the state machine (DESIGN §2-§6).

`DlbcApplication(home)` keeps its LMDB store under `home/data` (StatefulApplication) and reads
this validator's verdicts from `home/verdicts/` (see verdicts.py). Handlers only translate:
the logic is in process/rounds/settle, one validity path for CheckTx, Prepare-, ProcessProposal
and FinalizeBlock.
"""

from __future__ import annotations

import logging
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
from abci_app.dlbc.events import Event
from abci_app.dlbc.genesis import parse_app_state
from abci_app.dlbc.process import BlockCtx, TxOutcome, apply_block, apply_tx, is_proposal_fatal
from abci_app.dlbc.query import handle_query
from abci_app.dlbc.rounds import VERIFY, advance_schedule
from abci_app.dlbc.settle import MAX_EXTENSION_BYTES, is_well_formed_extension
from abci_app.dlbc.txs import build_settle_tx, decode_tx
from abci_app.dlbc.verdicts import read_verdicts
from abci_app.pb.dlbc.v1 import vote_pb2
from abci_app.pb.tendermint.abci import types_pb2 as abci
from abci_app.store import View

log = logging.getLogger("abci_app.dlbc")


def time_ns_of(ts: object) -> int:
    """BFT time of a request (google.protobuf.Timestamp) in ns: the only clock we use."""
    return int(ts.seconds) * 1_000_000_000 + int(ts.nanos)  # type: ignore[attr-defined]


def add_abci_events(target: Any, events: tuple[Event, ...] | list[Event]) -> None:
    """Append `events` to a repeated `abci.Event` field, building them in place: upb copies a
    message passed to a constructor or `extend`, so this is ~2x cheaper per tx in a block."""
    for e in events:
        add = target.add(type=e.type).attributes.add
        for k, v in e.attributes:
            add(key=k, value=v, index=True)


def to_abci_events(events: tuple[Event, ...] | list[Event]) -> list[abci.Event]:
    holder = abci.ExecTxResult()
    add_abci_events(holder.events, events)
    return list(holder.events)


def exec_tx_result(outcome: TxOutcome) -> abci.ExecTxResult:
    result = abci.ExecTxResult(code=outcome.code, log=outcome.log)
    add_abci_events(result.events, outcome.events)
    return result


class DlbcApplication(StatefulApplication):
    version = "dlbc-0.1.0"

    def __init__(self, home: Path) -> None:
        super().__init__(home)
        # Mempool state: a view accumulating admitted txs (nonces) and the context they are
        # checked in; both are fixed until the next Commit, so they are built once, not per tx.
        self._check: tuple[View, BlockCtx] | None = None

    # -- helpers -----------------------------------------------------------------------------
    def _base_view(self) -> View:
        """A throwaway view of committed state (plus staged genesis before block 1)."""
        view = self.store.view()
        if self.store.last_height == 0 and self._genesis_writes is not None:
            for key, value in self._genesis_writes:
                if value is None:
                    view.delete(key)
                else:
                    view.set(key, value)
        return view.child()

    def _ctx(self, view: View, height: int, time_ns: int, in_block: bool) -> BlockCtx:
        return BlockCtx(chain_id=state.get_chain_id(view), height=height, time_ns=time_ns,
                        params=state.get_params(view), in_block=in_block)

    # -- consensus connection ------------------------------------------------------------------
    def genesis(self, view: View, req: abci.RequestInitChain) -> abci.ResponseInitChain | None:
        """InitChain: params, balances and validators from genesis (empty app_state → defaults)."""
        gen = parse_app_state(req.app_state_bytes)
        self._check = None  # a CheckTx before InitChain saw no chain
        state.set_params(view, gen.params)
        view.set(state.K_CHAIN_ID, req.chain_id.encode())
        total = 0
        for addr, bal in gen.balances:
            state.set_account(view, addr, bal, 0)
            total += bal
        state.add_supply(view, total)
        for v in req.validators:
            pub = validator_update_pub_key(v)
            state.set_validator(view, address_of(pub), pub, int(v.power))
        return None

    def execute_block(self, view: View, req: abci.RequestFinalizeBlock) -> BlockResult:
        """FinalizeBlock: schedule, then every tx; one ExecTxResult per tx (DESIGN §2)."""
        ctx = self._ctx(view, req.height, time_ns_of(req.time), in_block=True)
        outcomes, block_events = apply_block(view, ctx, bytes(req.hash), list(req.txs))
        results = [exec_tx_result(o) for o in outcomes]
        return BlockResult(tx_results=results, events=to_abci_events(block_events))

    def commit(self, req: abci.RequestCommit) -> abci.ResponseCommit:
        resp = super().commit(req)
        self._check = None  # CometBFT rechecks the remaining mempool txs on fresh state
        return resp

    def prepare_proposal(self, req: abci.RequestPrepareProposal) -> abci.ResponsePrepareProposal:
        """Proposer: inject Settle first when the extensions allow it, then valid txs that fit."""
        view = self._base_view()
        ctx = self._ctx(view, req.height, time_ns_of(req.time), in_block=True)
        advance_schedule(view, ctx.params, ctx.height, ctx.time_ns, b"")
        limit = req.max_tx_bytes if req.max_tx_bytes > 0 else 1 << 62
        out: list[bytes] = []
        total = 0
        rec = state.get_active_round(view)
        if rec is not None and rec["phase"] == VERIFY and req.local_last_commit.votes:
            settle = build_settle_tx(rec["round"], req.local_last_commit)
            outcome = apply_tx(view, ctx, settle, 0)
            if outcome.code == 0 and len(settle) <= limit:
                out.append(settle)
                total += len(settle)
            else:
                log.debug("no Settle at height %d: %s", req.height, outcome.log)
        for tx in req.txs:
            if total + len(tx) > limit:
                continue
            try:
                if decode_tx(tx, ctx.chain_id, ctx.params.max_tx_bytes).kind == "settle":
                    continue  # only the proposer's own Settle
            except InvalidTx:
                continue
            if apply_tx(view, ctx, tx, len(out)).code == 0:
                out.append(tx)
                total += len(tx)
        return abci.ResponsePrepareProposal(txs=out)

    def process_proposal(self, req: abci.RequestProcessProposal) -> abci.ResponseProcessProposal:
        """Every validator: REJECT bad envelopes, out-of-phase commits, bad reveals, wrong Settle."""
        reject = abci.ResponseProcessProposal(status=abci.ResponseProcessProposal.REJECT)
        try:
            view = self._base_view()
            ctx = self._ctx(view, req.height, time_ns_of(req.time), in_block=True)
            outcomes, _ = apply_block(view, ctx, bytes(req.hash), list(req.txs))
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
        """Attach this validator's verdicts for the active round; empty when none (never fails)."""
        try:
            rec = state.get_active_round(self._base_view())
            if rec is None or self.home is None:
                return abci.ResponseExtendVote()
            verdicts = read_verdicts(self.home, rec["round"])
            if not verdicts:
                return abci.ResponseExtendVote()
            ext = vote_pb2.VerdictSet(round=rec["round"], verdicts=[
                vote_pb2.Verdict(miner=v.miner, model_digest=v.model_digest,
                                 watermark_ok=v.watermark_ok, score_ppm=v.score_ppm)
                for v in verdicts]).SerializeToString()
            if len(ext) > MAX_EXTENSION_BYTES:
                return abci.ResponseExtendVote()
            return abci.ResponseExtendVote(vote_extension=ext)
        except Exception:
            log.exception("ExtendVote failed at height %d; sending an empty extension", req.height)
            return abci.ResponseExtendVote()

    def verify_vote_extension(
        self, req: abci.RequestVerifyVoteExtension
    ) -> abci.ResponseVerifyVoteExtension:
        """Shape only (DESIGN §6): empty or a well-formed VerdictSet."""
        ok = is_well_formed_extension(bytes(req.vote_extension))
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
