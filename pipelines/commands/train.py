"""`earl train --config configs/X.yaml [key=value ...]` and `earl train --resume RUN_DIR`."""
from __future__ import annotations

import argparse
import sys


def add_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML pipeline config (configs/*.yaml)")
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue an unfinished run folder")
    parser.add_argument("--run-dir", help="write the run here instead of <run.output_dir>/<name>-<time>")
    parser.add_argument("--dry-run", action="store_true", help="validate the config, print it resolved, stop")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="override config keys, e.g. stages.rl.trainer.learning_rate=1e-4")
    from pipelines.launch import add_launch_arguments
    add_launch_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from pipelines.config import ConfigError, load_config
    if not args.config and not args.resume:
        print("earl train: give --config CONFIG (a new run) or --resume RUN_DIR", file=sys.stderr)
        return 2
    if args.resume and args.config:     # `make train RUN_DIR=...` passes both: the run's own config wins
        print(f"[earl] --resume: using {args.resume}/config.yaml (ignoring --config {args.config})")
        args.config = None
    if not args.dry_run:
        rc = _maybe_relaunch(args)
        if rc is not None:
            return rc
    try:
        if args.resume:
            from pipelines.runner import resume
            run_folder = resume(args.resume, args.overrides)
        else:
            overrides = list(args.overrides) + ([f"run.run_dir={args.run_dir}"] if args.run_dir else [])
            cfg = load_config(args.config, overrides)
            if args.dry_run:
                print(cfg.to_yaml())
                return 0
            from pipelines.runner import train
            run_folder = train(cfg)
    except ConfigError as exc:
        print(f"earl train: config error: {exc}", file=sys.stderr)
        return 2
    from pipelines.launch import shutdown_distributed
    shutdown_distributed()  # success path only: a barrier after one rank failed would hang the others
    print(f"[earl] run folder: {run_folder.root}")
    return 0


def _maybe_relaunch(args: argparse.Namespace) -> int | None:
    """Multi-process launch (pipelines.launch); the run folder is fixed here, once, so all ranks share it."""
    from datetime import datetime
    from pathlib import Path

    from pipelines.launch import LaunchError, is_launched, launch_config_from_args, maybe_relaunch
    if is_launched():
        return None
    try:
        if not launch_config_from_args(args).is_multi_process:
            return None
    except LaunchError as exc:
        print(f"earl train: {exc}", file=sys.stderr)
        return 2
    argv = sys.argv[1:]
    if args.config and not args.run_dir:
        from pipelines.config import ConfigError, load_config
        try:
            cfg = load_config(args.config, args.overrides)
        except ConfigError as exc:
            print(f"earl train: config error: {exc}", file=sys.stderr)
            return 2
        run_dir = cfg.run.run_dir or str(Path(cfg.run.output_dir) / f"{cfg.run.name}-{datetime.now():%Y%m%d-%H%M%S}")
        argv = argv + ["--run-dir", run_dir]
    return maybe_relaunch(args, argv)
