"""`earl score`: score completions against problems and report pass@k.

    earl score --problems ../shared/data/verilog-eval-v2-sample --samples samples.jsonl --out results.jsonl
    earl score --problems ../shared/data/rtllm --references        # self-check: do the references pass?

SAMPLES holds one {"problem_id", "completion"} object per line; RESULTS gets one line per sample in
input order (problem_id, passed, reward, stage, reason, details). The task kind (pipelines/tasks/kinds.py)
names its scorer, imported only when used, so scoring Verilog never imports bandit and vice versa.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipelines.commands import comma_ints
from pipelines.tasks import kinds
from rewards.jsonl import iter_jsonl
from sandboxes.pool import usable_cpus
from sandboxes.tools import ToolNotFound


class InputError(ValueError):
    """Bad user input: printed as one line naming file and line, exit code 2."""


def add_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--problems", required=True, metavar="PATH",
                        help="problem set: canonical JSONL, a VerilogEval folder or an RTLLM tree")
    parser.add_argument("--samples", metavar="SAMPLES.jsonl",
                        help='one {"problem_id", "completion"} per line (not needed with --references)')
    parser.add_argument("--out", metavar="RESULTS.jsonl", help="where to write one result per sample")
    parser.add_argument("--task", choices=kinds.names(), default=kinds.names()[0],
                        help=f"task kind (default {kinds.names()[0]})")
    parser.add_argument("--references", action="store_true",
                        help="score each problem's own reference (self-check); lists unsupported ones")
    parser.add_argument("--workers", type=int, default=None,
                        help="parallel sandboxes (default: the CPUs this process may run on)")
    parser.add_argument("--formal", choices=("auto", "off", "confirm", "required"), default="auto",
                        help="formal equivalence after a simulation pass (verilog only; auto: confirm on "
                             "reference-only problems, off where the problem has its own testbench)")
    parser.add_argument("--k", default="1,5,10", help="pass@k values, comma-separated (default 1,5,10)")


def run(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except (InputError, ToolNotFound) as exc:
        print(f"earl score: error: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    ks = parse_ks(args.k)
    if args.workers is not None and args.workers < 1:
        raise InputError(f"--workers must be >= 1, got {args.workers}")
    if not Path(args.problems).exists():         # `verilogeval:spec-to-rtl`, `rtllm`: the pinned checkout
        from pipelines.benchmarks import resolve
        args.problems = str(resolve(args.problems) or args.problems)
    if not Path(args.problems).exists():
        raise InputError(f"--problems {args.problems}: no such file or folder")
    kind = kinds.get(args.task)
    module = _task_module(kind)
    if args.references:
        if not hasattr(module, "reference_samples"):
            raise InputError(f"--references is not supported for --task {args.task}")
        samples = _call(module.reference_samples, args.problems)
    elif not args.samples:
        raise InputError("--samples is required (or use --references)")
    else:
        samples = read_samples(args.samples)
    if not args.out and not args.references:
        raise InputError("--out is required")
    if args.out:
        check_out(args.out)
    score_fn = module.score_samples
    options: dict[str, Any] = {"references": True} if args.references else {}
    if args.formal != "auto":                 # auto is the Verilog reward's own default
        options["formal"] = args.formal
    workers = args.workers or usable_cpus()
    rows = _score_with_progress(score_fn, args.problems, samples, workers, options)
    if len(rows) != len(samples):
        raise RuntimeError(f"scorer returned {len(rows)} results for {len(samples)} samples")
    if args.out:
        write_results(args.out, samples, rows)
    print_summary(rows, ks, references=args.references, out=args.out, stages=kind.stages)
    return 0


def parse_ks(text: str) -> list[int]:
    try:
        ks = sorted(set(comma_ints(text)))
    except ValueError:
        raise InputError(f"--k expects comma-separated integers like 1,5,10, got {text!r}") from None
    if not ks or ks[0] < 1:
        raise InputError(f"--k values must be >= 1, got {text!r}")
    return ks


def read_samples(path: str | Path) -> list[dict]:
    """Read SAMPLES.jsonl; a malformed row raises InputError naming file:line."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"--samples {path}: no such file")
    samples = []
    for where, row in iter_jsonl(path, error=InputError):
        missing = [k for k in ("problem_id", "completion") if k not in row]
        if missing:
            raise InputError(f"{where}: missing field(s) {missing} (need problem_id and completion)")
        if not isinstance(row["completion"], (str, list)):
            raise InputError(f"{where}: 'completion' must be a string or a list of chat messages, "
                             f"got {type(row['completion']).__name__}")
        samples.append({**row, "problem_id": str(row["problem_id"]), "_where": where})
    if not samples:
        raise InputError(f"--samples {path}: no samples")
    return samples


