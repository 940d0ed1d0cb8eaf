"""`dlbc query ...`: read DLBC state through any node's RPC (`abci_query`), as tables or JSON.

    dlbc query round [N]         the active rounds (or round N): phase, deadlines, commits, reveals
    dlbc query tasks             pending tasks, next to be selected first (paper Eq. 4 ranking)
    dlbc query task ID           one task record (spec, status, winner)
    dlbc query account ADDR|KEY  balance, nonce, bond, miner registration
    dlbc query winners           the winner of every round and what it was paid
    dlbc query params            chain parameters
    dlbc query supply            supply, escrow, fee pool

`--json` prints the app's JSON answer (abci_app/dlbc/query.py has the shapes), except that the
per-epoch checkpoint digests of reveals and winners, dozens to hundreds of 64-hex lines per
model, are replaced by their count (`checkpoints`) unless `--checkpoints` asks for them: what a
person or a script looks for (who won, with what) stays on the first screen.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from abci_app.dlbc.params import PPM
from abci_app.dlbc.records import Phase
from dlbc_ops.cli.common import (
    CliError,
    add_node_options,
    guarded,
    print_json,
    print_table,
    resolve_key,
)

_PHASE_END: dict[str, str] = {Phase.ANNOUNCED: "start_ns", Phase.TRAIN: "train_end_ns", Phase.REVEAL: "reveal_end_ns",
                              Phase.VERIFY: "verify_end_ns"}


def _score(ppm: Any) -> str:
    return "-" if ppm is None else f"{int(ppm) / PPM:.4f}"


def _client(args: argparse.Namespace) -> Any:
    from training.sidecars.rpc_client import Backoff, RpcClient

    # One retry, and no "retry 1/1" warning before the one-line answer `guarded` prints when
    # the node is unreachable: a query is a question, not a sidecar's log.
    logging.getLogger("training.sidecars.rpc_client").setLevel(logging.ERROR)
    return RpcClient(args.rpc, backoff=Backoff(attempts=2, initial=0.2))


def _get(rpc: Any, path: str) -> Any:
    from training.sidecars.rpc_types import QueryError

    try:
        return rpc.query_json(path)
    except QueryError as exc:
        raise CliError(f"query {path}: {exc.message}") from None


def without_checkpoints(doc: Any) -> Any:
    """`doc` with every `checkpoint_digests` list replaced by `checkpoints`, its length.

    Why: a winner or reveal carries one digest per epoch (up to 1,000), which buries the rest
    of a `query winners` / `query round` answer; `--checkpoints` keeps them."""
    if isinstance(doc, list):
        return [without_checkpoints(d) for d in doc]
    if not isinstance(doc, dict):
        return doc
    out = {}
    for k, v in doc.items():
        if k == "checkpoint_digests" and isinstance(v, list):
            out["checkpoints"] = len(v)
        else:
            out[k] = without_checkpoints(v)
    return out


def _print_doc(doc: Any, args: argparse.Namespace) -> None:
    print_json(doc if getattr(args, "checkpoints", True) else without_checkpoints(doc))


def _print_checkpoints(title: str, digests: list[str]) -> None:
    """One line per epoch: the digest a checkpoint file must have (`sha256sum` prints it)."""
    print(f"\n{title}: {len(digests)} checkpoint(s)")
    for i, d in enumerate(digests, 1):
        print(f"  epoch {i:>4}  {d}")


def _phase_left(rec: dict[str, Any]) -> str:
    """Seconds of chain (BFT) time left in the round's phase, as of the last block."""
    end = rec.get(_PHASE_END.get(str(rec.get("phase")), ""))
    now = rec.get("last_block_time_ns")
    if rec.get("status") == "closed" or not end or not now:
        return "-"
    return f"{max(0, int(end) - int(now)) / 1e9:.0f}s"


