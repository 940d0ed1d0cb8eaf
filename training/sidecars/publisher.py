"""The publisher sidecar: post a paid training task, then release its keys at the right phases.

Paper Sec. IV-A, docs/transactions.md, docs/rounds.md: a publisher uploads its training set
*encrypted*, commits to the data key (SHA-256) and to the test-set key in the `TaskSpec`, escrows
the reward with `SubmitTask`, and — only once its task is selected for a round — releases the data
key in TRAIN (`ReleaseTrainKey`) and the test key in REVEAL (`RevealTestSet`). Until then nobody,
miners included, can train on or overfit to its data.

Data preparation (`prepare_task`): split a data set into train/test, encrypt each with its own
AES-256-GCM key (training/encryption.py), write both under the publisher's artifact folder, which
an `ArtifactServer` hosts over HTTP, and fill the `TaskSpec` (model size and FLOPs measured with
`model_stats` on the registry architecture, Eq. 2-3 inputs). The keys are written to a 0600 JSON
file so a restarted publisher can still release them; they are never logged.

Layout (one publisher workdir): `artifacts/<name>/{train,test}.npz.enc` is served over HTTP;
`private/<name>/{task.json,keys.json}` is NOT — the artifact server serves every regular file
under its root, so a keys file beside the ciphertexts would hand the data key to anyone before
ReleaseTrainKey (docs/rounds.md).

Preparation is idempotent per name: the spec commits to the ciphertexts' digests, so re-running
`dlbc task submit` with the same --name must reuse the same keys and files (re-encrypting would
break the on-chain digests). `task.json` records a fingerprint of what was prepared (data digest,
architecture, split, ...); the same inputs reuse the task, different ones are refused.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from abci_app.dlbc.records import Phase, RoundInfo
from abci_app.fsutil import atomic_write
from abci_app.keyfile import KeyPair
from training.sidecars.artifact_server import ArtifactServer
from training.sidecars.base import (
    Sidecar,
    SidecarConfig,
    TxRejected,
    WatermarkParamsError,
    WatermarkScheme,
)
from training.sidecars.metrics_server import Metrics
from training.sidecars.rpc_client import RpcClient
from training.sidecars.rpc_types import RpcError

TASK_FILE = "task.json"
KEYS_FILE = "keys.json"
PRIVATE_DIR = "private"


class TaskNameTaken(ValueError):
    """A task with this name was already prepared from different data or settings."""


def private_dir_for(directory: Path) -> Path:
    """Where the secrets of the task served from `directory` live: `<workdir>/private/<name>`
    for `directory = <workdir>/artifacts/<name>` — beside, never inside, the served root."""
    return directory.parent.parent / PRIVATE_DIR / directory.name


def dataset_fingerprint(dataset: Any) -> str:
    """SHA-256 over a data set's arrays (dtype, shape, bytes), kind and class count."""
    import hashlib

    import numpy as np

    h = hashlib.sha256()
    for arr in (dataset.inputs, dataset.targets):
        a = np.ascontiguousarray(arr)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    h.update(f"{dataset.kind}/{dataset.num_classes}".encode())
    return h.hexdigest()


@dataclass
class DemoDataConfig:
    """The demo segmentation task (`dlbc task submit --demo`, `dlbc devnet`): small and CPU-fast."""

    samples: int = 96
    """Generated images in total (train + test)."""
    image_size: int = 32
    """Square side in pixels; must be divisible by 2**depth of the model."""
    test_fraction: float = 0.25
    seed: int = 7
    """Seed of the synthetic generator and of the split (training/data.py)."""
    architecture: str = "unet2d"
    hparams: dict[str, Any] = field(default_factory=lambda: {"depth": 2, "base_width": 16})
    metric: str = "dice"
    min_score_ppm: int = 0


