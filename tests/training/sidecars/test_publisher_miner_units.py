"""Publisher data preparation, the miner's data fetch and watermark sealing, the loop's failure
policy — real files, real AES-GCM, real HTTP, no chain needed."""

from __future__ import annotations

import hashlib
import stat
import time
from pathlib import Path

import pytest
import torch

from abci_app.dlbc.txs import key_commitment
from training.artifacts import ArtifactError
from training.encryption import decrypt_dataset
from training.models import build_model
from training.sidecars.artifact_server import ArtifactServer
from training.sidecars.base import Sidecar, SidecarConfig
from training.sidecars.publisher import DemoDataConfig, PreparedTask, prepare_demo_task
from training.sidecars.rpc_client import Backoff, RpcClient
from training.sidecars.sealing import seal_watermark
from training.sidecars.task_inputs import fetch_dataset
from watermark import default_layer, derive_key, detect

from .helpers import free_port

DEMO = DemoDataConfig(samples=24, image_size=16, hparams={"depth": 2, "base_width": 16})


@pytest.fixture()
def prepared(tmp_path: Path):
    root = tmp_path / "artifacts"
    with ArtifactServer(root.mkdir() or root) as srv:
        task = prepare_demo_task(root / "demo", srv.base_url, DEMO, "demo")
        yield task, srv


def test_prepare_demo_task_encrypts_hosts_and_commits(prepared) -> None:
    task, srv = prepared
    spec = task.spec
    train_blob = (task.directory / "train.npz.enc").read_bytes()
    test_blob = (task.directory / "test.npz.enc").read_bytes()
    # Verify the spec commits to exactly the hosted ciphertexts and the two distinct keys
    assert spec.data_uri == f"{srv.base_url}/demo/train.npz.enc"
    assert bytes(spec.data_sha256) == hashlib.sha256(train_blob).digest()
    assert spec.data_size_bytes == len(train_blob)
    assert bytes(spec.test_sha256) == hashlib.sha256(test_blob).digest()
    assert bytes(spec.data_key_sha256) == key_commitment(task.train_key)
    assert bytes(spec.test_key_sha256) == key_commitment(task.test_key)
    assert task.train_key != task.test_key
    # Verify the ciphertext is not the plaintext and decrypts to the split
    train = decrypt_dataset(task.train_key, train_blob)
    test = decrypt_dataset(task.test_key, test_blob)
    assert len(train) + len(test) == DEMO.samples and len(train) == spec.num_samples
    assert b"images" not in train_blob
    with pytest.raises(ValueError):
        decrypt_dataset(task.test_key, train_blob)
    # Verify the model stats are measured on the named architecture
    assert spec.architecture == "unet2d" and spec.model_size_bytes > 0
    assert spec.flops_per_sample > 0 and list(spec.input_shape) == [1, 16, 16]
    # Verify the keys file is private, outside the served root, and reloads
    assert task.keys_path == task.directory.parent.parent / "private" / "demo" / "keys.json"
    assert not task.keys_path.is_relative_to(srv.root)
    assert not list(task.directory.glob("*.json"))
    mode = stat.S_IMODE(task.keys_path.stat().st_mode)
    assert mode == 0o600
    again = PreparedTask.load(task.directory)
    assert again.train_key == task.train_key and again.spec == task.spec


def test_fetch_dataset_round_trip_over_http(prepared, tmp_path: Path) -> None:
    task, _ = prepared
    s = task.spec
    data = fetch_dataset(s.data_uri, bytes(s.data_sha256).hex(), s.data_size_bytes,
                         task.train_key, tmp_path / "d.enc", 1 << 20, 2, allow_private=True)
    assert len(data) == s.num_samples


def test_invalid_fetch_digest_mismatch_leaves_nothing(prepared, tmp_path: Path) -> None:
    task, _ = prepared
    s = task.spec
    dest = tmp_path / "d.enc"
    with pytest.raises(ArtifactError, match="digest mismatch"):
        fetch_dataset(s.data_uri, "00" * 32, s.data_size_bytes, task.train_key, dest, 1 << 20, 2,
                      allow_private=True)
    assert sorted(tmp_path.iterdir()) == [tmp_path / "artifacts", tmp_path / "private"]


def test_invalid_fetch_over_size_cap(prepared, tmp_path: Path) -> None:
    task, _ = prepared
    s = task.spec
    with pytest.raises(ArtifactError, match="cap"):
        fetch_dataset(s.data_uri, bytes(s.data_sha256).hex(), 100, task.train_key,
                      tmp_path / "d.enc", 1 << 20, 2, allow_private=True)
    assert not (tmp_path / "d.enc").exists()


