"""How one candidate is compiled and simulated, and how a testbench's output becomes a verdict.

Knows the two testbench conventions in the data:
- VerilogEval: `tb` compares TopModule to RefModule and prints ``Mismatches: N in M samples``.
- RTLLM: a self-checking testbench prints ``Your Design Passed``, or ``Test completed with N /M
  failures``, ``Failed``, ``Error`` lines.

Every `$display`/`$write` string of the testbench is prefixed with a per-run random tag, and only
tagged lines count, so a candidate that prints "Mismatches: 0 in 100 samples" itself earns nothing.
"""
from __future__ import annotations

import re
import secrets
import shlex
from dataclasses import dataclass, field
from typing import Any

from rewards.verilog.extract import _blank_strings, module_names, strip_comments
from rewards.verilog.problems import Problem

VERILOGEVAL_FLAGS: tuple[str, ...] = ("-Wall", "-Winfloop", "-Wno-timescale", "-g2012")
COMPILE_FAILED_EXIT = 97          # the shell's exit code when iverilog failed (its log says why)

_KEYWORDS = frozenset(["module", "macromodule", "endmodule", "function", "endfunction", "task", "endtask", "if", "else", "for", "while", "case", "casez", "casex", "begin", "end", "always", "always_ff", "always_comb", "always_latch", "initial", "final", "assign", "wire", "reg", "logic", "bit", "integer", "real", "input", "output", "inout", "parameter", "localparam", "genvar", "generate", "endgenerate", "return", "repeat", "forever", "posedge", "negedge", "and", "or", "not", "nand", "nor", "xor", "xnor", "buf", "bufif0", "bufif1", "notif0", "notif1", "pullup", "pulldown", "default", "typedef", "struct", "enum", "int", "byte", "shortint", "longint", "wait", "fork", "join", "disable", "force", "release", "deassign", "tri", "supply0", "supply1"])
_INSTANCE = re.compile(
    r"(?m)^[ \t]*([A-Za-z_][\w$]*)(?![\w$])\s*(?:#\s*\((?:[^()]|\([^()]*\))*\)\s*)?"
    r"([A-Za-z_][\w$]*)(?![\w$])\s*(?:\[[^\]]*\]\s*)?\(")


def instantiated_modules(code: str) -> list[str]:
    """Module names instantiated in `code` (a regex heuristic good enough for testbenches)."""
    clean = _blank_strings(strip_comments(code))
    seen: list[str] = []
    for mod, inst in _INSTANCE.findall(clean):
        if mod not in _KEYWORDS and inst not in _KEYWORDS and mod not in seen:
            seen.append(mod)
    return seen


def root_modules(code: str) -> list[str]:
    """Declared modules that no other module in `code` instantiates."""
    used = set(instantiated_modules(code))
    return [m for m in module_names(code) if m not in used]


def testbench_top(problem: Problem) -> str:
    """The testbench's top module (`-s` for iverilog): meta['tb_top'], else the root of the bench."""
    if problem.meta.get("tb_top"):
        return str(problem.meta["tb_top"])
    roots = root_modules(problem.testbench)
    if not roots:
        raise ValueError(f"problem {problem.id}: testbench declares no top-level module")
    return "tb" if "tb" in roots else roots[-1]


# ---------------------------------------------------------------------------- the job

@dataclass
class Job:
    """Files to write into a fresh work dir and the one shell command that compiles and simulates."""
    files: dict[str, str]
    argv: list[str]
    tag: str


def uses_reference(problem: Problem) -> bool:
    """VerilogEval-style benches instantiate the reference next to the candidate; RTLLM ones don't."""
    if not problem.reference:
        return False
    if problem.harness == "verilogeval":
        return True
    return problem.harness == "custom" and problem.ref_module != problem.top_module


def build_job(problem: Problem, code: str, flags: tuple[str, ...] = VERILOGEVAL_FLAGS,
              vvp_flags: tuple[str, ...] = ("-n",), equiv_cycles: int | None = None,
              sandbox_backend: str = "auto") -> Job:
    """A problem without a testbench gets the bench generated from its reference (cached per problem;
    raises equivbench.UnsupportedReference when the reference cannot be benched)."""
    if not problem.testbench:
        from rewards.verilog.equivbench import DEFAULT_CYCLES, with_equiv_bench
        problem = with_equiv_bench(problem, equiv_cycles or DEFAULT_CYCLES, sandbox_backend)
    tag = "@@EARL" + secrets.token_hex(6) + "@@"
    files: dict[str, str] = {}
    for name, text in (problem.files or {}).items():
        if text is None:            # HF datasets fill absent struct keys with None
            continue
        if not re.fullmatch(r"[\w.+-]+", name) or name.startswith("."):
            raise ValueError(f"problem {problem.id}: extra file name {name!r} must be a plain file name")
        files[name] = text
    if problem.harness == "verilogeval" or uses_reference(problem):
        sources = {"sample.sv": code, "test.sv": tag_testbench(problem.testbench, tag)}
        if uses_reference(problem):
            sources["ref.sv"] = problem.reference or ""
    else:   # testbench first so its `timescale also covers the design, as in a VCS run of tb + design
        sources = {"testbench.v": tag_testbench(problem.testbench, tag), "design.v": code}
    files.update(sources)
    compile_cmd = ["iverilog", *flags, "-s", testbench_top(problem), "-o", "sim", *sources]
    script = (f"{shlex.join(compile_cmd)} >compile.log 2>&1\nrc=$?\necho $rc >compile.rc\n"
              f"[ $rc -eq 0 ] || exit {COMPILE_FAILED_EXIT}\nexec {shlex.join(['vvp', *vvp_flags, 'sim'])}\n")
    return Job(files=files, argv=["/bin/sh", "-c", script], tag=tag)


