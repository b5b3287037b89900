"""Group simulation (rewards.verilog.group): a problem's distinct candidates share one compile and one
simulation where earl wrote the bench, and every candidate gets exactly what it gets scored one by one.

Must show: equal results on mixed batches (correct, wrong, partially right, non-compiling, port mismatch,
duplicate, hostile, hanging) for generated tasks and reference-only problems; the fall-back paths (a compile
error named in one candidate, one named in none, a hang, candidates that may not join) say so in `group`;
a hung candidate does not cost the others their score or their own time limit.
"""
from __future__ import annotations

import re
import shutil
from dataclasses import replace

import pytest

from pipelines.tasks.rtlgen import generate
from rewards.verilog import extract, group, groupbench
from rewards.verilog.problems import Problem
from rewards.verilog.reward import VerilogReward, VerilogRewardConfig
from tests.helpers.verilog_mutants import HANG, before_end, hostile_candidates

pytestmark = pytest.mark.skipif(shutil.which("iverilog") is None or shutil.which("yosys") is None,
                                reason="iverilog and yosys needed")

ZERO = Problem(id="zero", spec="", reference="module RefModule(output zero);\n  assign zero = 1'b0;\nendmodule\n")


def _pick(family: str, variant: str, reference_only: bool = False) -> Problem:
    for p in generate(300, seed=21, families=[family], reference_only=reference_only):
        if re.search(variant, p.meta["variant"]):
            return p
    raise AssertionError(f"no {family}/{variant}")


def _mixed(problem: Problem, mutate) -> dict[str, str]:
    """One candidate of each kind for `problem` (its solution, a mutant of it, broken ones)."""
    sol = problem.meta["solution"]
    return {
        "correct": sol,
        "correct_helper_a": sol + "module Helper(input x, output y);\n  assign y = x;\nendmodule\n",
        "correct_helper_b": sol + "module Helper(input x, output y);\n  assign y = ~x;\nendmodule\n",
        "duplicate": "// the same again\n" + sol,
        "timescale": "`timescale 1ns/1ps\n" + sol,
        "wrong": mutate(sol),
        "wrong_duplicate": mutate(sol) + "\n\n",
        "elaboration_error": before_end(sol, "  wire never = undeclared_q;\n"),     # slang sees it: alone at once
        "redeclared": before_end(sol, "  wire twice;\n  wire twice;\n"),      # slang does not: the group's compile
        #                                                                    fails, names it, and runs again
        "syntax_error": sol.replace(";", "", 1),
        "port_mismatch": "module TopModule(input a, output b);\n  assign b = a;\nendmodule\n",
        "random": before_end(sol, "  integer r;\n  initial r = $random;\n"),
        "bench_module": sol + "module RefModule(output o);\n  assign o = 1'b0;\nendmodule\n",
        "define": "`define NOT_USED 1\n" + sol,
        # severity tasks print (Icarus: "ERROR: ...", simulation goes on, vvp exits 0): safe in a group
        "severity": before_end(sol, '  initial begin $error("e %0d", 1); $warning("w"); $info("i"); end\n'),
    }


def _score(problems, completions, **config):
    reward = VerilogReward(time_limit_s=config.pop("time_limit_s", 10), workers=2, formal=config.pop("formal", "off"),
                           **config)
    try:
        return reward.score_batch(problems, completions)
    finally:
        reward.close()


def _same(a, b) -> dict:
    """Detail records without what differs between any two runs (times, formal's cache) and the group note."""
    da, db = a.to_dict(), b.to_dict()
    for d in (da, db):
        d.pop("time_s")
        d.pop("group")
        for k in ("wall_s", "cached"):
            (d["formal_detail"] or {}).pop(k, None)
    assert da == db
    return db


def _both(problems, completions, **config):
    alone = _score(problems, completions, group_simulation=False, **config)
    grouped = _score(problems, completions, **config)
    for a, g in zip(alone, grouped, strict=True):
        _same(a, g)
        assert a.group is None
    return alone, grouped


def _batch(*cases: tuple[Problem, dict[str, str]]):
    problems, completions, names = [], [], []
    for problem, cands in cases:
        for name, code in cands.items():
            problems.append(problem)
            completions.append(f"```verilog\n{code}```")
            names.append(f"{problem.id}:{name}")
    return problems, completions, names


