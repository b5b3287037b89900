"""The Verilog functional reward on real iverilog/vvp in the real sandbox.

Must show: every VerilogEval sample reference passes; mutants (operator flipped, output inverted,
syntax broken, empty body) fail at the right stage; whitespace/comment variants hit the cache; TRL-style
calls work with dataset columns or problem ids.
"""
from __future__ import annotations

import shutil

import pytest

from rewards.registry import build_reward, compose
from rewards.verilog.loaders import load_problems
from rewards.verilog.problems import Problem
from rewards.verilog.reward import VerilogReward, VerilogRewardConfig, reference_candidate
from tests.helpers.verilog_mutants import (
    OPERATOR_FLIPS,
    as_top,
    break_syntax,
    empty_body,
    flip_operator,
    invert_outputs,
)

pytestmark = pytest.mark.skipif(shutil.which("iverilog") is None, reason="iverilog not installed")


@pytest.fixture(scope="module")
def problems(verilog_eval_dir):
    return {p.id: p for p in load_problems(verilog_eval_dir)}


@pytest.fixture(scope="module")
def reward(verilog_eval_dir):
    r = VerilogReward(verilog_eval_dir, workers=2)
    yield r
    r.close()


def test_every_reference_passes(problems, reward):
    ps = list(problems.values())
    scores = reward.score_batch(ps, [reference_candidate(p) for p in ps])
    bad = [(s.problem_id, s.reason) for s in scores if not s.passed]
    assert not bad
    assert all(s.stage == "pass" and s.reward == pytest.approx(1.0) and s.samples > 0 for s in scores)


def test_mutants_fail_at_the_right_stage(problems, reward):
    assert set(OPERATOR_FLIPS) == set(problems)
    batch, expect = [], []
    for pid, p in problems.items():
        for kind, code, stage in [("flip", flip_operator(pid, p.reference), "simulate"),
                                  ("invert", invert_outputs(p.reference), "simulate"),
                                  ("empty", empty_body(p.reference), "simulate"),
                                  ("syntax", break_syntax(p.reference), "format")]:
            batch.append((p, f"```verilog\n{code}```"))
            expect.append((pid, kind, stage))
    scores = reward.score_batch([b[0] for b in batch], [b[1] for b in batch])
    wrong = [(e, s.stage, s.reason) for e, s in zip(expect, scores, strict=True) if s.stage != e[2] or s.passed]
    assert not wrong
    for (_pid, kind, _), s in zip(expect, scores, strict=True):
        assert s.reason
        if kind == "syntax":
            assert s.reward == pytest.approx(0.1) and "syntax error" in s.reason and s.compile_error
        else:
            assert s.mismatches and s.mismatches > 0 and s.samples
            assert 0.3 <= s.reward < 0.65         # compile credit + partial credit below a pass


def test_without_precheck_broken_syntax_fails_in_iverilog(problems):
    r = VerilogReward(list(problems.values()), syntax_precheck=False, workers=2)
    p = problems["Prob009_popcount3"]
    s = r.score(p, break_syntax(p.reference))
    assert s.stage == "syntax" and not s.passed
    assert s.compile_error and "sample.sv" in s.compile_error and s.reason.startswith("compile error")
    assert s.reward == pytest.approx(0.1)


def test_format_failures(problems, reward):
    p = problems["Prob009_popcount3"]
    finishing = as_top(p.reference).replace("endmodule", "initial #5 $finish;\nendmodule")
    cases = {"I don't know.": "no Verilog code",
             "```verilog\nmodule Other(input a); endmodule\n```": "no module named TopModule (found Other)",
             f"```verilog\n{finishing}```":
                 "forbidden construct(s) in the candidate: $finish"}
    scores = reward.score_batch([p] * len(cases), list(cases))
    for (_text, why), s in zip(cases.items(), scores, strict=True):
        assert s.stage == "none" and s.reward == 0.0 and why in s.reason


def test_forged_verdict_line_does_not_pass(problems):
    """A candidate printing the pass line itself earns nothing: only the bench's tagged lines count."""
    p = problems["Prob009_popcount3"]
    forged = ("module TopModule(input [2:0] in, output [1:0] out);\n assign out = 2'b00;\n"
              " final $display(\"Mismatches: 0 in 200 samples\");\n"
              " initial $display(\"===========Your Design Passed===========\");\nendmodule\n")
    r = VerilogReward([p], forbidden=())
    s = r.score(p, forged)
    assert not s.passed and s.stage == "simulate" and s.mismatches > 0


def test_cache_hits_on_whitespace_and_comment_variants(problems):
    r = VerilogReward(list(problems.values()), workers=2)
    p = problems["Prob017_mux2to1v"]
    base = as_top(p.reference)
    variants = [base, "// my answer\n" + base.replace("\n", "\n\n  "),
                base.replace("assign", "/* drive */ assign  "), f"```verilog\n{base}\n```"]
    first = r.score_batch([p], [base])[0]
    assert first.passed and not first.cache_hit
    again = r.score_batch([p] * 4, variants)
    assert all(s.passed and s.cache_hit for s in again)
    assert all(s.time_s < first.time_s for s in again)          # not simulated again
    st = r.stats()
    assert (st["cache_hits"], st["cache_misses"]) == (4, 1) and st["cache_hit_rate"] == pytest.approx(0.8)
    # duplicates inside one batch are simulated once too
    r2 = VerilogReward(list(problems.values()), workers=2)
    out = r2.score_batch([p] * 3, [base, base + "\n// same\n", base])
    assert [s.cache_hit for s in out] == [False, True, True] and r2.stats()["cache_misses"] == 1
    # a different design is a miss
    r2.score_batch([p], [flip_operator(p.id, p.reference)])
    assert r2.stats()["cache_misses"] == 2
    off = VerilogReward(list(problems.values()), cache=False)
    off.score_batch([p] * 2, [base, base])
    assert off.stats()["cache_hits"] == 0


