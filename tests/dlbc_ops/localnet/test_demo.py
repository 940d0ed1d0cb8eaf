"""`dlbc localnet --demo` (the main job on real CometBFT): keys, genesis funding, the publisher and
miners started once per network with the right flags, the devnet fallback mapping, teardown."""

from __future__ import annotations

import argparse
import json
import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from abci_app.keyfile import KeyPair, load_key, save_key
from dlbc_ops import genesis as gen
from dlbc_ops.cli import main as cli
from dlbc_ops.cli.localnet import devnet_argv
from dlbc_ops.localnet import demo, layout
from dlbc_ops.localnet.ports import busy_ports, free_base_port
from tests.support import REPO
from tests.support.ports import localnet_base
from tests.support.processes import processes_mentioning

from .test_localnet_cli import _fake_cometbft


def _free_demo_base(validators: int) -> int:
    """A base whose node ports and demo artifact ports are all free."""
    return free_base_port(validators, extra=len(demo.demo_ports(validators, 42000)), start=42000,
                          step=157)


def _localnet_args(**over: object) -> argparse.Namespace:
    parser = cli.build_parser()
    ns = parser.parse_args(["localnet"])
    for k, v in over.items():
        setattr(ns, k, v)
    return ns


# ------------------------------------------------------------------------------- the plan (pure)


def test_demo_processes_once_against_node0_with_devnet_budgets(tmp_path: Path):
    settings = demo.DemoSettings(samples=24, small_budget_s=7.5, reward=500)
    procs = demo.demo_processes(
        tmp_path, "http://127.0.0.1:30001", 4, 30000, settings, "/py", log_level="warning"
    )
    assert [p.name for p in procs] == ["publisher", "miner-1", "miner-2"]
    # After the 4 nodes' ports 30000..30039, distinct from every node port.
    assert [p.artifact_port for p in procs] == [30040, 30041, 30042]
    node_ports = {port for n in layout.plan_ports(4, 30000) for _, port in n.labelled()}
    assert not node_ports & {p.artifact_port for p in procs}
    parser = cli.build_parser()
    parsed = {}
    for p in procs:
        assert p.argv[:3] == ["/py", "-m", "dlbc_ops"]
        # The argv is what the real `dlbc task submit` / `dlbc mine` parsers accept.
        parsed[p.name] = parser.parse_args(p.argv[3:])
        assert parsed[p.name].rpc == "http://127.0.0.1:30001"
        assert parsed[p.name].key == str(tmp_path / "keys" / f"{p.name}.json")
        assert parsed[p.name].workdir == str(tmp_path / p.name)
        assert parsed[p.name].artifact_port == p.artifact_port
        assert parsed[p.name].log_level == "warning"
    pub = parsed["publisher"]
    assert pub.demo and pub.reward == 500 and pub.samples == 24 and pub.name == "demo-1"
    assert pub.keep_pending == 1  # tasks stay pending like devnet's, so every round has work
    assert parsed["miner-1"].max_train_seconds is None  # all of TRAIN, as devnet's miner-1
    assert parsed["miner-2"].max_train_seconds == 7.5
    assert parsed["miner-1"].threads == parsed["miner-2"].threads == 1


def test_next_task_name_never_reuses_a_prepared_task(tmp_path: Path):
    assert demo.next_task_name(tmp_path / "publisher") == "demo-1"
    (tmp_path / "publisher" / "artifacts" / "demo-1").mkdir(parents=True)
    (tmp_path / "publisher" / "artifacts" / "demo-3").mkdir()
    (tmp_path / "publisher" / "artifacts" / "other").mkdir()
    assert demo.next_task_name(tmp_path / "publisher") == "demo-4"


def test_genesis_inputs_fund_publisher_and_respect_overrides():
    key = KeyPair.from_seed(bytes(range(32)))
    settings = demo.DemoSettings()
    accounts, params = demo.genesis_inputs([], [], key, settings)
    assert accounts == [(key.address_hex, demo.PUBLISHER_BALANCE)]
    assert dict(params) == {"train_seconds": 60, "reveal_seconds": 12, "verify_seconds": 48}
    state = gen.build_app_state(None, accounts=accounts, params=params)
    assert demo.genesis_balance({"app_state": state}, key.address_hex) == demo.PUBLISHER_BALANCE
    assert state["params"]["train_seconds"] == 60
    # The operator's own values win and are not duplicated (a duplicate would be refused).
    accounts, params = demo.genesis_inputs(
        [(key.address_hex, 7)], [("train_seconds", 200)], key, settings
    )
    assert accounts == [(key.address_hex, 7)]
    state = gen.build_app_state(None, accounts=accounts, params=params)
    assert state["params"]["train_seconds"] == 200 and state["params"]["verify_seconds"] == 48
    assert demo.verifier_args(params, settings) == ["--threads", "1", "--per-model-seconds", "44",
                                                    "--per-miner-seconds", "88"]