# --------------------------------------------------------------------------- equality on mixed batches

@pytest.mark.slow
@pytest.mark.parametrize("reference_only", [False, True], ids=["generated-bench", "reference-only"])
def test_group_equals_one_by_one_on_mixed_batches(reference_only):
    bitwise = _pick("bitwise", r"^and2$", reference_only)
    counter = _pick("counter", r"_async$", reference_only)
    problems, completions, names = _batch(
        (bitwise, _mixed(bitwise, lambda s: s.replace(" & ", " | "))),
        (counter, _mixed(counter, lambda s: re.sub(r" or posedge \w+\)", ")", s))))
    _, grouped = _both(problems, completions)
    by = dict(zip(names, grouped, strict=True))
    for p in (bitwise, counter):
        assert by[f"{p.id}:correct"].passed and by[f"{p.id}:correct_helper_b"].passed
        assert by[f"{p.id}:correct"].group == {"size": 5, "fallback": None}   # correct x3, severity, wrong
        assert by[f"{p.id}:severity"].passed and by[f"{p.id}:severity"].group == by[f"{p.id}:correct"].group
        assert by[f"{p.id}:timescale"].group is None                  # alone in its own directive group
        assert by[f"{p.id}:duplicate"].cache_hit and by[f"{p.id}:wrong_duplicate"].cache_hit
        wrong = by[f"{p.id}:wrong"]
        assert wrong.stage == "simulate" and 0 < wrong.mismatches < wrong.samples
        assert by[f"{p.id}:elaboration_error"].stage == "syntax"
        assert by[f"{p.id}:elaboration_error"].group["fallback"].startswith(
            "scored alone: its compile would likely fail (line ")
        assert "undeclared_q" in by[f"{p.id}:elaboration_error"].group["fallback"]
        assert by[f"{p.id}:redeclared"].stage == "syntax"
        assert "compile failed on this candidate" in by[f"{p.id}:redeclared"].group["fallback"]
        assert by[f"{p.id}:random"].group["fallback"] == "scored alone: uses $random"
        assert "RefModule" in by[f"{p.id}:bench_module"].group["fallback"]
        assert by[f"{p.id}:bench_module"].stage == "syntax"           # alone too: RefModule declared twice
        assert by[f"{p.id}:define"].group["fallback"] == "scored alone: uses `define"
    assert by[f"{bitwise.id}:port_mismatch"].stage == "syntax"


@pytest.mark.slow
def test_hostile_candidates_score_as_one_by_one():
    hostile = {k: v.split("```verilog\n", 1)[1].rsplit("```", 1)[0] for k, v in hostile_candidates("earl_grp").items()}
    cands = {"good": "module TopModule(output zero);\n  assign zero = 1'b0;\nendmodule\n",
             "wrong": "module TopModule(output zero);\n  assign zero = 1'b1;\nendmodule\n", **hostile}
    problems, completions, names = _batch((ZERO, cands))
    _, grouped = _both(problems, completions, time_limit_s=2)
    by = dict(zip(names, grouped, strict=True))
    assert by["zero:good"].passed and by["zero:wrong"].stage == "simulate"
    assert by["zero:fopen_absolute"].stage == "none"         # forbidden: decided before any group
    assert by["zero:zero_delay_forever"].stage == "compile" and "time limit" in by["zero:zero_delay_forever"].reason


# --------------------------------------------------------------------------- fall-backs

def test_a_hung_candidate_costs_the_others_neither_score_nor_limit():
    """The group runs under one candidate's limit; when it hangs, every member runs alone with its own."""
    p = _pick("mux2", r"ab", reference_only=True)
    sol = p.meta["solution"]
    cands = {"good": sol, "wrong": re.sub(r"\? (\w+) : (\w+);", r"? \2 : \1;", sol), "hang": before_end(sol, HANG)}
    problems, completions, names = _batch((p, cands))
    _, grouped = _both(problems, completions, time_limit_s=2)
    by = dict(zip(names, grouped, strict=True))
    assert by[f"{p.id}:good"].passed and by[f"{p.id}:wrong"].stage == "simulate"
    hang = by[f"{p.id}:hang"]
    assert hang.stage == "compile" and hang.reason == "simulation stopped: time limit 2 s exceeded"
    for s in grouped:
        assert s.group == {"size": 3, "fallback": "the group's simulation stopped: time limit 2 s exceeded"}
    assert by[f"{p.id}:good"].time_s < 2          # its own run, under its own limit


