"""Turn a `cometbft testnet --v N --o DIR` folder into a DLBC localnet on 127.0.0.1 — no I/O
beyond the files of that folder, no processes, so the tests can run it on a generated layout.

Layout (what `cometbft testnet` writes, v0.38 and v1.0 alike):

    DIR/node<i>/config/{config.toml, genesis.json, node_key.json, priv_validator_key.json}
    DIR/node<i>/data/priv_validator_state.json

What we change and why:
- genesis: every node gets the *same bytes*: DLBC app_state from the genesis builder, vote
  extensions on from height 1 in the form of the installed CometBFT (DESIGN §2, §6), one chain id
  and genesis time. Different bytes = different chains, so this is checked after writing.
- config.toml (line-level edits, operator comments kept): distinct loopback ports per node for
  p2p, RPC, proxy_app (the ABCI socket of that node's `python -m abci_app`) and Prometheus;
  persistent_peers = every *other* node as id@127.0.0.1:p2p; addr_book_strict off and duplicate
  IPs allowed (all peers share 127.0.0.1); empty blocks on, because DLBC's round phases advance
  on BFT block time even when no tx arrives (DESIGN §4); 1 s commit timeout; mempool tx size cap.

Ports: node i uses base + 10·i + {p2p 0, rpc 1, abci 2, prometheus 4, sidecar metrics 5}, so
node0 keeps CometBFT's defaults 26656/26657/26658/26660 with the default base 26656.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from abci_app.dlbc.crypto import address_of
from dlbc_ops.genesis import builder as gen
from dlbc_ops.localnet.tomlpatch import TomlPatchError, TomlScalar, patch_toml
from dlbc_ops.supervisor import LaunchError

DEFAULT_BASE_PORT = 26656
PORT_STRIDE = 10
MAX_VALIDATORS = 64
LOOPBACK = "127.0.0.1"
MANIFEST = "localnet.json"
NODE_PREFIX = "node"


class LocalnetError(LaunchError):
    """A localnet cannot be prepared or started; the message names the problem and the fix."""


@dataclass(frozen=True, slots=True)
class NodePorts:
    """The loopback ports of one node; `sidecar` is left free for its sidecars' metrics."""

    p2p: int
    rpc: int
    abci: int
    prometheus: int
    sidecar: int

    def labelled(self) -> list[tuple[str, int]]:
        return [
            ("p2p", self.p2p),
            ("RPC", self.rpc),
            ("ABCI proxy_app", self.abci),
            ("prometheus", self.prometheus),
            ("sidecar metrics", self.sidecar),
        ]


def node_ports(index: int, base_port: int = DEFAULT_BASE_PORT) -> NodePorts:
    start = base_port + PORT_STRIDE * index
    return NodePorts(
        p2p=start, rpc=start + 1, abci=start + 2, prometheus=start + 4, sidecar=start + 5
    )


def plan_ports(validators: int, base_port: int = DEFAULT_BASE_PORT) -> list[NodePorts]:
    """Ports for `validators` nodes; refuses counts and bases that leave the valid port range."""
    if not 1 <= validators <= MAX_VALIDATORS:
        raise LocalnetError(
            f"--validators must be between 1 and {MAX_VALIDATORS}, got {validators}"
        )
    last = base_port + PORT_STRIDE * validators - 1
    if base_port < 1024 or last > 65535:
        raise LocalnetError(
            f"--base-port {base_port} with {validators} validators needs ports {base_port}..{last}; "
            "fix: choose a base port between 1024 and "
            f"{65535 - PORT_STRIDE * validators + 1}"
        )
    return [node_ports(i, base_port) for i in range(validators)]


@dataclass(frozen=True, slots=True)
class ConsensusSettings:
    """config.toml values DLBC wants on every node (documented in cometbft/README.md).

    timeout_commit: ~1 block/s, so phase deadlines in seconds (DESIGN §4) are met within ~1 s.
    create_empty_blocks: phases advance only when blocks are made, so never wait for txs.
    max_tx_bytes: RevealModel/Settle are the largest txs; Settle grows with the validator count.
    """

    timeout_propose: str = "3s"
    timeout_commit: str = "1s"
    create_empty_blocks: bool = True
    create_empty_blocks_interval: str = "0s"
    max_tx_bytes: int = 1048576
    log_level: str = "info"


def node_id_from_key(node_key: Mapping[str, Any], where: str = "node_key.json") -> str:
    """CometBFT node ID: lowercase hex of SHA-256(ed25519 pub)[:20] (p2p/key.go)."""
    priv = node_key.get("priv_key") if isinstance(node_key, Mapping) else None
    value = priv.get("value") if isinstance(priv, Mapping) else None
    try:
        raw = base64.b64decode(value if isinstance(value, str) else "", validate=True)
    except (binascii.Error, ValueError):
        raise LocalnetError(f"{where}: priv_key.value is not base64") from None
    if len(raw) != 64:
        raise LocalnetError(
            f"{where}: ed25519 node key must be 64 bytes (seed||pub), got {len(raw)}"
        )
    # CometBFT's node ID is derived like an address: SHA-256(ed25519 pub)[:20].
    return address_of(raw[32:]).hex()


