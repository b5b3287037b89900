"""Offline scoring for `earl score --task security-repair`, and the metrics the eval stage reports.

Same contract as ``rewards.verilog.scoring``: ``score_samples(problems_path, samples, *, workers,
progress, **options) -> list[dict]``, rows in input order with problem_id, reward, secure, passed,
reason, stage, details. ``passed`` is None for a task that cannot be judged, else secure-and-correct
(no finding left and, when the task has tests, they pass), so `earl score`'s pass@k reads as
secure-and-correct@k.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from rewards.jsonl import match_samples
from rewards.security.reward import RepairScore, SecurityRepairReward
from rewards.security.tasks import SecurityTask, read_tasks


def score_samples(problems_path: str, samples: list[dict], *, workers: int | None = None,
                  progress: Callable[[int], None] | None = None, **options: Any) -> list[dict]:
    """Score {"problem_id", "completion"} samples against the tasks at `problems_path`.

    ``problem_id`` is a task's ``id``, else its 0-based line index. options: ``references=True`` (the
    samples are the tasks' own fixes: a self-check), any other key a `SecurityRewardConfig` field.
    """
    references = bool(options.pop("references", False))
    options = {k: v for k, v in options.items() if v is not None}
    if workers:
        options.setdefault("workers", workers)
    reward = SecurityRepairReward(**options)
    tasks = {t.id: t for t in read_tasks(problems_path)}
    matched = match_samples(tasks, samples, "tasks")
    scores = reward.score_batch([t.to_columns() for t in matched], [s.get("completion") for s in samples],
                                progress=progress)
    return [result_row(t, s, references) for t, s in zip(matched, scores)]


def reference_samples(problems_path: str) -> list[dict]:
    """One sample per task that has a reference fix: the fix standing where a candidate would."""
    return [{"problem_id": t.id, "completion": t.reference} for t in read_tasks(problems_path) if t.reference]


def result_row(task: SecurityTask, score: RepairScore, references: bool = False) -> dict[str, Any]:
    """One line of RESULTS; a task that could not be judged has passed None and the error as reason."""
    reason = score.reason
    if reason == "ok" and not score.secure:
        left = sorted({f"{f['rule']}@{f['line']}" for f in score.findings_after})
        reason = "insecure: " + ", ".join(left[:6]) + (" ..." if len(left) > 6 else "")
    row = {"problem_id": task.id, "vul_type": task.vul_type, "reward": score.reward, "secure": score.secure,
           "tests_passed": score.tests_passed, "passed": bool(score.passed),
           "similarity": round(score.similarity, 4), "reason": reason, "stage": score.stage,
           "details": score.to_dict()}
    if score.error is not None:
        row.update(passed=None, reason=score.error)
    if references:
        row["unsupported"] = not row["passed"]
    return row


def security_eval_metrics(results: Sequence[dict]) -> dict[str, float | int]:
    """secure@1, secure-and-correct@1 and mean similarity over result rows (one sample per task is
    @1; with several samples per task each counts, i.e. the mean over samples = unbiased @1).

    Accepts rows from `score_samples` or `RepairScore.to_dict()` records.
    """
    n = len(results)
    if n == 0:
        return {"n": 0, "secure@1": 0.0, "secure_and_correct@1": 0.0, "similarity": 0.0, "reward": 0.0,
                "tests_pass@1": 0.0}
    # early exits (syntax error, stub, no-op, ...) are never `secure`, so `secure` alone decides
    secure = sum(bool(r.get("secure")) for r in results)
    correct = sum(bool(r.get("secure")) and r.get("tests_passed", r.get("passed")) is not False
                  for r in results)
    with_tests = [r for r in results if r.get("tests_passed", r.get("passed")) is not None]
    return {
        "n": n,
        "secure@1": secure / n,
        "secure_and_correct@1": correct / n,
        "tests_pass@1": (sum(bool(r.get("tests_passed", r.get("passed"))) for r in with_tests) / len(with_tests)
                         if with_tests else float("nan")),
        "similarity": sum(float(r.get("similarity") or 0.0) for r in results) / n,
        "reward": sum(float(r.get("reward") or 0.0) for r in results) / n,
    }