def test_a_group_runs_under_its_own_shorter_limit(monkeypatch):
    """group_time_limit_s bounds the shared run (the sandbox gets that wall clock for the group's job only): a
    hang costs its group that long, then each member runs alone under time_limit_s, with the verdicts of one by
    one (the hang's own reason names its own limit)."""
    from sandboxes.executor import Sandbox
    walls: list[float | None] = []
    run = Sandbox.run_steps

    def recording(self, script, workdir, **kw):
        limits = kw.get("limits")
        walls.append(None if limits is None else limits.wall_s)
        return run(self, script, workdir, **kw)

    monkeypatch.setattr(Sandbox, "run_steps", recording)
    p = _pick("mux2", r"ab", reference_only=True)
    sol = p.meta["solution"]
    problems, completions, names = _batch((p, {"good": sol, "hang": before_end(sol, HANG)}))
    _, grouped = _both(problems, completions, time_limit_s=4, group_time_limit_s=2)
    by = dict(zip(names, grouped, strict=True))
    assert by[f"{p.id}:good"].passed
    assert by[f"{p.id}:hang"].reason == "simulation stopped: time limit 4 s exceeded"
    notes = {s.group["fallback"] for s in grouped}
    assert len(notes) == 1 and all(n.startswith("the group's ") and n.endswith(": time limit 2 s exceeded")
                                   for n in notes), notes
    assert walls.count(2) == 1 and walls.count(None) == len(walls) - 1   # the group's job; solos under their own
    assert VerilogReward(time_limit_s=3).group_time_limit_s() == 3            # never above a candidate's own
    assert VerilogReward(group_time_limit_s=None).group_time_limit_s() == 30


def test_compile_error_named_in_no_candidate_scores_all_alone(monkeypatch):
    monkeypatch.setattr(group, "culprits", lambda *a: None)
    p = _pick("not", r"plain")
    cands = {"good": p.meta["solution"], "broken": before_end(p.meta["solution"], "  wire w;\n  wire w;\n"),
             "wrong": p.meta["solution"].replace("= ~", "= ")}
    problems, completions, _ = _batch((p, cands))
    _, grouped = _both(problems, completions)
    assert [s.group for s in grouped] == [{"size": 3, "fallback": "the group's compile failed"}] * 3
    assert [s.stage for s in grouped] == ["pass", "syntax", "simulate"]


def test_group_of_one_left_after_compile_errors_runs_alone():
    p = _pick("not", r"plain")
    sol = p.meta["solution"]
    cands = {"good": sol, "broken_a": before_end(sol, "  wire w;\n  wire w;\n"),    # errors slang does not see
             "broken_b": before_end(sol, "  wire v;\n  wire v;\n")}
    problems, completions, _ = _batch((p, cands))
    _, grouped = _both(problems, completions)
    assert grouped[0].passed and "on the other candidates" in grouped[0].group["fallback"]
    assert all("on this candidate" in s.group["fallback"] for s in grouped[1:])


@pytest.mark.parametrize("predict", [True, False], ids=["slang-predicts", "pre-checks-off"])
def test_a_candidate_that_would_break_the_compile_runs_alone_at_once(monkeypatch, predict):
    """slang elaborating each candidate alone keeps one whose compile would fail out of its group: the
    group compiles once (two sandbox runs: the group, the broken one alone) instead of three (the failed
    group, the group again, the broken one); verdicts as one by one either way."""
    from sandboxes.executor import Sandbox
    runs: list[str] = []
    run = Sandbox.run_steps

    def counting(self, script, workdir, **kw):
        runs.append(script)
        return run(self, script, workdir, **kw)

    p = _pick("not", r"plain")
    sol = p.meta["solution"]
    cands = {"good": sol, "wrong": sol.replace("= ~", "= "), "broken": before_end(sol, "  wire w = nope;\n")}
    problems, completions, _ = _batch((p, cands))
    _score(problems, completions, group_simulation=False, syntax_precheck=predict)
    monkeypatch.setattr(Sandbox, "run_steps", counting)
    alone = _score(problems, completions, group_simulation=False, syntax_precheck=predict)
    runs.clear()
    grouped = _score(problems, completions, syntax_precheck=predict)
    for a, g in zip(alone, grouped, strict=True):
        _same(a, g)
    assert [s.stage for s in grouped] == ["pass", "simulate", "syntax"]
    fallback = grouped[2].group["fallback"]
    if predict:
        assert len(runs) == 2 and fallback.startswith("scored alone: its compile would likely fail (") \
            and "'nope'" in fallback, (len(runs), fallback)
    else:
        assert len(runs) == 3 and fallback.startswith("the group's compile failed on this candidate"), fallback


