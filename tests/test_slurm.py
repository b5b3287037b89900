"""`earl submit` against a real single-node Slurm (tests/slurm_cluster.py starts munged, slurmctld, slurmd).

The slow test submits a tiny SFT -> RL pipeline on 2 DeepSpeed ZeRO-2 processes, preempts it mid-RL the way
the time limit does (USR1 to the batch shell, whose trap asks the ranks to checkpoint, then requeues the
job) and asserts the restarted job resumed: SFT not redone, RL continued from the checkpoint saved on the
signal and ended at the configured global step, metrics logged once per step.

No timing: a weight-0 reward plugin (tests/helpers/hold.py) holds RL step 3 until the stop request exists,
so the signal always lands mid-step-3, whatever the load.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipelines.slurm import SlurmJob, SubmitError, render_array_script, render_train_script

ROOT = Path(__file__).resolve().parents[1]
RL_STEPS = 6
HOLD_AFTER = 2          # completed RL steps when the test preempts (checkpoint-2 exists, step 3 is held)

MINI_CONFIG = """\
# A pipeline small enough for a test: tiny model, 3 SFT steps, {rl} RL steps checkpointed every 2.
run: {{name: mini, output_dir: {out}, seed: 0}}
model:
  name_or_path: tiny
  tiny: {{hidden_size: 32, intermediate_size: 64, num_hidden_layers: 1, num_attention_heads: 2,
         corpus_tasks: 200, vocab_size: 300}}
data:
  train: {{generator: rtl, n: 64, seed: 0, split: train}}
rewards:
  - name: verilog_functional
  - {{name: "tests.helpers.hold:HoldAtStep", weight: 0.0,
     kwargs: {{step: {hold}, marker: "{marker}", release: "{release}"}}}}
stages:
  sft:
    trainer: {{max_steps: 3, per_device_train_batch_size: 8, learning_rate: 1.0e-3, max_length: 256,
              save_steps: 2}}
  rl:
    trainer: {{max_steps: {rl}, per_device_train_batch_size: 4, num_generations: 4, max_completion_length: 16,
              save_steps: 2, beta: 0.0, learning_rate: 1.0e-4}}
"""


def _earl(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipelines.cli", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120, check=False)


# ----------------------------------------------------------------------------------------------- rendering


def test_rendered_script_expands_rank_per_task_and_requeues():
    script = render_train_script(SlurmJob(config="configs/verilog_tiny.yaml", nodes=2, gpus_per_node=8,
                                          partition="gpu", time="1-00:00:00", account="lab"))
    lines = script.splitlines()
    assert "#SBATCH --nodes=2" in lines and "#SBATCH --gpus-per-node=8" in lines
    assert "#SBATCH --signal=B:USR1@90" in lines and "#SBATCH --requeue" in lines
    assert "#SBATCH --time=1-00:00:00" in lines and "#SBATCH --account=lab" in lines
    srun = next(line for line in lines if line.startswith("srun "))
    # single-quoted: $SLURM_NODEID is expanded by each task's shell, not by the batch shell (rank 0 there)
    assert "bash -c '" in srun and "--machine_rank $SLURM_NODEID" in srun
    assert "--num_processes 16" in srun and "--rdzv_backend c10d" in srun
    assert "--deepspeed_multinode_launcher standard" in srun
    assert 'scontrol show hostnames "$SLURM_JOB_NODELIST"' in script
    assert "trap requeue USR1" in script and 'scontrol requeue "$SLURM_JOB_ID"' in script
    assert "--resume $RUN_DIR" in script and "RUN_DIR=runs/earl-verilog_tiny" in script
    assert subprocess.run(["bash", "-n"], input=script, text=True, check=False).returncode == 0


def test_machine_rank_expanded_inside_each_task(tmp_path):
    """Run the rendered srun line's quoting in two fake task shells: each sees its own SLURM_NODEID."""
    script = render_train_script(SlurmJob(config="c.yaml", nodes=2, gpus_per_node=1, python="echo"))
    srun = next(line for line in script.splitlines() if line.startswith("srun "))
    task_cmd = srun.split(" bash -c ", 1)[1].rsplit(" &", 1)[0]
    seen = []
    for node in ("0", "1"):
        env = {**os.environ, "SLURM_NODEID": node, "SLURM_NNODES": "2", "MAIN_ADDR": "n1", "MAIN_PORT": "1",
               "TRAIN_ARGS": "--resume r"}
        out = subprocess.run(f"bash -c {task_cmd}", shell=True, env=env, capture_output=True, text=True, check=False)
        seen.append(out.stdout)
    assert "--machine_rank 0 " in seen[0] and "--machine_rank 1 " in seen[1]
    assert "--main_process_ip n1" in seen[1] and "train --resume r" in seen[1]


