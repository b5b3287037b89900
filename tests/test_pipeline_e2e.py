"""End to end with the tiny model, real TRL trainers and real Icarus Verilog: sft -> rl -> eval, a run
killed with SIGKILL mid-RL and resumed, and `earl eval` on generated and VerilogEval problems.

Everything is SMALL (a few steps, a few problems): these tests prove wiring and resume semantics; how
well the default learns is measured by `make train` (docs/pipeline.md), not here.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipelines.cli import main
from pipelines.config import DataConfig, DataSource, RewardEntry, load_config
from pipelines.data import completion_text, load_source
from pipelines.evaluate import EvalResult, paired, score, sign_test
from pipelines.runner import RunFolder, train
from pipelines.stages.rl import read_data_order
from tests.helpers.hold import default_sigint

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "configs" / "verilog_tiny.yaml"
needs_iverilog = pytest.mark.skipif(shutil.which("iverilog") is None, reason="iverilog not installed")

# A few steps of everything; RL checkpoints every step so a kill always has one to resume from.
SMALL = [
    "data.train.n=24", "data.eval.n=4", "stages.rl.data.n=24",
    "stages.sft.trainer.max_steps=2", "stages.sft.trainer.per_device_train_batch_size=8",
    "stages.sft.trainer.logging_steps=1",
    "stages.rl.trainer.max_steps=3", "stages.rl.trainer.per_device_train_batch_size=8",
    "stages.rl.trainer.num_generations=4", "stages.rl.trainer.max_completion_length=24",
    "stages.rl.trainer.save_steps=1", "stages.rl.trainer.save_total_limit=5",
    "stages.eval.settings.max_new_tokens=24",
]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def hold_rewards(*holds: tuple[int, Path]) -> str:
    """An override adding weight-0 rewards that hold RL after `step` completed steps until the process is
    asked to stop (tests/helpers/hold.py): the test acts mid-run without racing the trainer."""
    extra = [{"name": "tests.helpers.hold:HoldAtStep", "weight": 0.0, "kwargs": {"step": s, "marker": str(m)}}
             for s, m in holds]
    return "rewards=" + json.dumps([{"name": "verilog_functional"}, *extra])


def wait_for(marker: Path, proc: subprocess.Popen, timeout: float = 600) -> None:
    deadline = time.time() + timeout
    while not marker.exists():
        assert proc.poll() is None, f"the run ended (rc {proc.returncode}) before reaching {marker.name}"
        assert time.time() < deadline, f"no {marker.name} within {timeout} s"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def small_run(tmp_path_factory) -> RunFolder:
    """One uninterrupted sft -> rl -> eval run, shared by the assertions below."""
    root = tmp_path_factory.mktemp("e2e") / "run"
    cfg = load_config(TINY, SMALL + [f"run.run_dir={root}"])
    return train(cfg)


# Dynamic sampling on, by pass/fail: the tiny model's groups are mostly all-fail, so steps refill.
DYNAMIC = ["stages.rl.dynamic_sampling={enabled: true, metric: pass, max_rounds: 3}"]


@pytest.fixture(scope="module")
def small_run_dynamic(tmp_path_factory) -> RunFolder:
    """The same uninterrupted run with dynamic sampling on (the reference for its kill-and-resume)."""
    root = tmp_path_factory.mktemp("e2e-dyn") / "run"
    cfg = load_config(TINY, SMALL + DYNAMIC + ["stages.eval.settings.models=[]", f"run.run_dir={root}"])
    return train(cfg)


@needs_iverilog
@pytest.mark.slow
def test_sft_rl_eval_run_folder(small_run):
    run = small_run
    state = run.load_state()
    assert [(n, s["status"]) for n, s in state["stages"].items()] == [("sft", "done"), ("rl", "done"),
                                                                       ("eval", "done")]
    assert state["stages"]["sft"]["global_step"] == 2 and state["stages"]["rl"]["global_step"] == 3
    # each stage's final model is the next stage's input and loads as a plain HF folder
    for stage in ("sft", "rl"):
        assert (run.final_dir(stage) / "config.json").is_file()
        assert (run.final_dir(stage) / "tokenizer_config.json").is_file()
    # resolved config in the folder reloads to the same config
    assert load_config(run.config_path).stages["rl"].trainer["max_steps"] == 3
    # metrics: JSONL per step with reward and the EARL gate, and TensorBoard event files
    rl_rows = run.read_metrics("rl")
    assert sorted({r["step"] for r in rl_rows if "reward" in r}) == [1, 2, 3]
    assert all(0 < r["earl/gated_fraction"] <= 0.5 for r in rl_rows if "earl/gated_fraction" in r)
    assert any("loss" in r for r in run.read_metrics("sft"))
    assert list((run.root / "tensorboard" / "rl").glob("events.out.tfevents.*"))
    # eval: both checkpoints on the same 4 held-out problems, pass@1 in the state and the report
    res = {label: EvalResult.load(run.root / "eval" / f"{label}.json") for label in ("sft", "rl")}
    assert [len(r.problems) for r in res.values()] == [4, 4]
    assert set(state["stages"]["eval"]["pass_at_k"]) == {"sft", "rl"}
    report = (run.root / "report.md").read_text()
    assert "| sft | 4 | 1 |" in report and "| rl | 4 | 1 |" in report and "fail→pass" in report
    for plot in ("rl_reward", "rl_pass_rate", "rl_entropy", "rl_gated_fraction"):
        assert (run.root / "plots" / f"{plot}.png").stat().st_size > 1000, plot


@needs_iverilog
@pytest.mark.slow
def test_finished_run_is_not_redone(small_run, capsys):
    before = (small_run.final_dir("rl") / "model.safetensors").stat().st_mtime
    assert main(["train", "--resume", str(small_run.root)]) == 0
    out = capsys.readouterr().out
    assert "stage sft: done already" in out and "stage rl: done already" in out
    assert (small_run.final_dir("rl") / "model.safetensors").stat().st_mtime == before
    # `make train RUN_DIR=...` passes --config too: the run's own config.yaml wins
    assert main(["train", "--config", str(TINY), "--resume", str(small_run.root)]) == 0
    assert "stage rl: done already" in capsys.readouterr().out


def _checkpoint_steps(run_dir: Path) -> list[int]:
    d = run_dir / "stages" / "rl" / "checkpoints"
    return sorted(int(c.name.split("-")[1]) for c in d.glob("checkpoint-*") if (c / "trainer_state.json").is_file())


@needs_iverilog
@pytest.mark.slow
@pytest.mark.parametrize("dynamic", [False, True], ids=["trl-batches", "dynamic-sampling"])
def test_sigkill_mid_rl_then_resume_matches_uninterrupted(dynamic, request, tmp_path):
    """With dynamic sampling the refill rounds of every step (their prompts come from a stream whose cursor
    the checkpoint keeps) must replay too: data_order holds every round's ids."""
    small_run = request.getfixturevalue("small_run_dynamic" if dynamic else "small_run")
    run_dir, held = tmp_path / "killed", tmp_path / "held"
    cmd = [sys.executable, "-m", "pipelines.cli", "train", "--config", str(TINY), "--run-dir", str(run_dir),
           *SMALL, *(DYNAMIC if dynamic else []), "stages.eval.settings.models=[]", hold_rewards((1, held))]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        wait_for(held, proc)              # RL step 2 is held: checkpoint-1 exists, nothing later can
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    run = RunFolder(run_dir)
    state = run.load_state()
    assert state["stages"]["sft"]["status"] == "done"
    assert state["stages"]["rl"]["status"] == "running", "killed mid-RL"
    assert _checkpoint_steps(run_dir) == [1]

    resumed = subprocess.run([sys.executable, "-m", "pipelines.cli", "train", "--resume", str(run_dir)],
                             check=False, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "stage sft: done already" in resumed.stdout
    assert f"resuming from {run_dir / 'stages' / 'rl' / 'checkpoints'}" in resumed.stdout
    state = run.load_state()
    assert state["stages"]["rl"]["status"] == "done"
    assert state["stages"]["rl"]["global_step"] == small_run.load_state()["stages"]["rl"]["global_step"] == 3
    # the same problems in the same order at every step as the uninterrupted run
    ref = read_data_order(small_run.stage_dir("rl") / "data_order.jsonl")
    got = read_data_order(run.stage_dir("rl") / "data_order.jsonl")
    assert sorted(got) == sorted(ref) == [0, 1, 2]
    assert got == ref
    rows = [json.loads(line) for line in (run.stage_dir("rl") / "data_order.jsonl").read_text().splitlines()]
    if dynamic:                     # refills happened, and the checkpoint carried the refill cursor
        assert any(r.get("round", 0) > 0 for r in rows), rows
        assert (run_dir / "stages" / "rl" / "checkpoints" / "checkpoint-1" / "earl_dynamic_sampling.json").is_file()
    # steps before the checkpoint were not trained again: step 0's batch was scored exactly once
    raw = [r["step"] for r in rows if r.get("round", 0) == 0]
    assert raw.count(0) == 1, raw
    # metrics hold each RL step exactly once (the redone steps replaced, not duplicated)
    steps = [r["step"] for r in run.read_metrics("rl") if "reward" in r]
    assert steps == [1, 2, 3]


@needs_iverilog
@pytest.mark.slow
def test_ctrl_c_then_sigterm_then_resume_from_another_directory(small_run, tmp_path):
    """Ctrl-C: exit 130 and the resume hint. SIGTERM (a scheduler's warning): the step in progress ends,
    its checkpoint is saved (save_steps is too large to have saved one), exit 75. Both resume, from a
    directory other than the one the run started in (state.json paths are run-folder relative)."""
    start, elsewhere = tmp_path / "start", tmp_path / "elsewhere"
    start.mkdir()
    elsewhere.mkdir()
    run_dir = start / "rel" / "run"
    sigint_at, sigterm_at = tmp_path / "held-0", tmp_path / "held-1"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "pipelines.cli", "train", "--config", str(TINY), "--run-dir", "rel/run",
           *SMALL, "stages.rl.trainer.save_steps=100", "stages.eval.settings.models=[]",
           hold_rewards((0, sigint_at), (1, sigterm_at))]

    def run_until(marker: Path, sig: int, *argv: str, cwd: Path) -> subprocess.CompletedProcess:
        proc = subprocess.Popen(list(argv), cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, start_new_session=True, preexec_fn=default_sigint)
        try:
            wait_for(marker, proc)
            proc.send_signal(sig)
            out, err = proc.communicate(timeout=600)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
        return subprocess.CompletedProcess(argv, proc.returncode, out, err)

    first = run_until(sigint_at, signal.SIGINT, *cmd, cwd=start)
    assert first.returncode == 130, first.stderr[-3000:]
    assert f"interrupted; resume with: earl train --resume {run_dir}" in first.stderr
    assert "Traceback" not in first.stderr
    assert _checkpoint_steps(run_dir) == []

    resume = [sys.executable, "-m", "pipelines.cli", "train", "--resume", str(run_dir)]
    second = run_until(sigterm_at, signal.SIGTERM, *resume, cwd=elsewhere)
    assert second.returncode == 75, second.stderr[-3000:]
    assert "stage rl stopped at step 2 (SIGTERM)" in second.stderr
    assert f"resume with: earl train --resume {run_dir}" in second.stderr
    assert _checkpoint_steps(run_dir) == [2], "the signal saved the step it interrupted"
    state = RunFolder(run_dir).load_state()
    assert state["stages"]["rl"]["status"] == "running"
    assert state["base_model"] == "base_model" and state["stages"]["sft"]["model"] == "stages/sft/final"

    third = subprocess.run(resume, cwd=elsewhere, env=env, capture_output=True, text=True, timeout=900,
                           check=False)
    assert third.returncode == 0, third.stderr[-3000:]
    assert f"resuming from {run_dir / 'stages' / 'rl' / 'checkpoints' / 'checkpoint-2'} (step 2)" in third.stdout
    run = RunFolder(run_dir)
    assert run.load_state()["stages"]["rl"]["global_step"] == 3
    assert [r["step"] for r in run.read_metrics("rl") if "reward" in r] == [1, 2, 3]
    ref = read_data_order(small_run.stage_dir("rl") / "data_order.jsonl")
    assert read_data_order(run.stage_dir("rl") / "data_order.jsonl") == ref, "same problems at every step"