def test_invalid_fetch_wrong_key(prepared, tmp_path: Path) -> None:
    task, _ = prepared
    s = task.spec
    with pytest.raises(ValueError):
        fetch_dataset(s.data_uri, bytes(s.data_sha256).hex(), s.data_size_bytes,
                      task.test_key, tmp_path / "d.enc", 1 << 20, 2, allow_private=True)


def test_seal_watermark_reaches_threshold_and_stops() -> None:
    torch.set_num_threads(1)
    model = build_model("unet2d", {"depth": 2, "base_width": 16}, seed=0)
    key = derive_key(b"\x01" * 32, b"\x02" * 20, layer=default_layer(model))
    assert not detect(model, key).ok
    det, steps = seal_watermark(model, key, 0.9999)
    assert det.ok and 0 < steps < 2000
    det2, steps2 = seal_watermark(model, key, 0.9999)
    assert det2.ok and steps2 == 0  # already sealed: nothing to do
    other = derive_key(b"\x01" * 32, b"\x03" * 20, layer=key.layer)
    assert not detect(model, other).ok


def test_invalid_node_unreachable_is_counted_and_loop_keeps_going(tmp_path: Path) -> None:
    port = free_port()  # nothing listens here
    cfg = SidecarConfig(rpc_url=f"http://127.0.0.1:{port}", workdir=tmp_path / "w",
                        poll_seconds=0.05)
    sc = Sidecar(cfg, rpc=RpcClient(cfg.rpc_url, backoff=Backoff(attempts=1)))
    import threading

    t = threading.Thread(target=sc.run, daemon=True)
    t.start()
    deadline = time.monotonic() + 10
    while sc.metrics.get("errors_total", kind="node_unreachable") < 3:
        assert time.monotonic() < deadline, "no unreachable errors counted"
        time.sleep(0.05)
    assert t.is_alive()  # still polling
    sc.stop()
    t.join(timeout=5)
    assert not t.is_alive()


def test_invalid_prepare_task_model_too_small_for_watermark(tmp_path: Path) -> None:
    """A spec no miner could watermark is refused before anything is written or submitted."""
    tiny = DemoDataConfig(samples=24, image_size=16, hparams={"depth": 1, "base_width": 2})
    with pytest.raises(ValueError, match="too small to carry"):
        prepare_demo_task(tmp_path / "t", "http://127.0.0.1:1", tiny, "t")
    assert not (tmp_path / "t").exists()


def test_invalid_prepare_task_unknown_architecture(tmp_path: Path) -> None:
    bad = DemoDataConfig(samples=24, image_size=16, architecture="resnet999")
    with pytest.raises(ValueError, match="unknown architecture"):
        prepare_demo_task(tmp_path / "t", "http://127.0.0.1:1", bad, "t")
    assert not (tmp_path / "t").exists()


def test_invalid_fetch_file_uri_refused_by_default(prepared, tmp_path: Path) -> None:
    task, _ = prepared
    s = task.spec
    uri = (task.directory / "train.npz.enc").as_uri()
    with pytest.raises(ArtifactError, match="only http"):
        fetch_dataset(uri, bytes(s.data_sha256).hex(), s.data_size_bytes, task.train_key,
                      tmp_path / "d.enc", 1 << 20, 2)
    data = fetch_dataset(uri, bytes(s.data_sha256).hex(), s.data_size_bytes, task.train_key,
                         tmp_path / "d.enc", 1 << 20, 2, allow_file=True)
    assert len(data) == s.num_samples


def test_miner_rounds_count_only_rounds_it_could_mine(tmp_path: Path) -> None:
    """`dlbc mine --rounds N`: a round first seen after TRAIN (the miner started mid-round)
    closes without it and does not count toward N; one seen in TRAIN does."""
    from dataclasses import replace

    from abci_app.dlbc.records import Phase
    from training.sidecars.miner import Miner, MinerConfig
    from training.sidecars.offline_records import round_info

    from .helpers import key

    miner = Miner(MinerConfig(rpc_url="http://127.0.0.1:1", workdir=tmp_path / "m",
                              progress=False), key(61),
                  rpc=RpcClient("http://127.0.0.1:1", backoff=Backoff(attempts=1)))
    try:
        late = round_info(5, b"\5" * 32, [], [])  # first seen in VERIFY
        miner.on_round(late)
        assert not miner.counts_round(late)
        early = round_info(6, b"\6" * 32, [], [])
        in_train = replace(early, record=replace(early.record, phase=Phase.TRAIN,
                                                 key_released=False))
        # waits for the data key; its prefetch asks the node on a download thread, not here
        miner.on_round(in_train)
        assert miner.counts_round(early)
        announced = round_info(7, b"\7" * 32, [], [])
        miner.on_round(replace(announced, record=replace(announced.record,
                                                          phase=Phase.ANNOUNCED)))
        assert miner.counts_round(announced)  # seen before its TRAIN: it could mine it
    finally:
        miner.teardown()
