"""Security-repair data: SVEN adapter, canonical JSONL, prompts, and the bundled generator's tasks."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipelines.tasks.secgen import TEMPLATES, generate, one_per_template
from rewards.security.findings import scan
from rewards.security.functional import TestRunner
from rewards.security.tasks import (
    SecurityTask,
    build_prompt,
    normalize_cwe,
    read_tasks,
    to_dataset_rows,
    write_tasks,
)

REPO = Path(__file__).resolve().parents[1]
BUNDLED = REPO / "pipelines" / "tasks" / "security_tasks.jsonl"


def test_sven_rows_map_onto_tasks_with_line_index_ids(tmp_path: Path) -> None:
    p = tmp_path / "sven.jsonl"
    rows = [{"func_name": "f", "func_src_before": "def f(x):\n    pass\n", "func_src_after": "def f(x):\n    return\n",
             "vul_type": "cwe-089", "commit_link": "http://x"},
            {"id": "mine", "func_src_before": "def g():\n    pass\n", "vul_type": "CWE-78", "tests": "assert True"}]
    p.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    a, b = read_tasks(p)
    assert (a.id, a.vul_type, a.func_name, a.reference is not None, a.meta) == ("0", "cwe-089", "f", True,
                                                                                  {"commit_link": "http://x"})
    assert (b.id, b.vul_type, b.tests, b.reference) == ("mine", "cwe-078", "assert True", None)


@pytest.mark.parametrize("line, message", [
    ('{"func_src_before": "def f(): pass"}', "vul_type"),
    ('{"func_src_before": "", "vul_type": "cwe-089"}', "func_src_before"),
    ('{"id": 1, "vulnerable": "x", "vul_type": "sqli"}', "not a CWE id"),
    ('{"id": 1, "vulnerable": "x", "vul_type": "cwe-89", "colour": 1}', "unknown security task field"),
    ('[1, 2]', "expected a JSON object"),
    ('{"id": 1,', "invalid JSON"),
])
def test_bad_rows_name_file_line_and_field(tmp_path: Path, line: str, message: str) -> None:
    p = tmp_path / "bad.jsonl"
    p.write_text('{"id": "ok", "vulnerable": "x", "vul_type": "cwe-22"}\n' + line + "\n")
    with pytest.raises(ValueError, match=message) as err:
        read_tasks(p)
    assert f"{p}:2" in str(err.value)


def test_canonical_roundtrip_and_dataset_rows(tmp_path: Path) -> None:
    tasks = generate(5, seed=1)
    back = read_tasks(write_tasks(tasks, tmp_path / "t.jsonl"))
    assert back == tasks
    rows = to_dataset_rows(back)
    assert rows[0]["prompt"] == tasks[0].prompt and rows[0]["completion"].startswith(("def ", "import "))
    assert normalize_cwe("89") == "cwe-089"


def test_prompt_names_cwe_function_and_code() -> None:
    t = SecurityTask(id="x", vulnerable="    def f(a):\n        return a\n", vul_type="cwe-022", func_name="f")
    p = build_prompt(t)
    assert "CWE-022 (path traversal)" in p and "`f`" in p and "\ndef f(a):\n    return a\n" in p


def test_generator_is_deterministic_split_and_varied() -> None:
    train, held = generate(400, seed=0), generate(60, seed=0, split="heldout")
    assert [t.prompt for t in train] == [t.prompt for t in generate(400, seed=0)]
    assert len({t.prompt for t in train}) == 400 and not {t.prompt for t in train} & {t.prompt for t in held}
    assert {t.meta["template"] for t in train} == {t.key for t in TEMPLATES}
    assert len({t.vul_type for t in train}) == 7
    assert len(generate(3000, seed=0)) == 3000
    with pytest.raises(ValueError, match="split"):
        generate(1, split="test")


def test_variants_option_draws_only_those_ways_of_writing_the_flaw() -> None:
    """SFT fixes for variants [0, 1], RL prompts with all: the unseen ways must never reach SFT data."""
    some = generate(600, seed=0, variants=[0, 1])
    assert {t.meta["variant"] for t in some} == {0, 1}
    assert {t.meta["template"] for t in some} == {t.key for t in TEMPLATES}      # one-variant templates too
    late = generate(200, seed=0, variants=[2])
    by_template = {t.meta["template"]: t.meta["variant"] for t in late}
    assert by_template["sql_delete"] == 2 and by_template["path_write"] == 0    # has no variant 2: keeps 0
    assert max(t.meta["variant"] for t in generate(600, seed=0)) == 3           # default: all variants
    for bad in ([], [-1], "0,1", [True]):
        with pytest.raises(ValueError, match="variants must be"):
            generate(5, variants=bad)


def test_bundled_file_is_the_generators_heldout_set() -> None:
    tasks = read_tasks(BUNDLED)
    assert len(tasks) >= 100 and all(t.tests and t.reference and t.meta["split"] == "heldout" for t in tasks)
    assert [t.prompt for t in tasks] == [t.prompt for t in generate(len(tasks), seed=0, split="heldout")]


@pytest.mark.slow
def test_every_template_variant_flagged_fixed_clean_and_tested() -> None:
    """The vulnerable version is flagged for its CWE, the fix has no finding at all, and the fix passes
    its tests in the sandbox while the vulnerable version fails them where the tests probe the flaw."""
    runner = TestRunner()
    vulnerable_passes = []
    for t in one_per_template():
        cwe = f"CWE-{int(t.vul_type[4:])}"
        assert any(f.cwe == cwe for f in scan(t.vulnerable)), t.id
        assert scan(t.reference) == [], (t.id, scan(t.reference))
        ok = runner.run(t.reference, t.tests)
        assert ok.passed, (t.id, ok.verdict, ok.detail)
        if runner.run(t.vulnerable, t.tests).passed:
            vulnerable_passes.append(t.meta["template"])
    assert set(vulnerable_passes) <= {"tempfile", "marshal_load"}, vulnerable_passes
