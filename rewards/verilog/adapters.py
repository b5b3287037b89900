"""Row adapters: public Verilog dataset layouts -> `Problem` records (`ADAPTERS`, by config name).

A config names one with `adapter:`; each takes a raw row (a dict as the parquet / JSONL / `datasets`
row holds it) and returns a Problem, or raises `SkipRow` saying why the row is unusable (the loader
warns naming the row and goes on).

- `codev-r1`: CodeV-R1's RL parquet (verl layout): `prompt` (chat messages; the user turn is the spec)
  or `question`, `reward_model.ground_truth` = pickled dict {answer: {code}, port fields}. The pickle is
  read by rewards.safepickle (plain data only, never `pickle.loads`). Reference-only: the reward
  generates the bench from the reference.
- `codev-r1-json`: the same rows with `ground_truth` as a JSON string or mapping (pickles refused).
- `verireason`: `instruction`, `output` (the reference, in fences or `<answer>` tags), `tb` (a bench
  writing output vectors), `tb_result` (the expected vectors): harness `vectors`.
- `fields_problem` turns an already column-mapped record into a Problem (the `columns:` path).
"""
from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from rewards.safepickle import UnsafePickle, loads_plain
from rewards.verilog.extract import extract_code, instantiated_modules, module_names, root_modules
from rewards.verilog.harness import vector_output_file
from rewards.verilog.problems import Problem


class SkipRow(ValueError):
    """This row cannot become a problem (the message says why); loaders warn and skip it."""


Adapter = Callable[[dict[str, Any], str, int], Problem]


# --------------------------------------------------------------------------- shared pieces


def chat_user_text(value: Any) -> Any:
    """A chat-message list's (last) user turn; any other value unchanged."""
    if isinstance(value, (list, tuple)) and value and all(isinstance(m, dict) for m in value):
        users = [m for m in value if m.get("role") == "user"]
        if not users:
            raise SkipRow("chat messages without a user turn")
        content = users[-1].get("content")
        if isinstance(content, list):          # typed parts: [{"type": "text", "text": ...}]
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        return content
    return value


def reference_code(text: Any) -> str:
    """The Verilog of a reference answer: fences and `<think>`/`<answer>` wrappers removed, plain code kept
    whole (so `define / `timescale lines outside modules survive)."""
    if not isinstance(text, str) or not text.strip():
        raise SkipRow("no reference")
    wrapped = "```" in text or re.search(r"</?(?:answer|think)>", text)
    code = extract_code(text) if wrapped else text
    if not module_names(code):
        raise SkipRow("the reference declares no module")
    return code


def top_module_of(reference: str, spec: str = "", bench: str | None = None) -> str:
    """The module a candidate must define: the one the bench instantiates, else the reference's only root
    module, else the root the spec names."""
    names = module_names(reference)
    if bench:
        used = [m for m in instantiated_modules(bench) if m in names]
        if len(used) == 1:
            return used[0]
    roots = root_modules(reference) or names
    if len(roots) == 1:
        return roots[0]
    named = [r for r in roots if re.search(rf"\b{re.escape(r)}\b", spec or "")]
    if len(named) == 1:
        return named[0]
    raise SkipRow(f"cannot tell the top module among {roots}")


def _text(value: Any, what: str) -> str:
    value = chat_user_text(value)
    if not isinstance(value, str) or not value.strip():
        raise SkipRow(f"no {what}")
    return value


def _mapping(value: Any, what: str, where: str, allow_pickle: bool) -> dict[str, Any]:
    """A field that holds a mapping directly, as JSON text, or (if allowed) as pickled plain data."""
    if isinstance(value, (bytes, bytearray)):
        if not allow_pickle:
            raise SkipRow(f"{what} is pickled bytes (use adapter codev-r1 to read pickles safely)")
        try:
            value = loads_plain(bytes(value), f"{where} {what}")
        except UnsafePickle as exc:
            raise SkipRow(str(exc)) from None
    elif isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise SkipRow(f"{what} is not valid JSON ({exc.msg})") from None
    if not isinstance(value, dict):
        raise SkipRow(f"{what} is not a mapping (got {type(value).__name__})")
    return value


