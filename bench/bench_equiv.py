"""Generated equivalence benches (rewards.verilog.equivbench) vs the official testbenches.

    python -m bench.bench_equiv [--quick]

For each problem whose official bench passes its own reference: the reference and an equivalent
rewrite (comments stripped, a dead wire added) must pass the generated bench; mutants (operator swaps,
constants flipped, posedge<->negedge, inverted conditions; several per problem) are scored by the
official bench and by the generated one (the same problem with its testbench removed), and the
verdicts compared, the reward's formal confirmation of passes off (the benches alone). Every disagreement
is listed, adjudicated by the yosys equivalence check (rewards.verilog.formal) where it decides. Also: time
per sample, generated vs official.
"""
from __future__ import annotations

import os
import random
import re
import statistics
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from bench import Unmeasured

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
SETS = {"VerilogEval v2 sample": DATA / "verilog-eval-v2-sample", "RTLLM v2": DATA / "rtllm"}


# ---------------------------------------------------------------------------------------------
# mutants

@dataclass
class Mutant:
    kind: str
    where: int                      # character offset of the edit in the comment-stripped code
    code: str


def _swap(new: str):
    return lambda m: new


def _flip_literal(m: re.Match) -> str | None:
    size, base, digits = m.group(1), m.group(2).lower(), m.group(3).replace("_", "")
    last = digits[-1].lower()
    if last in "xz?":
        return None
    radix = {"b": 2, "h": 16, "d": 10, "o": 8}[base]
    flipped = format(int(last, radix) ^ 1, "x" if radix == 16 else "d")
    return f"{size}'{m.group(2)}{digits[:-1]}{flipped}"


def _flip_decimal(m: re.Match) -> str:
    return str(int(m.group(1)) ^ 1)


# (kind, pattern, replacement: match -> new text or None to skip the site)
_OPERATORS: list[tuple[str, re.Pattern, Any]] = [
    ("arith", re.compile(r"(?<=[\w)\]}\s])\+(?![+:=])"), _swap("-")),
    ("arith", re.compile(r"(?<=[\w)\]}\s])-(?![->:=])"), _swap("+")),
    ("logic", re.compile(r"&&"), _swap("||")),
    ("logic", re.compile(r"\|\|"), _swap("&&")),
    ("bitwise", re.compile(r"(?<![&~])&(?![&])"), _swap("|")),
    ("bitwise", re.compile(r"(?<![|~])\|(?![|])"), _swap("&")),
    ("bitwise", re.compile(r"(?<![~])\^(?![~])"), _swap("&")),
    ("equality", re.compile(r"(?<![=!<>])==(?!=)"), _swap("!=")),
    ("equality", re.compile(r"!=(?!=)"), _swap("==")),
    ("const", re.compile(r"(\d+)'([bBhHdDoO])([0-9a-fA-FxXzZ_?]+)"), _flip_literal),
    ("const", re.compile(r"(?<![\w'$.#`])(\d+)(?![\w'.])"), _flip_decimal),
    ("edge", re.compile(r"\bposedge\b"), _swap("negedge")),
    ("edge", re.compile(r"\bnegedge\b"), _swap("posedge")),
]
_KINDS = ["arith", "logic", "bitwise", "equality", "const", "edge", "cond"]


def _body_start(code: str) -> int:
    """Offset just past the first module header (its `);`), so port declarations stay intact."""
    m = re.search(r"\bmodule\b", code)
    end = code.find(");", m.end()) if m else -1
    return end + 2 if end >= 0 else 0


def _excluded_spans(code: str) -> list[tuple[int, int]]:
    """`for (...)` headers (a flipped loop bound hangs the simulation) and `[...]` ranges/selects."""
    spans = []
    for m in re.finditer(r"\bfor\s*\(", code):
        end = _matching(code, m.end() - 1)
        spans.append((m.start(), end))
    depth, start = 0, 0
    for i, ch in enumerate(code):
        if ch == "[":
            depth, start = depth + 1, (i if depth == 0 else start)
        elif ch == "]" and depth:
            depth -= 1
            if depth == 0:
                spans.append((start, i))
    return spans


def _matching(code: str, open_at: int) -> int:
    depth = 0
    for i in range(open_at, len(code)):
        depth += {"(": 1, ")": -1}.get(code[i], 0)
        if depth == 0:
            return i
    return len(code)


