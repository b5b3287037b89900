"""`make bench`'s driver: a bench that raises keeps its earlier numbers and fails the command; benches import
only what `python -m bench.run` can (no test module)."""
from __future__ import annotations

import ast
import sys
import types
from pathlib import Path

from bench import Unmeasured
from bench import run as bench_run


def _bench(name: str, body) -> types.ModuleType:
    mod = types.ModuleType(f"bench.bench_{name}")
    mod.run = body          # type: ignore[attr-defined]
    return mod


def _raise(quick: bool = False) -> str:
    raise RuntimeError("sandbox missing")


def test_a_failing_bench_keeps_its_section_and_exits_nonzero(tmp_path, monkeypatch, capsys):
    out = tmp_path / "BENCHMARKS.md"
    out.write_text("# Benchmarks\n\n<!-- bench:boom -->\n## boom\n\nold numbers 1.00x\n\n"
                   "<!-- bench:ok -->\n## ok\n\nold ok\n")
    monkeypatch.setattr(bench_run, "OUT", out)
    monkeypatch.setattr(bench_run, "discover", lambda: ["boom", "ok"])
    monkeypatch.setitem(sys.modules, "bench.bench_ok", _bench("ok", lambda quick=False: "## ok\n\nnew ok 0.50x"))
    monkeypatch.setitem(sys.modules, "bench.bench_boom", _bench("boom", _raise))

    assert bench_run.main(["--only", "boom,ok"]) == 1
    text = out.read_text()
    assert "old numbers 1.00x" in text and "FAILED" not in text
    assert "new ok 0.50x" in text and "old ok" not in text
    err = capsys.readouterr().err
    assert "RuntimeError: sandbox missing" in err and "bench failed: boom" in err


def test_all_benches_passing_exit_zero(tmp_path, monkeypatch):
    out = tmp_path / "BENCHMARKS.md"
    monkeypatch.setattr(bench_run, "OUT", out)
    monkeypatch.setattr(bench_run, "discover", lambda: ["ok"])
    monkeypatch.setitem(sys.modules, "bench.bench_ok", _bench("ok", lambda quick=False: "## ok\n\n1.00x"))
    assert bench_run.main([]) == 0
    assert "<!-- bench:ok -->\n## ok\n\n1.00x\n" in out.read_text()


def test_an_unmeasured_bench_keeps_its_section_and_exits_zero(tmp_path, monkeypatch, capsys):
    """A bench that cannot measure here (no data, no checkpoint) must not overwrite numbers measured
    elsewhere with a placeholder, nor fail `make bench` on a machine that simply lacks them."""
    out = tmp_path / "BENCHMARKS.md"
    out.write_text("# Benchmarks\n\n<!-- bench:rl -->\n## rl\n\nmeasured 0.04\n")
    monkeypatch.setattr(bench_run, "OUT", out)
    monkeypatch.setattr(bench_run, "discover", lambda: ["rl", "ok"])

    def unmeasured(quick: bool = False) -> str:
        raise Unmeasured("no SFT checkpoint")
    monkeypatch.setitem(sys.modules, "bench.bench_rl", _bench("rl", unmeasured))
    monkeypatch.setitem(sys.modules, "bench.bench_ok", _bench("ok", lambda quick=False: "## ok\n\n1.00x"))
    assert bench_run.main([]) == 0
    text = out.read_text()
    assert "measured 0.04" in text and "## ok" in text
    assert "not measured: no SFT checkpoint (its section is unchanged)" in capsys.readouterr().err


def test_benches_import_no_test_module():
    """`make bench` runs without pytest's sys.path (tests/ is not on it): a bench importing a test module
    fails there only, at the line that needs it (bench_formal once did). Shared helpers live in tests.helpers."""
    root = Path(bench_run.__file__).resolve().parents[1]
    test_modules = {f.stem for f in (root / "tests").glob("*.py")}
    bad = []
    for src in sorted((root / "bench").glob("*.py")):
        for node in ast.walk(ast.parse(src.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module] if isinstance(node, ast.ImportFrom) and node.module and not node.level
                     else [])
            bad += [f"{src.name}:{node.lineno} imports {n}" for n in names if n.split(".")[0] in test_modules]
    assert not bad, bad
