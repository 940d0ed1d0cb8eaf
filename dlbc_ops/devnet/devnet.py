"""`Devnet`: start, watch and stop a whole DLBC chain on this machine (issue 7, main job).

What runs (docs/processes.md), all under one output folder OUT:

    python -m abci_app         the DLBC state machine (subprocess, LMDB under OUT/app)
    dlbc node                  the embedded DEVELOPMENT STAND-IN for CometBFT (subprocess,
                               single validator, BFT time, vote extensions on; OUT/node)
    publisher                  submits demo segmentation tasks, releases keys (thread)
    miner-1, miner-2           train with watermarks under different budgets (threads)
    verifier                   checks revealed models, writes verdicts for ExtendVote (thread)
    faucet                     an account funded in genesis; `--fund ADDR=N` pays from it
                               on every start (`faucet`)

App and node are `dlbc_ops.devnode.launch.LocalChain` (the project's one launcher, on
`dlbc_ops.supervisor`); the sidecars are `dlbc_ops.devnet.sidecars`. The main loop polls the
active rounds (`rounds/active`: with pipelined rounds, the default, one round trains while the
one before it reveals or verifies and the next is ANNOUNCED; `watch`), narrates each phase
change (`narration`), and after every closed round, in order, prints the winner and balances,
copies the winner's model to OUT/models/, saves OUT/history.json, redraws
OUT/plots/{dice,watermark}.png (`plots`) and queues the round's learning curves (`curves`: a
background thread scores each revealing miner's checkpoints and redraws
OUT/plots/learning_curves.png). Models stay in OUT/miner-*/rounds/<n>/ (private until
revealed, then served from OUT/miner-*/artifacts/<token>/).

Shutdown stops the sidecars, then the node, then the app; a second run with the same OUT resumes
from the saved chain state (app LMDB + node block store) with the chain's own params: genesis is
never rewritten, so `--sequential` (rounds_in_flight=1) only takes effect on a fresh OUT. Bad
input (a port in use, an unwritable folder) is reported before anything is started. The
end-to-end test drives this very class.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import threading
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from dlbc_ops.devnet import faucet
from dlbc_ops.devnet.config import DevnetConfig, check_out_dir, check_ports
from dlbc_ops.devnet.curves import CurveJob, CurveWorker, MinerWork
from dlbc_ops.devnet.history import History
from dlbc_ops.devnet.narration import Narrator, describe_schedule
from dlbc_ops.devnet.plots import write_plots
from dlbc_ops.devnet.sidecars import build_sidecars, start_threads
from dlbc_ops.devnet.watch import RoundTracker
from dlbc_ops.devnode.launch import LocalChain
from dlbc_ops.localnet import demo
from dlbc_ops.supervisor import LaunchError

if TYPE_CHECKING:
    from abci_app.keyfile import KeyPair
    from training.sidecars.base import Sidecar
    from training.sidecars.rpc_client import RpcClient

log = logging.getLogger("dlbc.devnet")

CURVES_DRAIN_SECONDS = 120.0
"""With --rounds N, how long the devnet waits for the last round's learning curves."""


