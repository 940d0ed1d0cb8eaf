"""Real CometBFT: the project's pinned v0.38 and v1.0 builds paired with real `python -m abci_app`.

Every test here is marked `cometbft` and runs once per supported release line (`v0.38`, `v1.0`).
The binaries come from `make tools` (`cometbft/install.sh` -> `.tools/cometbft-<version>/`), found
through `dlbc_ops.cometbft`, the same lookup `dlbc localnet` uses; a test skips only when
its release could not be built, and the skip says so. Processes are started through the project's
one `Supervisor` and stopped in a `finally`, also when a test fails.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from abci_app.keyfile import KeyPair
from dlbc_ops import cometbft as binary
from dlbc_ops.cli import main as cli
from dlbc_ops.localnet import plan as lp
from dlbc_ops.localnet.runner import (
    app_hash_at,
    node_height,
    start_localnet,
)
from dlbc_ops.localnet.tomlpatch import patch_toml
from dlbc_ops.supervisor import Supervisor, wait_for_port
from tests.support.keys import keypairs
from tests.support.ports import cometbft_base
from tests.support.waiting import wait_for

HERE = Path(__file__).parent
LINES = ("0.38", "1.0")
# Blocks every 200 ms: phases are in BFT seconds, so this only makes the tests quicker.
FAST_COMMIT = "200ms"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.cometbft)


_OUTCOMES: dict[str, dict[str, int]] = {}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Count outcomes of this folder's tests per release, for the closing summary line."""
    if "real_cometbft" not in report.nodeid:
        return
    if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
        line = next((f"v{ln}" for ln in LINES if f"v{ln}" in report.nodeid), "other")
        counts = _OUTCOMES.setdefault(line, {})
        counts[report.outcome] = counts.get(report.outcome, 0) + 1


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """One line CI logs can be read by: how many real-CometBFT tests ran, per release."""
    if not _OUTCOMES:
        return
    parts = []
    for line in sorted(_OUTCOMES):
        counts = _OUTCOMES[line]
        parts.append(f"{line}: " + ", ".join(f"{n} {k}" for k, n in sorted(counts.items())))
    terminalreporter.write_line("real CometBFT tests (tests/real_cometbft): " + "; ".join(parts))


@dataclass(frozen=True, slots=True)
class CometBin:
    """One pinned CometBFT build: its path and release line ("0.38" / "1.0")."""

    path: str
    line: str


@pytest.fixture(params=LINES, ids=[f"v{line}" for line in LINES])
def cometbft(request: pytest.FixtureRequest) -> CometBin:
    return require_line(request.param)


def require_line(line: str) -> CometBin:
    found = binary.pinned_line(line)
    if found is None:
        pytest.skip(
            f"no CometBFT v{line} binary in {binary.tools_dir()}: `make tools` could not build "
            f"it (is Go installed? see cometbft/install.sh and cometbft/versions.txt)"
        )
    return CometBin(str(found), line)


# ------------------------------------------------------------------------ one node, README recipe


@dataclass(slots=True)
class SingleNode:
    """`cometbft init` + `dlbc genesis` + `python -m abci_app` + `cometbft node`."""

    bin: CometBin
    root: Path
    sup: Supervisor
    abci_port: int
    rpc_port: int
    p2p_port: int
    funded: list[KeyPair] = field(default_factory=list)

    @property
    def rpc_url(self) -> str:
        return f"http://127.0.0.1:{self.rpc_port}"

    @property
    def node_home(self) -> Path:
        return self.root / "cometbft"

    @property
    def app_home(self) -> Path:
        return self.root / "app"

    def start_app(self) -> None:
        child = self.sup.start("app", [
            sys.executable, "-m", "abci_app", "--home", str(self.app_home),
            "--address", f"tcp://127.0.0.1:{self.abci_port}",
        ])  # fmt: skip
        wait_for_port(self.abci_port, child, 60)

    def start_node(self) -> None:
        child = self.sup.start("cometbft", [
            self.bin.path, "node", "--home", str(self.node_home),
            "--proxy_app", f"tcp://127.0.0.1:{self.abci_port}",
            "--rpc.laddr", f"tcp://127.0.0.1:{self.rpc_port}",
            "--p2p.laddr", f"tcp://127.0.0.1:{self.p2p_port}",
        ])  # fmt: skip
        wait_for_port(self.rpc_port, child, 60)

    def height(self) -> int:
        return node_height(self.rpc_url) or 0

    def wait_height(self, height: int, timeout_s: float = 60) -> int:
        return int(wait_for(lambda: self.height() >= height and self.height(), timeout_s,
                            f"height {height} on {self.rpc_url}", 0.3, sup=self.sup))


