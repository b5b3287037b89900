"""EARL: TRL's GRPOTrainer with the policy gradient gated by token entropy.

Built on TRL 1.16 through its own extension points, not a fork:

* TRL's ``_compute_loss`` already computes per-token entropy at the sampling temperature with its
  fused, chunked LM head, and multiplies the per-token policy loss by whatever
  ``get_high_entropy_mask`` returns (before the KL term and the loss-type normalisation); its entropy
  bonus (``entropy_coef > 0``) acts on the same tokens. We override that hook to return
  :func:`pipelines.gating.entropy_gate`, the boolean mask TRL documents, so every loss type, clipping
  rule, importance-sampling option and the entropy bonus stay TRL's.
* ``normalize="selected"`` divides the policy term by the kept tokens instead of all of them: the hook
  runs before TRL reads the advantages, so it scales them (:func:`pipelines.gating.scale_advantages`,
  per sequence or per batch as the loss normalises) in the loss's own copy of the inputs.
* ``kl_scope="gated"``: on dropped tokens the reference log-prob is replaced by the current (detached)
  log-prob, which makes both the k3 KL estimate and its gradient exactly zero there.
* ``negative_weight`` < 1 scales negative advantages after TRL computed them (per-group normalisation
  unchanged), so the gate and the loss see them as TRL would.
* ``granularity="none"`` leaves TRL's path untouched (the hook is not called): the loss is TRL's GRPO loss.
* Dynamic sampling (``dynamic_sampling.enabled``, off by default; :mod:`pipelines.dynamic_sampling`) overrides
  ``_generate_and_score_completions``, the one method ``_prepare_inputs`` calls to turn a generation batch
  into a scored, advantage-carrying batch: it calls TRL's version once per round (TRL's own batch first,
  then batches of fresh prompts from a seeded refill stream), drops the groups whose rewards (or pass/fail)
  are all equal and hands ``_prepare_inputs`` a batch of TRL's shape built from the informative groups.
  Buffering, ``steps_per_generation`` splitting, the sampler and the loss stay TRL's; advantages are TRL's,
  computed per round. ``_calculate_rewards`` (already overridden for stage logging) keeps the gathered
  rewards and pass flags the decision needs; ``_save_checkpoint`` / ``_load_optimizer_and_scheduler``
  carry the refill cursor through a checkpoint, as TRL does for its adaptive entropy coefficient.
* Reward overlap (``reward_overlap``, off by default; :mod:`pipelines.reward_overlap`): ``_generate`` starts the
  rewards in a worker thread as soon as the completions exist, so they run while TRL computes its old and
  reference log-probs; ``_calculate_rewards`` collects them (TRL's call, gathering and NaN handling unchanged).

Logged each step under ``earl/``: mean entropy, gated fraction, mean entropy of kept and of dropped
tokens; per reward that declares ``stages`` and leaves ``last_scores`` (rewards/base.py): fraction of
completions per stage and pass rate under ``stages/<reward>/``; with dynamic sampling, group counts and
rounds per generation batch under ``dynamic_sampling/``; seconds per generation batch spent generating,
computing rewards and waiting for them under ``timing/``; every logging step the most-gated token strings go to
the log and to ``<output_dir>/earl_gated_tokens.jsonl``.
"""
from __future__ import annotations

import json
import logging
import os
import time
from collections import Counter, defaultdict
from collections.abc import Sequence, Sized
from dataclasses import asdict
from pathlib import Path
from typing import Any, cast

import torch
from trl.trainer.grpo_config import GRPOConfig  # what `from trl import ...` lazily resolves to
from trl.trainer.grpo_trainer import GRPOTrainer

from pipelines import dynamic_sampling as ds
from pipelines import reward_overlap as ro
from pipelines.entropy import token_string
from pipelines.gating import GateStats, GatingConfig, entropy_gate, gate_scale, gate_stats, scale_advantages
from rewards.base import scores_of, stages_of

