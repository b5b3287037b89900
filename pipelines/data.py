"""Problems for a stage: load a `DataSource` into task records, then into a TRL-ready `Dataset`.

A task kind (`TASK_KINDS`) is the one place that knows a record type: how to load it, its prompt, its
SFT target, the reward columns, and (optionally) how eval reads the reward's per-sample details.
Verilog (`Problem`, the default) and security repair (`SecurityTask`) are the kinds. Formats are
adapters at the edge: JSONL / VerilogEval / RTLLM folders go through rewards.verilog.loaders,
security JSONL through rewards.security.tasks, HF datasets through `datasets`, datasets in their own
layout (parquet, `columns:` mappings, named adapters) through pipelines/rows.py, benchmark names
through pipelines/benchmarks.py, generators through pipelines/tasks. Dataset rows carry the reward's
columns, so TRL hands them to the reward unchanged.
"""
from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines import rows as raw_rows
from pipelines.config import DataConfig, DataSource
from rewards.verilog.problems import Problem

GENERATORS = {"rtl": "pipelines.tasks.rtlgen", "security": "pipelines.tasks.secgen"}


@dataclass(frozen=True)
class TaskKind:
    """What the pipeline needs to know about one kind of task record (records all have an ``id``)."""
    name: str
    record_type: type
    generators: tuple[str, ...]                              # GENERATORS keys that produce this kind
    read_path: Callable[[Path], list]                        # a file or folder -> records
    from_row: Callable[[dict[str, Any], str], Any]           # an HF row (JSON strings decoded) -> record
    prompt_text: Callable[[Any], str]
    completion_text: Callable[[Any], str]                    # the SFT target
    reward_columns: Callable[[list], list[dict[str, Any]]]   # records -> the reward's columns, one row each
    # eval: (record, the first reward's detail record) -> {"passed", "stage", ...}; None: the detail's
    # "stage" == "pass" decides, else the reward threshold
    judge: Callable[[Any, dict[str, Any]], dict[str, Any]] | None = None
    metrics: Callable[[list[dict[str, Any]]], dict[str, Any]] | None = None   # judged samples -> metrics


# --------------------------------------------------------------------------- verilog (Problem)


def _verilog_read(path: Path) -> list[Problem]:
    from rewards.verilog.loaders import load_problems
    return list(load_problems(path))


def _verilog_from_row(row: dict[str, Any], where: str) -> Problem:
    return Problem.from_dict({k: v for k, v in row.items() if v is not None or k in ("id",)}, where)


def _verilog_prompt(p: Problem) -> str:
    return p.prompt if p.prompt else p.spec


def _verilog_completion(p: Problem) -> str:
    """The reference with its module renamed to what the candidate must define."""
    if p.meta.get("solution"):                  # generators ship the canonical completion
        return str(p.meta["solution"])
    if not p.reference:
        raise ValueError(f"problem {p.id}: SFT needs a reference solution (field `reference`)")
    return re.sub(rf"\bmodule\s+{re.escape(p.ref_module)}\b", f"module {p.top_module}", p.reference, count=1)


def _verilog_columns(problems: list[Problem]) -> list[dict[str, Any]]:
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


# --------------------------------------------------------------------------- security repair (SecurityTask)


def _security_read(path: Path):
    from rewards.security.tasks import read_tasks
    if path.is_dir():
        raise ValueError(f"security tasks: expected a JSONL file, got folder {path}")
    return read_tasks(path)


def _security_from_row(row: dict[str, Any], where: str):
    from dataclasses import fields

    from rewards.security.tasks import SecurityTask
    if "func_src_before" in row:
        return SecurityTask.from_sven(row, where)
    known = {f.name for f in fields(SecurityTask)}
    extra = set(row) - known - {"completion"}             # to_dataset_rows adds `completion`
    if extra:
        raise ValueError(f"{where}: unknown security task field(s) {sorted(extra)}; known: {sorted(known)}")
    row = {k: v for k, v in row.items() if k in known and v not in (None, "")}
    return SecurityTask.from_dict(row, where)


def _security_prompt(t) -> str:
    return t.prompt_text()


def _security_completion(t) -> str:
    from rewards.security.findings import normalize_source
    if not t.reference:
        raise ValueError(f"security task {t.id}: SFT needs a reference fix (field `reference`)")
    return normalize_source(t.reference).strip() + "\n"


