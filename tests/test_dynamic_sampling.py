"""Dynamic sampling (pipelines/dynamic_sampling.py, EARLGRPOTrainer): which groups are dropped, refill to the
target, max_rounds, two ranks agreeing, the refill stream and its checkpointed cursor, config validation."""
from __future__ import annotations

import json
import math
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pipelines import dynamic_sampling as ds
from pipelines.config import ConfigError, load_config
from rewards.base import Score
from tests.conftest_earl import PROMPTS, grpo_args, tiny_model, tiny_tokenizer

ROOT = Path(__file__).resolve().parents[1]
G = 4


def values(*groups: list[float]) -> torch.Tensor:
    return torch.tensor([v for g in groups for v in g])


# ---------------------------------------------------------------------------------------- pure decisions


def test_uniform_groups_all_pass_all_fail_mixed_and_unscored():
    v = values([1, 1, 1, 1], [0, 0, 0, 0], [1, 0, 0, 0], [0.5, 0.5, math.nan, 0.5], [math.nan] * 3 + [1.0])
    assert ds.uniform_groups(v, G).tolist() == [True, True, False, True, True]


def test_classify_round_by_reward_and_by_pass():
    rewards = values([1, 1, 1, 1], [0, 0, 0, 0], [1, 0, 1, 0], [0.2, 0.1, 0.1, 0.1])   # last: partial credit
    passed = values([1, 1, 1, 1], [0, 0, 0, 0], [1, 0, 1, 0], [0, 0, 0, 0]).long()
    by_reward = ds.classify_round(rewards, passed, G, "reward")
    assert by_reward.informative.tolist() == [False, False, True, True]
    assert by_reward.all_pass.tolist() == [True, False, False, False]
    assert by_reward.all_fail.tolist() == [False, True, False, False]
    by_pass = ds.classify_round(rewards, passed, G, "pass")     # partial credit among failures: dropped
    assert by_pass.informative.tolist() == [False, False, True, False]
    assert by_pass.all_fail.tolist() == [False, True, False, True]
    no_stages = ds.classify_round(rewards, None, G, "reward")
    assert no_stages.informative.tolist() == [False, False, True, True] and not no_stages.all_pass.any()
    with pytest.raises(ValueError, match="metric=pass"):
        ds.classify_round(rewards, None, G, "pass")


def _round(*informative: bool) -> ds.RoundGroups:
    t = torch.tensor(informative)
    return ds.RoundGroups(t, ~t, torch.zeros_like(t))


def test_plan_refills_to_target_in_round_order():
    rounds = [_round(False, True, False), _round(False, False, True), _round(True, True, True)]
    assert not ds.ranks_full(rounds[:2], 1, 3) and ds.ranks_full(rounds, 1, 3)
    plan = ds.plan_batch(rounds, world=1, per_rank=3)
    assert plan.picks == [[(0, 1), (1, 2), (2, 0)]]
    assert (plan.kept, plan.filled, plan.surplus, plan.generated, plan.rounds) == (3, 0, 2, 9, 3)
    assert plan.dropped == 4 and plan.dropped_all_pass == 4 and plan.complete
    m = plan.metrics()
    assert m["dynamic_sampling/groups_kept"] == 3 and m["dynamic_sampling/max_rounds_reached"] == 0


def test_plan_at_max_rounds_fills_with_earliest_uniform_groups():
    plan = ds.plan_batch([_round(False, True, False), _round(False, False, False)], world=1, per_rank=3)
    assert plan.picks == [[(0, 0), (0, 1), (0, 2)]]       # round 0 is TRL's own batch
    assert (plan.kept, plan.filled, plan.complete) == (1, 2, False)
    assert plan.metrics()["dynamic_sampling/max_rounds_reached"] == 1
    one_round = ds.plan_batch([_round(False, True, False)], world=1, per_rank=3)
    assert one_round.picks == [[(0, 0), (0, 1), (0, 2)]]  # max_rounds=1: exactly TRL's batch


def test_plan_per_rank_quotas_never_move_groups():
    # global order = rank order: rank 0 holds groups 0-1, rank 1 groups 2-3
    rounds = [_round(True, True, False, False), _round(True, False, True, True)]
    assert ds.ranks_full(rounds, 2, 2) and not ds.ranks_full(rounds[:1], 2, 2)
    plan = ds.plan_batch(rounds, world=2, per_rank=2)
    assert plan.picks == [[(0, 0), (0, 1)], [(1, 0), (1, 1)]]
    assert (plan.kept, plan.surplus, plan.filled) == (4, 1, 0)


def test_refill_stream_is_seeded_and_resumes_from_its_cursor():
    a = ds.RefillStream(5, seed=3)
    first = a.take(4) + a.take(4)                 # crosses into the second pass over the data
    assert sorted(first[:5]) == list(range(5)) and a.cursor == 8
    b = ds.RefillStream(5, seed=3)
    assert b.take(8) == first
    resumed = ds.RefillStream(5, seed=3, cursor=4)
    assert resumed.take(4) == first[4:]
    assert ds.local_rows([7, 8], 2, rank=1, per_rank_samples=2) == [8, 8]


