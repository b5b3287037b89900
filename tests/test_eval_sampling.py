"""Eval that separates sharpening from teaching: n > 1 samples at T > 0 plus a greedy decode, reported
together (pass@1, pass@k, greedy pass@1), paired counts on both, and per-family / per-wording tables."""
from __future__ import annotations

import json
import shutil

import pytest

from pipelines import evaluate as ev_mod
from pipelines.config import (
    ConfigError,
    DataConfig,
    DataSource,
    EvalSettings,
    ModelConfig,
    RewardEntry,
    load_config,
)
from pipelines.data import completion_text, load_source
from pipelines.evaluate import EvalResult, ProblemResult, family_table, paired

needs_iverilog = pytest.mark.skipif(shutil.which("iverilog") is None, reason="iverilog not installed")
WRONG = "module TopModule(); endmodule"


def _fake_generate(quality: dict[str, int]):
    """A stand-in for generate_hf: greedy gives the reference when quality >= 1; sampling gives `quality`
    correct samples out of n."""
    def gen(model_path, problems, ev, model_cfg, data_cfg, seed=0):
        out = []
        for p in problems:
            q = quality[p.id]
            if ev.temperature == 0:
                out.append([completion_text(p) if q >= 2 else WRONG])
            else:
                out.append([completion_text(p) if i < q else WRONG for i in range(ev.n)])
        return out
    return gen


@needs_iverilog
def test_sampled_and_greedy_are_both_reported(monkeypatch, tmp_path):
    problems = load_source(DataSource(generator="rtl", n=4, seed=3, split="heldout"))
    quality = {p.id: q for p, q in zip(problems, [0, 1, 2, 4])}
    monkeypatch.setattr(ev_mod, "generate_hf", _fake_generate(quality))
    settings = EvalSettings(n=4, k=[1, 4], temperature=0.8, greedy=True, max_new_tokens=8)
    res = ev_mod.evaluate("m", problems, settings, [RewardEntry()], ModelConfig(), DataConfig(), label="rl")
    assert [p.correct for p in res.problems] == [0, 1, 2, 4]
    assert res.pass_at_k[1] == pytest.approx((0 + 0.25 + 0.5 + 1) / 4) and res.pass_at_k[4] == 0.75
    assert [p.passed for p in res.greedy] == [[False], [False], [True], [True]]
    assert res.greedy_pass_at_1 == 0.5
    assert "greedy pass@1 = 50.0%" in res.summary() and "sampled pass@1" in res.summary()
    assert all(p.meta.keys() == {"family", "phrasing"} for p in res.problems)
    # JSON round trip keeps the greedy decode; the file says greedy pass@1 outright
    saved = res.save(tmp_path / "rl.json")
    d = json.loads(saved.read_text())
    assert d["greedy_pass_at_1"] == 0.5 and len(d["greedy"]) == 4
    back = EvalResult.load(saved)
    assert back.greedy_pass_at_1 == 0.5 and back.problems[0].meta == res.problems[0].meta


def _result(label: str, first: list[bool], greedy: list[bool] | None = None, fams=("a", "a", "b", "b")):
    probs = [ProblemResult(str(i), 2, int(f) + 1, [f, True], [0.0, 1.0], meta={"family": fam, "phrasing": i % 2})
             for i, (f, fam) in enumerate(zip(first, fams))]
    g = [ProblemResult(str(i), 1, int(x), [x], [float(x)]) for i, x in enumerate(greedy or [])]
    return EvalResult(label, "m", 2, [1, 2], probs, greedy=g)


def test_paired_counts_on_first_sample_and_on_greedy():
    sft = _result("sft", [True, False, False, True], greedy=[False, False, True, True])
    rl = _result("rl", [True, True, True, False], greedy=[True, True, True, True])
    assert paired(sft, rl) == {"problems": 4, "up": 2, "down": 1, "sign_test_p": 1.0}
    assert paired(sft, rl, greedy=True) == {"problems": 4, "up": 2, "down": 0, "sign_test_p": 0.5}


