"""Shared loop for the publisher, miner and verifier sidecars (docs/processes.md, issue 6).

Every sidecar is the same shape: poll the chain's active rounds (`rounds/active`: with pipelined
rounds one trains while the one before it reveals or verifies, docs/rounds.md), notice when a
round or its phase changes, act at most once per (round, phase), and keep going whatever goes
wrong. Keeping that skeleton in one place means the three roles only write their `on_round`
logic, and the failure policy (issue 6 "Bad input": logged, counted, the process keeps going)
is enforced once:

* node never reached since start → retried for `node_wait_seconds`, then `NodeUnreachable` ends
  `run()` (a wrong `--rpc` is a typo, not an outage: issue 13);
* node reached once, then unreachable → `errors_total{kind="node_unreachable"}`, wait, retry;
* a tx refused by CheckTx/FinalizeBlock → `TxRejected` with the app's code and log;
* a role that cannot go on (`SidecarStopped`, e.g. the publisher's task was refused) → logged
  and re-raised: the process stops loudly instead of idling forever;
* any other exception inside a role's step → logged with its traceback, counted as
  `kind="step"`, and the loop carries on with the next poll; one round's failing step does not
  keep the other active round's step from running in the same poll.

The chain's query paths and tx sending live in `chain_client`, the watermark scheme in `scheme`;
both are re-exported here for the roles.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from google.protobuf.message import Message

from abci_app.dlbc.records import Phase, RoundInfo
from abci_app.keyfile import KeyPair
from abci_app.rfc3339 import NS_PER_S
from training.sidecars.chain_client import ChainClient, TxRejected, address_hex
from training.sidecars.metrics_server import Metrics, MetricsServer, sidecar_metrics
from training.sidecars.rpc_client import Backoff, RpcClient
from training.sidecars.rpc_types import CommitResult, NodeUnreachable, RpcError
from training.sidecars.scheme import WATERMARK_PARAMS, WatermarkParamsError, WatermarkScheme
from training.sidecars.subscription import BlockSignal

__all__ = [
    "WATERMARK_PARAMS",
    "ChainClient",
    "Sidecar",
    "SidecarConfig",
    "SidecarStopped",
    "TxRejected",
    "WatermarkParamsError",
    "WatermarkScheme",
    "address_hex",
    "round_phase",
    "seconds_left",
    "training_first",
]


class SidecarStopped(RuntimeError):
    """A role cannot usefully go on (its task was refused, ...): `run()` re-raises it."""


@dataclass
class SidecarConfig:
    """What every sidecar needs; role configs embed this one."""

    rpc_url: str = "http://127.0.0.1:26657"
    """CometBFT RPC of the node this sidecar talks to (real node or `dlbc node`)."""
    workdir: Path = field(default_factory=lambda: Path("dlbc-sidecar"))
    """Where the sidecar keeps its files (data, models, served artifacts)."""
    poll_seconds: float = 0.5
    """How often the active rounds are polled; below the block time buys nothing."""
    metrics_host: str = "127.0.0.1"
    metrics_port: int | None = None
    """Prometheus endpoint port (0 = any free port, None = no endpoint)."""
    max_rounds: int | None = None
    """Stop once this many rounds were seen closed (tests, `dlbc devnet --rounds`); only
    rounds seen active by this process count, and a role may narrow them (`counts_round`)."""
    rpc_timeout: float = 10.0
    node_wait_seconds: float | None = 30.0
    """How long `run()` waits for a node it has never reached before it raises
    `NodeUnreachable` (None: forever). Once reached, an outage is retried without end."""
    allow_private_networks: bool = False
    """Fetch data/models from loopback, private, link-local and metadata addresses too.

    Off by default: URIs come from other accounts, and a validator that fetches whatever a
    miner names is a port scanner and request forger for its own network (issue 13). Set by
    `dlbc devnet` and `dlbc localnet`, whose artifact servers all listen on 127.0.0.1."""



def round_phase(info: RoundInfo | None) -> Phase:
    """The phase a sidecar acts on: DONE once the round is closed, IDLE with no round; an
    active round's own phase otherwise (ANNOUNCED, TRAIN, REVEAL or VERIFY)."""
    if info is None:
        return Phase.IDLE
    if not info.record.is_active:
        return Phase.DONE
    return info.record.phase


def training_first(infos: list[RoundInfo]) -> list[RoundInfo]:
    """The round in TRAIN first, then the others oldest first.

    Why: with pipelined rounds the publisher's `ReleaseTrainKey` for the round that just began
    training and its `RevealTestSet` for the round before it fall due in the same poll, and so
    do the miner's start of training and its reveal. Each tx waits for its block, and the
    training round's waits cost GPU time while the reveal has all of REVEAL; so the training
    round goes first."""
    return sorted(infos, key=lambda i: (i.record.phase is not Phase.TRAIN, i.record.round))