class Devnet:
    """Start/stop the whole devnet; `run()` blocks until `rounds` closed or `stop()`."""

    def __init__(self, cfg: DevnetConfig) -> None:
        self.cfg = cfg
        self.out = cfg.out
        self.chain: LocalChain | None = None
        self.sidecars: dict[str, Sidecar] = {}
        self.threads: list[threading.Thread] = []
        self.stop_event = threading.Event()
        self.history = History(self.out / "history.json")
        self.narrator = Narrator(cfg.stream, self.history)
        self.say = self.narrator.say
        self.rpc: RpcClient | None = None
        self.faucet: KeyPair | None = None
        self.rounds_closed: list[dict[str, Any]] = []
        """The record (`rounds/<n>`) of every round closed in this run, in order."""
        self.tracker = RoundTracker()
        self.curves = CurveWorker(self.history, self.out / "plots", self.out / "curves", self.say)
        self._work: dict[tuple[int, str], MinerWork] = {}
        """(round, miner name) -> its checkpoints, from the `committed` events."""
        self.failure: str | None = None
        self._log_files: list[IO[str]] = []

    # -- lifecycle

    def start(self) -> None:
        """Check everything, then start app, node and sidecars. Cleans up on any failure."""
        check_out_dir(self.out)
        check_ports(self.cfg)
        self._setup_logging()
        self.history.load()
        try:
            keys = self._keys()
            tap = self.faucet = self._faucet()
            self._start_chain(keys, tap)
            if self.cfg.funds:
                faucet.pay(self.cfg.rpc_url, tap, self.cfg.funds, self.say)
            self.sidecars = build_sidecars(self.cfg, keys)
            self.threads = start_threads(self.sidecars, self.cfg, self._on_event,
                                         self.say, self._sidecar_stopped)
        except BaseException:
            self.shutdown()
            raise

    def _setup_logging(self) -> None:
        from abci_app.logs import quiet_http_logs, setup_logging

        logs = self.out / "logs"
        logs.mkdir(exist_ok=True)
        f = open(logs / "devnet.log", "a", buffering=1)  # noqa: SIM115 - closed in shutdown
        self._log_files.append(f)
        setup_logging(self.cfg.log_level, stream=f)
        quiet_http_logs()

    def _keys(self) -> demo.DemoKeys:
        """OUT/keys/<name>.json, made on the first run (the layout of `dlbc localnet --demo`)."""
        keys = demo.load_or_generate_keys(self.out, [m.name for m in self.cfg.miners])
        keys.save_new()
        for name, key in keys.keys.items():
            self.narrator.names[key.address.hex()] = name
        return keys

    def _faucet(self) -> KeyPair:
        """OUT/keys/faucet.json, made (and funded in genesis) on the first run."""
        key, _ = faucet.load_or_create(self.out)
        self.narrator.names[key.address.hex()] = faucet.FAUCET
        return key

    def _start_chain(self, keys: demo.DemoKeys, tap: KeyPair) -> None:
        cfg = self.cfg
        self.chain = LocalChain(self.out, rpc_port=cfg.rpc_port, app_port=cfg.app_port,
                                block_time=cfg.block_time, log_level=cfg.log_level)
        balances = {key.address.hex(): cfg.miner_balance for key in keys.miners}
        balances[keys.publisher.address.hex()] = cfg.publisher_balance
        balances[tap.address.hex()] = cfg.faucet_balance
        resumed = self.chain.write_genesis(cfg.chain_id, cfg.phase_params(), balances)
        self.say(f"starting the DLBC app (ABCI on 127.0.0.1:{cfg.app_port}, home {self.out/'app'})"
                 + (" — resuming saved state" if resumed else ""))
        if resumed and cfg.sequential:
            self.say("--sequential is ignored: a resumed chain keeps its genesis params "
                     "(use a fresh --out for sequential rounds)")
        self.chain.start_app()
        self.say("starting the embedded dev node — a DEVELOPMENT STAND-IN for CometBFT "
                 "(single validator, BFT time, vote extensions on)")
        self.chain.start_node()
        self.rpc = self.chain.rpc
        assert self.rpc is not None  # start_node(ready=True) made it
        self.say(f"chain {self.rpc.chain_id()} at height {self.rpc.latest_height()}; "
                 f"RPC {cfg.rpc_url}")
        self.say(describe_schedule(self.rpc.query_json("params")))

    def stop(self) -> None:
        self.stop_event.set()

    def _sidecar_stopped(self, name: str, exc: BaseException) -> None:
        """A sidecar's loop ended by an exception: say so and stop the devnet (exit 1)."""
        self.failure = f"{name} stopped: {exc}"
        self.say(f"{self.failure}; stopping the devnet (details in {self.out / 'logs'})")
        self.stop()

    def shutdown(self) -> None:
        """Sidecars first (no tx in flight to a dying node), then node, then app; the curve
        worker ends after the miner it is scoring."""
        self.curves.close()
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

    # -- main loop

    def run(self) -> int:
        """Watch the chain and narrate until `rounds` rounds closed or `stop()`."""
        assert self.rpc is not None, "start() first"
        while not self.stop_event.is_set():
            try:
                if self.chain is not None:
                    self.chain.check_alive()
                seen = self.tracker.observe(*self._poll())
                for rec in seen.phases:
                    self.narrator.phase(rec, seen.active)
                for n in seen.closed:  # oldest first; a failed query is retried next poll
                    self._report_closed(self.rpc.query_json(f"rounds/{n}"))
                    self.tracker.reported(n)
            except LaunchError:  # app or node died
                raise
            except Exception as exc:  # noqa: BLE001 - the node may be busy; try again
                log.warning("round query failed: %s", exc)
                self.stop_event.wait(0.5)
                continue
            done = self.tracker.closed_count
            if self.cfg.rounds is not None and done >= self.cfg.rounds:
                self.say(f"{done} round(s) done; stopping (--rounds {self.cfg.rounds})")
                if self.cfg.plots and not self.curves.drain(CURVES_DRAIN_SECONDS):
                    self.say("learning curves still running; left unfinished")
                break
            self.stop_event.wait(0.5)
        return 1 if self.failure else 0

    def _poll(self) -> tuple[list[dict[str, Any]], int]:
        """The active rounds, oldest first, and (only when none is active) the newest round."""
        assert self.rpc is not None
        active = list(self.rpc.query_json("rounds/active").get("rounds") or [])
        newest = 0 if active else int(self.rpc.query_json("round").get("round") or 0)
        return active, newest

    def _report_closed(self, rec: dict[str, Any]) -> None:
        n = int(rec["round"])
        w = rec.get("winner")
        self.narrator.outcome(n, rec)
        if w:
            self._copy_winner_model(n, w)
        self.narrator.balances(n, self._balances())
        self.rounds_closed.append(rec)
        self.history.mark_winner(n, self.narrator.name_of(w["miner"]) if w else None)
        self.history.save()
        if self.cfg.plots:
            try:
                paths = write_plots(self.history.snapshot(), self.out / "plots")
                self.say(f"round {n}: plots {', '.join(str(p) for p in paths)}")
            except Exception as exc:  # noqa: BLE001 - a plot must never stop the chain
                self.say(f"round {n}: could not write plots: {exc}")
            self._queue_curves(n, rec)

    # -- learning curves

    def _on_event(self, event: str, f: dict[str, Any]) -> None:
        """Every sidecar event goes to the narrator; a commit also leaves its checkpoints here,
        for the round's learning curves once it closes."""
        self.narrator.on_event(event, f)
        if event == "committed" and f.get("checkpoint_dir") and f.get("epoch_elapsed"):
            name = self.narrator.name_of(f.get("miner"))
            self._work[(int(f["round"]), name)] = MinerWork(
                name, Path(f["checkpoint_dir"]), tuple(float(x) for x in f["epoch_elapsed"]))

    def _queue_curves(self, n: int, rec: dict[str, Any]) -> None:
        """The curves of round `n`'s revealing miners, to the background worker."""
        from abci_app.dlbc.records import Task

        revealed = {self.narrator.name_of(r.get("miner")) for r in rec.get("revealed") or []}
        work = tuple(w for (r, name), w in sorted(self._work.items())
                     if r == n and name in revealed)
        for key in [k for k in self._work if k[0] <= n]:
            del self._work[key]
        if not work or self.rpc is None:
            return
        try:
            task = Task.from_json(self.rpc.query_json(f"tasks/{rec['task_id']}"))
        except Exception as exc:  # noqa: BLE001 - a plot must never stop the chain
            self.say(f"round {n}: no learning curves (task {rec.get('task_id')}: {exc})")
            return
        self.curves.submit(CurveJob(n, task, work))

    def _balances(self) -> dict[str, Any]:
        """Each named account's balance, by name ("?" when the query failed)."""
        assert self.rpc is not None
        out: dict[str, Any] = {}
        for addr, name in sorted(self.narrator.names.items(), key=lambda kv: kv[1]):
            try:
                out[name] = self.rpc.query_json(f"accounts/{addr}").get("balance", 0)
            except Exception:  # noqa: BLE001
                out[name] = "?"
        return out

    def _copy_winner_model(self, n: int, w: dict[str, Any]) -> None:
        """Copy the winner's model to OUT/models/ if its digest is the one settled on chain.

        The path comes from the miner's own round record (its files stay private until reveal
        and are then published under an unguessable name, see training/sidecars/miner.py),
        never from a guessed layout.
        """
        from training.artifacts import sha256_file
        from training.sidecars.miner import Miner

        name = self.narrator.name_of(w["miner"])
        miner = self.sidecars.get(name)
        src = miner.model_path(n) if isinstance(miner, Miner) else None
        if src is None or sha256_file(src) != w.get("model_digest"):
            return
        dst = self.out / "models" / f"round-{n}-winner-{name}.safetensors"
        dst.parent.mkdir(exist_ok=True)
        shutil.copyfile(src, dst)
