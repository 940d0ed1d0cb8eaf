"""The publisher sidecar: post a paid training task, then release its keys at the right phases.

Paper Sec. IV-A, docs/transactions.md, docs/rounds.md: a publisher uploads its training set
*encrypted*, commits to the data key (SHA-256) and to the test-set key in the `TaskSpec`, escrows
the reward with `SubmitTask`, and — only once its task is selected for a round — releases the data
key in TRAIN (`ReleaseTrainKey`) and the test key in REVEAL (`RevealTestSet`). Until then nobody,
miners included, can train on or overfit to its data. With pipelined rounds a selected task's
round is first ANNOUNCED (miners fetch the ciphertext), and the key goes out once it trains;
one of its tasks may be in REVEAL while another trains, each handled per round.

Preparing a task (split, encrypt, stage, fill the spec; idempotent per name) is `task_prep`,
checking that it can work at all is `task_fit`; both are re-exported here.

What the publisher owes its operator (issue 13):

* a task is submitted once: before sending, the chain is asked whether this publisher already
  has a task committing to the same training data (the local record of `submitted.json` is
  checked against the chain, then the pending pool, then the newest tasks);
* a refused submission stops the publisher with the app's code, log and a hint
  (`SubmitRejected`), rather than leaving a process that serves nothing;
* `--rounds N` counts only rounds of its own tasks;
* the devnet's top-up keeps trying after a refusal (logged and counted each time, at most once
  per `top_up_retry_seconds`), so a nonce clash or a dry spell never stops it for good.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from abci_app.dlbc.codes import Code
from abci_app.dlbc.records import Phase, RoundInfo
from abci_app.fsutil import atomic_write
from abci_app.keyfile import KeyPair
from training.sidecars.artifact_server import ArtifactServer
from training.sidecars.base import (
    Sidecar,
    SidecarConfig,
    SidecarStopped,
    TxRejected,
    WatermarkParamsError,
    WatermarkScheme,
    training_first,
)
from training.sidecars.metrics_server import Metrics
from training.sidecars.rpc_client import RpcClient
from training.sidecars.rpc_types import RpcError
from training.sidecars.task_fit import TaskMismatch
from training.sidecars.task_prep import (
    KEYS_FILE,
    PRIVATE_DIR,
    TASK_FILE,
    DemoDataConfig,
    PreparedTask,
    TaskNameTaken,
    dataset_fingerprint,
    prepare_demo_task,
    prepare_task,
    private_dir_for,
)

__all__ = [
    "KEYS_FILE",
    "PRIVATE_DIR",
    "TASK_FILE",
    "DemoDataConfig",
    "PreparedTask",
    "Publisher",
    "PublisherConfig",
    "SubmitRejected",
    "TaskMismatch",
    "TaskNameTaken",
    "dataset_fingerprint",
    "explain_rejection",
    "prepare_demo_task",
    "prepare_task",
    "private_dir_for",
    "submitted_task_id",
]

#: How many of the newest tasks on chain are compared with a task before it is submitted.
RECENT_TASKS_SCANNED = 500


def submitted_task_id(events: Any) -> int | None:
    """The task id from SubmitTask's events (any event attribute named `task_id`)."""
    for ev in events:
        tid = ev.get("task_id")
        if tid is not None and str(tid).isdigit():
            return int(tid)
    return None


def explain_rejection(exc: TxRejected, address: str) -> str:
    """What an operator can do about a refused tx of `address` (the app's code decides)."""
    fund = (f"fund {address} first: `dlbc transfer --key FUNDED_KEY --to {address} --amount N`"
            " (on a devnet: `dlbc devnet --fund ADDRESS=N`, or its faucet key OUT/keys/"
            "faucet.json)")
    hints = {
        Code.INSUFFICIENT_FUNDS: "the account cannot pay it; " + fund,
        Code.INSUFFICIENT_FEE: "the account cannot pay the tx fee; " + fund,
        Code.REWARD_TOO_SMALL: "raise --reward to at least the chain's min_task_reward "
                               "(`dlbc query params`)",
        Code.PUBLISHER_CAP: "this publisher has as many pending tasks as the chain allows; "
                            "wait for one to be selected",
        Code.POOL_FULL: "the task pool is full; wait for tasks to be selected",
        Code.BAD_NONCE: "another process kept sending from the same key; retry",
    }
    try:
        hint = hints.get(Code(exc.code))
    except ValueError:
        hint = None
    return f"{exc}" + (f" — {hint}" if hint else "")


