"""`dlbc node`: the embedded DEVELOPMENT STAND-IN for CometBFT (single validator, no p2p).

Why it exists: no `cometbft` binary can be installed on the development machines (DESIGN §1),
yet the sidecars must run against a live chain. This node plays CometBFT's part for ONE
validator: it drives the app over the real ABCI socket through `dlbc_ops.devnode.driver` (handshake,
PrepareProposal/ProcessProposal/ExtendVote/VerifyVoteExtension/FinalizeBlock/Commit per height,
vote extensions on), keeps a mempool (CheckTx on admission, recheck after every block), produces
a block every `block_time` seconds and serves CometBFT's RPC subset so that the same client code
works against a real node. It is NOT a consensus engine: no BFT voting rounds, no peers.

BFT time is the wall clock at proposal, forced strictly increasing (CometBFT guarantees block
time > previous block time, which the app's round schedule relies on, DESIGN §4).

Home layout (mirrors CometBFT's): `config/genesis.json`, `config/priv_validator_key.json`,
`data/blocks/` (the driver's replay store), `data/rpc.lmdb/` (what the RPC serves). A restart
with the same home resumes from the last committed height.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import shutil
import struct
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from abci_app.dlbc.genesis import default_app_state
from abci_app.keyfile import PUB_KEY_TYPE, KeyPair, load_key, save_key
from abci_app.pb.tendermint.abci import types_pb2 as abci
from abci_app.rfc3339 import format_rfc3339_ns, parse_rfc3339_ns
from dlbc_ops.devnode.blockstore import BlockStore, ChainTip
from dlbc_ops.devnode.events import EVENT_NEW_BLOCK, EVENT_TX, EventBus
from dlbc_ops.devnode.mempool import Mempool, MempoolConfig, MempoolError, tx_key
from dlbc_ops.devnode.rpc_json import b64, event_json, flatten_events, tx_result_json
from dlbc_ops.devnode.rpc_server import (
    RpcFault,
    RpcServer,
    decode_tx_param,
    int_param,
    internal,
    invalid_params,
)
from dlbc_ops.genesis import builder as gen

log = logging.getLogger("dlbc_ops.devnode")

BANNER = (
    "DEVELOPMENT STAND-IN for CometBFT: single validator, no p2p, no BFT voting. "
    "Use `cometbft node` (see cometbft/README.md) for any real network."
)
NODE_VERSION = "0.38.x-dlbc-devnode"
DEFAULT_CHAIN_ID = "dlbc-devnet"
VALIDATOR_POWER = 10
MAX_BLOCK_BYTES = 4 * 1024 * 1024
MIN_BLOCK_BYTES = 2048  # header + commit overhead (~840 B for one validator) + some txs


class NodeError(RuntimeError):
    """The node cannot start or continue (bad home, genesis, app unreachable); message says why."""


# --------------------------------------------------------------------------- config


@dataclass(frozen=True)
class NodeConfig:
    """Settings of one dev node; defaults match CometBFT's where one exists."""

    home: Path
    proxy_app: str = "tcp://127.0.0.1:26658"
    rpc_laddr: str = "tcp://127.0.0.1:26657"
    block_time: float = 1.0  # seconds between block proposals
    genesis: Path | None = None  # copied into home on first start
    chain_id: str = DEFAULT_CHAIN_ID  # only used when generating a genesis
    mempool: MempoolConfig = field(default_factory=MempoolConfig)
    max_block_bytes: int = MAX_BLOCK_BYTES  # consensus_params.block.max_bytes
    create_empty_blocks: bool = True  # the round schedule needs time to advance
    timeout_broadcast_tx_commit: float = 10.0  # CometBFT rpc.timeout_broadcast_tx_commit
    app_connect_timeout: float = 30.0  # how long to wait for the app to listen


