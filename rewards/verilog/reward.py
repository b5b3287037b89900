"""The Verilog functional reward: completion -> code -> format -> syntax -> compile -> simulate -> pass.

`VerilogReward` is a TRL reward function (``f(prompts, completions, **columns) -> list[float | None]``)
that scores a batch in parallel in sandboxes. Each sample gets a graded reward and a `VerilogScore`
record saying how far it got and why it stopped (its `as_score()` in `last_scores`, rewards/base.py);
cumulative counts are in `stats()`.

    reward = format_weight  * [a module named top_module exists]
           + compile_weight * [iverilog compiled it]
           + pass_weight    * (1 if the testbench passed, else partial_scale * (1 - mismatches/samples))

Compile and simulation run as ONE sandboxed shell call (one process tree to set up, not two), so an
`include of /etc/passwd, a $fopen("/tmp/x") or an endless loop stays in the box.
"""
from __future__ import annotations

import copy
import functools
import logging
import re
import shutil
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args

from rewards.base import Score
from rewards.verilog.cache import EquivalenceCache, cache_key
from rewards.verilog.extract import _blank_strings, extract_code, module_names, rename_module, strip_comments
from rewards.verilog.formal import SlowProblems
from rewards.verilog.harness import (
    VERILOGEVAL_FLAGS,
    build_job,
    first_compile_error,
    parse_verdict,
    problem_issue,
)
from rewards.verilog.problems import Problem
from sandboxes.limits import Backend
from sandboxes.steps import Step
from sandboxes.strict import from_dict
from sandboxes.tools import ToolNotFound, backend_programs, require_programs

log = logging.getLogger(__name__)
_R = TypeVar("_R")

STAGES = ("none", "format", "syntax", "compile", "simulate", "pass")
FormalMode = Literal["auto", "off", "confirm", "required"]
FORMAL_MODES: tuple[str, ...] = get_args(FormalMode)
NO_WAVEFORMS = {"IVERILOG_DUMPER": "none"}    # vvp: `$dumpfile`/`$dumpvars` write nothing (vvp(1))
PROGRAMS = ("iverilog", "vvp")      # run for every sample; yosys too when formal is on
NEEDED_FOR = "needed by the Verilog reward"

# Constructs a candidate design has no business using: file access (reads the bench, writes files),
# and ending the simulation early (a `$finish` after a few matching samples would fake a pass).
DEFAULT_FORBIDDEN: tuple[str, ...] = (
    "`include", "$fopen", "$readmemh", "$readmemb", "$writememh", "$writememb", "$dumpfile",
    "$finish", "$stop", "$fatal", "$system",
)


@dataclass
class VerilogRewardConfig:
    """Every knob of the Verilog reward; YAML `kwargs:` of a reward entry map onto these fields."""
    format_weight: float = 0.1
    compile_weight: float = 0.2
    pass_weight: float = 0.7
    partial_credit: bool = True        # failing sims earn pass_weight * partial_scale * (1 - mism/samples)
    partial_scale: float = 0.5         # keeps every failing sample below a passing one
    iverilog_flags: tuple[str, ...] = VERILOGEVAL_FLAGS   # `-s <bench top>` is added per problem
    vvp_flags: tuple[str, ...] = ("-n",)
    time_limit_s: float = 30.0         # compile + simulate, whole process tree killed (VerilogEval: 30 s)
    memory_mb: int = 2048
    max_output_bytes: int = 1_000_000
    max_file_mb: int = 64
    sandbox_backend: Backend = "auto"  # auto | bwrap | unshare | none
    workers: int | None = None         # parallel sandboxes per batch; None = 2 x CPU count (see default_workers)
    cache: bool = True                 # equivalence cache (whitespace/comment variants scored once)
    syntax_precheck: bool = True       # pyslang parse before spawning anything (and elaboration, to keep a
                                       # candidate that would break its group's compile out of the group)
    forbidden: tuple[str, ...] = DEFAULT_FORBIDDEN
    tag_output: bool = True            # only the testbench's own (tagged) lines count as verdicts
    formal: FormalMode = "auto"        # after a simulation pass (rewards.verilog.formal); auto: confirm on
                                       # reference-only problems (a generated bench), off on hand-written ones
    formal_time_limit_s: float = 20.0  # per yosys run of a formal check (SAT, then the structural fallback)
    formal_confirm_s: float | None = 5.0   # confirm/auto: a check's whole budget; a problem whose check used it
                                       # is not checked again this run (its passes stand, formal unknown);
                                       # None: no budget (formal_time_limit_s per run), every pass checked
    equiv_cycles: int = 500            # generated benches (no testbench): clock cycles; combinational: 2x vectors
    group_simulation: bool = True      # earl's own benches: a problem's distinct candidates share one compile +
                                       # simulation (rewards.verilog.group); same verdicts as one by one
    group_size: int = 16               # most candidates in one group simulation
    group_time_limit_s: float | None = 10.0   # a group's compile + simulate (at most time_limit_s; None: that);
                                       # on expiry every member runs alone under time_limit_s, so a hanging
                                       # candidate costs this plus its own limit, not two of its limits
    workdir_root: str | None = None    # where work dirs are made (default: the system temp dir)
    keep_workdirs: bool = False        # debugging: leave work dirs behind
    waveforms: bool = False            # let vvp write the bench's $dumpfile (debugging, with keep_workdirs); off:
                                       # IVERILOG_DUMPER=none, as no score reads a waveform (VerilogEval's
                                       # benches dump on every run)

    def __post_init__(self) -> None:
        self.iverilog_flags = tuple(self.iverilog_flags)
        self.vvp_flags = tuple(self.vvp_flags)
        self.forbidden = tuple(self.forbidden)
        if self.formal not in FORMAL_MODES:
            raise ValueError(f"formal must be one of {FORMAL_MODES}, got {self.formal!r}")
        if self.equiv_cycles < 1:
            raise ValueError(f"equiv_cycles must be >= 1, got {self.equiv_cycles}")
        if self.group_size < 2:
            raise ValueError(f"group_size must be >= 2 (group_simulation: false turns groups off), "
                             f"got {self.group_size}")
        if self.time_limit_s <= 0:
            raise ValueError(f"time_limit_s must be > 0, got {self.time_limit_s}")
        if self.group_time_limit_s is not None and self.group_time_limit_s <= 0:
            raise ValueError(f"group_time_limit_s must be > 0 (or null: time_limit_s), got {self.group_time_limit_s}")
        if self.formal_time_limit_s <= 0:
            raise ValueError(f"formal_time_limit_s must be > 0, got {self.formal_time_limit_s}")
        if self.formal_confirm_s is not None and self.formal_confirm_s <= 0:
            raise ValueError(f"formal_confirm_s must be > 0 (or null: check every pass), got {self.formal_confirm_s}")
        if any(w < 0 for w in (self.format_weight, self.compile_weight, self.pass_weight)):
            raise ValueError("reward weights must be >= 0")

    @classmethod
    def from_kwargs(cls, **kwargs: Any) -> VerilogRewardConfig:
        """From a config's `kwargs:` (sandboxes.strict: unknown names and wrong types name the option)."""
        return from_dict(cls, kwargs, "verilog_functional", noun="option")


