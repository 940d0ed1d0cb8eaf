"""CometBFT's `/block`, `/block_results` and `/tx` JSON, read from the dev node's block store.

Why computed, not stored: the block store already holds every committed block exactly as the
app saw it (RequestFinalizeBlock), its ResponseFinalizeBlock and its app hash, so the RPC's
documents are a view of it. One record means a crash can never leave the RPC and the chain
disagreeing. Shapes follow CometBFT v0.38 (rpc_json): the header's `app_hash` is the state
after the previous height, `last_block_id` links the headers.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from typing import Any

from abci_app.rfc3339 import format_rfc3339_ns
from dlbc_ops.devnode.blockstore import BlockStore
from dlbc_ops.devnode.rpc_json import b64, event_json, tx_result_json


@dataclass(frozen=True, slots=True)
class ChainTip:
    """The last committed height, what `status` reports and the next block links to."""

    height: int = 0
    time_ns: int = 0  # BFT time of `height`; the next block's must be later
    block_hash: bytes = b""
    app_hash: bytes = b""  # app hash after executing `height`


def block_time_ns(store: BlockStore, height: int) -> int:
    block = store.block(height)
    return 0 if block is None else block.time.seconds * 1_000_000_000 + block.time.nanos


def chain_tip(store: BlockStore) -> ChainTip:
    h = store.height
    if h == 0:
        return ChainTip()
    return ChainTip(height=h, time_ns=block_time_ns(store, h),
                    block_hash=store.block_hash(h) or b"", app_hash=store.app_hash(h) or b"")


def block_doc(store: BlockStore, chain_id: str, height: int) -> dict[str, Any] | None:
    """The `block` answer for a committed height (None if the store lacks it)."""
    req = store.block(height)
    if req is None:
        return None
    txs = [bytes(t) for t in req.txs]
    block_hash = store.block_hash(height) or bytes(req.hash)
    last_id = {"hash": (store.block_hash(height - 1) or b"").hex().upper(),
               "parts": {"total": 1 if height > 1 else 0, "hash": ""}}
    data_hash = (hashlib.sha256(b"".join(hashlib.sha256(t).digest() for t in txs))
                 .hexdigest().upper() if txs else "")
    return {
        "block_id": {"hash": block_hash.hex().upper(), "parts": {"total": 1, "hash": ""}},
        "block": {
            "header": {
                "version": {"block": "11", "app": "0"},
                "chain_id": chain_id,
                "height": str(height),
                "time": format_rfc3339_ns(block_time_ns(store, height)),
                "last_block_id": last_id,
                "last_commit_hash": "",
                "data_hash": data_hash,
                "validators_hash": "",
                "next_validators_hash": "",
                "consensus_hash": "",
                "app_hash": (store.app_hash(height - 1) or b"").hex().upper(),
                "last_results_hash": "",
                "evidence_hash": "",
                "proposer_address": bytes(req.proposer_address).hex().upper(),
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


def results_doc(store: BlockStore, height: int) -> dict[str, Any] | None:
    """The `block_results` answer: the app's own FinalizeBlock response for that height."""
    resp = store.finalize_response(height)
    if resp is None:
        return None
    return {
        "height": str(height),
        "txs_results": [tx_result_json(r) for r in resp.tx_results] or None,
        "finalize_block_events": [event_json(e) for e in resp.events],
        "validator_updates": [],
        "consensus_param_updates": None,
        "app_hash": b64(bytes(resp.app_hash)),
    }


def tx_doc(store: BlockStore, tx_hash: bytes) -> dict[str, Any] | None:
    """The `tx` answer for a committed tx (None if no committed block has it)."""
    loc = store.tx_location(tx_hash)
    if loc is None:
        return None
    height, index = loc
    block, resp = store.block(height), store.finalize_response(height)
    if block is None or resp is None:
        return None
    return {
        "hash": tx_hash.hex().upper(),
        "height": str(height),
        "index": index,
        "tx_result": tx_result_json(resp.tx_results[index]),
        "tx": base64.b64encode(bytes(block.txs[index])).decode(),
    }
