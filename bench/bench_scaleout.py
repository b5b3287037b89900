"""Step time of one process vs two (DDP, ZeRO-2, ZeRO-3) on CPU: the communication overhead of scale-out.

Weak scaling: every process keeps the same per-device batch (4 completions), so two processes do twice
the work per step and the ideal step-time ratio is 1.0; anything above is gloo all-reduce / ZeRO gather
and partition traffic (plus, on a 2-core machine, the two ranks competing for cores). Each process is
single-threaded (OMP_NUM_THREADS=1, as torchrun sets it) so the baseline is one core like each rank.
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from pipelines.launch import LaunchConfig, accelerate_argv, launch_env
from tests.helpers.net import free_port

ROOT = Path(__file__).resolve().parents[1]


def _run(launcher: str, nproc: int, steps: int, out: Path) -> dict:
    program = ["-m", "tests.scaleout_worker", str(out), "--max-steps", str(steps), "--save-steps", "100000"]
    if nproc == 1 and launcher == "single":
        cmd = [sys.executable, *program]
    else:
        cmd = accelerate_argv(LaunchConfig(launcher, nproc, main_process_port=free_port()), program)
    env = launch_env()
    env.pop("EARL_LAUNCHED", None)
    env["OMP_NUM_THREADS"] = "1"
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{launcher} x{nproc} failed:\n{proc.stderr[-3000:]}")
    info = json.loads((out / "rank0.json").read_text())
    times = info["step_s"][1:]   # the first step warms up (allocations, DeepSpeed buffers)
    return {"world": info["world_size"], "step_s": statistics.median(times), "steps": len(times)}


def run(quick: bool = False) -> str:
    steps = 6 if quick else 24
    cases = [("single", 1), ("ddp", 2), ("zero2", 2), ("zero3", 2)]
    if quick:
        cases = [("single", 1), ("zero2", 2), ("zero3", 2)]
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-scaleout-") as tmp:
        for launcher, nproc in cases:
            rows.append((launcher, nproc, _run(launcher, nproc, steps, Path(tmp) / f"{launcher}{nproc}")))
    base = rows[0][2]["step_s"]
    lines = [
        "## Scale-out: step time, 1 process vs 2 (CPU, gloo)",
        "",
        ("| launcher | processes | completions / step | median step (s) | step-time ratio vs 1 process "
        "| throughput ratio |"),
        "|---|---|---|---|---|---|",
    ]
    for launcher, nproc, r in rows:
        assert r["world"] == nproc, f"{launcher}: expected world size {nproc}, got {r['world']}"
        ratio = r["step_s"] / base
        lines.append(f"| {launcher} | {nproc} | {4 * nproc} | {r['step_s']:.3f} | {ratio:.2f}x "
                     f"| {nproc / ratio:.2f}x |")
    lines += ["", (f"Measured with tests/scaleout_worker.py (TRL GRPOTrainer, ~60 k-param Llama, 8 new tokens, "
              f"per-device batch 4) launched by pipelines.launch on {os.cpu_count()} CPU cores: median wall time "
              f"between optimizer steps (a TrainerCallback on rank 0) over steps 2-{steps}, each rank "
              "single-threaded; weak scaling, so a ratio of 1.00x means no communication overhead. Shared "
              "machine: rerun before trusting differences under ~10 %. ZeRO-3 pays most in GRPO's generation: "
              "every generated token re-gathers each layer's sharded parameters.")]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(run(quick="--quick" in sys.argv))
