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
