"""A reward plugin that holds one training step until the test has acted: the deterministic way to act
"mid-run" (signal, kill) without polling for a checkpoint that rotation may already have removed.

Config entry (weight 0: it never changes the reward)::

    {name: "tests.helpers.hold:HoldAtStep", weight: 0.0,
     kwargs: {step: 2, marker: /tmp/x/held, release: /tmp/x/run/stop-requested}}

During the step after `step` completed steps it writes `marker` and waits until `release` exists, the
process was asked to stop (pipelines.preemption), or `timeout_s` passed. Once `marker` exists it never
holds again, so a resumed run that redoes that step runs through.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from pipelines import preemption


class HoldAtStep:
    def __init__(self, step: int, marker: str, release: str | None = None, timeout_s: float = 300.0):
        self.step, self.marker = int(step), Path(marker)
        self.release = Path(release) if release else None
        self.timeout_s = timeout_s
        self.__name__ = "hold"

    def _released(self) -> bool:
        return preemption.requested() or (self.release is not None and self.release.exists())

    def __call__(self, prompts: list, completions: list, trainer_state: Any = None, **_: Any) -> list[float]:
        if trainer_state is not None and trainer_state.global_step == self.step and not self.marker.exists():
            self.marker.parent.mkdir(parents=True, exist_ok=True)
            self.marker.touch()
            deadline = time.monotonic() + self.timeout_s
            while not self._released() and time.monotonic() < deadline:
                time.sleep(0.05)
        return [0.0] * len(completions)


def default_sigint() -> None:
    """`preexec_fn` for a child a test will Ctrl-C. A shell's background job (`nohup make test &`, some CI
    runners) starts with SIGINT ignored, Python keeps an ignored SIGINT, and the test's SIGINT would do
    nothing: the child's disposition must be the default for the test to mean anything."""
    import signal
    signal.signal(signal.SIGINT, signal.SIG_DFL)
