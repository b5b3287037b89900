"""Procedural RTL tasks: determinism, split disjointness, variety, and real Icarus runs of the references
(every family passes its own bench) and of one realistic mutant per family (each must be caught)."""
from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from pipelines.cli import main as earl
from pipelines.tasks.rtlgen import FAMILIES, HELDOUT_NAMES, generate, solution, split_of
from rewards.verilog.problems import Problem, read_jsonl
from tests.helpers.rtlgen_mutants import MUTANTS, problem_with_variant

IVERILOG = ["iverilog", "-Wall", "-Winfloop", "-Wno-timescale", "-g2012", "-s", "tb", "-o", "sim"]
needs_iverilog = pytest.mark.skipif(shutil.which("iverilog") is None or shutil.which("vvp") is None,
                                    reason="Icarus Verilog (iverilog, vvp) not installed: "
                                           "apt install iverilog")


def simulate(problem: Problem, candidate: str) -> tuple[int | None, int | None, str]:
    """(mismatches, samples, log) of `candidate` against the problem's bench, under real Icarus."""
    with tempfile.TemporaryDirectory() as d:
        Path(d, "sample.sv").write_text(candidate)
        Path(d, "test.sv").write_text(problem.testbench)
        Path(d, "ref.sv").write_text(problem.reference)
        comp = subprocess.run(IVERILOG + ["sample.sv", "test.sv", "ref.sv"], cwd=d, capture_output=True,
                              text=True, timeout=60, check=False)
        if comp.returncode != 0:
            return None, None, comp.stderr
        run = subprocess.run(["vvp", "-n", "sim"], cwd=d, capture_output=True, text=True, timeout=60,
                             check=False)
    m = re.search(r"Mismatches: (\d+) in (\d+) samples", run.stdout)
    return (int(m[1]), int(m[2]), run.stdout) if m else (None, None, run.stdout + run.stderr)


def test_deterministic_by_seed():
    a = [p.to_json() for p in generate(60, seed=3)]
    assert a == [p.to_json() for p in generate(60, seed=3)]
    assert a != [p.to_json() for p in generate(60, seed=4)]
    assert a[:30] == [p.to_json() for p in generate(30, seed=3)]  # a longer run extends a shorter one


def test_records_are_canonical_problems():
    problems = generate(64, seed=1)
    assert len({p.id for p in problems}) == 64
    for p in problems:
        assert p.top_module == "TopModule" and p.ref_module == "RefModule" and p.harness == "verilogeval"
        assert p.prompt == p.spec and p.spec.startswith("// ") and "\n// Ports: " in p.spec
        assert p.spec.endswith("\n") and all(line.startswith("// ") for line in p.spec.splitlines())
        assert p.reference.startswith("module RefModule(") and p.reference.rstrip().endswith("endmodule")
        assert solution(p).startswith("module TopModule(")
        assert solution(p).replace("TopModule", "RefModule", 1) == p.reference
        ports = p.spec.splitlines()[-1].removeprefix("// Ports: ")
        assert solution(p).splitlines()[0] == f"module TopModule({ports});"  # the prompt gives the header
        assert "module tb;" in p.testbench and "Mismatches: %0d in %0d samples" in p.testbench
        assert set(p.meta) >= {"family", "width", "sequential", "split", "solution"}
        assert p.meta["split"] == "train" and p.meta["family"] in FAMILIES
        assert Problem.from_dict(__import__("json").loads(p.to_json())) == p


def test_all_families_balanced():
    problems = generate(16 * 8, seed=2)
    counts = {f: sum(p.meta["family"] == f for p in problems) for f in FAMILIES}
    assert counts == dict.fromkeys(FAMILIES, 8)
    assert {p.meta["sequential"] for p in problems} == {True, False}
    widths = {p.meta["width"] for p in problems}
    assert min(widths) == 1 and max(widths) >= 14


def test_splits_are_disjoint_by_prompt():
    train = generate(3000, seed=0, split="train")
    held = generate(300, seed=0, split="heldout")
    held_other_seed = generate(300, seed=9, split="heldout")
    train_prompts = {p.prompt for p in train}
    assert not train_prompts & {p.prompt for p in held + held_other_seed}
    assert all(split_of(p.prompt) == "heldout" and p.meta["split"] == "heldout" for p in held)
    assert len({p.meta["family"] for p in held}) == len(FAMILIES)


