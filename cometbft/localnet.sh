#!/usr/bin/env bash
# DLBC localnet for operators who prefer a script: N `cometbft node` + N `python -m abci_app` on
# 127.0.0.1, every process stopped on exit or Ctrl-C. Same result as `dlbc localnet`, with each
# step spelled out; the genesis/config patching is the Python code both share (one source of truth).
#
#   cometbft/localnet.sh                          # 4 validators in ~/.dlbc/localnet
#   VALIDATORS=2 BASE_PORT=36656 cometbft/localnet.sh --param train_seconds=60
#   DEMO=1 cometbft/localnet.sh                   # + a publisher and two miners (= dlbc localnet --demo)
#
# Environment: VALIDATORS (4), LOCALNET_HOME (~/.dlbc/localnet), BASE_PORT (26656; node i uses
# BASE+10i: p2p +0, rpc +1, abci +2, prometheus +4, sidecar metrics +5), COMETBFT (cometbft),
# PYTHON (the repo's .venv/bin/python if present, else python3), UNTIL_HEIGHT (0 = run until
# Ctrl-C; N = exit 0 once every node has height N), VERIFIERS (1 = start `dlbc verify` beside
# each validator; 0 = don't, and rounds never settle), DEMO (0; 1 = also create/fund the demo
# keys in $LOCALNET_HOME/keys and start `dlbc task submit --demo` + two `dlbc mine` once, against
# node0's RPC, on the ports after the nodes' block: BASE+10N..+2). Extra arguments go to the
# genesis builder (--param NAME=VALUE, --account ADDR=AMOUNT, --chain-id ID, --max-tx-bytes N;
# with DEMO=1 also --samples N, --small-budget S, --reward R).
# A second run with the same LOCALNET_HOME resumes the chain. Logs: $LOCALNET_HOME/logs/.
set -euo pipefail

VALIDATORS=${VALIDATORS:-4}
LOCALNET_HOME=${LOCALNET_HOME:-${DLBC_HOME:-$HOME/.dlbc}/localnet}
BASE_PORT=${BASE_PORT:-26656}
UNTIL_HEIGHT=${UNTIL_HEIGHT:-0}
VERIFIERS=${VERIFIERS:-1}
COMETBFT=${COMETBFT:-cometbft}
DEMO=${DEMO:-0}
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x "$REPO/.venv/bin/python" ]]; then PYTHON="$REPO/.venv/bin/python"; else PYTHON=python3; fi
fi

if ! command -v "$COMETBFT" >/dev/null 2>&1; then
  cat >&2 <<'EOF'
error: `cometbft` is not on PATH. Install CometBFT v0.38.x or v1.0.x, for example:
    go install github.com/cometbft/cometbft/cmd/cometbft@v0.38.17
  (Go >= 1.22; add $(go env GOPATH)/bin to PATH), or unpack a release binary into a folder on
  PATH. Without it, `dlbc devnet` runs the embedded single-validator development stand-in.
EOF
  exit 1
fi

# 1. Version check (v0.38.x / v1.0.x), free ports, writable folder, `cometbft testnet --v N`,
#    identical genesis with DLBC app_state + vote extensions, per-node config.toml patches.
#    DEMO=1: demo keys made (or reused) and the publisher funded, short phase lengths.
ARGS=(--validators "$VALIDATORS" --home "$LOCALNET_HOME" --base-port "$BASE_PORT" "$@")
[[ "$DEMO" != 0 ]] && ARGS+=(--demo)
"$PYTHON" -m abci_app.cli localnet "${ARGS[@]}" --cometbft "$COMETBFT" --prepare-only --no-fallback
LOCALNET_HOME=$(cd "$LOCALNET_HOME" && pwd)
MANIFEST="$LOCALNET_HOME/localnet.json"

port() {  # port NODE ROLE  (ROLE: p2p rpc abci prometheus sidecar), from the manifest
  "$PYTHON" -c 'import json,sys; print(json.load(open(sys.argv[1]))["ports"][int(sys.argv[2])][sys.argv[3]])' \
    "$MANIFEST" "$1" "$2"
}

