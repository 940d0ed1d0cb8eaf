"""`dlbc localnet --demo`: the network-wide demo sidecars of a localnet — one publisher and two
miners — planned as plain data (keys, genesis inputs, ports, argv) so the tests can check the
plan without starting anything.

Why once per network and not per node: a publisher or miner is an *account*, not a validator
(docs/processes.md); it needs no node of its own and talks to any node's RPC (we use node0's). Only
the verifier is per validator, because it feeds that validator's own ExtendVote
(docs/verification.md), and the localnet already starts one beside every node.

What the demo adds to a plain localnet, mirroring `dlbc devnet` (`dlbc_ops.devnet`, which takes its
defaults and its key files from here) so both main jobs tell the same story:

- key files HOME/keys/{publisher,miner-1,miner-2}.json (abci_app.keyfile; reused when present),
- the publisher and both miners funded in genesis (--account path; a miner pays a bond, tx fees
  and reveal deposits: docs/economics.md) and short phase lengths (--param path:
  TRAIN 60 s, REVEAL 12 s, VERIFY 30 s) unless the operator gives those names himself; with
  them the genesis builder pipelines the rounds (rounds_in_flight 2: round n+1 trains while
  round n reveals and verifies, docs/rounds.md), and `follow` prints every active round,
- `dlbc task submit --demo` (publisher: escrows the reward, hosts the encrypted data, releases the
  keys in its round, paper §III) and two `dlbc mine` with different budgets (miner-1 trains all of
  TRAIN, miner-2 a few seconds), so the better-trained model wins (paper Eq. 6),
- their artifact servers on the ports right after the nodes' block: BASE + 10·N + {0, 1, 2}.
"""

from __future__ import annotations

import base64
import json
import shlex
import urllib.parse
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from abci_app.keyfile import KeyFileError, KeyPair, load_key, save_key
from dlbc_ops import genesis as gen
from dlbc_ops import ports as net_ports
from dlbc_ops.localnet.layout import LOOPBACK, PORT_STRIDE, LocalnetError, node_home
from dlbc_ops.localnet.plan import LocalnetPlan

KEYS_DIR = "keys"
PUBLISHER = "publisher"
MINERS = ("miner-1", "miner-2")
#: Same phase lengths as `dlbc devnet` (DevnetConfig): a new round every 60 s of block time
#: (pipelined: reveal + verify = train). VERIFY is as long as that allows: on a 2-core machine
#: four verifiers check both models (with their checkpoints and trajectory replays) while both
#: miners train the next round, and at 30 s the better model's check ran out of time every
#: round, so the barely trained one won.
DEMO_PARAMS: tuple[tuple[str, int], ...] = (
    ("train_seconds", 60),
    ("reveal_seconds", 12),
    ("verify_seconds", 48),
)
PUBLISHER_BALANCE = 10_000_000
#: Each demo miner's genesis balance: the miner bond (100,000), tx fees and a reveal deposit per
#: round (docs/economics.md), for many rounds.
MINER_BALANCE = 1_000_000
DEMO_REWARD = 10_000
DEMO_SAMPLES = 96
#: miner-2's budget: a tenth of what miner-1 trains of a 60 s TRAIN phase (all of it less the
#: commit margin, ~55 s), so the demo shows ten times the work winning (bench/demo_task.py).
SMALL_BUDGET_S = 5.5
TASK_PREFIX = "demo-"


@dataclass(frozen=True, slots=True)
class DemoSettings:
    """The operator's knobs (`--samples`, `--small-budget`, `--reward`), devnet's defaults."""

    samples: int = DEMO_SAMPLES
    small_budget_s: float = SMALL_BUDGET_S
    reward: int = DEMO_REWARD
    publisher_balance: int = PUBLISHER_BALANCE
    threads: int = 1
    """torch threads per sidecar: N validators' verifiers + 2 miners share this machine's cores."""

    def check(self) -> None:
        if self.samples < 8:
            raise LocalnetError(f"--samples must be >= 8, got {self.samples}")
        if not self.small_budget_s > 0:
            raise LocalnetError(f"--small-budget must be > 0 seconds, got {self.small_budget_s}")
        if not 1 <= self.reward <= self.publisher_balance:
            raise LocalnetError(
                f"--reward must be between 1 and the publisher's genesis balance "
                f"{self.publisher_balance}, got {self.reward}"
            )


@dataclass(frozen=True, slots=True)
class DemoProcess:
    """One demo sidecar: its log/process name and argv."""

    name: str
    argv: list[str]
    artifact_port: int