@needs_iverilog
@pytest.mark.slow
def test_two_eval_stages_keep_their_own_results(tmp_path):
    """One eval stage per benchmark (the real recipes evaluate on VerilogEval and RTLLM): the same model
    label in two stages must not collide, and the report shows one table per stage."""
    raw = load_config(TINY, SMALL).to_dict()
    ev = raw["stages"]["eval"]
    raw["stages"] = {"sft": raw["stages"]["sft"],
                     "eval_a": {**ev, "kind": "eval", "data": {"generator": "rtl", "n": 2, "seed": 1,
                                                              "split": "heldout"}},
                     "eval_b": {**ev, "kind": "eval", "data": {"generator": "rtl", "n": 3, "seed": 2,
                                                              "split": "heldout"}}}
    raw["run"]["run_dir"] = str(tmp_path / "run")
    run = train(load_config(raw=raw))
    a, b = (EvalResult.load(run.root / "eval" / name / "sft.json") for name in ("eval_a", "eval_b"))
    assert (len(a.problems), len(b.problems)) == (2, 3)
    report = (run.root / "report.md").read_text()
    assert "## Held-out evaluation: eval_a" in report and "## Held-out evaluation: eval_b" in report


REFERENCE_ONLY = ["stages.rl.data.options.reference_only=true", "data.eval.options.reference_only=true",
                  "stages.eval.settings.models=[]"]


