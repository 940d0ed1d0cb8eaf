"""Line-level TOML patching: only owned keys change, comments survive, output always parses."""

from __future__ import annotations

import tomllib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dlbc_ops.localnet.tomlpatch import TomlPatchError, format_value, patch_toml

TEXT = """# top comment
proxy_app = "tcp://127.0.0.1:26658"   
moniker = "node0"

[rpc]
# the RPC address
laddr = "tcp://127.0.0.1:26657"
cors_allowed_methods = ["HEAD",
  "GET"]

[p2p]
  laddr = "tcp://0.0.0.0:26656"
persistent_peers = ""
"""


def test_patch_toml_rewrites_only_owned_lines():
    out = patch_toml(TEXT, {"p2p": {"laddr": "tcp://127.0.0.1:1"}, "": {"moniker": "m"}})
    old_lines, new_lines = TEXT.splitlines(), out.splitlines()
    changed = [(a, b) for a, b in zip(old_lines, new_lines, strict=True) if a != b]
    assert changed == [
        ('moniker = "node0"', 'moniker = "m"'),
        ('  laddr = "tcp://0.0.0.0:26656"', '  laddr = "tcp://127.0.0.1:1"'),  # indent kept
    ]
    doc = tomllib.loads(out)
    assert doc["rpc"]["laddr"] == "tcp://127.0.0.1:26657"  # same key, other section: untouched


def test_patch_toml_adds_missing_keys_and_sections():
    out = patch_toml(
        TEXT,
        {
            "rpc": {"pprof_laddr": ""},
            "": {"log_level": "info"},
            "mempool": {"max_tx_bytes": 65536, "recheck": True},
        },
    )
    doc = tomllib.loads(out)
    assert doc["rpc"]["pprof_laddr"] == ""
    assert doc["rpc"]["cors_allowed_methods"] == ["HEAD", "GET"]
    assert doc["log_level"] == "info"
    assert doc["mempool"] == {"max_tx_bytes": 65536, "recheck": True}
    assert out.startswith("# top comment\n")


def test_invalid_multiline_value_is_refused():
    with pytest.raises(TomlPatchError, match="spans several lines"):
        patch_toml(TEXT, {"rpc": {"cors_allowed_methods": "x"}})


def test_patch_toml_is_idempotent():
    edits = {"p2p": {"persistent_peers": "a@127.0.0.1:1,b@127.0.0.1:2"}, "x": {"y": 1}}
    once = patch_toml(TEXT, edits)
    assert patch_toml(once, edits) == once


def test_invalid_value_type():
    with pytest.raises(TomlPatchError):
        format_value(1.5)  # type: ignore[arg-type]


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=40))
def test_strings_round_trip_through_tomllib(value: str):
    out = patch_toml(TEXT, {"p2p": {"persistent_peers": value}})
    assert tomllib.loads(out)["p2p"]["persistent_peers"] == value
