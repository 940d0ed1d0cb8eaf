"""Shared loop for the publisher, miner and verifier sidecars (docs/processes.md, issue 6).

Every sidecar is the same shape: poll the chain's `round` query, notice when the round or its
phase changes, act at most once per (round, phase), and keep going whatever goes wrong. Keeping
that skeleton in one place means the three roles only write their `on_round` logic, and the
failure policy (issue 6 "Bad input": logged, counted, the process keeps going) is enforced once:

* node unreachable → `errors_total{kind="node_unreachable"}`, wait, retry;
* a tx refused by CheckTx/FinalizeBlock → `TxRejected` with the app's code and log;
* any other exception inside a role's step → logged with its traceback, counted as
  `kind="step"`, and the loop carries on with the next poll.

`ChainClient` is the only place that knows the app's query paths (abci_app/dlbc query.py) and
how to sign and send a DLBC tx (nonce from `accounts/<addr>`, `broadcast_tx_commit` so the next
tx of the same account sees the new nonce).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from google.protobuf.message import Message

from abci_app.dlbc.records import Phase, RoundInfo, Task, is_idle_answer
from abci_app.keyfile import KeyPair
from abci_app.rfc3339 import NS_PER_S
from training.sidecars.metrics_server import Metrics, MetricsServer, sidecar_metrics
from training.sidecars.rpc_client import RpcClient
from training.sidecars.rpc_types import CommitResult, NodeUnreachable, QueryError, RpcError
from training.sidecars.subscription import BlockSignal

if TYPE_CHECKING:  # torch only where a role actually trains or detects
    from torch import nn

    from watermark import WatermarkKey



class TxRejected(RuntimeError):
    """The node refused one of our txs; `code`/`log` are the app's own (abci_app/dlbc/codes.py)."""

    def __init__(self, what: str, code: int, log: str) -> None:
        self.code = code
        self.log = log
        super().__init__(f"{what} rejected with code {code}: {log}")


@dataclass
class SidecarConfig:
    """What every sidecar needs; role configs embed this one."""

    rpc_url: str = "http://127.0.0.1:26657"
    """CometBFT RPC of the node this sidecar talks to (real node or `dlbc node`)."""
    workdir: Path = field(default_factory=lambda: Path("dlbc-sidecar"))
    """Where the sidecar keeps its files (data, models, served artifacts)."""
    poll_seconds: float = 0.5
    """How often the `round` query is polled; below the block time buys nothing."""
    metrics_host: str = "127.0.0.1"
    metrics_port: int | None = None
    """Prometheus endpoint port (0 = any free port, None = no endpoint)."""
    max_rounds: int | None = None
    """Stop once this many rounds were seen closed (tests, `dlbc devnet --rounds`)."""
    rpc_timeout: float = 10.0
    allow_private_networks: bool = False
    """Fetch data/models from loopback, private, link-local and metadata addresses too.

    Off by default: URIs come from other accounts, and a validator that fetches whatever a
    miner names is a port scanner and request forger for its own network (issue 13). Set by
    `dlbc devnet` and `dlbc localnet`, whose artifact servers all listen on 127.0.0.1."""


def address_hex(addr: bytes) -> str:
    return addr.hex()