def node_home(root: Path, index: int) -> Path:
    return root / f"{NODE_PREFIX}{index}"


def app_home(root: Path, index: int) -> Path:
    """Where node i's `python -m abci_app --home` keeps LMDB state (and verdict files)."""
    return node_home(root, index) / "app"


_REQUIRED = (
    "config/config.toml",
    "config/genesis.json",
    "config/node_key.json",
    "config/priv_validator_key.json",
    "data/priv_validator_state.json",
)


def check_layout(root: Path, validators: int) -> None:
    """The folder holds exactly the testnet files we need for `validators` nodes."""
    missing = [
        str(node_home(root, i) / rel)
        for i in range(validators)
        for rel in _REQUIRED
        if not (node_home(root, i) / rel).is_file()
    ]
    if missing:
        raise LocalnetError(
            f"{root} is not a `cometbft testnet --v {validators}` folder; missing: "
            + ", ".join(missing[:4])
            + (" ..." if len(missing) > 4 else "")
            + f"; fix: remove {root} (or use another --home) and run again"
        )
    extra = node_home(root, validators) / "config" / "genesis.json"
    if extra.exists():
        raise LocalnetError(
            f"{root} holds more than {validators} nodes (found {extra.parent.parent.name}); "
            "fix: use the same --validators as before, or a fresh --home"
        )


def config_edits(
    index: int,
    ports: list[NodePorts],
    node_ids: list[str],
    settings: ConsensusSettings,
    current: Mapping[str, Any],
) -> dict[str, dict[str, TomlScalar]]:
    """Edits for node `index`'s config.toml. Timeout keys are set only where the file has them
    (v1.0 renamed the prevote/precommit timeouts; we never add a key that version lacks)."""
    mine = ports[index]
    peers = ",".join(f"{node_ids[j]}@{LOOPBACK}:{p.p2p}" for j, p in enumerate(ports) if j != index)
    edits: dict[str, dict[str, TomlScalar]] = {
        "": {
            "proxy_app": f"tcp://{LOOPBACK}:{mine.abci}",
            "moniker": f"dlbc-{NODE_PREFIX}{index}",
            "log_level": settings.log_level,
        },
        "rpc": {"laddr": f"tcp://{LOOPBACK}:{mine.rpc}", "pprof_laddr": ""},
        "p2p": {
            "laddr": f"tcp://{LOOPBACK}:{mine.p2p}",
            "external_address": "",
            "persistent_peers": peers,
            "addr_book_strict": False,
            "allow_duplicate_ip": True,
        },
        "mempool": {"max_tx_bytes": settings.max_tx_bytes},
        "consensus": {
            "create_empty_blocks": settings.create_empty_blocks,
            "create_empty_blocks_interval": settings.create_empty_blocks_interval,
        },
        "instrumentation": {"prometheus_listen_addr": f"{LOOPBACK}:{mine.prometheus}"},
    }
    consensus = current.get("consensus", {}) if isinstance(current, Mapping) else {}
    for key in ("timeout_propose", "timeout_commit"):
        if isinstance(consensus, Mapping) and key in consensus:
            edits["consensus"][key] = getattr(settings, key)
    grpc = (
        current.get("rpc", {}).get("grpc_laddr")
        if isinstance(current.get("rpc"), Mapping)
        else None
    )
    if grpc:  # an operator template that turned the v0.38 gRPC broadcast API on: keep it unique
        edits["rpc"]["grpc_laddr"] = f"tcp://{LOOPBACK}:{mine.sidecar + 1}"
    return edits


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


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise LocalnetError(f"{path}: cannot read JSON ({exc})") from None


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
    docs = [_load_json(node_home(root, i) / "config" / "genesis.json") for i in range(validators)]
    for i, doc in enumerate(docs[1:], start=1):
        if not isinstance(doc, dict) or doc.get("validators") != docs[0].get("validators"):
            raise LocalnetError(
                f"{node_home(root, i)}/config/genesis.json lists other validators than node0; "
                "fix: regenerate the folder with one `cometbft testnet` run"
            )
    for i in range(validators):
        key = _load_json(node_home(root, i) / "config" / "priv_validator_key.json")
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


def patch_config_files(
    root: Path,
    validators: int,
    ports: list[NodePorts],
    settings: ConsensusSettings,
) -> list[str]:
    """Patch every node's config.toml; returns the node IDs in node order."""
    node_ids = [
        node_id_from_key(
            _load_json(node_home(root, i) / "config" / "node_key.json"),
            f"{node_home(root, i)}/config/node_key.json",
        )
        for i in range(validators)
    ]
    if len(set(node_ids)) != len(node_ids):
        raise LocalnetError(f"{root}: two nodes share a node key; fix: regenerate the folder")
    for i in range(validators):
        path = node_home(root, i) / "config" / "config.toml"
        text = path.read_text()
        try:
            current = tomllib.loads(text)
            patched = patch_toml(text, config_edits(i, ports, node_ids, settings, current))
        except (tomllib.TOMLDecodeError, TomlPatchError) as exc:
            raise LocalnetError(
                f"{path}: cannot patch ({exc}); fix: regenerate the folder"
            ) from None
        gen.write_text_atomic(path, patched)
    return node_ids


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
    obj = _load_json(path)
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
