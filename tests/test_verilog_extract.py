"""Pure string work: extraction, normalisation, forbidden constructs, verdict parsing (no processes)."""
from __future__ import annotations

import pytest

from rewards.verilog.cache import EquivalenceCache, cache_key
from rewards.verilog.extract import (
    completion_text,
    extract_code,
    instantiated_modules,
    module_names,
    normalize,
    rename_module,
    root_modules,
    strip_comments,
    strip_wrappers,
)
from rewards.verilog.harness import (
    first_compile_error,
    parse_verdict,
    tag_testbench,
)
from rewards.verilog.problems import Problem
from rewards.verilog.reward import forbidden_constructs

MOD = "module TopModule(input a, output y);\n  assign y = ~a;\nendmodule"


@pytest.mark.parametrize("text", [
    f"```verilog\n{MOD}\n```",
    f"```systemverilog\n{MOD}\n```",
    f"```sv\n{MOD}\n```",
    f"```\n{MOD}\n```",
    f"Here is the design:\n\n{MOD}\n\nIt inverts a.",
    f"<think>I should write module Foo first... ```verilog\nmodule Wrong; endmodule\n```</think>\n"
    f"```verilog\n{MOD}\n```",
    f"reasoning without opening tag ```verilog\nmodule Wrong; endmodule\n``` </think>{MOD}",
    f"<answer>\n```verilog\n{MOD}\n```\n</answer>",
    f"<think>hmm</think><answer>{MOD}</answer>",
])
def test_extracts_the_module_from_common_wrappers(text):
    code = extract_code(text)
    assert module_names(code) == ["TopModule"]
    assert "assign y = ~a;" in code


def test_several_fences_and_modules_are_all_kept():
    text = ("Helper first:\n```verilog\nmodule inv(input a, output y); assign y = ~a; endmodule\n```\n"
            "Then the top:\n```verilog\nmodule TopModule(input a, output y); inv u(.a(a), .y(y)); endmodule\n```\n"
            "Usage example:\n```python\nprint('module x')\n```")
    assert module_names(extract_code(text)) == ["inv", "TopModule"]
    bare = "module A; endmodule\nsome prose\nmodule TopModule; A a(); endmodule\n"
    assert module_names(extract_code(bare)) == ["A", "TopModule"]


def test_fence_without_module_falls_back_and_prose_only_is_empty():
    assert extract_code("I cannot do that.") == ""
    assert extract_code("```verilog\nassign y = a;\n```") == "assign y = a;\n"
    truncated = "```verilog\nmodule TopModule(input a, output y);\n  assign y ="
    assert extract_code(truncated).startswith("module TopModule")
    # prose mentioning "module" mid-sentence is not code
    assert extract_code("The module should invert its input.") == ""


def test_conversational_completion_uses_last_assistant_message():
    messages = [{"role": "user", "content": "write it"},
                {"role": "assistant", "content": "```verilog\nmodule Old; endmodule\n```"},
                {"role": "user", "content": "again"},
                {"role": "assistant", "content": f"```verilog\n{MOD}\n```"}]
    assert module_names(extract_code(messages)) == ["TopModule"]
    assert completion_text([{"role": "assistant", "content": [{"type": "text", "text": "hi"}]}]) == "hi"
    assert completion_text(None) == ""
    with pytest.raises(TypeError):
        completion_text(42)


def test_strip_wrappers_unclosed_think_drops_the_rest():
    assert strip_wrappers("keep <think> secret").strip() == "keep"


def test_comments_are_stripped_but_not_inside_strings():
    code = 'assign s = "a // not a comment /* nor this */"; // gone\n/* gone\n too */ wire w;'
    out = strip_comments(code)
    assert '"a // not a comment /* nor this */"' in out
    assert "gone" not in out and "wire w;" in out


@pytest.mark.parametrize(("code", "pieces"), [
    ('a "x\\"y" b', [("code", "a "), ("string", '"x\\"y"'), ("code", " b")]),          # escaped quote
    ('"open\nnext', [("string", '"open\n'), ("code", "next")]),        # unterminated: ends after its line
    ('"a\\\nb" c', [("string", '"a\\\nb"'), ("code", " c")]),             # an escaped newline continues it
    ('x "tail\\', [("code", "x "), ("string", '"tail\\')]),                 # a backslash at the very end
    ("a // c /* d\nb", [("code", "a "), ("line_comment", "// c /* d"), ("code", "\nb")]),
    ("a /* b\n // c */ d /* open", [("code", "a "), ("block_comment", "/* b\n // c */"), ("code", " d "),
                                     ("block_comment", "/* open")]),
    ('a / b "/*" /', [("code", "a / b "), ("string", '"/*"'), ("code", " /")]),
    ("", []),
])
def test_scan_splits_code_strings_and_comments(code, pieces):
    from rewards.verilog.extract import _scan
    assert list(_scan(code)) == pieces


def test_module_names_ignore_comments_and_strings():
    code = '// module Fake;\n/* module Fake2 */\nmodule Real(input a); initial $display("module S"); endmodule'
    assert module_names(code) == ["Real"]
    assert module_names("module automatic Auto; endmodule") == ["Auto"]


def test_rename_module_only_touches_the_declaration():
    code = "module RefModule(input a); // RefModule\nendmodule"
    out = rename_module(code, "RefModule", "TopModule")
    assert out.startswith("module TopModule(") and "// RefModule" in out
    with pytest.raises(ValueError, match="no module named"):
        rename_module(code, "Nope", "X")


