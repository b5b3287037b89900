"""Reference-only problems: the bench generated from the reference (rewards.verilog.equivbench), on real
pyslang, yosys and iverilog in the real sandbox.

Must show: ports/widths/signedness/parameters from the parser; clock and reset (sync, async, active low,
negedge) from yosys cells; X in the reference is a don't-care and X in the candidate is not; a port
mismatch fails naming the port; an unsupported reference is an error (reward None), never a pass; a
reference-only JSONL row is scored end to end (reference passes, a mutant fails with partial credit).
"""
from __future__ import annotations

import json
import re
import shutil
from dataclasses import replace

import pytest

from rewards.verilog.equivbench import (
    BENCH_TOP,
    UnsupportedReference,
    build_equiv_bench,
    detect_clocking,
    equivalence_bench,
    module_interface,
    port_mismatch,
    yosys_netlist,
)
from rewards.verilog.extract import rename_modules
from rewards.verilog.loaders import load_problems
from rewards.verilog.problems import Problem
from rewards.verilog.reward import VerilogReward, reference_candidate

pytestmark = pytest.mark.skipif(shutil.which("iverilog") is None or shutil.which("yosys") is None,
                                reason="iverilog and yosys needed")

PARAM = """module RefModule #(parameter W = 6, parameter signed [3:0] K = -2) (
  input signed [W-1:0] a, input [7:0] b, input clk,
  output reg signed [W:0] y, output z);
  localparam L = 3;
  always @(posedge clk) y <= a + K;
  assign z = ^b;
endmodule
"""
SYNC = """module RefModule (input clk, input reset, input [3:0] d, output reg [3:0] q);
  always @(posedge clk) if (reset) q <= 0; else q <= d;
endmodule
"""
ASYNC_LOW = """module RefModule (input clk, input aresetn, input x, output reg q);
  always @(posedge clk, negedge aresetn) if (!aresetn) q <= 0; else q <= q ^ x;
endmodule
"""
NEGEDGE_ASYNC = """module RefModule (input clock, input areset, input x, output reg q);
  always @(negedge clock or posedge areset) if (areset) q <= 1; else q <= x;
endmodule
"""
LOAD_NOT_RESET = """module RefModule (input clk, input load, input rst, input [3:0] d, output reg [3:0] q);
  always @(posedge clk) if (rst) q <= 0; else if (load) q <= 0; else q <= q + d;
endmodule
"""
COUNTER = """module TopModule (input clk, input reset, output reg [3:0] q);
  always @(posedge clk) if (reset) q <= 0; else q <= q + 1;
endmodule
"""


_KEYWORDS = {"module", "endmodule", "integer", "reg", "wire", "task", "endtask", "begin", "end", "if", "else",
             "for", "case", "endcase", "default", "initial", "repeat"}


def _problem(reference: str, pid: str = "t") -> Problem:
    return Problem(id=pid, spec="", reference=reference)


def _clocking(reference: str):
    iface = module_interface(reference, "RefModule")
    return detect_clocking(yosys_netlist(reference, "RefModule"), iface)


@pytest.fixture(scope="module")
def reward():
    r = VerilogReward(workers=2)
    yield r
    r.close()


# -- ports ----------------------------------------------------------------------------------------

def test_ports_widths_signedness_parameters():
    iface = module_interface(PARAM, "RefModule")
    got = {p.name: (p.direction, p.width, p.signed) for p in iface.ports}
    assert got == {"a": ("input", 6, True), "b": ("input", 8, False), "clk": ("input", 1, False),
                   "y": ("output", 7, True), "z": ("output", 1, False)}
    assert iface.parameters == {"W": "6", "K": "-4'sd2"}          # localparams are not parameters
    assert module_interface(PARAM, "Nope") is None


def test_port_mismatch_names_the_port():
    ref = module_interface(SYNC, "RefModule")
    top = SYNC.replace("RefModule", "TopModule")
    assert port_mismatch(ref, top, "TopModule") is None
    assert port_mismatch(ref, top.replace("[3:0] q", "[2:0] q"), "TopModule") == \
        "port 'q': reference output [3:0], candidate output [2:0]"
    assert "lacks port 'reset'" in port_mismatch(ref, top.replace("input reset,", ""), "TopModule")
    assert "extra port 'en'" in port_mismatch(ref, top.replace("input reset,", "input reset, input en,"),
                                              "TopModule")
    assert "port 'd': reference input [3:0], candidate output [3:0]" in \
        port_mismatch(ref, top.replace("input [3:0] d", "output [3:0] d"), "TopModule")
    assert port_mismatch(ref, top.replace("[3:0] d", "signed [3:0] d"), "TopModule") is None


