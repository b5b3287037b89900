"""Where the programs a sandbox starts (bwrap, unshare, ...) and the tools it runs (iverilog, yosys, ...)
are found: one rule for both, so a PATH cannot hide bwrap while the tools still resolve, or the reverse.

A program is looked up on the caller's PATH (BASE_PATH when PATH is unset or empty); a tool a sandbox
runs is the first hit the sandbox can see (`Sandbox.program`), and what that tool starts in turn is
found on the box's own fixed PATH (BASE_PATH). A reward resolves its tools once, when it is built, and
a missing one is one `ToolNotFound` naming it and its install command, never a batch of "compile
error: iverilog: not found" zeros that a training run would take for a signal.
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence

BASE_PATH = "/usr/local/bin:/usr/bin:/bin"

# The apt package of each program we start; `make setup` installs them (as root).
APT_PACKAGE = {
    "iverilog": "iverilog", "vvp": "iverilog", "yosys": "yosys", "bwrap": "bubblewrap",
    "unshare": "util-linux", "setpriv": "util-linux", "python3": "python3",
}


class ToolNotFound(RuntimeError):
    """An external program a reward or sandbox needs is missing: a setup problem, not a per-sample one.

    Raised before any scoring; a CLI shows ``str(exc)`` as one line and exits 2."""

    def __init__(self, programs: str | Iterable[str], needed_for: str = "", detail: str = ""):
        self.programs = [programs] if isinstance(programs, str) else list(programs)
        self.program = self.programs[0]
        names = ", ".join(self.programs)
        why = f" ({needed_for})" if needed_for else ""
        if any(os.sep in p for p in self.programs):
            super().__init__(f"{names}{why}: {detail or 'no such executable file'}")
            return
        what = detail or f"not found on PATH ({search_path()})"
        super().__init__(f"{names}{why}: {what}; install with `make setup` (as root) or "
                         f"`{install_command(self.programs)}`")


def install_command(programs: Iterable[str]) -> str:
    packages = dict.fromkeys(APT_PACKAGE.get(p, p) for p in programs)
    return "apt-get install " + " ".join(packages)


def search_path() -> str:
    """The PATH every program is looked up on: the caller's, else BASE_PATH."""
    return os.environ.get("PATH") or BASE_PATH


def find_program(name: str, roots: Sequence[str] | None = None) -> str | None:
    """Absolute path of `name`: the first hit on `search_path()` (a path is taken as is), or None.

    With `roots`, the first hit that lies under one of them, itself or through its symlinks (the folders
    a sandbox mounts: a pyenv shim or a venv's bin is passed over, a folder of links into /usr is not)."""
    for path in program_candidates(name):
        if roots is None:
            return path
        for candidate in (path, os.path.realpath(path)):
            if under(candidate, roots):
                return candidate
    return None


def under(path: str, roots: Sequence[str]) -> bool:
    return any(path == r or path.startswith(r.rstrip("/") + "/") for r in roots)


def program_candidates(name: str) -> Iterator[str]:
    """Every executable file `name` on `search_path()`, in PATH order (a sandbox takes the first one
    it can see inside)."""
    if os.sep in name:
        if os.path.isfile(name) and os.access(name, os.X_OK):
            yield os.path.abspath(name)
        return
    seen: set[str] = set()
    for folder in search_path().split(os.pathsep):
        path = os.path.abspath(os.path.join(folder or os.curdir, name))
        if path not in seen and os.path.isfile(path) and os.access(path, os.X_OK):
            seen.add(path)
            yield path


def require_programs(names: Iterable[str], needed_for: str = "") -> dict[str, str]:
    """{name: absolute path} for every name; one ToolNotFound naming all the missing ones."""
    found = {name: find_program(name) for name in dict.fromkeys(names)}
    missing = [name for name, path in found.items() if path is None]
    if missing:
        raise ToolNotFound(missing, needed_for)
    return {name: path for name, path in found.items() if path is not None}


def backend_programs(backend: str) -> tuple[str, ...]:
    """The helper a sandbox backend cannot run without ('auto' needs none: it falls back)."""
    return {"bwrap": ("bwrap",), "unshare": ("unshare",)}.get(backend, ())
