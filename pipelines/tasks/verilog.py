"""The Verilog task kind: `Problem` records (spec + testbench and/or reference), the `rtl` generator,
the `verilog_functional` reward (rewards/verilog/reward.py) and `earl score --task verilog`."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pipelines.tasks import rtlgen
from pipelines.tasks.kinds import TaskKind
from rewards.verilog.problems import Problem
from rewards.verilog.reward import STAGES


def read_path(path: Path) -> list[Problem]:
    from rewards.verilog.loaders import load_problems
    return list(load_problems(path))


def from_row(row: dict[str, Any], where: str) -> Problem:
    return Problem.from_dict({k: v for k, v in row.items() if v is not None or k in ("id",)}, where)


def prompt_text(p: Problem) -> str:
    return p.prompt if p.prompt else p.spec


def completion_text(p: Problem) -> str:
    """The reference with its module renamed to what the candidate must define."""
    if p.meta.get("solution"):                  # generators ship the canonical completion
        return str(p.meta["solution"])
    if not p.reference:
        raise ValueError(f"problem {p.id}: SFT needs a reference solution (field `reference`)")
    return re.sub(rf"\bmodule\s+{re.escape(p.ref_module)}\b", f"module {p.top_module}", p.reference, count=1)


def reward_columns(problems: list[Problem]) -> list[dict[str, Any]]:
    """Every Problem field (dicts stay dicts; Arrow fills keys missing in a row with None, which the
    reward drops). Arrow cannot hold an empty struct; rewards treat a missing `files` column as no files."""
    with_files = any(p.files for p in problems)
    rows = []
    for p in problems:
        row = {"id": p.id, "spec": p.spec, "testbench": p.testbench, "top_module": p.top_module,
               "reference": p.reference, "ref_module": p.ref_module, "harness": p.harness, "meta": p.meta}
        if with_files:
            row["files"] = p.files
        rows.append(row)
    return rows


KIND = TaskKind(
    name="verilog", record_type=Problem, generator="rtl", generate=rtlgen.generate,
    default_reward="verilog_functional", stages=STAGES, scorer="rewards.verilog.scoring",
    read_path=read_path, from_row=from_row, prompt_text=prompt_text, completion_text=completion_text,
    reward_columns=reward_columns,
)