@dataclass(slots=True)
class DemoKeys:
    """The demo accounts; `new` are generated in memory and not on disk until `save_new`."""

    root: Path
    keys: dict[str, KeyPair]
    new: list[str] = field(default_factory=list)

    def path(self, name: str) -> Path:
        return key_file(self.root, name)

    @property
    def publisher(self) -> KeyPair:
        return self.keys[PUBLISHER]

    @property
    def miners(self) -> list[KeyPair]:
        return [key for name, key in self.keys.items() if name != PUBLISHER]

    def save_new(self) -> None:
        """Write the generated keys (0600, atomic; never overwrites an existing file)."""
        for name in self.new:
            try:
                save_key(self.path(name), self.keys[name])
            except (OSError, KeyFileError) as exc:
                raise LocalnetError(f"cannot write key file {self.path(name)}: {exc}") from None
        self.new = []


def key_file(root: Path, name: str) -> Path:
    return root / KEYS_DIR / f"{name}.json"


def load_or_generate_keys(root: Path, miners: Sequence[str] = MINERS) -> DemoKeys:
    """Reuse HOME/keys/<name>.json when present (a resumed chain funds those addresses), else
    generate in memory; nothing is written here, so a later failed check leaves no files."""
    keys: dict[str, KeyPair] = {}
    new: list[str] = []
    for name in (PUBLISHER, *miners):
        path = key_file(root, name)
        if path.exists():
            try:
                keys[name] = load_key(path)
            except KeyFileError as exc:
                raise LocalnetError(
                    f"{exc}; fix: restore that file, or remove it (a new key is then made; the "
                    "publisher's needs a fresh --home to be funded)"
                ) from None
        else:
            keys[name] = KeyPair.generate()
            new.append(name)
    return DemoKeys(root, keys, new)


def genesis_inputs(
    accounts: Sequence[tuple[str, int]],
    params: Sequence[tuple[str, Any]],
    publisher: KeyPair,
    settings: DemoSettings,
    miners: Sequence[KeyPair] = (),
) -> tuple[list[tuple[str, int]], list[tuple[str, Any]]]:
    """The operator's --account/--param plus the demo's: the publisher's and the `miners'`
    balances (unless the operator funds an address himself; miners pay a bond, fees and
    deposits) and the demo phase lengths (unless he sets them)."""
    out_accounts = list(accounts)
    funded = {a for a, _ in accounts}
    for key, balance in ((publisher, settings.publisher_balance),
                         *((m, MINER_BALANCE) for m in miners)):
        if key.address_hex not in funded:
            out_accounts.append((key.address_hex, balance))
            funded.add(key.address_hex)
    given = {name for name, _ in params}
    demo_params = dict(DEMO_PARAMS)
    if "verify_seconds" not in given:
        demo_params["verify_seconds"] = demo_verify_seconds(
            effective_param(params, "train_seconds", demo_params["train_seconds"]),
            effective_param(params, "reveal_seconds", demo_params["reveal_seconds"]))
    out_params = [(n, v) for n, v in demo_params.items() if n not in given] + list(params)
    return out_accounts, out_params


def demo_verify_seconds(train_seconds: int, reveal_seconds: int) -> int:
    """The demo's VERIFY when the operator sets other phases but not it: what TRAIN leaves after
    REVEAL (so rounds still pipeline), at most the demo's own and at least 30 s (below that,
    rounds run one after another rather than with checks that cannot finish)."""
    return max(30, min(dict(DEMO_PARAMS)["verify_seconds"], train_seconds - reveal_seconds))


def genesis_balance(genesis: Mapping[str, Any], address_hex: str) -> int:
    """`address_hex`'s balance in a genesis document's app_state (0 when absent)."""
    app_state = genesis.get("app_state")
    accounts = app_state.get("accounts") if isinstance(app_state, Mapping) else None
    if isinstance(accounts, Mapping):
        return int(accounts.get(address_hex, 0) or 0)
    for entry in accounts if isinstance(accounts, list) else []:
        if isinstance(entry, Mapping) and str(entry.get("address", "")).lower() == address_hex:
            return int(entry.get("balance", entry.get("amount", 0)) or 0)
    return 0


