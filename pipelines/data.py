"""Problems for a stage: load a `DataSource` into `Problem` records, then into a TRL-ready `Dataset`.

Formats are adapters at the edge: JSONL / VerilogEval / RTLLM folders go through
rewards.verilog.loaders, HF datasets through `datasets`, generators through pipelines/tasks.
Dataset rows carry every Problem field as a column, so TRL hands them to the reward unchanged.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from pipelines.config import DataConfig, DataSource
from rewards.verilog.problems import Problem

GENERATORS = {"rtl": "pipelines.tasks.rtlgen"}


def load_source(src: DataSource) -> list[Problem]:
    """Read or generate the problems a source names; raises ValueError naming the source."""
    if src.generator:
        problems = _generate(src)
    elif src.path:
        path = Path(src.path).expanduser()
        if not path.exists():
            raise ValueError(f"data source path not found: {path}")
        if path.is_dir() and ((path / "dataset_info.json").is_file() or (path / "state.json").is_file()):
            problems = _from_hf_rows(_load_hf_disk(path), str(path))
        else:
            from rewards.verilog.loaders import load_problems
            problems = list(load_problems(path))
    else:
        import datasets
        rows = datasets.load_dataset(src.hf, split=src.hf_split)
        problems = _from_hf_rows(rows, f"hf:{src.hf}")
    if src.n is not None and not src.generator:
        problems = problems[: src.n]
    if not problems:
        raise ValueError(f"data source {src.describe()} holds no problems")
    return problems


def _load_hf_disk(path: Path):
    import datasets
    ds = datasets.load_from_disk(str(path))
    return ds["train"] if isinstance(ds, datasets.DatasetDict) else ds


def _from_hf_rows(rows, where: str) -> list[Problem]:
    out = []
    for i, row in enumerate(rows):
        row = {k: _maybe_json(v) for k, v in dict(row).items()}
        out.append(Problem.from_dict({k: v for k, v in row.items() if v is not None or k in ("id",)},
                                     f"{where} row {i}"))
    return out


def _maybe_json(v: Any) -> Any:
    if isinstance(v, str) and v[:1] in "{[":
        try:
            return json.loads(v)
        except json.JSONDecodeError:
            return v
    return v


def _generate(src: DataSource) -> list[Problem]:
    import importlib
    if src.generator not in GENERATORS:
        raise ValueError(f"unknown generator {src.generator!r}; available: {sorted(GENERATORS)}")
    module = importlib.import_module(GENERATORS[src.generator])
    return list(module.generate(n=src.n, seed=src.seed, split=src.split, **src.options))


# --------------------------------------------------------------------------- prompts and rows


def prompt_text(p: Problem) -> str:
    return p.prompt if p.prompt else p.spec


def completion_text(p: Problem) -> str:
    """The SFT target: the reference with its module renamed to what the candidate must define."""
    if p.meta.get("solution"):                  # generators ship the canonical completion
        return str(p.meta["solution"])
    if not p.reference:
        raise ValueError(f"problem {p.id}: SFT needs a reference solution (field `reference`)")
    return re.sub(rf"\bmodule\s+{re.escape(p.ref_module)}\b", f"module {p.top_module}", p.reference, count=1)


def format_prompt(text: str, data_cfg: DataConfig) -> str | list[dict[str, str]]:
    if data_cfg.prompt_format == "chat":
        msgs = [{"role": "system", "content": data_cfg.system_prompt}] if data_cfg.system_prompt else []
        return msgs + [{"role": "user", "content": text}]
    return text


def _row(p: Problem, data_cfg: DataConfig, with_files: bool) -> dict[str, Any]:
    row = {"id": p.id, "spec": p.spec, "testbench": p.testbench, "top_module": p.top_module,
           "reference": p.reference, "ref_module": p.ref_module, "harness": p.harness, "meta": p.meta,
           "prompt": format_prompt(prompt_text(p), data_cfg)}
    if with_files:      # Arrow cannot hold an empty struct; rewards treat a missing column as no files
        row["files"] = p.files
    return row


def reward_rows(problems: list[Problem], data_cfg: DataConfig) -> list[dict[str, Any]]:
    """One row per problem: `prompt` plus every Problem field as a reward column (dicts stay dicts;
    Arrow fills keys missing in a row with None, which the reward drops)."""
    with_files = any(p.files for p in problems)
    return [_row(p, data_cfg, with_files) for p in problems]


def rl_dataset(problems: list[Problem], data_cfg: DataConfig):
    """GRPO rows: `prompt` plus every Problem field as a reward column."""
    import datasets
    return datasets.Dataset.from_list(reward_rows(problems, data_cfg))


def sft_dataset(problems: list[Problem], data_cfg: DataConfig):
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
