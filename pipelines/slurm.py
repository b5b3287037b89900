"""Render and submit Slurm batch scripts for `earl train` (multi-node, preemption-safe) and eval sweeps.

The script is plain text a user can read and keep (`earl submit --dry-run`). Choices that matter:

- One srun task per node runs `accelerate launch`; the machine rank ($SLURM_NODEID) is expanded INSIDE
  each task (in the batch shell it is 0 everywhere), the main address comes from `scontrol show hostnames`,
  ranks meet through c10d rendezvous.
- Preemption / time limit: `--signal=B:USR1@<grace>` reaches the batch shell, whose trap writes
  `<run>/stop-requested` (pipelines.preemption): every rank saves a checkpoint at the end of the step it is
  in and exits. The trap waits for that (up to the grace period less a margin), then calls `scontrol
  requeue`; the restarted job finds `<run>/config.yaml` and runs `earl train --resume <run>`, so finished
  stages are skipped and the running one continues from the checkpoint just saved: no step is redone.
- The run folder is derived from the job name (default `earl-<config stem>`), so every restart of the job
  agrees on it without any state outside the file system.
"""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from pipelines.launch import PROJECT_ROOT, LaunchError, config_file
from pipelines.preemption import STOP_FILE

_TIME_RE = re.compile(r"^(\d+-)?\d{1,2}(:\d{2}){0,2}$|^\d+$")
_NAME_RE = re.compile(r"^[A-Za-z0-9_.+-]+$")


class SubmitError(ValueError):
    """A submission setting is wrong; the message names the flag."""


@dataclass
class SlurmJob:
    """Everything `earl submit` needs to render one batch script."""
    config: str                            # pipeline YAML (train) ; for --array, one entry per task
    nodes: int = 1
    gpus_per_node: int = 1                 # 0 = CPU-only nodes
    procs_per_node: int | None = None      # default: gpus_per_node, or 1 without GPUs
    cpus_per_task: int | None = None
    mem: str | None = None                 # e.g. 64G; default: Slurm's
    partition: str | None = None
    time: str | None = None                # Slurm time limit: MM, HH:MM:SS, D-HH:MM:SS
    account: str | None = None
    launcher: str = "zero2"
    job_name: str | None = None            # default earl-<config stem>
    run_dir: str | None = None             # default runs/<job name>
    log_dir: str = "runs/slurm-logs"
    signal_grace_s: int = 90               # USR1 this long before the time limit
    main_process_port: int = 29500
    python: str = field(default_factory=lambda: sys.executable)   # the interpreter that ran `earl submit`
    workdir: str = str(PROJECT_ROOT)
    overrides: list[str] = field(default_factory=list)
    extra_sbatch: list[str] = field(default_factory=list)   # raw `#SBATCH` options, e.g. --qos=high
    env: dict[str, str] = field(default_factory=dict)

    def validate(self) -> SlurmJob:
        if self.nodes < 1:
            raise SubmitError(f"--nodes: must be >= 1, got {self.nodes}")
        if self.gpus_per_node < 0:
            raise SubmitError(f"--gpus-per-node: must be >= 0, got {self.gpus_per_node}")
        if self.procs_per_node is not None and self.procs_per_node < 1:
            raise SubmitError(f"--procs-per-node: must be >= 1, got {self.procs_per_node}")
        if self.time is not None and not _TIME_RE.match(self.time):
            raise SubmitError(f"--time: {self.time!r} is not a Slurm time (MM, HH:MM:SS or D-HH:MM:SS)")
        if not _NAME_RE.match(self.name):
            raise SubmitError(f"--job-name: {self.name!r} may only hold letters, digits and _.+-")
        if self.signal_grace_s < 1:
            raise SubmitError(f"--signal-grace: must be >= 1 s, got {self.signal_grace_s}")
        try:
            config_file(self.launcher)
        except LaunchError as exc:
            raise SubmitError(str(exc)) from None
        if self.world_size > 1 and self.launcher == "single":
            raise SubmitError(f"--launcher single cannot run {self.world_size} processes; use ddp, zero2 or zero3")
        return self

    @property
    def name(self) -> str:
        return self.job_name or f"earl-{Path(self.config).stem}"

    @property
    def per_node(self) -> int:
        return self.procs_per_node or max(self.gpus_per_node, 1)

    @property
    def world_size(self) -> int:
        return self.nodes * self.per_node

    @property
    def run_folder(self) -> str:
        return self.run_dir or f"runs/{self.name}"


