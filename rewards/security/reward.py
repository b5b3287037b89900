"""Security-repair reward: does a candidate remove the original's findings, keep its meaning, pass tests?

    reward = syntactic_weight * similarity + semantic_weight * semantic        (weights normalized)
    semantic = security                                     (row without tests)
             = (1 - functional_share) * security + functional_share * tests_passed

The split into a syntactic (similarity to the original / the reference fix) and a semantic part
(the flaw is gone, the code still works) follows the security-repair RL recipe of Islam et al.
(2024, "Code security vulnerability repair using reinforcement learning with LLMs"), equal weights.

security = (weight of the original's findings that are gone - penalty * weight of new findings)
           / weight of the original's findings, clipped to [0, 1]; 1 when the checkers see no flaw in
           the original and the candidate adds none. Findings come from bandit in-process plus our taint
           rules (`rewards.security.rules`); `# nosec` is ignored.

A task that cannot be judged (its vulnerable code does not parse, even as Python 2) scores None with
the reason in ``error`` (TRL ignores None rewards); the rest of the batch is scored.

Hard zeros (anti-gaming): the candidate does not parse, no longer defines the function, is a stub
(pass / return a constant / raise), is a no-op edit (same AST as the original once comments,
whitespace and docstrings are dropped), or its tests hit a sandbox limit (fork/memory bomb, endless
loop). Multipliers: shrinking the function below `min_size_ratio` of its statements, and adding
``except: pass`` handlers that swallow errors.
"""
from __future__ import annotations

import ast
import logging
import re
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, fields
from functools import lru_cache
from typing import Any

from rewards.base import Score
from rewards.security.findings import scan
from rewards.security.functional import FunctionalConfig, TestOutcome, TestRunner, python_for_tests
from rewards.security.similarity import similarity
from rewards.security.source import Finding, normalize_source, parse
from sandboxes.strict import from_dict

log = logging.getLogger(__name__)

# The furthest check a sample passed (``RepairScore.stage``; rewards/base.py): none (does not parse, or the
# task cannot be judged) < syntax (parses; no real edit of the function) < format (the function, changed;
# tests fail) < tests (tests pass or there are none; a finding is left) < secure (a passing repair).
STAGES = ("none", "syntax", "format", "tests", "secure")

_FENCE_RE = re.compile(r"```(?:python|py|python3)?[ \t]*\n(.*?)(?:```|$)", re.DOTALL)


@dataclass
class SecurityRewardConfig:
    syntactic_weight: float = 0.5      # similarity to the original (and the reference fix, when given)
    semantic_weight: float = 0.5       # security, plus tests when the row has them
    functional_share: float = 0.5      # share of the semantic part given to the tests
    new_finding_penalty: float = 1.0   # a new finding costs this many times its weight
    require_tests_pass: bool = True    # failing tests -> reward 0 (secure-and-correct); False: term only
    min_size_ratio: float = 0.5        # below this share of the original's statements the reward shrinks
    swallow_factor: float = 0.25       # multiplier when the candidate adds `except: pass` handlers
    use_bandit: bool = True
    use_rules: bool = True
    run_tests: bool = True
    workers: int = 2                   # parallel sandboxed test runs
    functional: FunctionalConfig = field(default_factory=FunctionalConfig)

    def __post_init__(self) -> None:
        if isinstance(self.functional, dict):
            self.functional = FunctionalConfig(**self.functional)
        for name in ("syntactic_weight", "semantic_weight", "new_finding_penalty"):
            if getattr(self, name) < 0:
                raise ValueError(f"SecurityRewardConfig.{name} must be >= 0, got {getattr(self, name)}")
        if self.syntactic_weight + self.semantic_weight <= 0:
            raise ValueError("SecurityRewardConfig: syntactic_weight + semantic_weight must be > 0")
        for name in ("functional_share", "min_size_ratio", "swallow_factor"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"SecurityRewardConfig.{name} must be in [0, 1], got {getattr(self, name)}")

    @classmethod
    def from_kwargs(cls, **kwargs: Any) -> SecurityRewardConfig:
        """From a config's `kwargs:` (sandboxes.strict: unknown names and wrong types name the option)."""
        return from_dict(cls, kwargs, "security_repair", noun="option")


