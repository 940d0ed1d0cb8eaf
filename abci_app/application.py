"""The application interface the ABCI server dispatches to: one method per ABCI 2.0 call.

Like CometBFT's `BaseApplication`, every method has a safe default, so an app overrides only
what it needs. Methods are plain synchronous functions taking the generated
`tendermint.abci` Request* message and returning the Response* message; the server runs them
one at a time on a single worker thread (see server.py), so an app needs no locking of its own.

`StatefulApplication` adds the staging discipline of docs/determinism.md on top of `Store`:
InitChain and FinalizeBlock only stage, Commit persists height + app hash + writes in one LMDB
transaction.

Version negotiation (docs/wire.md): CometBFT v0.38 sends `Info.abci_version == "2.0.0"`, v1.0 sends
"2.1.0". `Info` records it in `self.abci_version`; `make_validator_update` and `is_recheck` /
`vote_extensions_enable_height` answer/read in the form that version expects.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from abci_app.pb.tendermint.abci import types_pb2 as abci
from abci_app.pb.tendermint.crypto import keys_pb2
from abci_app.pb.tendermint.types import params_pb2
from abci_app.store import Store, View, compute_app_hash

__all__ = [
    "ABCI_VERSION_V038",
    "ABCI_VERSION_V1",
    "Application",
    "BlockResult",
    "StatefulApplication",
    "is_recheck",
    "vote_extensions_enable_height",
]

log = logging.getLogger("abci_app.application")

ABCI_VERSION_V038 = "2.0.0"  # CometBFT v0.38.x
ABCI_VERSION_V1 = "2.1.0"  # CometBFT v1.0.x


def is_v1(abci_version: str) -> bool:
    """True when the peer speaks the v1.0 (ABCI 2.1) forms; anything unparsable counts as 0.38."""
    try:
        major, minor = (int(x) for x in abci_version.split(".")[:2])
    except ValueError:
        return False
    return (major, minor) >= (2, 1)


def is_recheck(req: abci.RequestCheckTx) -> bool:
    """RECHECK in either encoding: v0.38 type (field 2) == 1 or v1.0 type (field 3) == 1."""
    return req.type == abci.RECHECK or req.type_v1 == abci.CHECK_TX_TYPE_RECHECK


def vote_extensions_enable_height(params: params_pb2.ConsensusParams) -> int:
    """The height from which vote extensions are on (0 = never), from v1.0 `feature` or v0.38 `abci`."""
    if params.HasField("feature") and params.feature.HasField("vote_extensions_enable_height"):
        return int(params.feature.vote_extensions_enable_height.value)
    if params.HasField("abci"):
        return int(params.abci.vote_extensions_enable_height)
    return 0


def validator_update_pub_key(update: abci.ValidatorUpdate) -> bytes:
    """The ed25519 public key of a ValidatorUpdate in either v0.38 or v1.0 encoding."""
    if update.pub_key.WhichOneof("sum") == "ed25519":
        return bytes(update.pub_key.ed25519)
    if update.pub_key_bytes and update.pub_key_type in ("ed25519", "tendermint/PubKeyEd25519"):
        return bytes(update.pub_key_bytes)
    raise ValueError("validator update carries no ed25519 public key")


class Application:
    """Base ABCI 2.0 application with CometBFT BaseApplication-like defaults."""

    #: Reported in Info.version / app_version.
    version: str = "0.1.0"
    app_version: int = 1

    def __init__(self, home: Path | None = None) -> None:
        self.home = Path(home) if home is not None else None
        self.abci_version: str = ABCI_VERSION_V038

    # -- helpers for version-dependent encodings ------------------------------------------------
    @property
    def speaks_v1(self) -> bool:
        return is_v1(self.abci_version)

    def make_validator_update(self, pub_key: bytes, power: int) -> abci.ValidatorUpdate:
        """An ed25519 ValidatorUpdate in the form the connected CometBFT expects."""
        if self.speaks_v1:
            return abci.ValidatorUpdate(pub_key_bytes=pub_key, pub_key_type="ed25519", power=power)
        return abci.ValidatorUpdate(pub_key=keys_pb2.PublicKey(ed25519=pub_key), power=power)

    def close(self) -> None:
        """Release resources (the server calls this on shutdown)."""

    # -- info/query connection -----------------------------------------------------------------
    def info(self, req: abci.RequestInfo) -> abci.ResponseInfo:
        """Called at startup (handshake) and by RPC `abci_info`: report the last COMMITTED
        height and app hash so CometBFT replays exactly the blocks the app lacks."""
        if req.abci_version:
            self.abci_version = req.abci_version
        return abci.ResponseInfo(version=self.version, app_version=self.app_version)

    def query(self, req: abci.RequestQuery) -> abci.ResponseQuery:
        """Called for RPC `abci_query`: read committed state; never mutates."""
        return abci.ResponseQuery(code=1, log=f"unknown query path {req.path!r}")

    # -- mempool connection --------------------------------------------------------------------
    def check_tx(self, req: abci.RequestCheckTx) -> abci.ResponseCheckTx:
        """Called when a tx enters the mempool (and again, as RECHECK, after each commit for
        txs still pending). Code 0 admits it; non-zero drops it. Must not change state."""
        return abci.ResponseCheckTx(code=0)

    # -- consensus connection ------------------------------------------------------------------
    def init_chain(self, req: abci.RequestInitChain) -> abci.ResponseInitChain:
        """Called once, at genesis (when Info reports height 0): stage the genesis state."""
        return abci.ResponseInitChain()

    def prepare_proposal(self, req: abci.RequestPrepareProposal) -> abci.ResponsePrepareProposal:
        """Called on the proposer of each height/round: choose the block's txs, within
        `max_tx_bytes`. Works on a throwaway view; may be called again for later rounds."""
        out: list[bytes] = []
        total = 0
        for tx in req.txs:
            total += len(tx)
            if req.max_tx_bytes > 0 and total > req.max_tx_bytes:
                break
            out.append(tx)
        return abci.ResponsePrepareProposal(txs=out)

    def process_proposal(self, req: abci.RequestProcessProposal) -> abci.ResponseProcessProposal:
        """Called on every validator for each proposed block: ACCEPT or REJECT (never UNKNOWN,
        which halts CometBFT). Throwaway view; may be called again for later rounds."""
        return abci.ResponseProcessProposal(status=abci.ResponseProcessProposal.ACCEPT)

    def extend_vote(self, req: abci.RequestExtendVote) -> abci.ResponseExtendVote:
        """Called on each validator when it precommits a block (vote extensions enabled):
        return data for the next proposer. CometBFT sets no timeout: keep it bounded."""
        return abci.ResponseExtendVote()

    def verify_vote_extension(
        self, req: abci.RequestVerifyVoteExtension
    ) -> abci.ResponseVerifyVoteExtension:
        """Called for every peer's precommit carrying an extension: ACCEPT or REJECT its shape."""
        return abci.ResponseVerifyVoteExtension(status=abci.ResponseVerifyVoteExtension.ACCEPT)

    def finalize_block(self, req: abci.RequestFinalizeBlock) -> abci.ResponseFinalizeBlock:
        """Called once per decided block (and during handshake replay): execute the txs on a
        staged view, return exactly one ExecTxResult per tx and the new app hash. MUST NOT
        persist (Commit does)."""
        return abci.ResponseFinalizeBlock(tx_results=[abci.ExecTxResult() for _ in req.txs])

    def commit(self, req: abci.RequestCommit) -> abci.ResponseCommit:
        """Called after FinalizeBlock once CometBFT has saved the block: persist atomically."""
        return abci.ResponseCommit()

    # -- snapshot connection -------------------------------------------------------------------
    def list_snapshots(self, req: abci.RequestListSnapshots) -> abci.ResponseListSnapshots:
        """Called by a peer's state sync: which snapshots we can serve (none by default)."""
        return abci.ResponseListSnapshots()

    def offer_snapshot(self, req: abci.RequestOfferSnapshot) -> abci.ResponseOfferSnapshot:
        """Called on a state-syncing node for each discovered snapshot (rejected by default)."""
        return abci.ResponseOfferSnapshot(result=abci.ResponseOfferSnapshot.REJECT)

    def load_snapshot_chunk(
        self, req: abci.RequestLoadSnapshotChunk
    ) -> abci.ResponseLoadSnapshotChunk:
        """Called to serve one chunk of a snapshot we listed."""
        return abci.ResponseLoadSnapshotChunk()

    def apply_snapshot_chunk(
        self, req: abci.RequestApplySnapshotChunk
    ) -> abci.ResponseApplySnapshotChunk:
        """Called on a state-syncing node with each fetched chunk."""
        return abci.ResponseApplySnapshotChunk(result=abci.ResponseApplySnapshotChunk.ABORT)


