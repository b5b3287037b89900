"""Every shipped config builds its real TRL trainers with the tiny model swapped in, so none rots.

Only what a CPU test box cannot have is swapped: the model (tiny, with a minimal chat template so chat
configs keep their chat path), bf16 and vLLM, and the training data (8 generated tasks, or for a config
reading a public dataset through an adapter, a 4-row file in that dataset's layout). Everything else -
LoRA, gating, batch geometry, loss type, clipping, learning rates - is the config's own.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.config import load_config
from pipelines.runner import RunFolder, StageContext
from tests.helpers.layouts import codev_parquet

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
    train = f"{{generator: {gen}, n: 8, seed: 0, split: train}}"
    if raw_cfg.data.train is not None and raw_cfg.data.train.adapter == "codev-r1":
        train = f"{{path: {codev_parquet(run_dir.parent / 'codev_r1_rl_train.parquet')}, adapter: codev-r1}}"
    overrides = [f"model.name_or_path={model}", "model.dtype=float32", "model.attn_implementation=null",
                 f"data.train={train}", f"run.run_dir={run_dir}"]
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


@pytest.mark.slow
def test_codev_r1_recipe_trains_on_its_dataset_layout(tiny_chat, tmp_path):
    """The CodeV-R1 recipe: DAPO clipping/loss and dynamic sampling, 16 samples, no KL, the gate, on reference-only
    rows read from a 4-row file in CodeV-R1's parquet layout (the real one is on the hub)."""
    from pipelines.stages import rl
    _, cfg = swapped(REPO / "configs" / "verilog_qwen2.5-coder-7b_codev-r1.yaml", tiny_chat, tmp_path / "run")
    trainer = rl.build_trainer(StageContext(cfg, "rl", cfg.stages["rl"], RunFolder(tmp_path / "run"), tiny_chat))
    a = trainer.args
    assert (a.loss_type, a.epsilon, a.epsilon_high, a.beta, a.num_generations) == ("dapo", 0.2, 0.28, 0.0, 16)
    assert trainer.gating.granularity == "batch" and trainer.gating.top_ratio == 0.2
    assert trainer.dynamic_sampling.enabled and trainer.dynamic_sampling.metric == "pass"
    rows = trainer.train_dataset
    assert rows.num_rows == 4 and all(t is None for t in rows["testbench"]), "reference-only problems"
    assert all("adder4" in r for r in rows["reference"])
    assert [s.kind for s in cfg.stages.values()] == ["rl", "eval", "eval"]