def test_formal_confirmation_of_group_passes():
    """Reference-only problems: formal auto confirms passes, after the group simulation."""
    p = _pick("adder", r"ci0co0", reference_only=True)
    sol = p.meta["solution"]
    cands = {"a": sol, "b": sol.replace("assign", "wire unused_w = 1'b0;\nassign", 1),
             "wrong": sol.replace(" + ", " - ")}
    problems, completions, _ = _batch((p, cands))
    _, grouped = _both(problems, completions, formal="auto")
    assert [s.formal for s in grouped] == ["equivalent", "equivalent", None]
    assert grouped[0].group == {"size": 3, "fallback": None}


def test_group_size_splits_evenly():
    p = _pick("not", r"plain")
    sol = p.meta["solution"]
    cands = {f"v{k}": sol.replace("assign", f"wire unused_{k} = 1'b0;\nassign", 1) for k in range(5)}
    problems, completions, _ = _batch((p, cands))
    scores = _score(problems, completions, group_size=3)
    assert sorted(s.group["size"] for s in scores) == [2, 2, 3, 3, 3] and all(s.passed for s in scores)


def test_off_switch_and_config_errors():
    p = _pick("not", r"plain")
    sol = p.meta["solution"]
    scores = _score([p, p], [sol, sol.replace("= ~", "= ")], group_simulation=False)
    assert [s.group for s in scores] == [None, None]
    with pytest.raises(ValueError, match="group_size"):
        VerilogRewardConfig(group_size=1)
    with pytest.raises(TypeError, match="unknown option"):
        VerilogRewardConfig.from_kwargs(group=True)


def test_official_benches_group_with_the_verdicts_they_get_alone(verilog_eval_dir):
    """VerilogEval's own benches (rewards.verilog.groupbench): every candidate of a GRPO-like batch (the
    reference, rewrites, mutants, broken code) gets what it gets alone. Every bench of the sample groups:
    those whose stimulus reads the candidate's `tb_match` only for its "Hint:" lines get it tied to 1 (the
    mutants print hints alone, and their verdicts are still the same)."""
    from rewards.verilog.loaders import load_problems
    from tests.helpers.verilog_mutants import as_top, break_syntax, empty_body, flip_operator, invert_outputs
    problems, completions = [], []
    for p in load_problems(verilog_eval_dir):
        good, flip = as_top(p.reference), flip_operator(p.id, p.reference)
        for code in (good, good.replace("\n", "\n  "), flip, invert_outputs(p.reference), break_syntax(p.reference),
                     empty_body(p.reference)):
            problems.append(p)
            completions.append(f"```verilog\n{code}\n```")
    _, grouped = _both(problems, completions)
    marked = {p.id: groupbench.group_capable(p.testbench, p.top_module, p.ref_module) for p in problems}
    assert [pid for pid, text in marked.items() if text is None] == []
    tied = {p.id for p in problems if re.search(r"module stimulus_gen\b[^;]*\btb_match\b", p.testbench)}
    assert len(tied) >= 3 and tied == {pid for pid, text in marked.items() if ".tb_match(1'b1), .*" in (text or "")}
    assert sum(g.group is not None and g.group["fallback"] is None for g in grouped) >= len(grouped) // 2
    assert all(any(g.group and g.group["fallback"] is None for p, g in zip(problems, grouped, strict=True)
                   if p.id == pid) for pid in tied)
    assert sum(g.passed for g in grouped) >= 2 * len({p.id for p in problems})      # the reference, its rewrite
    waves = _score(problems[:2], completions[:2], waveforms=True)
    assert [s.group for s in waves] == [None, None] and all(s.passed for s in waves)   # a VCD each: alone


