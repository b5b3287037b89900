"""Multi-process launch: re-run an `earl` command under `accelerate launch` with one of configs/accelerate/.

Why re-exec instead of asking users to type `accelerate launch`: `earl train --launcher zero2
--num-processes 2` is one command on a laptop, in CI and inside a Slurm task. Two traps are handled here:

- `accelerate launch --cpu --num_processes 2` silently starts ONE process; the configs therefore say
  `use_cpu: false` and let DeepSpeed / torch pick the CPU accelerator and the gloo backend themselves.
- DeepSpeed JIT-builds C++ ops (e.g. the shared-memory comm op) on first use (~30 s); the build cache
  (TORCH_EXTENSIONS_DIR) defaults to `<project>/.cache/torch_extensions` so it is paid once.

Inside the launched processes `LOCAL_RANK` is set, so `maybe_relaunch` returns None and the command runs.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from sandboxes.strict import OptionError, check_known

PROJECT_ROOT = Path(__file__).resolve().parents[1]
ACCELERATE_CONFIGS = PROJECT_ROOT / "configs" / "accelerate"
LAUNCHERS = ("single", "ddp", "zero2", "zero3", "zero3-offload")
RDZV_BACKENDS = ("static", "c10d")


class LaunchError(ValueError):
    """A launch setting is wrong; the message names the flag or config key."""


@dataclass
class LaunchConfig:
    """How many processes on how many machines, and which accelerate/DeepSpeed config they use."""
    launcher: str = "single"           # one of LAUNCHERS, or a path to an accelerate config YAML
    num_processes: int = 1             # total over all machines
    num_machines: int = 1
    machine_rank: int = 0
    main_process_ip: str | None = None  # required when num_machines > 1
    main_process_port: int = 29500
    rdzv_backend: str = "static"       # static for one machine; c10d across machines (Slurm)

    def validate(self) -> LaunchConfig:
        config_file(self.launcher)
        if self.num_processes < 1:
            raise LaunchError(f"--num-processes: must be >= 1, got {self.num_processes}")
        if self.num_machines < 1 or self.num_processes % self.num_machines:
            raise LaunchError(f"--num-processes {self.num_processes} must be a multiple of --num-machines "
                              f"{self.num_machines}")
        if not 0 <= self.machine_rank < self.num_machines:
            raise LaunchError(f"--machine-rank {self.machine_rank} outside 0..{self.num_machines - 1}")
        if self.num_machines > 1 and not self.main_process_ip:
            raise LaunchError("--main-process-ip is required when --num-machines > 1")
        if self.rdzv_backend not in RDZV_BACKENDS:
            raise LaunchError(f"--rdzv-backend: {self.rdzv_backend!r} not one of {RDZV_BACKENDS}")
        if self.launcher == "single" and self.num_processes > 1:
            raise LaunchError("--launcher single runs one process; use ddp, zero2 or zero3 for "
                              f"--num-processes {self.num_processes}")
        return self

    @property
    def is_multi_process(self) -> bool:
        return self.num_processes > 1 or self.num_machines > 1

    @property
    def uses_deepspeed(self) -> bool:
        return "zero" in Path(self.launcher).stem


def config_file(launcher: str) -> Path:
    """The accelerate config for a launcher name (single, ddp, zero2, zero3, zero3-offload) or a YAML path."""
    if launcher in LAUNCHERS:
        return ACCELERATE_CONFIGS / f"{launcher}.yaml"
    path = Path(launcher)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        return path
    raise LaunchError(f"--launcher: {launcher!r} is neither one of {', '.join(LAUNCHERS)} "
                      "nor an existing accelerate config .yaml")


def launch_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for launched ranks: a persistent DeepSpeed op cache, offline hub, quiet tokenizers."""
    env = dict(os.environ if base is None else base)
    env.setdefault("TORCH_EXTENSIONS_DIR", str(PROJECT_ROOT / ".cache" / "torch_extensions"))
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env.setdefault("PYTHONPATH", str(PROJECT_ROOT))
    env["EARL_LAUNCHED"] = "1"
    return env