@needs_iverilog
@pytest.mark.slow
def test_rl_and_eval_stages_train_on_reference_only_tasks(tmp_path):
    """Tasks with a reference and no bench (CodeV-R1's shape) need no other change: the RL and eval stages run
    on them, and the reward TRL calls, handed the trainer's own dataset columns (testbench None after Arrow),
    builds the bench from the reference: references pass, a design of the wrong shape does not."""
    from pipelines.runner import StageContext
    from pipelines.stages import rl
    from rewards.verilog.problems import Problem, reference_solution
    run = train(load_config(TINY, SMALL + REFERENCE_ONLY + [f"run.run_dir={tmp_path / 'run'}"]))
    state = run.load_state()
    assert [s["status"] for s in state["stages"].values()] == ["done", "done", "done"]
    assert sorted({r["step"] for r in run.read_metrics("rl") if "reward" in r}) == [1, 2, 3]
    assert len(EvalResult.load(run.root / "eval" / "rl.json").problems) == 4

    cfg = load_config(run.config_path)
    ctx = StageContext(cfg, "rl", cfg.stages["rl"], RunFolder(tmp_path / "probe"), str(run.final_dir("sft")))
    trainer = rl.build_trainer(ctx)
    rows = trainer.train_dataset.select(range(4)).to_list()
    assert all(r["testbench"] is None for r in rows)
    refs = [reference_solution(Problem.from_columns(r)) for r in rows]
    wrong = "module TopModule(input a, output y);\n  assign y = a;\nendmodule\n"
    columns = {k: [r[k] for r in rows] * 2 for k in rows[0] if k != "prompt"}
    rewards = trainer.reward_funcs[0](prompts=[r["prompt"] for r in rows] * 2, completions=refs + [wrong] * 4,
                                      **columns)
    assert rewards[:4] == [1.0] * 4 and all(r is not None and r < 0.5 for r in rewards[4:])


