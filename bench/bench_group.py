"""Group simulation vs one by one: GRPO-shaped batches scored by `verilog_functional` both ways.

    python -m bench.bench_group [--quick]

(c) in issue 14: 8 distinct candidates per problem (no two equal up to whitespace and comments, so the
equivalence cache has nothing to do), on generated tasks (rtlgen, their own bench) and reference-only
problems (the VerilogEval sample with its testbenches dropped: equivbench writes the bench). Same reward
config both ways, `group_simulation` on vs off, formal off (a pass's formal check costs the same both ways).
"""
from __future__ import annotations

import os
import re
import statistics
import sys
import time
from dataclasses import replace

from bench.bench_verilog import DATA  # the VerilogEval sample, found once

PER_PROBLEM = 8
EDITS = ((r" \? (\w+) : (\w+)", r" ? \2 : \1"), (r" < ", " > "), (r" - ", " + "), (r" \+ ", " - "), (r"= \^", "= &"),
         (r"~", ""), (r"'d0;", "'d1;"), (r" == ", " != "), (r"<< ", ">> "), (r" & ", " | "), (r" \| ", " & "),
         (r" \^ ", " & "), (r"posedge", "negedge"), (r"if \(!", "if ("))       # single edits a model might make


def _variant(code: str, k: int) -> str:
    """The same design with an unused wire: distinct for the cache, equal in function."""
    from tests.helpers.verilog_mutants import before_end
    return before_end(code, f"  wire unused_{k} = 1'b0;\n")


def _candidates(good: str, extra: list[str]) -> list[str]:
    """PER_PROBLEM distinct candidates: `extra`, mutants of `good` (one edit each), `good` and variants."""
    out = [good, *extra]
    for pattern, repl in EDITS:
        if len(out) >= PER_PROBLEM - 2:
            break
        mutant = re.sub(pattern, repl, good, count=1)
        if mutant not in out:
            out.append(mutant)
    k = 0
    while len(out) < PER_PROBLEM:
        out.append(_variant(good, k))
        k += 1
    return out[:PER_PROBLEM]


def generated_batch(n: int = 8, broken: bool = False) -> list:
    """rtlgen tasks; `broken`: one candidate per problem fails to elaborate (the group compiles twice)."""
    from pipelines.tasks.rtlgen import generate
    return [(p, c) for p in generate(n, seed=14)
            for c in _candidates(p.meta["solution"], [_variant(p.meta["solution"], 99).replace("1'b0", "nowhere")]
                                 if broken else [])]


def reference_only_batch() -> list:
    from rewards.verilog.loaders import load_problems
    from tests.helpers.verilog_mutants import as_top, empty_body, flip_operator, invert_outputs
    items = []
    for p in load_problems(DATA):
        ro = replace(p, testbench=None, id=p.id + "-ro")
        extra = [flip_operator(p.id, p.reference), invert_outputs(p.reference), empty_body(p.reference)]
        items += [(ro, c) for c in _candidates(as_top(p.reference), extra)]
    return items


def _run(items, group: bool) -> tuple[float, list]:
    from rewards.verilog.reward import VerilogReward
    r = VerilogReward(group_simulation=group, formal="off")
    try:
        t = time.perf_counter()
        scores = r.score_batch([p for p, _ in items], [f"```verilog\n{c}```" for _, c in items])
        wall = time.perf_counter() - t
        assert r.stats()["cache_hits"] == 0, "candidates must be distinct"
    finally:
        r.close()
    return wall, scores


def _measure(name: str, items, reps: int) -> tuple[str, float]:
    _run(items, True)                       # warm-up: generated benches (yosys) built once, as in training
    walls: dict[bool, list[float]] = {False: [], True: []}
    last: dict[bool, list] = {}
    for _ in range(reps):
        for group in (False, True):         # interleaved, so load drift hits both alike
            walls[group].append(_run(items, group)[0])
    for group in (False, True):
        last[group] = _run(items, group)[1]
    alone, grouped = (statistics.median(walls[g]) for g in (False, True))
    same = all(_key(a) == _key(b) for a, b in zip(last[False], last[True], strict=True))
    notes = [s.group for s in last[True] if s.group]
    in_groups = sum(1 for g in notes if g["fallback"] is None)
    kept_out = sum(1 for g in notes if g["fallback"] and g["fallback"].startswith("scored alone"))
    fell_back = sum(1 for g in notes if g["fallback"]) - kept_out
    problems = len({p.id for p, _ in items})
    row = (f"| {name} | {problems} x {PER_PROBLEM} = {len(items)} | {sum(s.passed for s in last[True])} | "
           f"{alone:.3f} | {grouped:.3f} | **{grouped / alone:.2f}x** | {in_groups} | {kept_out} | {fell_back} | "
           f"{'yes' if same else 'NO'} |")
    return row, grouped / alone


def _key(score) -> dict:
    d = score.to_dict()
    d.pop("time_s")
    d.pop("group")
    return d


def run(quick: bool = False) -> str:
    reps = 2 if quick else 5
    rows = [_measure("generated (rtlgen, own bench)", generated_batch(), reps)[0],
            _measure("generated, 1 of 8 per problem does not compile", generated_batch(broken=True), reps)[0]]
    if DATA.is_dir():
        rows.append(_measure("reference-only (VerilogEval sample, bench generated)", reference_only_batch(), reps)[0])
    from rewards.verilog.reward import default_workers
    return "\n".join([
        "## Group simulation vs one by one (verilog_functional)", "",
        ("| problems | candidates | passed | one by one s | group s | group / one by one | simulated in a group "
        "| kept out (scored alone) | fell back | same results |"),
        "|---|---|---|---|---|---|---|---|---|---|",
        *rows, "",
        (f"Measured: median wall time of {reps} interleaved `score_batch` calls each way on a fresh reward (empty "
        f"cache; every candidate distinct, so no cache hits), {default_workers()} workers (the default) both ways, "
        f"formal off; after one warm-up call that builds the generated benches. Candidates per problem: the "
        "reference, single-edit mutants where an edit applies, equivalent variants (an unused wire); a group is one "
        "problem's candidates that may share a simulation, the rest (and a failed group's members) run alone. "
        "Kept out: candidates sent to runs of their own before any group compile (names of the bench, `$random`, "
        "macros, ..., or slang cannot elaborate them alone: the broken candidate of the second row); fell back: "
        "members of a group whose compile or simulation failed. "
        f"Goal (issue 14): <= 0.4x. {os.cpu_count()} cores shared with other work."),
    ])


if __name__ == "__main__":
    print(run(quick="--quick" in sys.argv))
