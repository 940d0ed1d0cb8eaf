#!/usr/bin/env bash
# DLBC localnet for operators who prefer environment variables: a thin wrapper that maps them to
# `dlbc localnet` flags and execs it. Everything else (version check, ports, genesis, starting
# and stopping every process) is `dlbc localnet` itself: one launcher, not a second one in bash.
#
#   cometbft/localnet.sh                          # 4 validators in ~/.dlbc/localnet
#   VALIDATORS=2 BASE_PORT=36656 cometbft/localnet.sh --param train_seconds=60
#   DEMO=1 cometbft/localnet.sh                   # + a publisher and two miners (= --demo)
#
# Environment -> flag (unset: `dlbc localnet`'s default):
#   VALIDATORS=N      --validators N          LOCALNET_HOME=DIR  --home DIR
#   BASE_PORT=P       --base-port P           COMETBFT=PATH      --cometbft PATH
#   UNTIL_HEIGHT=N    --until-height N        VERIFIERS=0        --no-verifiers
#   DEMO=1            --demo
#   PYTHON            the interpreter (default: the repo's .venv/bin/python if present, else python3)
# Extra arguments go to `dlbc localnet` as they are (--param NAME=VALUE, --account ADDR=AMOUNT,
# --chain-id ID, --samples N, ...). Always --no-fallback: without a cometbft binary this exits 1
# with how to install one, instead of running the dev node (`dlbc devnet` is the command for that).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x "$REPO/.venv/bin/python" ]]; then PYTHON="$REPO/.venv/bin/python"; else PYTHON=python3; fi
fi

ARGS=(--no-fallback)
[[ -n "${VALIDATORS:-}" ]] && ARGS+=(--validators "$VALIDATORS")
[[ -n "${LOCALNET_HOME:-}" ]] && ARGS+=(--home "$LOCALNET_HOME")
[[ -n "${BASE_PORT:-}" ]] && ARGS+=(--base-port "$BASE_PORT")
[[ -n "${COMETBFT:-}" ]] && ARGS+=(--cometbft "$COMETBFT")
[[ "${UNTIL_HEIGHT:-0}" != 0 ]] && ARGS+=(--until-height "$UNTIL_HEIGHT")
[[ "${VERIFIERS:-1}" == 0 ]] && ARGS+=(--no-verifiers)
[[ "${DEMO:-0}" != 0 ]] && ARGS+=(--demo)
exec "$PYTHON" -m dlbc_ops localnet "${ARGS[@]}" "$@"
