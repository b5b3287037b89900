"""SFT stage: TRL's SFTTrainer on prompt-completion rows (loss on the completion only)."""
from __future__ import annotations

from typing import Any

from pipelines.data import load_source, sft_dataset
from pipelines.modeling import load_model, load_tokenizer, peft_config, save_final, tokenizer_path
from pipelines.runner import StageContext, trainer_args


def build_trainer(ctx: StageContext):
    from trl import SFTTrainer  # pyright: ignore[reportPrivateImportUsage]  trl exports these lazily (_LazyModule), pyright sees no re-export
    cfg = ctx.cfg
    args = trainer_args(cfg, ctx.name, ctx.stage, ctx.run)
    data = ctx.stage.data or cfg.data.train
    assert data is not None, "validate() requires training data for an sft stage"
    problems = load_source(data, cfg.data.task)
    tokenizer = load_tokenizer(tokenizer_path(ctx.model_path, cfg.model), padding_side="right")
    return SFTTrainer(
        model=load_model(ctx.model_path, cfg.model),
        args=args,
        train_dataset=sft_dataset(problems, cfg.data),
        processing_class=tokenizer,
        peft_config=peft_config(cfg.model.lora),
        callbacks=ctx.callbacks(),
    )


def run(ctx: StageContext) -> dict[str, Any]:
    trainer = build_trainer(ctx)
    out = ctx.fit(trainer)
    final = save_final(trainer, ctx.run.final_dir(ctx.name), trainer.processing_class)
    return {"model": str(final), "global_step": trainer.state.global_step,
            "train_loss": round(float(out.training_loss), 4)}
