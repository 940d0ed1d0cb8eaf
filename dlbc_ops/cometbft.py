"""The installed CometBFT: which binary to run (the operator's choice first, else the project's
own pinned build) and which release it is.

Why here and nowhere else: `dlbc localnet`, `dlbc genesis`, the benchmarks and the tests must all
agree on the binary, or a test could pass against one release while the demo runs another.
`make tools` (cometbft/install.sh) builds every release of `cometbft/versions.txt` into
`<project>/.tools/cometbft-<version>/cometbft`; the first line of that file is the default.

Resolution order (`find_cometbft`): an explicit `--cometbft PATH` or name, then `cometbft` on PATH
(an operator's own install wins), then the project's pinned default. `DLBC_TOOLS` moves the tools
folder (CI caches, read-only checkouts).

Supported releases (`check_supported`): the v0.38.x and v1.0.x lines, the ones with ABCI 2.0 vote
extensions on the socket field numbers DLBC speaks (docs/wire.md). Each line is a *form*: the
genesis and config.toml layout it expects (`dlbc_ops.genesis.consensus`).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

# The source checkout this package runs from (editable install): dlbc_ops/cometbft.py.
PROJECT_ROOT = Path(__file__).resolve().parents[1]
VERSIONS_FILE = PROJECT_ROOT / "cometbft" / "versions.txt"
DEFAULT_NAME = "cometbft"

# Supported CometBFT release lines ("forms"): where genesis and config keys live differs by line.
FORM_V038 = "0.38"
FORM_V1 = "1.0"
FORMS: tuple[str, ...] = (FORM_V038, FORM_V1)


class CometbftError(ValueError):
    """No usable CometBFT release: unreadable version, unsupported line; the message has the fix."""


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


# --------------------------------------------------------------------------- versions


@dataclass(frozen=True, slots=True)
class CometVersion:
    """A parsed `cometbft version` answer (e.g. "0.38.12", "v1.0.1", "0.38.17+abc123")."""

    major: int
    minor: int
    patch: int
    raw: str

    @property
    def form(self) -> str:
        """Which genesis/config form this release expects (`FORM_V038` / `FORM_V1`)."""
        return f"{self.major}.{self.minor}" if self.major == 1 else f"0.{self.minor}"

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{self.patch}"


_VERSION_RE = re.compile(r"\bv?(\d+)\.(\d+)\.(\d+)(?:[-+][0-9A-Za-z.+-]*)?")


def supported_hint() -> str:
    """The fix for a missing or unsupported binary: which lines, and how to get one."""
    return "install CometBFT v0.38.x or v1.0.x: " + install_hint()


def parse_cometbft_version(text: str) -> CometVersion:
    """Parse the output of `cometbft version`; the first semver-looking token wins."""
    match = _VERSION_RE.search(text.strip())
    if match is None:
        raise CometbftError(
            f"could not read a version from `cometbft version` output {text.strip()[:80]!r}; "
            f"fix: {supported_hint()}"
        )
    major, minor, patch = (int(g) for g in match.groups())
    return CometVersion(major, minor, patch, text.strip())


def check_supported(version: CometVersion) -> str:
    """Return the form of a supported release; refuse others with the fix.

    Why only these two: DLBC needs ABCI 2.0 (vote extensions), which starts in v0.38; v1.0 keeps
    the same socket field numbers (docs/wire.md). Later majors may change the wire again.
    """
    if (version.major, version.minor) in ((0, 38), (1, 0)):
        return version.form
    raise CometbftError(
        f"cometbft {version} is not supported: DLBC needs ABCI 2.0 with vote extensions as in "
        f"CometBFT v0.38.x or v1.0.x; fix: {supported_hint()}"
    )


def detect_cometbft(binary: str | None = None, timeout_s: float = 10.0) -> CometVersion | None:
    """Run `cometbft version` on the binary `find_cometbft` picks; None when there is none."""
    path = find_cometbft(binary)
    if path is None:
        return None
    try:
        proc = subprocess.run(
            [path, "version"], capture_output=True, text=True, timeout=timeout_s, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise CometbftError(
            f"`{path} version` failed to run ({exc}); fix: {supported_hint()}"
        ) from None
    if proc.returncode != 0:
        raise CometbftError(
            f"`{path} version` exited {proc.returncode}: {proc.stderr.strip()[:200]}; "
            f"fix: {supported_hint()}"
        )
    return parse_cometbft_version(proc.stdout or proc.stderr)
