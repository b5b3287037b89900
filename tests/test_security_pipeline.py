"""Security repair end to end with the tiny model, real TRL trainers and the real security_repair reward
(bandit + taint rules, sandboxed tests): sft -> rl -> eval on generated tasks, then the bundled held-out
file read through a path source. SMALL on purpose: this proves wiring, not learning (make train-security)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipelines.config import ConfigError, DataSource, load_config
from pipelines.data import completion_text, load_source, reward_rows, task_kind
from pipelines.runner import RunFolder, train
from rewards.security.tasks import SecurityTask

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "security_repair_tiny.yaml"
BUNDLED = REPO / "pipelines" / "tasks" / "security_tasks.jsonl"

SMALL = [
    "data.train.n=16", "data.eval.n=4",
    "stages.sft.trainer.max_steps=2", "stages.sft.trainer.per_device_train_batch_size=8",
    "stages.sft.trainer.logging_steps=1",
    "stages.rl.trainer.max_steps=2", "stages.rl.trainer.per_device_train_batch_size=4",
    "stages.rl.trainer.num_generations=2", "stages.rl.trainer.max_completion_length=16",
    "stages.eval.settings.max_new_tokens=16",
]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_security_kind_is_inferred_and_rows_carry_the_reward_columns() -> None:
    src = DataSource(generator="security", n=3, split="heldout")
    assert task_kind(src).name == "security-repair"
    tasks = load_source(src)
    assert all(isinstance(t, SecurityTask) for t in tasks)
    row = reward_rows(tasks, load_config(CONFIG).data)[0]
    assert {"vulnerable", "tests", "func_name", "prompt"} <= set(row)
    assert completion_text(tasks[0]).strip() == tasks[0].reference.strip()
    bundled = load_source(DataSource(path=str(BUNDLED), n=5), "security-repair")
    assert len(bundled) == 5 and isinstance(bundled[0], SecurityTask)


def test_task_must_match_the_generator() -> None:
    with pytest.raises(ConfigError, match=r"data.train.generator: 'security' makes security-repair tasks"):
        load_config(CONFIG, ["data.task=verilog"])
    with pytest.raises(ConfigError, match="data.task: expected one of"):
        load_config(CONFIG, ["data.task=python"])


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_sft_rl_eval_reports_secure_metrics(tmp_path: Path) -> None:
    root = tmp_path / "run"
    run: RunFolder = train(load_config(CONFIG, SMALL + [f"run.run_dir={root}"]))
    state = run.load_state()
    assert {n: s["status"] for n, s in state["stages"].items()} == {"sft": "done", "rl": "done", "eval": "done"}
    assert state["stages"]["rl"]["global_step"] == 2
    for label in ("sft", "rl"):
        res = json.loads((root / "eval" / f"{label}.json").read_text())
        assert len(res["problems"]) == 4
        m = res["metrics"]
        assert m["n"] == 4 and {"secure@1", "secure_and_correct@1", "similarity"} <= set(m)
        assert 0.0 <= m["secure_and_correct@1"] <= m["secure@1"] <= 1.0
        # pass@1 is secure-and-correct@1 (one greedy sample per task)
        assert res["pass_at_k"]["1"] == pytest.approx(m["secure_and_correct@1"])
        for p in res["problems"]:
            assert len(p["details"]) == 1 and {"secure", "similarity", "reason"} <= set(p["details"][0])
    assert set(state["stages"]["eval"]["metrics"]) == {"sft", "rl"}
    report = (root / "report.md").read_text()
    assert "secure@1" in report and "secure_and_correct@1" in report


def test_eval_scoring_judges_fixes_and_vulnerable_code_apart() -> None:
    """Eval's judge path with no model: the reference fix passes (secure and correct), the untouched
    vulnerable code fails as a no-op, and the metrics say so."""
    from pipelines.config import RewardEntry
    from pipelines.data import kind_of
    from pipelines.evaluate import score
    tasks = load_source(DataSource(generator="security", n=2, split="heldout"))
    cfg = load_config(CONFIG)
    samples = [[t.reference, t.vulnerable] for t in tasks]
    results = score(tasks, samples, [RewardEntry(**vars(r)) for r in cfg.rewards], cfg.data)
    assert [r.passed for r in results] == [[True, False]] * 2
    assert [d["reason"] for d in results[0].details] == ["ok", "no_op"]
    m = kind_of(tasks[0]).metrics([d for r in results for d in r.details])
    assert (m["n"], m["secure@1"], m["secure_and_correct@1"]) == (4, 0.5, 0.5)
