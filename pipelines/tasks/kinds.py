"""Task kinds: everything the pipeline knows about one kind of task record, declared in one place.

A kind lives in its own module next to its generator (`pipelines/tasks/verilog.py`,
`pipelines/tasks/security.py`) and names: its record type, its generator, its default reward, the
reward's stage vocabulary, the `earl score` scorer, and how a record is loaded, prompted, turned into
an SFT target and into reward columns. Configs (`data.task`, `generator:`), `earl eval/score/entropy
--task`, the stage runner and eval all read this registry; nothing else lists the kinds.

This module imports no kind until asked (a kind module imports its reward's record types, not the
reward), and nothing from `pipelines.config` / `pipelines.data`, so both can import it.
"""
from __future__ import annotations

import functools
import importlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# The modules that each define KIND; the first is the default kind.
MODULES: tuple[str, ...] = ("pipelines.tasks.verilog", "pipelines.tasks.security")


@dataclass(frozen=True)
class TaskKind:
    """One kind of task record (records all have an ``id``)."""
    name: str                                                # data.task / --task value
    record_type: type
    generator: str                                           # `generator:` name (configs, rtl:N specs)
    generate: Callable[..., Iterable]                        # generate(n=, seed=, split=, **options)
    default_reward: str                                      # reward registry name
    stages: tuple[str, ...]                                  # the default reward's stage vocabulary
    scorer: str                     # module behind `earl score`: score_samples(), optionally reference_samples()
    read_path: Callable[[Path], list]                        # a file or folder -> records
    from_row: Callable[[dict[str, Any], str], Any]           # a dataset row (JSON decoded) -> record
    prompt_text: Callable[[Any], str]
    completion_text: Callable[[Any], str]                    # the SFT target
    reward_columns: Callable[[list], list[dict[str, Any]]]   # records -> the reward's columns, one row each
    # eval: (record, the first reward's detail record) -> {"passed", "stage", ...}; None: the detail's
    # stage == the last of `stages` decides, else the reward threshold
    judge: Callable[[Any, dict[str, Any]], dict[str, Any]] | None = None
    metrics: Callable[[list[dict[str, Any]]], dict[str, Any]] | None = None   # judged samples -> metrics

    def scoring(self) -> Any:
        """The scorer module, imported on first use (Verilog scoring never imports bandit)."""
        return importlib.import_module(self.scorer)


@functools.cache
def kinds() -> dict[str, TaskKind]:
    """name -> kind, in MODULES order."""
    out: dict[str, TaskKind] = {}
    for module in MODULES:
        kind = importlib.import_module(module).KIND
        out[kind.name] = kind
    return out


def names() -> list[str]:
    return list(kinds())


def generators() -> list[str]:
    return [k.generator for k in kinds().values()]


def get(name: str) -> TaskKind:
    try:
        return kinds()[name]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; available: {names()}") from None


def for_generator(generator: str) -> TaskKind:
    for k in kinds().values():
        if k.generator == generator:
            return k
    raise ValueError(f"unknown generator {generator!r}; available: {generators()}")


def resolve(task: str | None = None, generator: str | None = None) -> TaskKind:
    """The kind `task` names; else the one `generator` makes; else the default (Verilog)."""
    if task is not None:
        return get(task)
    if generator is not None and generator in generators():
        return for_generator(generator)
    return next(iter(kinds().values()))


def kind_of(record: Any) -> TaskKind:
    for k in kinds().values():
        if isinstance(record, k.record_type):
            return k
    raise TypeError(f"not a task record: {type(record).__name__}")
