"""Security-repair tasks as plain records: the canonical JSONL, the SVEN/SafeCoder adapter, prompts.

A canonical row has exactly the fields of ``SecurityTask``; a SVEN/SafeCoder row (``func_src_before``,
``func_src_after``, ``vul_type``, optional ``id`` and ``tests``) is mapped onto it, its other fields
(commit link, line changes, ...) kept in ``meta``. The trainer passes the fields to the reward as
columns, so a dataset row and a task are the same thing.
"""
from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from rewards.jsonl import iter_jsonl
from rewards.security.source import normalize_source

CWE_NAMES = {
    "cwe-022": "path traversal", "cwe-078": "OS command injection", "cwe-079": "cross-site scripting",
    "cwe-089": "SQL injection", "cwe-327": "broken or risky cryptography", "cwe-377": "insecure temporary file",
    "cwe-502": "deserialization of untrusted data",
}
log = logging.getLogger(__name__)
_CWE_RE = re.compile(r"^(?:cwe)?[-_ ]?0*(\d+)$", re.IGNORECASE)


def normalize_cwe(value: str) -> str:
    """'CWE-89', 'cwe-089', '89' -> 'cwe-089'."""
    m = _CWE_RE.match(str(value).strip())
    if not m:
        raise ValueError(f"not a CWE id: {value!r} (expected e.g. 'cwe-089')")
    return f"cwe-{int(m.group(1)):03d}"


@dataclass
class SecurityTask:
    id: str
    vulnerable: str                    # the function to repair
    vul_type: str                      # cwe-NNN
    reference: str | None = None       # a known fix (SVEN's func_src_after)
    func_name: str | None = None       # the function the repair must keep defining
    tests: str | None = None           # Python test code calling the function (asserts); run sandboxed
    prompt: str | None = None          # full prompt; built by `build_prompt` when absent
    meta: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False)

    def to_columns(self) -> dict[str, Any]:
        """This task as one row of the reward's columns (the one place a task becomes dataset columns;
        the reward reads them back with `SecurityRepairReward`'s column rule, SVEN names included)."""
        return {"id": self.id, "vulnerable": self.vulnerable, "reference": self.reference,
                "func_name": self.func_name, "tests": self.tests, "vul_type": self.vul_type}

    @classmethod
    def from_columns(cls, row: dict[str, Any], where: str = "<row>") -> SecurityTask:
        """Inverse of `to_columns` for a row that went through Arrow (None and "" mean "not given"); a
        SVEN-layout row is read as SVEN."""
        if "func_src_before" in row:
            return cls.from_sven(row, where)
        known = {f.name for f in fields(cls)}
        extra = set(row) - known - {"completion"}             # to_dataset_rows adds `completion`
        if extra:
            raise ValueError(f"{where}: unknown security task field(s) {sorted(extra)}; known: {sorted(known)}")
        return cls.from_dict({k: v for k, v in row.items() if k in known and v not in (None, "")}, where)

    @classmethod
    def from_dict(cls, row: dict[str, Any], where: str = "<row>") -> SecurityTask:
        known = {f.name for f in fields(cls)}
        if "func_src_before" in row:
            return cls.from_sven(row, where)
        missing = [k for k in ("id", "vulnerable", "vul_type") if row.get(k) in (None, "")]
        if missing:
            raise ValueError(f"{where}: security task is missing required field(s) {missing}")
        unknown = sorted(set(row) - known)
        if unknown:
            raise ValueError(f"{where}: unknown security task field(s) {unknown}; known: {sorted(known)}")
        row = dict(row, id=str(row["id"]))
        try:
            row["vul_type"] = normalize_cwe(row["vul_type"])
        except ValueError as exc:
            raise ValueError(f"{where}: field 'vul_type': {exc}") from None
        return cls(**row)

    @classmethod
    def from_sven(cls, row: dict[str, Any], where: str = "<row>", default_id: str | None = None) -> SecurityTask:
        """Map a SVEN/SafeCoder row; fields we do not model go to ``meta``."""
        for k in ("func_src_before", "vul_type"):
            if not isinstance(row.get(k), str) or not row[k].strip():
                raise ValueError(f"{where}: SVEN row field {k!r} is missing or not a non-empty string")
        try:
            cwe = normalize_cwe(row["vul_type"])
        except ValueError as exc:
            raise ValueError(f"{where}: field 'vul_type': {exc}") from None
        taken = {"func_src_before", "func_src_after", "vul_type", "id", "tests", "func_name", "prompt"}
        return cls(id=str(row.get("id", default_id if default_id is not None else where)),
                   vulnerable=row["func_src_before"], vul_type=cwe, reference=row.get("func_src_after"),
                   func_name=row.get("func_name"), tests=row.get("tests"), prompt=row.get("prompt"),
                   meta={k: v for k, v in row.items() if k not in taken})

    def prompt_text(self) -> str:
        return self.prompt or build_prompt(self)


def build_prompt(task: SecurityTask) -> str:
    """The repair instruction a policy sees: the CWE, the contract, the code (dedented)."""
    name = CWE_NAMES.get(task.vul_type, "a security flaw")
    fn = f" `{task.func_name}`" if task.func_name else ""
    return (f"# Fix the {task.vul_type.upper()} ({name}) vulnerability in the Python function{fn} below.\n"
            f"# Keep its name, parameters and behaviour. Answer with the fixed function only.\n"
            f"{normalize_source(task.vulnerable).strip()}\n"
            f"# Fixed version:\n")


def read_tasks(path: str | Path) -> list[SecurityTask]:
    """Canonical or SVEN JSONL; a row without ``id`` gets its 0-based line index (of non-blank lines).
    Rows the reward cannot judge (their samples will score None) are kept, and named in one warning."""
    from rewards.security.reward import task_problem
    out: list[SecurityTask] = []
    bad: list[str] = []
    for index, (where, row) in enumerate(iter_jsonl(path)):
        if "func_src_before" in row:
            task = SecurityTask.from_sven(row, where, default_id=str(index))
        else:
            task = SecurityTask.from_dict({**row, "id": row.get("id", index)}, where)
        why = task_problem(task.vulnerable)
        if why:
            bad.append(f"{where} (id {task.id}): {why}")
        out.append(task)
    if bad:
        log.warning("%s: %d of %d tasks cannot be judged (their samples score None): %s", path, len(bad),
                    len(out), "; ".join(bad[:10]) + (" ..." if len(bad) > 10 else ""))
    return out


def write_tasks(tasks: Iterable[SecurityTask], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
        for t in tasks:
            fh.write(t.to_json() + "\n")
    return path


def to_dataset_rows(tasks: Iterable[SecurityTask]) -> list[dict[str, Any]]:
    """Rows for a HF ``Dataset``: ``prompt`` filled in, ``completion`` = the reference (for SFT)."""
    rows = []
    for t in tasks:
        row = asdict(t)
        row["prompt"] = t.prompt_text()
        row["completion"] = normalize_source(t.reference).strip() + "\n" if t.reference else ""
        row["meta"] = json.dumps(t.meta)    # Arrow needs one schema; keep meta as text
        row["tests"] = t.tests or ""
        row["reference"] = t.reference or ""
        row["func_name"] = t.func_name or ""
        rows.append(row)
    return rows
