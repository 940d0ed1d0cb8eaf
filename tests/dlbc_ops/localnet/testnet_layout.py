"""Write a folder exactly shaped like `cometbft testnet --v N --o DIR` output (v0.38 or v1.0).

The config generation is tested on this layout where no `cometbft` binary can be built (no Go;
tests/real_cometbft checks the same against the real `cometbft testnet`), and it is the
independent oracle of CometBFT's defaults: real ed25519 keys in CometBFT's JSON forms, the genesis testnet
writes (same validators, time and chain id in every node), and config.toml text following CometBFT's
template for the sections we patch — comments included, so the tests can check they survive.
Differences between the lines that matter here: v1.0 merged the prevote/precommit timeouts into
`timeout_vote`, added a `[grpc]` section, and keeps vote extensions under `feature`.
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

GENESIS_TIME = "2026-11-24T07:00:00.123456789Z"


def _keypair(seed: bytes) -> tuple[bytes, bytes]:
    priv = Ed25519PrivateKey.from_private_bytes(seed)
    pub = priv.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return seed, pub


def _priv_json(seed: bytes, pub: bytes) -> dict[str, object]:
    return {"type": "tendermint/PrivKeyEd25519", "value": base64.b64encode(seed + pub).decode()}


def _consensus_template(version: str) -> str:
    if version.startswith("1."):
        timeouts = """# How long we wait for a proposal block before prevoting nil
timeout_propose = "3s"
# How much timeout_propose increases with each round
timeout_propose_delta = "500ms"
# How long we wait after receiving +2/3 prevotes/precommits for "anything"
timeout_vote = "1s"
# How much the timeout_vote increases with each round
timeout_vote_delta = "500ms"
# How long we wait after committing a block, before starting on the new
# height (this gives us a chance to receive some more precommits, even
# though we already have +2/3).
# Deprecated: set `timeout_commit` to 0 and use `next_block_delay` instead.
timeout_commit = "1s"
"""
    else:
        timeouts = """# How long we wait for a proposal block before prevoting nil
timeout_propose = "3s"
# How much timeout_propose increases with each round
timeout_propose_delta = "500ms"
# How long we wait after receiving +2/3 prevotes for "anything"
timeout_prevote = "1s"
timeout_prevote_delta = "500ms"
timeout_precommit = "1s"
timeout_precommit_delta = "500ms"
# How long we wait after committing a block, before starting on the new
# height (this gives us a chance to receive some more precommits, even
# though we already have +2/3).
timeout_commit = "1s"
"""
    return timeouts


def config_toml(version: str, moniker: str, peers: str) -> str:
    grpc = (
        """
#######################################################
###       gRPC Server Configuration Options         ###
#######################################################
[grpc]
# TCP or Unix socket address for the RPC server to listen on. If not specified,
# the gRPC server will be disabled.
laddr = ""

[grpc.version_service]
enabled = true
"""
        if version.startswith("1.")
        else ""
    )
    return f"""# This is a TOML config file.
# For more information, see https://github.com/toml-lang/toml

# The version of the CometBFT binary that created or
# last modified the config file. Do not modify this.
version = "{version}"

#######################################################################
###                   Main Base Config Options                      ###
#######################################################################

# TCP or UNIX socket address of the ABCI application,
# or the name of an ABCI application compiled in with the CometBFT binary
proxy_app = "tcp://127.0.0.1:26658"

# A custom human readable name for this node
moniker = "{moniker}"

db_backend = "goleveldb"
db_dir = "data"
log_level = "info"
log_format = "plain"
genesis_file = "config/genesis.json"
priv_validator_key_file = "config/priv_validator_key.json"
priv_validator_state_file = "data/priv_validator_state.json"
priv_validator_laddr = ""
node_key_file = "config/node_key.json"
abci = "socket"
filter_peers = false

#######################################################
###       RPC Server Configuration Options          ###
#######################################################
[rpc]

# TCP or UNIX socket address for the RPC server to listen on
laddr = "tcp://127.0.0.1:26657"

# A list of origins a cross-domain request can be executed from
cors_allowed_origins = []
cors_allowed_methods = ["HEAD", "GET", "POST", ]
cors_allowed_headers = ["Origin", "Accept", "Content-Type", "X-Requested-With", "X-Server-Time", ]
unsafe = false
max_open_connections = 900
timeout_broadcast_tx_commit = "10s"
max_body_bytes = 1000000
tls_cert_file = ""
tls_key_file = ""

# pprof listen address (https://golang.org/pkg/net/http/pprof)
pprof_laddr = ""
{grpc}
#######################################################
###           P2P Configuration Options             ###
#######################################################
[p2p]

# Address to listen for incoming connections
laddr = "tcp://0.0.0.0:26656"

