"""Which `cometbft` binary to run: the operator's choice first, else the project's own pinned build.

Why here and nowhere else: `dlbc localnet`, `dlbc genesis`, the benchmarks and the tests must all
agree on the binary, or a test could pass against one release while the demo runs another.
`make tools` (cometbft/install.sh) builds every release of `cometbft/versions.txt` into
`<project>/.tools/cometbft-<version>/cometbft`; the first line of that file is the default.

Resolution order (`find_cometbft`): an explicit `--cometbft PATH` or name, then `cometbft` on PATH
(an operator's own install wins), then the project's pinned default. `DLBC_TOOLS` moves the tools
folder (CI caches, read-only checkouts).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

# The source checkout this package runs from (editable install): dlbc_ops/localnet/binary.py.
PROJECT_ROOT = Path(__file__).resolve().parents[2]
VERSIONS_FILE = PROJECT_ROOT / "cometbft" / "versions.txt"
DEFAULT_NAME = "cometbft"


def tools_dir() -> Path:
    """Where `make tools` put the pinned builds."""
    return Path(os.environ.get("DLBC_TOOLS") or PROJECT_ROOT / ".tools")


def pinned_versions() -> list[str]:
    """The releases of `cometbft/versions.txt`, default first (empty outside a source checkout)."""
    try:
        lines = VERSIONS_FILE.read_text().splitlines()
    except OSError:
        return []
    return [ln.split()[0] for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]


def pinned_binary(version: str) -> Path | None:
    """The project's build of `version` ("v0.38.26"), or None when it was not built."""
    path = tools_dir() / f"cometbft-{version}" / "cometbft"
    return path if path.is_file() and os.access(path, os.X_OK) else None


def pinned_line(line: str) -> Path | None:
    """The project's build of a release line ("0.38" or "1.0"), or None."""
    for version in pinned_versions():
        if version.lstrip("v").startswith(line + "."):
            return pinned_binary(version)
    return None


def find_cometbft(explicit: str | None = None) -> str | None:
    """The binary to run, or None when there is none to be had (then the dev node is used).

    `explicit` is `--cometbft`: a path or a name looked up on PATH; when it is given and not
    found, nothing else is tried (an operator who names a binary means that one)."""
    if explicit and explicit != DEFAULT_NAME:
        return shutil.which(explicit) or (explicit if Path(explicit).is_file() else None)
    on_path = shutil.which(DEFAULT_NAME)
    if on_path is not None:
        return on_path
    versions = pinned_versions()
    if versions:
        found = pinned_binary(versions[0])
        if found is not None:
            return str(found)
    return None


def install_hint() -> str:
    """One line that tells the operator how to get a binary, the project's way first."""
    versions = pinned_versions()
    pin = versions[0] if versions else "v0.38.26"
    return (
        f"run `make tools` (builds the pinned CometBFT {', '.join(versions) or pin} into "
        f"{tools_dir()} with Go >= 1.22), or `go install "
        f"github.com/cometbft/cometbft/cmd/cometbft@{pin}` and put it on PATH, or pass "
        "--cometbft PATH"
    )
