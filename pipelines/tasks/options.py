"""Validation shared by the task generators' options."""
from __future__ import annotations


def index_set(values: list[int] | None, field: str, what: str) -> set[int] | None:
    """``values`` as a set of indices (None = no restriction); a clear error naming ``field`` otherwise."""
    if values is None:
        return None
    if (not isinstance(values, (list, tuple)) or not values
            or not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in values)):
        raise ValueError(f"{field} must be a non-empty list of {what} indices (ints >= 0), got {values!r}")
    return set(values)
