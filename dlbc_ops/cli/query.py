"""`dlbc query ...`: read DLBC state through any node's RPC (`abci_query`), as tables or JSON.

    dlbc query round [N]         the current round (or round N): phase, deadlines, commits, reveals
    dlbc query tasks             pending tasks, next to be selected first (paper Eq. 4 ranking)
    dlbc query task ID           one task record (spec, status, winner)
    dlbc query account ADDR      balance, nonce, miner registration
    dlbc query winners           the winner of every settled round
    dlbc query params            chain parameters
    dlbc query supply            supply, escrow, fee pool

`--json` prints the app's JSON answer unchanged (see abci_app/dlbc/query.py for the shapes).
"""

from __future__ import annotations

import argparse
from typing import Any

from abci_app.dlbc.params import PPM
from abci_app.dlbc.records import Phase
from dlbc_ops.cli.common import CliError, add_node_options, guarded, print_json, print_table


def _score(ppm: Any) -> str:
    return "-" if ppm is None else f"{int(ppm) / PPM:.4f}"


def _client(args: argparse.Namespace) -> Any:
    from training.sidecars.rpc_client import Backoff, RpcClient

    return RpcClient(args.rpc, backoff=Backoff(attempts=2, initial=0.2))


def _get(rpc: Any, path: str) -> Any:
    from training.sidecars.rpc_types import QueryError

    try:
        return rpc.query_json(path)
    except QueryError as exc:
        raise CliError(f"query {path}: {exc.message}") from None


def _round(args: argparse.Namespace) -> int:
    with _client(args) as rpc:
        rec = _get(rpc, f"rounds/{args.n}" if args.n is not None else "round")
    if args.json:
        print_json(rec)
        return 0
    if not rec.get("round"):
        print("no round has started yet (no task submitted?)")
        return 0
    phase = Phase.DONE if rec.get("status") == "closed" else rec.get("phase")
    print_table([[rec["round"], phase, rec.get("task_id"), rec.get("outcome"),
                  len(rec.get("commitments") or []), len(rec.get("revealed") or []),
                  rec.get("key_released"), rec.get("test_key_revealed")]],
                ["round", "phase", "task", "outcome", "commits", "reveals", "key released",
                 "test key"])
    revealed = rec.get("revealed") or []
    if revealed:
        print()
        print_table([[r["miner"], _score(r.get("claimed_score_ppm")), r.get("model_uri")]
                     for r in revealed], ["miner", "claimed", "model"])
    w = rec.get("winner")
    if w:
        print(f"\nwinner: {w['miner']} score {_score(w.get('verified_score_ppm'))} "
              f"(claimed {_score(w.get('claimed_score_ppm'))}) model {w.get('model_uri')}")
    return 0


def _tasks(args: argparse.Namespace) -> int:
    with _client(args) as rpc:
        doc = _get(rpc, "tasks/pending")
    if args.json:
        print_json(doc)
        return 0
    print_table([[t["id"], t.get("publisher"), t.get("reward"), t.get("ranking_score_e18")]
                 for t in doc.get("tasks", [])],
                ["task", "publisher", "reward", "ranking score (e18)"])
    return 0


def _task(args: argparse.Namespace) -> int:
    with _client(args) as rpc:
        t = _get(rpc, f"tasks/{args.id}")
    if args.json:
        print_json(t)
        return 0
    spec = t.get("spec") or {}
    print_table([[t["id"], t.get("status"), t.get("reward"), spec.get("architecture"),
                  spec.get("metric"), ",".join(str(r) for r in t.get("rounds") or []),
                  t.get("winner")]],
                ["task", "status", "reward", "arch", "metric", "rounds", "winner"])
    return 0


def _account(args: argparse.Namespace) -> int:
    addr = args.address.lower()
    if len(addr) != 40:
        raise CliError("an address is 40 hex characters (see `dlbc keys show NAME`)")
    with _client(args) as rpc:
        a = _get(rpc, f"accounts/{addr}")
    if args.json:
        print_json(a)
        return 0
    m = a.get("miner")
    print_table([[a["address"], a.get("balance"), a.get("nonce"),
                  "yes" if m else "no"]], ["address", "balance", "nonce", "miner"])
    return 0


def collect_winners(rpc: Any) -> list[dict[str, Any]]:
    cur = _get(rpc, "round")
    out = []
    for n in range(1, int(cur.get("round") or 0) + 1):
        rec = _get(rpc, f"rounds/{n}")
        out.append({"round": n, "task_id": rec.get("task_id"), "outcome": rec.get("outcome"),
                    "winner": rec.get("winner")})
    return out


def _winners(args: argparse.Namespace) -> int:
    with _client(args) as rpc:
        rows = collect_winners(rpc)
    if args.json:
        print_json(rows)
        return 0
    print_table([[r["round"], r["task_id"], r["outcome"] or "(running)",
                  (r["winner"] or {}).get("miner"),
                  _score((r["winner"] or {}).get("verified_score_ppm"))] for r in rows],
                ["round", "task", "outcome", "winner", "score"])
    return 0


def _simple(path: str) -> Any:
    def run(args: argparse.Namespace) -> int:
        with _client(args) as rpc:
            doc = _get(rpc, path)
        if args.json:
            print_json(doc)
        else:
            print_table([[k, v] for k, v in sorted(doc.items())], ["name", "value"])
        return 0

    return run


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser("query", help="read chain state (rounds, tasks, accounts, winners)",
                              description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = p.add_subparsers(dest="what", metavar="WHAT", required=True)

    def add(name: str, help_: str, func: Any) -> argparse.ArgumentParser:
        q = sub.add_parser(name, help=help_)
        add_node_options(q)
        q.add_argument("--json", action="store_true", help="print the raw JSON answer")
        q.set_defaults(func=guarded(func))
        return q

    add("round", "current round, or round N", _round).add_argument("n", type=int, nargs="?")
    add("tasks", "pending tasks in selection order", _tasks)
    add("task", "one task", _task).add_argument("id", type=int)
    add("account", "one account", _account).add_argument("address")
    add("winners", "winner of every round", _winners)
    add("params", "chain parameters", _simple("params"))
    add("supply", "supply, escrow, fee pool", _simple("supply"))
