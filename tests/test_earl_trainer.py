"""EARLGRPOTrainer on real TRL with a tiny Llama: granularity none is TRL's GRPO loss, the policy gradient
reaches exactly the gated tokens (with the documented normalisation), KL scope, the trainer's entropy
is at the sampling temperature, and a short real training run logs the EARL metrics."""
from __future__ import annotations

import copy
import json
import math
import sys
from pathlib import Path

import pytest
import torch
from trl import GRPOTrainer

from pipelines.earl_trainer import EARLGRPOTrainer, resolve_gating
from pipelines.entropy import reference_entropy
from pipelines.gating import GatingConfig
from rewards.base import Score

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest_earl import StagedReward, grpo_args, length_reward, tiny_dataset, tiny_model, tiny_tokenizer

B, P, C = 4, 6, 9


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


@pytest.fixture(scope="module")
def base_model(tok):
    # untrained: entropies ≈ log(vocab) but distinct, and the gates compare the very same tensor
    return tiny_model(tok, seed=0)


@pytest.fixture(scope="module")
def batch(tok):
    g = torch.Generator().manual_seed(5)
    prompt_ids = torch.randint(2, len(tok), (B, P), generator=g)
    prompt_mask = torch.ones(B, P, dtype=torch.long)
    prompt_mask[1, :2] = 0
    prompt_ids[1, :2] = tok.pad_token_id
    completion_ids = torch.randint(2, len(tok), (B, C), generator=g)
    completion_mask = torch.ones(B, C, dtype=torch.long)
    completion_mask[0, 6:] = 0            # shorter completions, padded on the right
    completion_mask[2, 3:] = 0
    completion_ids[completion_mask == 0] = tok.pad_token_id
    return {"prompt_ids": prompt_ids, "prompt_mask": prompt_mask, "completion_ids": completion_ids,
            "completion_mask": completion_mask, "advantages": torch.tensor([1.0, -0.5, 2.0, -1.5]),
            "num_items_in_batch": completion_mask.sum()}


def make(cls, model, tok, tmp_path, gating=None, **args):
    kw = {} if cls is GRPOTrainer else {"gating": gating}
    trainer = cls(model=model, reward_funcs=[length_reward], args=grpo_args(tmp_path, **args),
                  train_dataset=tiny_dataset(8), processing_class=tok, **kw)
    trainer.current_gradient_accumulation_steps = 1
    trainer.model.train()
    return trainer


def spy_logps(trainer) -> dict:
    """Keep the per-token log-probs of the next loss with .grad retained."""
    captured: dict = {}
    orig = trainer._get_per_token_logps_and_entropies

    def spy(*a, **k):
        out = orig(*a, **k)
        if k.get("compute_entropy"):
            out[0].retain_grad()
            captured["logps"], captured["entropies"] = out[0], out[1]
        return out
    trainer._get_per_token_logps_and_entropies = spy
    return captured


def loss_and_grads(trainer, batch):
    trainer.model.zero_grad()
    loss = trainer._compute_loss(trainer.model, dict(batch))
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dapo"])
def test_granularity_none_is_trl_grpo_loss(base_model, tok, batch, tmp_path, loss_type):
    trl = make(GRPOTrainer, copy.deepcopy(base_model), tok, tmp_path / "a", loss_type=loss_type)
    earl = make(EARLGRPOTrainer, copy.deepcopy(base_model), tok, tmp_path / "b",
                gating=GatingConfig(granularity="none"), loss_type=loss_type)
    l1, g1 = loss_and_grads(trl, batch)
    l2, g2 = loss_and_grads(earl, batch)
    assert l1.item() != 0.0
    torch.testing.assert_close(l2, l1, rtol=0, atol=0)
    assert g1.keys() == g2.keys() and g1
    for name in g1:
        torch.testing.assert_close(g2[name], g1[name], rtol=0, atol=0)


