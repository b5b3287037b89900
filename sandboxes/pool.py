"""Run a batch of sandboxed jobs on a thread pool (each job mostly waits on a child process, so threads
suffice and the GIL is not the bottleneck); results come back in input order."""
from __future__ import annotations

import concurrent.futures as cf
import os
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Self

# Waits on the calling thread go in slices: an untimed lock wait on the main thread is not woken by a signal
# the kernel delivered to another thread, so a Ctrl-C while pool or reward threads run would never be seen.
POLL_S = 0.1


def result(future: cf.Future, raise_error: bool = True) -> Any:
    """`future.result()`, waited for in POLL_S slices; with `raise_error=False` a failure returns None."""
    while not future.done():
        cf.wait([future], timeout=POLL_S)
    try:
        return future.result()
    except Exception:
        if raise_error:
            raise
        return None


def usable_cpus() -> int:
    """The CPUs this process may run on: its affinity mask (a Slurm task's `--cpus-per-task`, torchrun's
    NUMA binding, a cpuset), not the machine's count, which would overbook a bound rank many times over
    and turn scoring load into wall-clock timeouts. Every default worker count starts here."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):            # no affinity API (not Linux)
        return os.cpu_count() or 1


class SandboxPool:
    """A thread pool for `fn(item)` calls that each run one or two sandboxed programs.

    One stuck job cannot stall the others: every sandboxed program has its own wall-clock limit, and
    the other workers keep taking items meanwhile.
    """

    def __init__(self, workers: int | None = None):
        if workers is not None and workers < 1:
            raise ValueError(f"SandboxPool: workers must be >= 1, got {workers}")
        self.workers = workers or usable_cpus()
        self._executor = cf.ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="sandbox")
        self._lock = threading.Lock()

    def map(self, fn: Callable[[Any], Any], items: Iterable[Any], *,
            progress: Callable[[int, int], None] | None = None) -> list:
        """[fn(item) for item in items], run concurrently; results in input order.

        `progress(done, total)` is called after each job finishes (from the calling thread). If a job
        raises, the others still finish, then the first exception (in input order) is re-raised.
        """
        items = list(items)
        futures = [self._executor.submit(fn, item) for item in items]
        index = {f: i for i, f in enumerate(futures)}
        results: list[Any] = [None] * len(items)
        errors: dict[int, BaseException] = {}
        pending, done = set(futures), 0
        while pending:                                    # in POLL_S slices: a Ctrl-C must reach this thread
            finished, pending = cf.wait(pending, timeout=POLL_S, return_when=cf.FIRST_COMPLETED)
            for future in sorted(finished, key=index.__getitem__):
                i = index[future]
                exc = future.exception()
                if exc is not None:
                    errors[i] = exc
                else:
                    results[i] = future.result()
                done += 1
                if progress is not None:
                    progress(done, len(items))
        if errors:
            raise errors[min(errors)]
        return results

    def cascade(self, fn: Callable[[Any], tuple[list[Any], list[Any]]], items: Iterable[Any]) -> Iterator[Any]:
        """Run `fn(item)` for every item and for every follow-up item a call returns, each as soon as it is
        known: no round of work waits for the slowest call of the round before (a formal check starts when
        its simulation is done, not when every simulation of the batch is). `fn` returns (outputs,
        follow_ups); outputs are yielded in the calling thread as calls finish. If a call raises, the others
        still finish, then the first exception seen is re-raised."""
        finished: queue.Queue[cf.Future] = queue.Queue()
        pending = 0

        def submit(item: Any) -> None:
            nonlocal pending
            pending += 1
            self._executor.submit(fn, item).add_done_callback(finished.put)

        for item in items:
            submit(item)
        error: BaseException | None = None
        while pending:
            try:
                future = finished.get(timeout=POLL_S)
            except queue.Empty:
                continue
            pending -= 1
            exc = future.exception()
            if exc is not None:
                error = error or exc
                continue
            outputs, follow_ups = future.result()
            for item in follow_ups:
                submit(item)
            yield from outputs
        if error is not None:
            raise error

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