@dataclass
class VerilogScore:
    """Why a sample got its reward."""
    problem_id: str
    reward: float | None
    passed: bool
    stage: str                          # none | format | syntax | compile | simulate | pass
    reason: str
    compile_error: str | None = None
    mismatches: int | None = None
    samples: int | None = None
    time_s: float = 0.0
    sandbox_verdict: str | None = None  # ok | exit_N | timeout | memory | cpu | signal_N | output_limit
    cache_hit: bool = False
    formal: str | None = None           # equivalent | not_equivalent | unknown (when formal != off)
    formal_detail: dict[str, Any] | None = None   # FormalResult.to_dict(): method, counterexample, ...
    error: str | None = None            # infrastructure failure (reward None: TRL skips the sample)
    first_mismatch: dict[str, Any] | None = None  # generated benches: sample, cycle, output, expected, got
    group: dict[str, Any] | None = None  # group simulation: {"size": n, "fallback": why scored alone | None}

    def to_dict(self) -> dict[str, Any]:
        """asdict's result, built field by field (asdict's recursion was a third of a 160-sample batch's
        main-thread time); nested records are deep-copied as asdict would."""
        return {f.name: copy.deepcopy(v) if isinstance(v := getattr(self, f.name), (dict, list)) else v
                for f in fields(self)}

    def as_score(self) -> Score:
        """The contract view (rewards.base): not judged (an infrastructure error) has passed None."""
        return Score(self.reward, None if self.error else self.passed, self.stage, self.reason, self.to_dict())


def reference_candidate(problem: Problem) -> str:
    """The problem's own reference, renamed so it stands where a candidate would."""
    if not problem.reference:
        raise ValueError(f"problem {problem.id} has no reference")
    if problem.ref_module != problem.top_module and problem.ref_module in module_names(problem.reference):
        return rename_module(problem.reference, problem.ref_module, problem.top_module)
    return problem.reference


