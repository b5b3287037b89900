"""Pipeline configs: YAML -> dataclasses, overrides, and errors that name the key before any work."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pipelines.cli import main
from pipelines.config import ConfigError, PipelineConfig, load_config

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "configs" / "verilog_tiny.yaml"
SHIPPED = sorted(p for p in (REPO / "configs").glob("*.yaml"))


def minimal(**extra) -> dict:
    raw = {
        "run": {"name": "t"},
        "data": {"train": {"generator": "rtl", "n": 4}, "eval": {"generator": "rtl", "n": 2, "split": "heldout"}},
        "stages": {"sft": {"trainer": {"max_steps": 1}}, "rl": {"trainer": {"max_steps": 1}}, "eval": {}},
    }
    raw.update(extra)
    return raw


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_every_shipped_config_loads_and_opens_with_a_comment(path):
    text = path.read_text()
    assert text.startswith("#"), f"{path.name} must open with a comment saying what/where/how"
    assert "earl train --config" in text or "make " in text, f"{path.name}: comment must give the command"
    cfg = load_config(path)
    assert cfg.stages, path.name
    assert all(s.kind in ("sft", "rl", "eval") for s in cfg.stages.values())


def test_tiny_default_is_sft_rl_eval_in_order():
    cfg = load_config(TINY)
    assert [s.kind for s in cfg.stages.values()] == ["sft", "rl", "eval"]
    assert cfg.model.name_or_path == "tiny"
    assert cfg.stages["eval"].settings.models == ["sft"]


def test_override_sets_nested_trainer_key_and_parses_numbers():
    cfg = load_config(TINY, ["stages.rl.trainer.learning_rate=3e-5", "run.seed=7", "stages.eval.settings.k=[1]"])
    assert cfg.stages["rl"].trainer["learning_rate"] == pytest.approx(3e-5)
    assert isinstance(cfg.stages["rl"].trainer["learning_rate"], float)
    assert cfg.run.seed == 7


def test_yaml_string_floats_are_accepted():  # PyYAML reads `1e-4` (no dot) as a string
    raw = minimal()
    raw["stages"]["sft"]["trainer"]["learning_rate"] = "1e-4"
    assert load_config(raw=raw).stages["sft"].trainer["learning_rate"] == pytest.approx(1e-4)


@pytest.mark.parametrize("override, key", [
    ("model.dtyp=float32", "model.dtyp"),
    ("stages.rl.trainer.learning_rat=1e-4", "stages.rl.trainer.learning_rat"),
    ("stages.sft.trainer.not_a_field=1", "stages.sft.trainer.not_a_field"),
    ("stages.rl.gating.top_rate=0.2", "stages.rl.gating.top_rate"),
    ("data.train.generatr=rtl", "data.train.generatr"),
    ("stages.eval.settings.samples=3", "stages.eval.settings.samples"),
    ("launch.num_proc=2", "launch.num_proc"),
])
def test_unknown_key_is_named(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(TINY, [override])


@pytest.mark.parametrize("override, key", [
    ("run.seed=abc", "run.seed"),
    ("run.seed=1.5", "run.seed"),
    ("stages.rl.trainer.learning_rate=fast", "stages.rl.trainer.learning_rate"),
    ("stages.rl.trainer.num_generations=[8]", "stages.rl.trainer.num_generations"),
    ("stages.sft.trainer.bf16=maybe", "stages.sft.trainer.bf16"),
    ("stages.eval.settings.k=5", "stages.eval.settings.k"),
    ("model.lora=3", "model.lora"),
    ("stages.rl.gating.top_ratio=1.5", "stages.rl.gating"),
])
def test_ill_typed_key_is_named(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(TINY, [override])


def test_cross_field_errors_name_the_key():
    with pytest.raises(ConfigError, match=r"stages\.eval\.settings\.k"):
        load_config(TINY, ["stages.eval.settings.k=[1,5]"])           # n = 1
    with pytest.raises(ConfigError, match=r"stages\.eval\.settings\.models"):
        load_config(TINY, ["stages.eval.settings.models=[nope]"])
    with pytest.raises(ConfigError, match=r"stages\.bogus\.kind"):
        load_config(raw=minimal(stages={"bogus": {}}))
    with pytest.raises(ConfigError, match=r"data\.train"):
        load_config(raw=minimal(data={"train": {"generator": "rtl", "n": 2, "path": "x.jsonl"},
                                      "eval": {"path": "y.jsonl"}}))
    with pytest.raises(ConfigError, match=r"stages\.eval\.trainer"):
        load_config(raw=minimal(stages={"eval": {"trainer": {"learning_rate": 1.0}}}))


def test_named_stage_with_explicit_kind_and_any_subset():
    raw = minimal(stages={"warmup": {"kind": "sft", "trainer": {"max_steps": 1}}, "eval": {}})
    cfg = load_config(raw=raw)
    assert [(n, s.kind) for n, s in cfg.stages.items()] == [("warmup", "sft"), ("eval", "eval")]


def test_resolved_config_round_trips():
    cfg = load_config(TINY, ["stages.rl.trainer.max_steps=3"])
    again = load_config(raw=yaml.safe_load(cfg.to_yaml()))
    assert again.to_dict() == cfg.to_dict()
    assert isinstance(again, PipelineConfig)


def test_cli_rejects_bad_key_before_any_work(tmp_path, capsys):
    run_dir = tmp_path / "run"
    rc = main(["train", "--config", str(TINY), "--run-dir", str(run_dir), "stages.rl.trainer.lr=1"])
    assert rc == 2
    assert "stages.rl.trainer.lr" in capsys.readouterr().err
    assert not run_dir.exists(), "a config error must stop before the run folder is created"


def test_cli_trl_rejection_is_reported_before_any_work(tmp_path, capsys):
    # generation batch 64 not divisible by 7 generations: GRPOConfig refuses it at build time
    run_dir = tmp_path / "run"
    rc = main(["train", "--config", str(TINY), "--run-dir", str(run_dir), "stages.rl.trainer.num_generations=7"])
    assert rc == 2
    assert "stages.rl.trainer" in capsys.readouterr().err
    assert not (run_dir / "state.json").exists()


def test_cli_dry_run_prints_resolved_config(capsys):
    assert main(["train", "--config", str(TINY), "--dry-run", "stages.rl.trainer.max_steps=5"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["stages"]["rl"]["trainer"]["max_steps"] == 5


# --------------------------------------------------------------------------- validation up front (#13)


@pytest.mark.parametrize("override, key", [
    ("stages.rl.trainer.max_steps=-5", "stages.rl.trainer.max_steps"),      # TRL would train 3 epochs
    ("stages.rl.trainer.max_steps=0", "stages.rl.trainer.max_steps"),
    ("stages.sft.trainer.learning_rate=-1e-4", "stages.sft.trainer.learning_rate"),
    ("stages.rl.trainer.learning_rate=0", "stages.rl.trainer.learning_rate"),
    ("stages.sft.trainer.per_device_train_batch_size=0", "stages.sft.trainer.per_device_train_batch_size"),
    ("stages.rl.trainer.num_generations=1", "stages.rl.trainer.num_generations"),
    ("stages.rl.trainer.temperature=0", "stages.rl.trainer.temperature"),
    ("stages.rl.trainer.beta=-0.1", "stages.rl.trainer.beta"),
    ("data.train.n=0", "data.train.n"),
    ("stages.eval.settings.max_new_tokens=0", "stages.eval.settings.max_new_tokens"),
    ("stages.eval.settings.top_p=1.5", "stages.eval.settings.top_p"),
])
def test_negative_or_zero_counts_and_rates_name_the_key(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(TINY, [override])


def test_max_steps_minus_one_keeps_trl_meaning():
    assert load_config(TINY, ["stages.rl.trainer.max_steps=-1"]).stages["rl"].trainer["max_steps"] == -1


def test_override_with_invalid_yaml_is_one_line_naming_it(capsys):
    rc = main(["train", "--config", str(TINY), "--dry-run", "stages.rl.trainer.max_steps=[1"])
    err = capsys.readouterr().err
    assert rc == 2 and "max_steps=[1" in err and "not valid YAML" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("override, needle", [
    ("stages.rl.trainer.num_generations=7", "GRPOConfig rejected"),     # needs the TRL config built
    ("data.eval.path=/nonexistent/heldout.jsonl", "data.eval"),          # data resolved, not just named
    ("model.name_or_path=/nonexistent/model", "model.name_or_path"),
    ("data.train.options={phrasings: [9]}", "data.train"),              # generator options drawn once
])
def test_dry_run_checks_what_the_run_would(override, needle, capsys):
    rc = main(["train", "--config", str(TINY), "--dry-run", override])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert needle in err and "Traceback" not in err


def test_missing_eval_data_fails_before_sft(tmp_path, capsys):
    run_dir = tmp_path / "run"
    rc = main(["train", "--config", str(TINY), "--run-dir", str(run_dir), "data.eval.path=missing.jsonl",
               "data.eval.generator=null"])
    assert rc == 2 and "data.eval" in capsys.readouterr().err
    assert not run_dir.exists(), "checked before the run folder (and SFT) starts"


def test_read_only_output_dir_is_reported_up_front(tmp_path, capsys):
    import os
    if os.geteuid() == 0:              # root writes anywhere: make the parent a file instead
        (tmp_path / "file").write_text("")
        out = tmp_path / "file" / "runs"
    else:
        (tmp_path / "ro").mkdir(mode=0o555)
        out = tmp_path / "ro" / "runs"
    rc = main(["train", "--config", str(TINY), "--dry-run", f"run.output_dir={out}"])
    err = capsys.readouterr().err
    assert rc == 2 and "run.output_dir" in err and "Traceback" not in err


def test_run_folder_config_holds_absolute_paths(tmp_path, monkeypatch):
    from pipelines.config import absolute_paths
    (tmp_path / "data.jsonl").write_text("")
    monkeypatch.chdir(tmp_path)
    cfg = load_config(TINY, ["data.eval.path=data.jsonl", "data.eval.generator=null", "run.output_dir=runs"])
    fixed = absolute_paths(cfg)
    assert fixed.data.eval.path == str(tmp_path / "data.jsonl")
    assert fixed.run.output_dir == str(tmp_path / "runs")
    assert fixed.model.name_or_path == "tiny" and cfg.data.eval.path == "data.jsonl", "a copy; tiny kept"


def test_non_utf8_config_names_file_and_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(b"run: {name: x}\n# caf\xe9\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml:2: not UTF-8"):
        load_config(bad)


def test_reward_weights_have_one_home():
    with pytest.raises(ConfigError, match=r"stages\.rl\.trainer\.reward_weights: .*rewards\[i\]\.weight"):
        load_config(TINY, ["stages.rl.trainer.reward_weights=[1.0]"])