def test_assemble_repads_prompts_left_and_completions_right():
    def part(p_len: int, c_len: int, base: int) -> dict:
        n = 2 * G
        return {"prompt_ids": torch.full((n, p_len), base), "prompt_mask": torch.ones(n, p_len, dtype=torch.long),
                "completion_ids": torch.full((n, c_len), base + 1),
                "completion_mask": torch.ones(n, c_len, dtype=torch.long),
                "advantages": torch.arange(n, dtype=torch.float) + base, "num_items_in_batch": torch.tensor(0)}
    out = ds.assemble([part(2, 3, 10), part(4, 1, 20)], [(0, 1), (1, 0)], G, pad_token_id=0)
    assert "num_items_in_batch" not in out
    assert out["prompt_ids"].shape == (2 * G, 4) and out["prompt_ids"][0].tolist() == [0, 0, 10, 10]
    assert out["prompt_mask"][0].tolist() == [0, 0, 1, 1] and out["prompt_mask"][G].tolist() == [1] * 4
    assert out["completion_ids"][G].tolist() == [21, 0, 0] and out["completion_mask"][G].tolist() == [1, 0, 0]
    assert out["advantages"].tolist() == [14.0, 15.0, 16.0, 17.0, 20.0, 21.0, 22.0, 23.0]
    with pytest.raises(ValueError, match="multimodal"):
        ds.assemble([{**part(1, 1, 0), "pixel_values": torch.zeros(1)}], [(0, 0)], G, 0)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_keep_the_same_groups(tmp_path):
    """Two gloo ranks, each holding half of every round: same plan on both, groups never cross ranks."""
    port = _free_port()
    worker = ROOT / "tests" / "helpers" / "ds_decision_worker.py"
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, str(worker), str(r), "2", str(port), str(tmp_path / f"r{r}.json")],
                              cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True) for r in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err[-3000:]
    got = [json.loads((tmp_path / f"r{r}.json").read_text()) for r in range(2)]
    assert got[0] == got[1]
    # rank 0: informative groups of its own slices; rank 1 is short after 2 rounds and fills with round 0
    assert got[0]["picks"] == [[[0, 0], [1, 0]], [[0, 0], [1, 1]]]
    m = got[0]["metrics"]
    assert (m["dynamic_sampling/groups_kept"], m["dynamic_sampling/groups_filled"]) == (3, 1)
    assert (m["dynamic_sampling/dropped_all_pass"], m["dynamic_sampling/dropped_all_fail"]) == (2, 2)
    assert m["dynamic_sampling/rounds"] == 2 and m["dynamic_sampling/max_rounds_reached"] == 1


# ---------------------------------------------------------------------------------------- trainer


class KindReward:
    """Reward by the row's `kind` column: pass -> every completion passes, fail -> none, mix -> alternate."""
    __name__ = "kind"
    stages = ("fail", "pass")

    def __init__(self):
        self.last_scores: list[Score] | None = None
        self.calls: list[list[str]] = []

    def __call__(self, prompts, completions, kind, **kwargs):
        self.calls.append(list(kind))
        ok = [k == "pass" or (k == "mix" and i % 2 == 0) for i, k in enumerate(kind)]
        self.last_scores = [Score(float(o), o, "pass" if o else "fail") for o in ok]
        return [1.0 if o else 0.0 for o in ok]


def _dataset(kinds: list[str]):
    from datasets import Dataset
    return Dataset.from_dict({"prompt": [PROMPTS[i % len(PROMPTS)] for i in range(len(kinds))], "kind": kinds})


def _train(tmp_path, kinds: list[str], dynamic: dict | None, **args):
    from pipelines.earl_trainer import EARLGRPOTrainer
    torch.set_num_threads(1)
    tok = tiny_tokenizer()
    reward = KindReward()
    trainer = EARLGRPOTrainer(model=tiny_model(tok), reward_funcs=[reward],
                              args=grpo_args(tmp_path, **{"per_device_train_batch_size": 8, **args}),
                              train_dataset=_dataset(kinds), processing_class=tok, dynamic_sampling=dynamic)
    trainer.train()
    return trainer, reward


def _logged(trainer, name: str) -> list[float]:
    return [r[name] for r in trainer.state.log_history if name in r]


def test_trainer_drops_uniform_groups_and_refills(tmp_path):
    kinds = ["pass", "fail"] * 6 + ["mix"] * 4       # 16 prompts, a quarter informative
    trainer, reward = _train(tmp_path, kinds, {"enabled": True, "metric": "pass", "max_rounds": 30})
    plan = trainer.last_batch_plan
    assert plan.complete and plan.kept == 2 and plan.filled == 0
    assert plan.rounds == len(reward.calls) >= 1
    kept = [k for r, g in plan.picks[0] for k in reward.calls[r][g * G:(g + 1) * G]]
    assert kept == ["mix"] * 2 * G                     # only informative groups reach the loss
    assert plan.dropped == plan.dropped_all_pass + plan.dropped_all_fail
    assert plan.dropped_all_pass == sum(c[::G].count("pass") for c in reward.calls)
    assert _logged(trainer, "dynamic_sampling/groups_kept") == [2.0]
    assert _logged(trainer, "dynamic_sampling/rounds") == [float(plan.rounds)]
    assert all(math.isfinite(x) for x in _logged(trainer, "loss"))