def mutation_sites(code: str) -> dict[str, list[tuple[int, int, str]]]:
    """Every applicable edit by kind: (start, end, replacement) in `code`."""
    start, spans = _body_start(code), _excluded_spans(code)
    sites: dict[str, list[tuple[int, int, str]]] = {k: [] for k in _KINDS}

    def free(i: int) -> bool:
        return i >= start and not any(a <= i <= b for a, b in spans)

    for kind, pattern, repl in _OPERATORS:
        for m in pattern.finditer(code):
            new = repl(m)
            if new is not None and free(m.start()) and new != m.group(0):
                sites[kind].append((m.start(), m.end(), new))
    for m in re.finditer(r"\bif\s*\(", code):
        close = _matching(code, m.end() - 1)
        if free(m.start()) and close < len(code):
            sites["cond"].append((m.end(), close, "!(" + code[m.end():close] + ")"))
    return sites


def mutants(problem_id: str, code: str, k: int) -> list[Mutant]:
    """Up to `k` distinct single-edit mutants of `code` (comments stripped), kinds taken in turn,
    sites drawn with a seed from the problem id (the same mutants every run)."""
    from rewards.verilog.extract import normalize, strip_comments

    code = strip_comments(code)
    rng = random.Random(problem_id)
    sites = {kind: rng.sample(s, len(s)) for kind, s in mutation_sites(code).items()}
    out: list[Mutant] = []
    seen = {normalize(code)}
    while len(out) < k and any(sites.values()):
        for kind in _KINDS:
            if not sites[kind] or len(out) >= k:
                continue
            a, b, new = sites[kind].pop()
            text = code[:a] + new + code[b:]
            if normalize(text) not in seen:
                seen.add(normalize(text))
                out.append(Mutant(kind, a, text))
    return out


def equivalent_rewrite(code: str) -> str:
    """The same design with comments stripped and a dead wire added after the first header."""
    from rewards.verilog.extract import strip_comments

    code = strip_comments(code)
    at = _body_start(code)
    return code[:at] + "\n  wire earl_dead_wire = 1'b0;   // unused\n" + code[at:]


# ---------------------------------------------------------------------------------------------
# measurement

@dataclass
class Sample:
    problem: Any
    kind: str                       # reference | rewrite | mutant:<kind>
    code: str


@dataclass
class SetResult:
    name: str
    problems: int = 0
    skipped: dict[str, str] = field(default_factory=dict)         # id -> why (official fails, unsupported)
    equivalents: int = 0
    equivalents_failed: list[tuple[str, str, str]] = field(default_factory=list)
    mutants: int = 0
    not_compiling: int = 0          # mutants the official flow rejects before simulating (both benches agree)
    agree: int = 0
    official_passed: int = 0        # compared mutants the official bench passes (weak bench or equivalent edit)
    generated_passed: int = 0
    disagreements: list[dict[str, Any]] = field(default_factory=list)
    both_passed: list[dict[str, Any]] = field(default_factory=list)   # mutants no bench caught: equivalent?
    official_s: list[float] = field(default_factory=list)
    generated_s: list[float] = field(default_factory=list)

    @property
    def compared(self) -> int:
        return self.mutants - self.not_compiling

    @property
    def agreement(self) -> float:
        return self.agree / self.compared if self.compared else 1.0

    @property
    def false_passes(self) -> int:
        """Mutants the generated bench passes and the official bench fails."""
        return sum(d["generated"] == "pass" for d in self.disagreements)

    @property
    def time_ratio(self) -> float:
        """Generated / official, total over the same samples (both scored, one at a time)."""
        return sum(self.generated_s) / sum(self.official_s) if self.official_s else 0.0


def _reference_only(problem: Any) -> Any:
    return replace(problem, testbench=None)


