"""Verilog reward vs the plain VerilogEval harness (iverilog then vvp as subprocesses, no sandbox).

    python -m bench.bench_verilog [--quick]

Both sides use the same flags, the same 30 s limit and the same parallelism (a thread pool of
os.cpu_count()). (a) the 20 sample references; (b) GRPO-like batches: 8 candidates per problem with
repeats (whitespace/comment variants), broken code and one hostile candidate, on the problems as shipped
(their own benches, grouped where rewards.verilog.groupbench can mark them) and
reference-only (bench removed: the reward generates one and simulates a problem's distinct candidates in
one group; the plain harness gets the same generated bench, one run per candidate). Also: sandbox overhead
per call, pyslang pre-check vs an iverilog compile, and the cache hit rate.
"""
from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench import Unmeasured

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "verilog-eval-v2-sample"
FLAGS = ["-Wall", "-Winfloop", "-Wno-timescale", "-g2012"]


def _baseline_one(item) -> bool:
    """VerilogEval's way: extract the code, iverilog, then vvp with a 30 s limit; pass = 'Mismatches: 0 in'."""
    from rewards.verilog.extract import extract_code
    problem, completion = item
    code = extract_code(completion)
    with tempfile.TemporaryDirectory(prefix="bench-ve-") as d:
        for name, text in (("sample.sv", code), ("test.sv", problem.testbench), ("ref.sv", problem.reference)):
            Path(d, name).write_text(text)
        top = (problem.meta or {}).get("tb_top", "tb")
        c = subprocess.run(["iverilog", *FLAGS, "-s", top, "-o", "sim", "sample.sv", "test.sv", "ref.sv"], cwd=d,
                           capture_output=True, text=True, timeout=30, check=False)
        if c.returncode != 0:
            return False
        try:
            r = subprocess.run(["vvp", "-n", "sim"], cwd=d, capture_output=True, text=True, timeout=30,
                               check=False)
        except subprocess.TimeoutExpired:
            return False
        return "Mismatches: 0 in" in r.stdout


def _baseline(items, workers: int | None = None) -> tuple[float, int]:
    t = time.perf_counter()
    with ThreadPoolExecutor(workers or os.cpu_count()) as ex:
        passed = sum(ex.map(_baseline_one, items))
    wall = time.perf_counter() - t
    Path(tempfile.gettempdir(), f"{HOSTILE_TAG}_rel").unlink(missing_ok=True)
    return wall, passed


_SANDBOXES: dict[str, object] = {}      # one long-lived Sandbox per reward config, as in a training run


def _ours(items, supervisor: str = "auto", **config) -> tuple[float, int, dict]:
    """A fresh reward (empty cache) over the long-lived sandbox of its config: in training the reward and
    its sandbox live for the whole run, so persistent workers start once (warm-up), not per batch.
    `supervisor`: what its persistent workers run (SandboxConfig.worker_supervisor)."""
    from dataclasses import replace

    from rewards.verilog.reward import VerilogReward
    from sandboxes.executor import Sandbox
    config.setdefault("workers", os.cpu_count())
    r = VerilogReward(**config)
    key = repr((supervisor, sorted(config.items())))
    if key not in _SANDBOXES:
        box = r._get_sandbox()
        _SANDBOXES[key] = box if supervisor == "auto" else Sandbox(replace(box.config, worker_supervisor=supervisor))
    r._sandbox = _SANDBOXES[key]
    try:
        t = time.perf_counter()
        scores = r.score_batch([p for p, _ in items], [c for _, c in items])
        wall = time.perf_counter() - t
    finally:
        r._sandbox = None                    # keep the shared sandbox's workers for the next rep
        r.close()
    return wall, sum(s.passed for s in scores), r.stats()


HOSTILE_TAG = "earl_bench_hostile"      # the plain harness lets it write /tmp/<tag>_rel: removed after each run


