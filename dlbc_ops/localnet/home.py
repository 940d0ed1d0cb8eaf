"""The localnet's folder (--home): make a fresh one from `cometbft testnet`, or resume one.

Fresh: `cometbft testnet --v N` into a hidden temporary folder inside --home, patched there
(`plan.prepare_localnet`, pure over the folder), then moved into place with the manifest last,
so a crash half way leaves no manifest and the next run refuses the folder instead of resuming
half of it. Existing (the manifest is there): the genesis is never rewritten (the chain
exists); only the ports are moved to the new --base-port.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from dlbc_ops import genesis as gen
from dlbc_ops.localnet import demo, layout, nodeconfig
from dlbc_ops.localnet import plan as lp
from dlbc_ops.preflight import require_writable

DEVNET_DIR = "devnet"
"""Where the no-cometbft fallback keeps its `dlbc devnet --out` folder, inside --home."""

#: Entries a fresh --home may already hold: the demo's key files (written before the genesis
#: that funds them) and the `dlbc devnet` fallback's folder.
_ALLOWED_IN_FRESH_HOME = frozenset({demo.KEYS_DIR, DEVNET_DIR})


@dataclass(frozen=True, slots=True)
class HomeRequest:
    """What the operator asked for (`dlbc localnet` flags) that shapes the folder."""

    validators: int
    base_port: int
    chain_id: str
    settings: nodeconfig.ConsensusSettings


def check_writable(root: Path) -> None:
    """Create `root` (and a probe file in it) now, so a bad --home fails before anything runs."""
    require_writable(root, "pass --home DIR with a folder you can write to",
                     error=layout.LocalnetError)


def generate_testnet(cometbft: str, root: Path, validators: int) -> Path:
    """`cometbft testnet --v N --o TMP/net` with TMP a hidden folder inside the (empty) `root`;
    returns TMP (the caller moves its nodes into `root`, or removes it)."""
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".testnet-", dir=root))
    out = tmp / "net"
    argv = [cometbft, "testnet", "--v", str(validators), "--o", str(out)]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise layout.LocalnetError(f"`{shlex.join(argv)}` failed: {exc}") from None
    if proc.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        raise layout.LocalnetError(
            f"`{shlex.join(argv)}` exited {proc.returncode}: {(proc.stderr or proc.stdout)[-400:]}"
        )
    return tmp


def _install_prepared(tmp: Path, root: Path) -> None:
    """Move the patched nodes from TMP/net into `root` (which holds nothing of a localnet yet)."""
    net = tmp / "net"
    # The manifest marks a finished localnet, so it moves last (see the module docstring).
    for entry in sorted(net.iterdir(), key=lambda p: (p.name == layout.MANIFEST, p.name)):
        os.replace(entry, root / entry.name)
    shutil.rmtree(tmp, ignore_errors=True)


def resume_home(root: Path, existing: lp.LocalnetPlan, form: str, cometbft: str,
                req: HomeRequest) -> lp.LocalnetPlan:
    """An existing localnet: refuse another shape or CometBFT line, move its ports."""
    if existing.validators != req.validators:
        raise layout.LocalnetError(
            f"{root} holds a {existing.validators}-validator localnet, not {req.validators}; "
            f"fix: pass --validators {existing.validators} to resume it, or a fresh --home"
        )
    if existing.form != form:
        raise layout.LocalnetError(
            f"{root} was made for CometBFT {existing.form} but `{cometbft}` is {form}; "
            "fix: use the same cometbft, or a fresh --home"
        )
    existing.root = str(root)  # the folder may have been moved since
    settings = req.settings
    if not settings.max_tx_bytes:
        doc = gen.load_genesis(layout.node_home(root, 0) / "config" / "genesis.json")
        settings = replace(settings, max_tx_bytes=lp.app_max_tx_bytes(doc))
    return lp.repatch_ports(root, existing, req.base_port, settings)


def create_home(root: Path, form: str, cometbft: str, req: HomeRequest,
                accounts: Iterable[tuple[str, int]],
                params: Iterable[tuple[str, Any]]) -> lp.LocalnetPlan:
    """A fresh folder: generate, patch (genesis from `accounts`/`params`), install."""
    if any(p.name not in _ALLOWED_IN_FRESH_HOME for p in root.iterdir()):
        raise layout.LocalnetError(
            f"{root} is not empty and holds no {layout.MANIFEST}; fix: pass an empty or new --home"
        )
    tmp = generate_testnet(cometbft, root, req.validators)
    try:
        plan = lp.prepare_localnet(
            tmp / "net",
            req.validators,
            form,
            base_port=req.base_port,
            chain_id=req.chain_id,
            accounts=accounts,
            params=params,
            settings=req.settings,
        )
        plan.root = str(root)
        gen.write_text_atomic(tmp / "net" / layout.MANIFEST, plan.to_json())
        _install_prepared(tmp, root)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return plan
