"""What a `dlbc devnet` runs with, where its ports are, and the checks made before it starts.

The demo's numbers (phase lengths, balances, reward, images, miner-2's budget) are
`dlbc_ops.localnet.demo`'s, so `dlbc devnet` and `dlbc localnet --demo` tell the same story.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from dlbc_ops import ports
from dlbc_ops.devnet.faucet import FAUCET_BALANCE
from dlbc_ops.localnet import demo
from dlbc_ops.preflight import require_writable
from dlbc_ops.supervisor import LaunchError

_PHASES = dict(demo.DEMO_PARAMS)


class DevnetError(LaunchError):
    """The devnet cannot start; the message names the problem and the fix."""


@dataclass
class MinerSpec:
    name: str
    max_train_seconds: float | None
    """Per-round compute budget (None: all of TRAIN less the commit margin)."""
    max_epochs: int | None = None
    flops: int = 1_000_000_000_000
    bandwidth_bps: int = 100_000_000


def demo_miners(small_budget_s: float = demo.SMALL_BUDGET_S) -> list[MinerSpec]:
    """miner-1 trains all of TRAIN, miner-2 only `small_budget_s`: the better model wins."""
    strong, weak = demo.MINERS
    return [MinerSpec(strong, None), MinerSpec(weak, small_budget_s)]


@dataclass
class DevnetConfig:
    out: Path = Path("dlbc-devnet")
    base_port: int = 26657
    """RPC on base, app (ABCI) on base+1, publisher artifacts on base+10, miners base+11.."""
    rounds: int | None = None
    """Stop after this many closed rounds (None: until Ctrl-C)."""
    block_time: float = 1.0
    train_seconds: int = _PHASES["train_seconds"]
    reveal_seconds: int = _PHASES["reveal_seconds"]
    verify_seconds: int = _PHASES["verify_seconds"]
    sequential: bool = False
    """Genesis `rounds_in_flight=1`: the next round starts only after the one before it closed.
    Off (the default), a fresh devnet pipelines its rounds (round n+1 trains while round n
    reveals and verifies) when reveal + verify <= train, else it falls back to sequential."""
    reward: int = demo.DEMO_REWARD
    publisher_balance: int = demo.PUBLISHER_BALANCE
    miner_balance: int = demo.MINER_BALANCE
    """Each miner's genesis balance: its bond, tx fees and reveal deposits (docs/economics.md)."""
    faucet_balance: int = FAUCET_BALANCE
    """The faucet's genesis balance (OUT/keys/faucet.json, `dlbc_ops.devnet.faucet`)."""
    funds: list[tuple[bytes, int]] = field(default_factory=list)
    """`--fund ADDR=AMOUNT`: sent from the faucet on every start, also when resuming."""
    miners: list[MinerSpec] = field(default_factory=demo_miners)
    samples: int = demo.DEMO_SAMPLES
    image_size: int = 80
    hparams: dict[str, Any] = field(default_factory=lambda: {"depth": 3, "base_width": 8})
    """With `samples` and `image_size`: the default demo task (`DemoDataConfig`'s defaults,
    training/DEMO_DATA.md), so `dlbc devnet` and `dlbc task submit --demo` train the same."""
    watermark_lambda: float = 1.0
    chain_id: str = "dlbc-devnet"
    log_level: str = "info"
    torch_threads: int = 1
    plots: bool = True
    metrics: bool = False
    """Serve each sidecar's Prometheus metrics on base+20 (publisher), +21.. (miners), +29."""
    stream: TextIO = field(default_factory=lambda: sys.stdout)

    @property
    def rpc_port(self) -> int:
        return self.base_port

    @property
    def rpc_url(self) -> str:
        return f"http://{ports.LOOPBACK}:{self.rpc_port}"

    @property
    def app_port(self) -> int:
        return self.base_port + 1

    @property
    def publisher_port(self) -> int:
        return self.base_port + 10

    def miner_port(self, i: int) -> int:
        return self.base_port + 11 + i

    def metrics_ports(self) -> dict[str, int]:
        planned = {demo.PUBLISHER: self.base_port + 20, "verifier": self.base_port + 29}
        for i, m in enumerate(self.miners):
            planned[m.name] = self.base_port + 21 + i
        return planned

    def phase_params(self) -> dict[str, int]:
        """The genesis params this devnet overrides (a resumed chain keeps its own); pipelined
        or not is left to `build_app_state` unless --sequential names it."""
        params = {"train_seconds": self.train_seconds, "reveal_seconds": self.reveal_seconds,
                  "verify_seconds": self.verify_seconds}
        if self.sequential:
            params["rounds_in_flight"] = 1
        return params


def check_ports(cfg: DevnetConfig) -> None:
    planned = [("RPC", cfg.rpc_port), ("app ABCI", cfg.app_port),
               ("publisher artifacts", cfg.publisher_port)]
    planned += [(f"{m.name} artifacts", cfg.miner_port(i)) for i, m in enumerate(cfg.miners)]
    if cfg.metrics:
        planned += [(f"{name} metrics", p) for name, p in cfg.metrics_ports().items()]
    ports.require_free(
        planned,
        f"pass --base-port P (this devnet uses {cfg.base_port}..{max(p for _, p in planned)})",
        error=DevnetError,
    )


def check_out_dir(out: Path) -> None:
    require_writable(out, "pass a folder you can write to with --out DIR", error=DevnetError)