log = logging.getLogger(__name__)

PER_SEQUENCE_LOSSES = ("grpo", "sapo", "luspo")    # TRL losses normalised per sequence
DYNAMIC_SAMPLING_STATE = "earl_dynamic_sampling.json"   # in each checkpoint folder: the refill cursor


def resolve_gating(gating: GatingConfig | dict | None, args: GRPOConfig | None) -> GatingConfig:
    """One source of truth for the gate: our GatingConfig, or TRL's ``top_entropy_quantile`` mapped onto it."""
    trl_q = 1.0 if args is None else float(args.top_entropy_quantile)
    if isinstance(gating, dict):
        gating = GatingConfig(**gating)
    if gating is None:
        if trl_q < 1.0:   # TRL's own gate: batch quantile, divide by all tokens
            return GatingConfig(granularity="batch", top_ratio=trl_q, normalize="all")
        return GatingConfig(granularity="none")
    if trl_q < 1.0:
        raise ValueError(f"GRPOConfig.top_entropy_quantile={trl_q} and a GatingConfig were both given; "
                         "set the gate only through GatingConfig (gating.top_ratio)")
    return gating


class EARLGRPOTrainer(GRPOTrainer):
    """GRPOTrainer whose policy-gradient term reaches only the tokens the entropy gate keeps.

    Same arguments as ``trl.GRPOTrainer`` plus ``gating``, ``dynamic_sampling``, ``reward_weights``
    (copied into ``args.reward_weights``, e.g. the weights from ``rewards.registry.compose``) and
    ``reward_overlap`` (score while TRL's no-grad log-prob passes run; False: TRL's order).
    """

    args: GRPOConfig        # transformers' Trainer types it TrainingArguments; GRPOTrainer always holds a GRPOConfig

    def __init__(self, model: Any, reward_funcs: Any, args: GRPOConfig | None = None,
                 train_dataset: Any = None, processing_class: Any = None, *,
                 gating: GatingConfig | dict | None = None, reward_weights: Sequence[float] | None = None,
                 dynamic_sampling: ds.DynamicSamplingConfig | dict | None = None, reward_overlap: bool = False,
                 eval_dataset: Any = None, callbacks: list | None = None, **kwargs: Any):
        self.gating = resolve_gating(gating, args)
        if isinstance(dynamic_sampling, dict):
            dynamic_sampling = ds.DynamicSamplingConfig(**dynamic_sampling)
        self.dynamic_sampling = dynamic_sampling or ds.DynamicSamplingConfig()
        if reward_weights is not None:
            if args is None:
                raise ValueError("reward_weights needs an explicit GRPOConfig (args)")
            args.reward_weights = [float(w) for w in reward_weights]
        super().__init__(model=model, reward_funcs=reward_funcs, args=args, train_dataset=train_dataset,
                         eval_dataset=eval_dataset, processing_class=processing_class, callbacks=callbacks,
                         **kwargs)
        # TRL calls get_high_entropy_mask only when this is < 1; its value is otherwise unused by us.
        self.top_entropy_quantile = min(self.gating.top_ratio, 0.5) if self.gating.active else 1.0
        self._earl_inputs: dict | None = None
        self._earl_logps: torch.Tensor | None = None
        self._earl_entropies: torch.Tensor | None = None
        self._earl_gate: torch.Tensor | None = None
        self._token_seen: Counter[int] = Counter()     # token id -> completion tokens seen / kept by the gate
        self._token_kept: Counter[int] = Counter()
        self.last_top_gated_tokens: list[dict] = []
        self.dynamic_round = 0                    # generation round within the current batch (data order log)
        self.last_batch_plan: ds.BatchPlan | None = None
        self._ds_rewards: torch.Tensor | None = None     # gathered total reward per completion, last round
        self._ds_passed: torch.Tensor | None = None      # gathered 1/0/-1 pass flags, last round
        self._refill: ds.RefillStream | None = None
        if self.dynamic_sampling.enabled:
            self._check_dynamic_sampling()
            dataset = cast(Sized, self.train_dataset)       # map-style: _check_dynamic_sampling says so
            self._refill = ds.RefillStream(len(dataset), self.args.seed)
        self._prefetch: ro.RewardPrefetch | None = None
        if reward_overlap and self.environment_factories is None and not self.tools:
            self._prefetch = ro.RewardPrefetch(self.reward_funcs)
        self._round_inputs: list[dict] | None = None     # the round's rows, for the rewards' columns
        self._timing: defaultdict[str, float] = defaultdict(float)   # seconds within the current generation batch

    # ---- TRL's attributes, as this trainer relies on them -------------------------------------------------
    @property
    def _training(self) -> bool:
        """Is the policy in train mode (a training step, not an evaluation)?"""
        assert self.model is not None           # GRPOTrainer requires a model (no model_init)
        return self.model.training

    @property
    def _group_size(self) -> int:
        """num_generations (G): GRPOConfig.__post_init__ has divided the generation batch by it."""
        assert self.num_generations is not None
        return self.num_generations

    @property
    def _per_rank_samples(self) -> int:
        """Completions per rank in one generation batch (GRPOConfig.__post_init__ sets steps_per_generation)."""
        assert self.args.steps_per_generation is not None
        return self.args.per_device_train_batch_size * self.args.steps_per_generation

    def _reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """`tensor` summed over the ranks (accelerate's reduce returns the type it was given)."""
        return cast(torch.Tensor, self.accelerator.reduce(tensor, reduction="sum"))

    # ---- advantages: TRL's, negative ones optionally scaled; dynamic sampling around it ---------------
    def _generate_and_score_completions(self, inputs):
        self._timing.clear()
        if self.dynamic_sampling.enabled and self._training:
            out = self._dynamic_batch(inputs)
        else:
            out = self._score_round(inputs)
        mode = "train" if self._training else "eval"
        for name in ("generate", "reward", "reward_wait"):
            self._metrics[mode][f"timing/{name}"].append(self._timing[name])
        return out

    def _score_round(self, inputs):
        self._round_inputs = inputs
        try:
            out = super()._generate_and_score_completions(inputs)
        finally:       # a prefetch a failed round left behind is waited out by the next start, never raced
            self._round_inputs = None
        w = float(self.gating.negative_weight)
        if w != 1.0 and "advantages" in out:
            adv = out["advantages"]
            out["advantages"] = torch.where(adv < 0, adv * w, adv)
        return out

    # ---- dynamic sampling -----------------------------------------------------------------------------
    def _check_dynamic_sampling(self) -> None:
        """Fail at construction on setups whose batches dynamic sampling cannot re-assemble exactly."""
        from torch.utils.data import IterableDataset
        per_rank = self._per_rank_samples
        problems = []
        if self.train_dataset is None or isinstance(self.train_dataset, IterableDataset):
            problems.append("needs a map-style train_dataset (refill prompts are drawn by index)")
        if per_rank % self._group_size:
            problems.append(f"needs whole groups on each rank: per_device_train_batch_size x "
                            f"steps_per_generation ({per_rank}) must be a multiple of num_generations "
                            f"({self.num_generations})")
        if self.multi_objective_aggregation != "sum_then_normalize":
            problems.append("needs group baselines (multi_objective_aggregation=sum_then_normalize): with "
                            "normalize_then_sum an equal-reward group still gets non-zero advantages")
        if self.dynamic_sampling.metric == "pass" and not stages_of(self.reward_funcs[0]):
            problems.append("metric=pass needs the first reward to declare `stages` and leave `last_scores`")
        if self.environment_factories is not None or self.tools:
            problems.append("does not support environments or tools")
        if problems:
            raise ValueError("dynamic_sampling: " + "; ".join(problems))

    def _refill_rows(self) -> list[dict]:
        """This rank's rows for one refill round: fresh prompts, each repeated num_generations times."""
        assert self._refill is not None and self.train_dataset is not None     # dynamic sampling is on
        per_rank, g = self._per_rank_samples, self._group_size
        prompts = self._refill.take(per_rank * self.accelerator.num_processes // g)
        rows = ds.local_rows(prompts, g, self.accelerator.process_index, per_rank)
        return [self.train_dataset[i] for i in rows]

    def _dynamic_batch(self, inputs: list[dict]) -> dict:
        """Rounds of TRL's generate-and-score until every rank holds its share of informative groups."""
        cfg, g = self.dynamic_sampling, self._group_size
        per_rank, world = len(inputs) // g, self.accelerator.num_processes
        parts: list[dict] = []
        rounds: list[ds.RoundGroups] = []
        for r in range(int(cfg.max_rounds)):
            self.dynamic_round = r
            out = self._score_round(inputs if r == 0 else self._refill_rows())
            ds.check_keys(out)
            parts.append(out)
            assert self._ds_rewards is not None      # kept by _calculate_rewards during the round
            rounds.append(ds.classify_round(self._ds_rewards, self._ds_passed, g, cfg.metric))
            if ds.ranks_full(rounds, world, per_rank):
                break
        self.dynamic_round = 0
        plan = ds.plan_batch(rounds, world, per_rank)
        pad_token_id = cast(int, self._tokenizer.pad_token_id)    # GRPOTrainer set a pad token (EOS if none)
        batch = ds.assemble(parts, plan.picks[self.accelerator.process_index], g, pad_token_id)
        mask = batch["completion_mask"] * batch["tool_mask"] if "tool_mask" in batch else batch["completion_mask"]
        batch["num_items_in_batch"] = cast(torch.Tensor, self.accelerator.gather(mask.sum())).sum()
        self._log_batch_plan(plan)
        return batch

    def _log_batch_plan(self, plan: ds.BatchPlan) -> None:
        self.last_batch_plan = plan
        for name, value in plan.metrics().items():
            self._metrics["train"][name].append(value)
        if not plan.complete:
            log.warning("dynamic sampling: max_rounds=%d reached at step %d with %d informative groups; %d "
                        "uniform groups (zero advantage) complete the batch", plan.rounds,
                        self.state.global_step, plan.kept, plan.filled)

    def _keep_round_values(self, rewards_per_func: torch.Tensor, n_local: int) -> None:
        """The gathered values the group decision reads: total reward and pass flags per completion."""
        weights = self.reward_weights.to(rewards_per_func.device)
        total = (rewards_per_func * weights.unsqueeze(0)).nansum(dim=1)
        total[torch.isnan(rewards_per_func).all(dim=1)] = torch.nan
        self._ds_rewards = total.detach().cpu()
        self._ds_passed = None
        if not stages_of(self.reward_funcs[0]):
            return
        scores = scores_of(self.reward_funcs[0], n_local)
        flags = torch.full((n_local,), -1, dtype=torch.long)       # -1: no Score for this completion
        if scores is not None:
            flags = torch.tensor([-1 if s.passed is None else int(s.passed) for s in scores], dtype=torch.long)
        passed = ds.gather_flags(flags.to(self.accelerator.device)).cpu()
        if self.dynamic_sampling.metric == "pass" and bool((passed < 0).all()):
            raise ValueError("dynamic_sampling.metric=pass: the first reward kept no per-completion stage "
                             "records (last_scores) for this batch")
        self._ds_passed = passed

    def _save_checkpoint(self, model, trial):
        super()._save_checkpoint(model, trial)
        if self._refill is not None and self.args.should_save:
            folder = os.path.join(self._get_output_dir(trial=trial), f"checkpoint-{self.state.global_step}")
            with open(os.path.join(folder, DYNAMIC_SAMPLING_STATE), "w") as fh:
                json.dump({"refill_cursor": self._refill.cursor, "seed": self._refill.seed}, fh)

    def _load_optimizer_and_scheduler(self, checkpoint):
        super()._load_optimizer_and_scheduler(checkpoint)
        if self._refill is None or checkpoint is None:
            return
        path = os.path.join(checkpoint, DYNAMIC_SAMPLING_STATE)
        if os.path.isfile(path):
            with open(path) as fh:
                self._refill.cursor = int(json.load(fh)["refill_cursor"])
        else:
            log.warning("dynamic sampling: %s has no %s; refill prompts restart from the stream's start",
                        checkpoint, DYNAMIC_SAMPLING_STATE)

    # ---- loss: TRL's, with the gate plugged into its entropy-mask hook --------------------------------
    def _compute_loss(self, model, inputs):
        # A shallow copy: kl_scope="gated" rewrites ref logps in it, never in TRL's buffered batch.
        self._earl_inputs = dict(inputs)
        self._earl_logps = self._earl_entropies = self._earl_gate = None
        try:
            loss = super()._compute_loss(model, self._earl_inputs)
            self._log_gate(self._earl_inputs)
            return loss
        finally:
            self._earl_inputs = self._earl_logps = self._earl_entropies = self._earl_gate = None

    def _get_per_token_logps_and_entropies(self, *args, **kwargs):
        logps, entropies, aux = super()._get_per_token_logps_and_entropies(*args, **kwargs)
        if self._earl_inputs is not None and entropies is not None:
            self._earl_logps, self._earl_entropies = logps, entropies
        return logps, entropies, aux

    def get_high_entropy_mask(self, entropies: torch.Tensor, mask: torch.Tensor, threshold: float) -> torch.Tensor:
        """TRL's hook, answered with the EARL gate: a boolean (B, T) mask (TRL's threshold is ignored)."""
        gate = entropy_gate(entropies, mask, self.gating)
        self._earl_gate = gate
        inputs = self._earl_inputs
        if inputs is not None:
            if (self.gating.kl_scope == "gated" and self.beta != 0.0 and self._earl_logps is not None
                    and "ref_per_token_logps" in inputs):
                inputs["ref_per_token_logps"] = torch.where(gate, inputs["ref_per_token_logps"],
                                                            self._earl_logps.detach())
            scale = gate_scale(gate, mask, self.gating, per_sequence=self.loss_type in PER_SEQUENCE_LOSSES)
            if scale is not None:
                inputs["advantages"] = scale_advantages(inputs["advantages"], scale)
        return gate

    # ---- metrics ------------------------------------------------------------------------------------
    def _log_gate(self, inputs: dict) -> None:
        entropies = self._earl_entropies
        if entropies is None:
            return
        mask = inputs["completion_mask"]
        if "tool_mask" in inputs:
            mask = mask * inputs["tool_mask"]
        gate = self._earl_gate if self._earl_gate is not None else mask.bool()
        totals = self._reduce_sum(gate_stats(entropies, mask, gate)).tolist()
        stats = GateStats(*totals)
        mode = "train" if self._training else "eval"
        m = self._metrics[mode]
        m["earl/entropy_mean"].append(stats.mean_entropy)
        m["earl/gated_fraction"].append(stats.gated_fraction)
        m["earl/entropy_kept"].append(stats.kept_entropy)
        m["earl/entropy_dropped"].append(stats.dropped_entropy)
        if self.gating.log_top_tokens and mode == "train":
            ids = inputs["completion_ids"]
            self._token_seen.update(ids[mask.bool()].tolist())
            self._token_kept.update(ids[gate.bool()].tolist())

    # ---- rewards: started when the completions exist, collected where TRL asks ---------------------------
    def _generate(self, prompts):
        t0 = time.perf_counter()
        out = super()._generate(prompts)
        self._timing["generate"] += time.perf_counter() - t0
        extra_fields = out[5]
        if self._prefetch is not None and self._round_inputs is not None and not extra_fields:
            kwargs = {**ro.reward_columns(self._round_inputs), "trainer_state": self.state,
                      "log_extra": self._log_completion_extra, "log_metric": self._log_metric}
            self._prefetch.start(prompts, out[3], out[1], kwargs)
        return out

    def _collect_rewards(self, inputs, prompts, completions, completion_ids_list) -> torch.Tensor:
        """TRL's ``_calculate_rewards``, served from the prefetch when one was started for this batch."""
        pending = self._prefetch.claim() if self._prefetch is not None else None
        if pending is None:
            t0 = time.perf_counter()
            rewards = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
            self._timing["reward"] += time.perf_counter() - t0
            return rewards
        assert self._prefetch is not None          # `pending` came from it
        funcs = self.reward_funcs
        self.reward_funcs = self._prefetch.serving(pending)
        try:
            rewards = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        finally:
            self.reward_funcs = funcs
        # not in `finally`: a Ctrl-C while a reward runs must not wait for it (it is abandoned)
        pending.wait()
        self._timing["reward"] += sum(pending.seconds)
        return rewards

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        t0 = time.perf_counter()
        rewards = self._collect_rewards(inputs, prompts, completions, completion_ids_list)
        self._timing["reward_wait"] += time.perf_counter() - t0
        self._log_reward_stages(len(completions))
        if self.dynamic_sampling.enabled and self._training:
            self._keep_round_values(rewards, len(completions))
        return rewards

    def _log_reward_stages(self, n: int) -> None:
        """Fraction of completions per stage and pass rate, for each reward that declares its stage
        vocabulary (``stages``, in order of progress, the last one = pass) and left one `Score` per
        completion (``last_scores``, read through rewards.base.scores_of)."""
        mode = "train" if self._training else "eval"
        for func, name in zip(self.reward_funcs, self.reward_func_names, strict=True):
            stages = stages_of(func)
            if not stages:                                 # the same on every rank: no collective skipped
                continue
            counts = torch.zeros(len(stages) + 1)          # last slot: unknown stage names
            for s in scores_of(func, n) or []:             # stale or failed calls count nothing
                counts[stages.index(s.stage) if s.stage in stages else len(stages)] += 1
            counts = self._reduce_sum(counts.to(self.accelerator.device)).cpu()
            total = float(counts.sum())
            if total == 0:
                continue
            for stage, c in zip(stages, counts[:-1].tolist(), strict=True):
                self._metrics[mode][f"stages/{name}/{stage}"].append(c / total)
            self._metrics[mode][f"stages/{name}/pass_rate"].append(float(counts[len(stages) - 1]) / total)

    def top_gated_tokens(self, n: int | None = None) -> list[dict]:
        """Most often kept token strings since the last logging step: token, kept, seen, kept_rate."""
        n = self.gating.log_top_tokens if n is None else n
        rows = []
        for tok, kept in self._token_kept.most_common(n):
            seen = self._token_seen[tok]
            rows.append({"token": token_string(self.processing_class, tok), "id": int(tok), "kept": int(kept),
                         "seen": int(seen), "kept_rate": kept / seen if seen else float("nan")})
        return rows

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if self._training and self._token_kept:
            self.last_top_gated_tokens = self.top_gated_tokens()
            self._token_seen.clear()
            self._token_kept.clear()
            if self.accelerator.is_main_process:
                self._write_top_tokens()
        super().log(logs, start_time)

    def _write_top_tokens(self) -> None:
        rows = self.last_top_gated_tokens
        log.info("step %d most-gated tokens: %s", self.state.global_step,
                 ", ".join(f"{r['token']!r}×{r['kept']}" for r in rows[:10]))
        if self.args.output_dir:
            path = Path(self.args.output_dir) / "earl_gated_tokens.jsonl"
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps({"step": self.state.global_step, "gating": asdict(self.gating),
                                     "top": rows}, ensure_ascii=False) + "\n")