# -- clock and reset ---------------------------------------------------------------------------------

def test_clock_and_sync_reset():
    c = _clocking(SYNC)
    assert (c.clock, c.edge, c.reset, c.reset_active, c.reset_kind) == ("clk", "posedge", "reset", 1, "sync")
    assert c.state_bits == 4 and c.clocked


def test_async_active_low_reset():
    c = _clocking(ASYNC_LOW)
    assert (c.clock, c.edge, c.reset, c.reset_active, c.reset_kind) == ("clk", "posedge", "aresetn", 0, "async")


def test_negedge_clock_with_async_reset():
    c = _clocking(NEGEDGE_ASYNC)
    assert (c.clock, c.edge, c.reset, c.reset_active, c.reset_kind) == ("clock", "negedge", "areset", 1, "async")


def test_reset_name_breaks_ties_between_srst_pins():
    c = _clocking(LOAD_NOT_RESET)          # yosys gives `load` an SRST pin too; the reset is `rst`
    assert (c.reset, c.reset_active) == ("rst", 1)


def test_combinational_has_no_clock():
    c = _clocking("module RefModule (input [3:0] a, output y); assign y = &a; endmodule\n")
    assert c.clock is None and not c.clocked and c.state_bits == 0


def test_unsupported_references():
    two_clocks = ("module RefModule (input c1, input c2, input d, output reg q, output reg r);\n"
                  "  always @(posedge c1) q <= d;\n  always @(posedge c2) r <= d;\nendmodule\n")
    latch = "module RefModule (input en, input d, output reg q);\n  always @* if (en) q = d;\nendmodule\n"
    inout = "module RefModule (inout a, output y); assign y = a; endmodule\n"
    for code, why in [(two_clocks, "several clocks ['c1', 'c2']"), (latch, "latch-only"),
                      (inout, "inout/ref port(s) ['a']")]:
        with pytest.raises(UnsupportedReference, match=re.escape(why)):
            build_equiv_bench(_problem(code))


def test_unsupported_reference_is_an_error_never_a_pass(reward):
    two_clocks = ("module TopModule (input c1, input c2, input d, output reg q);\n"
                  "  always @(posedge c1) q <= d;\n  always @(posedge c2) q <= ~d;\nendmodule\n")
    s = reward.score(_problem(two_clocks, "two_clocks"), two_clocks)
    assert s.reward is None and not s.passed and s.error
    assert s.reason.startswith("unsupported reference:") and "several clocks" in s.reason


# -- the bench ----------------------------------------------------------------------------------------

def test_bench_is_seeded_per_problem_and_prefixed():
    a1, a2 = build_equiv_bench(_problem(SYNC, "a")), build_equiv_bench(_problem(SYNC, "a"))
    b = build_equiv_bench(_problem(SYNC, "b"))
    assert a1.text == a2.text and a1.seed == a2.seed != b.seed
    assert f"module {BENCH_TOP};" in a1.text
    code = re.sub(r'"[^"]*"|//.*', "", a1.text)
    names = set(re.findall(r"(?<![.\w$'])[A-Za-z_][\w$]*", code)) - _KEYWORDS - {"RefModule", "TopModule"}
    assert names and all(n.startswith("__eb_") for n in names), sorted(names)
    assert equivalence_bench(_problem(SYNC, "a"), 300) is equivalence_bench(_problem(SYNC, "a"), 300)  # cached


def test_ports_named_like_bench_variables(reward):
    ref = ("module TopModule (input clk, input [3:0] i, input [3:0] j, input seed, output reg [3:0] k);\n"
           "  always @(posedge clk) k <= seed ? i : j;\nendmodule\n")
    s = reward.score(_problem(ref, "names"), ref)
    assert s.passed, s.reason


def test_reference_x_is_dont_care_candidate_x_is_not(reward):
    ref = "module TopModule (input sel, input [1:0] a, output [1:0] y);\n  assign y = sel ? a : 2'bxx;\nendmodule\n"
    p = _problem(ref, "xcare")
    anything = ("module TopModule (input sel, input [1:0] a, output [1:0] y);\n"
                "  assign y = sel ? a : 2'b10;\nendmodule\n")
    assert reward.score(p, anything).passed
    cand_x = ("module TopModule (input sel, input [1:0] a, output [1:0] y);\n"
              "  assign y = sel ? {a[1], 1'bx} : 2'b00;\nendmodule\n")
    s = reward.score(p, cand_x)
    assert s.stage == "simulate" and not s.passed and s.mismatches > 0
    assert s.first_mismatch["output"] == "y" and "x" in s.first_mismatch["got"]
    z_ref = "module TopModule (input en, input a, output y);\n  assign y = en ? a : 1'bz;\nendmodule\n"
    assert reward.score(_problem(z_ref, "zref"), z_ref).passed     # a reference z is matched by z


