"""Public benchmarks by name: a pinned git checkout in a cache, verified by its file count.

`earl data fetch verilogeval` clones the repository at the pinned commit into
``~/.cache/earl/benchmarks/<name>-<commit[:12]>`` (``$EARL_CACHE/benchmarks/...`` when set) and checks
that the expected files are there; configs then say ``path: verilogeval:spec-to-rtl`` or ``path:
rtllm``, which `load_source` resolves to the checkout (fetching it first if missing). A pinned commit
means every run reads the same problems; the count check catches a partial or wrong checkout. The
repository URL can be overridden (``EARL_<NAME>_URL``, or ``--url``) to fetch from a mirror.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

GIT_TIMEOUT_S = 900
MARKER = ".earl-benchmark"            # written after a checkout passed its count check


def count_verilogeval(folder: Path) -> int:
    """Problem files of a VerilogEval v2 dataset folder: ProbNNN_name_{prompt.txt,ref.sv,test.sv}."""
    pattern = re.compile(r"Prob\d+_.+_(?:prompt\.txt|ref\.sv|test\.sv)")
    if not folder.is_dir():
        return 0
    return sum(1 for f in folder.iterdir() if f.is_file() and pattern.fullmatch(f.name))


def count_rtllm(folder: Path) -> int:
    """RTLLM designs: folders with design_description.txt, testbench.v and exactly one verified_*.v."""
    designs = {tb.parent for tb in folder.rglob("testbench.v")} if folder.is_dir() else set()
    return sum(1 for d in designs
               if (d / "design_description.txt").is_file() and len(list(d.glob("verified_*.v"))) == 1)


@dataclass(frozen=True)
class Subset:
    folder: str                       # inside the checkout ("" = its root)
    expected: int                     # what `count` must find there
    count: Callable[[Path], int]
    what: str                         # what is counted, for the error message


@dataclass(frozen=True)
class Benchmark:
    name: str
    url: str
    commit: str
    subsets: dict[str, Subset]
    default: str                      # the subset `path: <name>` means

    def url_from_env(self) -> str:
        return os.environ.get(f"EARL_{self.name.upper()}_URL") or self.url


# Pins are commits seen in the public repositories: NVlabs/verilog-eval's dataset_spec-to-rtl files and
# hkust-zhiyao/RTLLM's v2.0 category tree (Arithmetic/, Control/, Memory/, Miscellaneous/).
BENCHMARKS: dict[str, Benchmark] = {
    "verilogeval": Benchmark(
        "verilogeval", "https://github.com/NVlabs/verilog-eval", "65c87a832b6cb752c38490b397df372f6ddc1c89",
        {"spec-to-rtl": Subset("dataset_spec-to-rtl", 468, count_verilogeval,
                               "dataset_spec-to-rtl/Prob*_{prompt.txt,ref.sv,test.sv} files (156 problems)")},
        "spec-to-rtl"),
    "rtllm": Benchmark(
        "rtllm", "https://github.com/hkust-zhiyao/RTLLM", "cec0bccb70dc6de956716c7d8c2546d46e2317f0",
        {"v2": Subset("", 50, count_rtllm, "designs with design_description.txt, testbench.v, verified_*.v")},
        "v2"),
}


def cache_root() -> Path:
    base = os.environ.get("EARL_CACHE")
    return (Path(base).expanduser() if base else Path.home() / ".cache" / "earl") / "benchmarks"


def checkout_dir(bench: Benchmark) -> Path:
    return cache_root() / f"{bench.name}-{bench.commit[:12]}"


def parse_name(spec: str) -> tuple[Benchmark, Subset] | None:
    """`verilogeval:spec-to-rtl` / `rtllm` -> (benchmark, subset); None when `spec` names no benchmark."""
    name, _, subset = spec.partition(":")
    bench = BENCHMARKS.get(name)
    if bench is None:
        return None
    if (subset or bench.default) not in bench.subsets:
        raise ValueError(f"{spec}: {name} has subsets {', '.join(bench.subsets)}")
    return bench, bench.subsets[subset or bench.default]


def resolve(spec: str) -> Path | None:
    """The local folder a benchmark name stands for (fetched if missing); None when `spec` is no
    benchmark name or an existing path (a local folder wins over a name)."""
    if Path(spec).expanduser().exists():
        return None
    parsed = parse_name(spec)
    if parsed is None:
        return None
    bench, subset = parsed
    return fetch(bench.name) / subset.folder if subset.folder else fetch(bench.name)


def fetch(name: str, to: str | Path | None = None, url: str | None = None) -> Path:
    """Clone benchmark `name` at its pinned commit into `to` (default: the cache) unless a verified
    checkout is there; returns the checkout. Errors are one line saying what to do."""
    bench = BENCHMARKS.get(name)
    if bench is None:
        raise ValueError(f"unknown benchmark {name!r}; known: {', '.join(BENCHMARKS)}")
    dest = Path(to).expanduser() if to else checkout_dir(bench)
    if _verified(bench, dest):
        return dest
    if dest.exists() and any(dest.iterdir()):
        raise ValueError(f"{dest} exists but is not a verified {name} checkout at {bench.commit[:12]}; "
                         f"move it away or give --to another folder")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f"{dest.name}.partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        source = url or bench.url_from_env()
        _git(bench, ["clone", "--quiet", "--no-checkout", source, str(tmp)])
        _git(bench, ["-C", str(tmp), "-c", "advice.detachedHead=false", "checkout", "--quiet", bench.commit])
        _check_counts(bench, tmp)
        (tmp / MARKER).write_text(f"{name} {bench.commit} {source}\n")
        _move_into_place(bench, tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def _move_into_place(bench: Benchmark, tmp: Path, dest: Path) -> None:
    """Rename the verified clone to `dest`; another process (a second rank) that got there first wins."""
    try:
        if dest.exists() and not any(dest.iterdir()):
            dest.rmdir()
        tmp.rename(dest)
    except OSError:
        if not _verified(bench, dest):
            raise


def _verified(bench: Benchmark, dest: Path) -> bool:
    marker = dest / MARKER
    return marker.is_file() and marker.read_text().split()[1:2] == [bench.commit]


def _check_counts(bench: Benchmark, root: Path) -> None:
    for key, subset in bench.subsets.items():
        found = subset.count(root / subset.folder)
        if found != subset.expected:
            raise ValueError(f"{bench.name} at {bench.commit[:12]} ({key}): expected {subset.expected} "
                             f"{subset.what}, found {found}")


def _git(bench: Benchmark, args: list[str]) -> None:
    if shutil.which("git") is None:
        raise ValueError(f"cannot fetch {bench.name}: git is not installed")
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0"}
    try:
        proc = subprocess.run(["git", *args], capture_output=True, text=True, env=env, timeout=GIT_TIMEOUT_S,
                              check=False)
    except subprocess.TimeoutExpired:
        raise ValueError(f"cannot fetch {bench.name}: git {args[0]} took over {GIT_TIMEOUT_S} s") from None
    if proc.returncode != 0:
        lines = [ln.strip() for ln in (proc.stderr or proc.stdout).splitlines() if ln.strip()]
        why = lines[-1] if lines else f"git exit {proc.returncode}"
        raise ValueError(f"cannot fetch {bench.name}: {why}; run `earl data fetch {bench.name}` on a machine "
                         f"with access and copy the folder it prints to {checkout_dir(bench)}, or fetch with "
                         f"--to DIR and point `path:` at that local copy")