def seconds_left(end_ns: int, now_ns: int | None = None) -> float:
    """Wall-clock seconds until the phase deadline `end_ns` (BFT ns ≈ wall clock:
    docs/rounds.md)."""
    now = time.time_ns() if now_ns is None else now_ns
    return (end_ns - now) / NS_PER_S


class Sidecar:
    """Base class: the poll loop, failure policy, metrics and round bookkeeping."""

    role = "sidecar"

    def __init__(
        self,
        cfg: SidecarConfig,
        *,
        key: KeyPair | None = None,
        rpc: RpcClient | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.cfg = cfg
        self.key = key
        self.rpc = rpc or RpcClient(cfg.rpc_url, timeout=cfg.rpc_timeout)
        self.chain = ChainClient(self.rpc, key)
        self.metrics = metrics or sidecar_metrics(self.role)
        self.log = logging.getLogger(f"dlbc.{self.role}")
        self.stop_event = threading.Event()
        self._metrics_server: MetricsServer | None = None
        self._blocks: BlockSignal | None = None
        self._woken = threading.Event()
        """Ends `wait_for_block` early without a NewBlock subscription (`wake`)."""
        self._seen_rounds: set[int] = set()
        self._closed_rounds: set[int] = set()
        self._active_rounds: set[int] = set()
        """Rounds this process saw before they closed: only those can count as played."""
        self._counted_rounds: set[int] = set()
        self._done: set[tuple[int, str]] = set()
        self.listeners: list[Callable[[str, dict[str, Any]], None]] = []

    # -- hooks for subclasses

    def setup(self) -> None:
        """Once, before the loop (register a miner, submit a task, ...). Retried on failure."""

    def on_round(self, info: RoundInfo) -> None:
        """Called every poll with each active round, in `order_rounds` order (phase may repeat;
        ANNOUNCED included: a role with nothing to do before TRAIN ignores it)."""

    def on_round_closed(self, info: RoundInfo) -> None:
        """Called once when a round is seen closed (winner known or outcome set)."""

    def teardown(self) -> None:
        """Once, when the loop ends."""

    def order_rounds(self, infos: list[RoundInfo]) -> list[RoundInfo]:
        """The order in which one poll hands the active rounds to `on_round`: oldest first.
        A role whose step for one round can wait on another overrides it (`training_first`)."""
        return infos

    def counts_round(self, info: RoundInfo) -> bool:
        """Whether closed round `info` counts toward `max_rounds` (the publisher: its own
        tasks' rounds only). Rounds already closed when first seen never count."""
        return True

    # -- helpers for subclasses

    def once(self, rnd: int, step: str) -> bool:
        """True the first time (round, step) is asked: each action happens once per round."""
        if (rnd, step) in self._done:
            return False
        self._done.add((rnd, step))
        return True

    def count_error(self, kind: str, message: str, *args: object) -> None:
        self.metrics.inc("errors_total", kind=kind)
        self.log.warning(message, *args)

    def emit(self, event: str, **fields: Any) -> None:
        """Tell listeners (the devnet's printer) what happened; never lets them break the loop."""
        for fn in list(self.listeners):
            try:
                fn(event, {"role": self.role, **fields})
            except Exception:
                self.log.exception("listener failed on %s", event)

    def send(self, msg: Message, what: str) -> CommitResult | None:
        """Send a tx; on rejection log + count and return None (the caller decides what next)."""
        try:
            res = self.chain.send(msg, what)
        except TxRejected as exc:
            self.count_error("tx_rejected", "%s", exc)
            return None
        self.metrics.inc("txs_total", type=what)
        self.log.info("%s accepted at height %d", what, res.height)
        return res

    # -- the loop

    def start_metrics(self) -> None:
        if self.cfg.metrics_port is not None and self._metrics_server is None:
            self._metrics_server = MetricsServer(
                self.metrics, self.cfg.metrics_host, self.cfg.metrics_port
            ).start()
            self.log.info("metrics on %s", self._metrics_server.url)

    @property
    def metrics_url(self) -> str | None:
        return self._metrics_server.url if self._metrics_server else None

    def stop(self) -> None:
        self.stop_event.set()
        self.wake()

    def wake(self) -> None:
        """End the loop's current wait now: the next poll happens at once (stopping, or a
        background worker finished something the loop must act on, such as a model to
        commit)."""
        self._woken.set()
        if self._blocks is not None:
            self._blocks.wake()

    @property
    def rounds_closed(self) -> int:
        """Closed rounds that count toward `max_rounds` (seen active, and `counts_round`)."""
        return len(self._counted_rounds)

    def run(self) -> int:
        """Poll until stopped or `max_rounds` closed rounds were seen. Returns an exit code.

        Raises `NodeUnreachable` when no node answered within `node_wait_seconds` of the start,
        and `SidecarStopped` when the role gave up; teardown runs either way."""
        self.cfg.workdir.mkdir(parents=True, exist_ok=True)
        self.start_metrics()
        try:
            self.await_node()
            self._blocks = BlockSignal(self.rpc.websocket_url()).start()
            self._loop()
        finally:
            if self._blocks is not None:
                self._blocks.close()
                self._blocks = None
            try:
                self.teardown()
            finally:
                if self._metrics_server is not None:
                    self._metrics_server.stop()
                    self._metrics_server = None
        return 0

    def await_node(self) -> None:
        """Until the node answers `status` once; `NodeUnreachable` after `node_wait_seconds`.

        Why bounded only here: a node that never answered since start is most likely a wrong
        `--rpc`, and retrying it forever hides the typo; a node that answered once and then
        went away is an outage, which the loop rides out (issue 13)."""
        limit = self.cfg.node_wait_seconds
        deadline = None if limit is None else time.monotonic() + limit
        tries = 0
        while not self.stop_event.is_set():
            try:
                self.rpc.call("status", backoff=Backoff(attempts=1))
                return
            except RpcError as exc:  # NodeUnreachable, or an answer that is not CometBFT's
                tries += 1
                self.metrics.inc("errors_total", kind="node_unreachable")
                if tries == 1 or tries % 10 == 0:  # one line, then every ~10 s: not one a second
                    self.log.warning("no node at %s yet (try %d%s): %s", self.rpc.url, tries,
                                     "" if limit is None else f", giving up after {limit:g} s",
                                     exc)
                if deadline is not None and time.monotonic() >= deadline:
                    raise NodeUnreachable(
                        f"no CometBFT RPC answered at {self.rpc.url} within {limit:g} s "
                        f"(last error: {exc})") from None
            pause = max(self.cfg.poll_seconds, 1.0)
            if deadline is not None:
                pause = min(pause, max(0.05, deadline - time.monotonic()))
            self.stop_event.wait(pause)

    def _loop(self) -> None:
        set_up = False
        while not self.stop_event.is_set():
            try:
                if not set_up:
                    self.setup()
                    set_up = True
                self.tick()
            except SidecarStopped as exc:
                self.metrics.inc("errors_total", kind="stopped")
                self.log.error("%s stops: %s", self.role, exc)
                raise
            except Exception as exc:  # noqa: BLE001 - the failure policy: logged, counted
                self._count_failure(exc)
            if self.cfg.max_rounds is not None and self.rounds_closed >= self.cfg.max_rounds:
                self.log.info("saw %d closed round(s); stopping", self.rounds_closed)
                break
            self.wait_for_block()

    def _count_failure(self, exc: Exception) -> None:
        """The failure policy of one step (module docstring): log, count by kind, go on."""
        if isinstance(exc, NodeUnreachable):
            self.count_error("node_unreachable", "node unreachable: %s", exc)
        elif isinstance(exc, RpcError):
            self.count_error("rpc", "RPC error: %s", exc)
        else:
            self.metrics.inc("errors_total", kind="step")
            self.log.error("%s step failed; continuing", self.role, exc_info=exc)

    def wait_for_block(self) -> None:
        """Until the next block or `poll_seconds`, whichever is first (or until `stop()`).

        The round only changes when a block commits, so the NewBlock wake-up lets a sidecar
        act within milliseconds of it; the poll interval bounds the wait when events are lost
        or the node has no `/websocket`."""
        if self._blocks is None:
            self._woken.wait(self.cfg.poll_seconds)
            self._woken.clear()
        else:
            self._blocks.wait(self.cfg.poll_seconds)

    def tick(self) -> None:
        """One poll: read every active round, close the ones that ended since the last poll,
        then hand each active one to the role, oldest first.

        Why every active round and not only the newest: with pipelined rounds (docs/rounds.md)
        round n reveals and verifies while round n+1 trains and round n+2 may be ANNOUNCED; a
        sequential chain simply answers one round. A round that was seen and is no longer
        active closed between two polls (possibly while a newer one started): its record is
        read once by number to learn how (`rounds/<n>`)."""
        infos = self.chain.active_rounds()
        active = {info.record.round for info in infos}
        for n in sorted(active - self._seen_rounds):
            self._seen_rounds.add(n)
            self.metrics.inc("rounds_seen_total")
        if infos:
            self.metrics.set("current_round", infos[-1].record.round)
        for prev in sorted(self._seen_rounds - self._closed_rounds - active):
            old = self.chain.round_record(prev)
            if old is not None and round_phase(old) is Phase.DONE:
                self._close(old)
        first: Exception | None = None
        for info in self.order_rounds(infos):
            self._active_rounds.add(info.record.round)
            try:
                self.on_round(info)
            except SidecarStopped:
                raise
            except Exception as exc:  # noqa: BLE001 - one round's failure must not starve the other's
                if first is None:
                    first = exc
                else:
                    self._count_failure(exc)
        if first is not None:
            raise first

    def _close(self, info: RoundInfo) -> None:
        n = info.record.round
        self._closed_rounds.add(n)
        if n in self._active_rounds and self.counts_round(info):
            self._counted_rounds.add(n)
        winner = info.record.winner
        if self.key is not None and winner is not None and winner.miner == self.key.address:
            self.metrics.inc("wins_total")
        self.on_round_closed(info)
