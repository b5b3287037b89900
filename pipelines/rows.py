"""Datasets as users have them: raw rows from a file or dataset, a column mapping, named adapters.

`columns: {spec: question, reference: reward_model.ground_truth.answer.code, id: extra_info.index}` maps
record fields (left) to source columns (right). A dotted path walks nested mappings (and lists, by
index); a JSON string or pickled plain data on the way is decoded (rewards.safepickle: nothing runs).
A chat-message list becomes its user turn. With `columns:` a record holds only the mapped fields
(plus `id` when the source has that column; else the row number). With `adapter:` the adapter
(rewards.verilog.adapters.ADAPTERS) builds the record, and `columns:` then overrides fields of it.

Rows that cannot become a record are skipped with a warning naming the row; a source with no usable
row is an error that names it (and the first row's problem).
"""
from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rewards.safepickle import UnsafePickle, loads_plain

log = logging.getLogger(__name__)

MAX_ROW_WARNINGS = 10            # then one summary line: a typo in `columns:` must not print 80k lines


class MissingColumn(ValueError):
    """A mapped source column (or a step of its dotted path) is absent from a row."""


# --------------------------------------------------------------------------- reading rows


def iter_rows(path: Path | None = None, hf: str | None = None, hf_split: str = "train",
              hf_files: str | list[str] | None = None) -> Iterator[tuple[str, dict]]:
    """(where, row) for every row of a JSONL file, a parquet file or folder of them, a `save_to_disk`
    folder, or an HF dataset (`hf`)."""
    if hf is not None:
        import datasets
        yield from _iter_dataset(datasets.load_dataset(hf, split=hf_split, data_files=hf_files), f"hf:{hf}")
        return
    assert path is not None
    if path.is_dir() and ((path / "dataset_info.json").is_file() or (path / "state.json").is_file()):
        import datasets
        ds = datasets.load_from_disk(str(path))
        yield from _iter_dataset(ds["train"] if isinstance(ds, datasets.DatasetDict) else ds, str(path))
    elif path.is_dir() and any(path.glob("*.parquet")):
        for f in sorted(path.glob("*.parquet")):
            yield from _iter_parquet(f)
    elif path.suffix == ".parquet":
        yield from _iter_parquet(path)
    elif path.suffix in (".jsonl", ".json"):
        from rewards.jsonl import iter_jsonl
        yield from iter_jsonl(path)
    else:
        raise ValueError(f"{path}: expected a .jsonl or .parquet file, a folder of parquet files or a "
                         "`save_to_disk` folder for `columns:` / `adapter:`")


def _iter_parquet(path: Path) -> Iterator[tuple[str, dict]]:
    import pyarrow.parquet as pq
    i = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=1024):
        for row in batch.to_pylist():
            yield f"{path} row {i}", row
            i += 1


def _iter_dataset(ds: Any, where: str) -> Iterator[tuple[str, dict]]:
    for i, row in enumerate(ds):
        yield f"{where} row {i}", dict(row)


def is_rows_file(path: Path) -> bool:
    """A parquet file or a folder of them: read as rows even without `columns:` (canonical field names)."""
    return path.suffix == ".parquet" or (path.is_dir() and any(path.glob("*.parquet"))
                                         and not (path / "dataset_info.json").is_file())


# --------------------------------------------------------------------------- the column mapping


def lookup(row: dict[str, Any], dotted: str, where: str = "<row>") -> Any:
    """`row` at `a.b.0.c` (a column named `a.b.0.c` itself wins); JSON text and pickled plain data on the
    way are decoded."""
    if dotted in row:
        return row[dotted]
    value: Any = row
    walked: list[str] = []
    for step in dotted.split("."):
        value = _decoded(value, ".".join(walked) or "row", where)
        if isinstance(value, dict) and step in value:
            value = value[step]
        elif isinstance(value, (list, tuple)) and step.isdigit() and int(step) < len(value):
            value = value[int(step)]
        else:
            have = f" (columns: {', '.join(map(str, list(value)[:12]))})" if isinstance(value, dict) else ""
            raise MissingColumn(f"no column {'.'.join([*walked, step])!r}{have}")
        walked.append(step)
    return value


