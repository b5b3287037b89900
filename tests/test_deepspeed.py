"""Multi-process training through pipelines.launch: real accelerate + DeepSpeed ZeRO-2/3 on CPU (gloo).

Each run starts two real processes (tests/scaleout_worker.py: TRL GRPOTrainer on a tiny Llama) and asserts
what must hold across ranks: world size 2 (accelerate's --cpu trap starts one), rewards gathered from both
ranks, the entropy gate choosing the same tokens as one process, ZeRO checkpoints that resume at the right
step and load in a plain single process.
"""
from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.launch import (
    LaunchConfig,
    LaunchError,
    accelerate_argv,
    config_file,
    is_launched,
    launch_config_from_args,
    launch_env,
    maybe_relaunch,
)
from tests.helpers.net import free_port

ROOT = Path(__file__).resolve().parents[1]



def launch(launcher: str, program: list[str], nproc: int = 2, timeout: float = 300) -> subprocess.CompletedProcess:
    cmd = accelerate_argv(LaunchConfig(launcher, nproc, main_process_port=free_port()), program)
    env = launch_env()
    env.pop("EARL_LAUNCHED", None)
    proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False)
    assert proc.returncode == 0, f"{launcher} launch failed ({proc.returncode}):\n{proc.stderr[-4000:]}"
    return proc


def ranks(out: Path) -> list[dict]:
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]


# ----------------------------------------------------------------------------------------------- fast


@pytest.mark.parametrize("name", ["single", "ddp", "zero2", "zero3", "zero3-offload"])
def test_accelerate_configs_parse(name):
    from accelerate.commands.config.config_args import load_config_from_file
    cfg = load_config_from_file(str(config_file(name)))
    assert cfg.use_cpu is False  # `--cpu` would silently start one process
    if name.startswith("zero"):
        assert cfg.deepspeed_config["zero_stage"] == int(name[4])
    assert config_file(name).read_text().startswith("#"), "configs open with a comment saying how to run them"


def test_launch_argv_and_validation():
    argv = accelerate_argv(LaunchConfig("zero3", 16, num_machines=2, machine_rank=1, main_process_ip="n1",
                                        rdzv_backend="c10d"), ["-m", "pipelines.cli", "train"])
    joined = " ".join(argv)
    assert "--num_processes 16 --num_machines 2 --machine_rank 1" in joined
    assert "--deepspeed_multinode_launcher standard" in joined and "--main_process_ip n1" in joined
    assert argv[-3:] == ["-m", "pipelines.cli", "train"]
    with pytest.raises(LaunchError, match="--launcher"):
        LaunchConfig("zero9").validate()
    with pytest.raises(LaunchError, match="--main-process-ip"):
        LaunchConfig("zero2", 4, num_machines=2).validate()
    with pytest.raises(LaunchError, match="multiple of --num-machines"):
        LaunchConfig("zero2", 3, num_machines=2, main_process_ip="x").validate()
    with pytest.raises(LaunchError, match="single"):
        LaunchConfig("single", 2).validate()


def test_maybe_relaunch_reads_flags_then_config(tmp_path, monkeypatch):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("launch: {launcher: zero3, num_processes: 4}\nrun: {name: x}\n")
    ns = argparse.Namespace(config=str(cfg), launcher=None, num_processes=None)
    assert launch_config_from_args(ns).launcher == "zero3" and launch_config_from_args(ns).num_processes == 4
    ns.num_processes = 2
    assert launch_config_from_args(ns).num_processes == 2
    cfg.write_text("launch: {launcher: zero3, procs: 4}\n")
    with pytest.raises(LaunchError, match="launch.procs"):
        launch_config_from_args(ns)
    monkeypatch.setenv("LOCAL_RANK", "0")      # inside a launched rank: never relaunch again
    assert is_launched() and maybe_relaunch(argparse.Namespace(launcher="zero2", num_processes=2)) is None
    monkeypatch.delenv("LOCAL_RANK")
    monkeypatch.delenv("EARL_LAUNCHED", raising=False)
    assert maybe_relaunch(argparse.Namespace(config=None, launcher=None, num_processes=None)) is None


# ----------------------------------------------------------------------------------------------- slow


@pytest.mark.slow
@pytest.mark.deepspeed
def test_entropy_gate_two_ranks_selects_same_tokens_as_one(tmp_path):
    import torch

    from tests.scaleout_worker import gate_inputs, gate_main

    launch("ddp", ["-m", "tests.scaleout_worker", "gate", str(tmp_path / "two")])
    gate_main(tmp_path / "one")
    one = json.loads((tmp_path / "one" / "gate_rank0.json").read_text())
    parts = [json.loads((tmp_path / "two" / f"gate_rank{r}.json").read_text()) for r in range(2)]
    assert [p["world_size"] for p in parts] == [2, 2] and one["world_size"] == 1
    two = [row for p in parts for row in p["keep"]]
    assert two == one["keep"]
    ent, mask = gate_inputs()
    kept = torch.tensor(two).bool()
    # global top 20 % of the valid tokens (ties aside), not 20 % of each rank's half
    assert kept.sum().item() == math.ceil(0.2 * mask.sum().item())
    assert ent[kept].min() >= ent[mask & ~kept].max()


