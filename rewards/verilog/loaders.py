"""Adapters from benchmark layouts to `Problem` records; `load_problems(path)` picks one by looking.

- VerilogEval v2 folder: ``ProbNNN_name_{prompt.txt,ref.sv,test.sv}``; id = ``ProbNNN_name``.
- RTLLM v2 tree: ``<Category>/.../<design>/{design_description.txt,testbench.v,verified_*.v,data}``;
  id = design folder name; top module = the module the testbench instantiates (the verified file's
  module is renamed to it so the reference runs as a candidate would).
- Canonical JSONL (one `Problem` per line).
"""
from __future__ import annotations

import logging
from pathlib import Path

from rewards.verilog.extract import instantiated_modules, module_names, rename_module, root_modules
from rewards.verilog.harness import problem_issue
from rewards.verilog.problems import Problem, read_jsonl

_RTLLM_FIXED = {"design_description.txt", "testbench.v", "makefile", "Makefile"}   # + upstream's VCS makefiles
log = logging.getLogger(__name__)


def load_problems(path: str | Path) -> list[Problem]:
    """Load problems from a JSONL file, a VerilogEval folder or an RTLLM tree (autodetected)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"problems path {path} does not exist")
    if path.is_file():
        if path.suffix not in {".jsonl", ".json"}:
            raise ValueError(f"{path}: expected a .jsonl file of problems or a benchmark folder")
        problems = read_jsonl(path)
    elif any(path.glob("*_prompt.txt")):
        problems = load_verilogeval_dir(path)
    elif any(path.rglob("testbench.v")):
        problems = load_rtllm_dir(path)
    elif any(path.glob("*.jsonl")):
        problems = [p for f in sorted(path.glob("*.jsonl")) for p in read_jsonl(f)]
    else:
        raise ValueError(f"{path}: not a problem set (no *_prompt.txt of VerilogEval, no testbench.v "
                         f"of RTLLM, no *.jsonl)")
    _check_unique(problems, path)
    _warn_unjudgeable(problems, path)
    return problems


def _warn_unjudgeable(problems: list[Problem], path: Path) -> None:
    """One warning naming the problems no candidate can be judged on (kept: their samples score None)."""
    bad = [f"{p.id}: {why}" for p in problems if (why := problem_issue(p))]
    if bad:
        log.warning("%s: %d of %d problems cannot be judged (their samples score None): %s", path, len(bad),
                    len(problems), "; ".join(bad[:10]) + (" ..." if len(bad) > 10 else ""))


def _check_unique(problems: list[Problem], path: Path) -> None:
    seen: set[str] = set()
    for p in problems:
        if p.id in seen:
            raise ValueError(f"{path}: duplicate problem id {p.id!r}")
        seen.add(p.id)


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        return path.read_text(encoding="latin-1")


def load_verilogeval_dir(folder: str | Path) -> list[Problem]:
    folder = Path(folder)
    problems = []
    for prompt in sorted(folder.glob("*_prompt.txt")):
        pid = prompt.name[: -len("_prompt.txt")]
        ref, test = folder / f"{pid}_ref.sv", folder / f"{pid}_test.sv"
        for need in (ref, test):
            if not need.is_file():
                raise FileNotFoundError(f"{prompt}: VerilogEval problem {pid} has no {need.name}")
        problems.append(Problem(
            id=pid, spec=_read(prompt), testbench=_read(test), top_module="TopModule",
            reference=_read(ref), ref_module="RefModule", harness="verilogeval",
            meta={"source": "verilogeval-v2", "tb_top": "tb"}))
    return problems


def load_rtllm_dir(root: str | Path) -> list[Problem]:
    root = Path(root)
    return [load_rtllm_design(tb.parent, root) for tb in sorted(root.rglob("testbench.v"))]


def load_rtllm_design(design: Path, root: Path | None = None) -> Problem:
    tb_path = design / "testbench.v"
    desc = design / "design_description.txt"
    verified = sorted(design.glob("verified_*.v"))
    if not desc.is_file():
        raise FileNotFoundError(f"{design}: RTLLM design has no design_description.txt")
    if len(verified) != 1:
        raise FileNotFoundError(f"{design}: expected exactly one verified_*.v, found {len(verified)}")
    testbench, reference = _read(tb_path), _read(verified[0])
    top = _rtllm_top(design.name, testbench, tb_path)
    ref_roots = root_modules(reference) or module_names(reference)
    if not ref_roots:
        raise ValueError(f"{verified[0]}: declares no module")
    original = ref_roots[0]
    if original != top:
        if top in module_names(reference):
            raise ValueError(f"{verified[0]}: module {top!r} exists but is not the top ({original!r} is)")
        reference = rename_module(reference, original, top)
    files = {f.name: _read(f) for f in sorted(design.iterdir())
             if f.is_file() and f.name not in _RTLLM_FIXED and f not in verified}
    tb_roots = [m for m in root_modules(testbench) if m != top]
    meta = {"source": "rtllm-v2", "ref_module_original": original, "tb_top": tb_roots[-1] if tb_roots else None}
    if root is not None:
        meta["category"] = "/".join(design.relative_to(root).parts[:-1])
    return Problem(id=design.name, spec=_read(desc), testbench=testbench, top_module=top,
                   reference=reference, ref_module=top, harness="rtllm", files=files, meta=meta)


def _rtllm_top(folder_name: str, testbench: str, where: Path) -> str:
    """The design module the testbench instantiates: the folder name when it does, else the only
    module it instantiates without declaring it."""
    declared = set(module_names(testbench))
    used = [m for m in instantiated_modules(testbench) if m not in declared]
    if folder_name in used:
        return folder_name
    if len(used) == 1:
        return used[0]
    raise ValueError(f"{where}: cannot tell the design module; the testbench instantiates {used or 'nothing'}")