def accelerate_argv(cfg: LaunchConfig, program: list[str]) -> list[str]:
    """`python -m accelerate.commands.launch ... <program>`; program is `-m module args` or `script args`."""
    cfg.validate()
    argv = [sys.executable, "-m", "accelerate.commands.launch",
            "--config_file", str(config_file(cfg.launcher)),
            "--num_processes", str(cfg.num_processes),
            "--num_machines", str(cfg.num_machines),
            "--machine_rank", str(cfg.machine_rank),
            "--main_process_port", str(cfg.main_process_port),
            "--rdzv_backend", cfg.rdzv_backend]
    if cfg.num_processes == 1 and cfg.num_machines == 1 and not cfg.uses_deepspeed:
        argv = argv[:5]  # plain single process: accelerate's simple launcher
    if cfg.main_process_ip:
        argv += ["--main_process_ip", cfg.main_process_ip]
    if cfg.uses_deepspeed and cfg.num_machines > 1:
        # accelerate's default multi-node DeepSpeed launcher is pdsh (ssh to every node); under Slurm each
        # node already runs its own task, so use torchrun ("standard") on each.
        argv += ["--deepspeed_multinode_launcher", "standard"]
    return argv + list(program)


def is_launched(env: dict[str, str] | None = None) -> bool:
    """True inside a launched rank (torchrun/accelerate set LOCAL_RANK; we set EARL_LAUNCHED)."""
    env = os.environ if env is None else env
    return "LOCAL_RANK" in env or env.get("EARL_LAUNCHED") == "1"


def shutdown_distributed() -> None:
    """Barrier, then tear the process group down before the interpreter exits.

    Left alive, gloo/NCCL threads are destroyed during interpreter shutdown and a rank can die with
    "terminate called without an active exception" (SIGABRT) after its work is saved, turning a finished
    run into a failed launch. A no-op in a plain single process.
    """
    import torch.distributed as dist  # torch: not needed to render a launch
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def add_launch_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags `maybe_relaunch` reads; `earl train` adds them to its sub-parser."""
    g = parser.add_argument_group("multi-process launch (DeepSpeed / DDP through accelerate)")
    g.add_argument("--launcher", default=None,
                   help=f"one of {', '.join(LAUNCHERS)} or an accelerate config YAML (default: the config's "
                        "`launch.launcher`, else single)")
    g.add_argument("--num-processes", type=int, default=None, help="total processes over all machines")
    g.add_argument("--num-machines", type=int, default=None)
    g.add_argument("--machine-rank", type=int, default=None)
    g.add_argument("--main-process-ip", default=None)
    g.add_argument("--main-process-port", type=int, default=None)
    g.add_argument("--rdzv-backend", default=None, choices=RDZV_BACKENDS)


def _config_launch_section(config_path: str | None) -> dict:
    """The optional `launch:` mapping of a pipeline YAML (same keys as LaunchConfig)."""
    if not config_path or not Path(config_path).is_file():
        return {}
    import yaml
    raw = yaml.safe_load(Path(config_path).read_text()) or {}
    section = raw.get("launch") or {} if isinstance(raw, dict) else {}
    if not isinstance(section, dict):
        raise LaunchError(f"{config_path}: `launch` must be a mapping, got {type(section).__name__}")
    try:
        check_known(section, LaunchConfig.__dataclass_fields__, "launch")
    except OptionError as exc:
        raise LaunchError(f"{config_path}: {exc}") from None
    return section


def launch_config_from_args(args: argparse.Namespace) -> LaunchConfig:
    """Flags win over the config's `launch:` section, which wins over the defaults."""
    values = dict(_config_launch_section(getattr(args, "config", None)))
    for key in LaunchConfig.__dataclass_fields__:
        flag = getattr(args, key, None)
        if flag is not None:
            values[key] = flag
    cfg = LaunchConfig(**values)
    if cfg.launcher != "single" and "num_processes" not in values:
        cfg.num_processes = _local_devices() * cfg.num_machines
    return cfg.validate()


def _local_devices() -> int:
    """GPUs on this machine, or 2 CPU processes (the smallest run that exercises the distributed path)."""
    import torch  # torch: only when counting devices
    return torch.cuda.device_count() or 2


def maybe_relaunch(args: argparse.Namespace, argv: list[str] | None = None) -> int | None:
    """Re-run this `earl` command under the requested launcher and return its exit code.

    Returns None when there is nothing to do: already inside a launched rank, or a single-process launch.
    Call at the top of a command's `run(args)`: ``if (rc := maybe_relaunch(args)) is not None: return rc``.
    """
    if is_launched():
        return None
    cfg = launch_config_from_args(args)
    if not cfg.is_multi_process:
        return None
    argv = list(sys.argv[1:] if argv is None else argv)
    cmd = accelerate_argv(cfg, ["-m", "pipelines.cli", *argv])
    print(f"[earl] launching {cfg.num_processes} processes ({cfg.launcher}): {' '.join(cmd)}", flush=True)
    return subprocess.run(cmd, env=launch_env(), check=False).returncode