@dataclass
class PreparedTask:
    """Everything a publisher needs to submit and later unlock one task."""

    directory: Path
    spec: Any  # dlbc.v1 TaskSpec
    train_key: bytes
    test_key: bytes
    name: str
    source: dict[str, Any] = field(default_factory=dict)
    """Fingerprint of the inputs (data digest, architecture, split...) for idempotent reuse."""
    reused: bool = False
    """True when `prepare_task` found this task already prepared and reused it."""

    @property
    def private_dir(self) -> Path:
        return private_dir_for(self.directory)

    @property
    def keys_path(self) -> Path:
        return self.private_dir / KEYS_FILE

    def save(self) -> None:
        """spec + source to task.json, keys (secret) to keys.json with mode 0600, both in the
        private folder (never under the artifact server's root)."""
        from google.protobuf import json_format

        priv = self.private_dir
        priv.mkdir(parents=True, exist_ok=True)
        os.chmod(priv, 0o700)
        spec_doc = json_format.MessageToDict(self.spec, preserving_proto_field_name=True)
        atomic_write(priv / TASK_FILE, json.dumps(
            {"name": self.name, "spec": spec_doc, "source": self.source},
            indent=2, sort_keys=True).encode(), mode=0o644)
        atomic_write(priv / KEYS_FILE, json.dumps(
            {"train_key": self.train_key.hex(), "test_key": self.test_key.hex()}).encode(), mode=0o600)

    @staticmethod
    def exists(directory: Path) -> bool:
        priv = private_dir_for(directory)
        return (priv / KEYS_FILE).exists() and (priv / TASK_FILE).exists()

    @classmethod
    def load(cls, directory: Path) -> PreparedTask:
        from google.protobuf import json_format

        from abci_app.pb.dlbc.v1 import tx_pb2

        priv = private_dir_for(directory)
        doc = json.loads((priv / TASK_FILE).read_text())
        keys = json.loads((priv / KEYS_FILE).read_text())
        spec = json_format.ParseDict(doc["spec"], tx_pb2.TaskSpec())
        return cls(directory, spec, bytes.fromhex(keys["train_key"]),
                   bytes.fromhex(keys["test_key"]), str(doc.get("name", directory.name)),
                   dict(doc.get("source") or {}))

    def check_files(self) -> None:
        """The served ciphertexts still have the digests the spec (and the chain) commits to."""
        from training.artifacts import sha256_file

        for fname, digest in (("train.npz.enc", self.spec.data_sha256),
                              ("test.npz.enc", self.spec.test_sha256)):
            path = self.directory / fname
            if not path.is_file() or sha256_file(path) != bytes(digest).hex():
                raise ValueError(f"task {self.name!r}: {path} is missing or changed since it was "
                                 "prepared; its on-chain digests can no longer be served")


def prepare_task(
    dataset: Any,
    *,
    directory: Path,
    base_url: str,
    architecture: str,
    hparams: dict[str, Any],
    metric: str,
    test_fraction: float,
    seed: int,
    min_score_ppm: int = 0,
    name: str = "task",
    scheme: WatermarkScheme | None = None,
) -> PreparedTask:
    """Split, encrypt and stage `dataset` under `directory`; URIs are `base_url/<name>/...`.

    `directory` must be the artifact server's root joined with `name` so that the URIs resolve;
    the keys go to `private_dir_for(directory)`, outside that root.
    `scheme` is the chain's watermark scheme, used to refuse an architecture too small to carry
    it; None (offline preparation) checks against the chain's documented genesis defaults.

    Idempotent: if a task was already prepared in `directory` from the same inputs it is
    returned unchanged (same keys, same files, `reused=True`); from different inputs,
    `TaskNameTaken` is raised and nothing is touched.
    """
    from abci_app.dlbc import txs
    from training.artifacts import sha256_bytes
    from training.encryption import encrypt_dataset, generate_key
    from training.models import build_model, model_stats
    from watermark import WatermarkError

    source = {"dataset_sha256": dataset_fingerprint(dataset), "architecture": architecture,
              "hparams": json.loads(json.dumps(hparams, sort_keys=True)), "metric": metric,
              "test_fraction": test_fraction, "seed": seed, "min_score_ppm": min_score_ppm}
    if PreparedTask.exists(directory):
        old = PreparedTask.load(directory)
        if old.source and old.source != source:  # no source: an older layout, keep its keys
            diff = sorted(k for k in source if old.source.get(k) != source[k])
            raise TaskNameTaken(
                f"a task named {name!r} was already prepared in {directory} from different "
                f"{', '.join(diff) or 'inputs'}; its keys and digests may be on chain, so it is "
                "not overwritten: use another --name")
        old.check_files()
        old.reused = True
        return old
    scheme = scheme or WatermarkScheme.genesis_default()
    model = build_model(architecture, hparams, seed=0)  # raises ValueError on a bad spec
    stats = model_stats(model, dataset.sample_shape)
    try:
        scheme.layer(model)  # miners must be able to embed the chain's mark (docs/watermark.md)
    except WatermarkError as exc:
        raise ValueError(f"{architecture} {hparams} is too small to carry the round's "
                         f"watermark ({exc}); use a larger base_width") from None
    train, test = dataset.split(test_fraction, seed=seed)
    train_key, test_key = generate_key(), generate_key()
    train_blob = encrypt_dataset(train_key, train)
    test_blob = encrypt_dataset(test_key, test)
    directory.mkdir(parents=True, exist_ok=True)
    atomic_write(directory / "train.npz.enc", train_blob, mode=0o644)
    atomic_write(directory / "test.npz.enc", test_blob, mode=0o644)
    base = base_url.rstrip("/")
    spec = txs.task_spec(
        architecture=architecture,
        hyperparams_json=json.dumps(hparams, sort_keys=True),
        model_size_bytes=stats.size_bytes,
        flops_per_sample=stats.flops_per_sample,
        data_uri=f"{base}/{name}/train.npz.enc",
        data_size_bytes=len(train_blob),
        data_sha256=bytes.fromhex(sha256_bytes(train_blob)),
        data_key_sha256=txs.key_commitment(train_key),
        test_uri=f"{base}/{name}/test.npz.enc",
        test_sha256=bytes.fromhex(sha256_bytes(test_blob)),
        test_key_sha256=txs.key_commitment(test_key),
        metric=metric,
        min_score_ppm=min_score_ppm,
        input_shape=list(dataset.sample_shape),
        num_classes=dataset.num_classes,
        num_samples=len(train),
    )
    task = PreparedTask(directory, spec, train_key, test_key, name, source)
    task.save()
    return task


