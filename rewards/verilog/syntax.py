"""In-process syntax pre-check with pyslang: a parse costs ~0.1 ms against ~30 ms to spawn iverilog,
so broken code is turned away before any process starts (see bench/bench_verilog.py).

Only parse errors count, never elaboration: the check must not reject what iverilog would accept.
It is inconclusive (returns None) when the code uses a macro it cannot see (the testbench may
define it) and it never parses code holding `` `include`` (that would read host files).

`elaboration_error` goes further, for one decision only: whether a candidate may join a group simulation
(rewards.verilog.group). A candidate that would break the group's compile is better off alone than
costing its group a second compile; a wrong guess costs time, never a verdict, which iverilog gives.
"""
from __future__ import annotations

import re

_INCONCLUSIVE = {"UnknownDirective"}


def syntax_error(code: str) -> str | None:
    """The first syntax error as 'line:col: message', or None when the code parses (or can't tell)."""
    if "`include" in code:
        return None
    from pyslang import DiagnosticEngine
    from pyslang.syntax import SyntaxTree

    tree = SyntaxTree.fromText(code)
    errors = [d for d in tree.diagnostics if d.isError()]
    if not errors:
        return None
    if any(str(d.code).removeprefix("DiagCode(").rstrip(")") in _INCONCLUSIVE for d in errors):
        return None
    report = DiagnosticEngine.reportAll(tree.sourceManager, errors[:1])
    first = next((ln for ln in report.splitlines() if "error" in ln), report.strip())
    return re.sub(r"^source:", "line ", first.strip())


# Elaboration of untrusted code in-process: slang's own limits, tightened (a group member is one module
# tree of a few hundred lines; anything near these limits is not worth sharing a compile with).
MAX_ELABORATED_CHARS = 200_000
_LIMITS = {"maxGenerateSteps": 4096, "maxInstanceArray": 1024, "maxInstanceDepth": 32, "maxConstexprSteps": 100_000,
           "maxConstexprDepth": 64, "maxDefParamSteps": 4096, "errorLimit": 1, "typoCorrectionLimit": 0}


def elaboration_error(code: str, top: str) -> str | None:
    """slang's first error elaborating `code` alone from module `top` ('line:col: message'), or None.
    A prediction of iverilog's compile (see the module docstring): code slang will not read (an
    `` `include``, a macro, more than MAX_ELABORATED_CHARS) counts as an error, so it runs alone."""
    if "`include" in code or "`" in code.replace("`timescale", "").replace("`default_nettype", ""):
        return "uses compiler directives (not elaborated in-process)"
    if len(code) > MAX_ELABORATED_CHARS:
        return "too long to elaborate in-process"
    from pyslang import Bag, DiagnosticEngine
    from pyslang.ast import Compilation, CompilationOptions
    from pyslang.syntax import SyntaxTree

    options = CompilationOptions()
    for name, value in _LIMITS.items():
        setattr(options, name, value)
    options.topModules = {top}
    compilation = Compilation(Bag([options]))
    tree = SyntaxTree.fromText(code)
    compilation.addSyntaxTree(tree)
    errors = [d for d in compilation.getAllDiagnostics() if d.isError()]
    if not errors:
        return None
    report = DiagnosticEngine.reportAll(tree.sourceManager, errors[:1])
    first = next((ln for ln in report.splitlines() if "error" in ln), report.strip())
    return re.sub(r"^source:", "line ", first.strip())
