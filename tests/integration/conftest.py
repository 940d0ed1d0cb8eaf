"""Real-binary fixtures: a `dlbc localnet` of real `cometbft node`s + real `python -m abci_app`.

Every test here needs `cometbft` (v0.38.x or v1.0.x) on PATH and is skipped cleanly otherwise —
the development machines cannot install it (DESIGN §1). `localnet_factory(n, sidecars=hook)`
prepares the folder through the same code as `dlbc localnet`, starts it, and always tears it
down; the sidecar hook is where the full DLBC flow (publisher, miners, verifiers) plugs in.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from abci_app import cli
from abci_app import genesis_cli as gen
from abci_app.localnet import plan as lp
from abci_app.localnet.ports import busy_ports
from abci_app.localnet.runner import SidecarHook, Supervisor, start_localnet

COMETBFT = shutil.which("cometbft")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if Path(str(item.fspath)).parent == Path(__file__).parent:
            item.add_marker(pytest.mark.cometbft)
            if COMETBFT is None:
                item.add_marker(pytest.mark.skip(reason="needs a real `cometbft` on PATH"))


def free_base_port(validators: int) -> int:
    for base in range(33000, 60000, 173):
        if not busy_ports(lp.plan_ports(validators, base)):
            return base
    raise RuntimeError("no free port range on this machine")


@pytest.fixture
def cometbft_form() -> str:
    version = gen.detect_cometbft()
    if version is None:
        pytest.skip("needs a real `cometbft` on PATH")
    return gen.check_supported(version)


@pytest.fixture
def localnet_factory(
    tmp_path: Path, cometbft_form: str
) -> Iterator[Callable[..., lp.LocalnetPlan]]:
    supervisors: list[Supervisor] = []

    def make(
        validators: int,
        *,
        params: tuple[str, ...] = (),
        sidecars: SidecarHook | None = None,
        verifiers: bool = False,
    ) -> lp.LocalnetPlan:
        home = tmp_path / f"net{len(supervisors)}"
        args = [
            "localnet",
            "--validators",
            str(validators),
            "--home",
            str(home),
            "--base-port",
            str(free_base_port(validators)),
            "--prepare-only",
            "--no-fallback",
        ]
        for p in params:
            args += ["--param", p]
        assert cli.main(args) == 0
        plan = lp.load_plan(home)
        assert plan is not None and plan.form == cometbft_form
        sup = Supervisor(home / "logs")
        supervisors.append(sup)
        start_localnet(
            plan,
            sup,
            cometbft=str(COMETBFT),
            sidecars=sidecars,
            verifiers=verifiers,
            startup_timeout_s=90,
        )
        return plan

    try:
        yield make
    finally:
        for sup in supervisors:
            sup.stop()