def test_trl_call_with_dataset_columns(problems):
    """The trainer passes the dataset's Problem fields as columns (HF datasets may add None keys)."""
    reward = build_reward("verilog_functional", workers=2)
    p, q = problems["Prob025_reduction"], problems["Prob001_zero"]
    rows = [p, p, q]
    columns = {k: [getattr(x, k) for x in rows] for k in ("id", "spec", "testbench", "top_module", "reference",
                                                          "ref_module", "harness", "prompt")}
    columns["files"] = [{"unused.txt": None}] * 3
    columns["meta"] = [{"tb_top": "tb", "family": None}] * 3
    completions = [[{"role": "assistant", "content": f"```verilog\n{as_top(p.reference)}```"}],
                   [{"role": "assistant", "content": "no code"}],
                   [{"role": "assistant", "content": f"<answer>{as_top(q.reference)}</answer>"}]]
    out = reward(["prompt"] * 3, completions, **columns, trainer_state=None, completion_ids=[[1]] * 3)
    assert out == [pytest.approx(1.0), 0.0, pytest.approx(1.0)]
    assert [s.stage for s in reward.last_scores] == ["pass", "none", "pass"]
    assert reward.stats()["stage/pass"] == 2


def test_trl_call_by_problem_id_and_safe_wrapper(verilog_eval_dir, problems):
    funcs, _ = compose([{"name": "verilog_functional", "weight": 2.0,
                               "kwargs": {"problems": str(verilog_eval_dir), "workers": 2}}])
    fn = funcs[0]
    p = problems["Prob057_kmap2"]
    assert fn(["x"], [as_top(p.reference)], problem_id=[p.id]) == [pytest.approx(1.0)]
    assert fn.last_scores[0].details["problem_id"] == p.id
    assert fn(["x"], ["module TopModule; endmodule"], problem_id=["nope"]) == [None]    # crash -> None
    assert fn.failures == 1


def test_config_validation():
    with pytest.raises(TypeError, match="unknown option.*'colour'"):
        VerilogReward(colour="red")
    with pytest.raises(ValueError, match="formal must be one of"):
        VerilogRewardConfig(formal="maybe")
    with pytest.raises(ValueError, match="formal_confirm_s must be > 0"):
        VerilogRewardConfig(formal_confirm_s=0)
    with pytest.raises(ValueError, match="group_time_limit_s must be > 0"):
        VerilogRewardConfig(group_time_limit_s=0)
    with pytest.raises(ValueError, match="formal_time_limit_s must be > 0"):
        VerilogRewardConfig(formal_time_limit_s=-1)
    assert VerilogRewardConfig.from_kwargs(formal_confirm_s=None).formal_confirm_s is None   # YAML null
    cfg = VerilogRewardConfig(iverilog_flags=["-g2012"])
    assert cfg.iverilog_flags == ("-g2012",)


def test_custom_weights_and_no_partial_credit(problems):
    p = problems["Prob009_popcount3"]
    r = VerilogReward([p], format_weight=0.0, compile_weight=0.0, pass_weight=1.0, partial_credit=False)
    assert r.score(p, flip_operator(p.id, p.reference)).reward == 0.0
    assert r.score(p, as_top(p.reference)).reward == 1.0


_DUMPING_BENCH = """module tb;
  reg a; wire y_ref, y_dut; integer m = 0;
  RefModule r(.a(a), .y(y_ref));
  TopModule d(.a(a), .y(y_dut));
  initial begin
    $dumpfile("wave.vcd"); $dumpvars(1, a, y_ref, y_dut);
    a = 0; #1 if (y_ref !== y_dut) m = m + 1;
    a = 1; #1 if (y_ref !== y_dut) m = m + 1;
    $display("Mismatches: %0d in 2 samples", m);
    $finish;
  end
endmodule
"""


@pytest.mark.parametrize("waveforms", [False, True])
def test_the_benchs_waveform_is_written_only_when_asked(tmp_path, waveforms):
    """VerilogEval's benches `$dumpfile` every run; no score reads the file, so by default vvp writes none."""
    p = Problem(id="inv", spec="y = ~a", testbench=_DUMPING_BENCH,
                reference="module RefModule(input a, output y); assign y = ~a; endmodule")
    r = VerilogReward([p], keep_workdirs=True, workdir_root=str(tmp_path), waveforms=waveforms, formal="off")
    try:
        s = r.score(p, "module TopModule(input a, output y); assign y = ~a; endmodule")
    finally:
        r.close()
    assert s.passed and s.samples == 2, s
    dumps = list(tmp_path.glob("*/wave.vcd"))
    assert [d.stat().st_size > 0 for d in dumps] == ([True] if waveforms else [])


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("yosys") is None, reason="yosys not installed")
def test_formal_hook_confirms_a_pass(problems):
    p = problems["Prob009_popcount3"]
    r = VerilogReward([p], formal="confirm")
    s = r.score(p, as_top(p.reference))
    assert s.passed and s.formal == "equivalent" and "formal" in s.reason
