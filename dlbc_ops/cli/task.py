"""`dlbc task submit`: the publisher sidecar in the foreground.

    dlbc task submit --key pub --demo --reward 10000 [--artifact-port 8700] [--keep-pending 1]
    dlbc task submit --key pub --data my.npz --arch unet2d --hparams '{"depth": 3}' --metric dice

The publisher keeps running after submitting: it must release the data key in TRAIN and the test
key in REVEAL of the round that selects its task (docs/rounds.md), so stop it (Ctrl-C) only after
that round or with `--rounds N` (N rounds of this publisher's own tasks). Its artifact server
must stay reachable by miners and validators at the URIs written into the spec, hence a fixed
`--artifact-port` (and `--artifact-host`/`--public-url` when miners are on other machines).

Before anything is sent, the task is checked: the metric scores the architecture's kind (dice:
unet2d, unet3d, fcn; accuracy: cnn), the data are of that kind, and the model can carry the
chain's watermark (without an explicit base_width the default is widened until it can). A
refused submission (e.g. a balance below the reward) ends the command with the app's code and
log (exit 1); a node that does not answer within --node-wait seconds ends it too (exit 2).

Restarting `dlbc task submit` with the same --name reuses the prepared task (same keys, same
encrypted files) and does not submit it again if the chain already holds it (this publisher's
task with the same data digest); the same name with other data or settings is refused. Keys
live in WORKDIR/private/NAME/keys.json (never served).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from abci_app.dlbc.process import METRICS
from dlbc_ops.cli.common import (
    CliError,
    add_sidecar_options,
    guarded,
    resolve_key,
    run_sidecar,
    setup_logs,
    sidecar_settings,
)


def _check_args(args: argparse.Namespace) -> None:
    """What can be refused from the command line alone (nothing read, nothing started)."""
    if args.reward < 1:
        raise CliError("--reward must be >= 1")
    if bool(args.demo) == bool(args.data):
        raise CliError("give exactly one of --demo or --data FILE.npz")
    if args.keep_pending < 0:
        raise CliError("--keep-pending must be >= 0")
    if args.keep_pending and not args.demo:
        raise CliError("--keep-pending tops the queue up with generated demo tasks: use it "
                       "with --demo")
    if args.node_wait is not None and args.node_wait <= 0:
        raise CliError("--node-wait must be > 0 seconds")


def _hparams(text: str | None) -> dict[str, Any] | None:
    if not text:
        return None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CliError(f"--hparams is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise CliError("--hparams must be a JSON object, e.g. '{\"depth\": 3}'")
    return doc


def _load_data(args: argparse.Namespace) -> tuple[Any, str, str]:
    """The user's data set, its architecture and metric (defaults follow the data's kind);
    mismatches of the three are refused here, before the node is asked anything."""
    from training.data import load_npz
    from training.sidecars.task_fit import (
        DEFAULT_ARCHITECTURE,
        check_kind,
        check_metric,
        default_metric,
    )

    try:
        data = load_npz(Path(args.data))
    except (OSError, ValueError) as exc:
        raise CliError(f"cannot prepare the task: cannot load --data {args.data}: {exc}"
                       ) from None
    arch = args.arch or DEFAULT_ARCHITECTURE[data.kind]
    try:
        metric = args.metric or default_metric(arch)
        check_kind(arch, data.kind)
        check_metric(arch, metric)
    except ValueError as exc:
        raise CliError(f"cannot prepare the task: {exc}") from None
    return data, arch, metric


def _submit(args: argparse.Namespace) -> int:
    from training.sidecars.publisher import (
        DemoDataConfig,
        Publisher,
        PublisherConfig,
        SubmitRejected,
        prepare_demo_task,
        prepare_task,
    )
    from training.sidecars.task_fit import check_kind, check_metric, default_metric

    setup_logs(args.log_level)
    key = resolve_key(args.key, args.home)
    _check_args(args)
    hparams = _hparams(args.hparams)
    if args.demo:
        demo = DemoDataConfig(samples=args.samples, seed=args.seed)
        demo.architecture = args.arch or demo.architecture
        demo.metric = args.metric or default_metric(demo.architecture)
        demo.hparams = hparams if hparams is not None else demo.hparams
        try:
            check_kind(demo.architecture, "segmentation")  # the demo data are masks
            check_metric(demo.architecture, demo.metric)
        except ValueError as exc:
            raise CliError(f"cannot prepare the task: {exc}") from None
    else:
        data, arch, metric = _load_data(args)
    cfg = PublisherConfig(reward=args.reward, artifact_host=args.artifact_host,
                          artifact_port=args.artifact_port, node_wait_seconds=args.node_wait,
                          **sidecar_settings(args))  # type: ignore[arg-type]
    pub = Publisher(cfg, key)
    pub.await_node()  # NodeUnreachable after --node-wait: `guarded` says which --rpc failed
    # Check the model against the scheme the chain's miners will embed (docs/watermark.md), not the
    # genesis defaults: a chain may run a smaller scheme that a smaller model can carry.
    scheme = pub.chain_scheme()
    try:
        server = pub.start_server()
    except OSError as exc:
        raise CliError(f"cannot serve artifacts on {args.artifact_host}:{args.artifact_port}: "
                       f"{exc.strerror or exc}; pick another --artifact-port") from None
    base = args.public_url or server.base_url
    name = args.name
    try:
        if args.demo:
            task = prepare_demo_task(pub.artifact_root / name, base, demo, name, scheme)
            pub.demo_config = demo
            pub.keep_pending = args.keep_pending
        else:
            task = prepare_task(
                data, directory=pub.artifact_root / name, base_url=base,
                architecture=arch, hparams=hparams or {}, metric=metric,
                test_fraction=args.test_fraction, seed=args.seed,
                min_score_ppm=args.min_score_ppm, name=name, scheme=scheme)
    except (ValueError, OSError) as exc:
        server.stop()
        raise CliError(f"cannot prepare the task: {exc}") from None
    pub.add_prepared(task)
    _say_prepared(task, name, base, args.reward)
    try:
        if args.no_wait:
            return _submit_only(pub, name)
        code = run_sidecar(pub)
    except SubmitRejected as exc:
        print(f"dlbc: {exc}", file=sys.stderr, flush=True)
        return 1
    _say_outcome(pub)
    return code


def _say_prepared(task: Any, name: str, base: str, reward: int) -> None:
    if task.reused:
        print(f"task {name!r}: reusing the task prepared earlier (same keys and encrypted files)",
              flush=True)
        if not task.spec.data_uri.startswith(base.rstrip("/") + "/"):
            print(f"dlbc: warning: task {name}'s spec points at {task.spec.data_uri}, not at "
                  f"{base}; serve it there (same --artifact-port/--public-url) or miners cannot "
                  "fetch it", file=sys.stderr, flush=True)
    print(f"task {name!r}: {task.spec.architecture} {task.spec.hyperparams_json}, metric "
          f"{task.spec.metric}; encrypted data hosted at {base}/{name}/ ; submitting with "
          f"reward {reward} unless already on chain; keys stay in {task.keys_path} (mode 0600)",
          flush=True)


def _submit_only(pub: Any, name: str) -> int:
    """--no-wait: submit (unless on chain) and exit; SubmitRejected propagates."""
    try:
        pub.setup()
    finally:
        pub.teardown()
    ids = [t for t, pt in pub.tasks.items() if pt.name == name]
    tid = ids[0]
    sent = pub.metrics.get("txs_total", type="SubmitTask") > 0
    print(f"{'submitted' if sent else 'already on chain (not submitted again)'} "
          f"as task {tid}. NOTE: run `dlbc task submit` without --no-wait (or keep "
          "a publisher running) or the keys are never released and the task is refunded "
          "less the withhold fee", flush=True)
    return 0


def _say_outcome(pub: Any) -> None:
    """After the loop: where each of this publisher's tasks stands on chain."""
    from training.sidecars.rpc_types import RpcError

    for tid in sorted(pub.tasks):
        try:
            rec = pub.chain.query_optional(f"tasks/{tid}")
        except RpcError as exc:  # a summary line must not turn success into failure
            print(f"task {tid}: status unknown ({exc})", flush=True)
            continue
        if isinstance(rec, dict):
            print(f"task {tid} ({pub.tasks[tid].name!r}): status {rec.get('status')}, rounds "
                  f"{rec.get('rounds')}, winner {rec.get('winner') or '-'}", flush=True)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "task", help="publisher: submit a training task and serve its keys",
        description="Publisher commands: `dlbc task submit` prepares a training task (encrypted "
                    "data, committed test set), escrows its reward on chain and serves the keys "
                    "in the round that selects it. Needs a running chain at --rpc and a funded "
                    "key.\n\n  dlbc task submit --key publisher --demo --rounds 1")
    sub = p.add_subparsers(dest="task_cmd", metavar="CMD", required=True)
    s = sub.add_parser("submit", help="encrypt + host data, escrow the reward, release keys",
                       description=__doc__)
    add_sidecar_options(s)
    s.add_argument("--demo", action="store_true", help="generated 2D shapes segmentation task")
    s.add_argument("--data", help=".npz with images + masks/labels (training/data.py layout)")
    s.add_argument("--name", default="task", help="folder/URI name of this task's files")
    s.add_argument("--arch", default=None,
                   help="registry architecture: unet2d, unet3d, fcn (segmentation), cnn "
                        "(classification); default: unet2d for masks, cnn for labels")
    s.add_argument("--hparams", default=None,
                   help="architecture hyper-parameters as JSON (missing ones: registry "
                        "defaults, the output size from the data)")
    s.add_argument("--metric", default=None, choices=METRICS,
                   help="what the chain scores: dice (segmentation) or accuracy "
                        "(classification); default: the architecture's")
    s.add_argument("--test-fraction", type=float, default=0.25,
                   help="share of the samples kept back as the test set revealed in REVEAL")
    s.add_argument("--min-score-ppm", type=int, default=0,
                   help="lowest verified score (ppm) that can win the round")
    s.add_argument("--samples", type=int, default=96, help="--demo: generated images")
    s.add_argument("--seed", type=int, default=7,
                   help="seed of the train/test split (and of --demo's generated images)")
    s.add_argument("--reward", type=int, default=10_000,
                   help="escrowed reward (at least the chain's min_task_reward; default "
                        "%(default)s)")
    s.add_argument("--workdir", default="dlbc-publisher", help="publisher files (data, keys)")
    s.add_argument("--artifact-host", default="127.0.0.1", metavar="HOST",
                   help="address the artifact server listens on and names in the spec's URIs")
    s.add_argument("--artifact-port", type=int, default=8700, metavar="PORT",
                   help="port of the artifact server serving the encrypted data")
    s.add_argument("--public-url", default=None,
                   help="base URL miners use to reach the artifact server (default: local)")
    s.add_argument("--keep-pending", type=int, default=0, metavar="N",
                   help="--demo: keep N of this publisher's tasks pending (fresh demo tasks), "
                        "so every round has work")
    s.add_argument("--node-wait", type=float, default=30.0, metavar="SECONDS",
                   help="give up when no node answered at --rpc within this time (default "
                        "%(default)s)")
    s.add_argument("--no-wait", action="store_true",
                   help="submit and exit (keys must then be released by a later run)")
    s.set_defaults(func=guarded(_submit))