class VerilogReward:
    """TRL-compatible functional reward for Verilog completions (see the module docstring)."""

    stages = STAGES          # the vocabulary of detail records' ``stage``, in order of progress; last = pass

    def __init__(self, problems: str | Path | Sequence[Problem] | None = None, **config: Any):
        self.config = VerilogRewardConfig.from_kwargs(**config)
        self.__name__ = "verilog_functional"
        self.problems: dict[str, Problem] = {}
        if problems is not None:
            self.add_problems(problems)
        self.cache: EquivalenceCache[VerilogScore] = EquivalenceCache(self.config.cache)
        self.last_scores: list[Score] | None = None
        self._stage_counts: Counter[str] = Counter()
        self._formal_counts: Counter[str] = Counter()   # verdicts of the formal checks of simulation passes
        self._slow_problems = SlowProblems(self.config.formal_confirm_s)
        self._lock = threading.Lock()
        self._sandbox = self._pool = self._formal = None
        self._column_problems: dict[tuple, Problem] = {}
        self.tools = self.preflight()

    def preflight(self) -> dict[str, str]:
        """{program: path} of what scoring runs, resolved once, before any scoring: a missing iverilog,
        vvp, yosys (formal on) or bwrap (sandbox_backend: bwrap) raises one ToolNotFound naming it,
        instead of every sample scoring "compile error: iverilog: not found"."""
        c = self.config
        formal = ("yosys",) if c.formal in ("confirm", "required") else ()
        require_programs([*PROGRAMS, *formal, *backend_programs(c.sandbox_backend)], NEEDED_FOR)
        box = self._get_sandbox()
        tools = {name: box.program(name, NEEDED_FOR) for name in PROGRAMS}
        if formal:
            self._get_formal()
        return tools

    # -- problems ------------------------------------------------------------------------------

    def add_problems(self, problems: str | Path | Sequence[Problem]) -> None:
        if isinstance(problems, (str, Path)):
            from rewards.verilog.loaders import load_problems
            problems = load_problems(problems)
        for p in problems:
            self.problems[p.id] = p

    def _problems_from_columns(self, n: int, columns: dict[str, Any]) -> list[Problem]:
        """Each sample's Problem: rebuilt from dataset columns when they carry a testbench (or a reference), else
        looked up by `id`/`problem_id` in the loaded problems."""
        names = {f.name for f in fields(Problem)}
        if "testbench" in columns or "reference" in columns:     # reference-only rows get a generated bench
            out = []
            for i in range(n):
                row = {k: columns[k][i] for k in names if k in columns and columns[k] is not None}
                row = {k: v for k, v in row.items() if v is not None}
                key = (row.get("id"), hash(row.get("testbench")), hash(row.get("reference")))
                prob = self._column_problems.get(key)
                if prob is None:
                    for k in ("files", "meta"):
                        if isinstance(row.get(k), dict):
                            row[k] = {a: b for a, b in row[k].items() if b is not None}
                    row.setdefault("spec", "")
                    if "id" not in row and "problem_id" in columns:
                        row["id"] = columns["problem_id"][i]
                    prob = Problem.from_dict(row, where=f"batch row {i}")
                    self._column_problems[key] = prob
                out.append(prob)
            return out
        ids = columns.get("id") or columns.get("problem_id")
        if ids is None:
            raise ValueError("VerilogReward needs a 'testbench' column (the Problem fields) or an "
                             "'id'/'problem_id' column naming loaded problems")
        missing = sorted({str(i) for i in ids if str(i) not in self.problems})
        if missing:
            raise KeyError(f"VerilogReward: unknown problem id(s) {missing[:5]}; "
                           f"{len(self.problems)} problems loaded")
        return [self.problems[str(i)] for i in ids]

    # -- TRL entry point -----------------------------------------------------------------------

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], **columns: Any) -> list[float | None]:
        problems = self._problems_from_columns(len(completions), columns)
        scores = self.score_batch(problems, completions)
        return [s.reward for s in scores]

    def score(self, problem: Problem, completion: Any) -> VerilogScore:
        return self.score_batch([problem], [completion])[0]

    def score_batch(self, problems: Sequence[Problem], completions: Sequence[Any],
                    progress: Callable[[int], None] | None = None) -> list[VerilogScore]:
        """Score pairs in parallel; duplicates (up to whitespace/comments) are simulated once."""
        if len(problems) != len(completions):
            raise ValueError(f"{len(problems)} problems for {len(completions)} completions")
        results: list[VerilogScore | None] = [None] * len(completions)
        todo: dict[str, tuple[Problem, str, list[int]]] = {}
        for i, (prob, comp) in enumerate(zip(problems, completions, strict=True)):
            t0 = time.perf_counter()
            code, early = self._format_check(prob, comp)
            if early is not None:
                results[i] = replace(early, time_s=time.perf_counter() - t0)
                continue
            key = cache_key(prob, code) if self.config.cache else f"#{i}"
            if key in todo:
                self.cache.record_hit()
                todo[key][2].append(i)
                continue
            hit = self.cache.get(key)
            if hit is not None:
                results[i] = replace(hit, cache_hit=True, time_s=time.perf_counter() - t0)
            else:
                todo[key] = (prob, code, [i])
        done_early = sum(r is not None for r in results)
        if progress and done_early:
            progress(done_early)
        jobs = list(todo.items())

        def settle(n: int, score: VerilogScore) -> VerilogScore:
            key, (_, _, idx) = jobs[n]
            if score.error is None:
                self.cache.put(key, score)
            if progress:
                progress(len(idx))
            return score

        scores = self._score_jobs([(prob, code) for _, (prob, code, _) in jobs], settle)
        for (_, (_, _, idx)), score in zip(jobs, scores, strict=True):
            for n, i in enumerate(idx):
                results[i] = score if n == 0 else replace(score, cache_hit=True)
        final = [r for r in results if r is not None]
        assert len(final) == len(results)
        self.last_scores = [s.as_score() for s in final]
        with self._lock:
            self._stage_counts.update(s.stage for s in final)
            self._formal_counts.update(s.formal for s in final if s.formal)
        return final

    def stats(self) -> dict[str, Any]:
        """Cumulative counts by stage, of formal verdicts on simulation passes (proven / refuted / unknown),
        and cache hits/misses/hit rate (for the trainer's logs and a run's report)."""
        with self._lock:
            counts = {f"stage/{s}": self._stage_counts.get(s, 0) for s in STAGES}
            formal = {f"formal/{k}": self._formal_counts.get(v, 0)
                      for k, v in (("proven", "equivalent"), ("refuted", "not_equivalent"), ("unknown", "unknown"))}
            total = sum(counts.values())
        return {**counts, "scored": total, "pass_rate": (counts["stage/pass"] / total) if total else 0.0,
                **({**formal, **self._slow_problems.stats()} if any(formal.values()) else {}), **self.cache.stats()}

    def close(self) -> None:
        """Stop the thread pool and the sandbox's persistent workers (a later call starts new ones)."""
        if self._pool is not None:
            self._pool.close()
            self._pool = None
        if self._sandbox is not None:
            self._sandbox.close()

    # -- stages --------------------------------------------------------------------------------

    def _format_check(self, problem: Problem, completion: Any) -> tuple[str, VerilogScore | None]:
        """Extract the code; fail at stage `none` when there is no module named top_module, or a
        forbidden construct."""
        try:
            code = extract_code(completion)
        except TypeError as exc:
            return "", self._result(problem, "none", f"unreadable completion: {exc}")
        if not code.strip():
            return code, self._result(problem, "none", "no Verilog code found in the completion")
        names = module_names(code)
        if problem.top_module not in names:
            found = f"found {', '.join(names[:5])}" if names else "no module declared"
            return code, self._result(problem, "none", f"no module named {problem.top_module} ({found})")
        bad = forbidden_constructs(code, self.config.forbidden)
        if bad:
            return code, self._result(problem, "none", f"forbidden construct(s) in the candidate: {', '.join(bad)}")
        return code, None

    def _score_code(self, problem: Problem, code: str, checked: bool = False) -> VerilogScore:
        """One candidate on its own: pre-checks (unless `checked`), compile + simulate, formal."""
        t0 = time.perf_counter()
        score = self._guarded(problem, lambda: self._compile_and_simulate(problem, code, checked))
        return replace(score, time_s=round(time.perf_counter() - t0, 4))

    def _guarded(self, problem: Problem, fn: Callable[[], _R]) -> _R | VerilogScore:
        """fn(), with an unexpected exception turned into an infrastructure error (reward None)."""
        try:
            return fn()
        except ToolNotFound:
            raise                   # yosys missing for formal: auto on a reference-only problem; stop
        except Exception as exc:
            log.exception("verilog reward: scoring %s failed", problem.id)
            return self._result(problem, "format", f"internal error: {type(exc).__name__}: {exc}",
                                error=f"{type(exc).__name__}: {exc}")

    def _precheck(self, problem: Problem, code: str) -> VerilogScore | None:
        """What is decided without a sandbox: a problem that cannot be judged, a syntax error (pyslang),
        a reference-only problem's unsupported reference or port mismatch. None: go and simulate."""
        issue = problem_issue(problem)
        if issue:
            return self._result(problem, "format", f"problem cannot be judged: {issue}", error=issue)
        if self.config.syntax_precheck:
            from rewards.verilog.syntax import syntax_error
            err = syntax_error(code)
            if err:
                return self._result(problem, "format", f"syntax error (pyslang): {err}", compile_error=err)
        if not problem.testbench:
            return self._equiv_precheck(problem, code)
        return None

    def _compile_and_simulate(self, problem: Problem, code: str, checked: bool = False) -> VerilogScore:
        early = None if checked else self._precheck(problem, code)
        if early is not None:
            return early
        job = build_job(problem, code, self.config.iverilog_flags, self.config.vvp_flags, self.tools,
                        self.config.equiv_cycles, self.config.sandbox_backend)
        res, compile_rc, compile_log = self._run_in_workdir(job.files, job.script)
        score = self._interpret(problem, res, compile_rc, compile_log, job.tag if self.config.tag_output else None)
        return self._confirm(problem, code, score)

    def _run_in_workdir(self, files: dict[str, str], script: str | tuple[Step, ...],
                        wall_s: float | None = None) -> tuple[Any, int | None, str]:
        """Run the job's steps (or sh `script`) in the sandbox over a fresh work dir holding `files`:
        (result, compile rc, compile log). `wall_s`: a shorter wall clock than the sandbox's `time_limit_s`."""
        root = self.config.workdir_root
        if root:
            Path(root).mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix="earl-vl-", dir=root))
        try:
            for name, text in files.items():
                (work / name).write_text(text, encoding="utf-8")
            box = self._get_sandbox()
            limits = None if wall_s is None else replace(box.config.limits, wall_s=wall_s)   # CPU: as per candidate
            run = box.run_script if isinstance(script, str) else box.run_steps
            res = run(script, work, limits=limits, env=None if self.config.waveforms else NO_WAVEFORMS)
            return res, _read_int(work / "compile.rc"), _read_head(work / "compile.log")
        finally:
            if not self.config.keep_workdirs:
                shutil.rmtree(work, ignore_errors=True)

    def _interpret(self, problem: Problem, res: Any, compile_rc: int | None, compile_log: str,
                   tag: str | None) -> VerilogScore:
        """The simulation's verdict on one candidate (before any formal check)."""
        verdict_name = res.verdict
        limit = self.config.time_limit_s
        if compile_rc is None:
            if res.timed_out or verdict_name in ("memory", "cpu") or verdict_name.startswith("signal"):
                return self._result(problem, "syntax", f"iverilog hit a sandbox limit ({_limit_text(res, limit)})",
                                    sandbox_verdict=verdict_name)
            return self._result(problem, "syntax", "sandbox failed before compiling",
                                sandbox_verdict=verdict_name,
                                error=f"{verdict_name}: {(res.stderr or res.stdout).strip()[:300]}")
        if compile_rc != 0:
            err = first_compile_error(compile_log)
            return self._result(problem, "syntax", f"compile error: {err}", compile_error=err,
                                sandbox_verdict=verdict_name)
        if res.timed_out or res.memory_exceeded or res.cpu_exceeded or res.output_truncated \
                or (res.signal is not None):
            return self._result(problem, "compile", f"simulation stopped: {_limit_text(res, limit)}",
                                sandbox_verdict=verdict_name)
        verdict = parse_verdict(res.stdout, tag)
        if not verdict.found:
            tail = (res.stderr or "").strip().splitlines()[-1:] or [""]
            why = verdict.reason + (f" (vvp exit {res.returncode}: {_clip(tail[0])})" if res.returncode else "")
            return self._result(problem, "compile", why, sandbox_verdict=verdict_name)
        partial = verdict.partial if not verdict.passed else None
        if not verdict.passed:
            return self._result(problem, "simulate", verdict.reason, mismatches=verdict.mismatches,
                                samples=verdict.samples, partial=partial, sandbox_verdict=verdict_name,
                                first_mismatch=verdict.first_mismatch)
        return self._result(problem, "pass", verdict.reason, mismatches=verdict.mismatches,
                            samples=verdict.samples, sandbox_verdict=verdict_name)

    def _confirm(self, problem: Problem, code: str, score: VerilogScore) -> VerilogScore:
        """A simulation pass, confirmed formally where `formal_mode` says so."""
        # FORMAL-HOOK: after a simulation pass, `config.formal` decides whether a formal equivalence
        # check (rewards.verilog.formal, yosys SAT in the sandbox) confirms it. "confirm": a proven
        # counterexample turns the pass into a fail, "unknown" keeps it; "required": only a proof passes.
        return self._formal_check(problem, code, score) if self._needs_formal(problem, score) else score

    def _needs_formal(self, problem: Problem, score: VerilogScore) -> bool:
        return score.stage == "pass" and self.formal_mode(problem) != "off"

    # -- group simulation (rewards.verilog.group) ------------------------------------------------

    def _score_jobs(self, jobs: list[tuple[Problem, str]],
                    settle: Callable[[int, VerilogScore], VerilogScore]) -> list[VerilogScore]:
        """Scores of distinct (problem, code) pairs. Candidates of a problem whose bench earl wrote share
        one group simulation; the rest, and a failed group's members, are scored one by one. On the pool, each
        task as soon as the one it follows is done: plan each problem (pre-checks, bench), run its groups and
        singles, then fall-backs and formal checks of group passes. `settle(n, score)` is called once per
        final score, in this thread."""
        out: dict[int, VerilogScore] = {}
        by_problem: dict[int, list[int]] = {}
        singles: list[tuple[int, dict[str, Any] | None]] = []
        for n, (prob, _) in enumerate(jobs):
            if self._may_group(prob):
                by_problem.setdefault(id(prob), []).append(n)
            else:
                singles.append((n, None))
        tasks = [("plan", ns) for ns in by_problem.values()] + [("unit", ("single", s)) for s in singles]
        for n, score in self._get_pool().cascade(lambda task: self._step(jobs, task), tasks):
            out[n] = settle(n, score)
        return [out[n] for n in range(len(jobs))]

    def _step(self, jobs: list[tuple[Problem, str]], task: tuple[str, Any]) -> tuple[
            list[tuple[int, VerilogScore]], list[tuple[str, Any]]]:
        """One task of a batch on the pool: (final scores, follow-up tasks). A problem's plan yields its
        groups and singles, a group yields its members' fall-backs and formal checks."""
        kind, what = task
        if kind == "plan":
            settled, groups, alone = self._plan_problem(jobs, what)
            units: list[tuple[str, Any]] = [("unit", ("group", g)) for g in groups]
            return list(settled.items()), units + [("unit", ("single", a)) for a in alone]
        if kind == "unit":
            result = self._run_unit(jobs, what)
            return ([(n, it) for n, it in result.items() if isinstance(it, VerilogScore)],
                    [("later", (it[0], n, it[1])) for n, it in result.items() if not isinstance(it, VerilogScore)])
        return [(what[1], self._run_later(jobs, what))], []

    def _may_group(self, problem: Problem) -> bool:
        """Can this problem's candidates share a simulation? Where earl wrote the bench (a group-capable
        bench, or none: reference-only) or could mark an official VerilogEval-style one
        (rewards.verilog.groupbench; not while waveforms are asked for), with tagged verdicts and no extra
        files."""
        from rewards.verilog.group import dut_prefix
        c = self.config
        if not (c.group_simulation and c.tag_output and problem.reference and not problem.files):
            return False
        if problem.testbench is None:
            return True
        if problem.harness != "verilogeval":
            return False
        return dut_prefix(problem.testbench) is not None or (not c.waveforms and _own_group_bench(problem) is not None)

    def _plan_problem(self, jobs: list[tuple[Problem, str]], ns: list[int]) -> tuple[
            dict[int, VerilogScore], list[list[int]], list[tuple[int, dict[str, Any] | None]]]:
        """One problem's candidates: scores settled by the pre-checks, groups, and those to run alone."""
        from rewards.verilog.group import bench_names, directive_key, solo_reason
        settled: dict[int, VerilogScore] = {}
        todo: list[int] = []
        for n in ns:
            t0 = time.perf_counter()
            prob, code = jobs[n]
            early = self._guarded(prob, lambda p=prob, c=code: self._precheck(p, c))
            if early is None:
                todo.append(n)
            else:
                settled[n] = replace(early, time_s=round(time.perf_counter() - t0, 4))
        if len(todo) < 2:
            return settled, [], [(n, None) for n in todo]
        try:
            bench = self._group_bench(jobs[todo[0]][0])
        except Exception as exc:     # noqa: BLE001 - then one by one, which reports the trouble per candidate
            return settled, [], [(n, {"size": 1, "fallback": f"no group bench: {exc}"}) for n in todo]
        reserved = bench_names(bench.testbench or "", bench.reference or "")
        keyed: dict[tuple[str, ...], list[int]] = {}
        alone: list[tuple[int, dict[str, Any] | None]] = []
        for n in todo:
            code = jobs[n][1]
            why = solo_reason(code, reserved, bench.top_module) or self._would_break_group(code, bench.top_module)
            if why:
                alone.append((n, {"size": 1, "fallback": f"scored alone: {why}"}))
            else:
                keyed.setdefault(directive_key(code), []).append(n)
        groups: list[list[int]] = []
        for members in keyed.values():
            parts = -(-len(members) // self.config.group_size)      # as few groups as allowed, even sizes
            chunks = [members[i * len(members) // parts:(i + 1) * len(members) // parts] for i in range(parts)]
            groups += [c for c in chunks if len(c) > 1]
            alone += [(c[0], None) for c in chunks if len(c) == 1]
        return settled, groups, alone

    def _would_break_group(self, code: str, top: str) -> str | None:
        """Why the candidate's own compile would likely fail (slang elaborating it alone), so that it runs
        alone instead of costing its group a failed compile and a second one; None: let it join."""
        if not self.config.syntax_precheck:
            return None
        try:
            from rewards.verilog.syntax import elaboration_error
            error = elaboration_error(code, top)
        except Exception as exc:  # noqa: BLE001 - a guess only: alone is always safe
            error = f"slang failed: {type(exc).__name__}: {exc}"
        return None if error is None else f"its compile would likely fail ({error})"

    def _group_bench(self, problem: Problem) -> Problem:
        """The problem as its group bench sees it (reference-only: with the generated bench; an official
        bench: marked for groups)."""
        if problem.testbench:
            marked = _own_group_bench(problem)
            if marked is None:
                raise ValueError("the bench cannot be shared by a group")
            return problem if marked == problem.testbench else replace(problem, testbench=marked)
        from rewards.verilog.equivbench import with_equiv_bench
        return with_equiv_bench(problem, self.config.equiv_cycles, self.config.sandbox_backend)

    def _run_unit(self, jobs: list[tuple[Problem, str]], unit: tuple[str, Any]) -> dict[int, Any]:
        """A single: its score. A group: per member a score, or ("solo", note) / ("formal", score) for later."""
        kind, what = unit
        if kind == "single":
            n, note = what
            prob, code = jobs[n]
            score = self._score_code(prob, code, checked=self._may_group(prob))
            return {n: replace(score, group=note) if note else score}
        prob = jobs[what[0]][0]
        try:
            return self._run_group(prob, [(n, jobs[n][1]) for n in what])
        except ToolNotFound:
            raise
        except Exception as exc:
            log.exception("verilog reward: group simulation of %s failed", prob.id)
            why = f"group simulation failed: {type(exc).__name__}: {exc}"
            return {n: ("solo", {"size": len(what), "fallback": why}) for n in what}

    def _run_group(self, problem: Problem, members: list[tuple[int, str]]) -> dict[int, Any]:
        """Simulate `members` together; a compile error named in one candidate's code sends it alone and the
        rest try again (at most 3 compiles); any other failure sends them all alone."""
        from rewards.verilog.group import build_group_job, culprits, dut_prefix
        out: dict[int, Any] = {}
        bench, c = self._group_bench(problem), self.config
        size, limit = len(members), self.group_time_limit_s()
        for _attempt in range(3):
            if len(members) < 2:
                break
            t0 = time.perf_counter()
            job = build_group_job(bench, [code for _, code in members], c.iverilog_flags, c.vvp_flags, self.tools)
            res, compile_rc, compile_log = self._run_in_workdir(job.files, job.script, wall_s=limit)
            if compile_rc is not None and compile_rc != 0:
                bad = culprits(compile_log, len(members), dut_prefix(bench.testbench) or "")
                if bad is None or len(bad) == len(members):
                    break
                why = f"the group's compile failed on this candidate: {first_compile_error(compile_log)}"
                out.update((members[k][0], ("solo", {"size": size, "fallback": why})) for k in sorted(bad))
                members = [m for k, m in enumerate(members) if k not in bad]
                continue
            why = _group_failure(res, compile_rc, job.tags, limit)
            if why:
                return {**out, **{n: ("solo", {"size": len(members), "fallback": why}) for n, _ in members}}
            share = round((time.perf_counter() - t0) / len(members), 4)
            for (n, _code), tag in zip(members, job.tags, strict=True):
                score = replace(self._interpret(problem, res, compile_rc, compile_log, tag), time_s=share,
                                group={"size": len(members), "fallback": None})
                out[n] = ("formal", score) if self._needs_formal(problem, score) else score
            return out
        why = "the group's compile failed" + ("" if len(members) > 1 else " on the other candidates")
        return {**out, **{n: ("solo", {"size": size, "fallback": why}) for n, _ in members}}

    def group_time_limit_s(self) -> float:
        """A group simulation's wall clock: group_time_limit_s, never more than one candidate's own."""
        c = self.config
        return c.time_limit_s if c.group_time_limit_s is None else min(c.group_time_limit_s, c.time_limit_s)

    def _run_later(self, jobs: list[tuple[Problem, str]], item: tuple[str, int, Any]) -> VerilogScore:
        """A group member's second round: alone after its group failed, or the formal check of its pass."""
        kind, n, what = item
        prob, code = jobs[n]
        if kind == "solo":
            return replace(self._score_code(prob, code, checked=True), group=what)
        t0 = time.perf_counter()
        score = self._guarded(prob, lambda: self._confirm(prob, code, what))
        return replace(score, time_s=round(what.time_s + time.perf_counter() - t0, 4))

    def formal_mode(self, problem: Problem) -> str:
        """`config.formal` for this problem: auto is confirm where earl wrote the bench (reference-only)."""
        mode = self.config.formal
        if mode != "auto":
            return mode
        return "confirm" if not problem.testbench and problem.reference else "off"

    def _equiv_precheck(self, problem: Problem, code: str) -> VerilogScore | None:
        """Reference-only problem: an unsupported reference is an error (reward None, never a pass);
        a candidate whose ports differ from the reference's fails before simulating, naming the port."""
        from rewards.verilog.equivbench import (
            UnsupportedReference,
            equivalence_bench,
            port_mismatch,
            uses_bench_names,
        )
        if uses_bench_names(code):
            return self._result(problem, "none", "forbidden construct(s) in the candidate: __eb_ (names reserved "
                                "for the generated bench)")
        try:
            bench = equivalence_bench(problem, self.config.equiv_cycles, self.config.sandbox_backend)
        except UnsupportedReference as exc:
            return self._result(problem, "format", f"unsupported reference: {exc}", error=f"unsupported: {exc}")
        why = port_mismatch(bench.interface, code, problem.top_module)
        if why:
            return self._result(problem, "syntax", f"port mismatch: {why}", compile_error=why)
        return None

    def _formal_check(self, problem: Problem, code: str, score: VerilogScore) -> VerilogScore:
        if not problem.reference:
            return replace(score, formal="unknown", reason=score.reason + "; formal: no reference")
        from rewards.verilog.formal import EQUIVALENT, NOT_EQUIVALENT, problem_key  # lazy
        checker, mode = self._get_formal(), self.formal_mode(problem)
        if mode == "confirm":
            result = self._slow_problems.check(problem_key(problem), lambda: checker.check_problem(problem, code))
        else:
            result = checker.check_problem(problem, code)
        why = f"formal: {result.verdict}" + (f" ({result.reason})" if result.reason else "")
        detail = result.to_dict()
        required = mode == "required"
        demote = result.verdict == NOT_EQUIVALENT or (required and result.verdict != EQUIVALENT)
        if demote:
            if result.verdict == NOT_EQUIVALENT:     # the bench passed a design formal refutes
                detail["false_positive"] = True
                log.info("formal: testbench false positive on %s: %s", problem.id, result.reason)
            return self._result(problem, "simulate", f"{score.reason}, but {why}", mismatches=score.mismatches,
                                samples=score.samples, sandbox_verdict=score.sandbox_verdict,
                                formal=result.verdict, formal_detail=detail)
        return replace(score, formal=result.verdict, formal_detail=detail, reason=f"{score.reason}; {why}")

    # -- helpers -------------------------------------------------------------------------------

    def _result(self, problem: Problem, stage: str, reason: str, *, partial: float | None = None,
                error: str | None = None, **extra: Any) -> VerilogScore:
        passed = stage == "pass"
        return VerilogScore(problem_id=problem.id, reward=None if error else self._reward(stage, partial),
                            passed=passed, stage=stage, reason=reason, error=error, **extra)

    def _reward(self, stage: str, partial: float | None) -> float:
        c, rank = self.config, STAGES.index(stage)
        r = c.format_weight * (rank >= 1) + c.compile_weight * (rank >= 3)
        if stage == "pass":
            r += c.pass_weight
        elif partial is not None and c.partial_credit:
            r += c.pass_weight * c.partial_scale * partial
        return round(r, 6)

    def _get_sandbox(self) -> Any:
        with self._lock:
            if self._sandbox is None:
                from sandboxes.executor import Sandbox
                from sandboxes.limits import SandboxConfig, SandboxLimits
                c = self.config
                limits = SandboxLimits(wall_s=c.time_limit_s, cpu_s=max(1, int(c.time_limit_s + 0.999)),
                                       memory_mb=c.memory_mb, max_file_mb=c.max_file_mb,
                                       max_output_bytes=c.max_output_bytes)
                self._sandbox = Sandbox(SandboxConfig(backend=c.sandbox_backend, limits=limits))
            return self._sandbox

    def _get_formal(self) -> Any:
        from rewards.verilog.formal import FormalChecker, FormalConfig  # lazy: most runs have formal off
        with self._lock:
            if self._formal is None:
                c = self.config
                confirming = c.formal in ("auto", "confirm")   # a second judge: kept cheap (formal_confirm_s)
                self._formal = FormalChecker(FormalConfig(
                    wall_s=c.formal_time_limit_s, budget_s=c.formal_confirm_s if confirming else None,
                    sandbox_backend=c.sandbox_backend))
            return self._formal

    def _get_pool(self) -> Any:
        with self._lock:
            if self._pool is None:
                from sandboxes.pool import SandboxPool
                self._pool = SandboxPool(self.config.workers or default_workers())
            return self._pool


def _own_group_bench(problem: Problem) -> str | None:
    """A problem's own bench in the group protocol (itself if earl wrote it), None if it cannot be."""
    return _group_capable(problem.testbench or "", problem.top_module, problem.ref_module)


@functools.lru_cache(maxsize=1024)
def _group_capable(testbench: str, top: str, ref_module: str) -> str | None:
    from rewards.verilog.groupbench import group_capable
    return group_capable(testbench, top, ref_module)


def default_workers() -> int:
    """Two sandboxes per usable core: a sandboxed job spends most of its setup (namespaces, mounts)
    waiting, not computing, so twice the cores keeps them busy (bench/bench_verilog.py measures it)."""
    from sandboxes.pool import usable_cpus
    return 2 * usable_cpus()


def forbidden_constructs(code: str, forbidden: Sequence[str]) -> list[str]:
    """Which of `forbidden` (system tasks like `$fopen`, directives like `` `include``) the code uses,
    outside comments and strings."""
    clean = _blank_strings(strip_comments(code))
    return [f for f in forbidden if _construct(f).search(clean)]


@functools.lru_cache(maxsize=256)
def _construct(name: str) -> re.Pattern[str]:
    """A forbidden construct as a whole token (`$fopen`, not `$fopenr`)."""
    return re.compile(re.escape(name) + r"(?![\w$])")


def _group_failure(res: Any, compile_rc: int | None, tags: Sequence[str], limit: float) -> str | None:
    """Why a group simulation's output cannot be read candidate by candidate (None: it can)."""
    if compile_rc is None:
        if res.timed_out:                                  # the group's limit ran out while it compiled
            return f"the group's compile stopped: {_limit_text(res, limit)}"
        return f"the group's sandbox failed before compiling ({res.verdict})"
    if not res.ok:
        return f"the group's simulation stopped: {_limit_text(res, limit)}"
    missing = [k for k, tag in enumerate(tags) if not parse_verdict(res.stdout, tag).found]
    if missing:
        return f"the group's simulation printed no verdict for candidate(s) {missing[:5]}"
    return None


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _read_head(path: Path, limit: int = 20_000) -> str:
    try:
        with path.open("rb") as fh:
            return fh.read(limit).decode("utf-8", "replace")
    except OSError:
        return ""


def _limit_text(res: Any, limit: float) -> str:
    if res.timed_out:
        return f"time limit {limit:g} s exceeded"
    if res.memory_exceeded:
        return "memory limit exceeded"
    if res.cpu_exceeded:
        return "CPU time limit exceeded"
    if res.output_truncated:
        return "output limit exceeded (flood of $display?)"
    if res.signal is not None:
        return f"killed by signal {res.signal}" + (" (file size limit)" if res.signal == 25 else "")
    return res.verdict


def _clip(text: str, n: int = 200) -> str:
    return text if len(text) <= n else text[: n - 3] + "..."