def parse_laddr(laddr: str) -> tuple[str, int]:
    """`tcp://HOST:PORT` (or `HOST:PORT`) → (host, port)."""
    rest = laddr.split("://", 1)[1] if "://" in laddr else laddr
    host, sep, port = rest.rpartition(":")
    if not sep or not port.isdigit():
        raise NodeError(f"bad listen address {laddr!r}: expected tcp://HOST:PORT")
    return host or "127.0.0.1", int(port)


# --------------------------------------------------------------------------- genesis & key


def load_or_create_key(home: Path) -> KeyPair:
    path = home / "config" / "priv_validator_key.json"
    if path.exists():
        return load_key(path)
    key = KeyPair.generate()
    save_key(path, key)
    log.info("generated validator key %s at %s", key.address_hex, path)
    return key


def genesis_block_max_bytes(genesis: dict[str, Any], default: int) -> int:
    """consensus_params.block.max_bytes of a genesis (CometBFT writes it as a string)."""
    try:
        value = int(genesis["consensus_params"]["block"]["max_bytes"])
    except (KeyError, TypeError, ValueError):
        return default
    if value < MIN_BLOCK_BYTES:
        raise NodeError(f"genesis consensus_params.block.max_bytes {value} < {MIN_BLOCK_BYTES}")
    return value


def make_genesis(chain_id: str, key: KeyPair, app_state: Any,
                 max_block_bytes: int = MAX_BLOCK_BYTES) -> dict[str, Any]:
    """`dlbc genesis`'s CometBFT v0.38 document (`genesis_cli.new_genesis`: time now, vote
    extensions on from height 1) with this node's key as the only validator."""
    doc = gen.new_genesis(
        chain_id, [gen.validator_entry(key.public_key, VALIDATOR_POWER, "devnode")],
        gen.FORM_V038, app_state=app_state,
    )
    doc["consensus_params"]["block"]["max_bytes"] = str(max_block_bytes)
    return doc


def genesis_time_ns(genesis: dict[str, Any]) -> int:
    """The genesis_time in ns since the epoch, exact; a missing or bad value is an error."""
    text = str(genesis.get("genesis_time") or "")
    try:
        return parse_rfc3339_ns(text)
    except ValueError:
        raise NodeError(
            f"genesis_time {text!r} is not RFC 3339 (e.g. 2024-01-01T00:00:00Z)"
        ) from None


