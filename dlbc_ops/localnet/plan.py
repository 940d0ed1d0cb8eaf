"""Turn a `cometbft testnet --v N --o DIR` folder into a DLBC localnet on 127.0.0.1 — no I/O
beyond the files of that folder, no processes, so the tests can run it on a generated layout.

Where things are: `layout`. What changes in each config.toml: `nodeconfig`. Here: the genesis
(every node gets the *same bytes*: DLBC app_state from the genesis builder, vote extensions on
from height 1 in the form of the installed CometBFT (docs/wire.md, docs/settlement.md), one chain id
and genesis time; different bytes = different chains, so this is checked after writing) and the
manifest DIR/localnet.json that lets a rerun resume.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from dlbc_ops import genesis as gen
from dlbc_ops.localnet.layout import (
    DEFAULT_BASE_PORT,
    LOOPBACK,
    MANIFEST,
    LocalnetError,
    NodePorts,
    app_home,
    check_layout,
    load_json,
    node_home,
    plan_ports,
)
from dlbc_ops.localnet.nodeconfig import ConsensusSettings, patch_config_files


@dataclass(slots=True)
class LocalnetPlan:
    """What `prepare_localnet` decided; saved as DIR/localnet.json so a rerun resumes."""

    root: str
    validators: int
    base_port: int
    form: str
    chain_id: str
    genesis_sha256: str
    node_ids: list[str]
    ports: list[dict[str, int]] = field(default_factory=list)

    def node_ports(self, index: int) -> NodePorts:
        return NodePorts(**self.ports[index])

    def rpc_url(self, index: int) -> str:
        return f"http://{LOOPBACK}:{self.node_ports(index).rpc}"

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"


def patch_genesis_files(
    root: Path,
    validators: int,
    form: str,
    *,
    chain_id: str,
    accounts: Iterable[tuple[str, int]] = (),
    params: Iterable[tuple[str, Any]] = (),
    genesis_time: str | None = None,
) -> tuple[str, dict[str, Any]]:
    """Write one DLBC genesis to every node; returns its SHA-256 (hex) and the document.

    Starts from node0's genesis (testnet wrote the same validator set and time to all nodes)
    and refuses a folder whose nodes disagree on validators, which would be two chains.
    """
    docs = [load_json(node_home(root, i) / "config" / "genesis.json") for i in range(validators)]
    for i, doc in enumerate(docs[1:], start=1):
        if not isinstance(doc, dict) or doc.get("validators") != docs[0].get("validators"):
            raise LocalnetError(
                f"{node_home(root, i)}/config/genesis.json lists other validators than node0; "
                "fix: regenerate the folder with one `cometbft testnet` run"
            )
    for i in range(validators):
        key = load_json(node_home(root, i) / "config" / "priv_validator_key.json")
        addr = str(key.get("address", "")).upper() if isinstance(key, dict) else ""
        if addr not in {str(v.get("address", "")).upper() for v in docs[0].get("validators", [])}:
            raise LocalnetError(
                f"{node_home(root, i)}: its validator key {addr or '?'} is not in the genesis "
                "validator set; fix: regenerate the folder with `cometbft testnet`"
            )
    try:
        doc = gen.apply_dlbc(
            docs[0],
            form,
            chain_id=chain_id,
            genesis_time=genesis_time,
            accounts=accounts,
            params=params,
        )
    except gen.GenesisError as exc:
        raise LocalnetError(f"invalid genesis: {exc}") from None
    text = gen.dumps_genesis(doc)
    for i in range(validators):
        gen.write_text_atomic(node_home(root, i) / "config" / "genesis.json", text)
    digests = {
        hashlib.sha256((node_home(root, i) / "config" / "genesis.json").read_bytes()).hexdigest()
        for i in range(validators)
    }
    if len(digests) != 1:
        raise LocalnetError("genesis files differ after writing; the disk may be failing")
    return digests.pop(), doc


def prepare_localnet(
    root: Path,
    validators: int,
    form: str,
    *,
    base_port: int = DEFAULT_BASE_PORT,
    chain_id: str = "dlbc-localnet",
    accounts: Iterable[tuple[str, int]] = (),
    params: Iterable[tuple[str, Any]] = (),
    settings: ConsensusSettings | None = None,
    genesis_time: str | None = None,
) -> LocalnetPlan:
    """Patch a fresh testnet folder (genesis + config) and write DIR/localnet.json.

    Pure over the folder: call it on `cometbft testnet` output, or on a generated layout in tests.
    """
    ports = plan_ports(validators, base_port)
    check_layout(root, validators)
    digest, doc = patch_genesis_files(
        root,
        validators,
        form,
        chain_id=chain_id,
        accounts=accounts,
        params=params,
        genesis_time=genesis_time,
    )
    if settings is None:
        settings = ConsensusSettings(max_tx_bytes=app_max_tx_bytes(doc))
    elif not settings.max_tx_bytes:  # 0: follow the app's own cap
        settings = replace(settings, max_tx_bytes=app_max_tx_bytes(doc))
    node_ids = patch_config_files(root, validators, ports, settings)
    for i in range(validators):
        app_home(root, i).mkdir(parents=True, exist_ok=True)
    plan = LocalnetPlan(
        root=str(root),
        validators=validators,
        base_port=base_port,
        form=form,
        chain_id=chain_id,
        genesis_sha256=digest,
        node_ids=node_ids,
        ports=[asdict(p) for p in ports],
    )
    gen.write_text_atomic(root / MANIFEST, plan.to_json())
    return plan


def app_max_tx_bytes(genesis: Mapping[str, Any], default: int = 1048576) -> int:
    """The app's own tx size cap (app_state.params.max_tx_bytes) for the mempool's max_tx_bytes:
    CometBFT then drops an oversize tx before gossiping it instead of the app rejecting it."""
    app_state = genesis.get("app_state")
    params = app_state.get("params") if isinstance(app_state, Mapping) else None
    value = params.get("max_tx_bytes") if isinstance(params, Mapping) else None
    try:
        return int(value) if value is not None and int(value) > 0 else default
    except (TypeError, ValueError):
        return default


def load_plan(root: Path) -> LocalnetPlan | None:
    """The saved plan of an already prepared folder, or None for a fresh one."""
    path = root / MANIFEST
    if not path.exists():
        return None
    obj = load_json(path)
    try:
        return LocalnetPlan(**obj)
    except TypeError as exc:
        raise LocalnetError(f"{path}: not a localnet manifest ({exc}); fix: remove it") from None


def repatch_ports(
    root: Path, plan: LocalnetPlan, base_port: int, settings: ConsensusSettings
) -> LocalnetPlan:
    """Rerun on an existing folder: genesis is never touched again (the chain exists), but
    ports may move to a new --base-port; config edits are idempotent."""
    ports = plan_ports(plan.validators, base_port)
    check_layout(root, plan.validators)
    node_ids = patch_config_files(root, plan.validators, ports, settings)
    plan.base_port = base_port
    plan.ports = [asdict(p) for p in ports]
    plan.node_ids = node_ids
    gen.write_text_atomic(root / MANIFEST, plan.to_json())
    return plan