def _round(args: argparse.Namespace) -> int:
    """One round (N), or every active round: with pipelined rounds one trains while the one
    before it reveals or verifies, and the next may be ANNOUNCED (docs/rounds.md); the newest
    alone would hide the round whose reveals and verdicts are under way."""
    with _client(args) as rpc:
        rec = _get(rpc, f"rounds/{args.n}" if args.n is not None else "round")
        active = (_get(rpc, "rounds/active").get("rounds") or []) if args.n is None else []
    if args.json:
        _print_doc(rec, args)
        return 0
    if not rec.get("round"):
        print("no round has started yet (no task submitted?)")
        return 0
    recs = active or [rec]
    print_table([[r["round"], Phase.DONE if r.get("status") == "closed" else r.get("phase"),
                  _phase_left(r), r.get("task_id"), r.get("outcome") or "(running)",
                  len(r.get("commitments") or []), len(r.get("revealed") or []),
                  _yes(r.get("key_released")), _yes(r.get("test_key_revealed"))] for r in recs],
                ["round", "phase", "phase ends in", "task", "outcome", "commits", "reveals",
                 "data key released", "test key revealed"])
    for r in recs:
        _round_details(r, args, titled=len(recs) > 1)
    return 0


def _round_details(rec: dict[str, Any], args: argparse.Namespace, *, titled: bool) -> None:
    """A round's reveals, winner and (with --checkpoints) checkpoint digests."""
    revealed = rec.get("revealed") or []
    if revealed:
        print(f"\nround {rec['round']} reveals:" if titled else "")
        print_table([[r["miner"], _score(r.get("claimed_score_ppm")),
                      len(r.get("checkpoint_digests") or []), r.get("model_uri")]
                     for r in revealed], ["miner", "claimed score", "checkpoints", "model"])
    w = rec.get("winner")
    if w:
        print(f"\nwinner: {w['miner']} score {_score(w.get('verified_score_ppm'))} "
              f"(claimed {_score(w.get('claimed_score_ppm'))}) model {w.get('model_uri')}")
        print(f"paid: {_payout(rec)}")
    if args.checkpoints:
        for r in revealed:
            _print_checkpoints(f"miner {r['miner']}", list(r.get("checkpoint_digests") or []))


def _yes(flag: Any) -> str:
    return "yes" if flag else "no"


def _payout(rec: dict[str, Any]) -> str:
    """A settled round's payout with each part labelled: "block reward 100 miner / 999900
    publisher" alone reads as a bug; it is paper Eq. 5-6 (README "The reward split, worked")."""
    w = rec["winner"]
    to_miner, to_pub = int(w["block_reward_miner"]), int(w["block_reward_publisher"])
    share = int(rec.get("publisher_share_ppm") or 0) / PPM
    return (f"the winner gets the task reward {w['task_reward']} + {to_miner} of the "
            f"{to_miner + to_pub} block reward, the publisher the other {to_pub} (paper Eq. 5-6: "
            f"publisher share {share:.2%} with {rec.get('queue_len')} task(s) queued)")


def _tasks(args: argparse.Namespace) -> int:
    with _client(args) as rpc:
        doc = _get(rpc, "tasks/pending")
    if args.json:
        print_json(doc)
        return 0
    print_table([[t["id"], t.get("publisher"), t.get("reward"), t.get("ranking_score_e18")]
                 for t in doc.get("tasks", [])],
                ["task", "publisher", "reward", "ranking score (e18, smallest next)"])
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


def _address(spec: str, home: Path | None) -> str:
    """40 hex characters as given, else the address of the key NAME or PATH `spec` names
    (`common.key_file`, as `--key` takes it): what the user has at hand is usually the key."""
    if len(spec) == 40 and all(c in "0123456789abcdefABCDEF" for c in spec):
        return spec.lower()
    try:
        return str(resolve_key(spec, home).address.hex())
    except CliError as exc:
        raise CliError(f"{spec!r} is neither an address (40 hex characters) nor a key: "
                       f"{exc}") from None


def _account(args: argparse.Namespace) -> int:
    addr = _address(args.address, args.home)
    with _client(args) as rpc:
        a = _get(rpc, f"accounts/{addr}")
    if args.json:
        print_json(a)
        return 0
    m, unbonding = a.get("miner"), a.get("unbonding")
    print_table([[a["address"], a.get("balance"), a.get("nonce"), "yes" if m else "no",
                  a.get("bonded") or 0, (unbonding or {}).get("amount") or 0,
                  a.get("deposit") or 0, a.get("pending_tasks") or 0]],
                ["address", "balance", "nonce", "miner", "bonded", "unbonding",
                 "reveal deposit", "pending tasks"])
    return 0