def _grpo_batch(problems) -> list:
    """8 candidates per problem: the reference, two rewrites, a mutant twice, inverted outputs, broken
    syntax, an empty body; `Prob001_zero`'s empty body is a hostile candidate instead (it writes outside its
    work dir)."""
    from tests.helpers.verilog_mutants import (
        as_top,
        break_syntax,
        empty_body,
        flip_operator,
        hostile_candidates,
        invert_outputs,
    )
    items = []
    for p in problems:
        good = as_top(p.reference)
        flip = flip_operator(p.id, p.reference)
        codes = (good, "// answer\n" + good, good.replace("\n", "\n  "), flip, flip + "\n", invert_outputs(p.reference),
                 break_syntax(p.reference), empty_body(p.reference))
        cands = [f"```verilog\n{c}\n```" for c in codes]
        if p.id == "Prob001_zero":
            cands[-1] = hostile_candidates(HOSTILE_TAG)["fopen_relative"]
        items += [(p, c) for c in cands]
    return items


def _reference_only(items) -> tuple[list, list]:
    """The batch on reference-only problems (ours) and, for the plain harness, on the same problems with the
    bench earl generates written out as their testbench (what a per-candidate harness would have to run)."""
    from dataclasses import replace

    from rewards.verilog.equivbench import with_equiv_bench
    bare = {p.id: replace(p, testbench=None) for p, _ in items}
    benched = {pid: with_equiv_bench(p) for pid, p in bare.items()}
    return [(bare[p.id], c) for p, c in items], [(benched[p.id], c) for p, c in items]


def _with_hang(items: list, at: int = 5) -> list:
    """The batch with its `at`-th candidate (the first problem's inverted-outputs one) replaced by one that
    hangs the simulation: what a policy's combinational loop does, costing every harness its time limit."""
    from tests.helpers.verilog_mutants import HANG, as_top, before_end
    problem = items[at][0]
    return [*items[:at], (problem, f"```verilog\n{before_end(as_top(problem.reference), HANG)}\n```"),
            *items[at + 1:]]


def _medians(runs: dict, reps: int) -> dict[str, tuple[float, int, dict | None]]:
    """Median wall time per named runner after one untimed warm-up each, interleaved so load drift hits
    all alike; also the last run's passed count and stats."""
    times: dict[str, list[float]] = {k: [] for k in runs}
    last: dict[str, tuple] = {}
    for fn in runs.values():
        fn()                         # warm-up, untimed: page cache, pyslang, the sandboxes' workers
    for _ in range(reps):
        for name, fn in runs.items():
            out = fn()
            times[name].append(out[0])
            last[name] = out
    return {k: (statistics.median(v), last[k][1], last[k][2] if len(last[k]) > 2 else None)
            for k, v in times.items()}


def _per_call_ms(fn, n: int) -> float:
    fn()
    t = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t) / n * 1000


