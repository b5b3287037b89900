"""Formal equivalence (yosys SAT in the sandbox) vs simulation (iverilog + the problem's bench).

    python -m bench.bench_formal [--quick]

(a) Per VerilogEval sample problem: the reference renamed to TopModule, scored once by simulation
(VerilogReward, formal off, cache off) and once by formal (FormalChecker, cache off), one at a time.
(b) False positives: mutants that pass simulation, refuted by formal (`formal: confirm`). Mutants:
the foundation's operator flips and inverted outputs of the 20 references, plus one realistic mutant
per procedural family (tests/helpers/rtlgen_mutants.py) against its own 200-sample bench and that bench cut to
20 random samples.
"""
from __future__ import annotations

import re
import statistics
import sys
import time
from dataclasses import replace

from bench import Unmeasured
from bench.bench_verilog import DATA  # the VerilogEval sample, found once


def _time_per_problem(problems: list, wall_s: float) -> list[tuple[str, float, object]]:
    from rewards.verilog.formal import FormalChecker, FormalConfig
    from rewards.verilog.reward import VerilogReward, reference_candidate

    sim = VerilogReward(problems, cache=False, workers=1)
    formal = FormalChecker(FormalConfig(wall_s=wall_s, cache_size=1))
    rows = []
    try:
        for p in problems:
            code = reference_candidate(p)
            t = time.perf_counter()
            s = sim.score(p, code)
            sim_s = time.perf_counter() - t
            assert s.passed, (p.id, s.reason)
            r = formal.check_problem(p, code)
            rows.append((p.id, sim_s, r))
    finally:
        sim.close()
    return rows


def _mutants(problems: list, quick: bool) -> list[tuple[object, str, str]]:
    from tests.helpers.verilog_mutants import flip_operator, invert_outputs
    cases = []
    for p in problems:
        cases.append((p, "flip", flip_operator(p.id, p.reference)))
        cases.append((p, "invert", invert_outputs(p.reference)))
    from pipelines.tasks.rtlgen import solution
    from tests.helpers.rtlgen_mutants import MUTANTS, problem_with_variant
    for family, (pattern, mutate) in list(MUTANTS.items())[: 6 if quick else None]:
        p = problem_with_variant(family, pattern)
        weak = replace(p, id=p.id + "-bench20", testbench=re.sub(r"tb_k < \d+;", "tb_k < 20;", p.testbench))
        cases.append((p, f"rtlgen200/{family}", mutate(solution(p))))
        cases.append((weak, f"rtlgen20/{family}", mutate(solution(p))))
    return cases


def _false_positives(cases: list) -> tuple[dict, list]:
    from rewards.verilog.reward import VerilogReward
    problems = list({id(p): p for p, _, _ in cases}.values())
    reward = VerilogReward(problems, formal="confirm", cache=False, workers=2)
    try:
        scores = reward.score_batch([p for p, _, _ in cases], [c for _, _, c in cases])
    finally:
        reward.close()
    by_set: dict[str, list[int]] = {}
    examples = []
    for (p, kind, _), s in zip(cases, scores, strict=True):
        key = (f"rtlgen family mutants ({kind[6:kind.index('/')]}-sample bench)" if kind.startswith("rtlgen")
               else f"VerilogEval {kind}")
        row = by_set.setdefault(key, [0, 0, 0, 0])    # mutants, sim passes, refuted, unknown
        row[0] += 1
        sim_pass = s.passed or s.formal is not None
        row[1] += sim_pass
        row[2] += s.formal == "not_equivalent"
        row[3] += s.formal == "unknown"
        if s.formal == "not_equivalent":
            cex = s.formal_detail["counterexample"]
            examples.append(f"{p.id} ({kind}): cycle {cex['cycle']}, inputs {cex['inputs']}" if cex["cycle"]
                            else f"{p.id} ({kind}): inputs {cex['inputs']}")
    return by_set, examples


def run(quick: bool = False) -> str:
    from rewards.verilog.loaders import load_problems
    if not DATA.is_dir():
        raise Unmeasured(f"{DATA} not found")
    problems = load_problems(DATA)
    wall_s = 10.0 if quick else 20.0
    t0 = time.perf_counter()
    rows = _time_per_problem(problems, wall_s)
    out = ["## Formal equivalence (yosys) vs simulation (iverilog)", "",
           "| problem | kind | simulation s | formal s | formal / sim | verdict | method |",
           "|---|---|---:|---:|---:|---|---|"]
    ratios = []
    for pid, sim_s, r in rows:
        ratio = r.wall_s / sim_s
        if r.decided:
            ratios.append(ratio)
        kind = "seq" if r.sequential else ("comb" if r.decided else "?")
        method = r.method + ("" if r.complete or not r.decided else f" ({r.depth} cycles)")
        verdict = r.verdict if r.decided else f"unknown: {r.reason[:60]}"
        out.append(f"| {pid} | {kind} | {sim_s:.3f} | {r.wall_s:.3f} | {ratio:.2f}x | {verdict} | {method} |")
    decided = sum(r.decided for _, _, r in rows)
    summary = (f"Formal decides **{decided} of {len(rows)}** problems; median formal/sim time over decided "
               f"ones **{statistics.median(ratios):.2f}x** (sim median "
               f"{statistics.median(s for _, s, _ in rows):.3f} s, formal median "
               f"{statistics.median(r.wall_s for _, _, r in rows if r.decided):.3f} s).")
    out += ["", summary, ""]
    by_set, examples = _false_positives(_mutants(problems, quick))
    out += ["| mutant set | mutants | pass simulation | refuted by formal (false positives) | formal unknown |",
            "|---|---:|---:|---:|---:|"]
    for key, (n, sp, ref, unk) in by_set.items():
        out.append(f"| {key} | {n} | {sp} | {ref} | {unk} |")
    if examples:
        out += ["", "Counterexamples formal found for bench-passing mutants: " + "; ".join(examples[:6])]
    how = (f"Measured on this machine ({time.perf_counter() - t0:.0f} s in all): one check at a time, "
           f"caches off, yosys {wall_s:g} s limit; simulation = compile + run of the problem's bench in the "
           "sandbox; formal = two sandboxed yosys runs (read + interface, then the proof).")
    out += ["", how]
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    print(run(quick="--quick" in sys.argv))
