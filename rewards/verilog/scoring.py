"""Offline scoring for `earl score --task verilog`: samples in, one result record per sample out.

Contract shared with rewards/security/scoring.py (the command dispatches on --task):
``score_samples(problems_path, samples, *, workers, progress, **options) -> list[dict]`` with rows in
input order holding at least problem_id, passed (None: not judged), reward, stage, reason, details.
A sample may carry ``_where`` ("file:line") which error messages name.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from rewards.jsonl import match_samples
from rewards.verilog.problems import Problem
from rewards.verilog.reward import VerilogReward, VerilogScore, reference_candidate


def score_samples(problems_path: str, samples: list[dict], *, workers: int | None = None,
                  progress: Callable[[int], None] | None = None, **options: Any) -> list[dict]:
    """Score {"problem_id", "completion"} samples against the problems at `problems_path`.

    options: ``references=True`` marks failing rows unsupported (the samples are the references);
    any other key is a `VerilogRewardConfig` field (formal, time_limit_s, syntax_precheck, ...).
    """
    references = bool(options.pop("references", False))
    options = {k: v for k, v in options.items() if v is not None}
    reward = VerilogReward(problems_path, workers=workers, **options)
    problems = match_samples(reward.problems, samples, "problems")
    try:
        scores = reward.score_batch(problems, [s.get("completion") for s in samples], progress=progress)
    finally:
        reward.close()
    return [_row(s, references) for s in scores]


def reference_samples(problems_path: str) -> list[dict]:
    """One sample per problem: its own reference, standing where a candidate would (self-check)."""
    from rewards.verilog.loaders import load_problems
    return [{"problem_id": p.id, "completion": reference_candidate(p)}
            for p in load_problems(problems_path) if p.reference]


def check_references(problems: Sequence[Problem], **config: Any) -> dict[str, VerilogScore]:
    """Run every reference once: those that fail are unsupported by this simulator (e.g. Icarus 11
    lacks `break`), with the reason."""
    reward = VerilogReward(list(problems), **config)
    try:
        scores = reward.score_batch(list(problems), [reference_candidate(p) for p in problems])
    finally:
        reward.close()
    return {s.problem_id: s for s in scores}


def _row(score: VerilogScore, references: bool) -> dict:
    passed = None if score.error else score.passed      # an infrastructure failure judged nothing
    row = {"problem_id": score.problem_id, "passed": passed, "reward": score.reward,
           "stage": score.stage, "reason": score.reason, "details": score.to_dict()}
    if references:
        row["unsupported"] = not score.passed
    return row
