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

import logging
import os
import re
import shutil
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, Literal, get_args

from rewards.base import Score
from rewards.verilog.cache import EquivalenceCache, cache_key
from rewards.verilog.extract import _blank_strings, extract_code, module_names, rename_module, strip_comments
from rewards.verilog.harness import (
    VERILOGEVAL_FLAGS,
    build_job,
    first_compile_error,
    parse_verdict,
    problem_issue,
)
from rewards.verilog.problems import Problem
from sandboxes.tools import ToolNotFound, backend_programs, require_programs

log = logging.getLogger(__name__)

STAGES = ("none", "format", "syntax", "compile", "simulate", "pass")
FormalMode = Literal["auto", "off", "confirm", "required"]
FORMAL_MODES: tuple[str, ...] = get_args(FormalMode)
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
    sandbox_backend: str = "auto"      # auto | bwrap | unshare | none
    workers: int | None = None         # parallel sandboxes per batch; None = 2 x CPU count (see default_workers)
    cache: bool = True                 # equivalence cache (whitespace/comment variants scored once)
    syntax_precheck: bool = True       # pyslang parse before spawning anything
    forbidden: tuple[str, ...] = DEFAULT_FORBIDDEN
    tag_output: bool = True            # only the testbench's own (tagged) lines count as verdicts
    formal: FormalMode = "auto"        # after a simulation pass (rewards.verilog.formal); auto: confirm on
                                       # reference-only problems (a generated bench), off on hand-written ones
    equiv_cycles: int = 500            # generated benches (no testbench): clock cycles; combinational: 2x vectors
    workdir_root: str | None = None    # where work dirs are made (default: the system temp dir)
    keep_workdirs: bool = False        # debugging: leave work dirs behind

    def __post_init__(self) -> None:
        self.iverilog_flags = tuple(self.iverilog_flags)
        self.vvp_flags = tuple(self.vvp_flags)
        self.forbidden = tuple(self.forbidden)
        if self.formal not in FORMAL_MODES:
            raise ValueError(f"formal must be one of {FORMAL_MODES}, got {self.formal!r}")
        if self.equiv_cycles < 1:
            raise ValueError(f"equiv_cycles must be >= 1, got {self.equiv_cycles}")
        if self.time_limit_s <= 0:
            raise ValueError(f"time_limit_s must be > 0, got {self.time_limit_s}")
        if any(w < 0 for w in (self.format_weight, self.compile_weight, self.pass_weight)):
            raise ValueError("reward weights must be >= 0")

    @classmethod
    def from_kwargs(cls, **kwargs: Any) -> VerilogRewardConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(kwargs) - known)
        if unknown:
            raise TypeError(f"VerilogReward: unknown option(s) {unknown}; known: {sorted(known)}")
        return cls(**kwargs)


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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

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
        for i, (prob, comp) in enumerate(zip(problems, completions)):
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

        def work(item: tuple[str, tuple[Problem, str, list[int]]]) -> VerilogScore:
            key, (prob, code, idx) = item
            score = self._score_code(prob, code)
            if score.error is None:
                self.cache.put(key, score)
            if progress:
                progress(len(idx))
            return score

        for (key, (_, _, idx)), score in zip(jobs, self._map(work, jobs)):
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
                **(formal if any(formal.values()) else {}), **self.cache.stats()}

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

    def _score_code(self, problem: Problem, code: str) -> VerilogScore:
        t0 = time.perf_counter()
        try:
            score = self._compile_and_simulate(problem, code)
        except ToolNotFound:
            raise                   # yosys missing for formal: auto on a reference-only problem; stop
        except Exception as exc:
            log.exception("verilog reward: scoring %s failed", problem.id)
            score = self._result(problem, "format", f"internal error: {type(exc).__name__}: {exc}",
                                 error=f"{type(exc).__name__}: {exc}")
        return replace(score, time_s=round(time.perf_counter() - t0, 4))

    def _compile_and_simulate(self, problem: Problem, code: str) -> VerilogScore:
        issue = problem_issue(problem)
        if issue:
            return self._result(problem, "format", f"problem cannot be judged: {issue}", error=issue)
        if self.config.syntax_precheck:
            from rewards.verilog.syntax import syntax_error
            err = syntax_error(code)
            if err:
                return self._result(problem, "format", f"syntax error (pyslang): {err}", compile_error=err)
        if not problem.testbench:
            early = self._equiv_precheck(problem, code)
            if early is not None:
                return early
        job = build_job(problem, code, self.config.iverilog_flags, self.config.vvp_flags, self.tools,
                        self.config.equiv_cycles, self.config.sandbox_backend)
        root = self.config.workdir_root
        if root:
            Path(root).mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix="earl-vl-", dir=root))
        try:
            for name, text in job.files.items():
                (work / name).write_text(text, encoding="utf-8")
            res = self._get_sandbox().run(job.argv, work)
            compile_rc = _read_int(work / "compile.rc")
            compile_log = _read_head(work / "compile.log")
        finally:
            if not self.config.keep_workdirs:
                shutil.rmtree(work, ignore_errors=True)
        return self._interpret(problem, code, res, compile_rc, compile_log, job.tag if self.config.tag_output else None)

    def _interpret(self, problem: Problem, code: str, res: Any, compile_rc: int | None, compile_log: str,
                   tag: str | None) -> VerilogScore:
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
        score = self._result(problem, "pass", verdict.reason, mismatches=verdict.mismatches,
                             samples=verdict.samples, sandbox_verdict=verdict_name)
        # FORMAL-HOOK: after a simulation pass, `config.formal` decides whether a formal equivalence
        # check (rewards.verilog.formal, yosys SAT in the sandbox) confirms it. "confirm": a proven
        # counterexample turns the pass into a fail, "unknown" keeps it; "required": only a proof passes.
        if self.formal_mode(problem) != "off":
            score = self._formal_check(problem, code, score)
        return score

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
        from rewards.verilog.formal import EQUIVALENT, NOT_EQUIVALENT  # lazy
        result = self._get_formal().check_problem(problem, code)
        why = f"formal: {result.verdict}" + (f" ({result.reason})" if result.reason else "")
        detail = result.to_dict()
        required = self.formal_mode(problem) == "required"
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
                self._formal = FormalChecker(FormalConfig(sandbox_backend=self.config.sandbox_backend))
            return self._formal

    def _map(self, fn: Callable[[Any], VerilogScore], items: list) -> list[VerilogScore]:
        if len(items) <= 1:
            return [fn(it) for it in items]
        with self._lock:
            if self._pool is None:
                from sandboxes.pool import SandboxPool
                self._pool = SandboxPool(self.config.workers or default_workers())
        return self._pool.map(fn, items)


def default_workers() -> int:
    """Two sandboxes per core: a sandboxed job spends most of its setup (namespaces, mounts) waiting,
    not computing, so twice the cores keeps them busy (bench/bench_verilog.py measures it)."""
    return 2 * (os.cpu_count() or 1)


def forbidden_constructs(code: str, forbidden: Sequence[str]) -> list[str]:
    """Which of `forbidden` (system tasks like `$fopen`, directives like `` `include``) the code uses,
    outside comments and strings."""
    clean = _blank_strings(strip_comments(code))
    return [f for f in forbidden if re.search(re.escape(f) + r"(?![\w$])", clean)]


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