def _sbatch_header(job: SlurmJob, *, array: str | None = None) -> list[str]:
    lines = ["#!/bin/bash", f"#SBATCH --job-name={job.name}", f"#SBATCH --nodes={job.nodes}",
             "#SBATCH --ntasks-per-node=1"]
    if job.gpus_per_node:
        lines.append(f"#SBATCH --gpus-per-node={job.gpus_per_node}")
    if job.cpus_per_task:
        lines.append(f"#SBATCH --cpus-per-task={job.cpus_per_task}")
    for flag, value in (("mem", job.mem), ("partition", job.partition), ("time", job.time),
                        ("account", job.account), ("array", array)):
        if value:
            lines.append(f"#SBATCH --{flag}={value}")
    log = f"{job.log_dir}/%x-%A_%a.out" if array else f"{job.log_dir}/%x-%j.out"
    lines += [f"#SBATCH --output={log}", "#SBATCH --open-mode=append"]
    lines += [f"#SBATCH {opt}" for opt in job.extra_sbatch]
    return lines


def _env_block(job: SlurmJob) -> list[str]:
    lines = [
        f"cd {shlex.quote(job.workdir)}",
        "export TORCH_EXTENSIONS_DIR=${TORCH_EXTENSIONS_DIR:-$PWD/.cache/torch_extensions}  # DeepSpeed op cache",
        "export TOKENIZERS_PARALLELISM=false EARL_LAUNCHED=1",
        "export OMP_NUM_THREADS=${OMP_NUM_THREADS:-${SLURM_CPUS_PER_TASK:-1}}",
        "# NCCL: fail fast instead of hanging on a dead peer; set NCCL_SOCKET_IFNAME / NCCL_IB_HCA for your fabric",
        "export TORCH_NCCL_ASYNC_ERROR_HANDLING=1 NCCL_DEBUG=${NCCL_DEBUG:-WARN}",
    ]
    lines += [f"export {k}={shlex.quote(v)}" for k, v in job.env.items()]
    return lines


def _rel(path: Path | str, job: SlurmJob) -> str:
    """Paths under the work dir are written relative to it: the script reads the same on every machine.
    (abspath, not resolve: a venv's python is a symlink that must stay inside the venv.)"""
    path, work = os.path.abspath(path), os.path.abspath(job.workdir)
    return os.path.relpath(path, work) if path.startswith(work + os.sep) else path


def _accelerate_cmd(job: SlurmJob, program: str) -> str:
    """The per-task command, single-quoted by the caller so each task's shell expands $SLURM_NODEID."""
    parts = [_rel(job.python, job), "-m", "accelerate.commands.launch",
             "--config_file", _rel(config_file(job.launcher), job),
             "--num_processes", str(job.world_size), "--num_machines", "$SLURM_NNODES",
             "--machine_rank", "$SLURM_NODEID", "--main_process_ip", "$MAIN_ADDR",
             "--main_process_port", "$MAIN_PORT", "--rdzv_backend", "c10d"]
    if job.nodes > 1 and "zero" in Path(job.launcher).stem:
        parts += ["--deepspeed_multinode_launcher", "standard"]
    return " ".join(parts) + " " + program


def _stop_wait_s(job: SlurmJob) -> int:
    """How long the trap waits for the ranks' checkpoint: the grace period less a margin for the requeue."""
    return max(1, job.signal_grace_s - 15)