def test_wide_outputs_go_bit_by_bit_only_where_the_reference_has_x_or_z(reward):
    """A fully known wide reference takes the whole-vector comparison, a reference with x or z bits the
    bit loop: the verdicts are the loop's either way (a candidate x against a known bit fails, a z bit of
    the reference is matched by z only, its known bits still count)."""
    head = "module TopModule (input [7:0] a, output [7:0] y);\n  assign y = "
    known = _problem(head + "a;\nendmodule\n", "wideknown")
    assert reward.score(known, head + "a;\nendmodule\n").passed
    for wrong in ("{a[7:1], 1'bx}", "a ^ 8'h80"):
        s = reward.score(known, head + wrong + ";\nendmodule\n")
        assert s.stage == "simulate" and not s.passed and s.mismatches > 0, (wrong, s.reason)
    zref = _problem(head + "{4'bzzzz, a[3:0]};\nendmodule\n", "widez")
    assert reward.score(zref, head + "{4'bzzzz, a[3:0]};\nendmodule\n").passed
    for wrong in ("{4'bzzzz, a[3:1], ~a[0]}", "{4'b0000, a[3:0]}"):
        s = reward.score(zref, head + wrong + ";\nendmodule\n")
        assert s.stage == "simulate" and not s.passed and s.mismatches > 0, (wrong, s.reason)
    bench = equivalence_bench(zref).text
    assert "!== 1'bx) __eb_miss = 1;" in bench and "__eb_j < 8" in bench


def test_wrong_edge_and_sync_vs_async_reset_fail(reward):
    p = _problem(SYNC.replace("RefModule", "TopModule"), "edges")
    top = SYNC.replace("RefModule", "TopModule")
    for wrong in (top.replace("posedge clk", "negedge clk"),
                  top.replace("posedge clk)", "posedge clk, posedge reset)")):
        s = reward.score(p, wrong)
        assert s.stage == "simulate" and not s.passed, s.reason


def test_port_mismatch_fails_before_simulation(reward):
    p = _problem(COUNTER, "ports")
    s = reward.score(p, COUNTER.replace("[3:0] q", "[7:0] q"))
    assert s.stage == "syntax" and not s.passed and s.reward == pytest.approx(0.1)
    assert s.reason == "port mismatch: port 'q': reference output [3:0], candidate output [7:0]"


def test_helper_modules_do_not_clash():
    ref = ("module half(input a, input b, output s, output c); assign s = a ^ b; assign c = a & b; endmodule\n"
           "module TopModule(input a, input b, output s, output c); half h(a, b, s, c); endmodule\n")
    renamed = rename_modules(ref, {"half": "__eb_ref_half", "TopModule": "RefModule"})
    assert "module __eb_ref_half" in renamed and "__eb_ref_half h(" in renamed and "module RefModule" in renamed
    r = VerilogReward(workers=1)
    assert r.score(_problem(ref, "helpers"), ref).passed


# -- end to end ---------------------------------------------------------------------------------------

def test_reference_only_jsonl_row_end_to_end(tmp_path):
    path = tmp_path / "probs.jsonl"
    path.write_text(json.dumps({"id": "count4", "spec": "4-bit counter", "reference": COUNTER,
                                "top_module": "TopModule", "ref_module": "RefModule"}) + "\n")
    (p,) = load_problems(path)
    assert p.testbench is None
    r = VerilogReward(path, workers=2)
    mutant = COUNTER.replace("q + 1", "q + 2")
    scores = r.score_batch([p, p, p], [COUNTER, mutant, "// same\n" + COUNTER])
    ok, bad, again = scores
    assert ok.passed and ok.reward == pytest.approx(1.0) and ok.samples >= 3 * 500
    assert bad.stage == "simulate" and not bad.passed and 0.3 < bad.reward < 0.65
    assert 0 < bad.mismatches < bad.samples
    assert bad.first_mismatch["output"] == "q" and bad.first_mismatch["cycle"] >= 3
    assert "first in cycle" in bad.reason
    assert again.passed and again.cache_hit
    rewards = r(["p"] * 2, [COUNTER, mutant], id=["count4"] * 2, spec=[""] * 2, reference=[COUNTER] * 2,
                testbench=[None] * 2)                            # dataset columns, testbench column empty
    assert rewards[0] == pytest.approx(1.0) and rewards[1] == pytest.approx(bad.reward)
    assert r.last_scores[1].details["first_mismatch"] == bad.first_mismatch


