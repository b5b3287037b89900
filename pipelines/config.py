"""Pipeline configs: dataclasses that a YAML file maps onto one to one, plus `key.path=value` overrides.

Why strict: a typo in a 7B run's config should fail in a second, naming the key, not after an hour of
training. Every section is checked before any work starts: our own sections against these dataclasses,
trainer sections against TRL's `SFTConfig` / `GRPOConfig` fields (names and types).
"""
from __future__ import annotations

import copy
import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from sandboxes.strict import OptionError, check_fields, from_dict

STAGE_KINDS = ("sft", "rl", "eval")
Dtype = Literal["float32", "bfloat16", "float16", "auto"]      # model weights (auto: the checkpoint's)


# A config problem, always naming the offending key path: the strict-options error every layer raises.
ConfigError = OptionError


# --------------------------------------------------------------------------- sections


@dataclass
class RunConfig:
    name: str = "run"
    output_dir: str = "runs"          # the run folder is <output_dir>/<name>-<timestamp> unless run_dir is set
    run_dir: str | None = None        # fixed run folder (tests, Slurm); must not hold a finished run
    seed: int = 0


@dataclass
class LoraConfig:
    """PEFT LoRA adapter; merged into the weights when the stage ends so the next stage gets a plain model."""
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: list[str] | str = "all-linear"


@dataclass
class ModelConfig:
    name_or_path: str = "tiny"        # hub id, local path, or `tiny` (built locally by pipelines/tiny.py)
    dtype: Dtype = "float32"
    attn_implementation: str | None = None
    trust_remote_code: bool = False
    lora: LoraConfig | None = None
    tiny: dict[str, Any] = field(default_factory=dict)   # kwargs for the tiny builder (hidden size, layers...)
    tokenizer: str | None = None      # defaults to name_or_path


@dataclass
class DataSource:
    """Where problems come from: a path (JSONL, parquet, VerilogEval or RTLLM folder, HF `save_to_disk`
    dir, or a benchmark name: `verilogeval:spec-to-rtl`, `rtllm`), an HF dataset name (`hf:`), or a
    generator spec (`generator: rtl, n: 2000, seed: 0, split: train`). Datasets in their own layout take
    `columns:` (record field <- source column, dotted paths) and/or a named `adapter:` (pipelines/rows.py)."""
    path: str | None = None
    hf: str | None = None             # HF dataset name or local dir loaded with `datasets.load_dataset`
    hf_split: str = "train"
    hf_files: str | list[str] | None = None   # hf: which files of the dataset repo (load_dataset data_files)
    generator: str | None = None      # rtl (Verilog) | security (security repair)
    n: int | None = None              # generator: how many; path/hf: keep the first n
    seed: int = 0
    split: str = "train"              # generator split (train | heldout) - disjoint task streams
    options: dict[str, Any] = field(default_factory=dict)   # extra generator kwargs
    columns: dict[str, str] = field(default_factory=dict)   # path/hf: record field <- source column (a.b.c)
    adapter: str | None = None        # path/hf: a named row layout (rewards.verilog.adapters.ADAPTERS)

    def describe(self) -> str:
        if self.generator:
            return f"generator={self.generator} n={self.n} seed={self.seed} split={self.split}"
        where = f"path={self.path}" if self.path else f"hf={self.hf}[{self.hf_split}]"
        return where + (f" adapter={self.adapter}" if self.adapter else "")


@dataclass
class DataConfig:
    train: DataSource | None = None
    eval: DataSource | None = None
    prompt_format: Literal["plain", "chat"] = "plain"   # plain: prompt text, completion = module; chat: messages
    system_prompt: str | None = None  # chat format only
    task: str | None = None           # verilog | security-repair; default: from the generator, else verilog


@dataclass
class RewardEntry:
    """One entry of `rewards:` (mirrors rewards.registry.RewardSpec)."""
    name: str = "verilog_functional"
    weight: float = 1.0
    kwargs: dict[str, Any] = field(default_factory=dict)
    timeout_s: float | None = None


@dataclass
class EvalSettings:
    n: int = 1                        # samples per problem
    k: list[int] = field(default_factory=lambda: [1])
    temperature: float = 0.0          # 0 = greedy (needs n == 1)
    greedy: bool = False              # also decode greedily and report greedy pass@1 (with n > 1 at T > 0)
    top_p: float = 1.0
    max_new_tokens: int = 96
    batch_size: int = 64              # prompts per generate call
    backend: Literal["hf", "vllm"] = "hf"
    pass_threshold: float = 1.0       # a sample passes when its reward >= this
    limit: int | None = None          # evaluate only the first N problems
    models: list[str] = field(default_factory=list)   # earlier stages whose final models to evaluate too