@pytest.fixture
def single_node(cometbft: CometBin, tmp_path: Path) -> Iterator[Callable[..., SingleNode]]:
    """A factory so a test can pass genesis params; the node runs until the test ends."""
    sups: list[Supervisor] = []

    def make(params: dict[str, Any] | None = None, funded: int = 2,
             accounts: dict[str, int] | None = None) -> SingleNode:
        root = tmp_path / f"single{len(sups)}"
        home = root / "cometbft"
        subprocess.run([cometbft.path, "init", "--home", str(home)], check=True,
                       capture_output=True)
        keys = keypairs(funded, f"{cometbft.line}-{root.name}")
        args = ["genesis", "--genesis", str(home / "config" / "genesis.json")]
        for k in keys:
            args += ["--account", f"{k.address.hex()}=1000000"]
        for addr, amount in (accounts or {}).items():
            args += ["--account", f"{addr}={amount}"]
        for name, value in (params or {}).items():
            args += ["--param", f"{name}={value}"]
        assert cli.main(args) == 0
        config = home / "config" / "config.toml"
        config.write_text(patch_toml(config.read_text(), {
            "consensus": {"timeout_commit": FAST_COMMIT},
        }))
        base = cometbft_base(1)
        sup = Supervisor(root / "logs", grace_s=10)
        sups.append(sup)
        node = SingleNode(cometbft, root, sup, abci_port=base + 2, rpc_port=base + 1,
                          p2p_port=base, funded=keys)
        node.start_app()
        node.start_node()
        node.wait_height(1)
        return node

    try:
        yield make
    finally:
        for sup in sups:
            sup.stop()


# ------------------------------------------------------------------------ N validators, testnet


@dataclass(slots=True)
class Localnet:
    """A `dlbc localnet` (cometbft testnet) started in process, so tests can kill and restart
    single children through the same `Supervisor` the command uses."""

    bin: CometBin
    plan: lp.LocalnetPlan
    sup: Supervisor

    @property
    def root(self) -> Path:
        return Path(self.plan.root)

    def rpc(self, i: int) -> str:
        return self.plan.rpc_url(i)

    def heights(self) -> list[int]:
        return [node_height(self.rpc(i)) or 0 for i in range(self.plan.validators)]

    def wait_all(self, height: int, timeout_s: float = 90, nodes: range | None = None) -> None:
        idx = nodes if nodes is not None else range(self.plan.validators)
        wait_for(lambda: all((node_height(self.rpc(i)) or 0) >= height for i in idx),
                 timeout_s, f"height {height} on nodes {list(idx)}", 0.3, sup=self.sup)

    def app_hashes(self, height: int) -> set[str | None]:
        return {app_hash_at(self.rpc(i), height) for i in range(self.plan.validators)}


def prepare_localnet(bin: CometBin, home: Path, validators: int, base: int,
                     extra: tuple[str, ...] = ()) -> lp.LocalnetPlan:
    args = ["localnet", "--validators", str(validators), "--home", str(home),
            "--base-port", str(base), "--prepare-only", "--no-fallback",
            "--cometbft", bin.path, *extra]
    assert cli.main(args) == 0
    plan = lp.load_plan(home)
    assert plan is not None and plan.form == bin.line
    return plan


@pytest.fixture
def localnet(cometbft: CometBin, tmp_path: Path) -> Iterator[Callable[..., Localnet]]:
    sups: list[Supervisor] = []

    def make(validators: int, *, params: tuple[str, ...] = (),
             timeout_commit: str = FAST_COMMIT) -> Localnet:
        home = tmp_path / f"net{len(sups)}"
        extra: list[str] = ["--timeout-commit", timeout_commit]
        for p in params:
            extra += ["--param", p]
        plan = prepare_localnet(cometbft, home, validators, cometbft_base(validators),
                                tuple(extra))
        sup = Supervisor(home / "logs")
        sups.append(sup)
        start_localnet(plan, sup, cometbft=cometbft.path, startup_timeout_s=90,
                       say=lambda _line: None)
        return Localnet(cometbft, plan, sup)

    try:
        yield make
    finally:
        for sup in sups:
            sup.stop()
