"""The security-repair task kind: `SecurityTask` records (vulnerable function, reference fix, tests),
the `security` generator, the `security_repair` reward (rewards/security/reward.py) and
`earl score --task security-repair`. Eval judges a sample as secure-and-correct and adds secure@1 etc."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from pipelines.tasks import secgen
from pipelines.tasks.kinds import TaskKind
from rewards.security.reward import STAGES
from rewards.security.tasks import SecurityTask


def read_path(path: Path) -> list[SecurityTask]:
    from rewards.security.tasks import read_tasks
    if path.is_dir():
        raise ValueError(f"security tasks: expected a JSONL file, got folder {path}")
    return read_tasks(path)


def from_row(row: dict[str, Any], where: str) -> SecurityTask:
    return SecurityTask.from_columns(row, where)


def prompt_text(t: SecurityTask) -> str:
    return t.prompt_text()


def completion_text(t: SecurityTask) -> str:
    from rewards.security.source import normalize_source
    if not t.reference:
        raise ValueError(f"security task {t.id}: SFT needs a reference fix (field `reference`)")
    return normalize_source(t.reference).strip() + "\n"


def reward_columns(tasks: list[SecurityTask]) -> list[dict[str, Any]]:
    return [t.to_columns() for t in tasks]


def judge(task: SecurityTask, detail: dict[str, Any]) -> dict[str, Any]:
    """scoring.result_row on the reward's RepairScore record; `passed` = secure and correct."""
    from rewards.security.reward import RepairScore
    from rewards.security.scoring import result_row
    row = result_row(task, RepairScore.from_dict(detail))
    row.pop("details")
    return row


def metrics(samples: list[dict[str, Any]]) -> dict[str, Any]:
    from rewards.security.scoring import security_eval_metrics
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in security_eval_metrics(samples).items()}


KIND = TaskKind(
    name="security-repair", record_type=SecurityTask, generator="security", generate=secgen.generate,
    default_reward="security_repair", stages=STAGES, scorer="rewards.security.scoring",
    read_path=read_path, from_row=from_row, prompt_text=prompt_text, completion_text=completion_text,
    reward_columns=reward_columns, judge=judge, metrics=metrics,
)
