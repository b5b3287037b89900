"""JSONL reading shared by every record loader, so each bad line is reported the same way: `file:line`."""
from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def iter_jsonl(path: str | Path, error: type[Exception] = ValueError) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield (``file:line``, object) for each non-blank line; a line that is not UTF-8 or not a JSON
    object raises ``error`` naming file and line (a bare UnicodeDecodeError would say only "utf-8")."""
    path = Path(path)
    with path.open("rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            where = f"{path}:{lineno}"
            line = _decode(raw, where, error)
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise error(f"{where}: invalid JSON ({exc.msg} at column {exc.colno})") from None
            if not isinstance(row, dict):
                raise error(f"{where}: expected a JSON object, got {type(row).__name__}")
            yield where, row


def _decode(raw: bytes, where: str, error: type[Exception]) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"{where}: not valid UTF-8 (byte 0x{raw[exc.start]:02x} at offset {exc.start + 1} of the line); "
                    "JSONL files must be UTF-8") from None


def match_samples(records: Mapping[str, T], samples: Sequence[dict], noun: str = "problems") -> list[T]:
    """The record each sample's ``problem_id`` names, in sample order; unknown ids raise naming the line."""
    out = []
    for i, s in enumerate(samples):
        where = s.get("_where", f"sample {i}")
        pid = s.get("problem_id")
        if pid is None:
            raise ValueError(f"{where}: missing 'problem_id'")
        if str(pid) not in records:
            near = ", ".join(sorted(records)[:5])
            raise ValueError(f"{where}: unknown problem id {pid!r} ({len(records)} {noun} loaded, e.g. {near})")
        out.append(records[str(pid)])
    return out
