"""A stand-in for the `cometbft` binary, for testing `dlbc localnet`'s process handling here,
where CometBFT cannot be installed (docs/processes.md). It is not a model of CometBFT's consensus:

- `version`            prints $FAKE_COMETBFT_VERSION (default 0.38.17)
- `testnet --v N --o DIR`  writes the testnet layout (tests/dlbc_ops/localnet/testnet_layout.py)
- `node --home H`      exits 3 at once when $FAKE_COMETBFT_NODE_FAIL is set; otherwise execs the project's embedded development node (`dlbc node`, the same
                        stand-in `dlbc devnet` uses) on the proxy_app and RPC addresses that
                        H/config/config.toml names, so the real app is driven block by block.

The real-binary tests live in tests/integration/ and skip without `cometbft`.
"""

from __future__ import annotations

import os
import sys
import tomllib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))


def main(argv: list[str]) -> int:
    version = os.environ.get("FAKE_COMETBFT_VERSION", "0.38.17")
    if argv[:1] == ["version"]:
        print(version)
        return 0
    if argv[:1] == ["testnet"]:
        from testnet_layout import write_testnet

        n = int(argv[argv.index("--v") + 1])
        out = Path(argv[argv.index("--o") + 1])
        write_testnet(out, n, version)
        print(f"Successfully initialized {n} node directories")
        return 0
    if argv[:1] == ["node"] and os.environ.get("FAKE_COMETBFT_NODE_FAIL"):
        print("panic: a node that fails at start (test)", file=sys.stderr)
        return 3
    if argv[:1] == ["node"]:
        home = Path(argv[argv.index("--home") + 1])
        cfg = tomllib.loads((home / "config" / "config.toml").read_text())
        os.execv(
            sys.executable,
            [
                sys.executable,
                "-m",
                "dlbc_ops.cli.main",
                "node",
                "--home",
                str(home),
                "--proxy-app",
                cfg["proxy_app"],
                "--rpc-laddr",
                cfg["rpc"]["laddr"],
            ],
        )
    print(f"fake cometbft: unsupported arguments {argv}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
