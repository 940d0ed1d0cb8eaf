"""A driver that plays CometBFT's part over the real ABCI socket (tests and the devnet).

CometBFT cannot be installed on the development machines (docs/processes.md), so this module sends
exactly the call sequence a CometBFT v0.38 node sends, to one app process per validator:

* handshake: Info on each app; InitChain at height 0 (validators, consensus params with vote
  extensions enabled, app_state_bytes); then replay of the stored blocks an app lacks
  (FinalizeBlock + Commit only), checking every replayed app hash against the recorded one.
* per height: PrepareProposal (proposer only; `local_last_commit` carries the previous height's
  vote extensions signed as CometBFT signs them) -> ProcessProposal (all) -> ExtendVote (each
  validator's own app) -> VerifyVoteExtension (every extension on every other app) ->
  FinalizeBlock (all) -> Commit (all); app hashes must agree.

It is not a consensus engine: there is one round per height, no networking and no byzantine
behaviour; proposer selection is round-robin. What it shares with CometBFT is what the app can
observe — the messages, their order, their fields and the vote-extension signatures.

Blocks (the exact RequestFinalizeBlock sent), their FinalizeBlock responses, app hashes and
extended commits are kept in the block store (`blockstore`, LMDB under `block_store_dir`) so a
restarted driver replays what an app lacks, as CometBFT's handshake does.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp
from google.protobuf.wrappers_pb2 import Int64Value

from abci_app.abci_client import AbciClient
from abci_app.codec import encode_uvarint
from abci_app.dlbc.crypto import sign_vote_extension
from abci_app.pb.tendermint.abci import types_pb2 as abci
from abci_app.pb.tendermint.types import params_pb2, validator_pb2
from dlbc_ops.devnode.blockstore import BlockStore
from dlbc_ops.devnode.validator_key import ValidatorKey

log = logging.getLogger("dlbc_ops.devnode.driver")

DEFAULT_BLOCK_MAX_BYTES = 22_020_096  # `cometbft init` default (21 MiB)
ABCI_VERSION = "2.0.0"  # what a CometBFT v0.38 node announces in Info
NODE_VERSION = "0.38.17"


class DriverError(RuntimeError):
    """The apps did something a CometBFT node would halt on (or the driver was misused)."""


class ProposalRejected(DriverError):
    def __init__(self, height: int, rejecting: list[int]) -> None:
        super().__init__(f"proposal for height {height} rejected by app(s) {rejecting}")
        self.height = height
        self.rejecting = rejecting


class AppHashMismatch(DriverError):
    def __init__(self, height: int, hashes: list[bytes]) -> None:
        shown = ", ".join(h.hex()[:16] for h in hashes)
        super().__init__(f"app hashes disagree at height {height}: {shown}")
        self.height = height
        self.hashes = hashes


# --------------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------------


@dataclass
class HeightResult:
    height: int
    block_hash: bytes
    txs: list[bytes]  # the txs actually included (PrepareProposal's answer)
    tx_results: list[list[abci.ExecTxResult]]  # per app, one per tx
    events: list[list[abci.Event]]  # per app, block-level events
    app_hashes: list[bytes]  # per app
    proposer: int
    vote_extensions: list[bytes] = field(default_factory=list)  # per validator
    validator_updates: list[abci.ValidatorUpdate] = field(default_factory=list)
    #: None for a height run live by `run_height`. For a result rebuilt from the block store
    #: (`Driver.replayed`, `Driver.stored_result`) the index of the one app whose
    #: FinalizeBlock response it holds: tx_results/events/app_hashes then have one entry.
    replayed_app: int | None = None

    @property
    def app_hash(self) -> bytes:
        return self.app_hashes[0]


def _timestamp(time_ns: int) -> Timestamp:
    return Timestamp(seconds=time_ns // 1_000_000_000, nanos=time_ns % 1_000_000_000)


class Driver:
    """Plays CometBFT for `validators[i]` paired with the app behind `clients[i]`."""

    def __init__(
        self,
        clients: Sequence[AbciClient],
        validators: Sequence[ValidatorKey],
        chain_id: str,
        app_state: bytes = b"{}",
        initial_height: int = 1,
        vote_extensions_enable_height: int = 1,
        *,
        block_store_dir: Path | None = None,
        genesis_time_ns: int = 1_700_000_000 * 1_000_000_000,
        block_max_bytes: int = DEFAULT_BLOCK_MAX_BYTES,
        strict_app_hash: bool = True,
    ) -> None:
        if len(clients) != len(validators) or not clients:
            raise DriverError("need one client per validator (at least one)")
        if initial_height < 1:
            raise DriverError("initial_height must be >= 1")
        self.clients = list(clients)
        self.validators = list(validators)
        self.chain_id = chain_id
        self.app_state = app_state
        self.initial_height = initial_height
        self.vote_extensions_enable_height = vote_extensions_enable_height
        self.genesis_time_ns = genesis_time_ns
        self.block_max_bytes = block_max_bytes
        self.strict_app_hash = strict_app_hash
        self.store = BlockStore(block_store_dir)
        self.height = self.store.height  # last height committed by the driver
        #: Heights the last `handshake()` replayed, in replay order (one entry per app and
        #: height; `replayed_app` says which app). Their FinalizeBlock responses are real.
        self.replayed: list[HeightResult] = []
        # CometBFT orders the validator set by power (desc), then address (asc).
        self._vset_order = sorted(
            range(len(self.validators)),
            key=lambda i: (-self.validators[i].power, self.validators[i].address),
        )

    # -- genesis ---------------------------------------------------------------------------
    def consensus_params(self) -> params_pb2.ConsensusParams:
        """`cometbft init` defaults plus vote extensions enabled (v0.38 `abci` and v1.0 `feature`)."""
        return params_pb2.ConsensusParams(
            block=params_pb2.BlockParams(max_bytes=self.block_max_bytes, max_gas=-1),
            evidence=params_pb2.EvidenceParams(
                max_age_num_blocks=100_000, max_age_duration=Duration(seconds=172_800),
                max_bytes=1_048_576,
            ),
            validator=params_pb2.ValidatorParams(pub_key_types=["ed25519"]),
            version=params_pb2.VersionParams(app=0),
            abci=params_pb2.ABCIParams(
                vote_extensions_enable_height=self.vote_extensions_enable_height
            ),
            feature=params_pb2.FeatureParams(
                vote_extensions_enable_height=Int64Value(value=self.vote_extensions_enable_height)
            ),
        )

    def init_chain_request(self) -> abci.RequestInitChain:
        return abci.RequestInitChain(
            time=_timestamp(self.genesis_time_ns),
            chain_id=self.chain_id,
            consensus_params=self.consensus_params(),
            validators=[v.validator_update() for v in self.validators],
            app_state_bytes=self.app_state,
            initial_height=self.initial_height,
        )

    @property
    def next_validators_hash(self) -> bytes:
        h = hashlib.sha256(b"dlbc-driver/validators")
        for i in self._vset_order:
            v = self.validators[i]
            h.update(v.pub_key + struct.pack(">q", v.power))
        return h.digest()

    @property
    def total_power(self) -> int:
        return sum(v.power for v in self.validators)

    # -- handshake ---------------------------------------------------------------------------
    async def connect(self) -> None:
        for c in self.clients:
            if not c.connected:
                await c.connect()

    async def handshake(self) -> int:
        """Info, InitChain (height 0) and replay on every app; return the common height.

        Like CometBFT, the target is the last *stored* block: a block saved just before a crash
        is replayed to apps that lack it, and an app that already committed it is accepted.
        """
        await self.connect()
        self.replayed = []
        info_req = abci.RequestInfo(version=NODE_VERSION, block_version=11, p2p_version=8,
                                    abci_version=ABCI_VERSION)
        infos = await asyncio.gather(*(c.call("info", info_req) for c in self.clients))
        target = self.store.last_block
        genesis_hash = self.store.genesis_app_hash()
        for i, (client, info) in enumerate(zip(self.clients, infos, strict=True)):
            app_height = int(info.last_block_height)
            if app_height > target:
                raise DriverError(
                    f"app {i} is at height {app_height}, ahead of the block store ({target})"
                )
            if app_height == 0:
                resp = await client.call("init_chain", self.init_chain_request())
                if genesis_hash is None:
                    genesis_hash = bytes(resp.app_hash)
                    self.store.save_genesis_app_hash(genesis_hash)
                elif bytes(resp.app_hash) != genesis_hash and self.strict_app_hash:
                    raise AppHashMismatch(self.initial_height - 1, [genesis_hash, bytes(resp.app_hash)])
                start = self.initial_height
            else:
                got = bytes(info.last_block_app_hash)
                recorded = self.store.app_hash(app_height)
                if recorded is None:
                    self.store.save_app_hash(app_height, got)
                elif recorded != got:
                    raise AppHashMismatch(app_height, [recorded, got])
                start = app_height + 1
            for h in range(start, target + 1):
                self.replayed.append(await self._replay(i, h))
        for h in range(self.height + 1, target + 1):  # committed by the apps, now by us too
            block = self.store.block(h)
            app_hash = self.store.app_hash(h)
            if block is None or app_hash is None:
                raise DriverError(f"block store lacks block or app hash {h} after the handshake")
            self.store.save_commit(h, app_hash, block.txs)
        self.height = max(self.height, target)
        return self.height

    async def _replay(self, i: int, height: int) -> HeightResult:
        block = self.store.block(height)
        if block is None:
            raise DriverError(f"block store lacks block {height} needed to replay app {i}")
        resp = await self.clients[i].call("finalize_block", block)
        recorded = self.store.app_hash(height)
        got = bytes(resp.app_hash)
        if recorded is not None and recorded != got:
            raise AppHashMismatch(height, [recorded, got])
        # Recorded before Commit, like a live height: a crash right after still leaves them.
        self.store.save_finalize_response(height, resp)
        await self.clients[i].call("commit", abci.RequestCommit())
        if recorded is None:
            # The driver died after storing the block but before recording its hash.
            self.store.save_app_hash(height, got)
        log.info("replayed height=%d on app %d app_hash=%s", height, i, got.hex()[:16])
        return self._result_from_store(height, block, resp, i)

    def _result_from_store(self, height: int, block: abci.RequestFinalizeBlock,
                           resp: abci.ResponseFinalizeBlock, app: int) -> HeightResult:
        index = {v.address: j for j, v in enumerate(self.validators)}
        extensions = [b""] * len(self.validators)
        ext_commit = self.store.extended_commit(height)
        for vote in ext_commit.votes if ext_commit is not None else ():
            j = index.get(bytes(vote.validator.address))
            if j is not None:
                extensions[j] = bytes(vote.vote_extension)
        return HeightResult(
            height=height, block_hash=self.store.block_hash(height) or bytes(block.hash), txs=[bytes(t) for t in block.txs],
            tx_results=[list(resp.tx_results)], events=[list(resp.events)],
            app_hashes=[bytes(resp.app_hash)],
            proposer=index.get(bytes(block.proposer_address), -1), vote_extensions=extensions,
            validator_updates=list(resp.validator_updates), replayed_app=app,
        )

    def stored_result(self, height: int) -> HeightResult | None:
        """The result of an executed height rebuilt from the block store: the block and the
        FinalizeBlock response recorded before its Commit (app 0's when run live, or the last
        replay's). None for a height that was never executed."""
        block = self.store.block(height)
        resp = self.store.finalize_response(height)
        if block is None or resp is None:
            return None
        app = self.replayed_app_of(height)
        return self._result_from_store(height, block, resp, 0 if app is None else app)

    def replayed_app_of(self, height: int) -> int | None:
        """Index of the last app that replayed `height` in this process's handshake, if any."""
        for r in reversed(self.replayed):
            if r.height == height:
                return r.replayed_app
        return None

    # -- one height --------------------------------------------------------------------------
    def proposer_for(self, height: int) -> int:
        return self._vset_order[(height - self.initial_height) % len(self.validators)]

    def _last_commit_info(self) -> abci.CommitInfo:
        """The decided last commit (no extensions): every validator signed the previous block."""
        if self.height < self.initial_height:
            return abci.CommitInfo()
        return abci.CommitInfo(round=0, votes=[
            abci.VoteInfo(validator=self.validators[i].abci_validator(),
                          block_id_flag=validator_pb2.BLOCK_ID_FLAG_COMMIT)
            for i in self._vset_order
        ])

    def _local_last_commit(self) -> abci.ExtendedCommitInfo:
        """The previous height's extended commit as stored; for a height stored without one
        (extensions not yet enabled) the same votes as `_last_commit_info`, unextended."""
        if self.height < self.initial_height:
            return abci.ExtendedCommitInfo()
        stored = self.store.extended_commit(self.height)
        if stored is not None:
            return stored
        return abci.ExtendedCommitInfo(round=0, votes=[
            abci.ExtendedVoteInfo(validator=v.validator, block_id_flag=v.block_id_flag)
            for v in self._last_commit_info().votes
        ])

    def block_hash(self, height: int, time_ns: int, txs: Sequence[bytes], proposer: int) -> bytes:
        """Deterministic stand-in for CometBFT's header hash (unique per chain/height/content)."""
        h = hashlib.sha256(b"dlbc-driver/block")
        h.update(encode_uvarint(len(self.chain_id.encode())) + self.chain_id.encode())
        h.update(struct.pack(">qq", height, time_ns))
        prev = self.store.block_hash(height - 1) or b""
        h.update(encode_uvarint(len(prev)) + prev)
        prev_app = self.store.app_hash(height - 1) or self.store.genesis_app_hash() or b""
        h.update(encode_uvarint(len(prev_app)) + prev_app)
        h.update(self.validators[proposer].address)
        for tx in txs:
            h.update(hashlib.sha256(tx).digest())
        return h.digest()

    @property
    def max_tx_bytes(self) -> int:
        # CometBFT's MaxDataBytes: block max bytes minus header/commit overheads.
        return self.block_max_bytes - 11 - 626 - (94 + 109 * len(self.validators))

    async def run_height(self, txs: Sequence[bytes], time_ns: int,
                         proposer: int | None = None) -> HeightResult:
        """Drive one height through Prepare -> Process -> Extend/Verify -> Finalize -> Commit."""
        height = self.height + 1 if self.height >= self.initial_height else self.initial_height
        p = self.proposer_for(height) if proposer is None else proposer
        if not 0 <= p < len(self.validators):
            raise DriverError(f"proposer index {p} out of range")
        proposer_address = self.validators[p].address
        t = _timestamp(time_ns)
        nvh = self.next_validators_hash
        last_commit = self._last_commit_info()

        # 1. PrepareProposal on the proposer's app.
        prep = await self.clients[p].call("prepare_proposal", abci.RequestPrepareProposal(
            max_tx_bytes=self.max_tx_bytes, txs=list(txs), local_last_commit=self._local_last_commit(),
            misbehavior=[], height=height, time=t, next_validators_hash=nvh,
            proposer_address=proposer_address,
        ))
        block_txs = [bytes(tx) for tx in prep.txs]
        if sum(len(tx) for tx in block_txs) > self.max_tx_bytes:
            raise DriverError(f"PrepareProposal returned more than max_tx_bytes at height {height}")
        block_hash = self.block_hash(height, time_ns, block_txs, p)

        # 2. ProcessProposal on every app.
        proc_req = abci.RequestProcessProposal(
            txs=block_txs, proposed_last_commit=last_commit, misbehavior=[], hash=block_hash,
            height=height, time=t, next_validators_hash=nvh, proposer_address=proposer_address,
        )
        procs = await asyncio.gather(*(c.call("process_proposal", proc_req) for c in self.clients))
        statuses = [r.status for r in procs]
        if any(s == abci.ResponseProcessProposal.UNKNOWN for s in statuses):
            raise DriverError(f"ProcessProposal answered UNKNOWN at height {height} (CometBFT halts)")
        rejecting = [i for i, s in enumerate(statuses) if s != abci.ResponseProcessProposal.ACCEPT]
        if rejecting:
            raise ProposalRejected(height, rejecting)

        # 3. ExtendVote on each validator's own app; VerifyVoteExtension on every other app.
        extensions: list[bytes] = [b""] * len(self.validators)
        ext_commit: abci.ExtendedCommitInfo | None = None
        if self.vote_extensions_enable_height > 0 and height >= self.vote_extensions_enable_height:
            ext_req = abci.RequestExtendVote(
                hash=block_hash, height=height, time=t, txs=block_txs,
                proposed_last_commit=last_commit, misbehavior=[], next_validators_hash=nvh,
                proposer_address=proposer_address,
            )
            exts = await asyncio.gather(*(c.call("extend_vote", ext_req) for c in self.clients))
            extensions = [bytes(e.vote_extension) for e in exts]
            accepted = [True] * len(self.validators)
            for i, ext in enumerate(extensions):
                vreq = abci.RequestVerifyVoteExtension(
                    hash=block_hash, validator_address=self.validators[i].address,
                    height=height, vote_extension=ext,
                )
                others = [j for j in range(len(self.clients)) if j != i]
                verdicts = await asyncio.gather(
                    *(self.clients[j].call("verify_vote_extension", vreq) for j in others)
                )
                for j, v in zip(others, verdicts, strict=True):
                    if v.status == abci.ResponseVerifyVoteExtension.UNKNOWN:
                        raise DriverError(f"VerifyVoteExtension UNKNOWN from app {j} (CometBFT halts)")
                    if v.status != abci.ResponseVerifyVoteExtension.ACCEPT:
                        log.warning("app %d rejected the vote extension of validator %d at height %d",
                                    j, i, height)
                        accepted[i] = False
            if sum(self.validators[i].power for i in range(len(accepted)) if accepted[i]) * 3 \
                    <= self.total_power * 2:
                raise DriverError(f"no +2/3 precommits with accepted extensions at height {height}")
            votes = []
            for i in self._vset_order:
                v = self.validators[i]
                vote = abci.ExtendedVoteInfo(validator=v.abci_validator(),
                                             block_id_flag=validator_pb2.BLOCK_ID_FLAG_ABSENT)
                if accepted[i]:
                    vote.block_id_flag = validator_pb2.BLOCK_ID_FLAG_COMMIT
                    vote.vote_extension = extensions[i]
                    vote.extension_signature = sign_vote_extension(
                        v, extensions[i], height, 0, self.chain_id)
                votes.append(vote)
            ext_commit = abci.ExtendedCommitInfo(round=0, votes=votes)

        # 4. The block is decided: store it before executing (CometBFT saves the block first).
        fin_req = abci.RequestFinalizeBlock(
            txs=block_txs, decided_last_commit=last_commit, misbehavior=[], hash=block_hash,
            height=height, time=t, next_validators_hash=nvh, proposer_address=proposer_address,
        )
        self.store.save_block(height, fin_req, block_hash, ext_commit)

        # 5. FinalizeBlock and Commit on every app.
        fins = await asyncio.gather(*(c.call("finalize_block", fin_req) for c in self.clients))
        for i, f in enumerate(fins):
            if len(f.tx_results) != len(block_txs):
                raise DriverError(
                    f"app {i} returned {len(f.tx_results)} tx results for {len(block_txs)} txs"
                )
        app_hashes = [bytes(f.app_hash) for f in fins]
        if self.strict_app_hash and len(set(app_hashes)) != 1:
            raise AppHashMismatch(height, app_hashes)
        # CometBFT saves the FinalizeBlock responses before Commit; so do we, so a node killed
        # after the apps commit still has real tx results for this height (`stored_result`).
        self.store.save_finalize_response(height, fins[0])
        await asyncio.gather(*(c.call("commit", abci.RequestCommit()) for c in self.clients))
        self.store.save_commit(height, app_hashes[0], block_txs)
        self.height = height
        if fins[0].validator_updates:
            log.warning("height %d: validator updates are recorded but not applied by the driver",
                        height)
        return HeightResult(
            height=height, block_hash=block_hash, txs=block_txs,
            tx_results=[list(f.tx_results) for f in fins], events=[list(f.events) for f in fins],
            app_hashes=app_hashes, proposer=p, vote_extensions=extensions,
            validator_updates=list(fins[0].validator_updates),
        )

    # -- mempool / query -------------------------------------------------------------------------
    async def check_tx(self, tx: bytes, *, recheck: bool = False) -> abci.ResponseCheckTx:
        req = abci.RequestCheckTx(tx=tx, type=abci.RECHECK if recheck else abci.NEW)
        return cast(abci.ResponseCheckTx, await self.clients[0].call("check_tx", req))

    async def query(self, path: str, data: bytes = b"", height: int = 0) -> abci.ResponseQuery:
        req = abci.RequestQuery(path=path, data=data, height=height)
        return cast(abci.ResponseQuery, await self.clients[0].call("query", req))

    async def close(self) -> None:
        for c in self.clients:
            await c.close()
        self.store.close()