def test_normalize_whitespace_and_comment_variants_are_equal():
    a = "module TopModule(input a, output y);\n  assign y = ~a;\nendmodule\n"
    b = "// my design\nmodule   TopModule (input a,output y) ;\n\n\tassign y = ~a; /* invert */\nendmodule"
    c = "module TopModule(input a, output y);\n  assign y = a;\nendmodule\n"
    assert normalize(a) == normalize(b)
    assert normalize(a) == normalize("module TopModule(input a, output y);   assign y = ~a;  // x\nendmodule")
    assert normalize(a) != normalize(c)
    # whitespace inside strings is meaningful
    assert normalize('initial $display("a  b");') != normalize('initial $display("a b");')
    # a directive keeps its line: `define ends at the newline
    d1 = "`define W 4\nwire [`W-1:0] x;"
    d2 = "`define W 4 wire [`W-1:0] x;"
    assert normalize(d1) != normalize(d2)
    # never glue tokens into new ones: attributes, escaped identifiers
    assert normalize("always @( * )") == "always @( * )"
    assert normalize("wire \\bus[0] ;") == "wire \\bus[0] ;"
    assert normalize("a = b ;") == "a = b;"


def test_cache_key_and_hit_counting():
    p = Problem(id="p", spec="", testbench="module tb; endmodule")
    q = Problem(id="p", spec="", testbench="module tb; initial ; endmodule")
    a = "module TopModule; assign y = 1; endmodule"
    b = "module TopModule;\n   assign y = 1;   // one\nendmodule\n"
    assert cache_key(p, a) == cache_key(p, b)
    assert cache_key(p, a) != cache_key(q, a)          # a changed bench never reuses a verdict
    cache: EquivalenceCache[str] = EquivalenceCache()
    assert cache.get(cache_key(p, a)) is None
    cache.put(cache_key(p, a), "score")
    assert cache.get(cache_key(p, b)) == "score"
    assert (cache.hits, cache.misses, cache.hit_rate) == (1, 1, 0.5)
    off: EquivalenceCache[str] = EquivalenceCache(enabled=False)
    off.put("k", "v")
    assert off.get("k") is None and off.hits == off.misses == 0


def test_forbidden_constructs_outside_comments_and_strings():
    forb = ("`include", "$fopen", "$finish")
    assert forbidden_constructs('`include "x.v"\nmodule T; endmodule', forb) == ["`include"]
    assert forbidden_constructs("initial begin fd = $fopen(\"a\"); $finish; end", forb) == ["$fopen", "$finish"]
    assert forbidden_constructs('// $fopen\ninitial $display("$finish");', forb) == []
    assert forbidden_constructs("initial $fopenx;", forb) == []


def test_instantiations_and_roots():
    tb = ("module stim(input clk); endmodule\nmodule tb;\n stim s1 (.clk(clk));\n"
          " fixed #(.Q(1), .N(2)) uut (.a(a));\n for (i = 0; i < 3; i = i + 1) begin end\n"
          " if (x) y = 1;\nendmodule")
    assert instantiated_modules(tb) == ["stim", "fixed"]
    assert root_modules(tb) == ["tb"]


VE_PASS = "Hint: Output 'out' has no mismatches.\nMismatches: 0 in 42 samples\n"
VE_FAIL = "Hint: Output 'out' has 3 mismatches.\nMismatches: 3 in 42 samples\n"


@pytest.mark.parametrize("output, passed, mism, samples, partial", [
    (VE_PASS, True, 0, 42, 1.0),
    (VE_FAIL, False, 3, 42, 1 - 3 / 42),
    ("Mismatches: 0 in 0 samples\n", False, 0, 0, None),
    ("===========Your Design Passed===========\n", True, 0, None, None),
    ("=========== Test completed with          7 /100 failures ===========\n", False, 7, 100, 0.93),
    ("=========== Test completed with 3/20 failures ===========\n", False, 3, 20, 0.85),
    ("=========== Test completed with           2 failures ===========\n", False, 2, None, None),
    ("Test completed with 4 errors.\n", False, 4, None, None),
    ("===========Failed===========\n", False, None, None, None),
    ("===========Error===========\n", False, None, None, None),
    ("Failed at 3: clk=1\n=========== Your Design Passed ===========\n", False, None, None, None),
])
def test_parse_verdict_conventions(output, passed, mism, samples, partial):
    v = parse_verdict(output)
    assert v.found and v.passed is passed
    assert (v.mismatches, v.samples) == (mism, samples)
    if partial is None:
        assert v.partial is None
    else:
        assert v.partial == pytest.approx(partial)
    assert v.reason


def test_no_verdict_line():
    v = parse_verdict("hello\n")
    assert not v.found and not v.passed and "no verdict" in v.reason


def test_only_tagged_lines_count():
    tb = 'module tb; final $display("Mismatches: %1d in %1d samples", e, n); endmodule'
    tagged = tag_testbench(tb, "@@T@@")
    assert '$display("@@T@@Mismatches:' in tagged
    forged = "Mismatches: 0 in 100 samples\n@@T@@Mismatches: 5 in 100 samples\n"
    v = parse_verdict(forged, "@@T@@")
    assert not v.passed and v.mismatches == 5
    assert not parse_verdict("Mismatches: 0 in 100 samples\n", "@@T@@").found


def test_first_compile_error_skips_warnings():
    log = ("sample.sv:3: warning: implicit definition of wire 'x'.\n"
           "sample.sv:5: syntax error\nsample.sv:5: error: invalid module item.\n")
    assert first_compile_error(log) == "sample.sv:5: syntax error"
    assert first_compile_error("") == "iverilog failed without a message"
