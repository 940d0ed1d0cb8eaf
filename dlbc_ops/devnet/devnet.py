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
round, narrates each phase change (`narration`), and after every closed round prints the winner
and balances, copies the winner's model to OUT/models/, saves OUT/history.json and redraws
OUT/plots/{dice,watermark}.png (`plots`). Models stay in OUT/miner-*/rounds/<n>/ (private until
revealed, then served from OUT/miner-*/artifacts/<token>/).

Shutdown stops the sidecars, then the node, then the app; a second run with the same OUT resumes
from the saved chain state (app LMDB + node block store). Bad input (a port in use, an
unwritable folder) is reported before anything is started. The end-to-end test drives this
very class.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import threading
from typing import IO, TYPE_CHECKING, Any

from abci_app.dlbc.records import Phase
from dlbc_ops.devnet import faucet
from dlbc_ops.devnet.config import DevnetConfig, check_out_dir, check_ports
from dlbc_ops.devnet.history import History
from dlbc_ops.devnet.narration import Narrator
from dlbc_ops.devnet.plots import write_plots
from dlbc_ops.devnet.sidecars import build_sidecars, start_threads
from dlbc_ops.devnode.launch import LocalChain
from dlbc_ops.localnet import demo
from dlbc_ops.supervisor import LaunchError

if TYPE_CHECKING:
    from abci_app.keyfile import KeyPair
    from training.sidecars.base import Sidecar
    from training.sidecars.rpc_client import RpcClient

log = logging.getLogger("dlbc.devnet")


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
            self.threads = start_threads(self.sidecars, self.cfg, self.narrator.on_event,
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
        self.chain.start_app()
        self.say("starting the embedded dev node — a DEVELOPMENT STAND-IN for CometBFT "
                 "(single validator, BFT time, vote extensions on)")
        self.chain.start_node()
        self.rpc = self.chain.rpc
        assert self.rpc is not None  # start_node(ready=True) made it
        self.say(f"chain {self.rpc.chain_id()} at height {self.rpc.latest_height()}; "
                 f"RPC {cfg.rpc_url}")

    def stop(self) -> None:
        self.stop_event.set()

    def _sidecar_stopped(self, name: str, exc: BaseException) -> None:
        """A sidecar's loop ended by an exception: say so and stop the devnet (exit 1)."""
        self.failure = f"{name} stopped: {exc}"
        self.say(f"{self.failure}; stopping the devnet (details in {self.out / 'logs'})")
        self.stop()

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

    # -- main loop

    def run(self) -> int:
        """Watch the chain and narrate until `rounds` rounds closed or `stop()`."""
        assert self.rpc is not None, "start() first"
        last: tuple[int, str] = (0, "")
        seen_closed = {int(r["round"]) for r in self.rounds_closed}
        start_closed = None
        while not self.stop_event.is_set():
            try:
                if self.chain is not None:
                    self.chain.check_alive()
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
            phase = Phase.DONE if rec.get("status") == "closed" else str(rec.get("phase"))
            if n and (n, phase) != last:
                # a round may have closed between two polls: report it from rounds/<n>
                if last[0] and last[0] != n and last[0] not in seen_closed:
                    self._report_closed(self.rpc.query_json(f"rounds/{last[0]}"))
                    seen_closed.add(last[0])
                if phase != Phase.DONE:
                    self.narrator.phase(rec)
                last = (n, phase)
            if n and phase == Phase.DONE and n not in seen_closed:
                self._report_closed(rec)
                seen_closed.add(n)
            done = len(seen_closed) - (start_closed or 0)
            if self.cfg.rounds is not None and done >= self.cfg.rounds:
                self.say(f"{done} round(s) done; stopping (--rounds {self.cfg.rounds})")
                break
            self.stop_event.wait(0.5)
        return 1 if self.failure else 0

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
