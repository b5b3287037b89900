"""The Verilog task kind: `Problem` records (spec + testbench and/or reference), the `rtl` generator,
the `verilog_functional` reward (rewards/verilog/reward.py) and `earl score --task verilog`."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from pipelines.tasks import rtlgen
from pipelines.tasks.kinds import TaskKind
from rewards.verilog.problems import Problem, reference_solution
from rewards.verilog.reward import STAGES


def read_path(path: Path) -> list[Problem]:
    from rewards.verilog.loaders import load_problems
    return list(load_problems(path))


def from_row(row: dict[str, Any], where: str) -> Problem:
    return Problem.from_dict({k: v for k, v in row.items() if v is not None or k in ("id",)}, where)


def prompt_text(p: Problem) -> str:
    return p.prompt if p.prompt else p.spec


def completion_text(p: Problem) -> str:
    """The SFT target: the reference standing where the candidate would."""
    try:
        return reference_solution(p)
    except ValueError:
        raise ValueError(f"problem {p.id}: SFT needs a reference solution (field `reference`)") from None


def reward_columns(problems: list[Problem]) -> list[dict[str, Any]]:
    return Problem.columns(problems)


KIND = TaskKind(
    name="verilog", record_type=Problem, generator="rtl", generate=rtlgen.generate,
    default_reward="verilog_functional", stages=STAGES, scorer="rewards.verilog.scoring",
    read_path=read_path, from_row=from_row, prompt_text=prompt_text, completion_text=completion_text,
    reward_columns=reward_columns,
)