def render_train_script(job: SlurmJob) -> str:
    """A preemption-safe multi-node `earl train` batch script (see module docstring)."""
    job.validate()
    run = shlex.quote(job.run_folder)
    overrides = " ".join(shlex.quote(o) for o in job.overrides)
    cfg = shlex.quote(job.config)
    lines = _sbatch_header(job) + [
        f"#SBATCH --signal=B:USR1@{job.signal_grace_s}",
        "#SBATCH --requeue",
        "",
        "# Rendered by `earl submit`; resubmit with sbatch. Restarts (requeue) resume the same run folder.",
        "set -uo pipefail",
    ] + _env_block(job) + [
        f"RUN_DIR={run}",
        f"mkdir -p {shlex.quote(job.log_dir)} \"$RUN_DIR\"",
        'export MAIN_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)',
        f"export MAIN_PORT=$(( {job.main_process_port} + SLURM_JOB_ID % 1000 ))",
        "",
        f'rm -f "$RUN_DIR/{STOP_FILE}"  # a stop request is for the job that got it, not its restart',
        'SRUN_PID=""',
        "requeue() {  # USR1 from --signal before the time limit, or `scancel --signal=USR1 --batch`",
        '  echo "[earl] $(date +%T) job $SLURM_JOB_ID got USR1: checkpointing, then requeueing;'
        ' the restart resumes $RUN_DIR"',
        '  echo "$(date +%s) $SLURM_JOB_ID ${SLURM_RESTART_COUNT:-0}" >> "$RUN_DIR/preemptions.log"',
        f'  touch "$RUN_DIR/{STOP_FILE}"  # every rank saves at the end of its current step and exits',
        f"  for _ in $(seq {_stop_wait_s(job)}); do kill -0 \"$SRUN_PID\" 2>/dev/null || break; sleep 1; done",
        '  scontrol requeue "$SLURM_JOB_ID"',
        "}",
        "trap requeue USR1",
        "",
        'if [ -f "$RUN_DIR/config.yaml" ]; then TRAIN_ARGS="--resume $RUN_DIR"',
        f'else TRAIN_ARGS="--config {cfg} --run-dir $RUN_DIR"; fi',
        ('echo "[earl] $(date +%T) job $SLURM_JOB_ID restart ${SLURM_RESTART_COUNT:-0} on $SLURM_JOB_NODELIST: '
        'earl train $TRAIN_ARGS"'),
        "export TRAIN_ARGS",
        "# one task per node; the single quotes leave $SLURM_NODEID for each task to expand",
        "srun --ntasks-per-node=1 --kill-on-bad-exit=1 bash -c "
        + shlex.quote(_accelerate_cmd(job, f"-m pipelines.cli train $TRAIN_ARGS {overrides}".rstrip())) + " &",
        "SRUN_PID=$!",
        "# `wait` returns early when a trapped signal arrives; keep waiting until srun itself ends",
        "while true; do wait $SRUN_PID; rc=$?; kill -0 $SRUN_PID 2>/dev/null || break; done",
        'echo "[earl] $(date +%T) srun exited with $rc"',
        "exit $rc",
        "",
    ]
    return "\n".join(lines)


def render_array_script(job: SlurmJob, items: list[str], kind: str = "config",
                        eval_args: list[str] | None = None) -> str:
    """An array job: task i runs item i. kind=config -> `earl train --config ITEM`;
    kind=model -> `earl eval --model ITEM <eval_args>` (evaluation sweeps over checkpoints)."""
    if not items:
        raise SubmitError("--array: no configs or checkpoints given")
    if kind not in ("config", "model"):
        raise SubmitError(f"--array kind {kind!r}: use config or model")
    job.validate()
    bash_items = " ".join(shlex.quote(i) for i in items)
    if kind == "config":
        program = 'train --config "$ITEM" --run-dir "runs/${SLURM_JOB_NAME}-${SLURM_ARRAY_TASK_ID}"'
    else:
        program = 'eval --model "$ITEM" ' + " ".join(shlex.quote(a) for a in (eval_args or []))
    overrides = " ".join(shlex.quote(o) for o in job.overrides)
    cmd = _accelerate_cmd(job, f"-m pipelines.cli {program} {overrides}".rstrip()) if job.world_size > 1 \
        else f"{_rel(job.python, job)} -m pipelines.cli {program} {overrides}".rstrip()
    lines = _sbatch_header(job, array=f"0-{len(items) - 1}") + [
        "",
        f"# Rendered by `earl submit --array`: one task per {kind}.",
        "set -euo pipefail",
    ] + _env_block(job) + [
        f"mkdir -p {shlex.quote(job.log_dir)}",
        f"ITEMS=({bash_items})",
        'export ITEM="${ITEMS[$SLURM_ARRAY_TASK_ID]}"',
        'export MAIN_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)',
        f"export MAIN_PORT=$(( {job.main_process_port} + SLURM_JOB_ID % 1000 ))",
        'echo "[earl] array task $SLURM_ARRAY_TASK_ID: $ITEM"',
        "srun --ntasks-per-node=1 --kill-on-bad-exit=1 bash -c " + shlex.quote(cmd),
        "",
    ]
    return "\n".join(lines)


def submit(script: str, *, script_path: Path | None = None, env: dict[str, str] | None = None) -> int:
    """Write the script (kept beside the logs for reproducibility) and sbatch it; return the job id."""
    if script_path is not None:
        script_path.parent.mkdir(parents=True, exist_ok=True)
        script_path.write_text(script)
    try:
        proc = subprocess.run(["sbatch", "--parsable"], input=script, text=True, capture_output=True,
                              env=env, timeout=60, check=False)
    except FileNotFoundError:
        raise SubmitError("sbatch not found: run on a Slurm login node, or use --dry-run") from None
    if proc.returncode != 0:
        raise SubmitError(f"sbatch failed ({proc.returncode}): {proc.stderr.strip()}")
    return int(proc.stdout.strip().split(";")[0])
