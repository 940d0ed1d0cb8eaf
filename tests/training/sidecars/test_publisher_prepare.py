"""Publisher preparation is idempotent per task name and keeps its keys out of the served root;
`--keep-pending` / `--quiet-progress` reach the sidecars. Real files, real AES-GCM, real HTTP."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from abci_app.keyfile import save_key
from dlbc_ops.cli import main as cli
from dlbc_ops.cli.main import main as dlbc
from dlbc_ops.cli.mine import miner_config
from training.sidecars.artifact_server import ArtifactServer
from training.sidecars.publisher import (
    DemoDataConfig,
    TaskNameTaken,
    prepare_demo_task,
    prepare_task,
)

from .helpers import key

DEMO = DemoDataConfig(samples=24, image_size=16, hparams={"depth": 2, "base_width": 16})


def _files(d: Path) -> dict[str, bytes]:
    return {p.relative_to(d).as_posix(): p.read_bytes() for p in sorted(d.rglob("*"))
            if p.is_file()}


def test_prepare_twice_same_name_reuses_keys_and_files(tmp_path: Path) -> None:
    root = tmp_path / "artifacts"
    first = prepare_demo_task(root / "demo", "http://127.0.0.1:1", DEMO, "demo")
    snapshot = _files(tmp_path)
    again = prepare_demo_task(root / "demo", "http://127.0.0.1:1", DEMO, "demo")
    assert not first.reused and again.reused
    assert (again.train_key, again.test_key) == (first.train_key, first.test_key)
    assert again.spec == first.spec
    assert _files(tmp_path) == snapshot  # nothing re-encrypted or rewritten


@pytest.mark.parametrize("change", [{"seed": 8}, {"samples": 28},
                                    {"hparams": {"depth": 2, "base_width": 32}}])
def test_invalid_same_name_other_data_or_settings_is_refused(tmp_path: Path, change) -> None:
    root = tmp_path / "artifacts"
    prepare_demo_task(root / "demo", "http://127.0.0.1:1", DEMO, "demo")
    snapshot = _files(tmp_path)
    other = DemoDataConfig(**{**DEMO.__dict__, **change})
    with pytest.raises(TaskNameTaken, match="already prepared .* use another --name"):
        prepare_demo_task(root / "demo", "http://127.0.0.1:1", other, "demo")
    assert _files(tmp_path) == snapshot
    # Another name is fine
    assert not prepare_demo_task(root / "demo2", "http://127.0.0.1:1", other, "demo2").reused


def test_invalid_changed_staged_file_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "artifacts"
    task = prepare_demo_task(root / "demo", "http://127.0.0.1:1", DEMO, "demo")
    blob = task.directory / "train.npz.enc"
    blob.write_bytes(blob.read_bytes()[:-1] + b"\x00")
    with pytest.raises(ValueError, match="missing or changed"):
        prepare_demo_task(root / "demo", "http://127.0.0.1:1", DEMO, "demo")


def test_keys_and_task_file_are_never_served(tmp_path: Path) -> None:
    root = tmp_path / "artifacts"
    root.mkdir()
    with ArtifactServer(root) as srv:
        task = prepare_demo_task(root / "demo", srv.base_url, DEMO, "demo")
        assert httpx.get(task.spec.data_uri).status_code == 200
        for path in ("demo/keys.json", "demo/task.json", "keys.json", "private/demo/keys.json",
                     "../private/demo/keys.json", "%2e%2e/private/demo/keys.json"):
            assert httpx.get(f"{srv.base_url}/{path}").status_code == 404, path
    assert json.loads(task.keys_path.read_text())["train_key"] == task.train_key.hex()


def test_prepare_task_from_data_is_idempotent_too(tmp_path: Path) -> None:
    from training.data import make_segmentation_2d

    data = make_segmentation_2d(20, 16, seed=1)
    kw = {"directory": tmp_path / "artifacts" / "t", "base_url": "http://h:1",
          "architecture": "unet2d", "hparams": {"depth": 2, "base_width": 16}, "metric": "dice",
          "test_fraction": 0.25, "seed": 7, "name": "t"}
    a = prepare_task(data, **kw)
    assert prepare_task(data, **kw).train_key == a.train_key
    with pytest.raises(TaskNameTaken, match="dataset_sha256"):
        prepare_task(make_segmentation_2d(20, 16, seed=2), **kw)


def test_invalid_keep_pending_needs_demo(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    save_key(tmp_path / "k.json", key(40))
    code = dlbc(["task", "submit", "--key", str(tmp_path / "k.json"), "--data", "x.npz",
                 "--keep-pending", "1", "--workdir", str(tmp_path / "w")])
    assert code == 2 and "--keep-pending" in capsys.readouterr().err
    assert not (tmp_path / "w").exists()  # refused before anything was prepared


def test_quiet_progress_turns_the_epoch_bar_off() -> None:
    parser = cli.build_parser()
    assert miner_config(parser.parse_args(["mine", "--key", "k"])).progress is True
    assert miner_config(parser.parse_args(["mine", "--key", "k", "--quiet-progress"])).progress \
        is False