def run(quick: bool = False) -> str:
    from rewards.verilog.loaders import load_problems
    from rewards.verilog.reward import reference_candidate
    from rewards.verilog.syntax import syntax_error
    from sandboxes.executor import Sandbox

    if not DATA.is_dir():
        raise Unmeasured(f"{DATA} not found")
    problems = load_problems(DATA)
    reps = 3 if quick else 5
    n_cpu = os.cpu_count() or 1
    refs = [(p, reference_candidate(p)) for p in problems]
    a = _medians({"base": lambda: _baseline(refs), "base2": lambda: _baseline(refs, 2 * n_cpu),
                  "ours": lambda: _ours(refs), "ours2": lambda: _ours(refs, workers=2 * n_cpu),
                  "wave": lambda: _ours(refs, waveforms=True), "py": lambda: _ours(refs, supervisor="python")},
                 3 * reps)                           # a rep is ~0.25 s: more of them steady the median
    batch = _grpo_batch(problems)
    b = _medians({"base": lambda: _baseline(batch), "base2": lambda: _baseline(batch, 2 * n_cpu),
                  "ours": lambda: _ours(batch), "ours2": lambda: _ours(batch, workers=2 * n_cpu),
                  "off": lambda: _ours(batch, cache=False, syntax_precheck=False),
                  "solo": lambda: _ours(batch, group_simulation=False)}, max(1, reps - 2))
    stats_b = b["ours"][2]
    ours_ro, base_ro = _reference_only(batch)
    c = _medians({"base": lambda: _baseline(base_ro), "ours": lambda: _ours(ours_ro, formal="off"),
                  "ours2": lambda: _ours(ours_ro, formal="off", workers=2 * n_cpu),
                  "alone": lambda: _ours(ours_ro, formal="off", group_simulation=False),
                  "confirm": lambda: _ours(ours_ro)}, max(1, reps - 2))

    # one run each, no warm-up: the 30 s limits set the time (a worker's start-up is ~40 ms against it)
    hang = {} if quick else {k: (*fn()[:2], None) for k, fn in {
        "base": lambda: _baseline(_with_hang(base_ro)),
        "ours": lambda: _ours(_with_hang(ours_ro), formal="off"),
        "before": lambda: _ours(_with_hang(ours_ro), formal="off", group_time_limit_s=None)}.items()}

    from rewards.verilog.groupbench import group_capable
    marked = sum(group_capable(p.testbench or "", p.top_module, p.ref_module) is not None for p in problems)
    box = Sandbox()
    with tempfile.TemporaryDirectory(prefix="bench-sb-") as d:
        os.chmod(d, 0o755)
        n = 20 if quick else 60
        plain_ms = _per_call_ms(lambda: subprocess.run(["/bin/true"], cwd=d, check=False), n)
        box_ms = _per_call_ms(lambda: box.run(["/bin/true"], d), n)
        broken = refs[-1][1].replace(");", ")", 1)
        Path(d, "b.sv").write_text(broken)
        pyslang_ms = _per_call_ms(lambda: syntax_error(broken), n)
        iverilog_ms = _per_call_ms(lambda: subprocess.run(["iverilog", "-g2012", "-o", "b.vvp", "b.sv"], cwd=d,
                                                          capture_output=True, check=False), n)
    def row(label: str, res: dict, ours: str, base: str, total: int) -> tuple:
        (tb, pb, _), (to, po, _) = res[base], res[ours]
        return (label, f"{tb:.3f}", f"{to:.3f}", f"{to / tb:.2f}x", f"{pb}/{po} of {total}")

    w1, w2 = f"{n_cpu}", f"{2 * n_cpu}"
    rows = [
        row(f"(a) 20 references, {w1} workers both", a, "ours", "base", len(refs)),
        row(f"(a) 20 references, ours {w2} workers (default) vs baseline {w1}", a, "ours2", "base", len(refs)),
        row(f"(a) 20 references, {w2} workers both", a, "ours2", "base2", len(refs)),
        row(f"(a) 20 references, persistent workers on the Python supervisor (no C compiler), {w1} workers both",
            a, "py", "base", len(refs)),
        row(f"(a) 20 references, ours writing the benches' VCD as the baseline does (`waveforms: true`), {w1} "
            "workers both", a, "wave", "base", len(refs)),
        row(f"(b) GRPO batch, {w1} workers both", b, "ours", "base", len(batch)),
        row(f"(b) GRPO batch, ours {w2} workers (default) vs baseline {w1}", b, "ours2", "base", len(batch)),
        row(f"(b) GRPO batch, {w2} workers both", b, "ours2", "base2", len(batch)),
        row(f"(b) GRPO batch, official benches one by one (group simulation off), {w1} workers both", b, "solo",
            "base", len(batch)),
        row(f"(b) GRPO batch, cache and pre-check off, {w1} workers both", b, "off", "base", len(batch)),
        row(f"(b) GRPO batch, reference-only (bench generated, group simulation), {w1} workers both", c, "ours",
            "base", len(batch)),
        row(f"(b) GRPO batch, reference-only, ours {w2} workers (default) vs baseline {w1}", c, "ours2", "base",
            len(batch)),
        row(f"(b) GRPO batch, reference-only, group simulation off, {w1} workers both", c, "alone", "base",
            len(batch)),
        row(f"(b) GRPO batch, reference-only, + formal confirmation of passes (`auto`, the default), {w1} "
            "workers both", c, "confirm", "base", len(batch)),
    ]
    if hang:
        rows += [
            row(f"(b) reference-only, one candidate hangs the simulation, {w1} workers both", hang, "ours", "base",
                len(batch)),
            row("... the same without a group limit (a group under `time_limit_s`: the hang costs two limits)", hang,
                "before", "base", len(batch)),
        ]
    lines = [
        "## Verilog reward (sandboxed) vs plain iverilog/vvp",
        "",
        f"Sandbox backend: `{box.backend}`; {os.cpu_count()} workers on both sides.",
        "",
        "| workload | baseline s | ours s | ratio | passed (baseline/ours) |",
        "|---|---|---|---|---|",
        *[f"| {' | '.join(r)} |" for r in rows],
        "",
        "| per call | baseline ms | ours ms | ratio |",
        "|---|---|---|---|",
        (f"| spawn `/bin/true` vs `Sandbox.run(['/bin/true'])` | {plain_ms:.1f} | {box_ms:.1f} | "
         f"{box_ms / plain_ms:.1f}x |"),
        (f"| reject broken code: iverilog compile vs pyslang pre-check | {iverilog_ms:.2f} | {pyslang_ms:.2f} | "
         f"{pyslang_ms / iverilog_ms:.3f}x |"),
        "",
        (f"Cache on (b): {stats_b['cache_hits']} hits / {stats_b['cache_misses']} misses, hit rate "
         f"{stats_b['cache_hit_rate']:.0%} (3 of 8 candidates per problem are whitespace/comment variants of one "
         f"design, 2 are one mutant twice). (b) on the official benches: {marked} of {len(problems)} benches "
         f"marked for group simulation (`rewards.verilog.groupbench`: a stimulus that reads the candidate's "
         f"`tb_match` only to pick hint lines shares its simulation with the port tied to 1; one that reads it "
         f"further runs its candidates one by one). One candidate of `Prob001_zero` is hostile: it "
         f"writes a file outside its work dir and is otherwise right, so the plain harness runs and passes it, "
         f"ours rejects it (`$fopen` is a forbidden construct by default): one pass fewer."),
        "",
        (f"How measured: median wall time of {3 * reps} interleaved runs for (a), {max(1, reps - 2)} for (b), each "
         f"`score_batch` on a fresh reward (empty cache) over one long-lived sandbox per configuration (persistent "
         f"workers started in an untimed warm-up run, as once per training run); baseline = VerilogEval's harness "
         f"(same flags, 30 s "
         f"limit, thread pool of the stated size); per-call numbers are means over {n} calls. The machine's "
         f"cores are shared with other work, so expect +-10 % between runs. Reference-only rows: the baseline "
         f"runs earl's generated bench per candidate; ours simulate with formal off (the plain harness proves "
         f"nothing) except the last row, which adds the default confirmation of passes (a fresh reward: each "
         f"problem's first check, up to `formal_confirm_s` = 5 s; `Prob153_gshare` spends it, docs/formal.md). "
         f"Ours skip the VCD the VerilogEval benches ask for (`waveforms: false`, the default; the baseline "
         f"writes it, as VerilogEval's harness does) except the `waveforms: true` row. "
         f"Hang rows: one run each (the 30 s limits set the time); ours has `group_time_limit_s` = 10 s, so the "
         f"hang's group gives up after 10 s and its members run alone."),
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    print(run(quick="--quick" in sys.argv))