def _json_safe(value: Any) -> Any:
    """Port fields hold sets of tuples; Arrow and JSON need lists (sorted, so rows compare equal)."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (set, frozenset)):
        return sorted((_json_safe(v) for v in value), key=repr)
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", "replace")
    return value


# --------------------------------------------------------------------------- CodeV-R1


def _codev_r1(row: dict[str, Any], where: str, index: int, allow_pickle: bool = True) -> Problem:
    reward_model = _mapping(row.get("reward_model"), "reward_model", where, allow_pickle=False)
    truth = _mapping(reward_model.get("ground_truth"), "ground_truth", where, allow_pickle)
    answer = truth.get("answer")
    code = answer.get("code") if isinstance(answer, dict) else answer
    reference = reference_code(code)
    spec = _text(row.get("prompt") if row.get("prompt") else row.get("question"), "prompt or question")
    top = top_module_of(reference, spec)
    extra = row.get("extra_info")
    extra = extra if isinstance(extra, dict) else {}
    pid = extra.get("index", index)
    source = row.get("data_source") or "codev-r1"
    ports = {k: v for k, v in truth.items() if k != "answer"}
    meta = {"source": "codev-r1", "data_source": str(source), "index": str(pid),
            "ground_truth_ports": json.dumps(_json_safe(ports), sort_keys=True)}
    return Problem(id=f"{source}-{pid}", spec=spec, testbench=None, top_module=top, reference=reference,
                   ref_module=top, harness="verilogeval", meta=meta)


def codev_r1(row: dict[str, Any], where: str, index: int) -> Problem:
    return _codev_r1(row, where, index, allow_pickle=True)


def codev_r1_json(row: dict[str, Any], where: str, index: int) -> Problem:
    return _codev_r1(row, where, index, allow_pickle=False)


# --------------------------------------------------------------------------- VeriReason


def verireason(row: dict[str, Any], where: str, index: int) -> Problem:
    spec = _text(row.get("instruction"), "instruction")
    reference = reference_code(row.get("output"))
    bench = _text(row.get("tb"), "testbench (tb)")
    expected = row.get("tb_result")
    if not isinstance(expected, str) or not expected.strip():
        raise SkipRow("no expected vectors (tb_result)")
    top = top_module_of(reference, spec, bench)
    if top not in instantiated_modules(bench):
        raise SkipRow(f"the testbench does not instantiate {top}")
    meta: dict[str, Any] = {"source": "verireason", "expected_output": expected}
    out = vector_output_file(bench)
    if out:
        meta["vector_file"] = out
    pid = row.get("id", index)
    return Problem(id=str(pid), spec=spec, testbench=bench, top_module=top, reference=reference,
                   ref_module=top, harness="vectors", meta=meta)


# --------------------------------------------------------------------------- column-mapped records


def fields_problem(record: dict[str, Any], where: str, index: int) -> Problem:
    """A Problem from mapped fields: `spec` and a reference or testbench required; the top module comes
    from the reference when not given (its module keeps its name: ref_module = top_module)."""
    rec = {k: v for k, v in record.items() if v is not None}
    rec["spec"] = _text(rec.get("spec"), "spec")
    if rec.get("reference") is not None:
        rec["reference"] = reference_code(rec["reference"])
    if not rec.get("reference") and not rec.get("testbench"):
        raise SkipRow("no reference and no testbench")
    if "top_module" not in rec and rec.get("reference"):
        rec["top_module"] = top_module_of(rec["reference"], rec["spec"], rec.get("testbench"))
        rec.setdefault("ref_module", rec["top_module"])
    rec.setdefault("id", str(index))
    for key in ("meta", "files"):
        if key in rec and not isinstance(rec[key], dict):
            raise SkipRow(f"{key} is not a mapping")
    try:
        return Problem.from_dict(rec, where)
    except (TypeError, ValueError) as exc:
        raise SkipRow(str(exc)) from None


ADAPTERS: dict[str, Adapter] = {
    "codev-r1": codev_r1,
    "codev-r1-json": codev_r1_json,
    "verireason": verireason,
}