# --------------------------------------------------------------------------- evaluation


def test_sign_test_and_paired_counts():
    assert sign_test(0, 0) == 1.0
    assert sign_test(38, 15) == pytest.approx(0.0022, abs=5e-4)
    from pipelines.evaluate import ProblemResult
    a = EvalResult("a", "m", 1, [1], [ProblemResult(str(i), 1, int(p), [p], [0.0]) for i, p in
                                      enumerate([True, False, False, True])])
    b = EvalResult("b", "m", 1, [1], [ProblemResult(str(i), 1, int(p), [p], [0.0]) for i, p in
                                      enumerate([True, True, True, False])])
    assert paired(a, b) == {"problems": 4, "up": 2, "down": 1, "sign_test_p": 1.0}


@needs_iverilog
def test_scoring_goes_through_the_reward_engine():
    problems = load_source(DataSource(generator="rtl", n=4, seed=3, split="heldout"))
    wrong = "module TopModule(); endmodule"
    samples = [[completion_text(p), wrong, "no code at all"] for p in problems]
    results = score(problems, samples, [RewardEntry()], DataConfig())
    assert [r.passed for r in results] == [[True, False, False]] * 4
    assert all(r.stages[0] == "pass" and r.stages[2] == "none" for r in results)
    assert all(r.pass_at(1) == pytest.approx(1 / 3) and r.pass_at(3) == 1.0 for r in results)