class SubmitRejected(SidecarStopped):
    """The chain refused one of the publisher's own tasks; `rejection` has the app's code."""

    def __init__(self, name: str, rejection: TxRejected, address: str) -> None:
        self.name = name
        self.rejection = rejection
        super().__init__(f"task {name!r} was not accepted: "
                         f"{explain_rejection(rejection, address)}")


@dataclass
class PublisherConfig(SidecarConfig):
    reward: int = 1000
    """Escrowed reward per task, paid to the winning miner (paper Eq. 6 context)."""
    artifact_host: str = "127.0.0.1"
    artifact_port: int = 0
    """Port of the artifact server that hosts the encrypted data (0 = any free port; use a
    fixed one when the publisher must survive restarts, because the URIs are on chain)."""
    withhold_keys: bool = False
    """Test hook for issue 6's bad input "publisher never releases the key"."""
    top_up_retry_seconds: float = 10.0
    """After a refused top-up task, wait this long before sending it again (devnet mode)."""


class Publisher(Sidecar):
    """Submits its prepared tasks once, then unlocks each one when the chain selects it."""

    role = "publisher"

    def __init__(self, cfg: PublisherConfig, key: KeyPair, *, rpc: RpcClient | None = None,
                 metrics: Metrics | None = None, server: ArtifactServer | None = None) -> None:
        super().__init__(cfg, key=key, rpc=rpc, metrics=metrics)
        self.pcfg = cfg
        self.artifact_root = cfg.workdir / "artifacts"
        self.artifact_root.mkdir(parents=True, exist_ok=True)
        self.server = server
        self._own_server = server is None
        self.tasks: dict[int, PreparedTask] = {}  # task id -> prepared task
        self._pending: list[PreparedTask] = []
        self._attempts: dict[tuple[int, str], int] = {}
        self.keep_pending = 0
        """Top the pool up to this many pending tasks with fresh demo tasks (the devnet)."""
        self.demo_config: DemoDataConfig | None = None
        self._top_up_task: PreparedTask | None = None
        self._top_up_after = 0.0
        self._load_submitted()

    @property
    def address(self) -> str:
        return "" if self.key is None else self.key.address.hex()

    # -- artifacts

    def start_server(self) -> ArtifactServer:
        if self.server is None:
            self.server = ArtifactServer(self.artifact_root, host=self.pcfg.artifact_host,
                                         port=self.pcfg.artifact_port)
        self.server.start()
        return self.server

    @property
    def base_url(self) -> str:
        return self.start_server().base_url

    def chain_scheme(self) -> WatermarkScheme | None:
        """The chain's watermark scheme, or None (logged) when the node cannot tell us yet."""
        try:
            return self.chain.watermark_scheme()
        except (RpcError, WatermarkParamsError) as exc:
            self.log.warning("watermark params unavailable (%s); checking the task against the "
                             "genesis defaults", exc)
            return None

    def prepare_demo(self, cfg: DemoDataConfig | None = None, name: str = "demo") -> PreparedTask:
        task = prepare_demo_task(self.artifact_root / name, self.base_url, cfg, name,
                                 self.chain_scheme())
        self._pending.append(task)
        return task

    def add_prepared(self, task: PreparedTask) -> None:
        self._pending.append(task)

    # -- persistence of which tasks are on chain (so a restart does not submit twice)

    def _submitted_path(self) -> Path:
        return self.cfg.workdir / "submitted.json"

    def _load_submitted(self) -> None:
        path = self._submitted_path()
        if not path.exists():
            return
        for tid, name in json.loads(path.read_text()).items():
            d = self.artifact_root / name
            if PreparedTask.exists(d):  # task.json and keys.json live in private/<name>/
                self.tasks[int(tid)] = PreparedTask.load(d)

    def _save_submitted(self) -> None:
        doc = {str(tid): t.name for tid, t in sorted(self.tasks.items())}
        atomic_write(self._submitted_path(), json.dumps(doc).encode(), mode=0o644)

    # -- is it on chain already?

    def _is_ours(self, tid: int, task: PreparedTask) -> bool:
        rec = self.chain.task(tid)
        return (rec is not None and rec.publisher.hex() == self.address
                and rec.spec.data_sha256 == bytes(task.spec.data_sha256))

    def find_on_chain(self, task: PreparedTask) -> int | None:
        """The id of this publisher's task on chain that commits to `task`'s training data.

        The training ciphertext's digest identifies a prepared task (a re-prepared one has fresh
        keys, so a fresh digest). Asked in order of cost: the ids recorded locally (checked on
        chain: a record from another chain, say a devnet started afresh, does not count), the
        pending pool, then the newest `RECENT_TASKS_SCANNED` task ids."""
        for tid, t in sorted(self.tasks.items()):
            if t.name == task.name and self._is_ours(tid, task):
                return tid
        if self.key is None:
            return None
        for entry in self.chain.query("tasks/pending").get("tasks", []):
            if entry.get("publisher") == self.address and self._is_ours(int(entry["id"]), task):
                return int(entry["id"])
        newest = self._newest_task_id()
        for tid in range(newest, max(0, newest - RECENT_TASKS_SCANNED), -1):
            if self._is_ours(tid, task):
                return tid
        return None

    def _newest_task_id(self) -> int:
        """The highest task id on chain (ids are 1, 2, ... and never reused): galloping search."""
        def exists(tid: int) -> bool:
            return self.chain.query_optional(f"tasks/{tid}") is not None

        if not exists(1):
            return 0
        lo, hi = 1, 2
        while exists(hi):
            lo, hi = hi, hi * 2
        while hi - lo > 1:  # exists(lo), not exists(hi)
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if exists(mid) else (lo, mid)
        return lo

    # -- loop hooks

    def setup(self) -> None:
        self.start_server()
        self._forget_foreign_records()
        while self._pending:
            task = self._pending[0]
            tid = self.find_on_chain(task)
            if tid is not None:
                self.tasks[tid] = task
                self._save_submitted()
                self.log.info("task %s is already on chain as task %d; not submitting it again",
                              task.name, tid)
                self.emit("task_on_chain", task_id=tid, name=task.name)
            else:
                try:
                    self.submit(task)
                except TxRejected as exc:  # e.g. balance too low: retrying will not help
                    self.metrics.inc("errors_total", kind="tx_rejected")  # the loop logs it
                    self.emit("task_rejected", name=task.name, reason=str(exc))
                    raise SubmitRejected(task.name, exc, self.address) from None
            self._pending.pop(0)

    def _forget_foreign_records(self) -> None:
        """Drop recorded task ids that are not this publisher's task on this chain (a workdir
        reused against a fresh devnet): their rounds are someone else's."""
        foreign = [tid for tid, t in self.tasks.items() if not self._is_ours(tid, t)]
        for tid in foreign:
            self.log.warning("task %d (%s) of %s is not on this chain; forgetting it", tid,
                             self.tasks[tid].name, self._submitted_path())
            del self.tasks[tid]
        if foreign:
            self._save_submitted()

    def submit(self, task: PreparedTask) -> int:
        from abci_app.dlbc import txs

        res = self.chain.send(txs.submit_task(task.spec, self.pcfg.reward), "SubmitTask")
        events = [e.as_dict() for e in res.tx_result.events]
        tid = submitted_task_id(events)
        if tid is None:
            raise RuntimeError(f"SubmitTask accepted but no task_id in its events: {events}")
        self.tasks[tid] = task
        self._save_submitted()
        self.metrics.inc("txs_total", type="SubmitTask")
        self.log.info("task %d (%s) submitted with reward %d at height %d", tid, task.name,
                      self.pcfg.reward, res.height)
        self.emit("task_submitted", task_id=tid, reward=self.pcfg.reward, name=task.name,
                  height=res.height, tx_hash=res.hash)
        return tid

    def counts_round(self, info: RoundInfo) -> bool:
        """`--rounds N` means N rounds of this publisher's tasks, not of anybody's."""
        return info.record.task_id in self.tasks

    def tick(self) -> None:
        super().tick()
        if self.keep_pending > 0:
            self.top_up()

    def top_up(self) -> None:
        """Keep `keep_pending` demo tasks waiting so every round has work (devnet mode).

        Only tasks in the pool count (`tasks/pending`): a task of this publisher that an active
        round selected (ANNOUNCED or later) is not pending, so as soon as a round is announced
        the pool is refilled for the one after it, which pipelined rounds announce while the
        round before still trains (docs/rounds.md).

        A refused submission is logged and counted, and the same prepared task is sent again
        after `top_up_retry_seconds` (a nonce clash passes, a balance can be refilled): the
        top-up never stops for good."""
        if time.monotonic() < self._top_up_after:
            return
        pending = self.chain.query("tasks/pending")
        mine = [t for t in pending.get("tasks", []) if t.get("publisher") == self.address]
        if len(mine) >= self.keep_pending:
            return
        task = self._top_up_task
        if task is None:
            k = self._next_demo_index()
            cfg = self.demo_config or DemoDataConfig()
            cfg = DemoDataConfig(**{**cfg.__dict__, "seed": cfg.seed + k})
            task = self._top_up_task = prepare_demo_task(
                self.artifact_root / f"demo-{k}", self.base_url, cfg, f"demo-{k}",
                self.chain_scheme())
        try:
            self.submit(task)
        except TxRejected as exc:
            self._top_up_after = time.monotonic() + self.pcfg.top_up_retry_seconds
            self.count_error("tx_rejected", "demo task %s not submitted (trying again in %.0f "
                             "s): %s", task.name, self.pcfg.top_up_retry_seconds,
                             explain_rejection(exc, self.address))
            self.emit("task_rejected", name=task.name, reason=str(exc))
            return
        self._top_up_task = None

    def _next_demo_index(self) -> int:
        """One past every `demo-K` prepared in this workdir: a top-up never reuses a name
        (preparation is idempotent per name, so a reused name would be refused)."""
        taken = [int(p.name[5:]) for p in self.artifact_root.glob("demo-*") if p.name[5:].isdigit()]
        taken += [int(t.name[5:]) for t in self.tasks.values()
                  if t.name.startswith("demo-") and t.name[5:].isdigit()]
        return max(taken, default=0) + 1

    def _try(self, rnd: int, step: str, limit: int = 3) -> bool:
        n = self._attempts.get((rnd, step), 0)
        if n >= limit:
            return False
        self._attempts[(rnd, step)] = n + 1
        return True

    def order_rounds(self, infos: list[RoundInfo]) -> list[RoundInfo]:
        """The training round's key first: miners wait for it (`training_first`)."""
        return training_first(infos)

    def on_round(self, info: RoundInfo) -> None:
        """Per round of its own tasks: the data key once the round is in TRAIN (an ANNOUNCED
        round would refuse it: its miners fetch the ciphertext meanwhile), the test key in
        REVEAL. With pipelined rounds both can be due in one poll, for two of its tasks."""
        from abci_app.dlbc import txs

        rec = info.record
        tid = rec.task_id
        task = self.tasks.get(tid)
        if task is None or self.pcfg.withhold_keys:
            return
        rnd = rec.round
        if rec.phase is Phase.TRAIN and not rec.key_released and self._try(rnd, "train_key"):
            sent = self.send(txs.release_train_key(tid, task.train_key), "ReleaseTrainKey")
            event = "train_key_released"
        elif (rec.phase is Phase.REVEAL and not rec.test_key_revealed
              and self._try(rnd, "test_key")):
            sent = self.send(txs.reveal_test_set(tid, task.test_key), "RevealTestSet")
            event = "test_key_revealed"
        else:
            return
        if sent is not None:
            self.metrics.inc("reveals_total")
            self.emit(event, round=rnd, task_id=tid)

    def teardown(self) -> None:
        if self._own_server and self.server is not None:
            self.server.stop()
            self.server = None
