"""`dlbc task submit`: the publisher sidecar in the foreground.

    dlbc task submit --key pub --demo --reward 5000 [--artifact-port 8700] [--keep-pending 1]
    dlbc task submit --key pub --data my.npz --arch unet2d --hparams '{"depth": 3}' --metric dice

The publisher keeps running after submitting: it must release the data key in TRAIN and the test
key in REVEAL of the round that selects its task (docs/rounds.md), so stop it (Ctrl-C) only after
that round or with `--rounds N`. Its artifact server must stay reachable by miners and
validators at the URIs written into the spec, hence a fixed `--artifact-port` (and
`--artifact-host`/`--public-url` when miners are on other machines).

Restarting `dlbc task submit` with the same --name reuses the prepared task (same keys, same
encrypted files) and does not submit it again if it is already on chain; the same name with other
data or settings is refused. Keys live in WORKDIR/private/NAME/keys.json (never served).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from dlbc_ops.cli.common import (
    CliError,
    add_sidecar_options,
    guarded,
    resolve_key,
    run_sidecar,
    setup_logs,
    sidecar_settings,
)


def _submit(args: argparse.Namespace) -> int:
    from training.sidecars.publisher import DemoDataConfig, Publisher, PublisherConfig, prepare_task

    setup_logs(args.log_level)
    key = resolve_key(args.key, args.home)
    if args.reward < 1:
        raise CliError("--reward must be >= 1")
    if bool(args.demo) == bool(args.data):
        raise CliError("give exactly one of --demo or --data FILE.npz")
    if args.keep_pending < 0:
        raise CliError("--keep-pending must be >= 0")
    if args.keep_pending and not args.demo:
        raise CliError("--keep-pending tops the queue up with generated demo tasks: use it "
                       "with --demo")
    cfg = PublisherConfig(reward=args.reward, artifact_host=args.artifact_host,
                          artifact_port=args.artifact_port, **sidecar_settings(args))  # type: ignore[arg-type]
    try:
        pub = Publisher(cfg, key)
        server = pub.start_server()
    except OSError as exc:
        raise CliError(f"cannot serve artifacts on {args.artifact_host}:{args.artifact_port}: "
                       f"{exc.strerror or exc}; pick another --artifact-port") from None
    base = args.public_url or server.base_url
    try:
        hparams = json.loads(args.hparams) if args.hparams else None
    except json.JSONDecodeError as exc:
        raise CliError(f"--hparams is not JSON: {exc}") from None
    name = args.name
    # Check the model against the scheme the chain's miners will embed (docs/watermark.md), not the
    # genesis defaults: a chain may run a smaller scheme that a smaller model can carry.
    scheme = pub.chain_scheme()
    try:
        if args.demo:
            demo = DemoDataConfig(samples=args.samples, seed=args.seed)
            if hparams is not None:
                demo.hparams = hparams
            from training.sidecars.publisher import prepare_demo_task

            task = prepare_demo_task(pub.artifact_root / name, base, demo, name, scheme)
            pub.demo_config = demo
            pub.keep_pending = args.keep_pending
        else:
            from training.data import load_npz

            data = load_npz(Path(args.data))
            task = prepare_task(
                data, directory=pub.artifact_root / name, base_url=base,
                architecture=args.arch, hparams=hparams or {}, metric=args.metric,
                test_fraction=args.test_fraction, seed=args.seed,
                min_score_ppm=args.min_score_ppm, name=name, scheme=scheme)
    except (ValueError, OSError) as exc:
        server.stop()
        raise CliError(f"cannot prepare the task: {exc}") from None
    pub.add_prepared(task)
    if task.reused:
        print(f"task {name}: reusing the task prepared earlier (same keys and encrypted files)",
              flush=True)
        if not task.spec.data_uri.startswith(base.rstrip("/") + "/"):
            print(f"dlbc: warning: task {name}'s spec points at {task.spec.data_uri}, not at "
                  f"{base}; serve it there (same --artifact-port/--public-url) or miners cannot "
                  "fetch it", file=sys.stderr, flush=True)
    print(f"task {name}: encrypted data hosted at {base}/{name}/ ; submitting with reward "
          f"{args.reward} unless already on chain; keys stay in {task.keys_path} (mode 0600)",
          flush=True)
    if args.no_wait:
        try:
            pub.setup()
        finally:
            pub.teardown()
        ids = [t for t, pt in pub.tasks.items() if pt.name == name]
        if not ids:
            print("dlbc: the task was not accepted (see the log above)", file=sys.stderr)
            return 1
        tid = ids[0]
        sent = pub.metrics.get("txs_total", type="SubmitTask") > 0
        print(f"{'submitted' if sent else 'already on chain (not submitted again)'} "
              f"as task {tid}. NOTE: run `dlbc task submit` without --no-wait (or keep "
              "a publisher running) or the keys are never released and the task is refunded "
              "less the withhold fee", flush=True)
        return 0
    return run_sidecar(pub)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser("task", help="publisher: submit a training task and serve its keys")
    sub = p.add_subparsers(dest="task_cmd", metavar="CMD", required=True)
    s = sub.add_parser("submit", help="encrypt + host data, escrow the reward, release keys",
                       description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    add_sidecar_options(s)
    s.add_argument("--demo", action="store_true", help="generated 2D shapes segmentation task")
    s.add_argument("--data", help=".npz with images + masks/labels (training/data.py layout)")
    s.add_argument("--name", default="task", help="folder/URI name of this task's files")
    s.add_argument("--arch", default="unet2d", help="registry architecture (unet2d, unet3d, fcn, cnn)")
    s.add_argument("--hparams", default=None, help="architecture hyper-parameters as JSON")
    s.add_argument("--metric", default="dice", choices=("dice", "accuracy"))
    s.add_argument("--test-fraction", type=float, default=0.25)
    s.add_argument("--min-score-ppm", type=int, default=0)
    s.add_argument("--samples", type=int, default=96, help="--demo: generated images")
    s.add_argument("--seed", type=int, default=7)
    s.add_argument("--reward", type=int, default=1000, help="escrowed reward")
    s.add_argument("--workdir", default="dlbc-publisher", help="publisher files (data, keys)")
    s.add_argument("--artifact-host", default="127.0.0.1")
    s.add_argument("--artifact-port", type=int, default=8700)
    s.add_argument("--public-url", default=None,
                   help="base URL miners use to reach the artifact server (default: local)")
    s.add_argument("--keep-pending", type=int, default=0, metavar="N",
                   help="--demo: keep N of this publisher's tasks pending (fresh demo tasks), "
                        "so every round has work")
    s.add_argument("--no-wait", action="store_true",
                   help="submit and exit (keys must then be released by a later run)")
    s.set_defaults(func=guarded(_submit))