@needs_iverilog
def test_scoring_verilog_eval_references(verilog_eval_dir):
    from rewards.verilog.reward import reference_candidate
    problems = load_source(DataSource(path=str(verilog_eval_dir), n=3))
    results = score(problems, [[reference_candidate(p)] for p in problems], [RewardEntry()], DataConfig())
    assert [r.correct for r in results] == [1, 1, 1]


@needs_iverilog
@pytest.mark.slow
def test_earl_eval_cli_prints_table_and_pass_at_k(small_run, tmp_path, capsys):
    model = str(small_run.final_dir("rl"))
    rc = main(["eval", "--model", model, "--problems", "rtl:3:5", "--n", "4", "--k", "1,2,4",
               "--max-new-tokens", "24", "--out", str(tmp_path)])
    assert rc == 0
    out = capsys.readouterr().out
    assert "| problem | n | correct | pass@1 | pass@2 | pass@4 |" in out
    assert out.count("| rtlgen-heldout-5-") == 3
    saved = json.loads((tmp_path / "eval.json").read_text())
    assert set(saved["pass_at_k"]) == {"1", "2", "4"} and len(saved["problems"]) == 3
    assert all(len(p["samples"]) == 4 for p in saved["problems"])


@needs_iverilog
@pytest.mark.slow
def test_earl_eval_cli_on_verilog_eval_folder(small_run, verilog_eval_dir, tmp_path, capsys):
    rc = main(["eval", "--model", str(small_run.final_dir("rl")), "--problems", str(verilog_eval_dir),
               "--limit", "2", "--max-new-tokens", "16"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "Prob001_zero" in out and "pass@1" in out


@needs_iverilog
@pytest.mark.slow
def test_earl_eval_cli_sampled_and_greedy_with_family_table(small_run, tmp_path, capsys):
    rc = main(["eval", "--model", str(small_run.final_dir("rl")), "--problems", "rtl:4:5", "--n", "2", "--k", "1,2",
               "--greedy", "--max-new-tokens", "16", "--out", str(tmp_path)])
    assert rc == 0
    out = capsys.readouterr().out
    assert "sampled pass@1 = " in out and "greedy pass@1 = " in out
    assert "| family | problems | final pass@1 | final pass@2 | final greedy |" in out   # label: the folder name
    saved = json.loads((tmp_path / "eval.json").read_text())
    assert len(saved["greedy"]) == 4 and all(len(p["samples"]) == 1 for p in saved["greedy"])
    assert all(len(p["samples"]) == 2 and "family" in p["meta"] for p in saved["problems"])
    assert main(["eval", "--model", "x", "--problems", "rtl:2", "--greedy"]) == 2
    assert "--greedy" in capsys.readouterr().err


def test_earl_eval_cli_rejects_bad_k(capsys):
    assert main(["eval", "--model", "x", "--problems", "rtl:2", "--n", "2", "--k", "1,5"]) == 2
    assert "--k" in capsys.readouterr().err


def test_ablation_summary_reports_per_seed_pooled_and_head_to_head():
    from pipelines.ablation import ArmRun, parse_arm, patched, summary
    from pipelines.evaluate import ProblemResult

    def res(flags, greedy=None):
        return EvalResult("rl", "m", 1, [1], [ProblemResult(str(i), 1, int(f), [f], [0.0]) for i, f in
                                              enumerate(flags)],
                          greedy=[ProblemResult(str(i), 1, int(f), [f], [0.0]) for i, f in enumerate(greedy or [])])
    sft = res([True, False, False, False])
    results = {"earl": {0: ArmRun(res([True, True, False, False]), 100.0, 60, 0.4),
                        1: ArmRun(res([True, True, True, False]), 90.0, 60, 0.3)},
               "none": {0: ArmRun(res([False, False, False, False])), 1: ArmRun(res([True, False, False, False]))}}
    text = summary(load_config(TINY), sft, results)
    assert "| 0 | earl | 50.0% | +25.0% | 1 | 0 | 1 | 100 | 60 | 0.40 |" in text
    assert "| 0 | none | 0.0% | -25.0% | 0 | 1 |" in text
    assert "| earl | 62.5% | 17.7% | +37.5% | 3 / 0 | 0.25 |" in text
    assert "| none | 12.5% | 17.7% | -12.5% | 0 / 1 | 1 |" in text
    assert "| earl vs none | 4 / 0 | 0.125 |" in text
    # with a greedy decode the comparison is on it, and sampled pass@1 / pass@k get their own columns
    sft_g = EvalResult("sft", "m", 2, [1, 2], [ProblemResult("0", 2, 1, [True, False], [1, 0]),
                                                ProblemResult("1", 2, 0, [False, False], [0, 0])],
                       greedy=[ProblemResult("0", 1, 1, [True], [1]), ProblemResult("1", 1, 0, [False], [0])])
    rl_g = EvalResult("rl", "m", 2, [1, 2], [ProblemResult("0", 2, 2, [True, True], [1, 1]),
                                              ProblemResult("1", 2, 1, [False, True], [0, 1])],
                      greedy=[ProblemResult("0", 1, 1, [True], [1]), ProblemResult("1", 1, 1, [True], [1])])
    text = summary(load_config(TINY), sft_g, {"ds": {0: ArmRun(rl_g, 50.0, 38, 0.1)}})
    assert "greedy pass@1" in text
    assert "| 0 | ds | 100.0% | +50.0% | 1 | 0 | 1 | 75.0% | 100.0% | 50 | 38 | 0.10 |" in text
    assert parse_arm("ds:dynamic_sampling.enabled=true,trainer.max_steps=38") == (
        "ds", {"dynamic_sampling.enabled": True, "trainer.max_steps": 38})
    assert patched({"gating": None, "trainer": {"lr": 1}}, {"gating.granularity": "none", "trainer.max_steps": 3}) \
        == {"gating": {"granularity": "none"}, "trainer": {"lr": 1, "max_steps": 3}}
    with pytest.raises(ValueError, match="--arm ds: 'x' is not KEY=VALUE"):
        parse_arm("ds:x")
