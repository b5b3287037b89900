"""Metrics shared by `earl score` and `earl eval`."""
from __future__ import annotations

from math import comb


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k (Chen et al., 2021): 1 - C(n-c, k) / C(n, k); needs n >= k."""
    if k > n:
        raise ValueError(f"pass@{k} needs at least {k} samples, got {n}")
    if n - c < k:
        return 1.0
    return 1.0 - comb(n - c, k) / comb(n, k)


def mean_pass_at_k(counts: dict[str, tuple[int, int]], k: int) -> float | None:
    """Mean pass@k over problems given {problem: (n, correct)}; None if any problem has < k samples."""
    if not counts or any(n < k for n, _ in counts.values()):
        return None
    return sum(pass_at_k(n, c, k) for n, c in counts.values()) / len(counts)
