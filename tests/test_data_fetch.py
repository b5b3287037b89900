"""`earl data fetch` and benchmark names in configs, against local git repositories built here (offline):
pinned commit, count check, cache reuse, URL override, one-line errors, configs that load without fetching."""
from __future__ import annotations

import dataclasses
import shutil
import subprocess
from pathlib import Path

import pytest

from pipelines import benchmarks
from pipelines.cli import main
from pipelines.config import DataSource, load_config
from pipelines.data import load_source

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git not installed")
REPO = Path(__file__).resolve().parents[1]


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args], cwd=cwd,
                          check=True, capture_output=True, text=True).stdout.strip()


def commit_repo(root: Path) -> str:
    git(root, "init", "-q")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "fixture")
    return git(root, "rev-parse", "HEAD")


def fake_verilogeval(root: Path, problems: int = 156) -> Path:
    folder = root / "dataset_spec-to-rtl"
    folder.mkdir(parents=True)
    for i in range(1, problems + 1):
        pid = f"Prob{i:03d}_p{i}"
        (folder / f"{pid}_prompt.txt").write_text(f"spec {i}\n")
        (folder / f"{pid}_ref.sv").write_text("module RefModule(input a, output y);\nassign y = a;\nendmodule\n")
        (folder / f"{pid}_test.sv").write_text("module tb; endmodule\n")
    (folder / "problems.txt").write_text("\n".join(f"Prob{i:03d}" for i in range(1, problems + 1)))
    (root / "README.md").write_text("fake verilog-eval\n")
    return root


def fake_rtllm(root: Path, designs: int = 50) -> Path:
    for i in range(designs):
        d = root / ("Arithmetic" if i % 2 else "Control") / "Group" / f"design{i}"
        d.mkdir(parents=True)
        (d / "design_description.txt").write_text(f"design {i}\n")
        (d / "testbench.v").write_text(f"module tb;\n  reg a;\n  design{i} uut(.a(a));\nendmodule\n")
        (d / f"verified_design{i}.v").write_text(f"module design{i}(input a); endmodule\n")
        (d / "makefile").write_text("vcs:\n\tvcs testbench.v\n")
    return root


@pytest.fixture
def bench_env(tmp_path, monkeypatch):
    """Build a repository for `name`, pin the table to its commit, point the URL and the cache at tmp."""
    monkeypatch.setenv("EARL_CACHE", str(tmp_path / "cache"))

    def make(name: str, **kw) -> str:
        build = {"verilogeval": fake_verilogeval, "rtllm": fake_rtllm}[name]
        src = build(tmp_path / f"upstream-{name}", **kw)
        commit = commit_repo(src)
        monkeypatch.setitem(benchmarks.BENCHMARKS, name, dataclasses.replace(benchmarks.BENCHMARKS[name],
                                                                              commit=commit))
        monkeypatch.setenv(f"EARL_{name.upper()}_URL", str(src))
        return commit
    return make


def test_fetch_verilogeval_pins_verifies_and_loads_by_name(bench_env, tmp_path, capsys):
    commit = bench_env("verilogeval")
    assert main(["data", "fetch", "verilogeval"]) == 0
    out, err = capsys.readouterr()
    path = Path(out.strip())
    assert path == tmp_path / "cache" / "benchmarks" / f"verilogeval-{commit[:12]}"
    assert "path: verilogeval:spec-to-rtl" in err
    assert git(path, "rev-parse", "HEAD") == commit
    problems = load_source(DataSource(path="verilogeval:spec-to-rtl"))
    assert len(problems) == 156 and problems[0].id == "Prob001_p1"
    assert len(load_source(DataSource(path="verilogeval"))) == 156          # the default subset
    # a second fetch reuses the verified checkout (the upstream may even be gone)
    shutil.rmtree(tmp_path / "upstream-verilogeval")
    assert main(["data", "fetch", "verilogeval"]) == 0
    assert Path(capsys.readouterr().out.strip()) == path


def test_fetch_rtllm_on_first_use_and_skips_makefiles(bench_env, tmp_path):
    commit = bench_env("rtllm")
    problems = load_source(DataSource(path="rtllm"))                     # fetched here, on first load
    assert len(problems) == 50
    assert (tmp_path / "cache" / "benchmarks" / f"rtllm-{commit[:12]}" / benchmarks.MARKER).is_file()
    p = {p.id: p for p in problems}["design3"]
    assert p.top_module == "design3" and p.files == {} and p.meta["category"] == "Arithmetic/Group"


def test_count_mismatch_is_an_error_and_leaves_no_checkout(bench_env, tmp_path):
    bench_env("verilogeval", problems=155)
    with pytest.raises(ValueError, match=r"expected 468 .*prompt\.txt.*found 465"):
        benchmarks.fetch("verilogeval")
    assert not any((tmp_path / "cache" / "benchmarks").iterdir())


def test_to_and_url_flags(tmp_path, monkeypatch, capsys):
    src = fake_verilogeval(tmp_path / "mirror")
    commit = commit_repo(src)
    monkeypatch.setitem(benchmarks.BENCHMARKS, "verilogeval",
                        dataclasses.replace(benchmarks.BENCHMARKS["verilogeval"], commit=commit))
    dest = tmp_path / "mine"
    assert main(["data", "fetch", "verilogeval", "--to", str(dest), "--url", str(src)]) == 0
    assert Path(capsys.readouterr().out.strip()) == dest
    assert len(load_source(DataSource(path=str(dest / "dataset_spec-to-rtl")))) == 156


def test_offline_fetch_fails_in_one_line_saying_what_to_do(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("EARL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("EARL_RTLLM_URL", str(tmp_path / "no-such-repo"))
    with pytest.raises(ValueError, match=r"cannot fetch rtllm: .*run `earl data fetch rtllm` on a machine "
                                         r"with access"):
        load_source(DataSource(path="rtllm"))
    assert main(["data", "fetch", "rtllm"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("earl data: error: cannot fetch rtllm") and "\n" not in err
    with pytest.raises(ValueError, match="verilogeval has subsets spec-to-rtl"):
        load_source(DataSource(path="verilogeval:code-complete"))


def test_local_path_wins_over_a_benchmark_name(tmp_path, monkeypatch):
    fake_rtllm(tmp_path / "rtllm", designs=2)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("EARL_RTLLM_URL", str(tmp_path / "no-such-repo"))
    assert len(load_source(DataSource(path="rtllm"))) == 2


def test_shipped_configs_name_benchmarks_and_load_without_fetching(tmp_path, monkeypatch):
    monkeypatch.setenv("EARL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("EARL_VERILOGEVAL_URL", str(tmp_path / "no-such-repo"))
    for name in ("verilog_qwen2.5-coder-1.5b_lora.yaml", "verilog_qwen2.5-coder-7b_full.yaml"):
        cfg = load_config(REPO / "configs" / name)
        assert cfg.data.eval.path == "verilogeval:spec-to-rtl"
    assert not (tmp_path / "cache").exists()
