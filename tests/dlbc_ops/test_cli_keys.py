"""`dlbc keys new|show` (dlbc_ops/cli/keys.py) name a key the way `--key` does.

`--key` of `dlbc task|mine` takes a NAME under the home or a key file PATH
(`common.resolve_key`); `dlbc keys show` refused the path. Both now go through
`common.key_file`, so every spelling that one accepts, the other accepts too.
"""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from abci_app.keyfile import load_key, save_key
from dlbc_ops.cli.common import CliError, key_file, resolve_key
from dlbc_ops.cli.main import main as dlbc
from tests.support.keys import keypair


def _show(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, str]:
    assert dlbc(["keys", "show", *argv, "--json"]) == 0, capsys.readouterr().err
    doc: dict[str, str] = json.loads(capsys.readouterr().out)
    return doc


def test_new_by_name_writes_home_keys_name_json(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    assert dlbc(["keys", "new", "publisher", "--home", str(tmp_path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    path = tmp_path / "keys" / "publisher.json"
    assert info["file"] == str(path) and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert info["address"] == load_key(path).address.hex()
    assert "priv_key" not in info and load_key(path).seed().hex() not in json.dumps(info)


def test_show_takes_a_name_an_absolute_path_and_a_relative_path(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    key = keypair(61)
    path = tmp_path / "keys" / "miner1.json"
    save_key(path, key)
    monkeypatch.chdir(tmp_path)
    by_name = _show(capsys, "miner1", "--home", str(tmp_path))
    by_path = _show(capsys, str(path))
    by_relative = _show(capsys, "keys/miner1.json")
    assert by_name["address"] == by_path["address"] == by_relative["address"] \
        == key.address.hex()
    assert by_path["file"] == str(path) and by_relative["file"] == "keys/miner1.json"


@pytest.mark.parametrize("spec", ["miner1", "{home}/keys/miner1.json", "keys/miner1.json",
                                  "bare-file"])
def test_keys_show_accepts_exactly_what_key_accepts(
        spec: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """One rule for both (`key_file`): a name, a path with "/", or an existing bare file."""
    key = keypair(62)
    save_key(tmp_path / "keys" / "miner1.json", key)
    save_key(tmp_path / "bare-file", key)
    monkeypatch.chdir(tmp_path)
    spec = spec.format(home=tmp_path)
    assert resolve_key(spec, tmp_path).address == key.address  # what `--key` loads
    assert _show(capsys, spec, "--home", str(tmp_path))["address"] == key.address.hex()


def test_new_by_path_writes_that_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "elsewhere" / "k.json"
    assert dlbc(["keys", "new", str(target), "--home", str(tmp_path / "home")]) == 0
    assert f"file:    {target}" in capsys.readouterr().out
    assert resolve_key(str(target), None).address == load_key(target).address
    assert not (tmp_path / "home").exists()


def test_invalid_show_of_a_missing_path(tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.json"
    assert dlbc(["keys", "show", str(missing)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and str(missing) in err and "not found" in err


def test_invalid_new_refuses_to_overwrite_a_key(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "k.json"
    save_key(path, keypair(63))
    assert dlbc(["keys", "new", str(path)]) == 1
    assert "refusing to overwrite" in capsys.readouterr().err
    assert load_key(path).address == keypair(63).address
    assert dlbc(["keys", "new", str(path), "--force"]) == 0
    assert load_key(path).address != keypair(63).address


def test_invalid_name_that_could_escape_the_keys_folder(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert dlbc(["keys", "show", ".hidden", "--home", str(tmp_path)]) == 1
    assert "invalid key name" in capsys.readouterr().err
    with pytest.raises(CliError, match="invalid key name"):
        resolve_key(".hidden", tmp_path)


def test_key_file_rule() -> None:
    home = Path("/h")
    assert key_file("miner1", home) == home / "keys" / "miner1.json"
    assert key_file("dir/miner1", home) == Path("dir/miner1")
    assert key_file("miner1.json", home) == Path("miner1.json")
    assert key_file("~/k.json", home) == Path.home() / "k.json"
