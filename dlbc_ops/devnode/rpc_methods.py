"""The dev node's CometBFT RPC methods: each translates one JSON-RPC call into a node call.

Why apart from the node: the node's job is making blocks; this module only knows CometBFT v0.38's
request and answer shapes (int64 as strings, bytes base64, hashes upper hex; rpc_json) and the
error texts clients match on ("not found", "must be less than or equal to the current blockchain
height"). The transport is `rpc_server`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

from abci_app.keyfile import PUB_KEY_TYPE
from abci_app.pb.tendermint.abci import types_pb2 as abci
from abci_app.rfc3339 import format_rfc3339_ns
from dlbc_ops.devnode import blockdocs
from dlbc_ops.devnode.config import NODE_VERSION, VALIDATOR_POWER
from dlbc_ops.devnode.mempool import MempoolError, tx_key
from dlbc_ops.devnode.rpc_json import b64, tx_result_json
from dlbc_ops.devnode.rpc_server import RpcFault, internal, invalid_params

if TYPE_CHECKING:
    from dlbc_ops.devnode.node import DevNode

Method = Callable[[dict[str, Any]], Awaitable[Any]]
#: What `broadcast_tx_commit` waits for: (height, index in block, ExecTxResult JSON).
Committed = tuple[int, int, dict[str, Any]]


def decode_tx_param(params: Mapping[str, Any], name: str = "tx") -> bytes:
    """A []byte JSON-RPC param (base64) → bytes, with a clear error."""
    raw = params.get(name)
    if not isinstance(raw, str) or not raw:
        raise invalid_params(f"{name}: base64 string required")
    try:
        return base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        raise invalid_params(f"{name}: not valid base64") from None


def int_param(params: Mapping[str, Any], name: str, default: int | None = None) -> int | None:
    """An int64 param: JSON-RPC sends it as a string (or a number); missing → default."""
    raw = params.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except (TypeError, ValueError):
        raise invalid_params(f"{name}: integer required, got {raw!r}") from None


class TxWaiters:
    """`broadcast_tx_commit` callers waiting for their tx's block, by tx hash."""

    def __init__(self) -> None:
        self._waiting: dict[bytes, list[asyncio.Future[Committed]]] = {}

    def add(self, key: bytes) -> asyncio.Future[Committed]:
        fut: asyncio.Future[Committed] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(key, []).append(fut)
        return fut

    def discard(self, key: bytes, fut: asyncio.Future[Committed]) -> None:
        waiting = self._waiting.get(key)
        if waiting is not None and fut in waiting:
            waiting.remove(fut)
            if not waiting:
                del self._waiting[key]

    def resolve(self, key: bytes, committed: Committed) -> None:
        for fut in self._waiting.pop(key, []):
            if not fut.done():
                fut.set_result(committed)

    def cancel_all(self) -> None:
        for futs in self._waiting.values():
            for fut in futs:
                if not fut.done():
                    fut.cancel()


