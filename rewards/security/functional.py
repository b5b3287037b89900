"""Functional term: run a row's Python tests against a candidate repair inside the sandbox.

The work dir holds ``solution.py`` (the candidate) and ``test_solution.py`` (``from solution import *``
then the row's test code); the tests pass when that script exits 0 within the limits. Anything the
candidate does to escape or exhaust the machine (fork/memory bombs, endless loops, network, writes
outside the work dir) is contained by the sandbox and reported as a verdict, never raised.
"""
from __future__ import annotations

import os
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rewards.security.source import normalize_source
from sandboxes.limits import Backend

SYSTEM_PYTHON = "/usr/bin/python3"
LIMIT_VERDICTS = ("timeout", "memory", "cpu", "output_limit")
NO_HOME = "/nonexistent-home"   # a repair has no business in $HOME: writes there fail, so do the tests


@dataclass
class FunctionalConfig:
    wall_s: float = 10.0
    cpu_s: int = 10
    memory_mb: int = 512
    max_procs: int = 32
    backend: Backend = "auto"          # sandboxes.limits.Backend
    # "auto": the system python3 (visible in the sandbox without extra binds, so the sandbox can drop
    # root and enforce the process limit), else this interpreter with its prefixes bound read-only.
    python: str = "auto"
    extra_ro_binds: list[str] = field(default_factory=list)


@dataclass
class TestOutcome:
    passed: bool
    verdict: str            # sandbox verdict: ok | exit_<n> | timeout | memory | cpu | signal_<n> | output_limit
    wall_s: float
    detail: str = ""        # tail of stderr

    @property
    def hostile(self) -> bool:
        """The program hit a resource limit or was killed by a signal: treat as hostile, score 0."""
        return self.verdict in LIMIT_VERDICTS or self.verdict.startswith("signal_")

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "verdict": self.verdict, "wall_s": round(self.wall_s, 3),
                "detail": self.detail}


def python_for_tests(cfg: FunctionalConfig) -> tuple[str, list[str]]:
    """(interpreter path, read-only binds it needs)."""
    if cfg.python == "auto" and os.path.exists(SYSTEM_PYTHON):
        return SYSTEM_PYTHON, []
    exe = sys.executable if cfg.python == "auto" else cfg.python
    binds = sorted({p for p in (sys.prefix, sys.base_prefix, os.path.dirname(os.path.realpath(exe)))
                    if not p.startswith(("/usr", "/bin", "/lib"))})
    return exe, binds


class TestRunner:
    """One sandbox, reused for every run (threads may share it: each run gets its own work dir)."""

    def __init__(self, cfg: FunctionalConfig | None = None):
        from sandboxes.executor import Sandbox
        from sandboxes.limits import SandboxConfig, SandboxLimits
        self.cfg = cfg or FunctionalConfig()
        self.python, binds = python_for_tests(self.cfg)
        self.limits = SandboxLimits(wall_s=self.cfg.wall_s, cpu_s=self.cfg.cpu_s, memory_mb=self.cfg.memory_mb,
                                    max_procs=self.cfg.max_procs, max_output_bytes=64_000)
        self.sandbox = Sandbox(SandboxConfig(backend=self.cfg.backend, network=False, limits=self.limits,
                                             ro_binds=binds + list(self.cfg.extra_ro_binds)))

    def run(self, candidate: str, tests: str) -> TestOutcome:
        work = Path(tempfile.mkdtemp(prefix="earl-sec-"))
        try:
            (work / "solution.py").write_text(normalize_source(candidate), encoding="utf-8")
            (work / "test_solution.py").write_text(
                "from solution import *\n\n" + normalize_source(tests) + "\n", encoding="utf-8")
            res = self.sandbox.run([self.python, "-s", "-B", "test_solution.py"], work,
                                   env={"PYTHONDONTWRITEBYTECODE": "1", "HOME": NO_HOME})
            return TestOutcome(passed=res.ok, verdict=res.verdict, wall_s=res.wall_s,
                               detail=(res.stderr or "")[-400:])
        finally:
            shutil.rmtree(work, ignore_errors=True)
