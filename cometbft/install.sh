#!/usr/bin/env bash
# Build the pinned CometBFT releases (cometbft/versions.txt) into a project-local tools folder the
# way CometBFT's own docs say: `go install github.com/cometbft/cometbft/cmd/cometbft@<version>`.
# Idempotent: a binary already there that reports its version is kept, so a second run fetches
# nothing. Without Go it says so in one line and exits 0: the project still installs and falls
# back to the embedded dev node (`dlbc devnet`).
set -euo pipefail
cd "$(dirname "$0")/.."
TOOLS="${DLBC_TOOLS:-$PWD/.tools}"
if ! command -v go >/dev/null 2>&1; then
    echo "cometbft: Go is not installed, so no CometBFT binary was built (the demo falls back to the embedded dev node; install Go >= 1.22 and run 'make tools')"
    exit 0
fi
while read -r version _; do
    case "$version" in ''|'#'*) continue ;; esac
    dest="$TOOLS/cometbft-$version"
    want="${version#v}"
    if [ -x "$dest/cometbft" ] && [ "$("$dest/cometbft" version 2>/dev/null | head -n1)" = "$want" ]; then
        continue
    fi
    echo "cometbft: building $version into $dest (go install, a few minutes the first time)"
    mkdir -p "$dest"
    if ! GOBIN="$dest" go install "github.com/cometbft/cometbft/cmd/cometbft@$version" >"$dest/build.log" 2>&1; then
        echo "cometbft: building $version failed; see $dest/build.log (the project still installs)"
        rm -f "$dest/cometbft"
    fi
done < cometbft/versions.txt
# A failed build is reported but never fails `make install`: the dev node remains.
exit 0