class ChainClient:
    """The sidecars' view of the chain: DLBC query paths and signed-tx sending."""

    def __init__(self, rpc: RpcClient, key: KeyPair | None = None) -> None:
        self.rpc = rpc
        self.key = key
        self._chain_id: str | None = None

    @property
    def chain_id(self) -> str:
        if self._chain_id is None:
            self._chain_id = self.rpc.chain_id()
        return self._chain_id

    # -- queries (JSON answers of abci_app/dlbc/query.py)

    def query(self, path: str) -> Any:
        return self.rpc.query_json(path)

    def query_optional(self, path: str) -> Any:
        """Like `query`, but a not-found answer (non-zero code) is None instead of an error."""
        try:
            return self.rpc.query_json(path)
        except QueryError:
            return None

    def current_round(self) -> RoundInfo | None:
        """The active (or last) round, None before the first round started."""
        doc = _unwrap(self.query_optional("round"), "round")
        if doc is None or is_idle_answer(doc):
            return None
        return RoundInfo.from_json(doc)

    def round_record(self, n: int) -> RoundInfo | None:
        doc = _unwrap(self.query_optional(f"rounds/{n}"), "round")
        return None if doc is None else RoundInfo.from_json(doc)

    def task(self, task_id: int) -> Task | None:
        doc = _unwrap(self.query_optional(f"tasks/{task_id}"), "task")
        return None if doc is None else Task.from_json(doc)

    def account(self, addr: bytes) -> dict[str, Any]:
        doc = self.query_optional(f"accounts/{addr.hex()}")
        if not isinstance(doc, dict):
            return {"address": addr.hex(), "balance": 0, "nonce": 0}
        return doc

    def params(self) -> dict[str, Any]:
        return _unwrap(self.query("params"), "params") or {}

    def watermark_scheme(self) -> WatermarkScheme:
        """The chain's watermark rules; `WatermarkParamsError` if the node does not state them."""
        return WatermarkScheme.from_params(self.params())

    # -- transactions

    def send(self, msg: Message, what: str | None = None) -> CommitResult:
        """Sign `msg` with the next nonce and wait for its block; raises `TxRejected`.

        broadcast_tx_commit rather than _sync: a sidecar sends a handful of txs per round and the
        next one needs the nonce the previous one consumed, which only the committed state shows.
        """
        from abci_app.dlbc.txs import build_signed_tx

        if self.key is None:
            raise RuntimeError("this sidecar has no key to sign with")
        what = what or type(msg).__name__
        nonce = int(self.account(self.key.address).get("nonce", 0))
        tx = build_signed_tx(self.key.private_key, self.chain_id, nonce, msg)
        res = self.rpc.broadcast_tx_commit(tx)
        if not res.check_tx.ok:
            raise TxRejected(what, res.check_tx.code, res.check_tx.log)
        if not res.tx_result.ok:
            raise TxRejected(what, res.tx_result.code, res.tx_result.log)
        return res


def _unwrap(doc: object, wrapper: str) -> dict[str, Any] | None:
    """A query answer as a JSON object, accepting both `{...}` and `{"<wrapper>": {...}}`."""
    if not isinstance(doc, dict):
        return None
    inner = doc.get(wrapper)
    if isinstance(inner, dict):
        return inner
    return doc


class WatermarkParamsError(ValueError):
    """The chain's `params` answer lacks or misstates the watermark scheme (docs/watermark.md)."""


#: The chain params (abci_app/dlbc/params.py) that decide whether a watermark is detected.
WATERMARK_PARAMS: tuple[str, ...] = (
    "watermark_bits", "watermark_matrix", "watermark_gain", "watermark_threshold_ppm",
)


@dataclass(frozen=True, slots=True)
class WatermarkScheme:
    """The chain's watermark rules (params `watermark_*`, docs/watermark.md), as sidecars use them.

    Why from the chain and never from `watermark`'s package defaults: a miner embeds and every
    validator detects, and a model is only accepted if both used the same bit count, projection
    family, row gain, layer rule and threshold. Reading them from the `params` query makes a
    chain (genesis) change reach every sidecar at once and makes a sidecar that disagrees fail
    loudly instead of silently rejecting honest models. The embedding temperature and λ are not
    here: they change how a miner trains, not what a validator accepts.
    """

    n_bits: int
    matrix: str
    gain: int
    threshold_ppm: int

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> WatermarkScheme:
        """Validate with the chain's own rules (abci_app.dlbc.params); nothing falls back."""
        from abci_app.dlbc.params import Params

        missing = [k for k in WATERMARK_PARAMS if k not in params]
        if missing:
            raise WatermarkParamsError(
                f"the chain's params lack {', '.join(missing)}: the node runs an app that does "
                "not state the watermark scheme; upgrade it (no local default is assumed)")
        try:
            p = Params.from_json({k: params[k] for k in WATERMARK_PARAMS})
        except ValueError as exc:
            raise WatermarkParamsError(f"the chain's watermark params are invalid: {exc}") from None
        return cls(p.watermark_bits, p.watermark_matrix, p.watermark_gain,
                   p.watermark_threshold_ppm)

    @classmethod
    def genesis_default(cls) -> WatermarkScheme:
        """The scheme of a chain whose genesis sets no watermark params (params.Params defaults).

        Only for offline checks with no chain to ask (preparing a task); a running sidecar uses
        `ChainClient.watermark_scheme`.
        """
        from abci_app.dlbc.params import Params

        return cls.from_params(Params().to_json())

    @property
    def threshold(self) -> float:
        """Per-bit confidence to exceed (off-chain float; the chain keeps ppm)."""
        return self.threshold_ppm / 1_000_000

    def layer(self, model: nn.Module | Mapping[str, Any]) -> str:
        """The watermark-carrying layer of `model` under this scheme (same rule on every node)."""
        from watermark import default_layer

        return default_layer(model, n_bits=self.n_bits, matrix=self.matrix)

    def key(self, seed: bytes, miner: bytes, layer: str) -> WatermarkKey:
        """The key of `miner` for the round seeded by `seed`; WatermarkError on bad input."""
        from watermark import derive_key

        return derive_key(seed, miner, layer=layer, n_bits=self.n_bits, matrix=self.matrix,
                          gain=float(self.gain))