def test_array_script_and_bad_flags(tmp_path):
    script = render_array_script(SlurmJob(config="a.yaml", gpus_per_node=0, job_name="sweep"),
                                 ["runs/a/final", "runs/b/final"], "model", eval_args=["--problems", "p.jsonl"])
    assert "#SBATCH --array=0-1" in script and 'ITEM="${ITEMS[$SLURM_ARRAY_TASK_ID]}"' in script
    assert 'eval --model "$ITEM" --problems p.jsonl' in script
    assert subprocess.run(["bash", "-n"], input=script, text=True, check=False).returncode == 0
    with pytest.raises(SubmitError, match="--time"):
        render_train_script(SlurmJob(config="c.yaml", time="3 hours"))
    with pytest.raises(SubmitError, match="--launcher"):
        render_train_script(SlurmJob(config="c.yaml", launcher="zero5"))
    with pytest.raises(SubmitError, match="--nodes"):
        render_train_script(SlurmJob(config="c.yaml", nodes=0))


def test_submit_cli_dry_run_and_errors(tmp_path):
    cfg = tmp_path / "x.yaml"
    cfg.write_text("run: {name: x}\n")
    out = _earl("submit", "--config", str(cfg), "--nodes", "2", "--gpus-per-node", "4", "--dry-run",
                "stages.rl.trainer.learning_rate=1e-4")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("#!/bin/bash") and "#SBATCH --job-name=earl-x" in out.stdout
    assert "stages.rl.trainer.learning_rate=1e-4" in out.stdout
    missing = _earl("submit", "--config", str(tmp_path / "nope.yaml"), "--dry-run")
    assert missing.returncode == 2 and "nope.yaml not found" in missing.stderr
    array = _earl("submit", "--array", "model", str(tmp_path / "gone"), "--dry-run")
    assert array.returncode == 2 and "gone does not exist" in array.stderr


# ----------------------------------------------------------------------------------------------- real Slurm


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    from tests.slurm_cluster import SlurmCluster, missing_binaries

    missing = missing_binaries()
    if missing and os.geteuid() != 0:
        pytest.skip(f"Slurm tests need root (to start munged/slurmctld/slurmd) or the daemons; missing: {missing}")
    if missing:
        pytest.fail(f"running as root but Slurm/munge binaries are missing: {missing} "
                    "(apt-get install slurm-wlm munge; `make setup-test` does it)")
    if os.geteuid() != 0:
        pytest.skip("Slurm tests start daemons as SlurmUser=root: run as root (CI does)")
    cluster = SlurmCluster(tmp_path_factory.mktemp("slurm"))
    try:
        cluster.start()
    except Exception:
        cluster.stop()
        raise
    yield cluster
    cluster.stop()


def _wait_for(path_glob: Path, pattern: str, timeout: float, cluster, job_id: int) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if list(path_glob.glob(pattern)):
            return
        state = cluster.job(job_id).get("JobState")
        assert state in ("PENDING", "RUNNING", "CONFIGURING", "COMPLETING"), f"job ended early: {state}"
        time.sleep(0.5)
    raise TimeoutError(f"no {path_glob}/{pattern} after {timeout}s; {cluster.job(job_id)}")


