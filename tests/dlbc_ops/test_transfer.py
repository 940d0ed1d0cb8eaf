"""`dlbc transfer` and the devnet's faucet (issue 13): a new key can be funded, a refusal is one
clear line with exit 2. Real chain (app + dev node), real CLI, real key files."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from abci_app.keyfile import save_key
from dlbc_ops.cli.devnet import parse_funds
from dlbc_ops.cli.main import main as dlbc
from dlbc_ops.devnet import faucet
from tests.support.chains import local_chain
from tests.support.keys import keypair as key
from tests.support.ports import free_port

PARAMS = {"train_seconds": 3, "reveal_seconds": 2, "verify_seconds": 2}
START = 1_000_000


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("transfer")
    tap, _ = faucet.load_or_create(tmp / "out")
    rich = key(80)
    with local_chain(tmp / "chain", params=PARAMS,
                     balances={rich.address.hex(): START,
                               tap.address.hex(): faucet.FAUCET_BALANCE}) as ch:
        yield {"chain": ch, "rich": rich, "rich_file": save_key(tmp / "rich.json", rich),
               "home": tmp / "home", "out": tmp / "out", "faucet": tap}


def _balance(chain: dict, addr: str) -> int:
    return int(chain["chain"].rpc.query_json(f"accounts/{addr}")["balance"])


def test_transfer_to_a_key_name_prints_tx_and_balances(chain: dict,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    home = chain["home"]
    assert dlbc(["keys", "new", "newbie", "--home", str(home)]) == 0
    addr = re.search(r"address: ([0-9a-f]{40})", capsys.readouterr().out).group(1)
    code = dlbc(["transfer", "--key", str(chain["rich_file"]), "--to", "newbie", "--home",
                 str(home), "--amount", "12345", "--rpc", chain["chain"].rpc_url])
    out = capsys.readouterr().out
    assert code == 0, out
    m = re.search(r"transferred 12345 from [0-9a-f]{40} to ([0-9a-f]{40}): tx ([0-9A-F]{64}) "
                  r"at height (\d+), fee (\d+)", out)
    assert m and m.group(1) == addr, out
    assert _balance(chain, addr) == 12345
    assert f"balance {addr}: 12345" in out
    rich = chain["rich"].address.hex()
    assert f"balance {rich}: {_balance(chain, rich)}" in out
    tx = chain["chain"].rpc.tx(m.group(2))
    assert tx.height == int(m.group(3))


@pytest.mark.parametrize(("extra", "needle"), [
    (["--to", "11" * 20, "--amount", str(10 * START)], "(INSUFFICIENT_FUNDS)"),
    (["--to", "not-an-address!", "--amount", "5"], "neither a 40-hex address nor a usable key"),
    (["--to", "11" * 20, "--amount", "0"], "--amount must be >= 1"),
])
def test_invalid_transfer(chain: dict, capsys: pytest.CaptureFixture[str], extra: list[str],
                          needle: str) -> None:
    before = _balance(chain, chain["rich"].address.hex())
    code = dlbc(["transfer", "--key", str(chain["rich_file"]), *extra,
                 "--rpc", chain["chain"].rpc_url])
    err = capsys.readouterr().err
    assert code == 2 and needle in err, err
    assert err.count("\n") == 1  # one line, no traceback
    assert _balance(chain, chain["rich"].address.hex()) == before


def test_invalid_transfer_node_unreachable(chain: dict, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    code = dlbc(["transfer", "--key", str(chain["rich_file"]), "--to", "11" * 20, "--amount",
                 "5", "--rpc", url])
    assert code == 2 and f"node unreachable at {url}" in capsys.readouterr().err


def test_faucet_pays_each_fund(chain: dict) -> None:
    a, b = key(81).address, key(82).address
    said: list[str] = []
    faucet.pay(chain["chain"].rpc_url, chain["faucet"], [(a, 500), (b, 700)], said.append)
    assert _balance(chain, a.hex()) == 500 and _balance(chain, b.hex()) == 700
    assert len(said) == 2 and f"sent 700 to {b.hex()}" in said[1]
    # The same key again on the next start (a resumed devnet): paid again from the faucet
    faucet.pay(chain["chain"].rpc_url, chain["faucet"], [(a, 500)], said.append)
    assert _balance(chain, a.hex()) == 1000
    # ... and its key file is what `dlbc transfer --key` takes
    assert faucet.load_or_create(chain["out"])[0].address == chain["faucet"].address


def test_invalid_faucet_cannot_pay(chain: dict) -> None:
    with pytest.raises(faucet.FaucetError, match="could not pay it"):
        faucet.pay(chain["chain"].rpc_url, chain["faucet"],
                   [(key(83).address, 10 * faucet.FAUCET_BALANCE)], lambda _: None)


@pytest.mark.parametrize("spec", ["abc=5", "11" * 20, f"{'11' * 20}=0", f"{'11' * 20}=x"])
def test_invalid_fund_spec(spec: str) -> None:
    with pytest.raises(ValueError, match="--fund"):
        parse_funds([spec])


def test_fund_spec_takes_hex_and_key_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DLBC_HOME", str(tmp_path))
    assert dlbc(["keys", "new", "pub", "--home", str(tmp_path)]) == 0
    from abci_app.keyfile import key_path, load_key

    addr = load_key(key_path(tmp_path, "pub")).address
    assert parse_funds([f"{'ab' * 20}=5", "pub=7"]) == [(bytes.fromhex("ab" * 20), 5), (addr, 7)]