@dataclass
class StageConfig:
    """One stage. `trainer` holds TRL's SFTConfig/GRPOConfig fields, `gating` EARL's GatingConfig fields,
    `dynamic_sampling` DynamicSamplingConfig's (pipelines/dynamic_sampling.py), `settings` an eval stage's
    sampling and scoring."""
    kind: str = ""                    # sft | rl | eval; defaults to the stage's name
    data: DataSource | None = None    # overrides data.train for this stage
    trainer: dict[str, Any] = field(default_factory=dict)
    gating: dict[str, Any] | None = None
    dynamic_sampling: dict[str, Any] | None = None   # rl stages: drop equal-reward groups, refill (DAPO)
    reward_overlap: bool | None = None   # rl stages: score during TRL's log-prob passes (None: off; reward_overlap.py)
    settings: EvalSettings = field(default_factory=EvalSettings)   # eval stages only


@dataclass
class PipelineConfig:
    run: RunConfig = field(default_factory=RunConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    rewards: list[RewardEntry] = field(default_factory=lambda: [RewardEntry()])
    stages: dict[str, StageConfig] = field(default_factory=dict)
    launch: dict[str, Any] = field(default_factory=dict)   # multi-process launch (pipelines/launch.py)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


# --------------------------------------------------------------------------- typed mapping


# --------------------------------------------------------------------------- overrides and loading


def parse_override(text: str) -> tuple[list[str], Any]:
    """`stages.rl.trainer.learning_rate=1e-4` -> (['stages','rl','trainer','learning_rate'], 1e-4)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected key.path=value")
    path, _, value = text.partition("=")
    if not path.strip():
        raise ConfigError(f"override {text!r}: empty key")
    try:
        parsed = yaml.safe_load(value) if value.strip() else None
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"override {text!r}: the value is not valid YAML ({where})") from None
    return path.strip().split("."), parsed


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Set each `a.b.c=value` in the raw mapping (creating mappings on the way); validation comes after,
    so a misspelt key still fails naming it."""
    for text in overrides:
        keys, value = parse_override(text)
        node = raw
        for i, k in enumerate(keys[:-1]):
            nxt = node.get(k)
            if nxt is None:
                nxt = node[k] = {}
            if not isinstance(nxt, dict):
                raise ConfigError(f"override {text!r}: {'.'.join(keys[:i + 1])} is not a mapping")
            node = nxt
        node[keys[-1]] = value
    return raw


# Counts and rates TRL would take silently (max_steps=-5 trains epochs) or reject late with a traceback.
# field -> (lowest allowed, inclusive?, what it is); max_steps also takes TRL's -1 = "use num_train_epochs".
TRAINER_RANGES: dict[str, tuple[float, bool, str]] = {
    "max_steps": (1, True, "a step count"),
    "num_train_epochs": (0, False, "an epoch count"),
    "learning_rate": (0, False, "a learning rate"),
    "per_device_train_batch_size": (1, True, "a batch size"),
    "per_device_eval_batch_size": (1, True, "a batch size"),
    "gradient_accumulation_steps": (1, True, "a step count"),
    "num_generations": (2, True, "GRPO needs at least 2 completions per prompt"),
    "max_completion_length": (1, True, "a token count"),
    "max_prompt_length": (1, True, "a token count"),
    "max_length": (1, True, "a token count"),
    "save_steps": (0, False, "a step interval"),
    "logging_steps": (0, False, "a step interval"),
    "save_total_limit": (1, True, "a checkpoint count"),
    "temperature": (0, False, "a sampling temperature"),
    "beta": (0, True, "a KL coefficient"),
    "warmup_ratio": (0, True, "a ratio"),
    "weight_decay": (0, True, "a rate"),
    "max_grad_norm": (0, True, "a norm"),
    "epsilon": (0, True, "a clip range"),
    "num_iterations": (1, True, "an iteration count"),
    "steps_per_generation": (1, True, "a step count"),
}


def check_ranges(values: dict[str, Any], key: str, ranges: dict[str, tuple[float, bool, str]]) -> None:
    """Reject a number below its field's bound, naming the key (None = the library's default)."""
    for name, (low, inclusive, what) in ranges.items():
        v = values.get(name)
        if v is None or isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        if name == "max_steps" and v == -1:
            continue
        if v < low or (v == low and not inclusive):
            bound = f">= {low}" if inclusive else f"> {low}"
            extra = " (or -1: train num_train_epochs)" if name == "max_steps" else ""
            raise ConfigError(f"{key}.{name}: must be {bound}{extra}, got {v} ({what})")


def _trl_config_class(kind: str) -> type:
    from trl import GRPOConfig, SFTConfig  # pyright: ignore[reportPrivateImportUsage]  trl exports these lazily (_LazyModule), pyright sees no re-export
    return {"sft": SFTConfig, "rl": GRPOConfig}[kind]


def _rl_section_class(section: str) -> type:
    """The dataclass of an rl-only section (imported here: both pull in torch, needed only when used)."""
    if section == "gating":
        from pipelines.gating import GatingConfig
        return GatingConfig
    from pipelines.dynamic_sampling import DynamicSamplingConfig
    return DynamicSamplingConfig


def _validate_rl_section(stage: StageConfig, key: str, section: str) -> None:
    """An rl-only section (gating, dynamic_sampling): names and types against its class, then its own checks."""
    value = getattr(stage, section)
    if value is None:
        return
    if stage.kind != "rl":
        raise ConfigError(f"{key}.{section}: only an rl stage takes {section}")
    cls = _rl_section_class(section)
    value = check_fields(cls, value, f"{key}.{section}")
    setattr(stage, section, value)
    try:
        cls(**value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{key}.{exc}" if str(exc).startswith(f"{section}.") else f"{key}.{section}: {exc}") from exc


def validate(cfg: PipelineConfig) -> PipelineConfig:
    """Cross-field checks and trainer-section checks against TRL; raises ConfigError naming the key."""
    if not cfg.stages:
        raise ConfigError("stages: at least one stage (sft, rl, eval) is required")
    for name, stage in cfg.stages.items():
        key = f"stages.{name}"
        stage.kind = stage.kind or name
        if stage.kind not in STAGE_KINDS:
            raise ConfigError(f"{key}.kind: expected one of {list(STAGE_KINDS)}, got {stage.kind!r} "
                              f"(a stage named otherwise needs an explicit kind)")
        if stage.kind in ("sft", "rl"):
            stage.trainer = check_fields(_trl_config_class(stage.kind), stage.trainer, f"{key}.trainer")
            check_ranges(stage.trainer, f"{key}.trainer", TRAINER_RANGES)
            if "reward_weights" in stage.trainer:
                raise ConfigError(f"{key}.trainer.reward_weights: set each reward's weight in `rewards:` "
                                  "(rewards[i].weight), the one place weights are read from")
            if stage.data is None and cfg.data.train is None:
                raise ConfigError(f"{key}.data: stage {name} needs training data (data.train or {key}.data)")
        elif stage.trainer:
            raise ConfigError(f"{key}.trainer: an eval stage takes `settings:`, not `trainer:`")
        if stage.reward_overlap is not None and stage.kind != "rl":
            raise ConfigError(f"{key}.reward_overlap: only an rl stage takes reward_overlap")
        _validate_rl_section(stage, key, "gating")
        _validate_rl_section(stage, key, "dynamic_sampling")
        if stage.kind == "eval":
            _validate_eval(stage, cfg, name)
    for i, src in enumerate([cfg.data.train, cfg.data.eval]):
        if src is not None:
            _validate_source(src, f"data.{'train' if i == 0 else 'eval'}")
    for name, stage in cfg.stages.items():
        if stage.data is not None:
            _validate_source(stage.data, f"stages.{name}.data")
    _validate_launch(cfg.launch)
    if cfg.model.name_or_path == "tiny" and cfg.model.tiny:
        from pipelines.tiny import TinyConfig
        check_fields(TinyConfig, cfg.model.tiny, "model.tiny")
    _validate_task(cfg)
    if not cfg.rewards and any(s.kind in ("rl", "eval") for s in cfg.stages.values()):
        raise ConfigError("rewards: rl and eval stages need at least one reward")
    return cfg


def _validate_launch(launch: dict[str, Any]) -> None:
    if not launch:
        return
    from pipelines.launch import LaunchConfig
    check_fields(LaunchConfig, launch, "launch")


def _validate_task(cfg: PipelineConfig) -> None:
    """data.task must be a known kind, and every generator source must produce that kind."""
    from pipelines.tasks import kinds
    if cfg.data.task is not None and cfg.data.task not in kinds.names():
        raise ConfigError(f"data.task: expected one of {kinds.names()}, got {cfg.data.task!r}")
    sources = {"data.train": cfg.data.train, "data.eval": cfg.data.eval,
               **{f"stages.{n}.data": s.data for n, s in cfg.stages.items()}}
    gens = {k: s.generator for k, s in sources.items() if s is not None and s.generator in kinds.generators()}
    made = {k: kinds.for_generator(g).name for k, g in gens.items()}
    want = cfg.data.task or next(iter(made.values()), kinds.resolve().name)
    for key, kind in made.items():
        if kind != want:
            raise ConfigError(f"{key}.generator: {gens[key]!r} makes {kind} tasks, but "
                              + (f"data.task is {want!r}" if cfg.data.task else f"other sources make {want}"))
    cfg.data.task = want            # resolved once: path sources (a JSONL) are read as this kind


def _validate_source(src: DataSource, key: str) -> None:
    given = [k for k in ("path", "hf", "generator") if getattr(src, k)]
    if len(given) != 1:
        raise ConfigError(f"{key}: give exactly one of path, hf, generator (got {given or 'none'})")
    if src.generator and not src.n:
        raise ConfigError(f"{key}.n: a generator source needs n (how many problems)")
    if src.n is not None and src.n < 1:
        raise ConfigError(f"{key}.n: must be >= 1, got {src.n}")
    if src.hf_files is not None and not src.hf:
        raise ConfigError(f"{key}.hf_files: names files of an `hf:` dataset; this source has no hf")
    if src.generator and (src.columns or src.adapter):
        raise ConfigError(f"{key}: columns/adapter apply to path and hf sources, not generators")
    if src.adapter is not None:
        from rewards.verilog.adapters import ADAPTERS
        if src.adapter not in ADAPTERS:
            raise ConfigError(f"{key}.adapter: unknown adapter {src.adapter!r}; known: {', '.join(ADAPTERS)}")
    for target, source in src.columns.items():
        if not isinstance(source, str) or not source.strip():
            raise ConfigError(f"{key}.columns.{target}: expected a source column name (a.b.c), got {source!r}")


EVAL_RANGES: dict[str, tuple[float, bool, str]] = {
    "temperature": (0, True, "a sampling temperature"), "max_new_tokens": (1, True, "a token count"),
    "batch_size": (1, True, "a batch size"), "limit": (1, True, "a problem count"),
}


def _validate_eval(stage: StageConfig, cfg: PipelineConfig, name: str) -> None:
    ev, key = stage.settings, f"stages.{name}.settings"
    if cfg.data.eval is None and stage.data is None:
        raise ConfigError(f"data.eval: stage {name} evaluates, so data.eval (or stages.{name}.data) must "
                          "name the held-out problems")
    if ev.n < 1:
        raise ConfigError(f"{key}.n: need at least one sample per problem")
    check_ranges(dataclasses.asdict(ev), key, EVAL_RANGES)
    if not 0 < ev.top_p <= 1:
        raise ConfigError(f"{key}.top_p: must be in (0, 1], got {ev.top_p}")
    bad = [k for k in ev.k if k < 1 or k > ev.n]
    if bad:
        raise ConfigError(f"{key}.k: pass@{bad[0]} needs 1 <= k <= n (n={ev.n})")
    if ev.temperature == 0 and ev.n > 1:
        raise ConfigError(f"{key}.temperature: greedy decoding (0) gives identical samples; use n=1 or T>0")
    if ev.greedy and ev.temperature == 0:
        raise ConfigError(f"{key}.greedy: the samples are greedy already (temperature 0); greedy: true adds a "
                          "greedy decode next to sampling at T > 0")
    earlier = list(cfg.stages)[:list(cfg.stages).index(name)]
    for m in ev.models:
        if m not in earlier:
            raise ConfigError(f"{key}.models: {m!r} is not a stage before {name} (earlier: {earlier})")


def _local(path: str | None) -> str | None:
    """`path` made absolute when it names something on this disk (hub ids and `tiny` stay as they are)."""
    if not path or not os.path.exists(os.path.expanduser(path)):
        return path
    return os.path.abspath(os.path.expanduser(path))


def absolute_paths(cfg: PipelineConfig) -> PipelineConfig:
    """A copy whose local paths are absolute: the config a run folder keeps, valid from any directory."""
    cfg = copy.deepcopy(cfg)
    cfg.run.output_dir = os.path.abspath(os.path.expanduser(cfg.run.output_dir))
    if cfg.run.run_dir:
        cfg.run.run_dir = os.path.abspath(os.path.expanduser(cfg.run.run_dir))
    if cfg.model.name_or_path != "tiny":
        cfg.model.name_or_path = _local(cfg.model.name_or_path) or cfg.model.name_or_path
    cfg.model.tokenizer = _local(cfg.model.tokenizer)
    for src in [cfg.data.train, cfg.data.eval, *(s.data for s in cfg.stages.values())]:
        if src is not None:
            src.path = _local(src.path)
            if src.hf:
                src.hf = _local(src.hf)
    return cfg


def load_config(path: str | Path | None = None, overrides: list[str] | None = None,
                raw: dict[str, Any] | None = None) -> PipelineConfig:
    """Read YAML (or take `raw`), apply overrides, map onto the dataclasses, validate."""
    if raw is None:
        if path is None:
            raise ConfigError("no config given")
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: invalid YAML ({' '.join(str(exc).split())})") from None
        except UnicodeDecodeError as exc:
            line = path.read_bytes()[: exc.start].count(b"\n") + 1
            raise ConfigError(f"{path}:{line}: not UTF-8 text (byte {exc.object[exc.start]:#04x})") from None
    raw = apply_overrides(raw or {}, list(overrides or []))
    return validate(from_dict(PipelineConfig, raw))