def expected_gate(ent: torch.Tensor, mask: torch.Tensor, cfg: GatingConfig) -> torch.Tensor:
    """Independent reference: sort the valid entropies, take the ceil(ρ·n)-th largest, keep >= it."""
    valid = mask.bool()
    if cfg.granularity == "threshold":
        return (ent >= cfg.threshold) & valid
    if cfg.granularity == "batch":
        vals = sorted(ent[valid].tolist(), reverse=True)
        t = vals[math.ceil(cfg.top_ratio * len(vals)) - 1]
        return (ent >= t) & valid
    out = torch.zeros_like(valid)
    for i in range(ent.size(0)):
        vals = sorted(ent[i][valid[i]].tolist(), reverse=True)
        if vals:
            out[i] = (ent[i] >= vals[math.ceil(cfg.top_ratio * len(vals)) - 1]) & valid[i]
    return out


@pytest.mark.parametrize("granularity", ["batch", "response", "threshold"])
@pytest.mark.parametrize("normalize", ["selected", "all"])
@pytest.mark.parametrize("loss_type", ["grpo", "dapo"])
def test_policy_gradient_reaches_only_gated_tokens(base_model, tok, batch, tmp_path, granularity, normalize,
                                                   loss_type):
    cfg = GatingConfig(granularity=granularity, top_ratio=0.3, normalize=normalize,
                       threshold=5.6965 if granularity == "threshold" else None)
    trainer = make(EARLGRPOTrainer, copy.deepcopy(base_model), tok, tmp_path, gating=cfg, loss_type=loss_type)
    cap = spy_logps(trainer)
    loss_and_grads(trainer, batch)
    mask = batch["completion_mask"]
    gate = expected_gate(cap["entropies"].detach(), mask, cfg)
    assert 0 < gate.sum() < mask.sum()                     # a real selection, not all or nothing
    grad = cap["logps"].grad
    assert torch.all(grad[~gate] == 0)                     # exactly zero off the gate
    adv = batch["advantages"][:, None]
    if loss_type == "grpo":    # per sequence: -A_i / (B · kept_i) [selected] or -A_i / (B · valid_i) [all]
        denom = B * (gate.sum(-1) if normalize == "selected" else mask.sum(-1)).float()[:, None]
    else:                      # token level: -A_i / kept [selected] or -A_i / valid [all], over the batch
        denom = (gate.sum() if normalize == "selected" else mask.sum()).float()
    want = (-adv / denom).expand_as(grad)
    torch.testing.assert_close(grad[gate], want[gate])


def test_hook_returns_the_boolean_gate(base_model, tok, batch, tmp_path):
    cfg = GatingConfig(granularity="batch", top_ratio=0.3)
    trainer = make(EARLGRPOTrainer, copy.deepcopy(base_model), tok, tmp_path, gating=cfg)
    ent = torch.rand(B, C, generator=torch.Generator().manual_seed(1))
    gate = trainer.get_high_entropy_mask(ent, batch["completion_mask"], 0.8)
    assert gate.dtype == torch.bool
    assert torch.equal(gate, expected_gate(ent, batch["completion_mask"], cfg))


@pytest.mark.parametrize("loss_type", ["grpo", "dapo"])
def test_entropy_bonus_acts_on_the_gated_tokens_with_trls_weighting(base_model, tok, batch, tmp_path, loss_type):
    """TRL's bonus is coef x the mean entropy over mask x (what the hook returns): with the boolean gate
    every kept token weighs 1/kept, in per-sequence losses too (the selected-normalisation scale goes
    into the advantages, not into the mask the bonus reads)."""
    cfg = GatingConfig(granularity="batch", top_ratio=0.3, normalize="selected")
    coef = 0.1
    trainer = make(EARLGRPOTrainer, copy.deepcopy(base_model), tok, tmp_path, gating=cfg, loss_type=loss_type,
                   entropy_coef=coef)
    captured: dict = {}
    orig = trainer._get_per_token_logps_and_entropies

    def spy(*a, **k):
        out = orig(*a, **k)
        if k.get("compute_entropy") and out[1].requires_grad:
            out[1].retain_grad()
            captured["entropies"] = out[1]
        return out
    trainer._get_per_token_logps_and_entropies = spy
    loss_and_grads(trainer, dict(batch, advantages=torch.zeros(B)))     # no policy term: the bonus alone
    ent = captured["entropies"]
    gate = expected_gate(ent.detach(), batch["completion_mask"], cfg)
    assert 0 < gate.sum() < batch["completion_mask"].sum()
    want = torch.where(gate, torch.full_like(ent, -coef / float(gate.sum())), torch.zeros_like(ent))
    torch.testing.assert_close(ent.grad, want)


