"""Stage runner: run a config's stages in order, each stage's final model feeding the next, in a run folder
that can be resumed after a crash.

Run folder layout::

    <run>/config.yaml          resolved config (what `--resume` re-reads)
    <run>/state.json           per stage: status (running | done), final model path, wall time, result
    <run>/base_model/          the tiny model when model.name_or_path is `tiny`
    <run>/stages/<name>/checkpoints/checkpoint-N   TRL checkpoints (resume point)
    <run>/stages/<name>/final/                     the stage's model, the next stage's input
    <run>/metrics.jsonl        one line per trainer log: {"stage", "step", ...TRL metrics}
    <run>/tensorboard/<name>/  the same metrics for TensorBoard
    <run>/eval/<label>.json    per-problem results of each evaluated model (eval/<stage>/ for other eval stages)
    <run>/report.md, plots/    written when the run ends
    <run>/stop-requested       present = save a checkpoint at the next step end and stop (pipelines.preemption)

Paths in state.json are relative to the run folder, and the config written there holds absolute data
and model paths, so `earl train --resume RUN` works from any directory and after the folder moved.
"""
from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from pipelines.config import ConfigError, PipelineConfig, StageConfig, absolute_paths, load_config
from pipelines.preemption import Preempted, StopRequest, stop_callback

log = logging.getLogger(__name__)


def is_main() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


class RunFolder:
    """Paths and the resumable state of one run."""

    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser().absolute()
        self.config_path = self.root / "config.yaml"
        self.state_path = self.root / "state.json"
        self.metrics_path = self.root / "metrics.jsonl"

    def stage_dir(self, name: str) -> Path:
        return self.root / "stages" / name

    def checkpoints_dir(self, name: str) -> Path:
        return self.stage_dir(name) / "checkpoints"

    def final_dir(self, name: str) -> Path:
        return self.stage_dir(name) / "final"

    def load_state(self) -> dict[str, Any]:
        if self.state_path.is_file():
            return json.loads(self.state_path.read_text())
        return {"stages": {}}

    def relative(self, path: str | Path) -> str:
        """A path inside the run folder as written to state.json (relative to it); others unchanged."""
        p = Path(path).expanduser().absolute()
        return str(p.relative_to(self.root)) if p.is_relative_to(self.root) else str(path)

    def resolve(self, path: str) -> str:
        """A state.json path back to one the process can open (a hub id stays as it is)."""
        if Path(path).is_absolute() or not (self.root / path).exists():
            return path
        return str(self.root / path)

    def save_state(self, state: dict[str, Any]) -> None:
        if not is_main():
            return
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2))
        os.replace(tmp, self.state_path)        # atomic: a SIGKILL never leaves half a state file

    def last_checkpoint(self, name: str) -> str | None:
        """Highest complete checkpoint-N (trainer_state.json is written last, so a checkpoint cut short
        by a kill is skipped)."""
        d = self.checkpoints_dir(name)
        done = [c for c in d.glob("checkpoint-*") if (c / "trainer_state.json").is_file()] if d.is_dir() else []
        return str(max(done, key=lambda c: int(c.name.split("-")[-1]))) if done else None

    def read_metrics(self, stage: str | None = None) -> list[dict[str, Any]]:
        if not self.metrics_path.is_file():
            return []
        rows = [json.loads(line) for line in self.metrics_path.read_text().splitlines() if line.strip()]
        return [r for r in rows if stage is None or r.get("stage") == stage]

    def truncate_metrics(self, stage: str, after_step: int) -> None:
        """Drop `stage` lines logged after `after_step`: a resumed stage logs those steps again."""
        if not self.metrics_path.is_file() or not is_main():
            return
        keep = [r for r in self.read_metrics() if r.get("stage") != stage or r.get("step", 0) <= after_step]
        self.metrics_path.write_text("".join(json.dumps(r) + "\n" for r in keep))


@dataclass
class StageContext:
    """What a stage needs: its config, where to write, which model to start from, where to resume."""
    cfg: PipelineConfig
    name: str
    stage: StageConfig
    run: RunFolder
    model_path: str
    resume_from: str | None = None
    finals: dict[str, str] = field(default_factory=dict)   # finished stages -> final model path
    stop: StopRequest | None = None                         # the run's stop flag (signals, stop file)
    _stop_cb: Any = field(default=None, init=False, repr=False)

    @property
    def out_dir(self) -> Path:
        return self.run.stage_dir(self.name)

    def callbacks(self) -> list:
        """What every trainer stage gets: metrics to the run folder, and stop-on-request."""
        self._stop_cb = stop_callback(self.stop or StopRequest(self.run.root))
        return [metrics_callback(self.run, self.name), self._stop_cb]

    def fit(self, trainer) -> Any:
        """trainer.train(), resuming where the run left off; raises Preempted when it stopped on request
        (the checkpoint is saved, the stage stays unfinished)."""
        out = trainer.train(resume_from_checkpoint=self.resume_from)
        cb = self._stop_cb
        if cb is not None and cb.stopped_at is not None and trainer.state.global_step < trainer.state.max_steps:
            raise Preempted(self.name, cb.stopped_at, self.run.last_checkpoint(self.name), cb.reason)
        return out


