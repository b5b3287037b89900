"""A job as a short sequence of programs instead of a shell script, so that it can run without a shell.

On a native persistent worker the supervisor's job process runs the steps itself (sandboxes/supervisor.c):
no `sh` is executed at all, which saves the wrapper's exec, ~1.3 ms of CPU a job on a small VM (a dynamic
`sh` start-up is most of a small job's overhead there: docs/sandbox.md). Everywhere else (per-call runs,
the Python supervisor) the same steps run as the equivalent sh script, `script(steps)`, through
`Sandbox.run_script`: same files, exit status, output and limits either way.

Semantics, step by step: run `argv` (argv[0] an absolute path) with the job's stdin, its stdout and stderr
the job's, or both written to a fresh `log` file in the work dir; `status_file` then gets its exit status
(`N\\n`, 128 + signal for a killed program, as sh's `$?`); a non-zero status ends the job with `stop_exit`
when that is set, else the next step runs. The last step's status is the job's (the script `exec`s it).
As sh runs a command: 127 when the program is missing, 126 when it cannot run, a file with no `#!` line runs
as an sh script, a step that cannot be forked ends the job with 2, and programs see `PWD`.
"""
from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass

MAX_STEPS = 8                     # the native supervisor's bound (supervisor.c MAX_STEPS)
_PLAIN_NAME = re.compile(r"[\w.+-]+")


def plain_file_name(name: str) -> bool:
    """A name that can only mean a file right in the work dir: no path, no shell syntax, not hidden."""
    return bool(_PLAIN_NAME.fullmatch(name)) and not name.startswith(".")


@dataclass(frozen=True)
class Step:
    argv: tuple[str, ...]
    log: str | None = None          # stdout and stderr to this work-dir file (truncated first)
    status_file: str | None = None  # gets the exit status (not for the last step: it is the job's)
    stop_exit: int | None = None    # a non-zero status ends the job with this code (not for the last step)


def validate(steps: Sequence[Step]) -> tuple[Step, ...]:
    """The steps as a tuple; ValueError naming the step and field that cannot run."""
    steps = tuple(steps)
    if not 1 <= len(steps) <= MAX_STEPS:
        raise ValueError(f"a job takes 1 to {MAX_STEPS} steps, got {len(steps)}")
    for i, step in enumerate(steps):
        if not isinstance(step, Step):
            raise ValueError(f"step {i}: must be a Step, got {step!r}")
        if not isinstance(step.argv, (tuple, list)) or not step.argv or \
                not all(isinstance(a, str) and "\0" not in a for a in step.argv):
            raise ValueError(f"step {i}: argv must be a non-empty tuple of strings without NUL, got {step.argv!r}")
        for name in ("log", "status_file"):
            value = getattr(step, name)
            if value is not None and not plain_file_name(value):
                raise ValueError(f"step {i}: {name} must be a plain file name in the work dir, got {value!r}")
        if step.stop_exit is not None and (type(step.stop_exit) is not int or not 0 <= step.stop_exit <= 255):
            raise ValueError(f"step {i}: stop_exit must be 0-255, got {step.stop_exit!r}")
    last = steps[-1]
    if last.status_file is not None or last.stop_exit is not None:
        raise ValueError("the last step is the job's own exit status: it takes no status_file or stop_exit")
    return steps


def shell(step: Step, last: bool = False) -> str:
    """The sh lines of one step (see the module docstring)."""
    redirect = f" >{step.log} 2>&1" if step.log else ""
    if last:
        return f"exec {shlex.join(step.argv)}{redirect}\n"
    lines = f"{shlex.join(step.argv)}{redirect}\nrc=$?\n"
    if step.status_file:
        lines += f"echo $rc >{step.status_file}\n"
    if step.stop_exit is not None:
        lines += f"[ $rc -eq 0 ] || exit {step.stop_exit}\n"
    return lines


def script(steps: Sequence[Step]) -> str:
    """The POSIX sh script that does what the steps do (run where no native worker is)."""
    steps = validate(steps)
    return "".join(shell(s, last=i == len(steps) - 1) for i, s in enumerate(steps))


def fields(steps: Sequence[Step]) -> list[str]:
    """The steps as request fields (sandboxes/worker.py, encode_request): per step argc, argv..., log,
    status_file ("" for none), stop_exit (-1 for none)."""
    out = [str(len(steps))]
    for step in steps:
        out += [str(len(step.argv)), *step.argv, step.log or "", step.status_file or "",
                str(-1 if step.stop_exit is None else step.stop_exit)]
    return out
