"""A tiny GRPO run launched by tests/test_deepspeed.py (and bench/bench_scaleout.py) under a launcher.

Run as ``python -m tests.scaleout_worker OUT_DIR [--max-steps N] [--resume]`` inside each rank. It builds a
character-level tokenizer and a ~60 k-parameter LlamaForCausalLM in-process (no hub), trains TRL's
GRPOTrainer with a deterministic reward, and writes per-rank evidence the test asserts on:
``rank<R>.json`` (world size, backend, DeepSpeed stage, global step) and ``rewards_rank<R>.jsonl`` (every
reward this rank computed), beside the trainer's own checkpoints and ``log_history``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ALPHABET = list("abcdefghijklmnopqrstuvwxyz01 ")


def build_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    special = ["<pad>", "<s>", "</s>", "<unk>"]
    vocab = {tok: i for i, tok in enumerate(special + ALPHABET)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    tok.decoder = decoders.Fuse()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>",
                                   eos_token="</s>", unk_token="<unk>")
    fast.padding_side = "left"
    return fast


def build_model(vocab_size: int, seed: int = 0):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=128,
                      tie_word_embeddings=True, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    return LlamaForCausalLM(cfg)


def a_fraction(prompts, completions, **_):
    """Reward: share of 'a' in the completion; logged per rank so the test can recompute the global mean."""
    rewards = [c.count("a") / max(len(c), 1) for c in completions]
    out = Path(os.environ["SCALEOUT_OUT"]) / f"rewards_rank{os.environ.get('RANK', '0')}.jsonl"
    with out.open("a") as fh:
        fh.write(json.dumps({"t": time.time(), "rewards": rewards}) + "\n")
    return rewards


def gate_inputs(seed: int = 0):
    """A fixed (B, T) entropy batch with ragged padding, the same in every process."""
    import torch
    g = torch.Generator().manual_seed(seed)
    ent = torch.rand(8, 12, generator=g) * 3
    lengths = torch.tensor([12, 3, 7, 12, 1, 9, 5, 11])
    mask = torch.arange(12)[None, :] < lengths[:, None]
    return ent, mask


def gate_main(out: Path) -> int:
    """Each rank gates its half of `gate_inputs` with the EARL batch gate; rank 0 of 1 gates all of it."""
    import torch
    import torch.distributed as dist

    from pipelines.gating import GatingConfig, entropy_gate

    if "RANK" in os.environ and not dist.is_initialized():
        dist.init_process_group("gloo")
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    ent, mask = gate_inputs()
    rows = torch.arange(ent.size(0)).tensor_split(world)[rank]
    keep = entropy_gate(ent[rows], mask[rows], GatingConfig(granularity="batch", top_ratio=0.2))
    out.mkdir(parents=True, exist_ok=True)
    (out / f"gate_rank{rank}.json").write_text(json.dumps(
        {"rank": rank, "world_size": world, "rows": rows.tolist(), "keep": keep.int().tolist()}))
    if dist.is_initialized():
        dist.destroy_process_group()
    return 0


def kind_reward(prompts, completions, **_):
    """Reward by the prompt's word: `pass` -> 1 for every completion, `fail` -> 0, `mix` -> alternating
    (local batches hold whole groups, so a `mix` group always has spread). Logged per rank and call."""
    rewards = []
    for i, p in enumerate(prompts):
        word = p.split()[0]
        rewards.append(1.0 if word == "pass" else 0.0 if word == "fail" else float(i % 2))
    out = Path(os.environ["SCALEOUT_OUT"]) / f"dyn_calls_rank{os.environ.get('RANK', '0')}.jsonl"
    with out.open("a") as fh:
        fh.write(json.dumps({"prompts": [p.split()[0] for p in prompts], "rewards": rewards}) + "\n")
    return rewards


def dyn_main(out: Path, max_steps: int = 3) -> int:
    """EARLGRPOTrainer with dynamic sampling on 2 ranks: every rank writes each step's batch plan."""
    import torch
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig

    from pipelines.earl_trainer import EARLGRPOTrainer

    out.mkdir(parents=True, exist_ok=True)
    os.environ["SCALEOUT_OUT"] = str(out)
    torch.set_num_threads(1)
    tok = build_tokenizer()
    prompts = [f"{w} " for w in ("pass", "fail", "mix", "fail", "pass", "fail", "pass", "mix")] * 4
    config = GRPOConfig(
        output_dir=str(out), max_steps=max_steps, save_strategy="no", per_device_train_batch_size=8,
        num_generations=4, max_completion_length=6, learning_rate=1e-3, logging_steps=1, report_to=[], seed=0,
        beta=0.0, use_cpu=not torch.cuda.is_available(), bf16=False, disable_tqdm=True, dataloader_num_workers=0)
    plans: list[dict] = []

    class RecordPlan(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            plan = trainer.last_batch_plan
            plans.append({"step": state.global_step, "picks": plan.picks, "metrics": plan.metrics()})

    trainer = EARLGRPOTrainer(model=build_model(len(tok)), reward_funcs=kind_reward, args=config,
                              train_dataset=Dataset.from_dict({"prompt": prompts}), processing_class=tok,
                              dynamic_sampling={"enabled": True, "max_rounds": 6}, callbacks=[RecordPlan()])
    trainer.train()
    rank = trainer.accelerator.process_index
    (out / f"dyn_rank{rank}.json").write_text(json.dumps(
        {"rank": rank, "world_size": trainer.accelerator.num_processes, "plans": plans}))
    from pipelines.launch import shutdown_distributed
    shutdown_distributed()
    return 0


def step_clock():
    """A TrainerCallback stamping the end of every optimizer step: wall time per full step (generation,
    reward, forward/backward, gradient communication and the optimizer), whatever the launcher."""
    from transformers import TrainerCallback

    class StepClock(TrainerCallback):
        def __init__(self):
            self.stamps: list[float] = []

        def on_step_begin(self, args, state, control, **kwargs):
            if not self.stamps:
                self.stamps.append(time.perf_counter())

        def on_step_end(self, args, state, control, **kwargs):
            self.stamps.append(time.perf_counter())

        @property
        def step_s(self) -> list[float]:
            return [b - a for a, b in zip(self.stamps, self.stamps[1:])]

    return StepClock()


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "gate":
        return gate_main(Path(argv[1]))
    if argv and argv[0] == "dyn":
        return dyn_main(Path(argv[1]))
    ap = argparse.ArgumentParser()
    ap.add_argument("out_dir")
    ap.add_argument("--max-steps", type=int, default=4)
    ap.add_argument("--save-steps", type=int, default=2)
    ap.add_argument("--resume", action="store_true")
    args = ap.parse_args(argv)

    import torch
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    os.environ["SCALEOUT_OUT"] = str(out)
    torch.set_num_threads(1)
    tok = build_tokenizer()
    model = build_model(len(tok))
    prompts = [f"{w} " for w in ("abc", "hello", "zero", "one", "banana", "cab", "dab", "faa")] * 4
    config = GRPOConfig(
        output_dir=str(out), max_steps=args.max_steps, save_steps=args.save_steps, save_strategy="steps",
        per_device_train_batch_size=4, num_generations=4, max_completion_length=8,
        learning_rate=1e-3, logging_steps=1, report_to=[], seed=0, beta=0.0,
        use_cpu=not torch.cuda.is_available(), bf16=False, save_only_model=False,
        disable_tqdm=True, dataloader_num_workers=0,
    )
    clock = step_clock()
    trainer = GRPOTrainer(model=model, reward_funcs=a_fraction, args=config, callbacks=[clock],
                          train_dataset=Dataset.from_dict({"prompt": prompts}), processing_class=tok)
    t0 = time.perf_counter()
    trainer.train(resume_from_checkpoint=True if args.resume else None)
    wall = time.perf_counter() - t0
    state = trainer.accelerator.state
    rank = trainer.accelerator.process_index
    ds = state.deepspeed_plugin
    evidence = {
        "rank": rank, "world_size": state.num_processes,
        "backend": str(torch.distributed.get_backend()) if torch.distributed.is_initialized() else None,
        "distributed_type": str(state.distributed_type),
        "zero_stage": ds.zero_stage if ds is not None else None,
        "global_step": trainer.state.global_step, "train_wall_s": wall, "step_s": clock.step_s,
        "log_history": trainer.state.log_history,
    }
    (out / f"rank{rank}.json").write_text(json.dumps(evidence, indent=1))
    trainer.save_model(str(out / "final"))
    if trainer.accelerator.is_main_process:
        tok.save_pretrained(str(out / "final"))
    from pipelines.launch import shutdown_distributed
    shutdown_distributed()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
