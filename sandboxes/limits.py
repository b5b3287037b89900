"""Sandbox settings as dataclasses: what a reward passes to `Sandbox` (its `sandbox_backend`, limits).

Limits are per run; `Sandbox.run(..., limits=...)` overrides the config's for one call.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, fields
from typing import Any, Literal, get_args

from sandboxes import strict

Backend = Literal["auto", "bwrap", "unshare", "none"]      # none = rlimits only, with a loud warning
BACKENDS: tuple[str, ...] = get_args(Backend)
SupervisorKind = Literal["auto", "native", "python"]          # what a persistent worker runs (sandboxes/worker.py)
SUPERVISORS: tuple[str, ...] = get_args(SupervisorKind)


@dataclass
class SandboxLimits:
    wall_s: float = 30.0          # wall clock; the whole process tree is killed on expiry
    cpu_s: int = 30               # RLIMIT_CPU (per process; SIGXCPU, then SIGKILL one second later)
    memory_mb: int = 2048         # RLIMIT_AS (address space, not RSS: allow headroom for big mappings)
    max_procs: int = 64           # RLIMIT_NPROC (counted per sandbox: each run has its own user namespace)
    max_file_mb: int = 64         # RLIMIT_FSIZE; also the size of the private /tmp tmpfs
    max_open_files: int = 256     # RLIMIT_NOFILE
    stack_mb: int = 8             # RLIMIT_STACK: fixed, not the trainer's (HPC nodes often run `ulimit -s unlimited`)
    max_output_bytes: int = 1_000_000   # stdout and stderr each captured up to this, rest discarded

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"SandboxLimits.{f.name} must be a number, got {value!r}")
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"SandboxLimits.{f.name} must be a finite number > 0, got {value!r}")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SandboxLimits:
        return strict.from_dict(cls, data, "sandbox.limits")


@dataclass
class SandboxConfig:
    backend: Backend = "auto"
    network: bool = False
    limits: SandboxLimits = field(default_factory=SandboxLimits)
    ro_binds: list[str] = field(default_factory=list)   # extra host paths visible read-only
    # bwrap only: run jobs in long-lived per-thread bwrap workers (bwrap's 15-25 ms set-up paid once per
    # worker; each job still gets fresh namespaces, /tmp and work dir: docs/sandbox.md). Falls back to
    # per-call bwrap, with one warning, where a worker cannot start.
    persistent: bool = True
    # the supervisor a worker runs: "native" (sandboxes/supervisor.c, built once with the system C compiler),
    # "python" (sandboxes/_supervisor.py, ~2 ms more CPU a job), or "auto" (native, else Python)
    worker_supervisor: SupervisorKind = "auto"
    worker_python: str = ""       # the Python that runs a Python supervisor ("" = python3 under /usr)

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"SandboxConfig.backend must be one of {BACKENDS}, got {self.backend!r}")
        for name in ("network", "persistent"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"SandboxConfig.{name} must be true or false, got {getattr(self, name)!r}")
        if self.worker_supervisor not in SUPERVISORS:
            raise ValueError(f"SandboxConfig.worker_supervisor must be one of {SUPERVISORS}, "
                             f"got {self.worker_supervisor!r}")
        if self.worker_python and not os.path.isabs(self.worker_python):
            raise ValueError(f"SandboxConfig.worker_python must be an absolute path, got {self.worker_python!r}")
        if isinstance(self.limits, dict):
            self.limits = SandboxLimits.from_dict(self.limits)
        if not isinstance(self.limits, SandboxLimits):
            raise TypeError(f"SandboxConfig.limits must be SandboxLimits or a mapping, got {self.limits!r}")
        if isinstance(self.ro_binds, str):
            raise TypeError("SandboxConfig.ro_binds must be a list of paths, got a single string")
        for path in self.ro_binds:
            if not os.path.isabs(path):
                raise ValueError(f"SandboxConfig.ro_binds: {path!r} is not an absolute path")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SandboxConfig:
        return strict.from_dict(cls, data, "sandbox")
