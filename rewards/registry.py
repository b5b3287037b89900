"""Reward plugins: find a reward by registered name, dotted path or `earl.rewards` entry point,
wrap it so one crash never kills training, and compose several with weights (TRL's reward_funcs +
reward_weights).

A reward is any callable ``f(prompts, completions, **columns) -> list[float | None]`` (TRL's signature).
A spec may name a class or factory; it is called with the spec's ``kwargs`` to build the callable.
"""
from __future__ import annotations

import concurrent.futures as cf
import importlib
import inspect
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any

from rewards.base import Score, scores_of, stages_of
from sandboxes.strict import from_dict
from sandboxes.tools import ToolNotFound

log = logging.getLogger(__name__)

RewardFn = Callable[..., list]
ENTRY_POINT_GROUP = "earl.rewards"

# The built-in rewards are `earl.rewards` entry points of this package (pyproject.toml), found exactly
# like a plugin's; looking one up imports only its module.
_REGISTERED: dict[str, Any] = {}


def register_reward(name: str) -> Callable[[Any], Any]:
    """Decorator: make ``name`` resolve to this function, class or factory."""
    def deco(obj: Any) -> Any:
        _REGISTERED[name] = obj
        return obj
    return deco


def available_rewards() -> list[str]:
    eps = [ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)]
    return sorted(set(_REGISTERED) | set(eps))


def _import_dotted(path: str) -> Any:
    if ":" in path:
        module, attr = path.split(":", 1)
    else:
        module, _, attr = path.rpartition(".")
    if not module:
        raise ImportError(f"not a dotted path: {path!r}")
    obj = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def resolve(name: str) -> Any:
    """Return the object a reward name points at (not yet instantiated)."""
    if name in _REGISTERED:
        return _REGISTERED[name]
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == name:
            return ep.load()
    if "." in name or ":" in name:
        try:
            return _import_dotted(name)
        except (ImportError, AttributeError) as exc:
            raise KeyError(f"reward {name!r}: cannot import dotted path ({exc})") from None
    raise KeyError(f"unknown reward {name!r}; available: {', '.join(available_rewards())} "
                   f"(or give a dotted path 'package.module:function', or an '{ENTRY_POINT_GROUP}' entry point)")


def _is_reward_callable(obj: Any) -> bool:
    """A plain function taking (prompts, completions, ...) is a reward; a class or factory builds one."""
    if inspect.isclass(obj) or not callable(obj):
        return False
    try:
        params = list(inspect.signature(obj).parameters)
    except (TypeError, ValueError):
        return True
    return len(params) >= 2 and params[0] == "prompts" and params[1] == "completions"


def build_reward(name: str, **kwargs: Any) -> RewardFn:
    obj = resolve(name)
    if _is_reward_callable(obj):
        if kwargs:
            fn = obj
            def bound(prompts, completions, **cols):
                return fn(prompts, completions, **{**kwargs, **cols})
            bound.__name__ = getattr(obj, "__name__", name)
            return bound
        return obj
    built = obj(**kwargs)
    if not callable(built):
        raise TypeError(f"reward {name!r}: {obj!r}(**kwargs) returned a non-callable {type(built).__name__}")
    return built


@dataclass
class RewardSpec:
    """One entry of a config's ``rewards:`` list."""
    name: str
    weight: float = 1.0
    kwargs: dict[str, Any] = field(default_factory=dict)
    timeout_s: float | None = None     # per call; a timed-out call scores None for its samples


class SafeReward:
    """Wraps a reward so an exception or timeout yields ``None`` (TRL skips it) instead of a crash.

    Except ToolNotFound: a missing program would fail every batch alike, so it stops the run instead.
    What the trainer and eval read of the wrapped reward is passed on explicitly (rewards.base): its
    ``stages`` and the ``last_scores`` of the call that just succeeded (None after a failed one)."""

    def __init__(self, fn: RewardFn, name: str, timeout_s: float | None = None):
        self.fn, self.timeout_s = fn, timeout_s
        self.__name__ = name
        self.stages = stages_of(fn)
        self.failures = 0
        self.last_scores: list[Score] | None = None
        self._pool = cf.ThreadPoolExecutor(max_workers=1) if timeout_s else None

    def __call__(self, prompts: Sequence, completions: Sequence, **columns: Any) -> list[float | None]:
        n = len(completions)
        self.last_scores = None
        try:
            if self._pool is not None:
                out = self._pool.submit(self.fn, prompts, completions, **columns).result(timeout=self.timeout_s)
            else:
                out = self.fn(prompts, completions, **columns)
            out = list(out)
            if len(out) != n:
                raise ValueError(f"returned {len(out)} rewards for {n} completions")
            self.last_scores = scores_of(self.fn, n)
            return [None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v) for v in out]
        except cf.TimeoutError:
            self.failures += 1
            log.error("reward %s timed out after %ss on a batch of %d; scoring None", self.__name__,
                      self.timeout_s, n)
            self._pool = cf.ThreadPoolExecutor(max_workers=1)   # abandon the stuck worker
        except ToolNotFound:
            raise                                   # a setup error: stop, never a batch of Nones
        except Exception:  # a reward crash must never kill training
            self.failures += 1
            log.exception("reward %s failed on a batch of %d; scoring None", self.__name__, n)
        return [None] * n

    def close(self) -> None:
        close = getattr(self.fn, "close", None)
        if callable(close):
            close()


def compose(specs: Sequence[RewardSpec | dict]) -> tuple[list[SafeReward], list[float]]:
    """Build TRL's ``reward_funcs`` and ``reward_weights`` from config entries."""
    funcs, weights = [], []
    for i, spec in enumerate(specs):
        if isinstance(spec, dict):
            if "name" not in spec:
                raise ValueError(f"rewards[{i}]: needs a name; got keys {sorted(spec)}")
            spec = from_dict(RewardSpec, spec, f"rewards[{i}]")
        try:
            fn = build_reward(spec.name, **spec.kwargs)
        except (KeyError, TypeError) as exc:
            raise ValueError(f"rewards[{i}] ({spec.name}): {exc}") from None
        funcs.append(SafeReward(fn, spec.name, spec.timeout_s))
        weights.append(float(spec.weight))
    return funcs, weights


def weighted_sum(funcs: Sequence[RewardFn], weights: Sequence[float], prompts, completions,
                 **columns: Any) -> list[float]:
    """Score outside a trainer the way TRL combines rewards (None counts as 0 here)."""
    total = [0.0] * len(completions)
    for fn, w in zip(funcs, weights):
        for i, v in enumerate(fn(prompts, completions, **columns)):
            total[i] += w * (v or 0.0)
    return total