def measure_set(name: str, problems: list, per_problem: int = 6, workers: int | None = None,
                adjudicate: bool = True, time_limit_s: float = 10.0) -> SetResult:
    """Score references, rewrites and mutants with both benches; see the module docstring."""
    from rewards.verilog.equivbench import UnsupportedReference, equivalence_bench
    from rewards.verilog.reward import VerilogReward, reference_candidate

    res = SetResult(name)
    # formal off: the benches alone are compared (and timed); yosys adjudicates separately below
    cfg = {"workers": workers or os.cpu_count(), "time_limit_s": time_limit_s, "cache": False, "formal": "off"}
    official, generated = VerilogReward(**cfg), VerilogReward(**cfg)
    try:
        refs = [reference_candidate(p) for p in problems]
        ref_scores = official.score_batch(problems, refs)
        kept = []
        for p, code, s in zip(problems, refs, ref_scores, strict=True):
            try:
                equivalence_bench(_reference_only(p), generated.config.equiv_cycles)
            except UnsupportedReference as exc:
                res.skipped[p.id] = f"generated bench: unsupported ({exc})"
                continue
            if not s.passed:
                res.skipped[p.id] = f"official bench fails its own reference ({s.reason[:80]})"
                continue
            kept.append((p, code))
        res.problems = len(kept)
        samples = []
        for p, code in kept:
            samples += [Sample(p, "reference", code), Sample(p, "rewrite", equivalent_rewrite(code))]
            samples += [Sample(p, f"mutant:{m.kind}", m.code) for m in mutants(p.id, code, per_problem)]
        off = official.score_batch([s.problem for s in samples], [s.code for s in samples])
        gen = generated.score_batch([_reference_only(s.problem) for s in samples], [s.code for s in samples])
    finally:
        official.close()
        generated.close()
    for smp, o, g in zip(samples, off, gen, strict=True):
        _tally(res, smp, o, g)
    if adjudicate:
        _adjudicate(res)
    _retry_deeper(res, cfg)
    _time_interleaved(res, samples, {**cfg, "workers": 1})
    return res


def _time_interleaved(res: SetResult, samples: list[Sample], cfg: dict[str, Any]) -> None:
    """Compile + simulate time per sample, one at a time, official and generated alternating (which
    goes first alternates too) so load from other processes hits both alike. The generated bench is
    built before timing starts: like the reward's cache, once per problem."""
    from rewards.verilog.reward import VerilogReward

    official, generated = VerilogReward(**cfg), VerilogReward(**cfg)
    try:
        for i, smp in enumerate(samples):
            pair = [(official, smp.problem, res.official_s), (generated, _reference_only(smp.problem),
                                                              res.generated_s)]
            for reward, prob, out in (pair if i % 2 == 0 else pair[::-1]):
                s = reward.score(prob, smp.code)
                if s.error is None and s.stage not in ("none", "format"):
                    out.append(s.time_s)
    finally:
        official.close()
        generated.close()


DEEP_CYCLES = 8000


def _retry_deeper(res: SetResult, cfg: dict[str, Any]) -> None:
    """A mutant only the official bench catches: does the generated bench catch it with more cycles?
    (A counter that wraps after thousands of cycles is out of reach of the default run.)"""
    from rewards.verilog.reward import VerilogReward

    for d in res.disagreements:
        if d["generated"] != "pass":
            continue
        r = VerilogReward(**{**cfg, "equiv_cycles": DEEP_CYCLES})
        try:
            s = r.score(d["problem"], d["code"])
        finally:
            r.close()
        d["deeper"] = f"equiv_cycles={DEEP_CYCLES}: {_verdict(s)} ({s.reason[:90]})"


def _verdict(score: Any) -> str:
    return "pass" if score.passed else ("error" if score.error else "fail")


def _tally(res: SetResult, smp: Sample, o: Any, g: Any) -> None:
    if not smp.kind.startswith("mutant"):
        res.equivalents += 1
        if not g.passed:
            res.equivalents_failed.append((smp.problem.id, smp.kind, g.reason))
        return
    res.mutants += 1
    if o.stage in ("none", "format", "syntax"):
        res.not_compiling += 1
        return
    res.official_passed += o.passed
    res.generated_passed += g.passed
    record = {"id": smp.problem.id, "kind": smp.kind, "official": _verdict(o),
                              "generated": _verdict(g), "official_reason": o.reason[:160],
                              "generated_reason": g.reason[:160], "code": smp.code,
                              "reference": smp.problem.reference, "top": smp.problem.top_module,
                              "ref_top": smp.problem.ref_module, "problem": _reference_only(smp.problem)}
    if o.passed == g.passed:
        res.agree += 1
        if o.passed:
            res.both_passed.append(record)
        return
    res.disagreements.append(record)