def tag_testbench(testbench: str, tag: str) -> str:
    """Prefix every `$display("...`/`$write("...` string of the bench with `tag`."""
    return re.sub(r'(\$(?:display|write|strobe|monitor)[bho]?\s*\(\s*")', lambda m: m.group(1) + tag, testbench)


# ---------------------------------------------------------------------------- verdicts

@dataclass
class SimVerdict:
    passed: bool
    found: bool                        # a verdict line of a known convention was printed
    mismatches: int | None = None
    samples: int | None = None
    reason: str = ""
    lines: list[str] = field(default_factory=list)
    first_mismatch: dict[str, Any] | None = None   # generated benches: sample, cycle, output, expected, got

    @property
    def partial(self) -> float | None:
        """1 - mismatches/samples where the bench reports both."""
        if self.mismatches is None or not self.samples:
            return None
        return max(0.0, 1.0 - self.mismatches / self.samples)


_MISMATCH = re.compile(r"Mismatches:\s*(\d+)\s+in\s+(\d+)\s+samples")
_FIRST = re.compile(r"First mismatch: sample (\d+) cycle (\d+) output (\S+) expected (\S+) got (\S+)")
_FAILURES = re.compile(r"with\s+(\d+)\s*(?:/\s*(\d+))?\s*(failures|errors)", re.IGNORECASE)
_FAIL_WORD = re.compile(r"\b(fail|failed|failures?|error|errors)\b", re.IGNORECASE)


def bench_lines(output: str, tag: str | None) -> list[str]:
    """The lines the testbench printed (text after the tag); all lines when untagged."""
    if tag is None:
        return output.splitlines()
    return [ln.split(tag, 1)[1].strip() for ln in output.splitlines() if tag in ln]


def parse_verdict(output: str, tag: str | None = None) -> SimVerdict:
    lines = bench_lines(output, tag)
    for ln in reversed(lines):                       # VerilogEval: the final block's line
        m = _MISMATCH.search(ln)
        if m:
            mm, n = int(m.group(1)), int(m.group(2))
            ok = mm == 0 and n > 0
            why = f"{mm} mismatches in {n} samples" if not ok or n else "no samples compared"
            first = first_mismatch(lines)
            if first and not ok:
                why += f"; first in cycle {first['cycle']}: {first['output']} expected {first['expected']} " \
                       f"got {first['got']}"
            return SimVerdict(ok, True, mm, n, f"passed: 0 mismatches in {n} samples" if ok else why, lines,
                              first)
    fail_lines = [ln for ln in lines if _FAIL_WORD.search(ln)]
    passed = any("Passed" in ln for ln in lines)
    if passed and not fail_lines:
        return SimVerdict(True, True, 0, None, "testbench reported: Your Design Passed", lines)
    for ln in fail_lines:
        m = _FAILURES.search(ln)
        if m:
            mm = int(m.group(1))
            n = int(m.group(2)) if m.group(2) else None
            what = f"{mm}/{n}" if n else str(mm)
            if mm == 0 and not passed and len(fail_lines) == 1:
                return SimVerdict(True, True, 0, n, f"testbench reported 0 {m.group(3)}", lines)
            return SimVerdict(False, True, mm, n, f"testbench reported {what} {m.group(3).lower()}", lines)
    if fail_lines:
        return SimVerdict(False, True, None, None, f"testbench reported: {_short(fail_lines[0])}", lines)
    return SimVerdict(False, False, None, None, "the testbench printed no verdict line", lines)


def first_mismatch(lines: list[str]) -> dict[str, Any] | None:
    """The generated bench's first-mismatch line (rewards.verilog.equivbench) as a record, if printed."""
    for ln in lines:
        m = _FIRST.search(ln)
        if m:
            return {"sample": int(m.group(1)), "cycle": int(m.group(2)), "output": m.group(3),
                    "expected": m.group(4), "got": m.group(5)}
    return None


def first_compile_error(log: str) -> str:
    """The first line of iverilog's output that names an error (else its first line)."""
    lines = [ln.strip() for ln in log.splitlines() if ln.strip()]
    for ln in lines:
        if re.search(r"error|syntax|unable to|unknown module|not found|No such file", ln, re.IGNORECASE) \
                and "warning" not in ln.lower():
            return _short(ln)
    return _short(lines[0]) if lines else "iverilog failed without a message"


def _short(text: str, limit: int = 300) -> str:
    text = re.sub(r"={3,}", "", text).strip()
    return text if len(text) <= limit else text[: limit - 3] + "..."