def test_genesis_inputs_fund_the_miners_too():
    """Miners bond, pay fees and lock reveal deposits: the demo funds them (unless the operator
    funds an address himself), each enough for the bond and many rounds."""
    pub, m1, m2 = (KeyPair.from_seed(bytes([i]) * 32) for i in (1, 2, 3))
    settings = demo.DemoSettings()
    accounts, _ = demo.genesis_inputs([(m2.address_hex, 5)], [], pub, settings, [m1, m2])
    assert accounts == [(m2.address_hex, 5), (pub.address_hex, demo.PUBLISHER_BALANCE),
                        (m1.address_hex, demo.MINER_BALANCE)]
    state = gen.build_app_state(None, accounts=accounts, params=[])
    p = state["params"]
    assert demo.MINER_BALANCE >= p["miner_bond"] + 20 * (p["reveal_deposit"] + 1_000)
    assert settings.reward >= p["min_task_reward"]


def test_invalid_demo_settings_and_port_range():
    with pytest.raises(layout.LocalnetError, match="--reward"):
        demo.DemoSettings(reward=0).check()
    with pytest.raises(layout.LocalnetError, match="--small-budget"):
        demo.DemoSettings(small_budget_s=0).check()
    with pytest.raises(layout.LocalnetError, match="lower --base-port"):
        demo.demo_ports(4, 65535 - 41)


def test_load_or_generate_keys_reuses_files_and_writes_nothing_until_saved(tmp_path: Path):
    kept = KeyPair.generate()
    save_key(tmp_path / "keys" / "miner-1.json", kept)
    keys = demo.load_or_generate_keys(tmp_path)
    assert keys.keys["miner-1"].address == kept.address and keys.new == ["publisher", "miner-2"]
    assert not (tmp_path / "keys" / "publisher.json").exists()
    keys.save_new()
    path = tmp_path / "keys" / "publisher.json"
    assert load_key(path).address == keys.publisher.address
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    (tmp_path / "keys" / "miner-2.json").write_text("{not json")
    with pytest.raises(layout.LocalnetError, match="miner-2.json"):
        demo.load_or_generate_keys(tmp_path)


def test_round_summary_reads_the_round_query():
    def answer(doc: object) -> dict[str, object]:
        import base64

        return {"response": {"value": base64.b64encode(json.dumps(doc).encode()).decode()}}

    assert "no round yet" in str(demo.round_summary(answer({"round": 0})))
    line = demo.round_summary(
        answer({"round": 2, "status": "closed", "task_id": 1, "winner": {"miner": "ab12"}})
    )
    assert line == "round 2 closed, task 1, winner ab12"
    assert demo.round_summary(None) is None


def _answer(doc: object) -> dict[str, object]:
    import base64

    return {"response": {"value": base64.b64encode(json.dumps(doc).encode()).decode()}}


def test_rounds_summary_shows_every_active_round_of_a_pipelined_chain():
    active = {"rounds": [{"round": 3, "phase": "VERIFY", "task_id": 3},
                         {"round": 4, "phase": "TRAIN", "task_id": 5},
                         {"round": 5, "phase": "ANNOUNCED", "task_id": 6}],
              "last_block_time_ns": 1}
    closed = _answer({"round": 5, "status": "active", "phase": "ANNOUNCED", "task_id": 6})
    assert demo.rounds_summary(_answer(active), closed) == (
        "round 3 VERIFY, task 3; round 4 TRAIN, task 5; round 5 ANNOUNCED, task 6")
    # nothing active (idle chain, or a node without rounds/active): the `round` query's line
    idle = _answer({"round": 2, "status": "closed", "task_id": 1, "outcome": "no_reveal"})
    assert demo.rounds_summary(_answer({"rounds": []}), idle) == \
        "round 2 closed, task 1, outcome no_reveal"
    assert demo.rounds_summary(None, idle) == "round 2 closed, task 1, outcome no_reveal"