PIDS=()
cleanup() {
  trap - EXIT INT TERM
  ((${#PIDS[@]})) || return 0
  echo "stopping localnet..." >&2
  for ((k = ${#PIDS[@]} - 1; k >= 0; k--)); do kill -TERM "${PIDS[k]}" 2>/dev/null || true; done
  for _ in $(seq 1 50); do  # up to 10 s for a clean shutdown, then SIGKILL
    alive=0
    for pid in "${PIDS[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    ((alive)) || break
    sleep 0.2
  done
  for pid in "${PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

wait_port() {  # wait_port PORT PID NAME
  for _ in $(seq 1 300); do
    if ! kill -0 "$2" 2>/dev/null; then
      echo "error: $3 exited before listening on 127.0.0.1:$1; see $LOCALNET_HOME/logs/$3.log" >&2
      tail -n 15 "$LOCALNET_HOME/logs/$3.log" >&2 || true
      exit 1
    fi
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.2
  done
  echo "error: $3 did not listen on 127.0.0.1:$1 within 60 s" >&2
  exit 1
}

mkdir -p "$LOCALNET_HOME/logs"
last=$((VALIDATORS - 1))

# 2. One ABCI app per node first: CometBFT connects to proxy_app when it starts.
for i in $(seq 0 "$last"); do
  "$PYTHON" -m abci_app --home "$LOCALNET_HOME/node$i/app" \
    --address "tcp://127.0.0.1:$(port "$i" abci)" >>"$LOCALNET_HOME/logs/app$i.log" 2>&1 &
  PIDS+=($!)
  wait_port "$(port "$i" abci)" "$!" "app$i"
done

# 3. The CometBFT nodes (proxy_app, ports and persistent_peers are in their config.toml).
for i in $(seq 0 "$last"); do
  "$COMETBFT" node --home "$LOCALNET_HOME/node$i" >>"$LOCALNET_HOME/logs/cometbft$i.log" 2>&1 &
  PIDS+=($!)
done
for i in $(seq 0 "$last"); do
  wait_port "$(port "$i" rpc)" "${PIDS[VALIDATORS + i]}" "cometbft$i"
done

# 4. Sidecars: each validator's verifier writes the verdicts its own app's ExtendVote reads
#    (DESIGN §6), so it gets that node's app home and RPC. Add other per-node sidecars here.
#    DEMO=1: the publisher and miners, once for the network (the same commands as
#    `dlbc localnet --demo`, printed by abci_app/localnet/demo.py from the same options).
DEMO_LINES=()
VERIFY_EXTRA=()
if [[ "$DEMO" != 0 ]]; then
  mapfile -t DEMO_LINES < <("$PYTHON" -m abci_app.localnet.demo "${ARGS[@]}" || true)
  if ((${#DEMO_LINES[@]} < 2)); then
    echo "error: could not plan the demo processes (see the message above)" >&2
    exit 1
  fi
  for line in "${DEMO_LINES[@]}"; do
    IFS=$'\t' read -r name _ cmd <<<"$line"
    [[ "$name" == verify-extra ]] && eval "VERIFY_EXTRA=($cmd)"
  done
fi
if [[ "$VERIFIERS" != 0 ]] && "$PYTHON" -m abci_app.cli verify --help >/dev/null 2>&1; then
  for i in $(seq 0 "$last"); do
    "$PYTHON" -m abci_app.cli verify --app-home "$LOCALNET_HOME/node$i/app" \
      --rpc "http://127.0.0.1:$(port "$i" rpc)" --metrics-port "$(port "$i" sidecar)" \
      "${VERIFY_EXTRA[@]}" >>"$LOCALNET_HOME/logs/verify$i.log" 2>&1 &
    PIDS+=($!)
  done
fi
for line in "${DEMO_LINES[@]}"; do
  IFS=$'\t' read -r name aport cmd <<<"$line"
  [[ "$name" == verify-extra ]] && continue
  eval "argv=($cmd)"  # COMMAND is shell-quoted by Python's shlex.join
  "${argv[@]}" >>"$LOCALNET_HOME/logs/$name.log" 2>&1 &
  PIDS+=($!)
  wait_port "$aport" "$!" "$name"
  echo "$name: ${argv[*]}"
done

for i in $(seq 0 "$last"); do echo "node$i: rpc http://127.0.0.1:$(port "$i" rpc)"; done
echo "logs in $LOCALNET_HOME/logs; Ctrl-C stops everything."
echo "query: $PYTHON -m abci_app.cli query round --rpc http://127.0.0.1:$(port 0 rpc)"

heights() {
  "$PYTHON" - "$MANIFEST" <<'PY'
import json, sys, urllib.request
m = json.load(open(sys.argv[1]))
out = []
for p in m["ports"]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{p['rpc']}/status", timeout=2) as r:
            out.append(int(json.load(r)["result"]["sync_info"]["latest_block_height"]))
    except Exception:
        out.append(0)
print(" ".join(map(str, out)))
PY
}

# 5. Follow: print heights; stop if any process dies (or at UNTIL_HEIGHT).
tick=0
while true; do
  for pid in "${PIDS[@]}"; do
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "error: process $pid exited; see $LOCALNET_HOME/logs/. Stopping the localnet." >&2
      exit 1
    fi
  done
  read -r -a hs <<<"$(heights)"
  min=${hs[0]}; for h in "${hs[@]}"; do ((h < min)) && min=$h; done
  if ((UNTIL_HEIGHT > 0 && min >= UNTIL_HEIGHT)); then
    echo "reached height $UNTIL_HEIGHT on every node: ${hs[*]}"
    exit 0
  fi
  ((tick % 5 == 0)) && echo "heights: ${hs[*]}"
  tick=$((tick + 1))
  sleep 1
done
