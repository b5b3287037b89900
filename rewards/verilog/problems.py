"""Problems are plain records. Every format (VerilogEval, RTLLM, HF datasets) is turned into `Problem`.

The canonical JSONL has one `Problem` per line with exactly these field names, so a dataset row and
a problem are the same thing and the trainer can pass the fields to the reward as columns.
"""
from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from rewards.jsonl import iter_jsonl


@dataclass
class Problem:
    id: str
    spec: str                          # natural-language description (the prompt body)
    testbench: str | None = None       # self-checking bench; prints "Mismatches: N in M samples" or RTLLM-style;
                                       # None: generated from `reference` (rewards.verilog.equivbench)
    top_module: str = "TopModule"      # module name the candidate must define
    reference: str | None = None       # reference solution (module named `ref_module` for VerilogEval harness)
    ref_module: str = "RefModule"
    harness: str = "verilogeval"       # verilogeval | rtllm | custom
    files: dict[str, str] = field(default_factory=dict)   # extra files copied into the work dir (name -> text)
    prompt: str | None = None          # full prompt if it differs from `spec`
    meta: dict[str, Any] = field(default_factory=dict)    # family, width, split, sequential, ...

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False)

    # -- dataset columns: the one place a Problem becomes a dataset row and back ---------------------------

    def to_columns(self, files: bool = True) -> dict[str, Any]:
        """This problem as one row of reward columns (what the trainer hands the reward). `files` False
        drops the field: Arrow cannot hold an empty struct, and no files is what a missing column means."""
        row = {"id": self.id, "spec": self.spec, "testbench": self.testbench, "top_module": self.top_module,
               "reference": self.reference, "ref_module": self.ref_module, "harness": self.harness,
               "meta": self.meta}
        if files:
            row["files"] = self.files
        return row

    @staticmethod
    def columns(problems: Iterable[Problem]) -> list[dict[str, Any]]:
        """Rows for a batch: `files` only when some problem has files (see `to_columns`)."""
        problems = list(problems)
        with_files = any(p.files for p in problems)
        return [p.to_columns(files=with_files) for p in problems]

    @classmethod
    def from_columns(cls, row: dict[str, Any], where: str = "<row>") -> Problem:
        """Inverse of `to_columns` for a row that went through Arrow: the None it fills into missing
        keys (top level and inside `files` / `meta`) means "not given"."""
        names = {f.name for f in fields(cls)}
        clean = {k: v for k, v in row.items() if k in names and v is not None}
        for k in ("files", "meta"):
            if isinstance(clean.get(k), dict):
                clean[k] = {a: b for a, b in clean[k].items() if b is not None}
        clean.setdefault("spec", "")
        return cls.from_dict(clean, where)

    @classmethod
    def from_dict(cls, row: dict[str, Any], where: str = "<row>") -> Problem:
        known = {f.name for f in fields(cls)}
        missing = [k for k in ("id", "spec") if k not in row]
        if missing:
            raise ValueError(f"{where}: problem is missing required field(s) {missing}")
        if row.get("testbench") is None and not row.get("reference"):
            raise ValueError(f"{where}: problem needs a `testbench` or a `reference` (the bench is then "
                             f"generated from it)")
        unknown = sorted(set(row) - known)
        if unknown:
            raise ValueError(f"{where}: unknown problem field(s) {unknown}; known: {sorted(known)}")
        row = dict(row)
        row["id"] = str(row["id"])
        return cls(**row)


def reference_solution(problem: Problem) -> str:
    """The reference standing where a candidate would (the SFT target, the self-check): its module renamed
    from `ref_module` to `top_module`; a reference already named as the top module is returned as it is,
    and generated tasks ship theirs in meta["solution"]."""
    from rewards.verilog.extract import module_names, rename_module
    if problem.meta.get("solution"):
        return str(problem.meta["solution"])
    if not problem.reference:
        raise ValueError(f"problem {problem.id}: no reference solution (field `reference`)")
    if problem.ref_module != problem.top_module and problem.ref_module in module_names(problem.reference):
        return rename_module(problem.reference, problem.ref_module, problem.top_module)
    return problem.reference


def read_jsonl(path: str | Path) -> list[Problem]:
    """Read canonical JSONL; a malformed line raises naming file and line number."""
    return [Problem.from_dict(row, where) for where, row in iter_jsonl(path)]


def write_jsonl(problems: Iterable[Problem], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
        for p in problems:
            fh.write(p.to_json() + "\n")
    return path
