"""Reward overlap (pipelines/reward_overlap.py): rewards start when the completions exist and run while TRL's
no-grad log-prob passes do; results, losses and logged metrics are those of TRL's order."""
from __future__ import annotations

import logging
import threading

import pytest

from pipelines.earl_trainer import EARLGRPOTrainer
from pipelines.gating import GatingConfig
from pipelines.reward_overlap import RewardPrefetch, reward_columns
from tests.helpers.hold import default_sigint
from tests.helpers.tiny_grpo import grpo_args, length_reward, tiny_dataset, tiny_model, tiny_tokenizer


class Counting:
    """A reward that counts its calls and remembers the thread that ran them."""
    __name__ = "counting"

    def __init__(self):
        self.calls: list[tuple[list, str]] = []

    def __call__(self, prompts, completions, **kwargs):
        self.calls.append((list(completions), threading.current_thread().name))
        return [float(len(c)) for c in completions]


def test_prefetched_result_is_served_once_and_a_different_call_is_recomputed(caplog):
    reward = Counting()
    pre = RewardPrefetch([reward])
    kwargs = {"id": ["a", "b"], "trainer_state": None}
    pre.start(["p", "q"], ["xx", "yyy"], [[1], [2]], kwargs)
    (ready,) = pre.serving(pre.claim())
    assert ready(prompts=["p", "q"], completions=["xx", "yyy"], completion_ids=[[1], [2]], **kwargs) == [2.0, 3.0]
    assert len(reward.calls) == 1 and reward.calls[0][1].startswith("earl-reward")
    pre.start(["p"], ["xx"], [[1]], {"id": ["a"]})
    (ready,) = pre.serving(pre.claim())
    with caplog.at_level(logging.WARNING):
        assert ready(prompts=["p"], completions=["zzzz"], completion_ids=[[1]], id=["a"]) == [4.0]
    assert "differs from the prefetched one" in caplog.text
    assert [c for c, _ in reward.calls] == [["xx", "yyy"], ["xx"], ["zzzz"]]
    assert not pre.enabled, "after a mismatch the run goes back to TRL's order"
    pre.discard()


def test_columns_are_trls():
    rows = [{"prompt": "p", "completion": "c", "id": "1", "meta": {"a": 1}}, {"prompt": "q", "id": "2",
                                                                              "meta": {}}]
    assert reward_columns(rows) == {"id": ["1", "2"], "meta": [{"a": 1}, {}]}


class WaitsForLogps:
    """Returns only once TRL's reference log-prob pass has run: in TRL's order (rewards after the passes)
    a call would find the pass not yet run and say so with reward -1."""
    __name__ = "waits"

    def __init__(self, started: threading.Event, logps_done: threading.Event):
        self.started, self.logps_done = started, logps_done

    def __call__(self, prompts, completions, **kwargs):
        self.started.set()
        ok = self.logps_done.wait(timeout=60)
        return [float(len(c) % 5) if ok else -1.0 for c in completions]


def _trainer(tmp_path, model: str, tok, funcs, overlap: bool):
    """From a saved folder: with beta > 0 TRL loads its reference model from the policy's path."""
    return EARLGRPOTrainer(model, funcs,
                           grpo_args(tmp_path, max_steps=2, max_completion_length=10, beta=0.04),
                           tiny_dataset(8), tok, gating=GatingConfig(granularity="batch", top_ratio=0.2),
                           reward_overlap=overlap)


@pytest.mark.usefixtures("one_torch_thread")
def test_rewards_run_during_the_reference_pass_and_change_nothing(tmp_path):
    """beta > 0: TRL computes reference log-probs before it calls the rewards. With overlap the reward is
    already running then (the pass waits for it to start, the reward for the pass to finish: only a true
    overlap completes both); losses, rewards and metrics equal a run in TRL's order."""
    tok = tiny_tokenizer()
    model = str(tmp_path / "model")
    tiny_model(tok, seed=0).save_pretrained(model)
    started, done = threading.Event(), threading.Event()
    trainer = _trainer(tmp_path / "on", model, tok, [length_reward, WaitsForLogps(started, done)], overlap=True)
    ref_pass = trainer._get_per_token_logps_and_entropies

    def pass_after_reward_started(*a, **k):
        if trainer._earl_inputs is None:                   # the no-grad passes, not the loss
            assert started.wait(timeout=60), "the reward had not started when TRL's log-prob pass ran"
            out = ref_pass(*a, **k)
            done.set()
            return out
        return ref_pass(*a, **k)
    trainer._get_per_token_logps_and_entropies = pass_after_reward_started
    trainer.train()
    on = [h for h in trainer.state.log_history if "loss" in h]

    plain = _trainer(tmp_path / "off", model, tok, [length_reward, WaitsForLogps(threading.Event(),
                                                                                 _set_event())], overlap=False)
    plain.train()
    off = [h for h in plain.state.log_history if "loss" in h]
    assert len(on) == len(off) == 2
    for a, b in zip(on, off, strict=True):
        assert a["rewards/waits/mean"] >= 0, "every reward call saw the pass finished"
        for key in ("loss", "reward", "reward_std", "rewards/waits/mean", "kl", "earl/gated_fraction"):
            assert a[key] == pytest.approx(b[key], rel=1e-6, abs=1e-9), key
        assert a["timing/generate"] > 0 and a["timing/reward"] > 0 and a["timing/reward_wait"] >= 0