def check_demo_funded(root: Path, keys: DemoKeys) -> None:
    """A resumed localnet keeps its genesis: the demo publisher must already be funded there."""
    doc = gen.load_genesis(node_home(root, 0) / "config" / "genesis.json")
    addr = keys.publisher.address_hex
    if genesis_balance(doc, addr) <= 0 or PUBLISHER in keys.new:
        raise LocalnetError(
            f"{root} holds a chain whose genesis does not fund the demo publisher {addr} (made "
            f"without --demo, or {root / KEYS_DIR} changed); its genesis is never rewritten; "
            "fix: a fresh --home for --demo"
        )


def effective_param(params: Iterable[tuple[str, Any]], name: str, default: int) -> int:
    value = default
    for n, v in params:
        if n == name and isinstance(v, int):
            value = v
    return value


def genesis_params(root: Path) -> list[tuple[str, Any]]:
    """The chain's own params (node0's genesis): what a resumed chain really runs with, whatever
    --param says now (genesis is never rewritten)."""
    try:
        doc = gen.load_genesis(node_home(root, 0) / "config" / "genesis.json")
    except gen.GenesisError as exc:
        raise LocalnetError(str(exc)) from None
    app_state = doc.get("app_state")
    params = app_state.get("params") if isinstance(app_state, Mapping) else None
    return sorted(params.items()) if isinstance(params, Mapping) else []


def per_model_seconds(verify_seconds: float) -> float:
    """The verifier's per-model bound in a demo (devnet and localnet): all of VERIFY but the
    verifier's closing margin (3 s) and a second. A demo has two miners, and the stop rule
    checks the second only if its claim can still win; the top model's check includes the
    replay of its trajectory (docs/proof_of_learning.md), which on the demo's shared cores
    competes with both miners training the next round. The bound is for sybil floods, which a
    demo has none of."""
    return max(5.0, verify_seconds - 4.0)


def per_miner_seconds(verify_seconds: float) -> float:
    """The verifier's per-miner bound in a demo: two per-model bounds, the ratio of the
    verifier's own defaults (20 s per miner over its window, 10 s per model). Without it the
    default 20 s capped every demo model at 20 s whatever `per_model_seconds` said, and one
    check that ran out of time on a loaded machine (unconfirmed work, charged to the miner)
    left an honest miner no verifier time in the next rounds."""
    return 2.0 * per_model_seconds(verify_seconds)


def verifier_args(params: Iterable[tuple[str, Any]], settings: DemoSettings) -> list[str]:
    """Extra `dlbc verify` flags in a demo: one torch thread, and the demo's per-model and
    per-miner bounds (`per_model_seconds`, `per_miner_seconds`, as devnet)."""
    verify_s = effective_param(params, "verify_seconds", dict(DEMO_PARAMS)["verify_seconds"])
    return [
        "--threads", str(settings.threads),
        "--per-model-seconds", f"{per_model_seconds(verify_s):g}",
        "--per-miner-seconds", f"{per_miner_seconds(verify_s):g}",
    ]  # fmt: skip


def demo_ports(validators: int, base_port: int) -> list[tuple[str, int]]:
    """(name, artifact port) of the publisher and miners: the block after the last node's."""
    first = base_port + PORT_STRIDE * validators
    ports = [(name, first + k) for k, name in enumerate((PUBLISHER, *MINERS))]
    if ports[-1][1] > 65535:
        raise LocalnetError(
            f"--demo needs ports up to {ports[-1][1]} (after the nodes' ports); fix: a lower "
            "--base-port"
        )
    return ports


def require_demo_ports_free(validators: int, base_port: int, host: str = LOOPBACK) -> None:
    net_ports.require_free(
        [(f"{name} artifacts", p) for name, p in demo_ports(validators, base_port)],
        "pass --base-port P (--demo uses P+10N..P+10N+2 too)",
        host=host,
        error=LocalnetError,
    )


def next_task_name(publisher_workdir: Path) -> str:
    """`demo-K`, K one past the demo tasks this publisher already prepared: a resumed localnet
    submits a fresh task and never re-prepares (re-encrypts) one whose digests are on chain."""
    root = publisher_workdir / "artifacts"
    taken = [
        int(p.name[len(TASK_PREFIX) :])
        for p in (root.iterdir() if root.is_dir() else [])
        if p.name.startswith(TASK_PREFIX) and p.name[len(TASK_PREFIX) :].isdigit()
    ]
    return f"{TASK_PREFIX}{max(taken, default=0) + 1}"