VE_BENCH = """`timescale 1 ps/1 ps
module stimulus_gen (input clk, output reg [3:0] a);
  initial begin
    a <= 0;
    repeat (40) @(posedge clk) a <= $random;
    $display("stimulus done");
    $finish;
  end
endmodule

module tb();
  reg clk = 0;
  initial forever #5 clk = ~clk;
  logic [3:0] a;
  logic [3:0] y_ref;
  logic [3:0] y_dut;
  int errors = 0, clocks = 0;
  initial begin
    $dumpfile("wave.vcd");
    $dumpvars(1, clk, y_dut);
  end
  wire tb_match = (y_ref === (y_ref ^ y_dut ^ y_ref));
  stimulus_gen stim1 (.clk, .*);
  RefModule good1 (.a, .y(y_ref));
  TopModule top_module1 (.a, .y(y_dut));
  task count; begin clocks++; if (!tb_match) errors++; end endtask
  always @(posedge clk, negedge clk) count;
  final begin
    if (errors)
      $display("Hint: %0d mismatches", errors);
    $display("Mismatches: %1d in %1d samples", errors, clocks);
  end
  initial begin
    #1000000
    $display("TIMEOUT");
    $finish();
  end
endmodule
"""
# VerilogEval's reset_test in small: the stimulus reads the candidate's tb_match only to print hints.
HINT_TASK = """  task check;
    bit fail;
    @(posedge clk) fail = !tb_match;
    if (fail)
      $display("Hint: stimulus saw a mismatch");
    else if (!fail && a == 4'd3)
      $display("Hint: fine at %0d", a);
    else
      $display("Hint: bad");
  endtask
"""
HINTED_BENCH = VE_BENCH.replace("module stimulus_gen (input clk, output reg [3:0] a);\n",
                                "module stimulus_gen (input clk, input tb_match, output reg [3:0] a);\n"
                                + HINT_TASK).replace("    a <= 0;\n", "    a <= 0;\n    check;\n")


def test_a_stimulus_reading_tb_match_only_for_hints_is_shared_with_it_tied():
    """VerilogEval's `reset_test` reads tb_match only to print "Hint:" lines, which no verdict reads: the
    group ties the port to 1 and shares the stimulus; each candidate's verdict is the one it gets alone,
    where the wrong ones print their hints."""
    marked = groupbench.group_capable(HINTED_BENCH, "TopModule", "RefModule")
    assert marked is not None and "  stimulus_gen stim1 (.clk, .tb_match(1'b1), .*);\n" in marked
    p = Problem(id="hinted", spec="", testbench=HINTED_BENCH, reference=VE_REF, harness="verilogeval")
    good = "module TopModule(input [3:0] a, output [3:0] y);\n  assign y = a + 4'd3;\nendmodule\n"
    cands = {"good": good, "off": good.replace("4'd3", "4'd2"), "x": good.replace("a + 4'd3", "4'bx")}
    problems, completions, names = _batch((p, cands))
    _, grouped = _both(problems, completions)
    by = dict(zip(names, grouped, strict=True))
    assert by["hinted:good"].passed and by["hinted:good"].group == {"size": 3, "fallback": None}
    assert by["hinted:off"].mismatches == by["hinted:off"].samples > 0


VE_REF = "module RefModule(input [3:0] a, output [3:0] y);\n  assign y = a + 4'd3;\nendmodule\n"