def test_demo_genesis_pipelines_rounds_with_the_demo_phases():
    """60/12/30: REVEAL + VERIFY fit in TRAIN, so a demo chain gets two rounds in flight; phases
    an operator sets too short for that fall back to sequential rounds, and naming
    rounds_in_flight=1 keeps them sequential."""
    key = KeyPair.from_seed(bytes(range(32)))
    settings = demo.DemoSettings()
    accounts, params = demo.genesis_inputs([], [], key, settings)
    p = gen.build_app_state(None, accounts=accounts, params=params)["params"]
    assert (p["train_seconds"], p["reveal_seconds"], p["verify_seconds"]) == (60, 12, 48)
    assert p["rounds_in_flight"] == 2
    _, params = demo.genesis_inputs([], [("verify_seconds", 50)], key, settings)
    assert gen.build_app_state(None, accounts=accounts, params=params)["params"][
        "rounds_in_flight"] == 1
    _, params = demo.genesis_inputs([], [("rounds_in_flight", 1)], key, settings)
    assert gen.build_app_state(None, accounts=accounts, params=params)["params"][
        "rounds_in_flight"] == 1


# ------------------------------------------------------------------------- the devnet fallback


def test_devnet_argv_maps_options_and_explains_ignored_ones(tmp_path: Path):
    args = _localnet_args(
        home=tmp_path / "h",
        validators=4,
        base_port=36656,
        demo=True,
        param=["train_seconds=90", "tolerance_ppm=1"],
        small_budget=3.0,
        samples=None,
    )
    argv, notes = devnet_argv(args)
    assert argv == [
        "devnet", "--out", str(tmp_path / "h" / "devnet"), "--base-port", "36657",
        "--train-seconds", "90", "--small-budget", "3",
    ]  # fmt: skip
    text = " ".join(notes)
    assert "--validators 4 is ignored" in text and "single validator" in text
    assert "tolerance_ppm" in text
    # The mapped argv is what the real devnet parser takes.
    parsed = cli.build_parser().parse_args(argv)
    assert parsed.base_port == 36657 and parsed.train_seconds == 90
    argv, notes = devnet_argv(_localnet_args(home=tmp_path, validators=1))
    assert not any("--validators" in n for n in notes)
    assert any("always runs the demo" in n for n in notes)  # no --demo given


def test_devnet_argv_maps_sequential_rounds(tmp_path: Path):
    argv, notes = devnet_argv(_localnet_args(home=tmp_path, param=["rounds_in_flight=1"]))
    assert argv[-1] == "--sequential" and cli.build_parser().parse_args(argv).sequential
    argv, notes = devnet_argv(_localnet_args(home=tmp_path, param=["rounds_in_flight=2"]))
    assert "--sequential" not in argv and not any("rounds_in_flight" in n for n in notes)


def test_fallback_without_cometbft_runs_devnet_with_mapped_options(tmp_path: Path, capsys):
    """The real `dlbc devnet` runs on the mapped options; its RPC port (base+1) is held here, so it
    stops at its own port check before starting anything."""
    base = _free_demo_base(1)
    with socket.socket() as srv:
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT from earlier tests
        srv.bind(("127.0.0.1", base + 1))
        srv.listen()
        rc = cli.main(
            [
                "localnet", "--validators", "4", "--demo",
                "--cometbft", str(tmp_path / "no-cometbft"),
                "--home", str(tmp_path / "net"), "--base-port", str(base),
            ]
        )  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 1
    assert "go install github.com/cometbft/cometbft/cmd/cometbft@v0.38" in err
    assert "--validators 4 is ignored" in err
    assert f"running: dlbc devnet --out {tmp_path / 'net' / 'devnet'} --base-port {base + 1}" in err
    # devnet itself checked the mapped RPC port and stopped before starting anything
    assert f"already in use on 127.0.0.1: {base + 1} (RPC)" in err


# ------------------------------------------------------------------------------ bad input (CLI)


def test_invalid_demo_port_in_use_starts_nothing(tmp_path: Path, capsys):
    exe = _fake_cometbft(tmp_path, "0.38.17")
    base = _free_demo_base(1)
    with socket.socket() as srv:
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT from earlier tests
        srv.bind(("127.0.0.1", base + 10))  # the publisher's artifact port with 1 validator
        srv.listen()
        rc = cli.main(
            [
                "localnet", "--validators", "1", "--demo", "--cometbft", str(exe),
                "--home", str(tmp_path / "net"), "--base-port", str(base),
            ]
        )  # fmt: skip
    assert rc == 1
    err = capsys.readouterr().err
    assert f"{base + 10} (publisher artifacts)" in err and "--base-port" in err
    assert not (tmp_path / "net").exists()  # no keys written either


