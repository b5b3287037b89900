"""Helpers for the Verilog reward tests and bench: mutants of VerilogEval references and hostile
candidates. Plain functions (imported by tests/test_verilog_*.py and bench/bench_verilog.py)."""
from __future__ import annotations

import re

from rewards.verilog.extract import rename_module

# One behaviour-changing edit per VerilogEval sample problem (old text -> new text in the reference).
OPERATOR_FLIPS: dict[str, tuple[str, str]] = {
    "Prob001_zero": ("= 1'b0", "= ~1'b0"),
    "Prob009_popcount3": ("in[0]+in[1]", "in[0]-in[1]"),
    "Prob017_mux2to1v": ("sel ? b : a", "!sel ? b : a"),
    "Prob025_reduction": ("^in", "&in"),
    "Prob033_ece241_2014_q1c": ("a+b", "a-b"),
    "Prob041_dff8r": ("if (reset)", "if (!reset)"),
    "Prob049_m2014_q4b": ("q <= d", "q <= ~d"),
    "Prob057_kmap2": ("(~c & ~b)", "(~c | ~b)"),
    "Prob065_7420": ("~&( {p1a", "&( {p1a"),
    "Prob073_dff16e": ("if (!resetn)", "if (resetn)"),
    "Prob081_7458": ("&{p1a, p1b, p1c} |", "&{p1a, p1b, p1c} &"),
    "Prob089_ece241_2014_q5a": ("(state == C)", "(state != C)"),
    "Prob097_mux9to1v": ("4'h0: out = a", "4'h0: out = ~a"),
    "Prob105_rotate100": ("ena == 2'h1", "ena != 2'h1"),
    "Prob113_2012_q1g": ("case (x)", "case (~x)"),
    "Prob121_2014_q3bfsm": ("x ? B : A", "!x ? B : A"),
    "Prob129_ece241_2013_q8": ("if (!aresetn)", "if (aresetn)"),
    "Prob137_fsm_serial": ("in ? START : B0", "!in ? START : B0"),
    "Prob145_circuit8": ("q <= a", "q <= ~a"),
    "Prob153_gshare": ("predict_history_r ^ predict_pc", "predict_history_r & predict_pc"),
}

_PORT = re.compile(r"^\s*(input|output)\s+(?:reg|logic|wire)?\s*(\[[^\]]+\])?\s*(\w+)\s*,?\s*$")


def as_top(reference: str) -> str:
    return rename_module(reference, "RefModule", "TopModule")


HANG = "  reg hang_x = 0;\n  initial forever hang_x = ~hang_x;\n"   # a zero-delay loop: vvp never returns


def before_end(code: str, text: str) -> str:
    """`code` with `text` inserted before its last `endmodule`."""
    head, _, tail = code.rpartition("endmodule")
    return head + text + "endmodule" + tail


def _header(reference: str) -> tuple[str, list[tuple[str, str, str]]]:
    m = re.search(r"module\s+RefModule\s*\((.*?)\);", reference, re.DOTALL)
    assert m, "reference header not found"
    ports = []
    for line in m.group(1).splitlines():
        if line.strip():
            pm = _PORT.match(line)
            assert pm, f"unparsed port line {line!r}"
            ports.append((pm.group(1), pm.group(2) or "", pm.group(3)))
    decl = ",\n".join(f"  {d} {w} {n}".rstrip() for d, w, n in ports)
    return decl, ports


def flip_operator(problem_id: str, reference: str) -> str:
    old, new = OPERATOR_FLIPS[problem_id]
    assert old in reference, f"{problem_id}: {old!r} not in reference"
    return as_top(reference.replace(old, new, 1))


def invert_outputs(reference: str) -> str:
    """The reference wrapped so that every output is inverted."""
    decl, ports = _header(reference)
    inner = rename_module(reference, "RefModule", "Inner")
    wires = "".join(f"  wire {w} {n}_i;\n" for d, w, n in ports if d == "output")
    conns = ", ".join(f".{n}({n}_i)" if d == "output" else f".{n}({n})" for d, w, n in ports)
    assigns = "".join(f"  assign {n} = ~{n}_i;\n" for d, w, n in ports if d == "output")
    return f"{inner}\nmodule TopModule (\n{decl}\n);\n{wires}  Inner u ({conns});\n{assigns}endmodule\n"


def empty_body(reference: str) -> str:
    decl, _ = _header(reference)
    return f"module TopModule (\n{decl}\n);\nendmodule\n"


def break_syntax(reference: str) -> str:
    """Drop the semicolon after the port list."""
    return as_top(reference).replace(");", ")", 1)


# Hostile candidates for a combinational 1-bit problem (Prob001_zero's interface: output zero).
# Each must fail (or pass on function alone) with a reason, leave nothing on the host, and not stall
# the batch beyond the time limit.
def hostile_candidates(tag: str) -> dict[str, str]:
    """`tag` names files the writers try to create, so the test can look for them on the host.
    Each is fenced, as a model would write it, so extraction keeps the whole text."""
    bodies = {
        "zero_delay_always": " reg x = 0;\n always x = ~x;\n assign zero = 1'b0;\n",
        "zero_delay_forever": " reg x = 0;\n initial forever x = ~x;\n assign zero = 1'b0;\n",
        "combinational_loop": " wire a;\n assign a = (a === 1'bx) ? 1'b0 : ~a;\n assign zero = 1'b0;\n",
        "display_flood": " assign zero = 1'b0;\n initial forever $display(\"%0128d flood flood flood\", $time);\n",
        "huge_memory": " reg [7:0] m [0:1<<30];\n integer i;\n"
                       " initial for (i = 0; i < (1<<30); i = i + 1) m[i] = i;\n assign zero = 1'b0;\n",
        "deep_recursion": " function automatic integer f(input integer n);\n  f = n + f(n + 1);\n endfunction\n"
                          " integer r;\n initial r = f(0);\n assign zero = 1'b0;\n",
        "fopen_absolute": f" integer fd;\n initial begin fd = $fopen(\"/tmp/{tag}_abs\", \"w\");"
                          f" $fwrite(fd, \"pwned\"); $fclose(fd); end\n assign zero = 1'b0;\n",
        "fopen_relative": f" integer fd;\n initial begin fd = $fopen(\"../{tag}_rel\", \"w\");"
                          f" $fwrite(fd, \"pwned\"); $fclose(fd); end\n assign zero = 1'b0;\n",
        "fopen_home": f" integer fd;\n initial begin fd = $fopen(\"/root/{tag}_home\", \"w\");"
                      f" $fwrite(fd, \"pwned\"); $fclose(fd); end\n assign zero = 1'b0;\n",
        "endless_fwrite": " integer fd;\n initial begin fd = $fopen(\"big.txt\", \"w\");"
                          " forever $fwrite(fd, \"%0256d\\n\", $time); end\n assign zero = 1'b0;\n",
    }
    out = {k: f"```verilog\nmodule TopModule(output zero);\n{v}endmodule\n```\n" for k, v in bodies.items()}
    out["include_host_file"] = ("```verilog\n`include \"/etc/passwd\"\nmodule TopModule(output zero);\n"
                                " assign zero = 1'b0;\nendmodule\n```\n")
    return out
