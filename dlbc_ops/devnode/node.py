"""`dlbc node`: the embedded DEVELOPMENT STAND-IN for CometBFT (single validator, no p2p).

Why it exists: no `cometbft` binary can be installed on the development machines
(docs/processes.md), yet the sidecars must run against a live chain. This node plays CometBFT's part
for ONE validator: it drives the app over the real ABCI socket through `dlbc_ops.devnode.driver`
(handshake, PrepareProposal/ProcessProposal/ExtendVote/VerifyVoteExtension/FinalizeBlock/Commit
per height, vote extensions on), keeps a mempool (CheckTx on admission, recheck after every
block), produces a block every `block_time` seconds and serves CometBFT's RPC subset
(`rpc_methods` over `rpc_server`) so that the same client code works against a real node. It is
NOT a consensus engine: no BFT voting rounds, no peers.

BFT time is the wall clock at proposal, forced strictly increasing (CometBFT guarantees block
time > previous block time, which the app's round schedule relies on, docs/rounds.md).

Home layout (mirrors CometBFT's): `config/genesis.json`, `config/priv_validator_key.json`
(`home`), `data/blocks/` (the one block store: what the driver replays and the RPC serves). A
restart with the same home resumes from the last committed height.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from dataclasses import replace
from typing import Any

from abci_app.abci_client import AbciClient, AbciClientError
from abci_app.keyfile import KeyPair
from abci_app.pb.tendermint.abci import types_pb2 as abci
from dlbc_ops.devnode import blockdocs
from dlbc_ops.devnode.blockdocs import ChainTip
from dlbc_ops.devnode.blockstore import BlockStore
from dlbc_ops.devnode.config import (
    NODE_VERSION,
    VALIDATOR_POWER,
    NodeConfig,
    NodeError,
    parse_laddr,
)
from dlbc_ops.devnode.driver import Driver, DriverError
from dlbc_ops.devnode.events import EVENT_NEW_BLOCK, EVENT_TX, EventBus
from dlbc_ops.devnode.home import (
    app_state_bytes,
    genesis_block_max_bytes,
    genesis_time_ns,
    load_or_create_genesis,
    load_or_create_key,
)
from dlbc_ops.devnode.mempool import Mempool, MempoolError, tx_key
from dlbc_ops.devnode.rpc_json import flatten_events
from dlbc_ops.devnode.rpc_methods import RpcMethods, TxWaiters
from dlbc_ops.devnode.rpc_server import RpcServer, internal
from dlbc_ops.devnode.validator_key import ValidatorKey

log = logging.getLogger("dlbc_ops.devnode")

BANNER = (
    "DEVELOPMENT STAND-IN for CometBFT: single validator, no p2p, no BFT voting. "
    "Use `cometbft node` (see cometbft/README.md) for any real network."
)


class DevNode:
    """One dev node: app connection, mempool, block loop and RPC. Use `run()` or start/stop."""

    def __init__(self, config: NodeConfig) -> None:
        self.cfg = config
        self.bus = EventBus()
        self.mempool = Mempool(config.mempool)
        self.waiters = TxWaiters()
        self._lock = asyncio.Lock()  # mempool admission vs. block production (CometBFT's Lock)
        self._stop = asyncio.Event()
        self._methods = RpcMethods(self)
        self._rpc: RpcServer | None = None
        self._client: AbciClient | None = None
        self._driver: Driver | None = None
        self.tip = ChainTip()
        self.rpc_port = 0
        self.key: KeyPair | None = None
        self.genesis: dict[str, Any] = {}
        self.chain_id = ""

    # -- what the RPC methods read

    def validator_key(self) -> KeyPair:
        if self.key is None:
            raise NodeError("the node has not started")
        return self.key

    def driver(self) -> Driver:
        if self._driver is None:
            raise NodeError("the node is not connected to its app")
        return self._driver

    def block_store(self) -> BlockStore:
        return self.driver().store

    # -- lifecycle

    async def start(self) -> None:
        cfg = self.cfg
        log.warning(BANNER)
        try:
            cfg.home.mkdir(parents=True, exist_ok=True)
            (cfg.home / "data").mkdir(exist_ok=True)
        except OSError as exc:
            raise NodeError(f"--home {cfg.home}: cannot create ({exc.strerror})") from None
        self.key = load_or_create_key(cfg.home)
        self.genesis = load_or_create_genesis(cfg, self.key)
        self.chain_id = self.genesis["chain_id"]
        self._client = await self._connect_app()
        driver = self._driver = self._make_driver(self._client, self.key)
        height = await driver.handshake()
        self.tip = blockdocs.chain_tip(driver.store)
        # a tx larger than a block's tx space would sit at the head of the FIFO forever
        self.mempool.config = replace(
            cfg.mempool, max_tx_bytes=min(cfg.mempool.max_tx_bytes, driver.max_tx_bytes)
        )
        host, port = parse_laddr(cfg.rpc_laddr)
        self._rpc = RpcServer(self._methods.table(), self.bus)
        try:
            self.rpc_port = await self._rpc.start(host, port)
        except OSError as exc:
            raise NodeError(
                f"cannot listen for RPC on {host}:{port}: {exc.strerror} "
                "(is another node running? pick another --rpc-laddr)"
            ) from None
        log.info("dev node up: chain %s at height %d; RPC on http://%s:%d; app at %s; "
                 "block every %.3gs", self.chain_id, height, host, self.rpc_port, cfg.proxy_app,
                 cfg.block_time)

    async def _connect_app(self) -> AbciClient:
        log.info("connecting to the app at %s (waiting up to %.0fs)",
                 self.cfg.proxy_app, self.cfg.app_connect_timeout)
        try:
            client = AbciClient(self.cfg.proxy_app)
        except ValueError as exc:
            raise NodeError(f"bad --proxy-app {self.cfg.proxy_app!r}: {exc}") from None
        try:
            await client.connect(timeout=self.cfg.app_connect_timeout)
        except AbciClientError as exc:
            await _close_quietly(client)
            raise NodeError(
                f"{exc} after {self.cfg.app_connect_timeout:.0f}s. Start it with: "
                f"python -m abci_app --home APP_HOME --address {self.cfg.proxy_app}"
            ) from None
        return client

    def _make_driver(self, client: AbciClient, key: KeyPair) -> Driver:
        return Driver(
            [client],
            [ValidatorKey(key.private_key, VALIDATOR_POWER)],
            self.chain_id,
            app_state=app_state_bytes(self.genesis),
            # CometBFT reads initial_height "0" (what `cometbft testnet` writes) as 1.
            initial_height=max(1, int(self.genesis.get("initial_height") or 1)),
            vote_extensions_enable_height=1,
            block_store_dir=self.cfg.home / "data" / "blocks",
            genesis_time_ns=genesis_time_ns(self.genesis),
            block_max_bytes=genesis_block_max_bytes(self.genesis, self.cfg.max_block_bytes),
        )

    async def stop(self) -> None:
        self._stop.set()

    async def close(self) -> None:
        self._methods.cancel_background()
        if self._rpc is not None:
            await self._rpc.close()
        self.waiters.cancel_all()
        if self._client is not None:
            await _close_quietly(self._client)
        if self._driver is not None:
            self._driver.store.close()
            self._driver = None

    async def run(self) -> None:
        """Start, produce blocks until `stop()`, then close. Raises NodeError on fatal problems."""
        await self.start()
        try:
            await self.produce_blocks()
        finally:
            await self.close()

    async def produce_blocks(self) -> None:
        next_at = time.monotonic() + self.cfg.block_time
        while not self._stop.is_set():
            try:
                await asyncio.wait_for(self._stop.wait(),
                                       timeout=max(0.0, next_at - time.monotonic()))
                return
            except TimeoutError:
                pass
            next_at = time.monotonic() + self.cfg.block_time
            if not self.cfg.create_empty_blocks and len(self.mempool) == 0:
                continue
            await self.produce_block()

    # -- block production

    async def produce_block(self) -> int:
        """Propose, execute and commit one height; returns it. Wall-clock BFT time, monotone."""
        driver = self.driver()
        async with self._lock:
            txs = self.mempool.reap(driver.max_tx_bytes)
            time_ns = max(time.time_ns(), self.tip.time_ns + 1_000_000)
            try:
                result = await driver.run_height(txs, time_ns)
            except (AbciClientError, DriverError, OSError) as exc:  # CometBFT would halt too
                raise NodeError(
                    f"height {self.tip.height + 1} failed: {exc}. The node stops (as CometBFT "
                    "halts); fix the app and restart with the same --home to resume"
                ) from exc
            self.tip = blockdocs.chain_tip(driver.store)
            remaining = self.mempool.update(result.txs)
            await self._recheck(remaining)
        log.info("height %d: %d tx(s), app hash %s, mempool %d", result.height, len(result.txs),
                 result.app_hash.hex()[:12], len(self.mempool))
        self._publish(result.height, result.txs)
        return result.height

    async def _recheck(self, txs: list[bytes]) -> None:
        """CheckTx(RECHECK) every left-over tx against the new state; drop the failures."""
        for tx in txs:
            try:
                res = await self.driver().check_tx(tx, recheck=True)
            except Exception as exc:
                raise NodeError(f"app connection lost during recheck: {exc}") from exc
            if res.code != 0:
                log.info("recheck dropped tx %s: code %d %s",
                         tx_key(tx).hex()[:12], res.code, res.log)
                self.mempool.remove(tx)

    def _publish(self, height: int, txs: list[bytes]) -> None:
        """NewBlock and Tx events (the same documents `/block` and `/block_results` serve),
        then wake `broadcast_tx_commit` waiters."""
        store = self.block_store()
        block = blockdocs.block_doc(store, self.chain_id, height)
        results = blockdocs.results_doc(store, height)
        if block is None or results is None:
            raise NodeError(f"height {height} committed but missing from the block store")
        tx_results = results["txs_results"] or []
        fb_events = results["finalize_block_events"]
        value = {
            "block": block["block"],
            "block_id": block["block_id"],
            "result_finalize_block": {
                "events": fb_events,
                "tx_results": tx_results,
                "validator_updates": [],
                "app_hash": results["app_hash"],
            },
        }
        self.bus.publish(EVENT_NEW_BLOCK, value,
                         flatten_events(fb_events, {"tm.event": [EVENT_NEW_BLOCK]}))
        for i, (tx, res) in enumerate(zip(txs, tx_results, strict=True)):
            key = tx_key(tx)
            self.bus.publish(
                EVENT_TX,
                {"TxResult": {"height": str(height), "index": i,
                              "tx": base64.b64encode(tx).decode(), "result": res}},
                flatten_events(res["events"], {"tm.event": [EVENT_TX],
                                               "tx.hash": [key.hex().upper()],
                                               "tx.height": [str(height)]}),
            )
            self.waiters.resolve(key, (height, i, res))

    # -- ABCI calls outside consensus

    async def admit(self, tx: bytes) -> abci.ResponseCheckTx:
        """Mempool admission: precheck (size, dedup, room) then CheckTx; admitted iff code 0."""
        async with self._lock:
            try:
                self.mempool.precheck(tx)
            except MempoolError as exc:
                raise internal(str(exc)) from None
            res = await self.driver().check_tx(tx)
            if res.code == 0:
                self.mempool.add(tx)
            else:
                self.mempool.reject(tx)
            return res

    async def query(self, path: str, data: bytes, height: int) -> abci.ResponseQuery:
        return await self.driver().query(path, data, height)

    async def app_info(self) -> abci.ResponseInfo:
        if self._client is None:
            raise NodeError("the node is not connected to its app")
        resp = await self._client.request("query", abci.Request(info=abci.RequestInfo(
            version=NODE_VERSION, block_version=11, p2p_version=8, abci_version="2.0.0")))
        info: abci.ResponseInfo = resp.info
        return info


async def _close_quietly(client: AbciClient) -> None:
    try:
        await client.close()
    except (OSError, RuntimeError) as exc:  # closing a half-open connection during shutdown
        log.debug("closing the app connection: %s", exc)
