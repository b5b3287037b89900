"""`make bench`: run every bench/bench_*.py and write their sections into BENCHMARKS.md.

Each bench module exposes ``run(quick: bool = False) -> str`` returning a markdown section whose numbers are
ratios against a baseline measured in the same process, so they mean something on any machine.
`python -m bench.run --only verilog,earl` refreshes some sections and keeps the others. A bench that cannot
measure on this machine (its data or checkpoint is missing) raises `Unmeasured`: its section keeps the numbers
of the last run that could, the reason is printed, and the run does not fail.
Only `bench_*.py` modules are discovered: the CUDA check `bench/gpu.py` (`make bench-gpu`) is deliberately not
one, so `make bench` stays CPU-only; it writes its own `gpu` section through :func:`replace_section`.
"""
from __future__ import annotations

import argparse
import importlib
import os
import platform
import re
import subprocess
import sys
import time
import traceback
from pathlib import Path

from bench import Unmeasured

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "BENCHMARKS.md"
MARK = "<!-- bench:{} -->"


def discover() -> list[str]:
    return sorted(p.stem.removeprefix("bench_") for p in (ROOT / "bench").glob("bench_*.py"))


def _header() -> str:
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                text=True, check=False).stdout.strip()
    except OSError:
        commit = "?"
    return (f"# Benchmarks\n\nWritten by `make bench` ({time.strftime('%Y-%m-%d')}, commit {commit}, "
            f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python "
            f"{platform.python_version()}). Ratios compare against a baseline run in the same process.\n")


def _sections(text: str) -> dict[str, str]:
    """Existing sections keyed by bench name, so a partial run keeps the rest."""
    parts = re.split(r"(?m)^<!-- bench:(\S+) -->\n", text)
    return {parts[i]: parts[i + 1].rstrip() + "\n" for i in range(1, len(parts) - 1, 2)}


def replace_section(path: Path, name: str, body: str, header: str | None = None) -> None:
    """Write section ``name`` into ``path``, keeping the other sections; the preamble above the first section
    is ``header`` when given, else the file's own (a GPU run must not relabel the CPU machine's header)."""
    text = path.read_text() if path.exists() else ""
    sections = _sections(text)
    sections[name] = body.rstrip() + "\n"
    if header is None:
        header = re.split(r"(?m)^<!-- bench:", text, maxsplit=1)[0].rstrip() + "\n" if text else _header()
    path.write_text(header + "".join(f"\n{MARK.format(k)}\n{sections[k]}" for k in sorted(sections)))


def run_one(name: str, quick: bool) -> str | Unmeasured | None:
    """The bench's section; its Unmeasured; or None when it raised (the traceback goes to stderr)."""
    t0 = time.perf_counter()
    body: str | Unmeasured | None
    try:
        body = importlib.import_module(f"bench.bench_{name}").run(quick=quick).rstrip() + "\n"
    except Unmeasured as why:
        body = why
    except Exception:  # noqa: BLE001 - one broken bench must not lose the others' numbers
        traceback.print_exc()
        body = None
    said = " FAILED" if body is None else ""
    if isinstance(body, Unmeasured):
        said = f" not measured: {body} (its section is unchanged)"
    print(f"bench {name}: {time.perf_counter() - t0:.1f}s{said}", file=sys.stderr)
    return body


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--only", default="", help="comma-separated bench names (default: all)")
    ap.add_argument("--quick", action="store_true", help="fewer repetitions")
    args = ap.parse_args(argv)
    names = [n for n in args.only.split(",") if n] or discover()
    unknown = sorted(set(names) - set(discover()))
    if unknown:
        ap.error(f"unknown bench(es) {unknown}; available: {discover()}")
    failed, wrote = [], False
    for name in names:
        body = run_one(name, args.quick)
        if body is None:
            failed.append(name)     # its section keeps the numbers of the last run that worked
        elif isinstance(body, str):  # after each bench, so an interrupted run keeps what it measured
            replace_section(OUT, name, body, header=_header())
            wrote = True
    if wrote:
        print(f"wrote {OUT}")
    if failed:
        print(f"bench failed: {', '.join(failed)} (traceback above; their sections in {OUT.name} are unchanged)",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
