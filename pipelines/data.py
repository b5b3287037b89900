"""Problems for a stage: load a `DataSource` into task records, then into a TRL-ready `Dataset`.

A task kind (pipelines/tasks/kinds.py) is the one place that knows a record type: how to load it, its
prompt, its SFT target, the reward columns, and (optionally) how eval reads the reward's per-sample
details. Verilog (`Problem`, the default) and security repair (`SecurityTask`) are the kinds. Formats are
adapters at the edge: JSONL / VerilogEval / RTLLM folders go through rewards.verilog.loaders,
security JSONL through rewards.security.tasks, HF datasets through `datasets`, datasets in their own
layout (parquet, `columns:` mappings, named adapters) through pipelines/rows.py, benchmark names
through pipelines/benchmarks.py, generators through pipelines/tasks. Dataset rows carry the reward's
columns, so TRL hands them to the reward unchanged.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pipelines import rows as raw_rows
from pipelines.config import DataConfig, DataSource
from pipelines.tasks import kinds
from pipelines.tasks.kinds import TaskKind


def task_kind(src: DataSource | None = None, task: str | None = None) -> TaskKind:
    """The kind `task` names; else the one whose generator `src` uses; else verilog."""
    return kinds.resolve(task, src.generator if src is not None else None)


def kind_of(record: Any) -> TaskKind:
    return kinds.kind_of(record)


# --------------------------------------------------------------------------- loading


def load_source(src: DataSource, task: str | None = None) -> list:
    """Read or generate the records a source names (of kind `task`, else inferred from the generator);
    raises ValueError naming the source."""
    kind = task_kind(src, task)
    if src.generator:
        if task is not None and src.generator in kinds.generators() and src.generator != kind.generator:
            raise ValueError(f"generator {src.generator!r} does not produce {kind.name} tasks "
                             f"(its generator: {kind.generator})")
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
        hf_rows = raw_rows.iter_rows(hf=src.hf, hf_split=src.hf_split, hf_files=src.hf_files)
        problems = _from_mapped_rows(src, kind, hf_rows, f"hf:{src.hf}")
    else:
        import datasets
        assert src.hf, "validate() gives every source exactly one of path, hf, generator"
        rows = datasets.load_dataset(src.hf, split=src.hf_split, data_files=src.hf_files)
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
             + " / ".join(f"{g}:N[:seed[:split]]" for g in kinds.generators()))


def source_from_spec(spec: str) -> DataSource:
    """A command line's problem set: a path, or a generator spec ``rtl:300:0:heldout`` (split default
    heldout: what a command evaluates on)."""
    gen, _, rest = spec.partition(":")
    if gen in kinds.generators() and rest and not Path(spec).exists():
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
    assert src.generator, "called for generator sources only"
    kind = kinds.for_generator(src.generator)
    return list(kind.generate(n=src.n, seed=src.seed, split=src.split, **src.options))


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
            for p, cols in zip(problems, kind.reward_columns(problems), strict=False)]


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
