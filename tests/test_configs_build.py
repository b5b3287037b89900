"""Every shipped config builds its real TRL trainers with the tiny model swapped in, so none rots.

Only what a CPU test box cannot have is swapped: the model (tiny, with a minimal chat template so chat
configs keep their chat path), bf16 and vLLM, and the training data (8 generated tasks). Everything
else - LoRA, gating, batch geometry, loss type, learning rates - is the config's own.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.config import load_config
from pipelines.runner import RunFolder, StageContext

REPO = Path(__file__).resolve().parents[1]
SHIPPED = sorted((REPO / "configs").glob("*.yaml"))
CHAT_TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
                 "{% if add_generation_prompt %}<|assistant|>{% endif %}")


@pytest.fixture(scope="session")
def tiny_chat(tmp_path_factory) -> str:
    """The tiny model and tokenizer, plus a minimal chat template (real configs use chat prompts)."""
    from transformers import AutoTokenizer

    from pipelines.tiny import build_tiny
    out = build_tiny(tmp_path_factory.mktemp("tiny") / "model")
    tok = AutoTokenizer.from_pretrained(out)
    tok.chat_template = CHAT_TEMPLATE
    tok.save_pretrained(out)
    return str(out)


def swapped(path: Path, model: str, run_dir: Path):
    raw_cfg = load_config(path)
    gen = "security" if raw_cfg.data.task == "security-repair" else "rtl"    # the config's task kind
    overrides = [f"model.name_or_path={model}", "model.dtype=float32", "model.attn_implementation=null",
                 f"data.train={{generator: {gen}, n: 8, seed: 0, split: train}}", f"run.run_dir={run_dir}"]
    for name, stage in raw_cfg.stages.items():
        if stage.kind in ("sft", "rl"):
            overrides += [f"stages.{name}.trainer.bf16=false", f"stages.{name}.data=null"]
        if stage.kind == "rl":
            overrides += [f"stages.{name}.trainer.use_vllm=false"]
    return raw_cfg, load_config(path, overrides)


@pytest.mark.slow
@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_config_builds_its_trainers(path, tiny_chat, tmp_path):
    from peft import PeftModel
    from trl import SFTTrainer

    from pipelines.earl_trainer import EARLGRPOTrainer
    from pipelines.stages import rl, sft
    original, cfg = swapped(path, tiny_chat, tmp_path / "run")
    run = RunFolder(tmp_path / "run")
    built = 0
    for name, stage in cfg.stages.items():
        if stage.kind == "eval":
            continue
        ctx = StageContext(cfg, name, stage, run, tiny_chat)
        trainer = (sft if stage.kind == "sft" else rl).build_trainer(ctx)
        assert isinstance(trainer, SFTTrainer if stage.kind == "sft" else EARLGRPOTrainer)
        for key, value in original.stages[name].trainer.items():
            if key in ("bf16", "use_vllm"):
                continue
            got = getattr(trainer.args, key)
            got = getattr(got, "value", got)          # enums such as lr_scheduler_type
            assert got == value or got == pytest.approx(value), f"{path.name} stages.{name}.trainer.{key}"
        assert isinstance(trainer.model, PeftModel) == (cfg.model.lora is not None), path.name
        if stage.kind == "rl":
            gating = original.stages[name].gating or {"granularity": "none"}
            assert trainer.gating.granularity == gating.get("granularity", "batch")
            assert trainer.args.reward_weights == [r.weight for r in cfg.rewards]
        built += 1
    assert built == sum(s.kind != "eval" for s in cfg.stages.values())