def _set_event() -> threading.Event:
    e = threading.Event()
    e.set()
    return e


def test_stage_option_reaches_the_trainer_and_only_rl_stages_take_it(tmp_path):
    from pipelines.config import ConfigError, load_config
    from pipelines.runner import RunFolder, StageContext
    from pipelines.stages import rl
    from pipelines.tiny import build_tiny
    model = str(build_tiny(tmp_path / "tiny"))
    tiny = "configs/verilog_tiny.yaml"
    small = ["stages.rl.data.n=8", "stages.rl.trainer.max_steps=1", f"run.run_dir={tmp_path / 'run'}"]
    for value, expected in (("null", False), ("true", True)):
        cfg = load_config(tiny, [*small, f"stages.rl.reward_overlap={value}"])
        trainer = rl.build_trainer(StageContext(cfg, "rl", cfg.stages["rl"], RunFolder(tmp_path / value), model))
        assert (trainer._prefetch is not None) is expected
    with pytest.raises(ConfigError, match=r"stages\.eval\.reward_overlap: only an rl stage"):
        load_config(tiny, ["stages.eval.reward_overlap=false"])
    with pytest.raises(ConfigError, match=r"stages\.rl\.reward_overlap: expected true/false"):
        load_config(tiny, ["stages.rl.reward_overlap=maybe"])


def test_a_reward_still_running_does_not_keep_the_process_alive(tmp_path):
    """Ctrl-C while a prefetched reward runs: the process ends (the reward is abandoned, as it was on the main
    thread), instead of the interpreter joining a worker thread that may run for minutes."""
    import subprocess
    import sys
    script = tmp_path / "hang.py"
    script.write_text(
        "import threading\n"
        "from pipelines.reward_overlap import RewardPrefetch\n"
        "never = threading.Event()\n"
        "def stuck(prompts, completions, **kw):\n"
        "    never.wait()\n"
        "pre = RewardPrefetch([stuck])\n"
        "pre.start(['p'], ['c'], [[1]], {})\n"
        "raise KeyboardInterrupt\n")
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode != 0 and "KeyboardInterrupt" in proc.stderr


def test_ctrl_c_reaches_the_main_thread_while_it_waits_for_a_reward(tmp_path):
    """The kernel may deliver SIGINT to any thread. Sent to the reward's thread, it must still interrupt the
    main thread waiting for that reward (an untimed lock wait would never wake: the run hung)."""
    import subprocess
    import sys
    script = tmp_path / "ctrl_c.py"
    script.write_text(
        "import signal, threading\n"
        "from pipelines.reward_overlap import RewardPrefetch\n"
        "started, never = threading.Event(), threading.Event()\n"
        "def stuck(prompts, completions, **kw):\n"
        "    started.set()\n"
        "    never.wait()\n"
        "pre = RewardPrefetch([stuck])\n"
        "pre.start(['p'], ['c'], [[1]], {})\n"
        "started.wait()\n"
        "worker = next(t for t in threading.enumerate() if t.name == 'earl-reward')\n"
        "(ready,) = pre.serving(pre.claim())\n"
        "try:\n"   # wherever the interrupt lands from here on, it must reach this handler
        "    threading.Timer(0.5, signal.pthread_kill, (worker.ident, signal.SIGINT)).start()\n"
        "    ready(prompts=['p'], completions=['c'], completion_ids=[[1]])\n"
        "except KeyboardInterrupt:\n"
        "    print('interrupted')\n")
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, check=False,
                          preexec_fn=default_sigint)
    assert proc.stdout.strip() == "interrupted", proc.stderr[-2000:]