def test_an_official_style_bench_is_marked_where_it_belongs_to_the_candidate():
    marked = groupbench.group_capable(VE_BENCH, "TopModule", "RefModule")
    assert marked is not None and group.dut_prefix(marked) == groupbench.OWN_PREFIX
    per_dut = [line.strip() for line in marked.splitlines() if line.rstrip().endswith(extract.PER_DUT)]
    assert [line.split()[0] for line in per_dut] == ["$display(\"stimulus", "logic", "int", "wire", "TopModule",
                                                     "task", "always", "$display(\"TIMEOUT\");"], per_dut
    assert f"{extract.BLOCK_BEGIN}\n  final begin" in marked                 # the verdict block, whole
    assert "    begin\n    $display(\"TIMEOUT\");" in marked               # a shared print: one statement
    assert "$dump" not in marked and "  stimulus_gen stim1 (.clk, .*);\n" in marked
    p = Problem(id="ve", spec="", testbench=VE_BENCH, reference=VE_REF, harness="verilogeval")
    good = "module TopModule(input [3:0] a, output [3:0] y);\n  assign y = a + 4'd3;\nendmodule\n"
    cands = {"good": good, "off_by_one": good.replace("4'd3", "4'd2"), "helper": good + "module H(); endmodule\n",
             "x": good.replace("a + 4'd3", "4'bx")}
    problems, completions, names = _batch((p, cands))
    _, grouped = _both(problems, completions)
    by = dict(zip(names, grouped, strict=True))
    assert by["ve:good"].passed and by["ve:good"].group == {"size": 4, "fallback": None}
    assert by["ve:off_by_one"].mismatches == by["ve:off_by_one"].samples > 0


@pytest.mark.parametrize("change, why", [
    ("module stimulus_gen (input clk, output reg [3:0] a);\n  initial begin\n    a <= 0;\n"
     "    repeat (40) @(posedge clk) a <= $random;",
     "module stimulus_gen (input clk, input tb_match, output reg [3:0] a);\n  initial begin\n    a <= 0;\n"
     "    repeat (40) @(posedge clk) a <= tb_match ? $random : 4'd0;"),  # the stimulus reads the candidate
    ("clocks++;", "clocks++; if ($random) ;"),                           # global state per candidate
    ("  final begin", "  always @(errors) if (errors > 3) $finish;\n  final begin"),   # a candidate would end all
    ("RefModule good1 (.a, .y(y_ref));", "RefModule good1 (.a(a ^ y_dut[0]), .y(y_ref));"),   # the ref reads it
    ("    $display(\"stimulus done\");", "    $display(\"stimulus done\"); a <= 0;"),    # prints and does more
    ("stimulus_gen stim1 (.clk, .*);", "stimulus_gen stim1 (.clk, .*); wire spare = y_dut[0];"),   # shares a line
    ("TopModule top_module1 (.a, .y(y_dut));", "TopModule top_module1 (a, y_dut);"),   # positional ports
    ("if (!tb_match) errors++;", "if (!tb_match) begin errors++; -> bad; end end endtask\n  event bad;\n"
     "  initial begin @(bad); $finish; end\n  task nothing; begin"),     # a candidate's event ends the run
    ("if (!tb_match) errors++;", "if (!tb_match) disable stim_loop;"),   # stops a shared block
    # found by review: each of these gave grouped verdicts unlike the ones alone, or crashed the batch
    ("  always @(posedge clk, negedge clk) count;", "  always @(posedge clk, negedge clk)\n    if (!tb_match) errors++;"
     "\n    else clocks++;"),                                            # an `else` on a line of its own
    ("  int errors = 0, clocks = 0;", "  `define RND $random\n  int errors = 0, clocks = 0;"),   # macros hide calls
    ('$display("stimulus done");', '$display("stimulus done %0d", $random);'),   # a shared print with effects
    ("always @(posedge clk, negedge clk) count;", "always @(posedge clk, negedge clk) count; /* both\n edges */"),
    ("  always @(posedge clk, negedge clk) count;", "  bit seen;\n  task note(output bit f); f = 1; endtask\n"
     "  always @(posedge clk, negedge clk) begin count; if (!tb_match) note(seen); end\n"
     "  initial begin wait (seen); #20 $finish; end"),                  # written through an output argument
    ("stimulus_gen stim1 (.clk, .*);", "stimulus_gen stim1 (.clk, .a, .tb_match);"),   # `.name` reads it
    ("stimulus_gen stim1 (.clk, .*);", "for (genvar i = 0; i < 1; i++) begin\n  stimulus_gen stim1 (.clk, .*);\n"
     "  end"),                                                           # module-level generate code
])
def test_benches_of_other_shapes_are_refused(change, why):
    assert change in VE_BENCH
    assert groupbench.group_capable(VE_BENCH.replace(change, why), "TopModule", "RefModule") is None