def _security_columns(tasks: list) -> list[dict[str, Any]]:
    from rewards.security.scoring import task_row
    return [task_row(t) for t in tasks]


def _security_judge(task, detail: dict[str, Any]) -> dict[str, Any]:
    """scoring.result_row on the reward's RepairScore record; `passed` = secure and correct."""
    from rewards.security.reward import RepairScore
    from rewards.security.scoring import result_row
    row = result_row(task, RepairScore.from_dict(detail))
    row.pop("details")
    return row


def _security_metrics(samples: list[dict[str, Any]]) -> dict[str, Any]:
    from rewards.security.scoring import security_eval_metrics
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in security_eval_metrics(samples).items()}


def _security_type() -> type:
    from rewards.security.tasks import SecurityTask
    return SecurityTask


TASK_KINDS: dict[str, TaskKind] = {
    "verilog": TaskKind("verilog", Problem, ("rtl",), _verilog_read, _verilog_from_row, _verilog_prompt,
                        _verilog_completion, _verilog_columns),
    "security-repair": TaskKind("security-repair", _security_type(), ("security",), _security_read,
                                _security_from_row, _security_prompt, _security_completion, _security_columns,
                                _security_judge, _security_metrics),
}


def task_kind(src: DataSource | None = None, task: str | None = None) -> TaskKind:
    """The kind `task` names; else the one whose generator `src` uses; else verilog."""
    if task is not None:
        if task not in TASK_KINDS:
            raise ValueError(f"unknown task {task!r}; available: {sorted(TASK_KINDS)}")
        return TASK_KINDS[task]
    gen = src.generator if src is not None else None
    return next((k for k in TASK_KINDS.values() if gen in k.generators), TASK_KINDS["verilog"])


def kind_of(record: Any) -> TaskKind:
    for k in TASK_KINDS.values():
        if isinstance(record, k.record_type):
            return k
    raise TypeError(f"not a task record: {type(record).__name__}")


# --------------------------------------------------------------------------- loading


def load_source(src: DataSource, task: str | None = None) -> list:
    """Read or generate the records a source names (of kind `task`, else inferred from the generator);
    raises ValueError naming the source."""
    kind = task_kind(src, task)
    if src.generator:
        if task is not None and src.generator in GENERATORS and src.generator not in kind.generators:
            raise ValueError(f"generator {src.generator!r} does not produce {kind.name} tasks "
                             f"(its generators: {list(kind.generators)})")
        problems = _generate(src)
    elif src.path:
        path = _local_path(src.path)
        if src.columns or src.adapter or raw_rows.is_rows_file(path):
            problems = _from_mapped_rows(src, kind, raw_rows.iter_rows(path), str(path))
        elif path.is_dir() and ((path / "dataset_info.json").is_file() or (path / "state.json").is_file()):
            problems = _from_hf_rows(_load_hf_disk(path), str(path), kind)
        else:
            problems = kind.read_path(path)
    elif src.columns or src.adapter:
        hf_rows = raw_rows.iter_rows(hf=src.hf, hf_split=src.hf_split)
        problems = _from_mapped_rows(src, kind, hf_rows, f"hf:{src.hf}")
    else:
        import datasets
        rows = datasets.load_dataset(src.hf, split=src.hf_split)
        problems = _from_hf_rows(rows, f"hf:{src.hf}", kind)
    if src.n is not None and not src.generator:
        problems = problems[: src.n]
    if not problems:
        raise ValueError(f"data source {src.describe()} holds no problems")
    return problems


def _local_path(spec: str) -> Path:
    """A source path: a file or folder, or a benchmark name (`verilogeval:spec-to-rtl`, `rtllm`) resolved
    to its pinned checkout, fetched on first use (pipelines/benchmarks.py)."""
    from pipelines.benchmarks import resolve
    path = Path(spec).expanduser()
    if not path.exists():
        path = resolve(spec) or path
    if not path.exists():
        raise ValueError(f"data source path not found: {path}")
    return path


def _from_mapped_rows(src: DataSource, kind: TaskKind, source_rows, label: str) -> list:
    """Rows read as they are (columns mapping, named adapter); unusable rows are warned about and skipped."""
    if src.adapter and kind.name != "verilog":
        raise ValueError(f"adapter {src.adapter!r} makes verilog problems, but the task is {kind.name}")
    return raw_rows.records_from_rows(source_rows, label, kind, src.columns, src.adapter, limit=src.n)