@dataclass
class BlockResult:
    """What `StatefulApplication.execute_block` returns besides its staged writes."""

    tx_results: list[abci.ExecTxResult]
    events: list[abci.Event] = field(default_factory=list)
    validator_updates: list[abci.ValidatorUpdate] = field(default_factory=list)
    consensus_param_updates: params_pb2.ConsensusParams | None = None


class StatefulApplication(Application):
    """Application whose state lives in a `Store` at `<home>/data/app.lmdb`.

    Subclasses implement `genesis(view, req)` and `execute_block(view, req) -> BlockResult`;
    this class does Info, the staging of InitChain/FinalizeBlock and the atomic Commit.

    App hash of block H = compute_app_hash(app hash of H-1, H, writes of block H); the
    genesis app hash (InitChain) = compute_app_hash(b"", initial_height - 1, genesis writes).
    Genesis writes are only persisted together with the first block, so a crash between
    InitChain and the first Commit leaves height 0 and CometBFT calls InitChain again.
    """

    store_dirname = "data/app.lmdb"

    def __init__(self, home: Path, *, map_size: int = 1 << 36) -> None:
        super().__init__(home)
        self.store = Store(Path(home) / self.store_dirname, map_size=map_size)
        self._genesis_writes: list[tuple[bytes, bytes | None]] | None = None
        self._genesis_app_hash = b""
        self._pending: tuple[int, View, bytes] | None = None  # (height, root view, app hash)
        self.last_block_txs = 0

    # hooks ---------------------------------------------------------------------------------
    def genesis(self, view: View, req: abci.RequestInitChain) -> abci.ResponseInitChain | None:
        """Stage the genesis state into `view` (from `req.app_state_bytes`)."""
        return None

    def execute_block(self, view: View, req: abci.RequestFinalizeBlock) -> BlockResult:
        """Stage the block's effects into `view`; one ExecTxResult per tx."""
        return BlockResult(tx_results=[abci.ExecTxResult() for _ in req.txs])

    def committed_view(self) -> View:
        """A throwaway root view of committed state, plus the staged genesis before block 1.

        For CheckTx / Query / Prepare- and ProcessProposal: they must see genesis state even
        though it is only persisted with the first block, and must never touch the block
        being finalized.
        """
        view = self.store.view()
        if self.store.last_height == 0 and self._genesis_writes is not None:
            for key, value in self._genesis_writes:
                if value is None:
                    view.delete(key)
                else:
                    view.set(key, value)
        return view

    # ABCI ----------------------------------------------------------------------------------
    def info(self, req: abci.RequestInfo) -> abci.ResponseInfo:
        resp = super().info(req)
        resp.last_block_height = self.store.last_height
        resp.last_block_app_hash = self.store.last_app_hash
        return resp

    def init_chain(self, req: abci.RequestInitChain) -> abci.ResponseInitChain:
        if self.store.last_height != 0:
            raise RuntimeError(
                f"InitChain received but the store is at height {self.store.last_height}"
            )
        view = self.store.view()
        resp = self.genesis(view, req) or abci.ResponseInitChain()
        self._genesis_writes = view.writes()
        initial_height = req.initial_height or 1
        self._genesis_app_hash = compute_app_hash(b"", initial_height - 1, self._genesis_writes)
        self._pending = None
        resp.app_hash = self._genesis_app_hash
        return resp

    def finalize_block(self, req: abci.RequestFinalizeBlock) -> abci.ResponseFinalizeBlock:
        # A fresh root each time: a re-sent FinalizeBlock for an uncommitted height replaces
        # the earlier attempt instead of stacking on it.
        root = self.store.view()
        if self.store.last_height == 0:
            if self._genesis_writes is None:
                raise RuntimeError("FinalizeBlock before InitChain on an empty store")
            for key, value in self._genesis_writes:
                if value is None:
                    root.delete(key)
                else:
                    root.set(key, value)
            prev_hash = self._genesis_app_hash
        else:
            if req.height != self.store.last_height + 1:
                raise RuntimeError(
                    f"FinalizeBlock for height {req.height}, store is at {self.store.last_height}"
                )
            prev_hash = self.store.last_app_hash
        block = root.child()
        result = self.execute_block(block, req)
        if len(result.tx_results) != len(req.txs):
            raise RuntimeError("execute_block must return exactly one ExecTxResult per tx")
        app_hash = compute_app_hash(prev_hash, req.height, block.writes())
        block.write_through()
        self._pending = (req.height, root, app_hash)
        self.last_block_txs = len(req.txs)
        resp = abci.ResponseFinalizeBlock(
            events=result.events,
            tx_results=result.tx_results,
            validator_updates=result.validator_updates,
            app_hash=app_hash,
        )
        if result.consensus_param_updates is not None:
            resp.consensus_param_updates.CopyFrom(result.consensus_param_updates)
        return resp

    def commit(self, req: abci.RequestCommit) -> abci.ResponseCommit:
        if self._pending is None:
            raise RuntimeError("Commit without a finalized block")
        height, root, app_hash = self._pending
        self.before_commit(height)
        self.store.commit(root, height, app_hash)
        self._pending = None
        self._genesis_writes = None
        return abci.ResponseCommit(retain_height=0)

    def before_commit(self, height: int) -> None:
        """Test hook point (kvstore uses it to simulate a crash inside Commit)."""

    def close(self) -> None:
        self.store.close()
