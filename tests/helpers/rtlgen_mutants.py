"""One realistic mutant per procedural RTL family (pipelines.tasks.rtlgen), and the generated problem it
applies to. Plain data and functions, imported by tests/test_rtlgen.py, tests/test_formal.py and
bench/bench_formal.py (a bench runs without pytest's sys.path, so it cannot import a test module)."""
from __future__ import annotations

import re

from pipelines.tasks.rtlgen import generate
from rewards.verilog.problems import Problem


def _flip_last_pattern_bit(text: str) -> str:
    return re.sub(r"(\d+'b[01]*)([01])\)", lambda m: m[1] + ("1" if m[2] == "0" else "0") + ")", text)


# family -> (which variant to mutate, mutation). Each is a plausible model mistake, not a trivial one:
# `>` for `>=` needs equal operands in the stimulus, sync-for-async reset needs a check right after reset.
MUTANTS = {
    "bitwise": (r"and2", lambda s: s.replace(" & ", " | ")),
    "not": (r"plain", lambda s: s.replace("= ~", "= ")),
    "mux2": (r"ab", lambda s: re.sub(r"\? (\w+) : (\w+);", r"? \2 : \1;", s)),
    "mux4": (r"fwd", lambda s: s.replace("[1] ?", "[0] ?")),
    "adder": (r"ci1co1", lambda s: re.sub(r" \+ \w+;", ";", s)),
    "subtractor": (r"bi0bo0", lambda s: re.sub(r"= (\w+) - (\w+);", r"= \2 - \1;", s)),
    "comparator": (r">=$", lambda s: s.replace(">=", ">")),
    "reduction": (r"^and$", lambda s: s.replace("= &", "= |")),
    "parity": (r"even", lambda s: s.replace("= ^", "= ~^")),
    "decoder": (r"^2to4$", lambda s: s.replace("4'd1 <<", "4'd2 <<")),
    "encoder": (r"^high", lambda s: re.sub(r"for \(idx = 0; idx < (\d+); idx = idx \+ 1\)",
                                         lambda m: f"for (idx = {int(m[1]) - 1}; idx >= 0; idx = idx - 1)",
                                         s)),
    "counter": (r"_async$", lambda s: re.sub(r" or posedge \w+\)", ")", s)),
    "shift": (r"_en_", lambda s: re.sub(r"else if \(\w+\) ", "else ", s)),
    "register": (r"nores", lambda s: re.sub(r"if \(\w+\) (\w+) <=", r"\1 <=", s)),
    "fsm": (r"moore", _flip_last_pattern_bit),
    "edge": (r"rise_comb", lambda s: s.replace("& ~prev", "& prev")),
}


def problem_with_variant(family: str, pattern: str) -> Problem:
    for p in generate(300, seed=21, families=[family]):
        if re.search(pattern, p.meta["variant"]):
            return p
    raise AssertionError(f"no {family} problem with variant /{pattern}/ in 300 draws")