def test_invalid_demo_on_a_chain_made_without_it(tmp_path: Path, capsys):
    exe = _fake_cometbft(tmp_path, "1.0.1")
    home = tmp_path / "net"
    base = localnet_base(2)
    args = [
        "localnet", "--validators", "2", "--cometbft", str(exe), "--home", str(home),
        "--base-port", str(base), "--prepare-only",
    ]  # fmt: skip
    assert cli.main(args) == 0
    capsys.readouterr()
    assert cli.main([*args, "--demo"]) == 1
    err = capsys.readouterr().err
    assert "does not fund the demo publisher" in err and "fresh --home" in err
    assert not (home / "keys").exists()  # refused before any key was written


def test_demo_prepare_only_funds_publisher_in_every_genesis_and_resumes(tmp_path: Path, capsys):
    exe = _fake_cometbft(tmp_path, "0.38.17")
    home = tmp_path / "net"
    base = _free_demo_base(3)
    args = [
        "localnet", "--validators", "3", "--demo", "--cometbft", str(exe), "--home", str(home),
        "--base-port", str(base), "--prepare-only", "--param", "reveal_seconds=20",
    ]  # fmt: skip
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    publisher = load_key(home / "keys" / "publisher.json")
    digests = set()
    for i in range(3):
        raw = (home / f"node{i}" / "config" / "genesis.json").read_bytes()
        digests.add(raw)
        doc = json.loads(raw)
        assert demo.genesis_balance(doc, publisher.address_hex) == demo.PUBLISHER_BALANCE
        p = doc["app_state"]["params"]
        # VERIFY fills what TRAIN leaves after the operator's REVEAL: 20 + 40 <= 60, pipelined
        assert (p["train_seconds"], p["reveal_seconds"], p["verify_seconds"]) == (60, 20, 40)
        assert p["rounds_in_flight"] == 2
    assert len(digests) == 1
    # The start commands: one publisher for the network on node0's RPC, two miners on node1's
    # (their txs must reach the proposer by gossip), one verifier per node on its own node.
    assert out.count(" task submit --demo ") == 1 and out.count(" mine ") == 2
    node1_rpc = layout.node_ports(1, base).rpc
    assert out.count(f"--rpc http://127.0.0.1:{base + 1} ") == 1 + 1  # + node0's verifier
    assert out.count(f"--rpc http://127.0.0.1:{node1_rpc} ") == 2 + 1  # + node1's verifier
    # Verifiers are bounded like devnet's: one thread, VERIFY less 4 s per model (the top
    # model's check replays its trajectory: demo.per_model_seconds)
    assert out.count("--threads 1 --per-model-seconds 36 --per-miner-seconds 72") == 3
    # Rerun: same keys, genesis untouched, accepted as a demo chain.
    assert cli.main(args) == 0
    assert load_key(home / "keys" / "publisher.json").address == publisher.address
    assert (home / "node0" / "config" / "genesis.json").read_bytes() in digests
    # The verifiers follow the chain's VERIFY (genesis), not a --param the resumed run ignores.
    capsys.readouterr()
    assert cli.main([*args, "--param", "verify_seconds=100"]) == 0
    out, err = capsys.readouterr()
    assert out.count("--per-model-seconds 36") == 3 and "are ignored" in err


# ------------------------------------------------------------------------- processes (fake node)


