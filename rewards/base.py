"""The reward contract: what a reward is called with, and what it says about each sample.

Two levels, and every earl reward offers both:

* **TRL's reward function**: ``reward(prompts, completions, **columns) -> list[float | None]``. The dataset's
  columns arrive as lists, one value per completion; ``None`` means "not judged" (TRL skips it). A plugin
  that is only this (a plain function) works everywhere: training, eval, `earl score`.
* **`Reward`**: additionally ``stages`` (the reward's stage vocabulary, in order of progress) and, after each
  call, ``last_scores``: one `Score` per completion saying why it got its reward. The trainer logs stage
  fractions and the pass rate from them and eval judges samples by them, both through `scores_of`.

**Stages mean the same in every reward**: a sample's ``stage`` is the furthest stage it reached, i.e.
the last check it passed; ``stages[-1]`` is "passed every check" (``Score.passed``). Verilog:
none < format < syntax < compile < simulate < pass; security repair: none < syntax < format < tests < secure.

    >>> from rewards.base import Score
    >>> Score(reward=0.3, passed=False, stage="syntax", reason="compile error: ...").judged
    True
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable


@dataclass
class Score:
    """One completion's judgement. ``reward`` None: it could not be judged (TRL ignores it), and
    ``passed`` is then None too; ``details`` is the reward's own record (JSON-able)."""
    reward: float | None
    passed: bool | None
    stage: str
    reason: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def judged(self) -> bool:
        return self.reward is not None


@runtime_checkable
class Reward(Protocol):
    """A TRL reward function that also says why (see the module docstring)."""
    __name__: str
    stages: tuple[str, ...]
    last_scores: list[Score] | None

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any],
                 **columns: Any) -> list[float | None]: ...


def scores_of(fn: Any, n: int) -> list[Score] | None:
    """The `Score`s of `fn`'s last call on `n` completions, or None (a plain function, a failed call, or
    scores left from a batch of another size): the one way the trainer and eval read them."""
    scores = getattr(fn, "last_scores", None)
    if not isinstance(scores, list) or len(scores) != n or not all(isinstance(s, Score) for s in scores):
        return None
    return scores


def stages_of(fn: Any) -> tuple[str, ...] | None:
    """A reward's declared stage vocabulary (None when it declares none)."""
    stages = getattr(fn, "stages", None)
    return tuple(str(s) for s in stages) if stages else None
