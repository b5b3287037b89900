"""Probes the sandbox tests share: run a shell script in a sandbox, find host processes by a marker."""
from __future__ import annotations

from pathlib import Path

from sandboxes.executor import ExecResult, Sandbox


def sh(sandbox: Sandbox, script: str, workdir: Path, **kw) -> ExecResult:
    return sandbox.run(["sh", "-c", script], workdir, **kw)


def host_procs_with(marker: str) -> list[int]:
    """Host pids whose command line contains marker (to prove a process tree is gone)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                pass
    return found