@dataclass
class RepairScore:
    """The detail record of one sample."""
    reward: float | None                      # None: the task could not be judged (see error)
    reason: str                               # ok | syntax_error | function_missing | stub | no_op | ...
    secure: bool = False                      # no (scored) finding left
    tests_passed: bool | None = None          # None when the row has no tests (or they did not run)
    security: float = 0.0
    similarity: float = 0.0
    sim_original: float = 0.0
    sim_reference: float | None = None
    findings_before: list[dict] = field(default_factory=list)
    findings_after: list[dict] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)   # rule ids gone
    added: list[str] = field(default_factory=list)     # rule ids new
    tests: dict | None = None
    flags: list[str] = field(default_factory=list)     # shrunk, swallows_exceptions, original_clean
    error: str | None = None                  # why the task could not be judged (reward None)

    @property
    def stage(self) -> str:
        """The furthest check passed, one of ``STAGES`` (an unjudged task counts as none)."""
        if self.reason in ("syntax_error", "task_error"):
            return "none"
        if self.reason in {"function_missing", "stub", "no_op"}:
            return "syntax"
        if self.reason.startswith("tests_") or self.tests_passed is False:
            return "format"
        return "secure" if self.secure else "tests"

    @property
    def passed(self) -> bool | None:
        """A passing repair (secure and correct): the last stage; None when the task could not be judged."""
        return None if self.error is not None else self.stage == STAGES[-1]

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "stage": self.stage, "passed": self.passed}

    def as_score(self) -> Score:
        return Score(self.reward, self.passed, self.stage, self.reason, self.to_dict())

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> RepairScore:
        """Inverse of ``to_dict`` (the derived ``stage`` is recomputed, not stored)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in record.items() if k in names})


def extract_code(completion: Any) -> str:
    """Text of a completion (string or chat messages); the first ```python fence if there is one."""
    if isinstance(completion, list):
        completion = "".join(m.get("content", "") for m in completion if isinstance(m, dict))
    text = str(completion or "")
    m = _FENCE_RE.search(text)
    return m.group(1) if m else text


def find_function(tree: ast.AST, name: str | None) -> ast.FunctionDef | ast.AsyncFunctionDef | None:
    funcs = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    if name:
        return next((f for f in funcs if f.name == name), None)
    return funcs[0] if funcs else None


def _body(fn: ast.AST) -> list[ast.stmt]:
    body = list(fn.body)
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
            and isinstance(body[0].value.value, str):
        body = body[1:]
    return body


def _literal(node: ast.AST) -> bool:
    """A constant or a container literal of constants: ``[]``, ``{}``, ``("a", 1)``."""
    try:
        ast.literal_eval(node)
        return True
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return False


def is_stub(fn: ast.AST) -> bool:
    """Body is only pass / ... / return <constant or nothing> / raise."""
    for stmt in _body(fn):
        if isinstance(stmt, (ast.Pass, ast.Raise)):
            continue
        if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant):
            continue
        if isinstance(stmt, ast.Return) and (stmt.value is None or _literal(stmt.value)):
            continue
        return False
    return True


def count_statements(node: ast.AST) -> int:
    return sum(isinstance(n, ast.stmt) for n in ast.walk(node)) - 1


def swallowing_handlers(node: ast.AST) -> int:
    """``except ...: pass`` (or ``...``/``continue``) handlers: they hide failures."""
    return sum(isinstance(n, ast.ExceptHandler) and all(
        isinstance(s, (ast.Pass, ast.Continue)) or (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant))
        for s in n.body) for n in ast.walk(node))


def canonical_dump(fn: ast.AST) -> str:
    """AST without docstrings or positions: equal for edits that only touch comments/whitespace."""
    clone = ast.parse(ast.unparse(fn))
    for n in ast.walk(clone):
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Module)):
            n.body = _body(n) or [ast.Pass()]
    return ast.dump(clone, annotate_fields=False)


@lru_cache(maxsize=8192)
def _scan_cached(code: str, use_bandit: bool, use_rules: bool) -> tuple[Finding, ...]:
    return tuple(scan(code, use_bandit=use_bandit, use_rules=use_rules))


def security_term(before: Sequence[Finding], after: Sequence[Finding],
                  penalty: float) -> tuple[float, list[str], list[str]]:
    """(score, rules removed, rules added), matching findings by (rule, CWE) as multisets."""
    cb = Counter(f.key for f in before)
    ca = Counter(f.key for f in after)
    weight = {f.key: f.weight for f in [*before, *after]}
    removed = cb - ca
    added = ca - cb
    w_before = sum(f.weight for f in before)
    w_removed = sum(weight[k] * n for k, n in removed.items())
    w_added = sum(weight[k] * n for k, n in added.items())
    if w_before > 0:
        score = (w_removed - penalty * w_added) / w_before
    else:
        score = 1.0 / (1.0 + penalty * w_added)
    return (max(0.0, min(1.0, score)), sorted(k[0] for k in removed.elements()),
            sorted(k[0] for k in added.elements()))


UNPARSABLE = "the vulnerable code does not parse (as Python 3, nor as Python 2 after 2to3)"


class TaskError(ValueError):
    """A task (dataset row) the reward cannot judge: its samples score None."""


def task_problem(vulnerable: Any) -> str | None:
    """Why a task cannot be judged at all, or None (loaders warn with it, naming the row)."""
    if not isinstance(vulnerable, str) or not vulnerable.strip():
        return "no vulnerable code"
    return UNPARSABLE if parse(vulnerable) is None else None


def unjudged(row: dict[str, Any], exc: Exception) -> RepairScore:
    """The score of a row whose scoring raised: reward None (TRL ignores it), the reason logged and kept
    in ``error``; one bad task must not cost the batch its rewards."""
    why = str(exc) if isinstance(exc, TaskError) else f"internal error: {type(exc).__name__}: {exc}"
    log.warning("security_repair: task %r not judged (reward None): %s", row.get("id"), why,
                exc_info=not isinstance(exc, TaskError))
    return RepairScore(None, "task_error", error=why)


class SecurityRepairReward:
    """TRL reward ``f(prompts, completions, **columns)``; columns are the task fields.

    Needed column: ``vulnerable`` (or SVEN's ``func_src_before``). Optional: ``reference``
    (``func_src_after``), ``func_name``, ``tests``, ``vul_type``, ``id``. After each batch,
    ``last_scores`` holds one `rewards.base.Score` per completion (the contract the trainer and eval read).
    """

    __name__ = "security_repair"
    stages = STAGES          # the vocabulary of Score.stage, in order of progress; last = pass

    def __init__(self, **config: Any):
        self.config = SecurityRewardConfig.from_kwargs(**config)
        self.last_scores: list[Score] | None = None
        self._runner: TestRunner | None = None
        self.preflight()

    def preflight(self) -> None:
        """Cheap check, when built, of the programs the tests need (the interpreter; bwrap or unshare when
        that backend is asked for): ToolNotFound now, not a batch of failed test runs later."""
        if not self.config.run_tests:
            return
        from sandboxes.tools import ToolNotFound, backend_programs, find_program, require_programs
        fcfg = self.config.functional
        require_programs(backend_programs(fcfg.backend), "needed by the security reward's test runs")
        python, _ = python_for_tests(fcfg)
        if find_program(python) is None:
            raise ToolNotFound(python, "the security reward's test interpreter (functional.python)")

    # -- TRL entry point ------------------------------------------------------------------------
    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], **columns: Any) -> list[float | None]:
        rows = self._rows(len(completions), columns)
        scores = self.score_batch(rows, completions)
        return [s.reward for s in scores]

    def _rows(self, n: int, columns: dict[str, Any]) -> list[dict[str, Any]]:
        def col(*names: str) -> list[Any]:
            for name in names:
                if name in columns and columns[name] is not None:
                    values = list(columns[name])
                    if len(values) != n:
                        raise ValueError(f"security_repair: column {name!r} has {len(values)} values "
                                         f"for {n} completions")
                    return values
            return [None] * n
        vulnerable = col("vulnerable", "func_src_before")
        if all(v is None for v in vulnerable):
            raise ValueError("security_repair: needs a 'vulnerable' (or 'func_src_before') column with the "
                             f"code to repair; got columns {sorted(columns)}")
        return [{"vulnerable": v, "reference": r or None, "func_name": f or None, "tests": t or None,
                 "vul_type": c, "id": i}
                for v, r, f, t, c, i in zip(vulnerable, col("reference", "func_src_after"), col("func_name"),
                                            col("tests"), col("vul_type"), col("id"))]

    # -- scoring --------------------------------------------------------------------------------
    def score_batch(self, rows: Sequence[dict[str, Any]], completions: Sequence[Any],
                    progress: Callable[[int], None] | None = None) -> list[RepairScore]:
        """Static scoring in this thread, then the tests of those still in the running, in parallel.
        A row that cannot be judged scores None (logged) and the others go on."""
        staged = [self._static(row, c) for row, c in zip(rows, completions)]
        pending = [i for i, (score, code) in enumerate(staged)
                   if score is None and rows[i].get("tests") and self.config.run_tests]
        outcomes: dict[int, TestOutcome] = {}
        if pending:
            runner = self._get_runner()

            def work(i: int) -> TestOutcome:
                try:
                    return runner.run(staged[i][1], rows[i]["tests"])
                except Exception as exc:
                    log.exception("security_repair: test run failed")
                    return TestOutcome(False, "error", 0.0, str(exc)[:200])
            with ThreadPoolExecutor(max_workers=max(1, self.config.workers)) as pool:
                for i, out in zip(pending, pool.map(work, pending)):
                    outcomes[i] = out
        final: list[RepairScore] = []
        for i, (row, (early, code)) in enumerate(zip(rows, staged)):
            final.append(early if early is not None else self._finish(row, code, outcomes.get(i)))
            if progress is not None:
                progress(1)
        self.last_scores = [s.as_score() for s in final]
        return final

    def _static(self, row: dict[str, Any], completion: Any) -> tuple[RepairScore | None, str]:
        try:
            return self.static_score(row, extract_code(completion))
        except Exception as exc:  # noqa: BLE001 - this row's failure, not the batch's
            return unjudged(row, exc), ""

    def _finish(self, row: dict[str, Any], code: str, tests: TestOutcome | None) -> RepairScore:
        try:
            return self.finish(row, code, tests)
        except Exception as exc:  # noqa: BLE001 - this row's failure, not the batch's
            return unjudged(row, exc)

    def score(self, row: dict[str, Any], completion: Any) -> RepairScore:
        return self.score_batch([row], [completion])[0]

    def static_score(self, row: dict[str, Any], code: str) -> tuple[RepairScore | None, str]:
        """(an early final score, or None to go on; the candidate code)."""
        tree = parse(code)
        if tree is None or not code.strip():
            return RepairScore(0.0, "syntax_error"), code
        original = row["vulnerable"]
        otree = parse(original)
        if otree is None:
            raise TaskError(f"task {row.get('id')!r}: {UNPARSABLE}")
        ofn = find_function(otree, row.get("func_name"))
        name = row.get("func_name") or (ofn.name if ofn else None)
        fn = find_function(tree, name)
        if fn is None:
            return RepairScore(0.0, "function_missing", flags=[f"no def {name}"]), code
        if is_stub(fn) and not (ofn is not None and is_stub(ofn)):
            return RepairScore(0.0, "stub"), code
        if ofn is not None and canonical_dump(fn) == canonical_dump(ofn):
            return RepairScore(0.0, "no_op"), code
        return None, code

    def finish(self, row: dict[str, Any], code: str, tests: TestOutcome | None) -> RepairScore:
        cfg = self.config
        original, reference = row["vulnerable"], row.get("reference")
        before = _scan_cached(normalize_source(original), cfg.use_bandit, cfg.use_rules)
        after = _scan_cached(normalize_source(code), cfg.use_bandit, cfg.use_rules)
        sec, removed, added = security_term(before, after, cfg.new_finding_penalty)
        sim_o = similarity(code, original)
        sim_r = similarity(code, reference) if reference else None
        sim = sim_o if sim_r is None else 0.5 * (sim_o + sim_r)
        flags = [] if before else ["original_clean"]
        score = RepairScore(0.0, "ok", secure=not after, security=sec, similarity=sim, sim_original=sim_o,
                            sim_reference=sim_r, findings_before=[f.to_dict() for f in before],
                            findings_after=[f.to_dict() for f in after], removed=removed, added=added,
                            tests=tests.to_dict() if tests else None, flags=flags)
        semantic = sec
        if tests is not None:
            score.tests_passed = tests.passed
            if tests.hostile or tests.verdict == "error":
                score.reason = f"tests_{tests.verdict}"
                return score
            if not tests.passed and cfg.require_tests_pass:
                score.reason = "tests_failed"
                return score
            semantic = (1 - cfg.functional_share) * sec + cfg.functional_share * float(tests.passed)
        total = cfg.syntactic_weight + cfg.semantic_weight
        reward = (cfg.syntactic_weight * sim + cfg.semantic_weight * semantic) / total
        ofn = find_function(parse(original), row.get("func_name"))
        fn = find_function(parse(code), row.get("func_name") or (ofn.name if ofn else None))
        if ofn is not None and fn is not None:
            ratio = count_statements(fn) / max(1, count_statements(ofn))
            if ratio < cfg.min_size_ratio:
                reward *= ratio / cfg.min_size_ratio
                flags.append("shrunk")
            if swallowing_handlers(fn) > swallowing_handlers(ofn):
                reward *= cfg.swallow_factor
                flags.append("swallows_exceptions")
        score.reward = round(max(0.0, min(1.0, reward)), 6)
        return score

    def _get_runner(self) -> TestRunner:
        if self._runner is None:
            self._runner = TestRunner(self.config.functional)
        return self._runner