@pytest.mark.parametrize("change, why", [
    ("if (fail)", "if (fail) a <= 1; if (fail)"),                        # the copy steers the stimulus
    ('      $display("Hint: bad");', "      a <= 1;"),                  # an else branch that does more
    ("fail = !tb_match;", "fail = !tb_match; @(posedge tb_match);"),     # a wait on the candidate
    ("if (fail)", "if (fail && $random)"),                              # a condition with global state
    ("if (fail)", "if (fail == (a = 0))"),                              # a condition that assigns
    ('$display("TIMEOUT");', '$display("TIMEOUT %0d", stim1.fail);'),   # read by a hierarchical name
    ("fail = !tb_match;", "fail = !tb_match; a <= {3'b0, fail};"),      # the copy read beyond the hints
    ("fail = !tb_match;", "fail = tb_match & a[0];"),                   # more than a copy of it
    ("fail = !tb_match;", "a = !tb_match;"),                            # copied into the stimulus itself
    ("  endtask\n", "  endtask\n  helper h (.*);\n"),                   # passed on, implicitly
    # found by review: each was taken for hint-only, and tying the port changed the stimulus
    ("fail = !tb_match;", "fail = !tb_match; for (int k = 0; fail <= 0 && k < 3; k++) @(posedge clk);"),
    ("fail = !tb_match;", "fail = !tb_match; a = #(1) fail <= 1'b0;"),    # an intra-assignment delay
    ("fail = !tb_match;", "fail = !tb_match; a <= {3'b0, \\tb_match };"),  # an escaped name
    ("fail = !tb_match;", "fail = !tb_match; a <= {3'b0, \\fail };"),
    ("fail = !tb_match;", "fail = !tb_match; a <= {3'b0, `TM};"),        # a macro defined elsewhere
    ('$display("Hint: bad");', '$display("Hint: bad %0d", a++);'),       # a print that assigns
])
def test_a_stimulus_reading_tb_match_beyond_hints_is_refused(change, why):
    assert change in HINTED_BENCH
    assert groupbench.group_capable(HINTED_BENCH.replace(change, why), "TopModule", "RefModule") is None


def test_a_bench_it_cannot_read_never_breaks_the_batch():
    broken = VE_BENCH.replace('#1000000\n    $display("TIMEOUT");', '#1000000UT");')    # raised IndexError once
    groupbench.group_capable(broken, "TopModule", "RefModule")
    p = Problem(id="ve", spec="", testbench=broken, reference=VE_REF, harness="verilogeval")
    scores = _score([p, p], ["module TopModule(input [3:0] a, output [3:0] y);\n  assign y = a;\nendmodule\n",
                             "module TopModule(input [3:0] a, output [3:0] y);\n  assign y = ~a;\nendmodule\n"])
    assert [s.stage for s in scores] == ["syntax", "syntax"], scores


# --------------------------------------------------------------------------- the protocol

def test_expand_writes_one_part_per_candidate():
    bench = (f"{extract.group_header('d_')}\nmodule tb;\n  wire x;\n  wire d_y;  {extract.PER_DUT}\n"
             f"  Top d_inst (.y(d_y));  {extract.PER_DUT}\n  initial begin\n  {extract.BLOCK_BEGIN}\n"
             f'    $display("y=%b", d_y);\n  {extract.BLOCK_END}\n  end\nendmodule\n')
    out = group.expand(bench, "Top", [("__earl_g0_Top", "@@A@@"), ("__earl_g1_Top", "@@B@@")])
    assert "__earl_g0_Top d_g0_inst (.y(d_g0_y));" in out and "__earl_g1_Top d_g1_inst (.y(d_g1_y));" in out
    assert '$display("@@A@@y=%b", d_g0_y);' in out and '$display("@@B@@y=%b", d_g1_y);' in out
    assert "  wire x;" in out and out.count("wire x") == 1
    with pytest.raises(ValueError, match="shared line prints"):
        group.expand(bench.replace("  wire x;", '  initial $display("shared");'), "Top", [("T", "@@A@@")])


def test_generated_benches_are_group_capable():
    assert group.dut_prefix(generate(1, seed=0)[0].testbench) == "tb_dut_"
    from rewards.verilog.equivbench import equivalence_bench
    assert group.dut_prefix(equivalence_bench(replace(ZERO, id="zero-cap")).text) == "__eb_d_"