def collect_winners(rpc: Any) -> list[dict[str, Any]]:
    """Every round from 1 to the current one: task, outcome and winner (null if none yet)."""
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
        _print_doc(rows, args)
        return 0
    table = []
    for r in rows:
        w = r["winner"] or {}
        table.append([r["round"], r["task_id"], r["outcome"] or "(running)", w.get("miner"),
                      _score(w.get("verified_score_ppm")) if w else None,
                      f"{w['task_reward']} + {w['block_reward_miner']}" if w else None,
                      w.get("block_reward_publisher"),
                      len(w.get("checkpoint_digests") or []) if w else None])
    print_table(table, ["round", "task", "outcome", "winner", "score",
                        "winner paid (task + block reward)", "publisher's block reward",
                        "checkpoints"])
    if any(r["winner"] for r in rows):
        print("\nA settled round pays its winner the task reward (from the publisher's escrow) "
              "and part of the minted block reward; paper Eq. 5 gives the publisher most of "
              "the block reward while few tasks are queued (README \"The reward split, "
              "worked\").")
    if args.checkpoints:
        for r in rows:
            if r["winner"]:
                _print_checkpoints(f"round {r['round']} winner {r['winner']['miner']}",
                                   list(r["winner"].get("checkpoint_digests") or []))
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


_NEEDS = ("Reads committed state through the RPC of any node of the chain (--rpc): a running "
          "`dlbc devnet`, `dlbc localnet` or `cometbft node` with its app. Signs nothing.")

_COMMANDS: tuple[tuple[str, str, str, Any], ...] = (
    ("round", "the active rounds (two with pipelined rounds), or round N",
     ("The current round (or round N): its phase and the chain time left in it, the task, "
      "commitments and reveals, and the winner once settled.\n\n"
      "  dlbc query round\n  dlbc query round 3 --json"), _round),
    ("tasks", "pending tasks in selection order",
     ("The pending tasks, the one selected next first (smallest paper Eq. 4 ranking score)."
      "\n\n  dlbc query tasks"), _tasks),
    ("task", "one task",
     ("One task: status, reward, architecture, metric, the rounds it ran in, its winner."
      "\n\n  dlbc query task 1 --json"), _task),
    ("account", "one account",
     ("One account: balance, nonce, whether it is a registered miner, its bond and locked "
      "deposits. Give the address `dlbc keys show NAME` prints, or the key itself.\n\n"
      "  dlbc query account ba12f2f4c0e1d8a96b7f3e2a1c5d4b3a29180f7e\n"
      "  dlbc query account publisher\n"
      "  dlbc query account dlbc-devnet/keys/miner-1.json"), _account),
    ("winners", "winner of every round",
     ("Every round so far: its task, how it ended, the winning miner, its verified score and "
      "what it was paid (task reward, and the block reward's split between miner and "
      "publisher, paper Eq. 5-6).\n\n  dlbc query winners\n  dlbc query winners --json"),
     _winners),
    ("params", "chain parameters",
     ("The chain parameters (genesis app_state.params; docs/economics.md explains each)."
      "\n\n  dlbc query params"), _simple("params")),
    ("supply", "supply, escrow, fee pool",
     ("Where the chain's money is: supply, escrowed rewards, fee pool, bonds, deposits."
      "\n\n  dlbc query supply"), _simple("supply")),
)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser("query", help="read chain state (rounds, tasks, accounts, winners)",
                              description=f"{__doc__}\n\n{_NEEDS}")
    sub = p.add_subparsers(dest="what", metavar="WHAT", required=True)
    for name, help_, description, func in _COMMANDS:
        q = sub.add_parser(name, help=help_, description=f"{description}\n\n{_NEEDS}")
        add_node_options(q)
        q.add_argument("--json", action="store_true",
                       help="print the app's JSON answer instead of a table")
        if name in ("round", "winners"):
            q.add_argument("--checkpoints", action="store_true",
                           help="also list every per-epoch checkpoint digest (else only their "
                                "count)")
        if name == "round":
            q.add_argument("n", type=int, nargs="?", metavar="N",
                           help="round number (default: the current round)")
        elif name == "task":
            q.add_argument("id", type=int, metavar="ID", help="task id (`dlbc query tasks`)")
        elif name == "account":
            q.add_argument("address", metavar="ADDRESS|KEY",
                           help="40 hex characters, as `dlbc keys show` prints it, or a key "
                                "NAME or file PATH (then its address)")
            q.add_argument("--home", type=Path, default=None, metavar="DIR",
                           help="where `dlbc keys` keeps named keys (default: $DLBC_HOME or "
                                "~/.dlbc)")
        q.set_defaults(func=guarded(func))