class RpcMethods:
    """The method table `RpcServer` serves for one `DevNode`."""

    def __init__(self, node: DevNode) -> None:
        self.node = node
        self._bg: set[asyncio.Task[Any]] = set()

    def table(self) -> dict[str, Method]:
        return {
            "health": self.health,
            "status": self.status,
            "abci_info": self.abci_info,
            "abci_query": self.abci_query,
            "broadcast_tx_async": self.broadcast_tx_async,
            "broadcast_tx_sync": self.broadcast_tx_sync,
            "broadcast_tx_commit": self.broadcast_tx_commit,
            "block": self.block,
            "block_results": self.block_results,
            "tx": self.tx,
            "genesis": self.genesis,
            "num_unconfirmed_txs": self.num_unconfirmed_txs,
        }

    def cancel_background(self) -> None:
        for t in list(self._bg):
            t.cancel()

    async def health(self, params: dict[str, Any]) -> dict[str, Any]:
        return {}

    async def status(self, params: dict[str, Any]) -> dict[str, Any]:
        node = self.node
        key, tip = node.validator_key(), node.tip
        return {
            "node_info": {
                "protocol_version": {"p2p": "8", "block": "11", "app": "0"},
                "id": hashlib.sha256(key.public_key).hexdigest()[:40],
                "listen_addr": "",
                "network": node.chain_id,
                "version": NODE_VERSION,
                "channels": "",
                "moniker": "dlbc-devnode",
                "other": {"tx_index": "on", "rpc_address": node.cfg.rpc_laddr},
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
                "address": key.address.hex().upper(),
                "pub_key": {"type": PUB_KEY_TYPE,
                            "value": base64.b64encode(key.public_key).decode()},
                "voting_power": str(VALIDATOR_POWER),
            },
        }

    async def genesis(self, params: dict[str, Any]) -> dict[str, Any]:
        return {"genesis": self.node.genesis}

    async def num_unconfirmed_txs(self, params: dict[str, Any]) -> dict[str, Any]:
        mempool = self.node.mempool
        return {"n_txs": str(len(mempool)), "total": str(len(mempool)),
                "total_bytes": str(mempool.size_bytes), "txs": None}

    async def abci_info(self, params: dict[str, Any]) -> dict[str, Any]:
        info = await self.node.app_info()
        return {"response": {
            "data": info.data, "version": info.version, "app_version": str(info.app_version),
            "last_block_height": str(info.last_block_height),
            "last_block_app_hash": b64(bytes(info.last_block_app_hash)),
        }}

    async def abci_query(self, params: dict[str, Any]) -> dict[str, Any]:
        path = params.get("path", "")
        if not isinstance(path, str):
            raise invalid_params("path: string required")
        data_hex = params.get("data") or ""
        try:
            data = bytes.fromhex(data_hex.removeprefix("0x")) if isinstance(data_hex, str) else b""
        except ValueError:
            raise invalid_params("data: hex string required") from None
        height = int_param(params, "height", 0) or 0
        res = await self.node.query(path, data, height)
        return {"response": {
            "code": int(res.code), "log": res.log, "info": res.info, "index": str(res.index),
            "key": b64(bytes(res.key)), "value": b64(bytes(res.value)), "proofOps": None,
            "height": str(res.height), "codespace": res.codespace,
        }}

    async def broadcast_tx_async(self, params: dict[str, Any]) -> dict[str, Any]:
        tx = decode_tx_param(params)
        try:
            self.node.mempool.precheck(tx)
        except MempoolError as exc:
            raise internal(str(exc)) from None

        async def _bg() -> None:
            try:
                await self.node.admit(tx)
            except RpcFault:
                pass

        task = asyncio.create_task(_bg())
        self._bg.add(task)
        task.add_done_callback(self._bg.discard)
        return {"code": 0, "data": "", "log": "", "codespace": "", "hash": tx_key(tx).hex().upper()}

    async def broadcast_tx_sync(self, params: dict[str, Any]) -> dict[str, Any]:
        tx = decode_tx_param(params)
        res = await self.node.admit(tx)
        # ResultBroadcastTx.Data is HexBytes in CometBFT: upper hex, not base64
        return {"code": int(res.code), "data": bytes(res.data).hex().upper(), "log": res.log,
                "codespace": res.codespace, "hash": tx_key(tx).hex().upper()}

    async def broadcast_tx_commit(self, params: dict[str, Any]) -> dict[str, Any]:
        tx = decode_tx_param(params)
        key = tx_key(tx)
        waiters = self.node.waiters
        fut = waiters.add(key)
        try:
            res = await self.node.admit(tx)
            check = tx_result_json(res)
            if res.code != 0:
                return {"check_tx": check, "tx_result": tx_result_json(abci.ExecTxResult()),
                        "hash": key.hex().upper(), "height": "0"}
            try:
                height, _index, tx_res = await asyncio.wait_for(
                    asyncio.shield(fut), timeout=self.node.cfg.timeout_broadcast_tx_commit)
            except TimeoutError:
                raise internal("timed out waiting for tx to be included in a block") from None
            return {"check_tx": check, "tx_result": tx_res, "hash": key.hex().upper(),
                    "height": str(height)}
        finally:
            waiters.discard(key, fut)

    def _height_param(self, params: dict[str, Any]) -> int:
        h = int_param(params, "height", None)
        latest = self.node.tip.height
        if h is None or h == 0:
            h = latest
        if h <= 0:
            raise internal(f"height {h} must be greater than 0, but got {h}")
        if h > latest:
            raise internal(
                f"height {h} must be less than or equal to the current blockchain height {latest}")
        return h

    async def block(self, params: dict[str, Any]) -> dict[str, Any]:
        h = self._height_param(params)
        doc = blockdocs.block_doc(self.node.block_store(), self.node.chain_id, h)
        if doc is None:
            raise internal(f"height {h} is not available in the block store")
        return doc

    async def block_results(self, params: dict[str, Any]) -> dict[str, Any]:
        h = self._height_param(params)
        doc = blockdocs.results_doc(self.node.block_store(), h)
        if doc is None:
            raise internal(f"could not find results for height #{h}")
        return doc

    async def tx(self, params: dict[str, Any]) -> dict[str, Any]:
        key = decode_tx_param(params, "hash")
        if len(key) != 32:
            raise invalid_params("hash: 32-byte SHA-256 expected")
        doc = blockdocs.tx_doc(self.node.block_store(), key)
        if doc is None or int(doc["height"]) > self.node.tip.height:
            raise internal(f"tx ({key.hex().upper()}) not found")
        return doc