def load_or_create_genesis(cfg: NodeConfig, key: KeyPair) -> dict[str, Any]:
    path = cfg.home / "config" / "genesis.json"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        if cfg.genesis is not None:
            if not cfg.genesis.is_file():
                raise NodeError(f"--genesis {cfg.genesis}: file not found")
            shutil.copyfile(cfg.genesis, path)
        else:
            doc = make_genesis(cfg.chain_id, key, default_app_state(), cfg.max_block_bytes)
            gen.write_text_atomic(path, gen.dumps_genesis(doc))
            log.info("wrote genesis %s (chain_id %s)", path, cfg.chain_id)
    elif cfg.genesis is not None and cfg.genesis.read_bytes() != path.read_bytes():
        raise NodeError(
            f"{path} already exists and differs from --genesis {cfg.genesis}; "
            "use a fresh --home to start a new chain"
        )
    try:
        doc = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise NodeError(f"{path}: not a readable genesis JSON ({exc})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("chain_id"), str) or not doc["chain_id"]:
        raise NodeError(f"{path}: genesis needs a non-empty chain_id")
    vals = doc.get("validators") or []
    if vals:
        pubs = [str((v.get("pub_key") or {}).get("value", "")) for v in vals]
        mine = base64.b64encode(key.public_key).decode()
        if pubs != [mine]:
            raise NodeError(
                f"{path}: the dev node runs exactly one validator, its own key "
                f"({cfg.home / 'config' / 'priv_validator_key.json'}); genesis lists "
                f"{len(vals)} other validator(s). Fix: omit `validators` or list only this key."
            )
    return doc


def app_state_bytes(genesis: dict[str, Any]) -> bytes:
    """`app_state` as CometBFT passes it in InitChain: the raw JSON value (empty if absent)."""
    state = genesis.get("app_state")
    if state is None:
        return b""
    return json.dumps(state, separators=(",", ":"), sort_keys=False).encode()


# --------------------------------------------------------------------------- the node


@dataclass
class _Waiter:
    future: asyncio.Future[tuple[int, int, Any]]


class DevNode:
    """One dev node: app connection, mempool, block loop and RPC. Use `run()` or start/stop."""

    def __init__(self, config: NodeConfig) -> None:
        self.cfg = config
        self.bus = EventBus()
        self.mempool = Mempool(config.mempool)
        self._lock = asyncio.Lock()  # mempool admission vs. block production (CometBFT's Lock)
        self._waiters: dict[bytes, list[asyncio.Future[tuple[int, int, dict[str, Any]]]]] = {}
        self._stop = asyncio.Event()
        self._rpc: RpcServer | None = None
        self._client: Any = None
        self._driver: Any = None
        self.store: BlockStore | None = None
        self.tip = ChainTip()
        self.rpc_port = 0
        self.key: KeyPair | None = None
        self.genesis: dict[str, Any] = {}
        self.chain_id = ""
        self._bg: set[asyncio.Task[Any]] = set()

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
        self.store = BlockStore(cfg.home / "data" / "rpc.lmdb")
        self.tip = self.store.tip()
        self._client, self._driver = await self._connect_app()
        height = int(await self._driver.handshake())
        # a tx larger than a block's tx space would sit at the head of the FIFO forever
        self.mempool.config = replace(
            cfg.mempool, max_tx_bytes=min(cfg.mempool.max_tx_bytes, int(self._driver.max_tx_bytes))
        )
        if height < self.tip.height:
            raise NodeError(
                f"{cfg.home / 'data'}: RPC records reach height {self.tip.height} but the block "
                f"store only {height}; the home is inconsistent (use a fresh --home)"
            )
        if height > self.tip.height:
            await self._rebuild_missing_records(height)
        host, port = parse_laddr(cfg.rpc_laddr)
        self._rpc = RpcServer(self._methods(), self.bus)
        try:
            self.rpc_port = await self._rpc.start(host, port)
        except OSError as exc:
            raise NodeError(
                f"cannot listen for RPC on {host}:{port}: {exc.strerror} "
                "(is another node running? pick another --rpc-laddr)"
            ) from None
        log.info("dev node up: chain %s at height %d; RPC on http://%s:%d; app at %s; block every %.3gs",
                 self.chain_id, height, host, self.rpc_port, cfg.proxy_app, cfg.block_time)

    async def _connect_app(self) -> tuple[Any, Any]:
        from abci_app.abci_client import AbciClient, AbciClientError  # the foundation's client

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
        return client, self._make_driver(client)

    def _make_driver(self, client: Any) -> Any:
        from dlbc_ops.devnode.driver import Driver, ValidatorKey

        assert self.key is not None
        return Driver(
            [client],
            [ValidatorKey(self.key.private_key, VALIDATOR_POWER)],
            self.chain_id,
            app_state=app_state_bytes(self.genesis),
            # CometBFT reads initial_height "0" (what `cometbft testnet` writes) as 1.
            initial_height=max(1, int(self.genesis.get("initial_height") or 1)),
            vote_extensions_enable_height=1,
            block_store_dir=self.cfg.home / "data" / "blocks",
            genesis_time_ns=genesis_time_ns(self.genesis),
            block_max_bytes=genesis_block_max_bytes(self.genesis, self.cfg.max_block_bytes),
        )

    async def _rebuild_missing_records(self, height: int) -> None:
        """Recreate RPC records for heights the driver committed but we did not record.

        Happens only after a hard kill between the driver's commit and our record (two LMDB
        transactions). Block contents, time and hashes come from the driver's store, and so do the
        tx results and events: the driver saves each FinalizeBlock response before its Commit, as
        CometBFT does. Only a height whose response was never stored (a block store written by an
        older driver) has its results marked unrecorded rather than invented.
        """
        assert self.store is not None
        dstore = self._driver.store
        for h in range(self.tip.height + 1, height + 1):
            req = dstore.block(h)
            if req is None:
                raise NodeError(f"driver store lacks block {h}; cannot resume (use a fresh --home)")
            time_ns = req.time.seconds * 1_000_000_000 + req.time.nanos
            block_hash = dstore.get(b"block_hash/" + struct.pack(">q", h)) or bytes(req.hash)
            app_hash = dstore.app_hash(h) or b""
            txs = [bytes(t) for t in req.txs]
            unrecorded = abci.ExecTxResult(
                code=0, codespace="devnode", info="unrecorded",
                log="result not recorded: the dev node was killed between commit and record; "
                    "query the app state instead",
            )
            block_doc = self._block_doc(h, time_ns, block_hash, txs)
            stored = self._driver.stored_result(h)
            if stored is not None:
                exec_results = list(stored.tx_results[0])
                block_events = [event_json(e) for e in stored.events[0]]
            else:
                exec_results = [unrecorded for _ in txs]
                block_events = []
            results_doc = {
                "height": str(h),
                "txs_results": [tx_result_json(r) for r in exec_results] or None,
                "finalize_block_events": block_events,
                "validator_updates": [],
                "consensus_param_updates": None,
                "app_hash": b64(app_hash),
            }
            tip = ChainTip(height=h, time_ns=time_ns, block_hash=block_hash, app_hash=app_hash)
            self.store.save(tip, block_doc, results_doc, [tx_key(t) for t in txs])
            self.tip = tip
            self.mempool.update(txs)
            log.warning("height %d: RPC record rebuilt from the block store%s", h,
                        "" if stored is not None else " (tx results unrecorded)")

    async def stop(self) -> None:
        self._stop.set()

    async def close(self) -> None:
        for t in list(self._bg):
            t.cancel()
        if self._rpc is not None:
            await self._rpc.close()
        for futs in self._waiters.values():
            for f in futs:
                if not f.done():
                    f.cancel()
        if self._client is not None:
            await _close_quietly(self._client)
        if self.store is not None:
            self.store.close()
            self.store = None

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
                await asyncio.wait_for(self._stop.wait(), timeout=max(0.0, next_at - time.monotonic()))
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
        assert self.store is not None and self._driver is not None and self.key is not None
        async with self._lock:
            txs = self.mempool.reap(int(self._driver.max_tx_bytes))
            time_ns = max(time.time_ns(), self.tip.time_ns + 1_000_000)
            try:
                result = await self._driver.run_height(txs, time_ns)
            except Exception as exc:  # AbciClientError, DriverError: CometBFT would halt too
                from abci_app.abci_client import AbciClientError
                from dlbc_ops.devnode.driver import DriverError

                if isinstance(exc, (AbciClientError, DriverError, OSError)):
                    raise NodeError(
                        f"height {self.tip.height + 1} failed: {exc}. The node stops (as CometBFT "
                        "halts); fix the app and restart with the same --home to resume"
                    ) from exc
                raise
            height = int(result.height)
            included: list[bytes] = [bytes(t) for t in result.txs]
            exec_results = list(result.tx_results[0])  # one app: the dev node's
            events = list(result.events[0])
            app_hash = bytes(result.app_hashes[0])
            block_hash = bytes(result.block_hash)
            block_doc = self._block_doc(height, time_ns, block_hash, included)
            results_doc = {
                "height": str(height),
                "txs_results": [tx_result_json(r) for r in exec_results] or None,
                "finalize_block_events": [event_json(e) for e in events],
                "validator_updates": [],
                "consensus_param_updates": None,
                "app_hash": b64(app_hash),
            }
            new_tip = ChainTip(height=height, time_ns=time_ns, block_hash=block_hash, app_hash=app_hash)
            self.store.save(new_tip, block_doc, results_doc, [tx_key(t) for t in included])
            self.tip = new_tip
            remaining = self.mempool.update(included)
            await self._recheck(remaining)
        log.info("height %d: %d tx(s), app hash %s, mempool %d",
                 height, len(included), app_hash.hex()[:12], len(self.mempool))
        self._publish(height, block_doc, results_doc, included)
        return height

    async def _recheck(self, txs: list[bytes]) -> None:
        """CheckTx(RECHECK) every left-over tx against the new state; drop the failures."""
        for tx in txs:
            try:
                res = await self._check_tx(tx, recheck=True)
            except Exception as exc:
                raise NodeError(f"app connection lost during recheck: {exc}") from exc
            if res.code != 0:
                log.info("recheck dropped tx %s: code %d %s", tx_key(tx).hex()[:12], res.code, res.log)
                self.mempool.remove(tx)

    def _block_doc(self, height: int, time_ns: int, block_hash: bytes, txs: list[bytes]) -> dict[str, Any]:
        assert self.key is not None
        block_id = {"hash": block_hash.hex().upper(), "parts": {"total": 1, "hash": ""}}
        last_id = {"hash": self.tip.block_hash.hex().upper(), "parts": {"total": 1 if height > 1 else 0, "hash": ""}}
        data_hash = hashlib.sha256(b"".join(hashlib.sha256(t).digest() for t in txs)).hexdigest().upper() if txs else ""
        return {
            "block_id": block_id,
            "block": {
                "header": {
                    "version": {"block": "11", "app": "0"},
                    "chain_id": self.chain_id,
                    "height": str(height),
                    "time": format_rfc3339_ns(time_ns),
                    "last_block_id": last_id,
                    "last_commit_hash": "",
                    "data_hash": data_hash,
                    "validators_hash": "",
                    "next_validators_hash": "",
                    "consensus_hash": "",
                    "app_hash": self.tip.app_hash.hex().upper(),
                    "last_results_hash": "",
                    "evidence_hash": "",
                    "proposer_address": self.key.address.hex().upper(),
                },
                "data": {"txs": [base64.b64encode(t).decode() for t in txs]},
                "evidence": {"evidence": []},
                "last_commit": {
                    "height": str(height - 1),
                    "round": 0,
                    "block_id": last_id,
                    "signatures": [],
                },
            },
        }

    def _publish(self, height: int, block_doc: dict[str, Any], results_doc: dict[str, Any],
                 txs: list[bytes]) -> None:
        """NewBlock and Tx events, then wake `broadcast_tx_commit` waiters."""
        fb_events = results_doc["finalize_block_events"]
        value = {
            "block": block_doc["block"],
            "block_id": block_doc["block_id"],
            "result_finalize_block": {
                "events": fb_events,
                "tx_results": results_doc["txs_results"] or [],
                "validator_updates": [],
                "app_hash": results_doc["app_hash"],
            },
        }
        self.bus.publish(EVENT_NEW_BLOCK, value, flatten_events(fb_events, {"tm.event": [EVENT_NEW_BLOCK]}))
        for i, (tx, res) in enumerate(zip(txs, results_doc["txs_results"] or [], strict=False)):
            h = tx_key(tx)
            hx = h.hex().upper()
            self.bus.publish(
                EVENT_TX,
                {"TxResult": {"height": str(height), "index": i, "tx": base64.b64encode(tx).decode(), "result": res}},
                flatten_events(res["events"], {"tm.event": [EVENT_TX], "tx.hash": [hx], "tx.height": [str(height)]}),
            )
            for fut in self._waiters.pop(h, []):
                if not fut.done():
                    fut.set_result((height, i, res))

    # -- ABCI calls outside consensus

    async def _check_tx(self, tx: bytes, *, recheck: bool = False) -> abci.ResponseCheckTx:
        res: abci.ResponseCheckTx = await self._driver.check_tx(tx, recheck=recheck)
        return res

    async def admit(self, tx: bytes) -> abci.ResponseCheckTx:
        """Mempool admission: precheck (size, dedup, room) then CheckTx; admitted iff code 0."""
        async with self._lock:
            try:
                self.mempool.precheck(tx)
            except MempoolError as exc:
                raise internal(str(exc)) from None
            res = await self._check_tx(tx)
            if res.code == 0:
                self.mempool.add(tx)
            else:
                self.mempool.reject(tx)
            return res

    # -- RPC methods (translate only)

    def _methods(self) -> dict[str, Callable[[dict[str, Any]], Awaitable[Any]]]:
        return {
            "health": self.rpc_health,
            "status": self.rpc_status,
            "abci_info": self.rpc_abci_info,
            "abci_query": self.rpc_abci_query,
            "broadcast_tx_async": self.rpc_broadcast_tx_async,
            "broadcast_tx_sync": self.rpc_broadcast_tx_sync,
            "broadcast_tx_commit": self.rpc_broadcast_tx_commit,
            "block": self.rpc_block,
            "block_results": self.rpc_block_results,
            "tx": self.rpc_tx,
            "genesis": self.rpc_genesis,
            "num_unconfirmed_txs": self.rpc_num_unconfirmed_txs,
        }

    async def rpc_health(self, params: dict[str, Any]) -> dict[str, Any]:
        return {}

    async def rpc_status(self, params: dict[str, Any]) -> dict[str, Any]:
        assert self.key is not None
        tip = self.tip
        return {
            "node_info": {
                "protocol_version": {"p2p": "8", "block": "11", "app": "0"},
                "id": hashlib.sha256(self.key.public_key).hexdigest()[:40],
                "listen_addr": "",
                "network": self.chain_id,
                "version": NODE_VERSION,
                "channels": "",
                "moniker": "dlbc-devnode",
                "other": {"tx_index": "on", "rpc_address": self.cfg.rpc_laddr},
            },
            "sync_info": {
                "latest_block_hash": tip.block_hash.hex().upper(),
                "latest_app_hash": tip.app_hash.hex().upper(),
                "latest_block_height": str(tip.height),
                "latest_block_time": format_rfc3339_ns(tip.time_ns),
                "earliest_block_height": "1" if tip.height else "0",
                "catching_up": False,
            },
            "validator_info": {
                "address": self.key.address.hex().upper(),
                "pub_key": {"type": PUB_KEY_TYPE,
                            "value": base64.b64encode(self.key.public_key).decode()},
                "voting_power": str(VALIDATOR_POWER),
            },
        }

    async def rpc_genesis(self, params: dict[str, Any]) -> dict[str, Any]:
        return {"genesis": self.genesis}

    async def rpc_num_unconfirmed_txs(self, params: dict[str, Any]) -> dict[str, Any]:
        return {"n_txs": str(len(self.mempool)), "total": str(len(self.mempool)),
                "total_bytes": str(self.mempool.size_bytes), "txs": None}

    async def rpc_abci_info(self, params: dict[str, Any]) -> dict[str, Any]:
        resp = await self._client.request("query", abci.Request(info=abci.RequestInfo(
            version=NODE_VERSION, block_version=11, p2p_version=8, abci_version="2.0.0")))
        info = resp.info
        return {"response": {
            "data": info.data, "version": info.version, "app_version": str(info.app_version),
            "last_block_height": str(info.last_block_height),
            "last_block_app_hash": b64(bytes(info.last_block_app_hash)),
        }}

    async def rpc_abci_query(self, params: dict[str, Any]) -> dict[str, Any]:
        path = params.get("path", "")
        if not isinstance(path, str):
            raise invalid_params("path: string required")
        data_hex = params.get("data") or ""
        try:
            data = bytes.fromhex(data_hex.removeprefix("0x")) if isinstance(data_hex, str) else b""
        except ValueError:
            raise invalid_params("data: hex string required") from None
        height = int_param(params, "height", 0) or 0
        res = await self._driver.query(path, data, height)
        return {"response": {
            "code": int(res.code), "log": res.log, "info": res.info, "index": str(res.index),
            "key": b64(bytes(res.key)), "value": b64(bytes(res.value)), "proofOps": None,
            "height": str(res.height), "codespace": res.codespace,
        }}

    async def rpc_broadcast_tx_async(self, params: dict[str, Any]) -> dict[str, Any]:
        tx = decode_tx_param(params)
        try:
            self.mempool.precheck(tx)
        except MempoolError as exc:
            raise internal(str(exc)) from None

        async def _bg() -> None:
            try:
                await self.admit(tx)
            except RpcFault:
                pass

        task = asyncio.create_task(_bg())
        self._bg.add(task)
        task.add_done_callback(self._bg.discard)
        return {"code": 0, "data": "", "log": "", "codespace": "", "hash": tx_key(tx).hex().upper()}

    async def rpc_broadcast_tx_sync(self, params: dict[str, Any]) -> dict[str, Any]:
        tx = decode_tx_param(params)
        res = await self.admit(tx)
        # ResultBroadcastTx.Data is HexBytes in CometBFT: upper hex, not base64
        return {"code": int(res.code), "data": bytes(res.data).hex().upper(), "log": res.log,
                "codespace": res.codespace, "hash": tx_key(tx).hex().upper()}

    async def rpc_broadcast_tx_commit(self, params: dict[str, Any]) -> dict[str, Any]:
        tx = decode_tx_param(params)
        key = tx_key(tx)
        fut: asyncio.Future[tuple[int, int, dict[str, Any]]] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(key, []).append(fut)
        try:
            res = await self.admit(tx)
            check = tx_result_json(res)
            if res.code != 0:
                return {"check_tx": check, "tx_result": tx_result_json(abci.ExecTxResult()),
                        "hash": key.hex().upper(), "height": "0"}
            try:
                height, _index, tx_res = await asyncio.wait_for(
                    asyncio.shield(fut), timeout=self.cfg.timeout_broadcast_tx_commit)
            except TimeoutError:
                raise internal("timed out waiting for tx to be included in a block") from None
            return {"check_tx": check, "tx_result": tx_res, "hash": key.hex().upper(), "height": str(height)}
        finally:
            lst = self._waiters.get(key)
            if lst is not None and fut in lst:
                lst.remove(fut)
                if not lst:
                    del self._waiters[key]

    def _height_param(self, params: dict[str, Any]) -> int:
        h = int_param(params, "height", None)
        latest = self.tip.height
        if h is None or h == 0:
            h = latest
        if h <= 0:
            raise internal(f"height {h} must be greater than 0, but got {h}")
        if h > latest:
            raise internal(f"height {h} must be less than or equal to the current blockchain height {latest}")
        return h

    async def rpc_block(self, params: dict[str, Any]) -> dict[str, Any]:
        assert self.store is not None
        h = self._height_param(params)
        doc = self.store.block(h)
        if doc is None:
            raise internal(f"height {h} is not available (no RPC record; node crashed between writes)")
        return doc

    async def rpc_block_results(self, params: dict[str, Any]) -> dict[str, Any]:
        assert self.store is not None
        h = self._height_param(params)
        doc = self.store.results(h)
        if doc is None:
            raise internal(f"could not find results for height #{h}")
        return doc

    async def rpc_tx(self, params: dict[str, Any]) -> dict[str, Any]:
        assert self.store is not None
        key = decode_tx_param(params, "hash")
        if len(key) != 32:
            raise invalid_params("hash: 32-byte SHA-256 expected")
        loc = self.store.tx_location(key)
        if loc is None:
            raise internal(f"tx ({key.hex().upper()}) not found")
        height, index = loc
        block = self.store.block(height)
        results = self.store.results(height)
        if block is None or results is None:
            raise internal(f"tx ({key.hex().upper()}) not found")
        return {
            "hash": key.hex().upper(),
            "height": str(height),
            "index": index,
            "tx_result": (results["txs_results"] or [])[index],
            "tx": block["block"]["data"]["txs"][index],
        }


async def _close_quietly(client: Any) -> None:
    try:
        res = client.close()
        if asyncio.iscoroutine(res):
            await res
    except (OSError, RuntimeError) as exc:  # closing a half-open connection during shutdown
        log.debug("closing the app connection: %s", exc)
