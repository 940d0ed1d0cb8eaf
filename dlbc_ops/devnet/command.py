"""`dlbc devnet`: one command brings up a whole DLBC chain on this machine (issue 7, main job).

What runs (DESIGN §1), all under one output folder:

    python -m abci_app         the DLBC state machine (subprocess, LMDB under OUT/app)
    dlbc node                  the embedded DEVELOPMENT STAND-IN for CometBFT (subprocess,
                               single validator, BFT time, vote extensions on; OUT/node)
    publisher                  submits demo segmentation tasks, releases keys (thread)
    miner-1, miner-2           train with watermarks under different budgets (threads)
    verifier                   checks revealed models, writes verdicts for ExtendVote (thread)

It prints each round's phase changes, the commits, reveals, verdicts, the winner and the
balances, and writes OUT/plots/dice.png (score per round per miner) and OUT/plots/watermark.png
(watermark confidence per round per miner) after every round, plus OUT/history.json. Models stay
in OUT/miner-*/rounds/<n>/ (private until revealed, then served from OUT/miner-*/artifacts/<token>/)
and the winner's is copied to OUT/models/.

Ctrl-C stops the sidecars, then the node, then the app; a second run with the same --out resumes
from the saved chain state (app LMDB + node block store). Bad input (a port in use, an unwritable
folder) is reported before anything is started.

The orchestration lives in `Devnet` so the end-to-end test (tests/e2e) drives the very same code.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import shutil
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from dlbc_ops import ports
from dlbc_ops.devnode.launch import LocalChain
from dlbc_ops.supervisor import LaunchError

log = logging.getLogger("dlbc.devnet")

PPM = 1_000_000


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


@dataclass
class DevnetConfig:
    out: Path = Path("dlbc-devnet")
    base_port: int = 26657
    """RPC on base, app (ABCI) on base+1, publisher artifacts on base+10, miners base+11.."""
    rounds: int | None = None
    """Stop after this many closed rounds (None: until Ctrl-C)."""
    block_time: float = 1.0
    train_seconds: int = 60
    reveal_seconds: int = 12
    verify_seconds: int = 30
    reward: int = 10_000
    publisher_balance: int = 10_000_000
    miner_balance: int = 1_000_000
    """Each miner's genesis balance: its bond, tx fees and reveal deposits (docs/economics.md)."""
    miners: list[MinerSpec] = field(default_factory=lambda: [
        MinerSpec("miner-1", None), MinerSpec("miner-2", 5.0)])
    samples: int = 96
    image_size: int = 32
    hparams: dict[str, Any] = field(default_factory=lambda: {"depth": 2, "base_width": 16})
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
    def app_port(self) -> int:
        return self.base_port + 1

    @property
    def publisher_port(self) -> int:
        return self.base_port + 10

    def miner_port(self, i: int) -> int:
        return self.base_port + 11 + i

    def metrics_ports(self) -> dict[str, int]:
        ports = {"publisher": self.base_port + 20, "verifier": self.base_port + 29}
        for i, m in enumerate(self.miners):
            ports[m.name] = self.base_port + 21 + i
        return ports


# ------------------------------------------------------------------------------------ checks


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
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as exc:
        raise DevnetError(
            f"output folder {out} is not writable ({exc.strerror or exc}); "
            "pass a folder you can write to with --out DIR"
        ) from None


# ------------------------------------------------------------------------------------ devnet


