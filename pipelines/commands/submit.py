"""`earl submit`: render a Slurm batch script for a config (or an array over configs/checkpoints) and sbatch it.

    earl submit --config configs/verilog_tiny.yaml --nodes 2 --gpus-per-node 8 --partition gpu --time 24:00:00
    earl submit --config configs/verilog_tiny.yaml --nodes 1 --gpus-per-node 4 --dry-run   # print the script
    earl submit --array model runs/a/stages/rl/final runs/b/stages/rl/final -- --problems data.jsonl
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="pipeline YAML to train (configs/*.yaml)")
    parser.add_argument("--nodes", type=int, default=1)
    parser.add_argument("--gpus-per-node", type=int, default=1, help="0 for CPU-only nodes")
    parser.add_argument("--procs-per-node", type=int, default=None,
                        help="processes per node (default: --gpus-per-node, or 1 without GPUs)")
    parser.add_argument("--cpus-per-task", type=int, default=None)
    parser.add_argument("--mem", default=None, help="memory per node, e.g. 256G")
    parser.add_argument("--partition", default=None)
    parser.add_argument("--time", default=None, help="time limit: MM, HH:MM:SS or D-HH:MM:SS")
    parser.add_argument("--account", default=None)
    parser.add_argument("--launcher", default="zero2", help="single | ddp | zero2 | zero3 | zero3-offload | YAML")
    parser.add_argument("--job-name", default=None, help="default earl-<config stem>; names the run folder")
    parser.add_argument("--run-dir", default=None, help="default runs/<job name>; restarts resume it")
    parser.add_argument("--log-dir", default="runs/slurm-logs")
    parser.add_argument("--signal-grace", type=int, default=90, metavar="S",
                        help="USR1 this many seconds before the time limit: requeue and resume")
    parser.add_argument("--sbatch", action="append", default=[], metavar="OPT",
                        help="extra #SBATCH option, repeatable (e.g. --sbatch=--qos=high)")
    parser.add_argument("--array", nargs="+", metavar=("KIND", "ITEM"), default=None,
                        help="array job: `config CFG...` trains each config, `model CKPT...` evaluates each "
                             "checkpoint (eval flags after `--`)")
    parser.add_argument("--dry-run", action="store_true", help="print the script, submit nothing")
    parser.add_argument("rest", nargs=argparse.REMAINDER,
                        help="config overrides key=value (train), or `-- earl eval flags` (--array model)")


def _job(args: argparse.Namespace, overrides: list[str], config: str):
    from pipelines.slurm import SlurmJob
    return SlurmJob(config=config, nodes=args.nodes, gpus_per_node=args.gpus_per_node,
                    procs_per_node=args.procs_per_node, cpus_per_task=args.cpus_per_task, mem=args.mem,
                    partition=args.partition, time=args.time, account=args.account, launcher=args.launcher,
                    job_name=args.job_name, run_dir=args.run_dir, log_dir=args.log_dir,
                    signal_grace_s=args.signal_grace, overrides=overrides, extra_sbatch=args.sbatch)


def render(args: argparse.Namespace) -> tuple[str, str]:
    """(script, job name) for the parsed flags; raises SubmitError naming the bad flag."""
    from pipelines.slurm import SubmitError, render_array_script, render_train_script
    rest = [a for a in (args.rest or []) if a != "--"]
    if args.array:
        kind, items = args.array[0], args.array[1:]
        for item in items:
            if not Path(item).exists():
                raise SubmitError(f"--array {kind}: {item} does not exist")
        name = args.job_name or f"earl-{kind}-sweep"
        job = _job(args, [] if kind == "model" else rest, config=items[0] if items else "sweep")
        job.job_name = name
        return render_array_script(job, items, kind, eval_args=rest if kind == "model" else None), name
    if not args.config:
        raise SubmitError("--config is required (or --array config|model ITEMS...)")
    if not Path(args.config).is_file():
        raise SubmitError(f"--config: {args.config} not found")
    job = _job(args, rest, args.config)
    return render_train_script(job), job.name


def run(args: argparse.Namespace) -> int:
    from pipelines.slurm import SubmitError, submit
    try:
        script, name = render(args)
        if args.dry_run:
            print(script, end="")
            return 0
        job_id = submit(script, script_path=Path(args.log_dir) / f"{name}.sbatch")
    except SubmitError as exc:
        print(f"earl submit: {exc}", file=sys.stderr)
        return 2
    print(f"[earl] submitted job {job_id} ({name}); logs: {args.log_dir}/{name}-{job_id}.out")
    print(job_id)
    return 0