def check_source(src: DataSource, task: str | None = None) -> None:
    """Fail now if `src` cannot be read: paths and datasets are loaded, generators draw two tasks."""
    if src.generator:
        from dataclasses import replace
        load_source(replace(src, n=min(src.n or 2, 2)), task)
    else:
        load_source(src, task)


SPEC_HELP = ("a JSONL or parquet file, a VerilogEval or RTLLM folder, a benchmark name "
             "(verilogeval:spec-to-rtl, rtllm), an HF `save_to_disk` folder, or a generator spec "
             + " / ".join(f"{g}:N[:seed[:split]]" for g in GENERATORS))


def source_from_spec(spec: str) -> DataSource:
    """A command line's problem set: a path, or a generator spec ``rtl:300:0:heldout`` (split default
    heldout: what a command evaluates on)."""
    gen, _, rest = spec.partition(":")
    if gen in GENERATORS and rest and not Path(spec).exists():
        parts = rest.split(":")
        try:
            return DataSource(generator=gen, n=int(parts[0]), seed=int(parts[1]) if len(parts) > 1 else 0,
                              split=parts[2] if len(parts) > 2 else "heldout")
        except ValueError:
            raise ValueError(f"generator spec {spec!r}: expected {gen}:N[:seed[:split]]") from None
    return DataSource(path=spec)


def _load_hf_disk(path: Path):
    import datasets
    ds = datasets.load_from_disk(str(path))
    return ds["train"] if isinstance(ds, datasets.DatasetDict) else ds


def _from_hf_rows(rows, where: str, kind: TaskKind) -> list:
    out = []
    for i, row in enumerate(rows):
        row = {k: _maybe_json(v) for k, v in dict(row).items()}
        out.append(kind.from_row(row, f"{where} row {i}"))
    return out


def _maybe_json(v: Any) -> Any:
    if isinstance(v, str) and v[:1] in "{[":
        try:
            return json.loads(v)
        except json.JSONDecodeError:
            return v
    return v


def _generate(src: DataSource) -> list:
    import importlib
    if src.generator not in GENERATORS:
        raise ValueError(f"unknown generator {src.generator!r}; available: {sorted(GENERATORS)}")
    module = importlib.import_module(GENERATORS[src.generator])
    return list(module.generate(n=src.n, seed=src.seed, split=src.split, **src.options))


# --------------------------------------------------------------------------- prompts and rows


def prompt_text(p: Any) -> str:
    return kind_of(p).prompt_text(p)


def completion_text(p: Any) -> str:
    """The SFT target (Verilog: the reference with its module renamed; security: the reference fix)."""
    return kind_of(p).completion_text(p)


def format_prompt(text: str, data_cfg: DataConfig) -> str | list[dict[str, str]]:
    if data_cfg.prompt_format == "chat":
        msgs = [{"role": "system", "content": data_cfg.system_prompt}] if data_cfg.system_prompt else []
        return msgs + [{"role": "user", "content": text}]
    return text


def reward_rows(problems: list, data_cfg: DataConfig) -> list[dict[str, Any]]:
    """One row per record: the kind's reward columns plus `prompt`."""
    if not problems:
        return []
    kind = kind_of(problems[0])
    return [{**cols, "prompt": format_prompt(kind.prompt_text(p), data_cfg)}
            for p, cols in zip(problems, kind.reward_columns(problems))]


def rl_dataset(problems: list, data_cfg: DataConfig):
    """GRPO rows: `prompt` plus the reward's columns."""
    import datasets
    return datasets.Dataset.from_list(reward_rows(problems, data_cfg))


def sft_dataset(problems: list, data_cfg: DataConfig):
    """SFT rows in TRL's prompt-completion form (loss on the completion only)."""
    import datasets
    rows = []
    for p in problems:
        prompt = format_prompt(prompt_text(p), data_cfg)
        completion = completion_text(p)
        if data_cfg.prompt_format == "chat":
            rows.append({"prompt": prompt, "completion": [{"role": "assistant", "content": completion}]})
        else:
            rows.append({"prompt": prompt, "completion": completion})
    return datasets.Dataset.from_list(rows)
