"""`dlbc localnet` bad input and process handling (issue 7): clear message, nothing left running."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dlbc_ops.cli import main as cli
from dlbc_ops.localnet import layout
from dlbc_ops.localnet import plan as lp
from dlbc_ops.localnet.ports import busy_ports
from tests.support import REPO
from tests.support.ports import localnet_base
from tests.support.processes import default_sigint, processes_mentioning, stop_cli

#: `dlbc localnet` as a child process
LOCALNET = [sys.executable, "-m", "dlbc_ops", "localnet"]

HERE = Path(__file__).parent


def _fake_cometbft(tmp_path: Path, version: str) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    exe = bin_dir / "cometbft"
    exe.write_text(
        f"#!/bin/sh\nFAKE_COMETBFT_VERSION={version} exec {sys.executable} "
        f'{HERE / "fake_cometbft.py"} "$@"\n'
    )
    exe.chmod(0o755)
    return exe


def test_invalid_missing_cometbft_says_how_to_install(tmp_path: Path, capsys):
    rc = cli.main(
        [
            "localnet",
            "--cometbft",
            str(tmp_path / "no-such-cometbft"),
            "--home",
            str(tmp_path / "net"),
            "--no-fallback",
        ]
    )
    assert rc == 1
    err = capsys.readouterr().err
    assert "go install github.com/cometbft/cometbft/cmd/cometbft@v0.38" in err
    assert not (tmp_path / "net").exists()


def test_invalid_wrong_cometbft_version(tmp_path: Path, capsys):
    exe = _fake_cometbft(tmp_path, "0.37.4")
    rc = cli.main(["localnet", "--cometbft", str(exe), "--home", str(tmp_path / "net")])
    assert rc == 1
    err = capsys.readouterr().err
    assert "cometbft 0.37.4 is not supported" in err and "v0.38" in err
    assert not (tmp_path / "net").exists()


def test_invalid_port_in_use_starts_nothing(tmp_path: Path, capsys):
    exe = _fake_cometbft(tmp_path, "0.38.17")
    base = localnet_base(2)
    with socket.socket() as srv:
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT from earlier tests
        srv.bind(("127.0.0.1", base + 11))  # node1's RPC
        srv.listen()
        rc = cli.main(
            [
                "localnet",
                "--validators",
                "2",
                "--cometbft",
                str(exe),
                "--home",
                str(tmp_path / "net"),
                "--base-port",
                str(base),
            ]
        )
    assert rc == 1
    err = capsys.readouterr().err
    assert f"{base + 11} (node1 RPC)" in err and "--base-port" in err
    assert not (tmp_path / "net").exists()  # checked before anything is created


def test_invalid_unwritable_home(tmp_path: Path, capsys):
    exe = _fake_cometbft(tmp_path, "0.38.17")
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    rc = cli.main(
        [
            "localnet",
            "--cometbft",
            str(exe),
            "--home",
            str(blocker / "net"),
            "--base-port",
            str(localnet_base(4)),
        ]
    )
    assert rc == 1
    assert "cannot write to" in capsys.readouterr().err


def test_invalid_genesis_param_leaves_home_empty(tmp_path: Path, capsys):
    exe = _fake_cometbft(tmp_path, "1.0.1")
    home = tmp_path / "net"
    rc = cli.main(
        [
            "localnet",
            "--validators",
            "2",
            "--cometbft",
            str(exe),
            "--home",
            str(home),
            "--base-port",
            str(localnet_base(2)),
            "--param",
            "reveal_seconds=0",
            "--prepare-only",
        ]
    )
    assert rc == 1
    assert "reveal_seconds must be > 0" in capsys.readouterr().err
    assert not home.exists()  # checked before anything is created


def test_prepare_only_then_resume_checks(tmp_path: Path, capsys):
    exe = _fake_cometbft(tmp_path, "1.0.1")
    home = tmp_path / "net"
    base = localnet_base(3)
    args = [
        "localnet",
        "--validators",
        "3",
        "--cometbft",
        str(exe),
        "--home",
        str(home),
        "--base-port",
        str(base),
        "--prepare-only",
    ]
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert f"--address tcp://127.0.0.1:{base + 2}" in out  # how to start node0's app by hand
    plan = lp.load_plan(home)
    assert plan is not None and plan.form == "1.0" and plan.validators == 3
    genesis = (home / "node0" / "config" / "genesis.json").read_bytes()
    # Rerun: resumes (genesis untouched); a different validator count is refused.
    assert cli.main(args) == 0
    assert (home / "node0" / "config" / "genesis.json").read_bytes() == genesis
    assert cli.main([*args[:2], "4", *args[3:]]) == 1
    assert "--validators 3 to resume" in capsys.readouterr().err


@pytest.mark.timeout(120)
def test_localnet_runs_and_tears_down(tmp_path: Path):
    """One validator, the dev node standing in for `cometbft node`: real app, real heights, and
    after --until-height (or SIGTERM) no child process is left."""
    exe = _fake_cometbft(tmp_path, "0.38.17")
    home = tmp_path / "net"
    base = localnet_base(1)
    proc = subprocess.run(
        [
            *LOCALNET,
            "--validators",
            "1",
            "--cometbft",
            str(exe),
            "--home",
            str(home),
            "--base-port",
            str(base),
            "--until-height",
            "5",
            "--sidecar",
            (
                "{python} -c 'import sys, time; print(sys.argv[1:], flush=True); time.sleep(600)' "
                "{app_home} {rpc_url} {metrics_port} {extra_port1}"
            ),
            "--timeout",
            "60",
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=110,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "reached height 5 on every node" in proc.stdout
    assert (home / "logs" / "app0.log").exists() and (home / "logs" / "cometbft0.log").exists()
    # The verifier ran beside the validator (it would have failed the run had it exited).
    verify_log = (home / "logs" / "verify0.log").read_text()
    assert f"metrics on http://127.0.0.1:{base + 5}/metrics" in verify_log, verify_log[-2000:]
    # The sidecar hook got node0's own app home, RPC URL and metrics port.
    sidecar_log = (home / "logs" / "sidecar0-0.log").read_text()
    assert f"{home / 'node0' / 'app'}" in sidecar_log
    assert f"http://127.0.0.1:{base + 1}" in sidecar_log and f"'{base + 5}'" in sidecar_log
    assert f"'{base + 7}'" in sidecar_log
    assert processes_mentioning(str(home)) == []
    assert busy_ports(layout.plan_ports(1, base)) == []


@pytest.mark.timeout(120)
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_localnet_signal_stops_every_child(tmp_path: Path, sig: signal.Signals):
    """SIGTERM, or Ctrl-C (SIGINT to dlbc alone: the children run in their own sessions)."""
    exe = _fake_cometbft(tmp_path, "0.38.17")
    home = tmp_path / "net"
    base = localnet_base(1)
    proc = subprocess.Popen(
        [
            *LOCALNET,
            "--validators",
            "1",
            "--cometbft",
            str(exe),
            "--home",
            str(home),
            "--base-port",
            str(base),
            "--no-verifiers",
            "--timeout",
            "60",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=default_sigint,  # noqa: PLW1509 - only a signal reset before exec
    )
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 90
        for line in proc.stdout:
            if "Ctrl-C stops everything" in line or time.monotonic() > deadline:
                break
        assert len(processes_mentioning(str(home))) >= 2  # app + node running
        proc.send_signal(sig)
        assert proc.wait(timeout=30) == 0
    finally:
        stop_cli(proc, str(home))
    assert processes_mentioning(str(home)) == []


@pytest.mark.timeout(120)
def test_localnet_sh_runs_and_tears_down(tmp_path: Path):
    """cometbft/localnet.sh: its variables become `dlbc localnet` flags; no leftovers."""
    exe = _fake_cometbft(tmp_path, "1.0.1")
    home = tmp_path / "net"
    env = {
        **os.environ,
        "PATH": f"{exe.parent}:{os.environ['PATH']}",
        "VALIDATORS": "1",
        "LOCALNET_HOME": str(home),
        "BASE_PORT": str(localnet_base(1)),
        "UNTIL_HEIGHT": "2",
        "VERIFIERS": "0",
        "PYTHON": sys.executable,
    }
    script = REPO / "cometbft" / "localnet.sh"
    proc = subprocess.run(
        ["bash", str(script), "--param", "verify_seconds=30"],
        env=env,
        check=False,
        capture_output=True,
        text=True,
        timeout=110,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "reached height 2 on every node" in proc.stdout
    plan = lp.load_plan(home)
    assert plan is not None and plan.form == "1.0"
    assert processes_mentioning(str(home)) == []


def test_localnet_sh_without_cometbft_says_how_to_install(tmp_path: Path):
    env = {**os.environ, "COMETBFT": str(tmp_path / "missing"), "LOCALNET_HOME": str(tmp_path)}
    script = REPO / "cometbft" / "localnet.sh"
    proc = subprocess.run(
        ["bash", str(script)], check=False, env=env, capture_output=True, text=True, timeout=30
    )
    assert proc.returncode == 1
    assert "go install github.com/cometbft/cometbft/cmd/cometbft@v0.38" in proc.stderr


def test_fallback_target_is_registered_devnet():
    """The fallback runs the very `dlbc devnet` the CLI registers, with the same options."""
    from dlbc_ops.cli import devnet as devnet_cli
    from dlbc_ops.cli import main as cli

    parser = cli.build_parser()
    commands = parser._subparsers._group_actions[0].choices if parser._subparsers else {}
    assert {"localnet", "genesis", "devnet"} <= set(commands)
    assert devnet_cli in cli.SUBCOMMANDS
    argv = ["--out", "x", "--base-port", "30001", "--train-seconds", "9"]
    full = vars(parser.parse_args(["devnet", *argv]))
    assert full.pop("command") == "devnet" and full.pop("func") is devnet_cli.run_devnet
    assert vars(devnet_cli.build_parser().parse_args(argv)) == full


@pytest.mark.timeout(120)
def test_invalid_node_crash_at_start_stops_everything(tmp_path: Path):
    """A node that dies at start: the error names it with its log tail; the app started before
    it is stopped too (nothing half started is left running)."""
    exe = _fake_cometbft(tmp_path, "0.38.17")
    home = tmp_path / "net"
    proc = subprocess.run(
        [
            *LOCALNET,
            "--validators",
            "1",
            "--cometbft",
            str(exe),
            "--home",
            str(home),
            "--base-port",
            str(localnet_base(1)),
            "--no-verifiers",
            "--timeout",
            "60",
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=110,
        env={**os.environ, "FAKE_COMETBFT_NODE_FAIL": "1"},
    )
    assert proc.returncode == 1
    assert "cometbft0 exited with code 3" in proc.stderr
    assert "a node that fails at start" in proc.stderr  # the log tail is shown
    assert processes_mentioning(str(home)) == []


def test_invalid_sidecar_template_rejected_before_start(tmp_path: Path, capsys):
    exe = _fake_cometbft(tmp_path, "0.38.17")
    home = tmp_path / "net"
    rc = cli.main(
        [
            "localnet",
            "--validators",
            "1",
            "--cometbft",
            str(exe),
            "--home",
            str(home),
            "--base-port",
            str(localnet_base(1)),
            "--sidecar",
            "run {no_such_field}",
        ]
    )
    assert rc == 1
    assert "--sidecar template error" in capsys.readouterr().err
    assert not home.exists()