@pytest.mark.slow
def test_dynamic_sampling_two_ranks_keep_the_same_groups(tmp_path):
    """Real EARLGRPOTrainer on 2 DDP ranks with dynamic sampling: each step both ranks compute the same plan,
    and every group a rank trains on is one whose rewards differ (when the batch could be filled)."""
    out = tmp_path / "dyn"
    launch("ddp", ["-m", "tests.scaleout_worker", "dyn", str(out)])
    info = [json.loads((out / f"dyn_rank{r}.json").read_text()) for r in range(2)]
    assert [i["world_size"] for i in info] == [2, 2]
    assert info[0]["plans"] == info[1]["plans"] and len(info[0]["plans"]) == 3
    calls = [[json.loads(line) for line in (out / f"dyn_calls_rank{r}.jsonl").read_text().splitlines()]
             for r in range(2)]
    assert len(calls[0]) == len(calls[1]) == sum(p["metrics"]["dynamic_sampling/rounds"] for p in info[0]["plans"])
    start = 0
    for plan in info[0]["plans"]:
        rounds = int(plan["metrics"]["dynamic_sampling/rounds"])
        for rank in range(2):
            mine = calls[rank][start:start + rounds]
            assert all(len(c["prompts"]) == 8 for c in mine)            # TRL's per-rank batch, every round
            kept = [mine[r]["prompts"][4 * g] for r, g in plan["picks"][rank]]
            assert len(kept) == 2
            if plan["metrics"]["dynamic_sampling/max_rounds_reached"] == 0:
                assert kept == ["mix", "mix"], (plan, mine)
        start += rounds


def _check_run(out: Path, stage: int, steps: int) -> list[dict]:
    info = ranks(out)
    assert [i["world_size"] for i in info] == [2, 2], "two processes must train, not one"
    assert {i["backend"] for i in info} == {"gloo"} and {i["zero_stage"] for i in info} == {stage}
    assert [i["global_step"] for i in info] == [steps, steps]
    return info


def _check_rewards_gathered(out: Path, info: list[dict], steps: int) -> None:
    """TRL logs the mean over the rewards of BOTH ranks (gathered), step by step."""
    per_rank = [[json.loads(line)["rewards"] for line in (out / f"rewards_rank{r}.jsonl").read_text().splitlines()]
                for r in range(2)]
    assert [len(p) for p in per_rank] == [steps, steps], "each rank scores once per step, no step redone"
    logged = [h["reward"] for h in info[0]["log_history"] if "reward" in h]
    expected = [sum(a + b) / len(a + b) for a, b in zip(per_rank[0], per_rank[1])]
    assert logged == pytest.approx(expected[-len(logged):], abs=1e-5)


def _check_single_process_load(final: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tests.scaleout_worker import build_model, build_tokenizer

    model = AutoModelForCausalLM.from_pretrained(final)
    tok = AutoTokenizer.from_pretrained(final)
    init = build_model(len(build_tokenizer()))
    params = dict(model.named_parameters())
    assert all(torch.isfinite(p).all() for p in params.values())
    moved = [n for n, p in init.named_parameters() if not torch.equal(p, params[n])]
    assert moved, "the saved model must hold trained (changed) weights, not the initial ones"
    ids = tok("abc ", return_tensors="pt")
    out = model.generate(**ids, max_new_tokens=4, do_sample=False)
    assert out.shape[1] > ids["input_ids"].shape[1]


@pytest.mark.slow
@pytest.mark.deepspeed
@pytest.mark.parametrize("launcher,stage", [("zero2", 2), ("zero3", 3)])
def test_two_process_zero_trains_resumes_and_loads(tmp_path, launcher, stage):
    out = tmp_path / launcher
    worker = ["-m", "tests.scaleout_worker", str(out), "--save-steps", "2"]
    launch(launcher, worker + ["--max-steps", "4"])
    info = _check_run(out, stage, 4)
    _check_rewards_gathered(out, info, 4)
    ckpt = out / "checkpoint-4"
    assert (ckpt / "model.safetensors").is_file(), "ZeRO checkpoints carry a consolidated model"
    shards = sorted(p.name for p in (ckpt / "global_step4").iterdir())
    assert sum("optim_states" in s for s in shards) == 2, f"optimizer state sharded over 2 ranks: {shards}"
    _check_single_process_load(out / "final")

    launch(launcher, worker + ["--max-steps", "6", "--resume"])    # resumes from checkpoint-4
    info = _check_run(out, stage, 6)
    _check_rewards_gathered(out, info, 6)                             # 4 + 2 steps scored, none redone
    steps = [h["step"] for h in info[0]["log_history"] if "reward" in h]
    assert steps == [1, 2, 3, 4, 5, 6], f"resumed history must continue at step 5, logged {steps}"
    _check_single_process_load(out / "final")


def test_launch_cli_rejects_unknown_launcher(tmp_path):
    proc = subprocess.run([sys.executable, "-c", ("from pipelines.launch import *; "
                           "LaunchConfig('zero7', 2).validate()")], cwd=ROOT, capture_output=True, text=True, check=False)
    assert proc.returncode != 0 and "zero7" in proc.stderr