def test_row_needs_testbench_or_reference():
    with pytest.raises(ValueError, match="needs a `testbench` or a `reference`"):
        Problem.from_dict({"id": "x", "spec": ""})


def test_verilogeval_references_pass_without_testbench(verilog_eval_dir, reward):
    problems = [replace(p, testbench=None) for p in load_problems(verilog_eval_dir)]
    originals = load_problems(verilog_eval_dir)
    scores = reward.score_batch(problems, [reference_candidate(p) for p in originals])
    assert [(s.problem_id, s.reason) for s in scores if not s.passed] == []


def test_candidate_cannot_name_bench_internals(reward):
    p = _problem(COUNTER, "hier")
    cheat = COUNTER.replace("endmodule", "  initial forever #1 __eb_tb.__eb_errors = 0;\nendmodule")
    s = reward.score(p, cheat)
    assert s.stage == "none" and not s.passed and "__eb_" in s.reason


def test_first_batch_builds_the_bench_once(monkeypatch):
    from rewards.verilog import equivbench

    p = _problem(COUNTER.replace("q + 1", "q + 3"), "once")
    built = []
    real = equivbench.build_equiv_bench
    monkeypatch.setattr(equivbench, "build_equiv_bench", lambda *a, **k: built.append(1) or real(*a, **k))
    variants = [p.reference + "\n" * i + f"// {i}\n" for i in range(6)]
    scores = VerilogReward(workers=4, cache=False).score_batch([p] * 6, variants)
    assert all(s.passed for s in scores) and len(built) == 1     # six threads asked, yosys ran once


def test_rtllm_reference_only(rtllm_dir, reward):
    problems = {p.id: replace(p, testbench=None) for p in load_problems(rtllm_dir)}
    fifo = reward.score(problems["asyn_fifo"], problems["asyn_fifo"].reference)
    assert fifo.reward is None and "several clocks ['rclk', 'wclk']" in fifo.reason
    p = problems["adder_8bit"]                                   # ref_module == top_module: renamed apart
    wrong = ("module adder_8bit(input [7:0] a, input [7:0] b, input cin, output [7:0] sum, output cout);\n"
             "  assign {cout, sum} = a + b;\nendmodule\n")       # ignores the carry-in
    ok, bad = reward.score_batch([p, p], [p.reference, wrong])
    assert ok.passed, ok.reason
    assert bad.stage == "simulate" and 0 < bad.mismatches < bad.samples and 0.3 < bad.reward < 0.65


def test_candidate_latch_against_combinational_reference(reward):
    ref = ("module TopModule (input [1:0] x, output reg f);\n  always @* case (x)\n"
           "    2'd0: f = 1; 2'd1: f = 1; 2'd2: f = 0; 2'd3: f = 0;\n  endcase\nendmodule\n")
    latch = ref.replace(" 2'd3: f = 0;", "")     # holds f for x == 3: right only when x was 2 before
    p = _problem(ref, "latchcand")
    assert reward.score(p, ref).passed
    s = reward.score(p, latch)                    # in-order vectors alone would pass it (2 comes before 3)
    assert s.stage == "simulate" and not s.passed and s.first_mismatch["output"] == "f"


@pytest.mark.skipif(shutil.which("yosys") is None, reason="yosys not installed")
def test_formal_confirms_reference_only_passes_by_default():
    """formal: auto = confirm where earl wrote the bench. A design wrong on one 32-bit input passes random
    stimulus, Yosys refutes it (demoted with its counterexample); the reference itself is proven; and a
    problem with its own testbench is not checked formally."""
    from rewards.verilog.reward import VerilogReward
    ref = "module RefModule(input [31:0] a, output [31:0] y);\n  assign y = a + 1;\nendmodule\n"
    sneaky = ("module TopModule(input [31:0] a, output [31:0] y);\n"
              "  assign y = (a == 32'hDEADBEEF) ? 32'd0 : a + 1;\nendmodule\n")
    p = Problem(id="inc32", spec="y = a + 1", reference=ref)
    auto, off = VerilogReward(), VerilogReward(formal="off")
    good, bad = auto.score_batch([p, p], [ref.replace("RefModule", "TopModule"), sneaky])
    assert good.passed and good.formal == "equivalent"
    assert not bad.passed and bad.formal == "not_equivalent" and "formal" in bad.reason
    assert off.score(p, sneaky).passed, "random stimulus alone misses it: the point of the proof"
    assert auto.stats()["formal/refuted"] == 1 and auto.stats()["formal/proven"] == 1
    benched = Problem(id="b", spec="", reference=ref, testbench=p.testbench or "module tb; endmodule")
    assert auto.formal_mode(benched) == "off" and auto.formal_mode(p) == "confirm"