# --------------------------------------------------------------------------- trainer arguments


def trainer_args(cfg: PipelineConfig, name: str, stage: StageConfig, run: RunFolder):
    """Build TRL's SFTConfig / GRPOConfig for a stage, with run-folder defaults the user did not set."""
    from trl import GRPOConfig, SFTConfig  # pyright: ignore[reportPrivateImportUsage]  trl exports these lazily (_LazyModule), pyright sees no re-export
    cls = SFTConfig if stage.kind == "sft" else GRPOConfig
    kw = dict(stage.trainer)
    kw.setdefault("output_dir", str(run.checkpoints_dir(name)))
    kw.setdefault("seed", cfg.run.seed)
    kw.setdefault("data_seed", kw["seed"])
    kw.setdefault("report_to", "none")              # metrics go to the run folder (JSONL + TensorBoard)
    kw.setdefault("logging_steps", 1)
    kw.setdefault("save_strategy", "steps")
    kw.setdefault("save_steps", 50)
    kw.setdefault("save_total_limit", 2)
    kw.setdefault("disable_tqdm", True)
    kw.setdefault("use_cpu", not _has_accelerator())
    if cfg.model.dtype == "bfloat16":
        kw.setdefault("bf16", True)
    try:
        return cls(**kw)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"stages.{name}.trainer: {cls.__name__} rejected the settings: {exc}") from None


def _has_accelerator() -> bool:
    import torch
    return torch.cuda.is_available()


# --------------------------------------------------------------------------- metrics


def metrics_callback(run: RunFolder, stage: str):
    """A TrainerCallback writing every log to metrics.jsonl and TensorBoard, tagged with the stage."""
    from transformers import TrainerCallback

    class RunMetrics(TrainerCallback):
        def __init__(self):
            self.tb = None

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not state.is_world_process_zero or not logs:
                return
            row = {"stage": stage, "step": state.global_step, "time": time.time(), **logs}
            with run.metrics_path.open("a") as fh:
                fh.write(json.dumps(row, default=float) + "\n")
            if self.tb is None:
                from torch.utils.tensorboard import SummaryWriter
                self.tb = SummaryWriter(str(run.root / "tensorboard" / stage))
            for k, v in logs.items():
                if isinstance(v, (int, float)):
                    self.tb.add_scalar(k, v, state.global_step)

        def on_train_end(self, args, state, control, **kwargs):
            if self.tb is not None:
                self.tb.close()

    return RunMetrics()


# --------------------------------------------------------------------------- the runner


def _stage_module(kind: str):
    import importlib
    return importlib.import_module(f"pipelines.stages.{kind}")


class RunInterrupted(Exception):
    """Ctrl-C during a run: the folder is resumable from its last checkpoint."""

    def __init__(self, run: RunFolder):
        self.run = run
        super().__init__(f"interrupted; resume with: earl train --resume {run.root}")


def new_run_folder(cfg: PipelineConfig) -> RunFolder:
    if cfg.run.run_dir:
        root = Path(cfg.run.run_dir)
        if (root / "state.json").is_file() and is_main():
            raise ConfigError(f"run.run_dir: {root} already holds a run; resume it with --resume {root}")
    else:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        root = Path(cfg.run.output_dir) / f"{cfg.run.name}-{stamp}"
    return RunFolder(root)


def check_trainers(cfg: PipelineConfig, run: RunFolder) -> None:
    """Build every stage's TRL config up front so a bad value fails before any work."""
    for name, stage in cfg.stages.items():
        if stage.kind in ("sft", "rl"):
            trainer_args(cfg, name, stage, run)


def check_sources(cfg: PipelineConfig) -> None:
    """Load (generators: draw a few of) every data source a stage will read, naming the key on failure."""
    from pipelines.data import check_source
    sources = {"data.train": cfg.data.train, "data.eval": cfg.data.eval,
               **{f"stages.{n}.data": s.data for n, s in cfg.stages.items()}}
    for key, src in sources.items():
        if src is not None:
            try:
                check_source(src, cfg.data.task)
            except (ValueError, OSError) as exc:
                raise ConfigError(f"{key}: {exc}") from None


def check_writable(root: Path) -> None:
    """The run folder's nearest existing ancestor must take a new file: fail now, not after SFT."""
    probe = root
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise ConfigError(f"run.output_dir: cannot write the run folder {root} ({probe} is not a writable folder)")