def demo_processes(
    root: Path,
    rpc_url: str,
    validators: int,
    base_port: int,
    settings: DemoSettings,
    python: str,
    *,
    log_level: str = "info",
    miner_rpc_url: str | None = None,
) -> list[DemoProcess]:
    """argv of the publisher (against `rpc_url`, node0's RPC) and the two miners (against
    `miner_rpc_url`, another node's when the network has one: what a miner broadcasts must
    reach the proposer by CometBFT's gossip, not by sharing the publisher's node)."""
    ports = dict(demo_ports(validators, base_port))
    cli = [python, "-m", "dlbc_ops"]
    common = ["--rpc", rpc_url, "--log-level", log_level]
    # every artifact server of a localnet listens on this machine: private addresses are expected
    miner_common = ["--rpc", miner_rpc_url or rpc_url, "--log-level", log_level,
                    "--allow-private-networks"]
    pub_dir = root / PUBLISHER
    procs = [
        DemoProcess(
            PUBLISHER,
            [
                *cli, "task", "submit", "--demo",
                "--key", str(key_file(root, PUBLISHER)), *common,
                "--workdir", str(pub_dir), "--artifact-port", str(ports[PUBLISHER]),
                "--name", next_task_name(pub_dir), "--reward", str(settings.reward),
                "--samples", str(settings.samples), "--keep-pending", "1",
            ],
            ports[PUBLISHER],
        )
    ]  # fmt: skip
    budgets: dict[str, float | None] = {MINERS[0]: None, MINERS[1]: settings.small_budget_s}
    for name in MINERS:
        argv = [
            *cli, "mine", "--key", str(key_file(root, name)), *miner_common,
            "--workdir", str(root / name), "--artifact-port", str(ports[name]),
            "--threads", str(settings.threads),
        ]  # fmt: skip
        budget = budgets[name]
        if budget is not None:
            argv += ["--max-train-seconds", f"{budget:g}"]
        procs.append(DemoProcess(name, argv, ports[name]))
    return procs


def describe(procs: Sequence[DemoProcess], keys: DemoKeys) -> list[str]:
    """Lines telling the operator what runs, as whom."""
    lines = []
    for p in procs:
        lines.append(f"  {p.name} ({keys.keys[p.name].address_hex}): {shlex.join(p.argv)}")
    return lines


def _query_value(abci_query: Any) -> Any:
    """The JSON an `abci_query` RPC result carries (None when it is not one)."""
    try:
        value = abci_query["response"]["value"]
        return json.loads(base64.b64decode(value or ""))
    except (TypeError, KeyError, ValueError):
        return None


def round_summary(abci_query: Any) -> str | None:
    """One line about the current round from an `abci_query?path="round"` RPC result."""
    rec = _query_value(abci_query)
    if rec is None:
        return None
    if not isinstance(rec, dict) or not rec.get("round"):
        return "no round yet (waiting for the publisher's task)"
    phase = "closed" if rec.get("status") == "closed" else rec.get("phase", "?")
    text = f"round {rec['round']} {phase}, task {rec.get('task_id')}"
    winner = rec.get("winner")
    if isinstance(winner, dict) and winner.get("miner"):
        text += f", winner {winner['miner']}"
    elif rec.get("outcome"):
        text += f", outcome {rec['outcome']}"
    return text


def rounds_summary(active_query: Any, round_query: Any) -> str | None:
    """One line about every active round, oldest first, from `abci_query?path="rounds/active"`
    ("round 3 VERIFY, task 3; round 4 TRAIN, task 4"): with pipelined rounds (the default)
    one round trains while the one before it reveals or verifies, and the newest alone (the
    `round` query) would hide the older one. With none active (or a node that does not answer
    `rounds/active`), the `round` query's line: the last round closed, or no round yet."""
    doc = _query_value(active_query)
    rounds = doc.get("rounds") if isinstance(doc, dict) else None
    if not rounds or not isinstance(rounds, list):
        return round_summary(round_query)
    return "; ".join(f"round {r.get('round')} {r.get('phase', '?')}, task {r.get('task_id')}"
                     for r in rounds if isinstance(r, dict))


def miner_rpc_url(plan: LocalnetPlan) -> str:
    """The demo miners follow node1 (node0 when alone); the publisher uses node0."""
    return plan.rpc_url(1 if plan.validators > 1 else 0)


def round_query_url(rpc_url: str, path: str = "round") -> str:
    """The RPC URL of our app's query `path` (`round`, `rounds/active`, ...)."""
    return f"{rpc_url}/abci_query?path={urllib.parse.quote(chr(34) + path + chr(34))}"