def check_out(out: str) -> None:
    """Fail before scoring, not after it, when RESULTS cannot be written: a folder, an unwritable file,
    or a parent folder that cannot be made or written to."""
    path = Path(out)
    if out.endswith(("/", os.sep)) or path.is_dir():
        raise InputError(f"--out {out}: is a directory; give a file name such as {path / 'results.jsonl'}")
    parent = path.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"--out {out}: cannot create {parent} ({exc.strerror or exc})") from None
    if not os.access(parent, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise InputError(f"--out {out}: not writable")


def _task_module(kind: kinds.TaskKind) -> Any:
    try:
        return kind.scoring()
    except ImportError as exc:
        raise InputError(f"--task {kind.name}: cannot import {kind.scorer} ({exc})") from None


def _call(fn: Callable, *a: Any, **kw: Any) -> Any:
    try:
        return fn(*a, **kw)
    except (ValueError, KeyError, FileNotFoundError) as exc:
        raise InputError(exc.args[0] if exc.args else str(exc)) from None


def _score_with_progress(score_fn: Callable, problems: str, samples: list[dict], workers: int,
                         options: dict[str, Any]) -> list[dict]:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    with Progress(TextColumn("scoring"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=not console.is_terminal) as bar:
        task = bar.add_task("score", total=len(samples))
        return _call(score_fn, problems, samples, workers=workers,
                     progress=lambda n: bar.advance(task, n), **options)


def write_results(path: str | Path, samples: list[dict], rows: list[dict]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
        for i, (sample, row) in enumerate(zip(samples, rows, strict=False)):
            out = {"index": i, **row, "problem_id": sample["problem_id"]}
            fh.write(json.dumps(out, ensure_ascii=False, default=str) + "\n")
    return path


def summarize(rows: list[dict], ks: list[int]) -> dict[str, Any]:
    """pass@k (unbiased, only for k every problem has samples for) and counts by stage; rows that could
    not be judged (passed None) are left out of pass@k and counted as `unjudged`."""
    from rewards.metrics import mean_pass_at_k

    per_problem: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    judged = [r for r in rows if r.get("passed") is not None]
    for r in judged:
        per_problem[r["problem_id"]][0] += 1
        per_problem[r["problem_id"]][1] += bool(r.get("passed"))
    counts = {p: (n, c) for p, (n, c) in per_problem.items()}
    pass_k = {k: mean_pass_at_k(counts, k) for k in ks}
    stages = Counter(str(r.get("stage")) for r in rows)
    return {"samples": len(rows), "problems": len(counts), "passed": sum(bool(r.get("passed")) for r in rows),
            "pass_at_k": pass_k, "stages": dict(stages), "unjudged": len(rows) - len(judged)}


def _formal_counts(rows: list[dict]) -> dict[str, int] | None:
    """Simulation passes that formal proved / refuted (testbench false positives) / left unknown."""
    if not any((r.get("details") or {}).get("formal") for r in rows):
        return None                                   # formal was off: don't import it
    from rewards.verilog.formal import formal_summary
    return formal_summary(rows)


def print_summary(rows: list[dict], ks: list[int], *, references: bool = False, out: str | None = None,
                  stages: tuple[str, ...] = ()) -> None:
    """The summary table; `stages` (the task's stage vocabulary) orders the per-stage counts."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    s = summarize(rows, ks)
    table = Table(title=f"{s['samples']} samples, {s['problems']} problems, {s['passed']} passed")
    table.add_column("metric")
    table.add_column("value", justify="right")
    min_n = min((sum(1 for r in rows if r["problem_id"] == p) for p in {r["problem_id"] for r in rows}), default=0)
    for k, v in s["pass_at_k"].items():
        table.add_row(f"pass@{k}", f"{v:.4f}" if v is not None else f"n/a (needs {k} samples/problem, min is {min_n})")
    known = [st for st in stages if st in s["stages"]] + sorted(set(s["stages"]) - set(stages))
    for st in known:
        table.add_row(f"stage {st}", str(s["stages"][st]))
    console.print(table)
    unjudged = [r for r in rows if r.get("passed") is None]
    if unjudged:
        first = unjudged[0]
        console.print(f"not judged (reward None, left out of pass@k): {len(unjudged)}, e.g. "
                      f"{first['problem_id']}: {first.get('reason', '')}", markup=False, highlight=False)
    f = _formal_counts(rows)
    if f:
        console.print(f"formal: {f['checked']} simulation passes checked: {f['equivalent']} proven, "
                      f"{f['false_positives']} refuted (testbench false positives), {f['unknown']} unknown")
    if references:
        bad = [r for r in rows if r.get("unsupported") or not r.get("passed")]
        console.print(f"references: {s['passed']} of {len(rows)} pass; {len(bad)} unsupported")
        for r in bad:
            console.print(f"  unsupported {r['problem_id']}: {r.get('reason', '')}", markup=False, highlight=False)
    if out:
        console.print(f"results: {out}")
