"""The devnet's sidecars: a publisher, the miners of the config and one verifier, each run on a
thread of this process against the dev node's RPC (`dlbc localnet --demo` runs the same three
roles as separate `dlbc task|mine|verify` processes).

torch and the sidecar classes are imported when the devnet starts them, never at import time,
so `dlbc --help` does not pay for them.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dlbc_ops.devnet.config import DevnetConfig
from dlbc_ops.localnet import demo

if TYPE_CHECKING:
    from training.sidecars.base import Sidecar

VERIFIER = "verifier"
log = logging.getLogger("dlbc.devnet")


def build_sidecars(cfg: DevnetConfig, keys: demo.DemoKeys) -> dict[str, Sidecar]:
    """Publisher (keeps one demo task pending), miners (their budgets), verifier (writes
    verdicts into the app's home, where its ExtendVote reads them: docs/verification.md)."""
    import torch

    from training.sidecars.miner import Miner, MinerConfig
    from training.sidecars.publisher import DemoDataConfig, Publisher, PublisherConfig
    from training.sidecars.verifier import Verifier, VerifierConfig

    torch.set_num_threads(cfg.torch_threads)
    out = cfg.out
    pub = Publisher(PublisherConfig(
        rpc_url=cfg.rpc_url, workdir=out / demo.PUBLISHER, reward=cfg.reward,
        artifact_port=cfg.publisher_port, allow_private_networks=True), keys.publisher)
    pub.keep_pending = 1
    pub.demo_config = DemoDataConfig(samples=cfg.samples, image_size=cfg.image_size,
                                     hparams=dict(cfg.hparams))
    sidecars: dict[str, Sidecar] = {demo.PUBLISHER: pub}
    for i, m in enumerate(cfg.miners):
        sidecars[m.name] = Miner(MinerConfig(
            rpc_url=cfg.rpc_url, workdir=out / m.name, bandwidth_bps=m.bandwidth_bps,
            flops=m.flops, max_train_seconds=m.max_train_seconds, max_epochs=m.max_epochs,
            watermark_lambda=cfg.watermark_lambda, artifact_port=cfg.miner_port(i),
            seed=i, progress=False, allow_private_networks=True), keys.keys[m.name])
    sidecars[VERIFIER] = Verifier(VerifierConfig(
        rpc_url=cfg.rpc_url, workdir=out / VERIFIER, app_home=app_home(out),
        per_model_seconds=demo.per_model_seconds(cfg.verify_seconds),
        per_miner_seconds=demo.per_miner_seconds(cfg.verify_seconds),
        allow_private_networks=True))
    return sidecars


def app_home(out: Path) -> Path:
    """The app's --home inside OUT (`LocalChain.app_home`'s layout)."""
    return out / "app"


def start_threads(sidecars: dict[str, Sidecar], cfg: DevnetConfig,
                  listener: Callable[[str, dict[str, Any]], None],
                  say: Callable[[str], None],
                  on_crash: Callable[[str, BaseException], None] | None = None,
                  ) -> list[threading.Thread]:
    """Metrics (with --metrics), the event listener, then each sidecar's loop on a thread.

    A loop that ends by an exception (a sidecar that gave up, or a bug) is logged with its
    traceback and reported to `on_crash`: a devnet whose publisher died must not go on
    printing rounds as if nothing happened (issue 13, "no background loop dies silently")."""
    threads = []
    for name, sc in sidecars.items():
        if cfg.metrics:
            sc.cfg.metrics_port = cfg.metrics_ports()[name]
            sc.start_metrics()
            say(f"{name} metrics: {sc.metrics_url}")
        sc.listeners.append(listener)
        t = threading.Thread(target=_run_loudly, args=(name, sc, on_crash), name=name,
                             daemon=True)
        t.start()
        threads.append(t)
    return threads


def _run_loudly(name: str, sc: Sidecar,
                on_crash: Callable[[str, BaseException], None] | None) -> None:
    try:
        sc.run()
    except BaseException as exc:
        log.exception("%s stopped", name)
        if on_crash is not None:
            on_crash(name, exc)
