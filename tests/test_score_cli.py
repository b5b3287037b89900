"""`earl score`: results in input order, pass@k and stage counts, --references, clear input errors."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.cli import main
from pipelines.commands.score import summarize
from rewards.verilog.loaders import load_problems
from tests.helpers.verilog_mutants import as_top, flip_operator

REPO = Path(__file__).resolve().parents[1]
needs_iverilog = pytest.mark.skipif(shutil.which("iverilog") is None, reason="iverilog not installed")


def _write(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


@needs_iverilog
def test_results_in_input_order_with_pass_at_k(tmp_path, verilog_eval_dir, capsys):
    probs = {p.id: p for p in load_problems(verilog_eval_dir)}
    a, b = probs["Prob009_popcount3"], probs["Prob025_reduction"]
    good_a, bad_a = as_top(a.reference), flip_operator(a.id, a.reference)
    good_b = as_top(b.reference)
    rows = [{"problem_id": a.id, "completion": good_a}, {"problem_id": b.id, "completion": "no code"},
            {"problem_id": a.id, "completion": bad_a}, {"problem_id": b.id, "completion": good_b},
            {"problem_id": a.id, "completion": good_a + "\n// dup"}, {"problem_id": b.id, "completion": good_b},
            {"problem_id": a.id, "completion": "```verilog\nmodule TopModule(\n```"},
            {"problem_id": b.id, "completion": [{"role": "assistant", "content": good_b}]},
            {"problem_id": a.id, "completion": bad_a}, {"problem_id": b.id, "completion": good_b}]
    samples = _write(tmp_path / "samples.jsonl", rows)
    out = tmp_path / "res" / "results.jsonl"
    rc = main(["score", "--problems", str(verilog_eval_dir), "--samples", str(samples), "--out", str(out),
               "--workers", "2", "--k", "1,5,10"])
    assert rc == 0
    res = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["problem_id"] for r in res] == [r["problem_id"] for r in rows]
    assert [r["index"] for r in res] == list(range(10))
    assert [r["passed"] for r in res] == [True, False, False, True, True, True, False, True, False, True]
    assert [r["stage"] for r in res] == ["pass", "none", "simulate", "pass", "pass", "pass", "format", "pass",
                                         "simulate", "pass"]
    for r in res:
        assert {"problem_id", "passed", "reward", "stage", "reason", "details"} <= set(r) and r["reason"]
    text = capsys.readouterr().out
    assert "pass@1" in text and "pass@5" in text and "n/a" in text      # 5 samples per problem: no pass@10
    s = summarize(res, [1, 5, 10])
    assert s["pass_at_k"][1] == pytest.approx((2 / 5 + 4 / 5) / 2)
    assert s["pass_at_k"][5] == 1.0 and s["pass_at_k"][10] is None
    assert s["stages"] == {"pass": 6, "none": 1, "simulate": 2, "format": 1}


@needs_iverilog
def test_references_self_check(verilog_eval_dir, capsys):
    assert main(["score", "--problems", str(verilog_eval_dir), "--references", "--workers", "2"]) == 0
    text = capsys.readouterr().out
    assert "references: 20 of 20 pass; 0 unsupported" in text


@needs_iverilog
@pytest.mark.slow
def test_references_lists_unsupported_rtllm(rtllm_dir, tmp_path, capsys):
    out = tmp_path / "ref.jsonl"
    assert main(["score", "--problems", str(rtllm_dir), "--references", "--out", str(out), "--workers", "2"]) == 0
    text = capsys.readouterr().out
    assert "46 of 50 pass; 4 unsupported" in text
    assert "unsupported asyn_fifo: compile error" in text and "break" in text
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert sum(r["unsupported"] for r in rows) == 4


@pytest.mark.parametrize("lines, message", [
    (['{"problem_id": "Prob001_zero", "completion": "x"}', "{not json"], r"samples.jsonl:2: invalid JSON"),
    (['{"problem_id": "Prob001_zero"}'], r"samples.jsonl:1: missing field\(s\) \['completion'\]"),
    (['["a", "b"]'], r"samples.jsonl:1: expected a JSON object, got list"),
    (['{"problem_id": "Prob001_zero", "completion": 3}'], r"samples.jsonl:1: 'completion' must be a string"),
    (['{"problem_id": "Prob001_zero", "completion": "x"}', "",
      '{"problem_id": "Prob999_nope", "completion": "x"}'], r"samples.jsonl:3: unknown problem id 'Prob999_nope'"),
])
def test_malformed_samples_name_file_and_line(tmp_path, verilog_eval_dir, capsys, lines, message):
    samples = _write(tmp_path / "samples.jsonl", lines)
    rc = main(["score", "--problems", str(verilog_eval_dir), "--samples", str(samples),
               "--out", str(tmp_path / "o.jsonl")])
    assert rc == 2
    import re
    assert re.search(message, capsys.readouterr().err)
    assert not (tmp_path / "o.jsonl").exists()


def test_argument_errors(tmp_path, verilog_eval_dir, capsys):
    base = ["score", "--problems", str(verilog_eval_dir)]
    assert main([*base, "--out", str(tmp_path / "o")]) == 2
    assert "--samples is required" in capsys.readouterr().err
    assert main(["score", "--problems", str(tmp_path / "missing"), "--references"]) == 2
    assert "no such file or folder" in capsys.readouterr().err
    assert main([*base, "--references", "--k", "1,x"]) == 2
    assert "--k expects comma-separated integers" in capsys.readouterr().err
    assert main([*base, "--samples", str(tmp_path / "none.jsonl"), "--out", "o"]) == 2
    assert "no such file" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*base, "--task", "cobol"])


@needs_iverilog
def test_earl_score_as_a_subprocess(tmp_path, verilog_eval_dir):
    """The real entry point: `python -m pipelines.cli score` (what the `earl` script runs)."""
    p = load_problems(verilog_eval_dir)[0]
    samples = _write(tmp_path / "s.jsonl", [{"problem_id": p.id, "completion": as_top(p.reference)}])
    out = tmp_path / "r.jsonl"
    proc = subprocess.run([sys.executable, "-m", "pipelines.cli", "score", "--problems", str(verilog_eval_dir),
                           "--samples", str(samples), "--out", str(out), "--k", "1"],
                          cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(out.read_text())["passed"] is True
    assert "pass@1" in proc.stdout and "1.0000" in proc.stdout


@pytest.mark.parametrize("out", ["{tmp}", "{tmp}/new-folder/", "{tmp}/a-file/results.jsonl"])
def test_out_is_checked_before_scoring(tmp_path, verilog_eval_dir, capsys, out):
    """--out DIR used to score everything, then fail writing (IsADirectoryError). The sample names an
    unknown problem, an error scoring would hit first: the --out error proves the check comes before."""
    (tmp_path / "a-file").write_text("")
    samples = _write(tmp_path / "samples.jsonl", [{"problem_id": "Prob999_nope", "completion": "x"}])
    rc = main(["score", "--problems", str(verilog_eval_dir), "--samples", str(samples),
               "--out", out.format(tmp=tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2 and "--out" in err and "Prob999_nope" not in err
    assert "is a directory" in err or "cannot create" in err
    assert not (tmp_path / "new-folder").exists()


def test_non_utf8_samples_name_file_and_line(tmp_path, verilog_eval_dir, capsys):
    samples = tmp_path / "samples.jsonl"
    samples.write_bytes(b'{"problem_id": "Prob001_zero", "completion": "x"}\n'
                        b'{"problem_id": "Prob001_zero", "completion": "caf\xe9"}\n')
    rc = main(["score", "--problems", str(verilog_eval_dir), "--samples", str(samples),
               "--out", str(tmp_path / "o.jsonl")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.count("\n") == 0
    assert f"{samples}:2: not valid UTF-8 (byte 0xe9" in err


def test_non_utf8_problems_name_file_and_line(tmp_path, capsys):
    problems = tmp_path / "tasks.jsonl"
    problems.write_bytes(json.dumps({"id": "a", "vulnerable": "def f():\n    pass\n", "vul_type": "cwe-089"})
                         .encode() + b"\n\xff\xfe{}\n")
    rc = main(["score", "--task", "security-repair", "--problems", str(problems), "--references"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.count("\n") == 0
    assert f"{problems}:2: not valid UTF-8 (byte 0xff" in err