def test_family_and_wording_tables():
    sft = _result("sft", [True, False, False, False], greedy=[True, False, False, False])
    rl = _result("rl", [True, True, False, True], greedy=[True, True, True, True])
    table = family_table([sft, rl])
    assert table.splitlines()[0] == ("| family | problems | sft pass@1 | sft pass@2 | sft greedy | rl pass@1 "
                                     "| rl pass@2 | rl greedy |")
    # family a: sft samples [T,T],[F,T] -> pass@1 (1 + 0.5)/2; greedy 1 of 2
    assert "| a | 2 | 75.0% | 100.0% | 50.0% | 100.0% | 100.0% | 100.0% |" in table
    assert "| b | 2 | 50.0% | 100.0% | 0.0% | 75.0% | 100.0% | 100.0% |" in table
    assert family_table([sft, rl], "phrasing").splitlines()[2].startswith("| 0 | 2 |")
    plain = EvalResult("x", "m", 1, [1], [ProblemResult("p", 1, 1, [True], [1.0])])
    assert family_table([plain]) == ""


def test_old_eval_json_loads_and_plain_results_write_the_old_layout(tmp_path):
    old = {"label": "sft", "model": "m", "n": 1, "k": [1], "wall_s": 1.0, "settings": {},
           "problems": [{"id": "p", "n": 1, "correct": 1, "passed": [True], "rewards": [1.0], "stages": ["pass"],
                         "samples": ["x"], "errors": 0}], "pass_at_k": {"1": 1.0}}
    path = tmp_path / "old.json"
    path.write_text(json.dumps(old))
    res = EvalResult.load(path)
    assert res.pass_at_k == {1: 1.0} and res.greedy == [] and res.greedy_pass_at_1 is None
    assert res.problems[0].meta == {}
    assert res.to_dict() == old


def test_greedy_setting_is_validated():
    raw = {"data": {"eval": {"generator": "rtl", "n": 2}}, "stages": {"eval": {"settings": {}}}}
    ok = dict(raw, stages={"eval": {"settings": {"n": 4, "k": [1, 4], "temperature": 0.8, "greedy": True}}})
    assert load_config(raw=ok).stages["eval"].settings.greedy is True
    bad = dict(raw, stages={"eval": {"settings": {"greedy": True}}})
    with pytest.raises(ConfigError, match=r"stages\.eval\.settings\.greedy"):
        load_config(raw=bad)


class _Run:
    """The slice of RunFolder write_report reads."""
    def __init__(self, root):
        self.root = root

    def load_state(self) -> dict:
        return {"stages": {"sft": {"kind": "sft", "status": "done"}, "rl": {"kind": "rl", "status": "done"},
                           "eval": {"kind": "eval", "status": "done"}}}

    def read_metrics(self, name: str) -> list:
        return []


def test_report_has_greedy_column_paired_greedy_and_family_tables(tmp_path):
    import os

    from pipelines.report import write_report
    for i, r in enumerate([_result("sft", [True, False, False, False], greedy=[True, False, False, False]),
                           _result("rl", [True, True, False, True], greedy=[True, True, True, True])]):
        path = r.save(tmp_path / "eval" / f"{r.label}.json")
        os.utime(path, (1000 + i, 1000 + i))
    report = write_report(_Run(tmp_path)).read_text()
    assert "| model | problems | n | pass@1 | pass@2 | greedy pass@1 |" in report
    assert "| sft | 4 | 2 | 62.5% | 100.0% | 25.0% |" in report and "| rl | 4 | 2 | 87.5% | 100.0% | 100.0% |" in report
    assert "sft → rl (greedy): 3 fail→pass, 0 pass→fail" in report
    assert "sft → rl (first sample): 2 fail→pass, 0 pass→fail" in report
    assert "### Held-out by family" in report and "### Held-out by phrasing" in report