def test_trainer_max_rounds_trains_on_the_uniform_batch(tmp_path, caplog):
    trainer, reward = _train(tmp_path, ["pass", "fail"] * 4, {"enabled": True, "max_rounds": 2})
    plan = trainer.last_batch_plan
    assert len(reward.calls) == plan.rounds == 2
    assert (plan.kept, plan.filled, plan.complete) == (0, 2, False)
    assert plan.picks == [[(0, 0), (0, 1)]]            # TRL's own batch
    assert _logged(trainer, "dynamic_sampling/max_rounds_reached") == [1.0]
    assert "max_rounds=2 reached" in caplog.text


def test_trainer_without_dynamic_sampling_is_one_round(tmp_path):
    trainer, reward = _train(tmp_path, ["pass", "fail"] * 4, None)
    assert len(reward.calls) == 1 and trainer.last_batch_plan is None
    assert not _logged(trainer, "dynamic_sampling/rounds")


def test_trainer_refuses_setups_it_cannot_assemble(tmp_path):
    from pipelines.earl_trainer import EARLGRPOTrainer
    from tests.conftest_earl import length_reward
    tok = tiny_tokenizer()
    for reward, extra, match in [(KindReward(), {"multi_objective_aggregation": "normalize_then_sum"},
                                  "group baselines"),
                                 (length_reward, {}, "metric=pass needs")]:
        with pytest.raises(ValueError, match=match):
            EARLGRPOTrainer(model=tiny_model(tok), reward_funcs=[reward],
                            args=grpo_args(tmp_path, per_device_train_batch_size=8, **extra),
                            train_dataset=_dataset(["pass"] * 8), processing_class=tok,
                            dynamic_sampling={"enabled": True, "metric": "pass"})


def test_refill_cursor_is_saved_and_restored(tmp_path):
    trainer, _ = _train(tmp_path, ["pass", "fail"] * 4, {"enabled": True, "max_rounds": 3},
                        save_strategy="steps", save_steps=1)
    state = json.loads((tmp_path / "checkpoint-1" / "earl_dynamic_sampling.json").read_text())
    assert state["refill_cursor"] == trainer._refill.cursor == 4      # two refill rounds of 2 prompts
    trainer._refill.cursor = 0
    trainer._load_optimizer_and_scheduler(str(tmp_path / "checkpoint-1"))
    assert trainer._refill.cursor == 4


# ---------------------------------------------------------------------------------------- config


BASE = {"data": {"train": {"generator": "rtl", "n": 4}}, "stages": {"rl": {}}}


def _cfg(ds_section, stage: str = "rl"):
    raw = json.loads(json.dumps(BASE))
    raw["stages"] = {stage: {"dynamic_sampling": ds_section}}
    return load_config(raw=raw)


def test_config_dynamic_sampling_is_validated_strictly():
    cfg = _cfg({"enabled": True, "metric": "pass", "max_rounds": 3})
    assert cfg.stages["rl"].dynamic_sampling == {"enabled": True, "metric": "pass", "max_rounds": 3}
    assert load_config(raw=json.loads(json.dumps(BASE))).stages["rl"].dynamic_sampling is None
    for bad, where in [({"enable": True}, "stages.rl.dynamic_sampling.enable"),
                       ({"metric": "std"}, "stages.rl.dynamic_sampling.metric"),
                       ({"max_rounds": 0}, "stages.rl.dynamic_sampling.max_rounds"),
                       ({"enabled": "yes"}, "stages.rl.dynamic_sampling.enabled")]:
        with pytest.raises(ConfigError, match=where.replace(".", r"\.")):
            _cfg(bad)
    with pytest.raises(ConfigError, match="only an rl stage"):
        _cfg({"enabled": True}, stage="sft")


def test_trainer_buffers_the_filtered_batch_over_steps_per_generation(tmp_path):
    """TRL's buffering is untouched: one filtered generation batch of TRL's shape serves both micro-steps."""
    kinds = ["pass", "fail"] * 6 + ["mix"] * 4
    trainer, reward = _train(tmp_path, kinds, {"enabled": True, "max_rounds": 30}, per_device_train_batch_size=4,
                             steps_per_generation=2, gradient_accumulation_steps=2, max_steps=2)
    assert trainer.state.global_step == 2
    assert _logged(trainer, "dynamic_sampling/groups_kept") == [2.0, 2.0]
    assert all(len(c) == 8 for c in reward.calls)
