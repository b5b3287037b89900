"""RL stage: entropy-gated GRPO (EARLGRPOTrainer on TRL's GRPOTrainer), rewards composed from the config.
No `gating:` section means no gate (plain GRPO loss).

Also records which problems each step trained on (`data_order.jsonl`), so a resumed run can be checked
against an uninterrupted one step by step. With `dynamic_sampling:` a step generates in rounds; each
round's record carries its round number, and a step's order is all its rounds' ids in round order.
"""
from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from pipelines.data import load_source, rl_dataset
from pipelines.dynamic_sampling import DynamicSamplingConfig
from pipelines.earl_trainer import EARLGRPOTrainer
from pipelines.gating import GatingConfig
from pipelines.modeling import load_model, load_tokenizer, peft_config, save_final, tokenizer_path
from pipelines.runner import StageContext, trainer_args
from rewards.base import stages_of
from rewards.registry import compose

if TYPE_CHECKING:
    from trl import GRPOConfig  # pyright: ignore[reportPrivateImportUsage]  trl exports it lazily (_LazyModule)


class DataOrderRecorder:
    """Wraps the first reward: logs (global step, generation round, problem ids) per scored batch, then
    delegates. ``round_of`` tells the round (dynamic sampling); without it every batch is round 0. Passes
    on what the trainer reads of a reward (rewards.base): its `stages` and `last_scores`."""

    def __init__(self, fn, path: Path, round_of: Callable[[], int] | None = None):
        self.fn, self.path, self.round_of = fn, path, round_of
        self.__name__ = getattr(fn, "__name__", "reward")
        self.stages = stages_of(fn)

    @property
    def last_scores(self):
        return getattr(self.fn, "last_scores", None)

    def __call__(self, prompts, completions, **columns):
        state = columns.get("trainer_state")
        if state is not None and int(os.environ.get("RANK", "0")) == 0:
            row = {"step": state.global_step, "ids": list(columns.get("id", []))}
            if self.round_of is not None:
                row["round"] = int(self.round_of())
            with self.path.open("a") as fh:
                fh.write(json.dumps(row) + "\n")
        return self.fn(prompts, completions, **columns)



def read_data_order(path: str | Path) -> dict[int, list[str]]:
    """step -> problem ids; a step logged twice (redone after a resume) keeps its last record. Rounds after
    the first (dynamic sampling) append to their step's ids; a round-0 record starts the step afresh."""
    out: dict[int, list[str]] = {}
    p = Path(path)
    if p.is_file():
        for line in p.read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                if row.get("round", 0) and row["step"] in out:
                    out[row["step"]] = out[row["step"]] + row["ids"]
                else:
                    out[row["step"]] = row["ids"]
    return out


def build_trainer(ctx: StageContext):
    cfg = ctx.cfg
    args = cast("GRPOConfig", trainer_args(cfg, ctx.name, ctx.stage, ctx.run))  # rl stage: a GRPOConfig
    composed, weights = compose([vars(r) for r in cfg.rewards])     # the one source of reward weights
    funcs: list[Callable[..., Any]] = list(composed)
    ctx.out_dir.mkdir(parents=True, exist_ok=True)
    recorder = funcs[0] = DataOrderRecorder(funcs[0], ctx.out_dir / "data_order.jsonl")
    data = ctx.stage.data or cfg.data.train
    assert data is not None, "validate() requires training data for an rl stage"
    problems = load_source(data, cfg.data.task)
    trainer = EARLGRPOTrainer(
        model=load_model(ctx.model_path, cfg.model),
        reward_funcs=funcs,
        args=args,
        train_dataset=rl_dataset(problems, cfg.data),
        processing_class=load_tokenizer(tokenizer_path(ctx.model_path, cfg.model), padding_side="left"),
        peft_config=peft_config(cfg.model.lora),
        callbacks=ctx.callbacks(),
        gating=GatingConfig(**(ctx.stage.gating or {"granularity": "none"})),
        dynamic_sampling=DynamicSamplingConfig(**(ctx.stage.dynamic_sampling or {})),
        reward_overlap=bool(ctx.stage.reward_overlap),
        reward_weights=weights,
    )
    if trainer.dynamic_sampling.enabled:
        recorder.round_of = lambda: trainer.dynamic_round
    return trainer


def run(ctx: StageContext) -> dict[str, Any]:
    trainer = build_trainer(ctx)
    ctx.fit(trainer)
    final = save_final(trainer, ctx.run.final_dir(ctx.name), trainer.processing_class)
    return {"model": str(final), "global_step": trainer.state.global_step}
