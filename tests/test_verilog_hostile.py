"""Hostile candidates are contained: each is scored failed (or passes on function alone) with a reason,
leaves no file on the host, and the good candidates in the same batch still pass."""
from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from pathlib import Path

import pytest

from rewards.verilog.loaders import load_problems
from rewards.verilog.reward import VerilogReward
from tests.helpers.verilog_mutants import as_top, hostile_candidates

pytestmark = pytest.mark.skipif(shutil.which("iverilog") is None, reason="iverilog not installed")

FILE_WRITERS = {"fopen_absolute", "fopen_relative", "fopen_home", "endless_fwrite", "include_host_file"}


@pytest.fixture()
def work_root():
    """A world-searchable root (like the system temp dir), so the sandbox can drop to its own uid."""
    root = Path(tempfile.mkdtemp(prefix="earl-hostile-"))
    root.chmod(0o755)
    yield root
    shutil.rmtree(root, ignore_errors=True)


def _score(work_root: Path, tag: str, **config):
    problem = {p.id: p for p in load_problems(_ve_dir())}["Prob001_zero"]
    good = f"```verilog\n{as_top(problem.reference)}```"
    hostile = hostile_candidates(tag)
    names = ["good_first", *hostile, "good_last"]
    completions = [good, *hostile.values(), good]
    reward = VerilogReward([problem], time_limit_s=3, workers=2, workdir_root=str(work_root / "work"), **config)
    try:
        scores = reward.score_batch([problem] * len(completions), completions)
    finally:
        reward.close()
    return dict(zip(names, scores, strict=True))


def _ve_dir() -> Path:
    path = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "verilog-eval-v2-sample"
    if not path.is_dir():
        pytest.skip(f"{path} missing")
    return path


def _leftovers(tag: str, work_root: Path) -> list[str]:
    places = [Path("/tmp"), work_root, Path.home(), Path("/root"), Path.cwd()]
    found = [str(p) for d in places if d.is_dir() for p in d.glob(f"{tag}*")]
    found += [str(p) for p in work_root.rglob("*") if p.name != "work"]    # work dirs are removed
    return found


def _assert_contained(scores: dict, tag: str, work_root: Path) -> None:
    assert scores["good_first"].passed and scores["good_last"].passed
    for name, s in scores.items():
        if name.startswith("good"):
            continue
        assert s.reason, name
        assert s.error is None, f"{name}: infrastructure error {s.error}"
        # a hostile design either fails, or passes on its function alone (it still drives zero = 0)
        assert s.stage != "pass" or s.mismatches == 0, name
    assert not _leftovers(tag, work_root)


@pytest.mark.slow
def test_hostile_candidates_with_default_policy(work_root):
    tag = f"earl_{uuid.uuid4().hex[:8]}"
    scores = _score(work_root, tag)
    _assert_contained(scores, tag, work_root)
    for name in FILE_WRITERS:
        assert scores[name].stage == "none" and "forbidden construct" in scores[name].reason, name
    assert scores["display_flood"].stage == "compile" and "time limit" in scores["display_flood"].reason
    assert scores["zero_delay_forever"].stage == "compile" and not scores["zero_delay_forever"].passed
    assert scores["zero_delay_always"].stage == "syntax"       # -Winfloop rejects it at compile time
    assert scores["huge_memory"].stage == "compile" and not scores["huge_memory"].passed
    assert scores["deep_recursion"].stage == "compile" and not scores["deep_recursion"].passed


@pytest.mark.slow
def test_sandbox_contains_file_access_when_the_policy_allows_it(work_root):
    """With the static policy off, the sandbox alone keeps writes and includes away from the host."""
    tag = f"earl_{uuid.uuid4().hex[:8]}"
    scores = _score(work_root, tag, forbidden=())
    _assert_contained(scores, tag, work_root)
    inc = scores["include_host_file"]
    assert inc.stage == "syntax" and "/etc/passwd" in inc.compile_error and "root:" not in inc.reason
    fw = scores["endless_fwrite"]
    assert not fw.passed and ("file size" in fw.reason or "time limit" in fw.reason)
    assert os.listdir(work_root / "work") == []
