"""Where the tiny default's RL step goes: generation, the reward's cost on the critical path, the rest
(advantages, loss forward/backward), with TRL's order and with reward overlap, at beta 0 (the shipped
setting: TRL runs no log-prob pass between generation and rewards) and beta 0.04 (a reference pass runs).

Needs the default's SFT checkpoint, so its completions are Verilog the reward really simulates (a random
model's output is rejected by the pre-check in microseconds and would flatter the reward): the newest
``runs/verilog_tiny-*/stages/sft/final`` that `make train` left, or ``EARL_BENCH_SFT=/path``.
"""
from __future__ import annotations

import os
import statistics
import tempfile
from pathlib import Path

from bench import Unmeasured

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "configs" / "verilog_tiny.yaml"
KEYS = ("step_time", "timing/generate", "timing/reward", "timing/reward_wait")


def sft_checkpoint() -> Path | None:
    env = os.environ.get("EARL_BENCH_SFT")
    if env:
        return Path(env)
    finals = sorted(REPO.glob("runs/verilog_tiny-*/stages/sft/final/config.json"), key=lambda p: p.stat().st_mtime)
    return finals[-1].parent if finals else None


def rl_steps(model: Path, steps: int, beta: float, overlap: bool, out: Path) -> list[dict]:
    """`steps` RL steps of the shipped RL stage from `model`; the per-step metric rows."""
    from pipelines.config import load_config
    from pipelines.runner import train
    cfg = load_config(TINY, [f"model.name_or_path={model}", f"stages.rl.trainer.max_steps={steps}",
                             f"stages.rl.trainer.beta={beta}", f"stages.rl.reward_overlap={str(overlap).lower()}",
                             "stages.rl.trainer.save_steps=1000", f"run.run_dir={out}"])
    cfg.stages = {"rl": cfg.stages["rl"]}
    run = train(cfg)
    return [r for r in run.read_metrics("rl") if "step_time" in r]


def split(rows: list[dict]) -> dict[str, float]:
    """Medians per step (the first step, with its warm-up, left out)."""
    rows = rows[1:] or rows
    return {k: statistics.median(float(r[k]) for r in rows) for k in KEYS}


def run(quick: bool = False) -> str:
    model = sft_checkpoint()
    head = ["## RL step: generation, reward, loss (tiny default)", ""]
    if model is None:
        raise Unmeasured("no SFT checkpoint: `make train` leaves one in runs/, or set EARL_BENCH_SFT")
    steps = 4 if quick else 9
    table = ["| setting | step s | generate | reward wait (critical path) | reward compute | rest (loss, "
             "log-prob passes, advantages) |", "|---|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as tmp:
        for label, beta, overlap in [("beta 0 (shipped), TRL's order", 0.0, False),
                                     ("beta 0 (shipped), reward overlap", 0.0, True),
                                     ("beta 0.04, TRL's order", 0.04, False),
                                     ("beta 0.04, reward overlap", 0.04, True)]:
            m = split(rl_steps(model, steps, beta, overlap, Path(tmp) / f"{beta}-{overlap}"))
            step = m["step_time"]
            rest = step - m["timing/generate"] - m["timing/reward_wait"]
            table.append(f"| {label} | {step:.2f} | {m['timing/generate'] / step:.0%} | "
                         f"{m['timing/reward_wait'] / step:.1%} | {m['timing/reward'] / step:.1%} | "
                         f"{rest / step:.0%} |")
    return "\n".join(head + table + [
        "",
        f"From `{model.relative_to(REPO) if model.is_relative_to(REPO) else model}`: {steps} steps of the shipped RL "
        "stage (64 completions a step, 8 per prompt, 2 CPU cores shared by the model and the reward's "
        "sandboxes); medians over the steps after the first; shares of TRL's `step_time` (the whole "
        "training step but the optimizer update). Reward compute is the time the rewards ran, reward wait the "
        "part of it the step waited for: with overlap the rest ran during TRL's log-prob passes. Goal: reward "
        "wait ≤ 10 % of the step.", ""])
