"""Tool preflight: a missing iverilog / vvp / yosys / bwrap is one ToolNotFound before any scoring.

Programs are hidden the honest way: PATH is a folder of symlinks to everything in /usr/bin and /bin
except the programs a test leaves out (no mocks; the real tools run when they are there).
"""
from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest

from pipelines.cli import main
from rewards.registry import SafeReward
from rewards.verilog.loaders import load_problems
from rewards.verilog.reward import VerilogReward, reference_candidate
from sandboxes import backends
from sandboxes.executor import Sandbox
from sandboxes.limits import SandboxConfig
from sandboxes.tools import ToolNotFound, find_program

pytestmark = pytest.mark.skipif(any(shutil.which(p) is None for p in ("iverilog", "vvp", "yosys", "bwrap")),
                                reason="needs iverilog, yosys and bubblewrap installed")


def links_without(folder: Path, *left_out: str) -> str:
    """A PATH folder of symlinks to every program of /usr/bin and /bin but `left_out`."""
    folder.mkdir(exist_ok=True)
    for src in (Path("/usr/bin"), Path("/bin")):
        for prog in src.iterdir():
            link = folder / prog.name
            if prog.name not in left_out and not prog.is_dir() and not link.is_symlink():
                link.symlink_to(prog)
    return str(folder)


@pytest.fixture
def hide(tmp_path, monkeypatch):
    def apply(*names: str) -> str:
        path = links_without(tmp_path / ("no-" + "-".join(names) if names else "all"), *names)
        monkeypatch.setenv("PATH", path)
        return path
    return apply


@pytest.fixture(scope="module")
def zero_problem(verilog_eval_dir):
    return next(p for p in load_problems(verilog_eval_dir) if p.id == "Prob001_zero")


def test_missing_iverilog_raises_when_the_reward_is_built(hide, zero_problem):
    hide("iverilog")
    with pytest.raises(ToolNotFound, match=r"iverilog .*not found on PATH.*apt-get install iverilog") as err:
        VerilogReward([zero_problem])
    assert err.value.programs == ["iverilog"] and "make setup" in str(err.value)


def test_missing_iverilog_and_vvp_named_in_one_error(hide, zero_problem):
    hide("iverilog", "vvp")
    with pytest.raises(ToolNotFound, match=r"iverilog, vvp .*apt-get install iverilog`$"):
        VerilogReward([zero_problem])


def test_missing_yosys_fails_only_with_formal_on(hide, zero_problem):
    hide("yosys")
    VerilogReward([zero_problem])                       # formal off: yosys is not needed
    for mode in ("confirm", "required"):
        with pytest.raises(ToolNotFound, match="yosys.*apt-get install yosys"):
            VerilogReward([zero_problem], formal=mode)
    from rewards.verilog.formal import FormalChecker
    with pytest.raises(ToolNotFound, match="yosys"):
        FormalChecker()


def test_missing_bwrap_when_isolation_is_asked(hide, zero_problem):
    hide("bwrap")
    with pytest.raises(ToolNotFound, match="bwrap.*apt-get install bubblewrap"):
        Sandbox(SandboxConfig(backend="bwrap"))
    with pytest.raises(ToolNotFound, match="bwrap"):
        VerilogReward([zero_problem], sandbox_backend="bwrap")


def test_helpers_and_tools_follow_one_path_rule(hide, zero_problem):
    """A PATH without bwrap hides it from the backend choice as it hides iverilog from the reward; a
    folder of links into /usr is followed for both, and the tools then run in the real bwrap box."""
    hide("bwrap")
    assert find_program("bwrap") is None
    assert backends.choose_backend(SandboxConfig(backend="auto")) != "bwrap"
    hide()
    assert find_program("bwrap", roots=("/usr", "/bin")) is not None
    reward = VerilogReward([zero_problem], sandbox_backend="bwrap")
    assert reward.tools["iverilog"].startswith(("/usr/", "/bin/"))
    score = reward.score(zero_problem, reference_candidate(zero_problem))
    assert score.passed, score.reason


def test_sandbox_run_resolves_bare_names_by_the_same_rule(hide, tmp_path):
    box = Sandbox(SandboxConfig(backend="bwrap"))
    hide("cat")
    with pytest.raises(ToolNotFound, match="cat"):
        box.run(["cat"], tmp_path)


def test_earl_score_without_iverilog_exits_2_before_scoring(hide, verilog_eval_dir, tmp_path, capsys):
    hide("iverilog")
    out = tmp_path / "results.jsonl"
    rc = main(["score", "--problems", str(verilog_eval_dir), "--references", "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and not out.exists()
    assert err.count("\n") == 0 and "iverilog" in err and "apt-get install iverilog" in err


def test_earl_score_formal_without_yosys_exits_2(hide, verilog_eval_dir, capsys):
    hide("yosys")
    rc = main(["score", "--problems", str(verilog_eval_dir), "--references", "--formal", "confirm"])
    assert rc == 2 and "yosys" in capsys.readouterr().err


def test_safe_reward_lets_a_missing_tool_through(caplog):
    """SafeReward turns a crash into None; a missing tool would fail every batch alike, so it stops."""
    def needs_tool(prompts, completions, **_):
        raise ToolNotFound("iverilog", "needed by a test")
    with caplog.at_level(logging.ERROR), pytest.raises(ToolNotFound):
        SafeReward(needs_tool, "needs_tool")(["p"], ["c"])


def test_security_reward_checks_its_test_programs(hide):
    from rewards.security.reward import SecurityRepairReward
    with pytest.raises(ToolNotFound, match="/no/such/python"):
        SecurityRepairReward(functional={"python": "/no/such/python"})
    SecurityRepairReward(run_tests=False, functional={"python": "/no/such/python"})    # no tests, no need
    hide("bwrap")
    with pytest.raises(ToolNotFound, match="bwrap.*apt-get install bubblewrap"):
        SecurityRepairReward(functional={"backend": "bwrap"})


def test_earl_train_without_iverilog_stops_before_any_work(hide, tmp_path, capsys):
    tiny = Path(__file__).resolve().parents[1] / "configs" / "verilog_tiny.yaml"
    hide("iverilog")
    for extra in (["--dry-run"], ["--run-dir", str(tmp_path / "run")]):
        assert main(["train", "--config", str(tiny), *extra]) == 2
        err = capsys.readouterr().err
        assert "iverilog" in err and "apt-get install iverilog" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists(), "nothing written, no SFT started"