@pytest.mark.timeout(90)
def test_localnet_demo_starts_sidecars_once_and_tears_down(tmp_path: Path):
    """`dlbc localnet --validators 1 --demo` with the dev node standing in for `cometbft node`:
    keys written, publisher funded, publisher + 2 miners started once against node0 and serving
    their artifact ports, the verifier bounded like devnet's, nothing left running after."""
    exe = _fake_cometbft(tmp_path, "0.38.17")
    home = tmp_path / "net"
    base = _free_demo_base(1)
    proc = subprocess.run(
        [
            sys.executable, "-m", "dlbc_ops.cli.main", "localnet", "--validators", "1", "--demo",
            "--cometbft", str(exe), "--home", str(home), "--base-port", str(base),
            "--samples", "16", "--until-height", "3", "--timeout", "60",
        ],
        check=False, capture_output=True, text=True, timeout=85,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "started the demo publisher and miners" in out
    assert "reached height 3 on every node" in out
    assert f"dlbc query round --rpc http://127.0.0.1:{base + 1}" in out
    assert str(home / "logs") in out
    keys = {n: load_key(home / "keys" / f"{n}.json") for n in ("publisher", "miner-1", "miner-2")}
    for n in keys:
        assert stat.S_IMODE((home / "keys" / f"{n}.json").stat().st_mode) == 0o600
    genesis = json.loads((home / "node0" / "config" / "genesis.json").read_text())
    assert demo.genesis_balance(genesis, keys["publisher"].address_hex) == demo.PUBLISHER_BALANCE
    for m in demo.MINERS:  # a miner pays its bond, fees and deposits (docs/economics.md)
        assert demo.genesis_balance(genesis, keys[m].address_hex) == demo.MINER_BALANCE
    assert genesis["app_state"]["params"]["train_seconds"] == 60
    # Each started once, as its own account, with its own line and log.
    starts = ("  publisher (", "  miner-")
    lines = [ln for ln in out.splitlines() if ln.startswith(starts)]
    assert len(lines) == 3
    for ln, name in zip(lines, ("publisher", "miner-1", "miner-2"), strict=True):
        assert ln.startswith(f"  {name} ({keys[name].address_hex}): ")
        assert f"--rpc http://127.0.0.1:{base + 1} " in ln
    assert "--max-train-seconds 5" in lines[2] and "--max-train-seconds" not in lines[1]
    logs = home / "logs"
    assert sorted(p.name for p in logs.iterdir()) == [
        "app0.log", "cometbft0.log", "miner-1.log", "miner-2.log", "publisher.log", "verify0.log",
    ]  # fmt: skip
    # "started the demo publisher and miners" is printed only once all three served their
    # artifact ports, i.e. each parsed its flags, loaded its key and opened its workdir.
    assert (home / "publisher" / "artifacts").is_dir()
    assert (home / "miner-1").is_dir() and (home / "miner-2").is_dir()
    for name in ("publisher", "miner-1", "miner-2"):
        text = (logs / f"{name}.log").read_text()
        assert "Traceback" not in text and "dlbc:" not in text, text[-2000:]
    verify_log = (logs / "verify0.log").read_text()
    assert f"metrics on http://127.0.0.1:{base + 5}/metrics" in verify_log, verify_log[-2000:]
    assert processes_mentioning(str(home)) == []
    assert busy_ports(layout.plan_ports(1, base)) == []
    assert all(busy_ports([layout.NodePorts(p, p, p, p, p)]) == [] for _, p in demo.demo_ports(1, base))


@pytest.mark.timeout(90)
def test_localnet_sh_demo_starts_sidecars_once_and_tears_down(tmp_path: Path):
    """cometbft/localnet.sh with DEMO=1: its variables and arguments reach `dlbc localnet --demo`,
    which starts the publisher and miners once and leaves nothing running."""
    exe = _fake_cometbft(tmp_path, "0.38.17")
    home = tmp_path / "net"
    base = _free_demo_base(1)
    env = {
        **os.environ,
        "PATH": f"{exe.parent}:{os.environ['PATH']}",
        "VALIDATORS": "1",
        "LOCALNET_HOME": str(home),
        "BASE_PORT": str(base),
        "UNTIL_HEIGHT": "3",
        "DEMO": "1",
        "PYTHON": sys.executable,
    }
    script = REPO / "cometbft" / "localnet.sh"
    proc = subprocess.run(
        ["bash", str(script), "--samples", "16", "--param", "verify_seconds=20"],
        env=env, check=False, capture_output=True, text=True, timeout=85,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "reached height 3 on every node" in out
    for name in ("publisher", "miner-1", "miner-2"):
        assert out.count(f"  {name} (") == 1, out  # "  publisher (ADDRESS): ARGV"
        assert (home / "logs" / f"{name}.log").exists()
    assert f"--artifact-port {base + 10} --name demo-1" in out
    publisher = load_key(home / "keys" / "publisher.json")
    genesis = json.loads((home / "node0" / "config" / "genesis.json").read_text())
    assert demo.genesis_balance(genesis, publisher.address_hex) == demo.PUBLISHER_BALANCE
    assert genesis["app_state"]["params"]["verify_seconds"] == 20
    assert processes_mentioning(str(home)) == []


def test_demo_verifier_gives_each_model_its_whole_bound_even_after_a_timed_out_check() -> None:
    # Before demo.per_miner_seconds, the verifier's default 20 s per-miner bound capped every
    # demo model at 20 s, and one check that ran out of time (charged as unconfirmed work)
    # left the miner nothing the next round: a slow CI machine settled a round with no winner.
    from training.sidecars.verify_plan import MinerLedger

    per_model = demo.per_model_seconds(48)
    ledger = MinerLedger(demo.per_miner_seconds(48), window_rounds=10)
    miner = b"\x01" * 20
    assert ledger.budget(miner, 1, per_model) == per_model == 44
    ledger.charge(miner, 1, per_model)  # round 1's check ran out of time: no verdict
    assert ledger.budget(miner, 2, per_model) == per_model
