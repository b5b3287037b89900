"""Stop a training stage cleanly when asked: save a checkpoint at the end of the current step, then exit.

Why: a cluster warns before it kills (Slurm's `--signal=B:USR1@90` before the time limit, SIGTERM before a
preemption or `scancel`). Work since the last `save_steps` checkpoint would be lost; here it is not.

How a stop is asked for, all three ending the same way:

- SIGUSR1 or SIGTERM to a training process (handlers installed by the runner for the run's duration);
- the file ``<run>/stop-requested`` (what `earl submit`'s batch-shell trap writes: the signal reaches the
  batch shell, not the ranks under srun/accelerate; a user can `touch` it too);
- both are checked by `StopCallback` at every step end, and the ranks agree (an all-reduce of the flag)
  so every rank saves and stops at the same step; a collective save (ZeRO) cannot deadlock.

The stage then raises `Preempted`; the run folder keeps the stage as ``running`` and `earl train` exits
with `EXIT_PREEMPTED` (75, EX_TEMPFAIL: try again), so `earl train --resume RUN` continues from the saved
checkpoint. Ctrl-C stays an immediate interrupt (exit 130); the run is resumable from its last checkpoint.
"""
from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any, Self

STOP_FILE = "stop-requested"
EXIT_PREEMPTED = 75                     # sysexits EX_TEMPFAIL: the run is resumable
EXIT_INTERRUPTED = 130                  # 128 + SIGINT, the shell's convention for Ctrl-C
STOP_SIGNALS = (signal.SIGUSR1, signal.SIGTERM)
_ACTIVE: list[StopRequest] = []          # the installed request of this process (one run at a time)


def requested() -> bool:
    """Has this process been asked to stop? (For long work inside a step, e.g. a reward, to cut short.)"""
    return any(r.reason is not None for r in _ACTIVE)


class Preempted(Exception):
    """A stage stopped on request after saving a checkpoint; the run resumes from it."""

    def __init__(self, stage: str, step: int, checkpoint: str | None, reason: str):
        self.stage, self.step, self.checkpoint, self.reason = stage, step, checkpoint, reason
        self.run_root: Path | None = None          # set by the runner
        super().__init__(f"stage {stage} stopped at step {step} ({reason}); checkpoint {checkpoint}")


class StopRequest:
    """The run's stop flag: set by a signal handler, or by the stop file appearing in the run folder."""

    def __init__(self, run_root: str | Path):
        self.path = Path(run_root) / STOP_FILE
        self.signal_name: str | None = None
        self._previous: dict[int, Any] = {}

    def install(self) -> Self:
        """Catch STOP_SIGNALS (main thread only; elsewhere only the stop file works)."""
        import threading
        if threading.current_thread() is not threading.main_thread():
            return self
        for sig in STOP_SIGNALS:
            self._previous[sig] = signal.signal(sig, self._on_signal)
        _ACTIVE.append(self)
        return self

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
        if self in _ACTIVE:
            _ACTIVE.remove(self)

    def _on_signal(self, signum: int, _frame: Any) -> None:
        self.signal_name = signal.Signals(signum).name

    def clear_file(self) -> None:
        """A stale request from an earlier (requeued) job must not stop the resumed one."""
        if int(os.environ.get("RANK", "0")) == 0:
            self.path.unlink(missing_ok=True)

    @property
    def reason(self) -> str | None:
        if self.signal_name:
            return self.signal_name
        return STOP_FILE if self.path.exists() else None

    def __enter__(self) -> Self:
        return self.install()

    def __exit__(self, *exc: object) -> None:
        self.restore()


def agreed(flag: bool, device: Any = None) -> bool:
    """True on every rank when any rank's flag is set (a no-op without torch.distributed)."""
    import torch
    import torch.distributed as dist
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return flag
    if dist.get_backend() == "nccl" and torch.cuda.is_available():
        device = torch.device("cuda", torch.cuda.current_device())
    t = torch.tensor([1 if flag else 0], dtype=torch.int32, device=device or "cpu")
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def stop_callback(request: StopRequest):
    """A TrainerCallback that saves and stops at the end of the step during which a stop was asked for."""
    from transformers import TrainerCallback

    class StopCallback(TrainerCallback):
        def __init__(self):
            self.request = request
            self.stopped_at: int | None = None
            self.reason: str | None = None

        def on_step_end(self, args, state, control, **kwargs):
            reason = self.request.reason
            if agreed(reason is not None) and self.stopped_at is None:
                self.stopped_at, self.reason = state.global_step, reason or "another rank's request"
                control.should_save = True
                control.should_training_stop = True
            return control

    return StopCallback()