class Devnet:
    """Start/stop the whole devnet; `run()` blocks until `rounds` closed or `stop()`."""

    def __init__(self, cfg: DevnetConfig) -> None:
        self.cfg = cfg
        self.out = cfg.out
        self.chain: LocalChain | None = None
        self.sidecars: dict[str, Any] = {}
        self.threads: list[threading.Thread] = []
        self.names: dict[str, str] = {}  # address hex -> display name
        self.stop_event = threading.Event()
        self.history: list[dict[str, Any]] = []
        self._print_lock = threading.Lock()
        self._log_files: list[Any] = []
        self.rpc: Any = None
        self.rounds_closed: list[dict[str, Any]] = []

    # -- output

    def say(self, text: str) -> None:
        stamp = time.strftime("%H:%M:%S")
        with self._print_lock:
            print(f"[{stamp}] {text}", file=self.cfg.stream, flush=True)

    def name_of(self, addr: str | None) -> str:
        if not addr:
            return "-"
        return self.names.get(addr.lower(), addr[:12])

    # -- lifecycle

    def start(self) -> None:
        """Check everything, then start app, node and sidecars. Cleans up on any failure."""
        cfg = self.cfg
        check_out_dir(self.out)
        check_ports(cfg)
        self._setup_logging()
        self._load_history()
        try:
            self._start_chain()
            self._start_sidecars()
        except BaseException:
            self.shutdown()
            raise

    def _setup_logging(self) -> None:
        from abci_app.logs import setup_logging

        logs = self.out / "logs"
        logs.mkdir(exist_ok=True)
        f = open(logs / "devnet.log", "a", buffering=1)  # noqa: SIM115 - closed in shutdown
        self._log_files.append(f)
        setup_logging(self.cfg.log_level, stream=f)
        from dlbc_ops.cli.common import quiet_http_logs

        quiet_http_logs()

    def _keys(self) -> dict[str, Any]:
        from abci_app.keyfile import KeyPair, load_key, save_key

        keys: dict[str, Any] = {}
        kdir = self.out / "keys"
        kdir.mkdir(exist_ok=True)
        for name in ["publisher", *[m.name for m in self.cfg.miners]]:
            path = kdir / f"{name}.json"
            if path.exists():
                keys[name] = load_key(path)
            else:
                keys[name] = KeyPair.generate()
                save_key(path, keys[name])
            self.names[keys[name].address.hex()] = name
        return keys

    def _start_chain(self) -> None:
        cfg = self.cfg
        keys = self._keys()
        self.keys = keys
        self.chain = LocalChain(self.out, rpc_port=cfg.rpc_port, app_port=cfg.app_port,
                                block_time=cfg.block_time, log_level=cfg.log_level)
        params = {"train_seconds": cfg.train_seconds, "reveal_seconds": cfg.reveal_seconds,
                  "verify_seconds": cfg.verify_seconds}
        balances = {keys[m.name].address.hex(): cfg.miner_balance for m in cfg.miners}
        balances[keys["publisher"].address.hex()] = cfg.publisher_balance
        resumed = self.chain.write_genesis(cfg.chain_id, params, balances)
        self.say(f"starting the DLBC app (ABCI on 127.0.0.1:{cfg.app_port}, home {self.out/'app'})"
                 + (" — resuming saved state" if resumed else ""))
        self.chain.start_app()
        self.say("starting the embedded dev node — a DEVELOPMENT STAND-IN for CometBFT "
                 "(single validator, BFT time, vote extensions on)")
        self.chain.start_node()
        self.rpc = self.chain.rpc
        self.say(f"chain {self.rpc.chain_id()} at height {self.rpc.latest_height()}; "
                 f"RPC http://127.0.0.1:{cfg.rpc_port}")

    def _check_alive(self) -> None:
        if self.chain is not None:
            self.chain.check_alive()

    def _start_sidecars(self) -> None:
        import torch

        from training.sidecars.miner import Miner, MinerConfig
        from training.sidecars.publisher import DemoDataConfig, Publisher, PublisherConfig
        from training.sidecars.verifier import Verifier, VerifierConfig

        torch.set_num_threads(self.cfg.torch_threads)
        cfg = self.cfg
        rpc_url = f"http://127.0.0.1:{cfg.rpc_port}"
        pub = Publisher(PublisherConfig(
            rpc_url=rpc_url, workdir=self.out / "publisher", reward=cfg.reward,
            artifact_port=cfg.publisher_port), self.keys["publisher"])
        pub.keep_pending = 1
        pub.demo_config = DemoDataConfig(samples=cfg.samples, image_size=cfg.image_size,
                                         hparams=dict(cfg.hparams))
        self.sidecars["publisher"] = pub
        for i, m in enumerate(cfg.miners):
            self.sidecars[m.name] = Miner(MinerConfig(
                rpc_url=rpc_url, workdir=self.out / m.name, bandwidth_bps=m.bandwidth_bps,
                flops=m.flops, max_train_seconds=m.max_train_seconds, max_epochs=m.max_epochs,
                watermark_lambda=cfg.watermark_lambda, artifact_port=cfg.miner_port(i),
                seed=i, progress=False), self.keys[m.name])
        self.sidecars["verifier"] = Verifier(VerifierConfig(
            rpc_url=rpc_url, workdir=self.out / "verifier", app_home=self.out / "app",
            per_model_seconds=max(5.0, cfg.verify_seconds / 2)))
        for name, sc in self.sidecars.items():
            if cfg.metrics:
                sc.cfg.metrics_port = cfg.metrics_ports()[name]
                sc.start_metrics()
                self.say(f"{name} metrics: {sc.metrics_url}")
            sc.listeners.append(self._on_event)
            t = threading.Thread(target=sc.run, name=name, daemon=True)
            t.start()
            self.threads.append(t)

    # -- narrative

    def _on_event(self, event: str, f: dict[str, Any]) -> None:
        who = self.name_of(f.get("miner")) if f.get("miner") else f.get("role", "?")
        if event == "task_submitted":
            self.say(f"publisher submitted task {f['task_id']} ({f['name']}), reward {f['reward']}")
        elif event == "miner_registered":
            self.say(f"{who} registered")
        elif event == "train_key_released":
            self.say(f"round {f['round']}: publisher released the data key of task {f['task_id']}")
        elif event == "test_key_revealed":
            self.say(f"round {f['round']}: publisher revealed the test key")
        elif event == "training_started":
            self.say(f"round {f['round']}: {who} training, budget {f['budget']:.0f}s")
        elif event == "committed":
            self.say(f"round {f['round']}: {who} committed its model ({f['epochs']} epoch(s), "
                     f"watermark confidence {f['watermark_confidence']:.6f})")
            self._record(f["round"], who, watermark_confidence=f["watermark_confidence"],
                         epochs=f["epochs"])
        elif event == "revealed":
            self.say(f"round {f['round']}: {who} revealed, claims dice {f['score_ppm']/PPM:.4f}")
            self._record(f["round"], who, claimed_ppm=f["score_ppm"])
        elif event == "round_skipped":
            self.say(f"round {f['round']}: {who} skipped: {f['reason']}")
        elif event == "verdicts":
            for c in f["checks"]:
                name = self.name_of(c.miner)
                if c.verdict:
                    self.say(f"round {f['round']}: verdict on {name}: watermark "
                             f"{'ok' if c.watermark_ok else 'MISSING'} "
                             f"({c.watermark_min_confidence:.6f}), measured dice "
                             f"{c.score_ppm/PPM:.4f}{' — ' + c.reason if c.reason else ''}")
                    self._record(f["round"], name, measured_ppm=c.score_ppm,
                                 verifier_confidence=c.watermark_min_confidence)
                else:
                    self.say(f"round {f['round']}: no verdict on {name}: {c.reason}")

    def _record(self, rnd: int, miner: str, **fields: Any) -> None:
        with self._print_lock:
            for h in self.history:
                if h["round"] == rnd and h["miner"] == miner:
                    h.update(fields)
                    return
            self.history.append({"round": rnd, "miner": miner, **fields})

    # -- main loop

    def run(self) -> int:
        """Watch the chain and narrate until `rounds` rounds closed or `stop()`."""
        last: tuple[int, str] = (0, "")
        seen_closed = {int(r["round"]) for r in self.rounds_closed}
        start_closed = None
        while not self.stop_event.is_set():
            try:
                self._check_alive()
                rec = self.rpc.query_json("round")
            except LaunchError:  # app or node died
                raise
            except Exception as exc:  # noqa: BLE001 - the node may be busy; try again
                log.warning("round query failed: %s", exc)
                self.stop_event.wait(0.5)
                continue
            n = int(rec.get("round") or 0)
            if start_closed is None:
                # Rounds already closed before this run started do not count for --rounds.
                start_closed = n - 1 if rec.get("status") != "closed" else n
                start_closed = max(start_closed, 0)
                seen_closed |= set(range(1, start_closed + 1))
            phase = "DONE" if rec.get("status") == "closed" else str(rec.get("phase"))
            if n and (n, phase) != last:
                # a round may have closed between two polls: report it from rounds/<n>
                if last[0] and last[0] != n and last[0] not in seen_closed:
                    self._report_closed(self.rpc.query_json(f"rounds/{last[0]}"))
                    seen_closed.add(last[0])
                if phase != "DONE":
                    self._report_phase(rec)
                last = (n, phase)
            if n and phase == "DONE" and n not in seen_closed:
                self._report_closed(rec)
                seen_closed.add(n)
            done = len(seen_closed) - (start_closed or 0)
            if self.cfg.rounds is not None and done >= self.cfg.rounds:
                self.say(f"{done} round(s) done; stopping (--rounds {self.cfg.rounds})")
                break
            self.stop_event.wait(0.5)
        return 0

    def _report_phase(self, rec: dict[str, Any]) -> None:
        n, phase = rec["round"], rec.get("phase")
        ends = {"TRAIN": "train_end_ns", "REVEAL": "reveal_end_ns", "VERIFY": "verify_end_ns"}
        left = (int(rec.get(ends.get(str(phase), ""), 0) or 0) - time.time_ns()) / 1e9
        extra = ""
        if phase == "TRAIN":
            extra = f", task {rec['task_id']}, seed {str(rec.get('seed'))[:16]}…"
        elif phase == "REVEAL":
            extra = f", {len(rec.get('commitments') or [])} commitment(s)"
        elif phase == "VERIFY":
            extra = f", {len(rec.get('revealed') or [])} reveal(s)"
        self.say(f"round {n}: phase {phase} (~{max(0.0, left):.0f}s){extra}")

    def _report_closed(self, rec: dict[str, Any]) -> None:
        n = int(rec["round"])
        w = rec.get("winner")
        if w:
            self.say(f"round {n}: winner: {w['miner']} ({self.name_of(w['miner'])}) "
                     f"score {int(w.get('verified_score_ppm') or w.get('claimed_score_ppm') or 0)/PPM:.4f}, "
                     f"task reward {w.get('task_reward')}, block reward "
                     f"{w.get('block_reward_miner')} miner / {w.get('block_reward_publisher')} publisher")
            self._copy_winner_model(n, w)
        else:
            self.say(f"round {n}: closed without a winner (outcome {rec.get('outcome')})")
        balances = []
        for addr, name in sorted(self.names.items(), key=lambda kv: kv[1]):
            try:
                bal = self.rpc.query_json(f"accounts/{addr}").get("balance", 0)
            except Exception:  # noqa: BLE001
                bal = "?"
            balances.append(f"{name}={bal}")
        self.say(f"round {n}: balances: {', '.join(balances)}")
        self.rounds_closed.append(rec)
        for h in self.history:
            if h["round"] == n:
                h["winner"] = w is not None and self.name_of(w["miner"]) == h["miner"]
        self._save_history()
        if self.cfg.plots:
            try:
                paths = write_plots(self.history, self.out / "plots")
                self.say(f"round {n}: plots {', '.join(str(p) for p in paths)}")
            except Exception as exc:  # noqa: BLE001 - a plot must never stop the chain
                self.say(f"round {n}: could not write plots: {exc}")

    def _copy_winner_model(self, n: int, w: dict[str, Any]) -> None:
        """Copy the winner's model to OUT/models/ if its digest is the one settled on chain.

        The path comes from the miner's own round record (its files stay private until reveal
        and are then published under an unguessable name, see training/sidecars/miner.py), never from
        a guessed layout.
        """
        from training.artifacts import sha256_file

        name = self.name_of(w["miner"])
        miner = self.sidecars.get(name)
        src = miner.model_path(n) if miner is not None and hasattr(miner, "model_path") else None
        if src is None or sha256_file(src) != w.get("model_digest"):
            return
        dst = self.out / "models" / f"round-{n}-winner-{name}.safetensors"
        dst.parent.mkdir(exist_ok=True)
        shutil.copyfile(src, dst)

    def _load_history(self) -> None:
        path = self.out / "history.json"
        if path.exists():
            with contextlib.suppress(OSError, ValueError):
                self.history = list(json.loads(path.read_text()))

    def _save_history(self) -> None:
        path = self.out / "history.json"
        tmp = path.with_suffix(".tmp")
        with self._print_lock:
            tmp.write_text(json.dumps(self.history, indent=2, sort_keys=True))
        tmp.replace(path)

    def stop(self) -> None:
        self.stop_event.set()

    def shutdown(self) -> None:
        """Sidecars first (no tx in flight to a dying node), then node, then app."""
        for sc in self.sidecars.values():
            sc.listeners.clear()
            sc.stop()
        for t in self.threads:
            t.join(timeout=30)
        if self.chain is not None:
            self.chain.stop()  # closes its RPC client, self.rpc
        for f in self._log_files:
            with contextlib.suppress(OSError):
                f.close()
        self._log_files.clear()