# Address to advertise to peers for them to dial. If empty, will use the same
# port as the laddr, and will introspect on the listener to figure out the
# address. IP and port are required. Example: 159.89.10.97:26656
external_address = ""

# Comma separated list of seed nodes to connect to
seeds = ""

# Comma separated list of nodes to keep persistent connections to
persistent_peers = "{peers}"

# Set true for strict address routability rules
# Set false for private or local networks
addr_book_strict = false

max_num_inbound_peers = 40
max_num_outbound_peers = 10
pex = true

# Toggle to disable guard against peers connecting from the same ip.
allow_duplicate_ip = true

#######################################################
###          Mempool Configuration Option          ###
#######################################################
[mempool]
type = "flood"
recheck = true
broadcast = true
size = 5000
max_txs_bytes = 1073741824
cache_size = 10000

# Maximum size of a single transaction.
# NOTE: the max size of a tx transmitted over the network is {{max_tx_bytes}}.
max_tx_bytes = 1048576

#######################################################
###         Consensus Configuration Options         ###
#######################################################
[consensus]

wal_file = "data/cs.wal/wal"

{_consensus_template(version)}
# EmptyBlocks mode and possible interval between empty blocks
create_empty_blocks = true
create_empty_blocks_interval = "0s"

#######################################################
###       Instrumentation Configuration Options     ###
#######################################################
[instrumentation]

# When true, Prometheus metrics are served under /metrics on
# PrometheusListenAddr.
prometheus = false

# Address to listen for Prometheus collector(s) connections
prometheus_listen_addr = ":26660"

# Instrumentation namespace
namespace = "cometbft"
"""


def consensus_params(version: str) -> dict[str, object]:
    params: dict[str, object] = {
        "block": {"max_bytes": "22020096", "max_gas": "-1"},
        "evidence": {
            "max_age_num_blocks": "100000",
            "max_age_duration": "172800000000000",
            "max_bytes": "1048576",
        },
        "validator": {"pub_key_types": ["ed25519"]},
        "version": {"app": "0"},
    }
    if version.startswith("1."):
        params["block"] = {"max_bytes": "4194304", "max_gas": "-1"}
        params["synchrony"] = {"precision": "505000000", "message_delay": "15000000000"}
        params["feature"] = {"vote_extensions_enable_height": "0", "pbts_enable_height": "0"}
    else:
        params["abci"] = {"vote_extensions_enable_height": "0"}
    return params


def write_testnet(root: Path, validators: int, version: str = "0.38.17") -> dict[str, object]:
    """Write the layout; returns facts for assertions (node ids, validator addresses)."""
    node_keys = [_keypair(hashlib.sha256(b"node%d" % i).digest()) for i in range(validators)]
    val_keys = [_keypair(hashlib.sha256(b"val%d" % i).digest()) for i in range(validators)]
    node_ids = [hashlib.sha256(pub).digest()[:20].hex() for _, pub in node_keys]
    val_addrs = [hashlib.sha256(pub).digest()[:20].hex().upper() for _, pub in val_keys]
    genesis = {
        "genesis_time": GENESIS_TIME,
        "chain_id": "chain-AbCdEf",
        "initial_height": "0",
        "consensus_params": consensus_params(version),
        "validators": [
            {
                "address": val_addrs[i],
                "pub_key": {
                    "type": "tendermint/PubKeyEd25519",
                    "value": base64.b64encode(val_keys[i][1]).decode(),
                },
                "power": "1",
                "name": f"node{i}",
            }
            for i in range(validators)
        ],
        "app_hash": "",
    }
    # testnet's peers list names every node (itself included) by hostname on the default port.
    peers = ",".join(f"{node_ids[i]}@node{i}:26656" for i in range(validators))
    for i in range(validators):
        home = root / f"node{i}"
        (home / "config").mkdir(parents=True)
        (home / "data").mkdir()
        (home / "config" / "genesis.json").write_text(json.dumps(genesis, indent=2) + "\n")
        (home / "config" / "node_key.json").write_text(
            json.dumps({"priv_key": _priv_json(*node_keys[i])})
        )
        seed, pub = val_keys[i]
        (home / "config" / "priv_validator_key.json").write_text(
            json.dumps(
                {
                    "address": val_addrs[i],
                    "pub_key": {
                        "type": "tendermint/PubKeyEd25519",
                        "value": base64.b64encode(pub).decode(),
                    },
                    "priv_key": _priv_json(seed, pub),
                },
                indent=2,
            )
        )
        (home / "data" / "priv_validator_state.json").write_text(
            json.dumps({"height": "0", "round": 0, "step": 0}, indent=2)
        )
        (home / "config" / "config.toml").write_text(config_toml(version, f"node{i}", peers))
    return {"node_ids": node_ids, "validator_addresses": val_addrs}
