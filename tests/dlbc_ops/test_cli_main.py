"""`dlbc` (dlbc_ops.cli.main): one module per subcommand, listed explicitly, none heavy to
import."""

from __future__ import annotations

import subprocess
import sys

import pytest

from dlbc_ops.cli import main as cli

EXPECTED = ["keys", "node", "genesis", "localnet", "serve-artifacts", "devnet", "transfer", "task",
            "mine", "verify", "query"]


def test_build_parser_registers_every_subcommand_in_help_order() -> None:
    parser = cli.build_parser()
    assert parser._subparsers is not None
    choices = parser._subparsers._group_actions[0].choices
    assert choices is not None
    assert list(choices) == EXPECTED


def test_every_subcommand_module_lives_in_dlbc_ops_cli() -> None:
    assert all(m.__name__.startswith("dlbc_ops.cli.") for m in cli.SUBCOMMANDS)


def test_help_and_keys_do_not_import_torch_or_the_sidecars() -> None:
    """`dlbc keys` must start fast: heavy imports belong inside the handlers."""
    code = ("import sys; from dlbc_ops.cli.main import build_parser; build_parser(); "
            "heavy = sorted(m for m in sys.modules if m == 'torch' or m == 'matplotlib' "
            "or m.startswith('training.sidecars')); print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True)
    assert out.stdout.strip() == "[]"


def test_python_m_dlbc_ops_is_the_cli() -> None:
    out = subprocess.run([sys.executable, "-m", "dlbc_ops", "--help"], capture_output=True,
                         text=True, timeout=60, check=False)
    assert out.returncode == 0 and "localnet" in out.stdout and "devnet" in out.stdout


def test_invalid_no_subcommand_prints_help_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([]) == 2
    assert "COMMAND" in capsys.readouterr().out