@pytest.mark.slow
@pytest.mark.slurm
def test_submit_runs_pipeline_and_resumes_after_requeue(slurm, tmp_path):
    cfg = tmp_path / "mini.yaml"
    run_dir, logs, held = tmp_path / "run", tmp_path / "logs", tmp_path / "held"
    cfg.write_text(MINI_CONFIG.format(out=tmp_path / "runs", rl=RL_STEPS, hold=HOLD_AFTER, marker=held,
                                      release=run_dir / "stop-requested"))
    # the whole stack: sbatch -> srun -> accelerate launch -> 2 DeepSpeed ZeRO-2 ranks -> earl train
    sub = _earl("submit", "--config", str(cfg), "--nodes", "1", "--gpus-per-node", "0", "--procs-per-node", "2",
                "--launcher", "zero2",
                "--partition", slurm.partition, "--time", "30:00", "--job-name", "earl-mini",
                "--run-dir", str(run_dir), "--log-dir", str(logs), env=slurm.env)
    assert sub.returncode == 0, sub.stderr
    job_id = int(sub.stdout.split()[-1])
    assert (logs / "earl-mini.sbatch").is_file(), "the submitted script is kept beside the logs"

    # preempt mid-RL exactly as the time limit would: USR1 to the batch shell -> trap -> stop request ->
    # the ranks save checkpoint-3 and exit -> scontrol requeue. The held step cannot end before the signal.
    _wait_for(tmp_path, held.name, 240, slurm, job_id)
    sig = subprocess.run(["scancel", "--signal=USR1", "--batch", str(job_id)], env=slurm.env,
                         capture_output=True, text=True, check=False)
    assert sig.returncode == 0, sig.stderr

    info = slurm.wait_job(job_id, timeout=300)
    log = "\n".join(p.read_text() for p in logs.glob("*.out"))
    print(log[-8000:])                   # shown by pytest when an assertion below fails
    assert info["JobState"] == "COMPLETED", f"{info}\n{log[-3000:]}"
    assert int(info.get("Restarts", "0")) >= 1, f"the job must have been requeued once: {info}"
    assert "got USR1: checkpointing, then requeueing" in log and "restart 1" in log
    assert f"--resume {run_dir}" in log, "the restart must resume the same run folder"
    assert "stage sft: done already, skipping" in log, "a finished stage must not be redone"
    saved = run_dir / "stages" / "rl" / "checkpoints" / f"checkpoint-{HOLD_AFTER + 1}"
    assert f"stage rl: resuming from {saved} (step {HOLD_AFTER + 1})" in log, \
        "the restart resumes from the checkpoint saved on the signal, not the last periodic one"
    assert "stopped at step 3 (stop-requested)" in log

    state = json.loads((run_dir / "state.json").read_text())
    assert state["stages"]["sft"]["status"] == "done" and state["stages"]["rl"]["status"] == "done"
    assert state["stages"]["sft"]["global_step"] == 3
    assert state["stages"]["rl"]["global_step"] == RL_STEPS
    assert (run_dir / "stages" / "rl" / "final" / "model.safetensors").is_file()
    ckpt = run_dir / "stages" / "rl" / "checkpoints" / f"checkpoint-{RL_STEPS}"
    assert (ckpt / "rng_state_1.pth").is_file(), "two ranks trained"
    shards = list((ckpt / f"global_step{RL_STEPS}").glob("*optim_states.pt"))
    assert len(shards) == 2, f"ZeRO-2 optimizer state sharded over the 2 ranks: {shards}"
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    rl_steps = [r["step"] for r in rows if r["stage"] == "rl" and "reward" in r]
    assert rl_steps == list(range(1, RL_STEPS + 1)), f"each RL step logged once after resume: {rl_steps}"
    assert len((run_dir / "preemptions.log").read_text().splitlines()) == 1

    # evaluation sweep over the two stage checkpoints: one array task each, both complete
    finals = [str(run_dir / "stages" / s / "final") for s in ("sft", "rl")]
    arr = _earl("submit", "--array", "model", *finals, "--gpus-per-node", "0", "--partition", slurm.partition,
                "--job-name", "earl-sweep", "--log-dir", str(logs), "--",
                "--problems", "rtl:2:0:heldout", "--max-new-tokens", "8", "--batch-size", "2", env=slurm.env)
    assert arr.returncode == 0, arr.stderr
    array_id = int(arr.stdout.split()[-1])
    for task in range(2):
        info = slurm.wait_job(f"{array_id}_{task}", timeout=240)
        out = (logs / f"earl-sweep-{array_id}_{task}.out").read_text()
        assert info["JobState"] == "COMPLETED", f"{info}\n{out[-2000:]}"
        assert f"array task {task}: {finals[task]}" in out and "pass@1" in out
