"""Reward work off the trainer's critical path.

TRL's ``_generate_and_score_completions`` generates, then runs its no-grad passes (old log-probs when
generation and optimisation steps are misaligned or vLLM's importance sampling is on, reference log-probs
when ``beta > 0``), and only then calls the rewards. Nothing in between changes what the rewards are
given, so :class:`RewardPrefetch` starts them in a background thread as soon as ``_generate`` returns the
completions, and ``_calculate_rewards`` collects the results. Verifiable rewards spend their time waiting
on subprocesses (iverilog, vvp, yosys, bandit) and torch releases the GIL in its kernels, so the two
overlap instead of queueing.

Exactly TRL's call, or none: the prefetch passes the arguments TRL's ``_calculate_rewards`` builds, and
when TRL's actual call differs in anything (a TRL version that passes more, ``extra_fields`` from a
``rollout_func``) the prefetched result is waited for, thrown away, the reward is called as TRL calls it,
and prefetching stops for the run with a warning. Rewards that are torch modules or async callables keep
TRL's own path.

The calls run on daemon threads: a reward still running when the process ends (Ctrl-C, a crash) is
abandoned, not waited for, as it was when it ran on the main thread.
"""
from __future__ import annotations

import concurrent.futures as cf
import inspect
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sandboxes.pool import result  # waits in slices: Ctrl-C still reaches the main thread

log = logging.getLogger(__name__)

EXCLUDED_COLUMNS = ("prompt", "completion", "completion_ids")   # TRL does not pass these as columns


def eligible(func: Any) -> bool:
    """A plain synchronous callable (TRL calls torch-module and async rewards its own way)."""
    import torch
    is_async = inspect.iscoroutinefunction(func) or inspect.iscoroutinefunction(type(func).__call__)
    return not isinstance(func, torch.nn.Module) and not is_async


def reward_columns(inputs: Sequence[dict]) -> dict[str, list]:
    """The dataset columns TRL hands every reward: each input key but the prompt/completion ones."""
    keys = [k for k in inputs[0] if k not in EXCLUDED_COLUMNS] if inputs else []
    return {k: [row[k] for row in inputs] for k in keys}


@dataclass
class Pending:
    """One batch's reward calls, started before TRL asks for them."""
    prompts: list
    completions: list
    completion_ids: list
    kwargs: dict[str, Any]
    futures: dict[int, cf.Future]
    seconds: list[float] = field(default_factory=list)   # compute time of each call, filled by the workers

    def matches(self, prompts: Any, completions: Any, completion_ids: Any, kwargs: dict[str, Any]) -> bool:
        if kwargs.keys() != self.kwargs.keys():
            return False
        return (list(prompts) == self.prompts and list(completions) == self.completions
                and list(completion_ids) == self.completion_ids
                and all(kwargs[k] is v or kwargs[k] == v for k, v in self.kwargs.items()))

    def wait(self) -> None:
        for future in self.futures.values():
            result(future, raise_error=False)


class RewardPrefetch:
    """Starts a batch's synchronous rewards in worker threads; serves their results to TRL's call."""

    def __init__(self, funcs: Sequence[Any]):
        self.funcs = list(funcs)
        self.enabled = any(eligible(f) for f in self.funcs)
        self._pending: Pending | None = None

    def start(self, prompts: Sequence, completions: Sequence, completion_ids: Sequence,
              kwargs: dict[str, Any]) -> None:
        """Submit every eligible reward on this batch (a previous batch never collected is waited out first,
        so no two calls of one reward ever run at once)."""
        if not self.enabled:
            return
        self.discard()
        pending = Pending(list(prompts), list(completions), list(completion_ids), dict(kwargs), {})
        for i, func in enumerate(self.funcs):
            if eligible(func):
                pending.futures[i] = _in_daemon_thread(self._timed, pending, func)
        self._pending = pending

    @staticmethod
    def _timed(pending: Pending, func: Callable) -> Any:
        t0 = time.perf_counter()
        try:
            return func(prompts=pending.prompts, completions=pending.completions,
                        completion_ids=pending.completion_ids, **pending.kwargs)
        finally:
            pending.seconds.append(time.perf_counter() - t0)

    def claim(self) -> Pending | None:
        pending, self._pending = self._pending, None
        return pending

    def discard(self) -> None:
        pending = self.claim()
        if pending is not None:
            pending.wait()

    def serving(self, pending: Pending) -> list[Any]:
        """Stand-ins for ``funcs`` during TRL's ``_calculate_rewards``: each returns its prefetched result
        when TRL's call is the one prefetched, else waits the prefetch out and calls the reward itself."""
        return [_Ready(self, pending, i, f) if i in pending.futures else f for i, f in enumerate(self.funcs)]

    def mismatch(self, pending: Pending) -> None:
        if self.enabled:
            log.warning("reward overlap: TRL's reward call differs from the prefetched one; rewards are "
                        "computed in TRL's call from now on (results are unaffected, only the overlap is lost)")
        self.enabled = False
        pending.wait()


def _in_daemon_thread(fn: Callable, *args: Any) -> cf.Future:
    """`fn(*args)` on a daemon thread of its own (a ThreadPoolExecutor's threads are joined at exit)."""
    future: cf.Future = cf.Future()

    def run() -> None:
        if not future.set_running_or_notify_cancel():
            return
        try:
            future.set_result(fn(*args))
        except BaseException as exc:  # noqa: BLE001 - handed to the caller through the future
            future.set_exception(exc)
    threading.Thread(target=run, name="earl-reward", daemon=True).start()
    return future


class _Ready:
    """A reward's stand-in for one call: the prefetched result, or the real call when TRL's args differ."""

    def __init__(self, owner: RewardPrefetch, pending: Pending, index: int, func: Any):
        self.owner, self.pending, self.index, self.func = owner, pending, index, func
        self.__name__ = getattr(func, "__name__", "reward")

    def __call__(self, prompts: Any, completions: Any, completion_ids: Any = None, **kwargs: Any) -> Any:
        if self.owner.enabled and self.pending.matches(prompts, completions, completion_ids or [], kwargs):
            return result(self.pending.futures[self.index])
        self.owner.mismatch(self.pending)
        return self.func(prompts=prompts, completions=completions, completion_ids=completion_ids, **kwargs)