def prepare_demo_task(directory: Path, base_url: str, cfg: DemoDataConfig | None = None,
                      name: str = "demo", scheme: WatermarkScheme | None = None) -> PreparedTask:
    """The demo task: synthetic 2D shapes segmentation (training/data.py), binary Dice."""
    from training.data import make_segmentation_2d

    cfg = cfg or DemoDataConfig()
    data = make_segmentation_2d(cfg.samples, cfg.image_size, seed=cfg.seed)
    return prepare_task(
        data, directory=directory, base_url=base_url, architecture=cfg.architecture,
        hparams=dict(cfg.hparams), metric=cfg.metric, test_fraction=cfg.test_fraction,
        seed=cfg.seed, min_score_ppm=cfg.min_score_ppm, name=name, scheme=scheme,
    )


def submitted_task_id(events: Any) -> int | None:
    """The task id from SubmitTask's events (any event attribute named `task_id`)."""
    for ev in events:
        tid = ev.get("task_id")
        if tid is not None and str(tid).isdigit():
            return int(tid)
    return None


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
        self._load_submitted()

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
            if (d / TASK_FILE).exists():
                self.tasks[int(tid)] = PreparedTask.load(d)

    def _save_submitted(self) -> None:
        doc = {str(tid): t.name for tid, t in sorted(self.tasks.items())}
        atomic_write(self._submitted_path(), json.dumps(doc).encode(), mode=0o644)

    # -- loop hooks

    def setup(self) -> None:
        self.start_server()
        while self._pending:
            task = self._pending[0]
            if any(t.name == task.name for t in self.tasks.values()):
                self._pending.pop(0)  # already on chain from an earlier run
                self.log.info("task %s is already on chain; not submitting it again", task.name)
                continue
            tid = self._pending_on_chain(task)
            if tid is not None:  # submitted, but submitted.json was not written (crash)
                self.tasks[tid] = task
                self._save_submitted()
                self._pending.pop(0)
                self.log.info("task %s is already on chain as task %d", task.name, tid)
                continue
            try:
                self.submit(task)
            except TxRejected as exc:  # e.g. balance too low: retrying will not help
                self.count_error("tx_rejected", "task %s not submitted: %s", task.name, exc)
                self.emit("task_rejected", name=task.name, reason=str(exc))
            self._pending.pop(0)

    def _pending_on_chain(self, task: PreparedTask) -> int | None:
        """The id of one of our pending tasks whose spec commits to `task`'s training data."""
        if self.key is None:
            return None
        want = bytes(task.spec.data_sha256)
        for entry in self.chain.query("tasks/pending").get("tasks", []):
            if entry.get("publisher") != self.key.address.hex():
                continue
            rec = self.chain.task(int(entry["id"]))
            if rec is not None and rec.spec.data_sha256 == want:
                return rec.id
        return None

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
        self.log.info("task %d (%s) submitted with reward %d", tid, task.name, self.pcfg.reward)
        self.emit("task_submitted", task_id=tid, reward=self.pcfg.reward, name=task.name)
        return tid

    def tick(self) -> None:
        super().tick()
        if self.keep_pending > 0:
            self.top_up()

    def top_up(self) -> None:
        """Keep `keep_pending` demo tasks waiting so every round has work (devnet mode)."""
        pending = self.chain.query("tasks/pending")
        mine = [t for t in pending.get("tasks", []) if self.key is not None
                and t.get("publisher") == self.key.address.hex()]
        if len(mine) >= self.keep_pending:
            return
        k = self._next_demo_index()
        cfg = self.demo_config or DemoDataConfig()
        cfg = DemoDataConfig(**{**cfg.__dict__, "seed": cfg.seed + k})
        name = f"demo-{k}"
        try:
            self.submit(prepare_demo_task(self.artifact_root / name, self.base_url, cfg, name,
                                          self.chain_scheme()))
        except TxRejected as exc:  # e.g. the balance ran out: stop topping up, keep serving keys
            self.count_error("tx_rejected", "no more demo tasks: %s", exc)
            self.keep_pending = 0

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

    def on_round(self, info: RoundInfo) -> None:
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
