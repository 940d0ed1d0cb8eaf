"""`dlbc_ops.cometbft`: which `cometbft version` answers are read, which releases are refused,
which binary is picked."""

from __future__ import annotations

from pathlib import Path

import pytest

from dlbc_ops import cometbft


@pytest.mark.parametrize(
    ("text", "form"),
    [("0.38.12\n", "0.38"), ("v1.0.1", "1.0"), ("0.38.17+5e2b5e7", "0.38"), ("1.0.0-rc2", "1.0")],
)
def test_parse_cometbft_version(text: str, form: str):
    assert cometbft.check_supported(cometbft.parse_cometbft_version(text)) == form


@pytest.mark.parametrize("text", ["0.37.4", "0.34.29", "1.1.0", "2.0.0"])
def test_invalid_cometbft_version_refused_with_install_hint(text: str):
    with pytest.raises(cometbft.CometbftError, match="go install github.com/cometbft/cometbft"):
        cometbft.check_supported(cometbft.parse_cometbft_version(text))


def test_invalid_cometbft_version_output():
    with pytest.raises(cometbft.CometbftError, match="could not read a version"):
        cometbft.parse_cometbft_version("command not found")


def test_find_cometbft_explicit_path_is_the_only_one_tried(tmp_path: Path):
    """An operator who names a binary means that one: a missing one is not replaced."""
    assert cometbft.find_cometbft(str(tmp_path / "missing")) is None
    exe = tmp_path / "cometbft-custom"
    exe.write_text("#!/bin/sh\necho 0.38.17\n")
    exe.chmod(0o755)
    assert cometbft.find_cometbft(str(exe)) == str(exe)
    version = cometbft.detect_cometbft(str(exe))
    assert version is not None and cometbft.check_supported(version) == cometbft.FORM_V038
