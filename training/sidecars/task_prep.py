"""Preparing a publisher's task: split, encrypt, stage, and fill the `TaskSpec` (paper Sec. IV-A).

Data preparation (`prepare_task`): check that architecture, metric, data and the chain's
watermark scheme fit (`task_fit`), split a data set into train/test, encrypt each with its own
AES-256-GCM key (training/encryption.py), write both under the publisher's artifact folder,
which an `ArtifactServer` hosts over HTTP, and fill the `TaskSpec` (model size and FLOPs
measured with `model_stats` on the registry architecture, Eq. 2-3 inputs). The keys are written
to a 0600 JSON file so a restarted publisher can still release them; they are never logged.

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
from typing import TYPE_CHECKING, Any, Literal

from abci_app.fsutil import atomic_write
from training.sidecars.scheme import WatermarkScheme

if TYPE_CHECKING:
    from training.data import ArrayDataset

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


DemoGenerator = Literal["vessels", "shapes"]


@dataclass
class DemoDataConfig:
    """The demo segmentation task (`dlbc task submit --demo`, `dlbc devnet`): CPU-sized, and hard
    enough that a miner training 55 s beats one training 5.5 s (training/DEMO_DATA.md).

    The defaults were measured together (bench/demo_task.py): 96 images of 80x80 stay under
    8 MB as the .npz a miner downloads, and a depth-3, width-8 U-Net (the smallest whose
    bottleneck carries the chain's 256-bit watermark) trains an epoch in about a second on one
    CPU thread, so even the weak demo miner finishes a few epochs, while its validation Dice
    keeps rising for the whole 60 s TRAIN phase.
    """

    samples: int = 96
    """Generated images in total (train + test)."""
    image_size: int = 80
    """Square side in pixels; must be divisible by 2**depth of the model."""
    test_fraction: float = 0.25
    seed: int = 7
    """Seed of the synthetic generator and of the split."""
    architecture: str = "unet2d"
    hparams: dict[str, Any] = field(default_factory=lambda: {"depth": 3, "base_width": 8})
    metric: str = "dice"
    min_score_ppm: int = 0
    generator: DemoGenerator = "vessels"
    """"vessels": thin touching vessels and rings among look-alike blobs
    (training/demo_data.py); "shapes": the old large discs and boxes (training/data.py
    `make_segmentation_2d`), solved within seconds."""


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
    `scheme` is the chain's watermark scheme, used to refuse (or, without an explicit
    base_width, widen) an architecture too small to carry it; None (offline preparation) checks
    against the chain's documented genesis defaults. Mismatches of architecture, metric and
    data raise `TaskMismatch` before any file is written (`task_fit`).

    Idempotent: if a task was already prepared in `directory` from the same inputs it is
    returned unchanged (same keys, same files, `reused=True`); from different inputs,
    `TaskNameTaken` is raised and nothing is touched.
    """
    from abci_app.dlbc import txs
    from training.artifacts import sha256_bytes
    from training.encryption import encrypt_dataset, generate_key
    from training.models import model_stats
    from training.sidecars.task_fit import fit_task

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
    fitted = fit_task(architecture, hparams, metric, kind=dataset.kind,
                      num_classes=dataset.num_classes, sample_shape=dataset.sample_shape,
                      scheme=scheme or WatermarkScheme.genesis_default())
    stats = model_stats(fitted.model, dataset.sample_shape)
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
        hyperparams_json=json.dumps(fitted.hparams, sort_keys=True),
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


def demo_dataset(cfg: DemoDataConfig) -> ArrayDataset:
    """The demo task's images and masks (train + test, before the split) for `cfg`."""
    if cfg.generator == "vessels":
        from training.demo_data import make_vessels_2d

        return make_vessels_2d(cfg.samples, cfg.image_size, seed=cfg.seed)
    if cfg.generator == "shapes":
        from training.data import make_segmentation_2d

        return make_segmentation_2d(cfg.samples, cfg.image_size, seed=cfg.seed)
    raise ValueError(f"unknown demo generator {cfg.generator!r}: use 'vessels' or 'shapes'")


def prepare_demo_task(directory: Path, base_url: str, cfg: DemoDataConfig | None = None,
                      name: str = "demo", scheme: WatermarkScheme | None = None) -> PreparedTask:
    """The demo task: synthetic 2D vessel segmentation (`demo_dataset`), binary Dice."""
    cfg = cfg or DemoDataConfig()
    data = demo_dataset(cfg)
    return prepare_task(
        data, directory=directory, base_url=base_url, architecture=cfg.architecture,
        hparams=dict(cfg.hparams), metric=cfg.metric, test_fraction=cfg.test_fraction,
        seed=cfg.seed, min_score_ppm=cfg.min_score_ppm, name=name, scheme=scheme,
    )