@pytest.mark.parametrize("code, why", [
    ("module TopModule(output y); assign y = 1'b0; endmodule", None),
    ("`timescale 1ns/1ps\nmodule TopModule(output y); assign y = 1'b0; endmodule", None),
    ("module TopModule(output y); initial $display(\"$random\"); assign y = 0; endmodule", None),
    ("module TopModule(output y); wire r = $urandom; assign y = 0; endmodule", "uses $urandom"),
    ("module TopModule(output y); initial $monitor(y); assign y = 0; endmodule", "uses $monitor"),
    ("module TopModule(output y); assign y = tb.tb_k; endmodule", "a hierarchical name"),
    ("module TopModule(output y); assign y = g[0].w; endmodule", "a hierarchical name"),
    ("module TopModule(output y); assign y = 1.5 > 1; endmodule", None),
    ("module TopModule(output y); assign y = tb_seed; endmodule", "names the bench's 'tb_seed'"),
    ("`define W 1\nmodule TopModule(output y); assign y = 0; endmodule", "uses `define"),
    ("module TopModule(output y); assign y = 0; endmodule\n`timescale 1ns/1ps", "a compiler directive after a module"),
    ("function f; f = 0; endfunction\nmodule TopModule(output y); assign y = 0; endmodule",
     "code outside modules ('function')"),
    ("module TopModule(output y); __earl_g1_X u(); assign y = 0; endmodule", "names __earl_g..."),
])
def test_who_may_join_a_group(code, why):
    reserved = group.bench_names(generate(1, seed=0)[0].testbench, "module RefModule(); endmodule")
    assert group.solo_reason(code, reserved, "TopModule") == why


def test_culprits_name_candidates_by_file_module_or_instance():
    log = ("cand2.sv:3: error: Unable to bind wire/reg/memory `nope' in `tb.tb_dut_g2__inst'\n"
           "test.sv:20: error: port ``z'' is not a port of tb_dut_g4__inst.\n2 error(s) during elaboration.\n")
    assert group.culprits(log, 5, "tb_dut_") == {2, 4}
    assert group.culprits("test.sv:9: error: something about the bench\n", 5, "tb_dut_") is None



def _top(body: str, before: str = "") -> str:
    return f"{before}module TopModule(input a, output y);\n{body}\n  assign y = a;\nendmodule\n"


ELABORATION_BOMBS = {
    "generate_loop": _top("genvar i; for (i = 0; i < 100000000; i = i + 1) begin : g wire w; end"),
    "nested_generate": _top("genvar i, j; for (i = 0; i < 4000; i = i + 1) begin : g\n"
                            "for (j = 0; j < 4000; j = j + 1) begin : h wire w; end end"),
    "recursive_module": "module TopModule(input a, output y); TopModule u(.a(a), .y(y)); endmodule",
    "constexpr_loop": _top("function integer f(input integer x); integer k; begin f = 0;\n"
                           "for (k = 0; k < 1000000000; k = k + 1) f = f + 1; end endfunction\nlocalparam P = f(1);"),
    "constexpr_recursion": _top("function automatic integer f(input integer x); f = f(x + 1); endfunction\n"
                                "localparam P = f(1);"),
    "instance_array": _top("wire [99999999:0] o; s u[99999999:0] (.x(a), .y(o));",
                           "module s(input x, output y); assign y = x; endmodule\n"),
    "wide_vector": _top("wire [1 << 30:0] w = {(1 << 30){a}};"),
    "deep_hierarchy": _top("m0 u(.a(a), .y());", "".join(
        f"module m{k}(input a, output y); m{k + 1} u(.a(a), .y(y)); endmodule\n" for k in range(200))
        + "module m200(input a, output y); assign y = a; endmodule\n"),
}


@pytest.mark.parametrize("name", sorted(ELABORATION_BOMBS))
def test_slang_elaborating_hostile_code_stops_at_its_limits(name):
    """The in-process guess (rewards.verilog.syntax.elaboration_error) runs on untrusted code: loops,
    recursion, huge arrays and deep hierarchies end at slang's (tightened) limits, and say so."""
    from rewards.verilog.syntax import elaboration_error
    why = elaboration_error(ELABORATION_BOMBS[name], "TopModule")
    assert why is not None and re.search(r"limit|maximum|too large|recursive", why), why