@pytest.mark.parametrize("kl_scope", ["all", "gated"])
def test_kl_scope(base_model, tok, batch, tmp_path, kl_scope):
    model_dir = tmp_path / "model"
    base_model.save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    cfg = GatingConfig(granularity="batch", top_ratio=0.3, kl_scope=kl_scope)
    trainer = make(EARLGRPOTrainer, str(model_dir), tok, tmp_path, gating=cfg, beta=0.5)
    cap = spy_logps(trainer)
    inputs = dict(batch, advantages=torch.zeros(B))       # no policy term: only the KL moves logps
    inputs["ref_per_token_logps"] = torch.full((B, C), -6.0)
    loss_and_grads(trainer, inputs)
    mask = batch["completion_mask"].bool()
    gate = expected_gate(cap["entropies"].detach(), batch["completion_mask"], cfg)
    grad = cap["logps"].grad
    assert torch.all(grad[~mask] == 0)
    assert torch.all(grad[gate] != 0)
    dropped = mask & ~gate
    assert torch.all(grad[dropped] == 0) if kl_scope == "gated" else torch.all(grad[dropped] != 0)
    assert torch.equal(inputs["ref_per_token_logps"], torch.full((B, C), -6.0))   # caller's batch untouched


def test_trainer_entropy_is_at_the_sampling_temperature(base_model, tok, batch, tmp_path):
    trainer = make(EARLGRPOTrainer, copy.deepcopy(base_model), tok, tmp_path,
                   gating=GatingConfig(granularity="none"), temperature=0.7)
    ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], 1)
    am = torch.cat([batch["prompt_mask"], batch["completion_mask"]], 1)
    with torch.no_grad():
        _, ent, _ = trainer._get_per_token_logps_and_entropies(trainer.model, ids, am, C, compute_entropy=True)
        logits = trainer.model(input_ids=ids, attention_mask=am).logits[:, -C - 1:-1]
    mask = batch["completion_mask"].bool()
    # TRL's fused head multiplies hidden @ W tile by tile in fp32: agreement to fp32 rounding, not bitwise
    torch.testing.assert_close(ent[mask].double(), reference_entropy(logits, 0.7)[mask], rtol=5e-5, atol=5e-5)
    assert not torch.allclose(ent[mask].double(), reference_entropy(logits, 1.0)[mask], rtol=1e-3, atol=1e-3)


def test_gating_config_sources():
    from trl import GRPOConfig
    args = GRPOConfig(output_dir="/tmp/x", top_entropy_quantile=0.2, report_to=[], use_cpu=True)
    mapped = resolve_gating(None, args)
    assert (mapped.granularity, mapped.top_ratio, mapped.normalize) == ("batch", 0.2, "all")
    assert resolve_gating({"granularity": "response"}, None).granularity == "response"
    with pytest.raises(ValueError, match="top_entropy_quantile"):
        resolve_gating(GatingConfig(), args)