def _adjudicate(res: SetResult) -> None:
    """yosys equivalence of each disagreeing mutant against the reference: who was right."""
    from rewards.verilog.formal import FormalChecker, FormalConfig

    checker = FormalChecker(FormalConfig(wall_s=30.0))
    for d in res.both_passed:
        r = checker.check(d["code"], d["reference"], top=d["top"], ref_top=d["ref_top"])
        d["formal"] = r.verdict + ("" if r.complete or r.verdict != "equivalent" else " (bounded)")
    for d in res.disagreements:
        r = checker.check(d["code"], d["reference"], top=d["top"], ref_top=d["ref_top"])
        d["formal"] = r.verdict + (f" ({r.reason[:100]})" if r.reason else "")
        if r.verdict == "not_equivalent":
            d["right"] = "generated" if d["generated"] != "pass" else "official"
        elif r.verdict == "equivalent" and r.complete:
            d["right"] = "generated" if d["generated"] == "pass" else "official"
        else:
            d["right"] = "undecided"


def measure(per_problem: int = 6, workers: int | None = None, adjudicate: bool = True) -> dict[str, SetResult]:
    """The numbers for both data sets (those present beside the repo)."""
    from rewards.verilog.loaders import load_problems

    return {name: measure_set(name, load_problems(path), per_problem, workers, adjudicate)
            for name, path in SETS.items() if path.is_dir()}


def _section(r: SetResult) -> list[str]:
    lines = [f"### {r.name}", "",
             f"{r.problems} problems benched; skipped: "
             + (", ".join(f"`{k}` ({v})" for k, v in r.skipped.items()) or "none"), "",
             (f"- references and equivalent rewrites passing the generated bench: "
             f"{r.equivalents - len(r.equivalents_failed)}/{r.equivalents}"),
             (f"- mutants: {r.mutants} ({r.not_compiling} rejected before simulation by both flows); "
             f"compared {r.compared}, verdicts agree on {r.agree} = **{100 * r.agreement:.1f} %**"),
             f"- mutants passed: official {r.official_passed}, generated {r.generated_passed}",
             f"- mutants the generated bench passes but the official bench fails: **{r.false_passes}**",
             f"- time per sample (compile + simulate, sandboxed, one at a time, interleaved; references,"
             f" rewrites and mutants), generated / official: "
             f"{statistics.mean(r.generated_s) * 1000:.1f} ms / {statistics.mean(r.official_s) * 1000:.1f} ms"
             f" = **{r.time_ratio:.2f}x**" if r.official_s else "- no timings"]
    for pid, kind, why in r.equivalents_failed:
        lines.append(f"- FAILED equivalent: `{pid}` {kind}: {why}")
    if r.both_passed:
        verdicts = [d.get("formal", "-") for d in r.both_passed]
        lines.append("- mutants both benches pass, by yosys: "
                     + ", ".join(f"{v} {verdicts.count(v)}" for v in sorted(set(verdicts)))
                     + "".join(f"; `{d['id']}` {d['kind']}: {d.get('formal', '-')}" for d in r.both_passed
                               if d.get("formal") == "not_equivalent"))
    rights = [d.get("right", "-") for d in r.disagreements]
    if r.disagreements:
        lines.append(f"- disagreements by yosys adjudication: generated right {rights.count('generated')}, "
                     f"official right {rights.count('official')}, undecided {rights.count('undecided')}")
        lines += ["", "| problem | mutant | official | generated | generated bench says | yosys equivalence | right |",
                  "|---|---|---|---|---|---|---|"]
        for d in r.disagreements:
            says = d.get("deeper") or d["generated_reason"][:90]
            lines.append(f"| `{d['id']}` | {d['kind']} | {d['official']} | {d['generated']} | {says} | "
                         f"{d.get('formal', '-')} | {d.get('right', '-')} |")
    return lines + [""]


def run(quick: bool = False) -> str:
    results = measure(per_problem=3 if quick else 6)
    if not results:
        raise Unmeasured(f"no data under {DATA}")
    lines = ["## Generated equivalence benches vs official testbenches", "",
             ("Each problem scored twice: with its official testbench, and with the testbench removed so "
             "`rewards.verilog.equivbench` generates one from the reference. Mutants are single edits of "
             "the reference (`bench/bench_equiv.py`); disagreements are adjudicated by yosys SAT "
             "equivalence (`rewards.verilog.formal`)."), ""]
    for r in results.values():
        lines += _section(r)
    return "\n".join(lines)


if __name__ == "__main__":
    import sys
    print(run(quick="--quick" in sys.argv))