def round_phase(info: RoundInfo | None) -> Phase:
    """The phase a sidecar acts on: DONE once the round is closed, IDLE with no round."""
    if info is None:
        return Phase.IDLE
    if not info.record.is_active:
        return Phase.DONE
    return info.record.phase


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
        self._seen_rounds: set[int] = set()
        self._closed_rounds: set[int] = set()
        self._done: set[tuple[int, str]] = set()
        self.listeners: list[Callable[[str, dict[str, Any]], None]] = []

    # -- hooks for subclasses

    def setup(self) -> None:
        """Once, before the loop (register a miner, submit a task, ...). Retried on failure."""

    def on_round(self, info: RoundInfo) -> None:
        """Called every poll with the current round (phase may repeat)."""

    def on_round_closed(self, info: RoundInfo) -> None:
        """Called once when a round is seen closed (winner known or outcome set)."""

    def teardown(self) -> None:
        """Once, when the loop ends."""

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
        if self._blocks is not None:
            self._blocks.wake()

    @property
    def rounds_closed(self) -> int:
        return len(self._closed_rounds)

    def run(self) -> int:
        """Poll until stopped or `max_rounds` closed rounds were seen. Returns an exit code."""
        self.cfg.workdir.mkdir(parents=True, exist_ok=True)
        self.start_metrics()
        blocks = self._blocks = BlockSignal(self.rpc.websocket_url()).start()
        set_up = False
        try:
            while not self.stop_event.is_set():
                try:
                    if not set_up:
                        self.setup()
                        set_up = True
                    self.tick()
                except NodeUnreachable as exc:
                    self.count_error("node_unreachable", "node unreachable: %s", exc)
                except RpcError as exc:
                    self.count_error("rpc", "RPC error: %s", exc)
                except Exception:
                    self.metrics.inc("errors_total", kind="step")
                    self.log.exception("%s step failed; continuing", self.role)
                if self.cfg.max_rounds is not None and self.rounds_closed >= self.cfg.max_rounds:
                    self.log.info("saw %d closed round(s); stopping", self.rounds_closed)
                    break
                self.wait_for_block()
        finally:
            blocks.close()
            self._blocks = None
            try:
                self.teardown()
            finally:
                if self._metrics_server is not None:
                    self._metrics_server.stop()
                    self._metrics_server = None
        return 0

    def wait_for_block(self) -> None:
        """Until the next block or `poll_seconds`, whichever is first (or until `stop()`).

        The round only changes when a block commits, so the NewBlock wake-up lets a sidecar
        act within milliseconds of it; the poll interval bounds the wait when events are lost
        or the node has no `/websocket`."""
        if self._blocks is None:
            self.stop_event.wait(self.cfg.poll_seconds)
        else:
            self._blocks.wait(self.cfg.poll_seconds)

    def tick(self) -> None:
        """One poll: read the round, track new/closed rounds, hand it to the role."""
        info = self.chain.current_round()
        if info is None:
            return
        n = info.record.round
        self.metrics.set("current_round", n)
        if n not in self._seen_rounds:
            self._seen_rounds.add(n)
            self.metrics.inc("rounds_seen_total")
            # A round can close and the next start between two polls: catch up via rounds/<n>.
            for prev in sorted(self._seen_rounds - self._closed_rounds):
                if prev < n:
                    old = self.chain.round_record(prev)
                    if old is not None and round_phase(old) is Phase.DONE:
                        self._close(old)
        if round_phase(info) is Phase.DONE:
            if n not in self._closed_rounds:
                self._close(info)
            return
        self.on_round(info)

    def _close(self, info: RoundInfo) -> None:
        self._closed_rounds.add(info.record.round)
        winner = info.record.winner
        if self.key is not None and winner is not None and winner.miner == self.key.address:
            self.metrics.inc("wins_total")
        self.on_round_closed(info)
