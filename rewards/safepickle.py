"""Read pickled plain data (dicts, lists, tuples, sets, strings, numbers, bytes) without running code.

Some public datasets (CodeV-R1's verl parquet) ship their ground truth as pickle bytes. `pickle.loads`
on downloaded bytes runs whatever callable the pickle names (`os.system`, ...). Here every global is
refused except `set` / `frozenset` (protocol 2-3 pickles build sets by calling them), so a payload can
name nothing that acts (protocol 2's bytes-from-latin1 call is honoured for that one use); the result is
then walked, and anything but plain data is refused too.
"""
from __future__ import annotations

import io
import pickle
from typing import Any


class UnsafePickle(ValueError):
    """The pickle asks for a global (a class or a function) or holds something other than plain data."""


def _latin1_bytes(text: str, encoding: str = "latin1") -> bytes:
    """Protocol 2 writes bytes as `_codecs.encode(text, "latin1")`; only that exact call is honoured."""
    if not isinstance(text, str) or encoding != "latin1":
        raise UnsafePickle(f"pickle calls _codecs.encode with {type(text).__name__}, {encoding!r}; refused")
    return text.encode("latin1")


# The callables a plain-data pickle of protocol 2-3 needs (module names as protocol 2 writes them, too).
ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("builtins", "set"): set, ("builtins", "frozenset"): frozenset,
    ("__builtin__", "set"): set, ("__builtin__", "frozenset"): frozenset,
    ("_codecs", "encode"): _latin1_bytes,
}
PLAIN_TYPES = (dict, list, tuple, set, frozenset, str, bytes, bytearray, int, float, bool, type(None))


class _PlainUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in ALLOWED_GLOBALS:
            return ALLOWED_GLOBALS[(module, name)]
        raise UnsafePickle(f"pickle tries to load global {module}.{name}; refused (only plain data is read)")

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickle("pickle uses a persistent id; refused")


def loads_plain(data: bytes, where: str = "<pickle>") -> Any:
    """Unpickle `data` if it holds plain data only; UnsafePickle (naming `where`) otherwise."""
    try:
        value = _PlainUnpickler(io.BytesIO(data)).load()
    except UnsafePickle as exc:
        raise UnsafePickle(f"{where}: {exc}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError, AttributeError,
            OverflowError, MemoryError) as exc:          # truncated or garbage bytes
        raise UnsafePickle(f"{where}: not a readable pickle ({type(exc).__name__}: {exc})") from None
    _check_plain(value, where)
    return value


def _check_plain(value: Any, where: str) -> None:
    stack, seen = [value], set()
    while stack:
        v = stack.pop()
        if id(v) in seen:                          # memo references may make cycles
            continue
        seen.add(id(v))
        if not isinstance(v, PLAIN_TYPES):
            raise UnsafePickle(f"{where}: pickle holds a {type(v).__name__}; only plain data is read")
        if isinstance(v, dict):
            stack.extend(v.keys())
            stack.extend(v.values())
        elif isinstance(v, (list, tuple, set, frozenset)):
            stack.extend(v)
