"""Options from mappings, strictly: the one unknown-key check and type coercion every layer uses.

A typo in a 7B run's config (or a reward's kwargs, a sandbox limit, a launch setting) should fail in a
second naming the key, not after an hour of training. `from_dict` builds a dataclass from a mapping:
unknown keys (with "did you mean"), wrong types and values outside a `Literal[...]` raise `OptionError`
naming the key path; numbers written as YAML strings ("1e-4") are accepted for numeric fields. It lives
in `sandboxes/`, the package every other layer may import (dependencies point down).
"""
from __future__ import annotations

import dataclasses
import difflib
import functools
import types
import typing
from typing import Any


class OptionError(ValueError, TypeError):
    """A bad option, naming its key. A ValueError (config errors) and a TypeError (a bad keyword
    argument, what Python raises for one) alike, so callers catching either keep working."""


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Return `value` as type `tp` or raise OptionError naming `key`. Numbers written as YAML strings
    ("1e-4", which PyYAML reads as str) are accepted for float/int fields."""
    origin = typing.get_origin(tp)
    if tp is Any or tp is typing.Any:
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        real = [a for a in args if a is not type(None)]
        if len(real) == 1:                     # Optional[X]: X's own error names the inner key
            return _coerce(value, real[0], key)
        errors = []
        for arg in real:
            try:
                return _coerce(value, arg, key)
            except OptionError as exc:
                errors.append(str(exc))
        raise OptionError(f"{key}: expected {' or '.join(_type_name(a) for a in args)}, got {value!r}")
    if origin is typing.Literal:
        if value not in typing.get_args(tp):
            raise OptionError(f"{key}: expected one of {list(typing.get_args(tp))}, got {value!r}")
        return value
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, key)
    if origin in (list, tuple, set) or tp in (list, tuple):
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            raise OptionError(f"{key}: expected a list, got {value!r}")
        args = typing.get_args(tp)
        inner = args[0] if args else Any
        return [_coerce(v, inner, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise OptionError(f"{key}: expected a mapping, got {value!r}")
        args = typing.get_args(tp)
        if len(args) == 2 and dataclasses.is_dataclass(args[1]):
            return {k: _coerce(v, args[1], f"{key}.{k}") for k, v in value.items()}
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise OptionError(f"{key}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        raise OptionError(f"{key}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return value                       # an int stays an int (save_steps: 10, not 10.0)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise OptionError(f"{key}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise OptionError(f"{key}: expected a string, got {value!r}")
    if isinstance(tp, type):
        if isinstance(value, tp):
            return value
        if issubclass(tp, str) and isinstance(value, str):      # str-valued enums (TRL's IntervalStrategy...)
            try:
                return tp(value).value         # keep the plain string: the resolved config stays YAML
            except ValueError:
                raise OptionError(f"{key}: expected one of {[m.value for m in tp]}, got {value!r}") from None
        raise OptionError(f"{key}: expected {tp.__name__}, got {value!r}")
    return value


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def from_dict(cls: type, raw: Any, key: str = "", noun: str = "config key") -> Any:
    """Build dataclass `cls` from a mapping; unknown keys and wrong types raise OptionError naming the key."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise OptionError(f"{key or '<config>'}: expected a mapping, got {raw!r}")
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    check_known(raw, names, key, noun)
    hints = _hints(cls)
    kwargs = {k: _coerce(v, hints[k], f"{key}.{k}" if key else k) for k, v in raw.items()}
    return cls(**kwargs)


def check_fields(cls: type, raw: dict[str, Any], key: str) -> dict[str, Any]:
    """Validate a free-form section (a TRL trainer config) against dataclass `cls`: names and types.
    Returns the coerced mapping (e.g. learning_rate "1e-4" -> 1e-4); does not construct `cls`."""
    if not isinstance(raw, dict):
        raise OptionError(f"{key}: expected a mapping, got {raw!r}")
    check_known(raw, [f.name for f in dataclasses.fields(cls) if f.init], key, "config key", cls.__name__)
    hints = _hints(cls)
    return {k: _coerce(v, hints.get(k, Any), f"{key}.{k}") for k, v in raw.items()}


def check_known(raw: Any, known: Any, key: str = "", noun: str = "config key", owner: str = "") -> None:
    """The one unknown-key check: the first key of `raw` not in `known` raises, naming it (a config key by
    its full path, `stages.rl.trainer.lr`; an option by name, of `key`), the closest known names ("did you
    mean") and, for short lists, all of them. `owner`: the class the keys belong to (GRPOConfig)."""
    known = list(known)
    for k in raw:
        if k in known:
            continue
        if noun == "config key":
            name, where = (f"{key}.{k}" if key else str(k)), ""
        else:
            name, where = repr(k), (f" of {key}" if key else "")
        close = difflib.get_close_matches(str(k), known, n=3, cutoff=0.6) or \
            [f for f in sorted(known) if str(k).split("_")[0] in f][:3]
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        owner_text = f" for {owner}" if owner else ""
        tail = f"; known: {', '.join(known)}" if len(known) <= 30 else ""
        raise OptionError(f"unknown {noun} {name}{where}{owner_text}{hint}{tail}")
