"""`earl train --config configs/X.yaml [key=value ...]` and `earl train --resume RUN_DIR`.

Exit codes: 0 done; 2 a config/data/model/output problem found before any work (one line naming the
key); 75 stopped on request (SIGUSR1/SIGTERM or `<run>/stop-requested`) with a checkpoint saved; 130
Ctrl-C. Both 75 and 130 leave a run folder that `earl train --resume RUN_DIR` continues.
"""
from __future__ import annotations

import argparse
import sys


def add_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML pipeline config (configs/*.yaml)")
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue an unfinished run folder")
    parser.add_argument("--run-dir", help="write the run here instead of <run.output_dir>/<name>-<time>")
    parser.add_argument("--dry-run", action="store_true",
                        help="check everything a run would (TRL configs, model, data, output folder), print the "
                             "resolved config, stop")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="override config keys, e.g. stages.rl.trainer.learning_rate=1e-4")
    from pipelines.launch import add_launch_arguments
    add_launch_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from pipelines.config import ConfigError
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
    from pipelines.preemption import EXIT_INTERRUPTED, EXIT_PREEMPTED, Preempted
    from pipelines.runner import RunInterrupted, is_main
    from sandboxes.tools import ToolNotFound
    try:
        run_folder = _train(args)
    except ConfigError as exc:
        print(f"earl train: config error: {exc}", file=sys.stderr)
        return 2
    except ToolNotFound as exc:
        print(f"earl train: error: {exc}", file=sys.stderr)
        return 2
    except RunInterrupted as exc:
        if is_main():
            print(f"earl train: {exc}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Preempted as exc:
        from pipelines.launch import shutdown_distributed
        shutdown_distributed()             # every rank stopped at the same step: safe to tear down
        if is_main():
            print(f"[earl] {exc}; resume with: earl train --resume {exc.run_root}", file=sys.stderr)
        return EXIT_PREEMPTED
    if run_folder is None:                 # --dry-run
        return 0
    from pipelines.launch import shutdown_distributed
    shutdown_distributed()  # success path only: a barrier after one rank failed would hang the others
    print(f"[earl] run folder: {run_folder.root}")
    return 0


def _train(args: argparse.Namespace):
    """Run (or resume, or --dry-run check) and return the run folder; None for a dry run."""
    from pipelines.config import load_config
    from pipelines.runner import new_run_folder, preflight, resume, train
    if args.resume:
        return resume(args.resume, args.overrides, dry_run=args.dry_run)
    overrides = list(args.overrides) + ([f"run.run_dir={args.run_dir}"] if args.run_dir else [])
    cfg = load_config(args.config, overrides)
    if args.dry_run:
        preflight(cfg, new_run_folder(cfg))
        print(cfg.to_yaml())
        print("[earl] dry run: the TRL configs, model, data sources and output folder check out", file=sys.stderr)
        return None
    return train(cfg)


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