def check_rewards(cfg: PipelineConfig) -> None:
    """Build the rewards once: unknown names and bad kwargs fail here as ConfigError, a missing program
    (iverilog, yosys, bwrap) as sandboxes.tools.ToolNotFound, both before any training."""
    if not any(s.kind in ("rl", "eval") for s in cfg.stages.values()):
        return
    from rewards.registry import compose
    try:
        funcs, _ = compose([vars(r) for r in cfg.rewards])
    except ValueError as exc:
        raise ConfigError(f"rewards: {exc}") from None
    for fn in funcs:
        close = getattr(fn, "close", None)
        if callable(close):
            close()


def preflight(cfg: PipelineConfig, run: RunFolder) -> None:
    """Everything that can be checked before any work: TRL configs, model path, data, output folder.
    `earl train --dry-run` runs exactly this."""
    from pipelines.modeling import check_model_path
    check_trainers(cfg, run)
    if cfg.model.name_or_path != "tiny":
        try:
            check_model_path(cfg.model.name_or_path)
        except ValueError as exc:
            raise ConfigError(f"model.name_or_path: {exc}") from None
    check_rewards(cfg)
    check_sources(cfg)
    check_writable(run.root)


def base_model_path(cfg: PipelineConfig, run: RunFolder) -> str:
    if cfg.model.name_or_path == "tiny":
        from pipelines.modeling import build_tiny
        return str(build_tiny(run.root / "base_model", cfg.model.tiny))
    return cfg.model.name_or_path


def train(cfg: PipelineConfig, run: RunFolder | None = None) -> RunFolder:
    """Run every unfinished stage of `cfg`; `run` given = resume that folder.
    Raises Preempted (a stop was asked for; checkpoint saved) or RunInterrupted (Ctrl-C)."""
    fresh = run is None
    run = run or new_run_folder(cfg)
    preflight(cfg, run)                          # before anything is written
    run.root.mkdir(parents=True, exist_ok=True)
    if fresh and is_main():
        run.config_path.write_text(absolute_paths(cfg).to_yaml())
    stop = StopRequest(run.root)
    stop.clear_file()
    try:
        with stop:
            _run_stages(cfg, run, stop)
    except KeyboardInterrupt:
        raise RunInterrupted(run) from None
    except Preempted as exc:
        exc.run_root = run.root
        raise
    if is_main():
        from pipelines.report import write_report
        report = write_report(run)
        print(f"[earl] report: {report}")
    return run


def _run_stages(cfg: PipelineConfig, run: RunFolder, stop: StopRequest) -> None:
    state = run.load_state()
    state.setdefault("stages", {})
    state.setdefault("started", time.time())
    model = run.resolve(state["base_model"]) if state.get("base_model") else base_model_path(cfg, run)
    state["base_model"] = run.relative(model)
    run.save_state(state)
    finals: dict[str, str] = {}
    for name, stage in cfg.stages.items():
        st = state["stages"].get(name, {})
        if st.get("status") == "done":
            print(f"[earl] stage {name}: done already, skipping")
            if st.get("model"):
                model = finals[name] = run.resolve(st["model"])
            continue
        if stop.reason:                          # asked to stop between stages: nothing to save
            raise Preempted(name, 0, run.last_checkpoint(name), stop.reason)
        resume_from = run.last_checkpoint(name) if st.get("status") == "running" else None
        if st.get("status") == "running":        # interrupted: its later log lines are redone
            step = int(Path(resume_from).name.split("-")[-1]) if resume_from else 0
            run.truncate_metrics(name, step)
            print(f"[earl] stage {name}: resuming from {resume_from or 'the start'} (step {step})")
        state["stages"][name] = {**st, "status": "running", "kind": stage.kind}
        run.save_state(state)
        ctx = StageContext(cfg, name, stage, run, model, resume_from, dict(finals), stop)
        t0 = time.time()
        print(f"[earl] stage {name} ({stage.kind}) from {model}")
        result = _stage_module(stage.kind).run(ctx) or {}
        wall = time.time() - t0
        if result.get("model"):
            model = finals[name] = result["model"]
            result = {**result, "model": run.relative(result["model"])}
        state["stages"][name] = {"status": "done", "kind": stage.kind, "wall_s": round(wall, 1), **result}
        run.save_state(state)
        print(f"[earl] stage {name}: done in {wall:.0f}s")
    state["finished"] = time.time()
    run.save_state(state)


def resume(run_dir: str | Path, overrides: list[str] | None = None, dry_run: bool = False) -> RunFolder | None:
    """Continue a run: finished stages are skipped; the unfinished one restarts from its last checkpoint.
    dry_run: only check that it could (`earl train --resume RUN --dry-run`)."""
    run = RunFolder(run_dir)
    if not run.config_path.is_file():
        raise ConfigError(f"--resume {run_dir}: no config.yaml there (not a run folder)")
    cfg = load_config(run.config_path, overrides)
    if dry_run:
        preflight(cfg, run)
        return None
    if overrides and is_main():
        run.config_path.write_text(absolute_paths(cfg).to_yaml())
    return train(cfg, run)