def _decoded(value: Any, what: str, where: str) -> Any:
    if isinstance(value, (bytes, bytearray)) and value[:1] == b"\x80":       # a pickle (protocol >= 2)
        return loads_plain(bytes(value), f"{where} {what}")
    if isinstance(value, (bytes, bytearray)):
        value = bytes(value).decode("utf-8", "replace")
    if isinstance(value, str) and value.lstrip()[:1] in ("{", "["):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def mapped_record(row: dict[str, Any], columns: dict[str, str], where: str, index: int | None = None) -> dict:
    """The record fields `columns` names, read from `row` (chat lists become their user turn); with
    `index`, an `id` too when `columns` maps none (the row's own `id` column, else the row number)."""
    from rewards.verilog.adapters import chat_user_text
    rec = {target: chat_user_text(lookup(row, source, where)) for target, source in columns.items()}
    if "id" not in rec and index is not None:
        rec["id"] = row["id"] if row.get("id") is not None else index
    if "id" in rec:
        rec["id"] = str(rec["id"])
    return rec


def check_columns(columns: dict[str, Any], record_type: type, key: str) -> None:
    """Targets must be fields of the record type and sources dotted-path strings (a config mistake, so an
    error before any row is read)."""
    known = [f.name for f in dataclasses.fields(record_type)]
    for target, source in columns.items():
        if target not in known:
            raise ValueError(f"{key}.{target}: not a {record_type.__name__} field; known: {', '.join(known)}")
        if not isinstance(source, str) or not source.strip():
            raise ValueError(f"{key}.{target}: expected a source column name (dotted path), got {source!r}")


# --------------------------------------------------------------------------- rows -> records


def records_from_rows(rows: Iterator[tuple[str, dict]], label: str, kind: Any, columns: dict[str, str],
                      adapter: str | None, limit: int | None = None) -> list:
    """Turn rows into records of task kind `kind`, skipping (with a warning) rows that cannot be one."""
    from rewards.verilog.adapters import ADAPTERS, SkipRow, fields_problem
    check_columns(columns, kind.record_type, "columns")
    build = ADAPTERS[adapter] if adapter else None
    out, seen, skipped, first_skip = [], set(), 0, None
    for index, (where, row) in enumerate(rows):
        if limit is not None and len(out) >= limit:
            break
        try:
            rec = _record(row, where, index, kind, columns, build, fields_problem)
            if rec.id in seen:
                raise SkipRow(f"duplicate id {rec.id!r}")
        except (SkipRow, MissingColumn, UnsafePickle, ValueError, TypeError, RecursionError) as exc:
            skipped += 1
            first_skip = first_skip or f"{where}: {exc}"
            if skipped <= MAX_ROW_WARNINGS:
                log.warning("skipping %s: %s", where, exc)
            continue
        seen.add(rec.id)
        out.append(rec)
    if skipped > MAX_ROW_WARNINGS:
        log.warning("%s: skipped %d rows in all (first %d named above)", label, skipped, MAX_ROW_WARNINGS)
    if not out:
        why = f" (first: {first_skip})" if first_skip else " (it has no rows)"
        raise ValueError(f"data source {label} holds no usable problems{why}")
    return out


def _record(row: dict, where: str, index: int, kind: Any, columns: dict[str, str], build: Any,
            fields_problem: Any) -> Any:
    if build is not None:                     # the adapter builds it; `columns:` overrides fields
        rec = build(row, where, index)
        return dataclasses.replace(rec, **mapped_record(row, columns, where)) if columns else rec
    fields = mapped_record(row, columns, where, index) if columns else row
    if kind.name == "verilog":
        return fields_problem(fields, where, index)
    return kind.from_row(fields, where)
