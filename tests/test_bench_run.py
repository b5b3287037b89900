"""`make bench`'s driver: a bench that raises keeps its earlier numbers and fails the command."""
from __future__ import annotations

import sys
import types

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
