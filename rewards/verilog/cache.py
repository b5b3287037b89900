"""Equivalence cache: a candidate that differs from an already scored one only in whitespace or
comments is not simulated again (GRPO samples 8+ completions per prompt, and many coincide).

Key = problem id + hash of testbench and reference + hash of the normalised code, so a changed
bench never reuses a stale verdict. In-memory and per reward object: a run, not a database.
"""
from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from typing import Generic, TypeVar

from rewards.verilog.extract import normalize
from rewards.verilog.problems import Problem

V = TypeVar("V")


def _sha(text: str | None) -> str:
    return hashlib.sha256((text or "").encode("utf-8", "surrogatepass")).hexdigest()[:20]


def cache_key(problem: Problem, code: str) -> str:
    bench = _sha((problem.testbench or "") + "\x00" + (problem.reference or "") + "\x00" + problem.top_module)
    return f"{problem.id}:{bench}:{_sha(normalize(code))}"


class EquivalenceCache(Generic[V]):
    """Thread-safe LRU map from `cache_key` to a score, counting hits and misses."""

    def __init__(self, enabled: bool = True, max_entries: int = 200_000):
        self.enabled, self.max_entries = enabled, max_entries
        self._data: OrderedDict[str, V] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def get(self, key: str) -> V | None:
        if not self.enabled:
            return None
        with self._lock:
            value = self._data.get(key)
            if value is None:
                self.misses += 1
            else:
                self.hits += 1
                self._data.move_to_end(key)
            return value

    def record_hit(self) -> None:
        """A duplicate inside one batch: scored once, counted as a hit for the others."""
        with self._lock:
            self.hits += 1

    def put(self, key: str, value: V) -> None:
        if not self.enabled:
            return
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.max_entries:
                self._data.popitem(last=False)

    @property
    def hit_rate(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0

    def __len__(self) -> int:
        return len(self._data)

    def stats(self) -> dict[str, float]:
        return {"cache_hits": self.hits, "cache_misses": self.misses, "cache_hit_rate": self.hit_rate,
                "cache_entries": len(self)}