def test_holdout_by_names_keeps_a_port_name_set_unseen():
    train = generate(400, seed=0, split="train", holdout="names")
    held = generate(100, seed=0, split="heldout", holdout="names")
    assert {p.meta["names"] for p in held} == {HELDOUT_NAMES}
    assert HELDOUT_NAMES not in {p.meta["names"] for p in train}
    assert len({p.meta["names"] for p in train}) == HELDOUT_NAMES  # every other set is used


def test_phrasings_restrict_the_spec_wording():
    some = generate(300, seed=0, families="basic", phrasings=[0, 1])
    assert {p.meta["phrasing"] for p in some} == {0, 1}
    assert {p.meta["phrasing"] for p in generate(300, seed=0, families="basic")} == {0, 1, 2}
    with pytest.raises(ValueError, match="phrasings must be"):
        generate(3, phrasings=[])
    with pytest.raises(ValueError, match="no variant of family 'fsm' has them"):
        generate(3, families=["fsm"], phrasings=[2])
    third = generate(200, seed=0, families="basic", phrasings=[2])   # comparators: only some variants have one
    assert {p.meta["phrasing"] for p in third} == {2} and {p.meta["family"] for p in third} >= {"comparator"}


def test_variety_well_beyond_ten_thousand_prompts():
    problems = generate(12000, seed=5)
    assert len({p.prompt for p in problems}) == 12000
    # and the stimulus of the same circuit differs between problems (per-problem bench seed)
    assert len({p.testbench for p in problems[:500]}) == 500


def test_bad_arguments_name_the_field():
    with pytest.raises(ValueError, match="n .number of tasks."):
        generate(None)
    with pytest.raises(ValueError, match="split"):
        generate(3, split="test")
    with pytest.raises(ValueError, match="holdout"):
        generate(3, holdout="families")
    with pytest.raises(ValueError, match="unknown task families.*nope"):
        generate(3, families=["adder", "nope"])
    with pytest.raises(ValueError, match="only .* distinct"):
        generate(5000, split="heldout", families=["decoder"])  # the family's held-out space is small


def test_gen_tasks_command(tmp_path, capsys):
    out = tmp_path / "t.jsonl"
    assert earl(["gen-tasks", "--n", "20", "--seed", "7", "--split", "heldout", "--out", str(out)]) == 0
    problems = read_jsonl(out)
    assert [p.to_json() for p in problems] == [p.to_json() for p in generate(20, seed=7, split="heldout")]
    assert "wrote 20 heldout tasks" in capsys.readouterr().out
    assert earl(["gen-tasks", "--n", "2", "--families", "adder,bogus", "--out", str(out)]) == 2
    assert "bogus" in capsys.readouterr().err
    assert earl(["gen-tasks", "--n", "30", "--families", "basic", "--phrasings", "2", "--out", str(out)]) == 0
    assert {p.meta["phrasing"] for p in read_jsonl(out)} == {2}


def _sample_across_families(n_per_family: int = 6) -> list[Problem]:
    """~100 problems: every family, and the short clash-prone names (i, r, c) of set 3 included."""
    pool = generate(len(FAMILIES) * 12, seed=11)
    picked = [p for f in FAMILIES for p in [q for q in pool if q.meta["family"] == f][:n_per_family]]
    picked += [p for p in pool if p.meta["names"] == 3 and p not in picked][:8]
    return picked


@needs_iverilog
@pytest.mark.slow
def test_references_pass_their_own_bench():
    problems = _sample_across_families()
    assert len(problems) >= 100 and {p.meta["names"] for p in problems} >= {3}
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda p: simulate(p, solution(p)), problems))
    failed = [(p.id, p.meta["variant"], log[-300:]) for p, (mm, n, log) in zip(problems, results, strict=True)
              if mm != 0 or n != 200]
    assert not failed, failed




def test_every_family_has_a_mutant():
    assert set(MUTANTS) == set(FAMILIES)


@needs_iverilog
@pytest.mark.slow
def test_one_mutant_per_family_is_caught():
    cases = []
    for family, (pattern, mutate) in MUTANTS.items():
        p = problem_with_variant(family, pattern)
        mutant = mutate(solution(p))
        assert mutant != solution(p), f"{family}: mutation did not apply to\n{solution(p)}"
        cases.append((p, mutant))
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda c: simulate(*c), cases))
    survivors = [(p.meta["family"], p.meta["variant"], m, log[-200:])
                 for (p, m), (mm, n, log) in zip(cases, results, strict=True) if mm is None or mm == 0]
    assert not survivors, survivors
