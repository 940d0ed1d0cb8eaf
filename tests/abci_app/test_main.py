"""`python -m abci_app`: app selection, one log line per block, fatal errors exit non-zero."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from abci_app.__main__ import build_parser, resolve_app_class
from abci_app.abci_client import AbciClient, AbciClientError
from abci_app.kvstore import KVStoreApplication
from abci_app.pb.tendermint.abci import types_pb2 as abci
from dlbc_ops.devnode.driver import Driver
from dlbc_ops.devnode.validator_key import ValidatorKey

from .helpers import app_supervisor, block_time, spawn_app


def test_one_log_line_per_block(tmp_path: Path) -> None:
    addr = f"unix://{tmp_path}/m.sock"
    sup = app_supervisor(tmp_path)
    child = spawn_app(sup, tmp_path / "home", addr, log_level="info")
    try:
        async def main() -> bytes:
            d = Driver([AbciClient(addr)], [ValidatorKey.generate(b"m")], "log-chain")
            await d.handshake()
            res = None
            for h in range(1, 4):
                res = await d.run_height([b"a=%d" % h, b"b=%d" % h], block_time(h))
            await d.close()
            assert res is not None
            return res.app_hash

        last_hash = asyncio.run(main())
    finally:
        sup.stop()
    err = child.log_path.read_text()
    lines = [ln for ln in err.splitlines() if "committed height=" in ln]
    assert len(lines) == 3
    assert f"committed height=3 txs=2 app_hash={last_hash.hex()[:16]}" in lines[-1]


def test_invalid_genesis_is_fatal_exit_code_1(tmp_path: Path) -> None:
    addr = f"unix://{tmp_path}/f.sock"
    sup = app_supervisor(tmp_path)
    child = spawn_app(sup, tmp_path / "home", addr)
    try:
        async def main() -> None:
            c = AbciClient(addr)
            await c.connect()
            with pytest.raises(AbciClientError, match="closed"):
                await c.call("init_chain", abci.RequestInitChain(app_state_bytes=b"[1, 2]"))
            await c.close()

        asyncio.run(main())
        assert child.popen.wait(10) == 1
    finally:
        sup.stop()


def test_invalid_app_name_exit_code_2(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "abci_app", "--home", str(tmp_path), "--app", "no.such:App"],
        capture_output=True, timeout=60, check=False,
    )
    assert out.returncode == 2
    assert b"cannot load app" in out.stderr


def test_resolve_app_class() -> None:
    from abci_app.dlbc.app import DlbcApplication

    assert resolve_app_class("dlbc") is DlbcApplication
    assert resolve_app_class("kvstore") is KVStoreApplication
    assert resolve_app_class("abci_app.kvstore:KVStoreApplication") is KVStoreApplication


def test_invalid_app_specs_are_refused() -> None:
    with pytest.raises(TypeError):
        resolve_app_class("abci_app.store:Store")
    with pytest.raises(ValueError):
        resolve_app_class("nocolon")
    with pytest.raises(ValueError):
        resolve_app_class("abci_app.kvstore:")


def test_default_app_is_dlbc() -> None:
    assert build_parser().parse_args(["--home", "h"]).app == "dlbc"


def test_invalid_dlbc_import_failure_is_a_loud_exit_not_the_kvstore(tmp_path: Path) -> None:
    """A validator whose DLBC app cannot load must stop, not serve another app's hashes."""
    # A broken install: `import abci_app.dlbc.app` raises ImportError in this process only.
    code = ("import sys; sys.modules['abci_app.dlbc.app'] = None; "
            "from abci_app.__main__ import main; "
            f"sys.exit(main(['--home', {str(tmp_path / 'home')!r}, '--address', "
            f"'unix://{tmp_path}/x.sock']))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60,
                         check=False)
    assert out.returncode == 2
    assert b"cannot load app 'dlbc'" in out.stderr
    assert b"kvstore" not in out.stderr.lower()
    assert not (tmp_path / "home").exists()  # nothing served, nothing written