# ------------------------------------------------------------------------------------ plots


def write_plots(history: list[dict[str, Any]], out: Path) -> list[Path]:
    """Dice per round per miner (claimed and verified) and watermark confidence per round."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    out.mkdir(parents=True, exist_ok=True)
    miners = sorted({h["miner"] for h in history})
    rounds = [int(h["round"]) for h in history] or [1]

    def finish(fig: Any, ax: Any, name: str) -> Path:
        # Whole rounds only, with half a round of margin: one round alone still reads "1".
        ax.set_xlim(min(rounds) - 0.5, max(rounds) + 0.5)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / name, dpi=100)
        plt.close(fig)
        return out / name

    fig, ax = plt.subplots(figsize=(6, 4))
    for m in miners:
        rows = sorted((h for h in history if h["miner"] == m), key=lambda h: h["round"])
        xs = [h["round"] for h in rows if "claimed_ppm" in h]
        ax.plot(xs, [h["claimed_ppm"] / PPM for h in rows if "claimed_ppm" in h], "o--",
                label=f"{m} claimed")
        xs = [h["round"] for h in rows if "measured_ppm" in h]
        ax.plot(xs, [h["measured_ppm"] / PPM for h in rows if "measured_ppm" in h], "s-",
                label=f"{m} verified")
    ax.set_xlabel("round")
    ax.set_ylabel("Dice on the revealed test set")
    ax.set_title("DLBC devnet: Dice per round")
    ax.set_ylim(-0.02, 1.02)
    paths = [finish(fig, ax, "dice.png")]
    fig, ax = plt.subplots(figsize=(6, 4))
    for m in miners:
        rows = sorted((h for h in history if h["miner"] == m), key=lambda h: h["round"])
        # the validator's measurement when there is one, else the miner's own
        pts = [(int(h["round"]), float(c)) for h in rows
               if (c := h.get("verifier_confidence", h.get("watermark_confidence"))) is not None]
        ax.plot([r for r, _ in pts], [c for _, c in pts], "o-", label=m)
    ax.axhline(0.9999, color="grey", linestyle=":", label="threshold 0.9999")
    ax.set_xlabel("round")
    ax.set_ylabel("min watermark bit confidence")
    ax.set_title("DLBC devnet: watermark confidence")
    ax.set_ylim(0, 1.02)
    paths.append(finish(fig, ax, "watermark.png"))
    return paths


# ------------------------------------------------------------------------------------ CLI


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "devnet",
        help="run a local DLBC chain: app, dev node, publisher, 2 miners, verifier",
        description=(
            "Bring up a complete DLBC chain on this machine with the embedded dev node (a "
            "development stand-in for CometBFT). Prints each round as it happens; Ctrl-C stops "
            "everything; running again with the same --out resumes."),
    )
    p.add_argument("--out", type=Path, default=Path("dlbc-devnet"),
                   help="output folder for chain state, models, logs and plots (default: %(default)s)")
    p.add_argument("--rounds", type=int, default=None, help="stop after N rounds (default: run on)")
    p.add_argument("--base-port", type=int, default=26657,
                   help="RPC port; app uses +1, artifact servers +10.. (default: %(default)s)")
    p.add_argument("--block-time", type=float, default=1.0, help="seconds per block")
    p.add_argument("--train-seconds", type=int, default=60, help="TRAIN phase length")
    p.add_argument("--reveal-seconds", type=int, default=12, help="REVEAL phase length")
    p.add_argument("--verify-seconds", type=int, default=30, help="VERIFY phase length")
    p.add_argument("--samples", type=int, default=96, help="demo images per task")
    p.add_argument("--small-budget", type=float, default=5.0,
                   help="miner-2's training seconds per round (miner-1 uses all of TRAIN)")
    p.add_argument("--log-level", default="info",
                   choices=("debug", "info", "warning", "error", "critical"))
    p.add_argument("--no-plots", action="store_true", help="skip the PNGs")
    p.add_argument("--metrics", action="store_true",
                   help="serve Prometheus metrics per sidecar on base-port+20..+29")
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    if args.rounds is not None and args.rounds < 1:
        print("devnet: --rounds must be >= 1", file=sys.stderr)
        return 2
    cfg = DevnetConfig(
        out=args.out, base_port=args.base_port, rounds=args.rounds, block_time=args.block_time,
        train_seconds=args.train_seconds, reveal_seconds=args.reveal_seconds,
        verify_seconds=args.verify_seconds, samples=args.samples, log_level=args.log_level,
        plots=not args.no_plots, metrics=args.metrics,
        miners=[MinerSpec("miner-1", None), MinerSpec("miner-2", args.small_budget)],
    )
    net = Devnet(cfg)
    try:
        net.start()
    except LaunchError as exc:
        print(f"devnet: {exc}", file=sys.stderr)
        return 1
    previous = signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, lambda *_: net.stop())
    code = 0
    try:
        code = net.run()
    except KeyboardInterrupt:
        net.say("Ctrl-C: stopping sidecars, node and app")
        code = 130
    except LaunchError as exc:
        print(f"devnet: {exc}", file=sys.stderr)
        code = 1
    finally:
        net.shutdown()
        signal.signal(signal.SIGTERM, previous)
    net.say(f"stopped; state kept in {cfg.out} (run again to resume)")
    return code