def test_short_training_run_logs_earl_metrics(base_model, tok, tmp_path):
    from rewards.registry import SafeReward

    staged = SafeReward(StagedReward(), "staged")
    trainer = EARLGRPOTrainer(copy.deepcopy(base_model), [length_reward, staged],
                              grpo_args(tmp_path, max_steps=2, max_completion_length=10), tiny_dataset(8), tok,
                              gating=GatingConfig(granularity="batch", top_ratio=0.2, log_top_tokens=5),
                              reward_weights=[1.0, 2.0])
    assert trainer.reward_weights.tolist() == [1.0, 2.0]
    trainer.train()
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert len(logs) == 2
    for h in logs:
        assert 0.2 <= h["earl/gated_fraction"] <= 0.3        # ceil(0.2 · n) of n ≤ 40 tokens
        assert h["earl/entropy_kept"] >= h["earl/entropy_dropped"]
        assert h["earl/entropy_mean"] == pytest.approx(h["entropy"], rel=1e-4)
        assert h["stages/staged/pass_rate"] == pytest.approx(0.5)
        assert h["stages/staged/compile"] == pytest.approx(0.25) and h["stages/staged/simulate"] == 0.0
        assert not any(k.startswith("stages/length_reward") for k in h)
    rows = [json.loads(x) for x in (tmp_path / "earl_gated_tokens.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and rows[0]["gating"]["top_ratio"] == 0.2
    top = rows[-1]["top"]
    assert 0 < len(top) <= 5 and all(r["kept"] <= r["seen"] for r in top)
    assert [r["kept"] for r in top] == sorted((r["kept"] for r in top), reverse=True)


def test_stale_or_missing_details_are_skipped(base_model, tok, tmp_path):
    staged = StagedReward()
    trainer = make(EARLGRPOTrainer, copy.deepcopy(base_model), tok, tmp_path, gating=GatingConfig())
    trainer.reward_funcs, trainer.reward_func_names = [length_reward, staged], ["length_reward", "staged"]
    staged.last_scores = [Score(1.0, True, "pass")] * 3           # from a batch of another size
    trainer._log_reward_stages(8)
    assert not any(k.startswith("stages/") for k in trainer._metrics["train"])
    staged.last_scores = [Score(1.0, True, "pass"), Score(0.0, False, "weird"), Score(None, None, ""),
                          Score(0.1, False, "format")]
    trainer._log_reward_stages(4)
    m = trainer._metrics["train"]
    assert m["stages/staged/pass_rate"] == [0.25] and m["stages/staged/format"] == [0.25]


def test_stage_vocabulary_is_the_rewards_own(base_model, tok, tmp_path):
    """The security reward's stages are not Verilog's: its records are counted in its own vocabulary, its last
    stage is the pass rate; a reward with details but no declared vocabulary logs no stages."""
    from pipelines.tasks.secgen import generate
    from rewards.security.reward import SecurityRepairReward

    task = generate(1, seed=0, split="train")[0]
    security = SecurityRepairReward()
    undeclared = StagedReward()
    undeclared.stages = None
    trainer = make(EARLGRPOTrainer, copy.deepcopy(base_model), tok, tmp_path, gating=GatingConfig())
    trainer.reward_funcs, trainer.reward_func_names = [security, undeclared], ["security_repair", "undeclared"]
    columns = {k: [v] * 4 for k, v in task.to_columns().items()}
    assert security(["p"] * 4, [task.reference, task.reference, task.vulnerable, "def ("], **columns)[0] > 0.5
    undeclared(["p"] * 4, ["a"] * 4)
    trainer._log_reward_stages(4)
    m = trainer._metrics["train"]
    assert m["stages/security_repair/pass_rate"] == [0.5] and m["stages/security_repair/secure"] == [0.5]
    # furthest stage passed: the unchanged original parses (syntax), "def (" does not (none)
    assert m["stages/security_repair/syntax"] == [0.25] and m["stages/security_repair/none"] == [0.25]
    assert not any(k.startswith("stages/undeclared") for k in m)


@pytest.mark.parametrize("weight", [0.0, 0.25])
def test_negative_weight_scales_only_negative_advantages(base_model, tok, tmp_path, weight):
    trainer = make(EARLGRPOTrainer, copy.deepcopy(base_model), tok, tmp_path,
                   gating=GatingConfig(negative_weight=weight), max_completion_length=12)
    rows = [{"prompt": p} for p in tiny_dataset(1)["prompt"]] * 4         # one group of 4 generations
    out = trainer._generate_and_score_completions(rows)
    raw = torch.tensor(list(trainer._logs["advantages"])[-4:])                # TRL's own, before scaling
    assert (raw < 0).any() and (raw > 0).any(), "length_reward spreads the group"
    torch.testing.assert_close(out["advantages"], torch.where(raw < 0, raw * weight, raw))


def test_negative_weight_is_validated():
    with pytest.raises(ValueError, match="gating.negative_weight"):
        GatingConfig(negative_weight=1.5)
