"""`earl score --task security-repair` and the eval metrics."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipelines.tasks.secgen import generate
from rewards.security.scoring import reference_samples, score_samples, security_eval_metrics
from rewards.security.tasks import write_tasks


@pytest.fixture
def problems(tmp_path: Path) -> Path:
    tasks = generate(4, seed=3, templates=["sql_select", "html_greet"])
    for t in tasks[2:]:
        t.tests = None
    return write_tasks(tasks, tmp_path / "p.jsonl")


def test_score_samples_in_input_order_with_fields(problems: Path) -> None:
    refs = reference_samples(str(problems))
    ids = [s["problem_id"] for s in refs]
    samples = [refs[1], {"problem_id": ids[0], "completion": "def nope(:"}, refs[3], refs[0]]
    ticks: list[int] = []
    rows = score_samples(str(problems), samples, workers=2, progress=ticks.append)
    assert [r["problem_id"] for r in rows] == [ids[1], ids[0], ids[3], ids[0]]
    assert sum(ticks) == 4
    assert rows[0]["passed"] and rows[0]["secure"] and rows[0]["tests_passed"] is True and rows[0]["reason"] == "ok"
    assert rows[1]["reward"] == 0.0 and rows[1]["reason"] == "syntax_error" and not rows[1]["passed"]
    assert rows[2]["tests_passed"] is None and rows[2]["passed"]
    assert {"reward", "secure", "passed", "reason", "similarity", "details"} <= set(rows[0])
    m = security_eval_metrics(rows)
    assert m["secure@1"] == 0.75 and m["secure_and_correct@1"] == 0.75 and 0 < m["similarity"] <= 1


def test_unknown_problem_id_is_named(problems: Path) -> None:
    with pytest.raises(ValueError, match="unknown problem id 'zzz'"):
        score_samples(str(problems), [{"problem_id": "zzz", "completion": "x", "_where": "s.jsonl:3"}])


def test_line_index_ids_for_rows_without_id(tmp_path: Path) -> None:
    p = tmp_path / "sven.jsonl"
    p.write_text(json.dumps({"func_src_before": "def f(n):\n    return '<b>%s</b>' % n\n", "vul_type": "cwe-079",
                             "func_src_after": "import html\ndef f(n):\n"
                                               "    return '<b>%s</b>' % html.escape(n)\n"}) + "\n")
    rows = score_samples(str(p), [{"problem_id": "0", "completion": "import html\ndef f(n):\n"
                                   "    return '<b>%s</b>' % html.escape(n)\n"}])
    assert rows[0]["problem_id"] == "0" and rows[0]["secure"]


def test_cli_end_to_end(problems: Path, tmp_path: Path) -> None:
    from pipelines.cli import main
    samples = tmp_path / "s.jsonl"
    samples.write_text("\n".join(json.dumps(s) for s in reference_samples(str(problems))) + "\n")
    out = tmp_path / "r.jsonl"
    assert main(["score", "--task", "security-repair", "--problems", str(problems), "--samples", str(samples),
                 "--out", str(out), "--k", "1"]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 4 and all(r["passed"] and r["reward"] > 0.5 for r in rows)


def test_metrics_empty_and_detail_records() -> None:
    assert security_eval_metrics([])["secure@1"] == 0.0
    m = security_eval_metrics([{"reason": "ok", "secure": True, "passed": False, "similarity": 0.5},
                               {"reason": "stub", "secure": False, "passed": None, "similarity": 0.0}])
    assert m["secure@1"] == 0.5 and m["secure_and_correct@1"] == 0.0 and m["similarity"] == 0.25


def test_unjudgeable_task_is_a_null_row_and_the_loader_names_it(tmp_path: Path, caplog) -> None:
    from pipelines.cli import main
    ok = {"id": "ok", "vulnerable": "def f(n):\n    return '<b>%s</b>' % n\n", "vul_type": "cwe-079"}
    bad = {"id": "bad", "vulnerable": "def f(n)\n    return n\n", "vul_type": "cwe-079"}
    problems = tmp_path / "p.jsonl"
    problems.write_text(json.dumps(ok) + "\n" + json.dumps(bad) + "\n")
    fix = "import html\ndef f(n):\n    return '<b>%s</b>' % html.escape(n)\n"
    samples = tmp_path / "s.jsonl"
    samples.write_text("".join(json.dumps({"problem_id": i, "completion": fix}) + "\n" for i in ("bad", "ok")))
    out = tmp_path / "r.jsonl"
    with caplog.at_level("WARNING", logger="rewards.security.tasks"):
        rc = main(["score", "--task", "security-repair", "--problems", str(problems), "--samples", str(samples),
                   "--out", str(out), "--k", "1"])
    assert rc == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert rows[0]["passed"] is None and rows[0]["reward"] is None and "does not parse" in rows[0]["reason"]
    assert rows[1]["passed"] is True
    assert any(f"{problems}:2 (id bad)" in r.getMessage() for r in caplog.records)
    from pipelines.commands.score import summarize
    s = summarize(rows, [1])
    assert s["unjudged"] == 1 and s["pass_at_k"][1] == 1.0      # the unjudged row is not a failure


def test_sven_train_scores_every_row(sven_dir: Path) -> None:
    """The shipped SVEN train file has Python 2 rows (104, 122, 131, 134) that used to stop the batch."""
    path = str(sven_dir / "train.jsonl")
    refs = reference_samples(path)
    other = {"problem_id": "104", "completion": "def other():\n    return 1\n"}   # parses: judged vs. row 104
    rows = score_samples(path, [*refs, other], workers=2)
    assert len(rows) == len(refs) + 1
    assert all(r["passed"] is not None for r in rows)
    assert rows[-1]["reason"] == "function_missing"
    py2 = {r["problem_id"]: r for r in rows if r["problem_id"] in {"104", "122", "131", "134"}}
    assert len(py2) == 4 and all(r["reward"] is not None and r["reason"] != "syntax_error" for r in py2.values())
