"""Reward plugins: lookup by name, dotted path and entry point; composition; crash isolation."""
from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from rewards import registry
from rewards.registry import RewardSpec, SafeReward, build_reward, compose, weighted_sum

PLUGIN = Path(__file__).resolve().parents[1] / "docs" / "examples" / "earl-example-plugin"


def always_half(prompts, completions, **columns):
    return [0.5] * len(completions)


def test_dotted_path_both_spellings():
    for name in ("tests.test_registry:always_half", "tests.test_registry.always_half"):
        fn = build_reward(name)
        assert fn(["p"], ["a", "b"]) == [0.5, 0.5]


def test_register_decorator_and_kwargs_binding():
    @registry.register_reward("unit_len")
    def unit_len(prompts, completions, scale=1.0, **cols):
        return [scale * len(c) for c in completions]

    assert build_reward("unit_len", scale=2.0)([""], ["abc"]) == [6.0]
    assert "unit_len" in registry.available_rewards()


def test_unknown_reward_names_the_choices():
    with pytest.raises(KeyError, match="unknown reward 'nope'.*verilog_functional"):
        registry.resolve("nope")
    with pytest.raises(ValueError, match=r"rewards\[0\] \(no.such:thing\)"):
        compose([{"name": "no.such:thing"}])
    with pytest.raises(ValueError, match=r"rewards\[0\]\.wieght \(did you mean weight\?\)"):
        compose([{"name": "x", "wieght": 2}])          # the one strict-options check (sandboxes.strict)


def test_safe_reward_turns_crash_and_timeout_into_none():
    def boom(prompts, completions, **cols):
        raise RuntimeError("reward bug")

    never = threading.Event()

    def stuck(prompts, completions, **cols):       # returns only when the test lets it: no timing
        never.wait()
        return [1.0] * len(completions)

    safe = SafeReward(boom, "boom")
    assert safe(["p"], ["a", "b"]) == [None, None] and safe.failures == 1
    try:
        assert SafeReward(stuck, "stuck", timeout_s=0.2)(["p"], ["a"]) == [None], "only the timeout returns"
    finally:
        never.set()
    wrong_len = SafeReward(lambda p, c, **k: [1.0], "short")
    assert wrong_len(["p"], ["a", "b"]) == [None, None]


def test_compose_weights_like_trl():
    funcs, weights = compose([
        RewardSpec("tests.test_registry:always_half", weight=2.0),
        {"name": "tests.test_registry:always_half", "weight": -1.0},
    ])
    assert weights == [2.0, -1.0]
    assert weighted_sum(funcs, weights, ["p"], ["x"]) == [0.5]


@pytest.mark.slow
def test_entry_point_plugin_installed_from_package(tmp_path):
    """pip-install the example plugin package and find its rewards through the entry point group."""
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(PLUGIN)], check=True, capture_output=True)
    script = textwrap.dedent("""
        from rewards.registry import available_rewards, compose, weighted_sum
        assert "length_penalty" in available_rewards(), available_rewards()
        funcs, weights = compose([{"name": "length_penalty", "kwargs": {"max_chars": 4}},
                                  {"name": "keyword_bonus", "weight": 0.5, "kwargs": {"keywords": ["always"]}}])
        print(weighted_sum(funcs, weights, ["p", "p"], ["always", "x" * 6]))
    """)
    env = {"PYTHONPATH": f"{target}:{Path(__file__).resolve().parents[1]}", "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[1.0, 0.5]"   # 0.5 length + 0.5 keyword; 0.5 length


# ------------------------------------------------------------------ the reward contract (rewards/base.py)


class Judged:
    """A reward in the full contract: stages, and one Score per completion after each call."""
    __name__ = "judged"
    stages = ("none", "ok")

    def __init__(self):
        self.last_scores = None

    def __call__(self, prompts, completions, **columns):
        from rewards.base import Score
        self.last_scores = [Score(float("ok" in c), "ok" in c, "ok" if "ok" in c else "none", "why")
                            for c in completions]
        return [s.reward for s in self.last_scores]


def plain(prompts, completions, **columns):
    """Today's plain TRL signature: numbers only."""
    return [0.5 for _ in completions]


def test_plain_functions_and_full_rewards_both_work_through_the_wrapper():
    from rewards.base import Reward, scores_of
    assert isinstance(Judged(), Reward) and not isinstance(plain, Reward)
    full, bare = SafeReward(Judged(), "judged"), SafeReward(plain, "plain")
    assert full(["p"] * 2, ["ok", "no"]) == [1.0, 0.0] and bare(["p"] * 2, ["ok", "no"]) == [0.5, 0.5]
    assert full.stages == ("none", "ok") and bare.stages is None
    got = scores_of(full, 2)
    assert [(s.stage, s.passed, s.reason) for s in got] == [("ok", True, "why"), ("none", False, "why")]
    assert scores_of(bare, 2) is None and scores_of(full, 3) is None      # no scores / another batch size


def test_eval_scores_both_kinds_of_reward():
    """evaluate.score judges by the first reward's Scores when it leaves them, else by the threshold."""
    from pipelines.config import DataConfig, RewardEntry
    from pipelines.evaluate import score
    from pipelines.tasks.rtlgen import generate
    problems = generate(1, seed=0, split="heldout")
    for name, want in ((f"{__name__}:Judged", [True, False]), (f"{__name__}:plain", [False, False])):
        res = score(problems, [["ok", "no"]], [RewardEntry(name=name)], DataConfig())
        assert res[0].passed == want, name
