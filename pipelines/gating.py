"""Entropy gating of the policy-gradient term (EARL): which completion tokens receive a policy gradient.

Only "forking" tokens -- those where the policy is uncertain -- carry most of the learning signal in
RLVR; gating the others out keeps the copy-like tokens (port lists, `endmodule`) from being pushed
around by sequence-level advantages. This module is pure torch (no trainer) so the gate can be tested
on crafted batches and reused outside TRL.

Selection rules (``valid`` = completion tokens that count, i.e. ``mask == 1``):

* ``batch``: let N be the number of valid tokens over *all ranks* and k = ceil(ρ·N). The threshold t is
  the k-th largest valid entropy over all ranks; a token is kept when its entropy >= t.
* ``response``: the same rule within each response (k_i = ceil(ρ·n_i) of its n_i valid tokens).
* ``threshold``: a token is kept when its entropy >= τ (nats).
* ``none``: every valid token is kept.

Ties: every token whose entropy equals the threshold is kept, so with tied entropies the kept
fraction can exceed ρ. This makes the gate a function of the *multiset* of entropies only --
independent of token order, padding and how the batch is split over ranks -- which is what lets two
processes holding half a batch each select exactly the tokens one process selects on the whole batch.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, get_args

import torch
import torch.distributed as dist

Granularity = Literal["batch", "response", "threshold", "none"]
Normalize = Literal["selected", "all"]
KlScope = Literal["all", "gated"]
GRANULARITIES: tuple[str, ...] = get_args(Granularity)
NORMALIZE: tuple[str, ...] = get_args(Normalize)
KL_SCOPES: tuple[str, ...] = get_args(KlScope)


@dataclass
class GatingConfig:
    """How the EARL trainer gates the policy gradient by token entropy.

    ``normalize="selected"`` (default) divides the gated loss by the number of *kept* tokens, so the step
    size per kept token matches ungated GRPO; ``"all"`` divides by all tokens like TRL's
    ``top_entropy_quantile``, which shrinks the effective step by about ρ.

    ``negative_weight`` < 1 scales the advantages of below-group-mean samples: pushing down every token of
    a failed sample also pushes down the tokens it shares with passing ones (the copied port list), which a
    small policy turns into copy errors; at 0 only passing samples pull (sharpening, like rejection sampling).
    """
    granularity: Granularity = "batch"
    top_ratio: float = 0.2              # ρ: fraction of tokens kept (batch, response)
    threshold: float | None = None      # τ in nats (threshold)
    normalize: Normalize = "selected"
    kl_scope: KlScope = "all"           # tokens the KL (beta > 0) term applies to
    negative_weight: float = 1.0        # scale of negative advantages (1 = GRPO; 0 = learn from passing samples only)
    log_top_tokens: int = 20            # how many most-gated token strings to report per logging step

    def __post_init__(self) -> None:
        if self.granularity not in GRANULARITIES:
            raise ValueError(f"gating.granularity: expected one of {GRANULARITIES}, got {self.granularity!r}")
        if self.normalize not in NORMALIZE:
            raise ValueError(f"gating.normalize: expected one of {NORMALIZE}, got {self.normalize!r}")
        if self.kl_scope not in KL_SCOPES:
            raise ValueError(f"gating.kl_scope: expected one of {KL_SCOPES}, got {self.kl_scope!r}")
        if not 0.0 < float(self.top_ratio) <= 1.0:
            raise ValueError(f"gating.top_ratio: must be in (0, 1], got {self.top_ratio!r}")
        bad_tau = self.threshold is None or not math.isfinite(float(self.threshold)) or self.threshold < 0
        if self.granularity == "threshold" and bad_tau:
            raise ValueError("gating.threshold: granularity 'threshold' needs a finite threshold >= 0 "
                             f"(nats), got {self.threshold!r}")
        if not 0.0 <= float(self.negative_weight) <= 1.0:
            raise ValueError(f"gating.negative_weight: must be in [0, 1], got {self.negative_weight!r}")
        if int(self.log_top_tokens) < 0:
            raise ValueError(f"gating.log_top_tokens: must be >= 0, got {self.log_top_tokens!r}")

    @property
    def active(self) -> bool:
        """False when the gate keeps every token (granularity none, or ρ = 1 for quantile gates)."""
        if self.granularity == "none":
            return False
        return not (self.granularity in ("batch", "response") and self.top_ratio >= 1.0)


def _world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def gather_across_ranks(local: torch.Tensor) -> torch.Tensor:
    """Concatenate a 1-D tensor of any length from every rank (rank order); identity with one process."""
    world = _world_size()
    if world == 1:
        return local
    size = torch.tensor([local.numel()], device=local.device, dtype=torch.long)
    sizes = [torch.zeros_like(size) for _ in range(world)]
    dist.all_gather(sizes, size)
    longest = int(max(s.item() for s in sizes))
    padded = local.new_zeros(longest)
    padded[: local.numel()] = local
    parts = [torch.zeros_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded)
    return torch.cat([p[: int(s.item())] for p, s in zip(parts, sizes)])


def kth_largest(values: torch.Tensor, ratio: float) -> torch.Tensor | None:
    """The ceil(ratio·n)-th largest of ``values`` (1-D), or None when empty."""
    n = values.numel()
    if n == 0:
        return None
    k = min(n, max(1, math.ceil(ratio * n - 1e-9)))
    return torch.topk(values.float(), k, sorted=True).values[-1]


def entropy_gate(entropies: torch.Tensor, mask: torch.Tensor, config: GatingConfig) -> torch.Tensor:
    """Boolean (B, T) mask of the tokens that receive a policy gradient; padding is never selected.

    ``batch`` gathers the valid entropies of all ranks (torch.distributed, any backend), so every
    rank must call this collectively.
    """
    valid = mask.bool()
    if not config.active:
        return valid.clone()
    ent = entropies.detach().float()
    if config.granularity == "threshold":
        return (ent >= float(config.threshold)) & valid
    if config.granularity == "batch":
        t = kth_largest(gather_across_ranks(ent[valid]), config.top_ratio)
        if t is None:
            return torch.zeros_like(valid)
        return (ent >= t) & valid
    # response: per-row k-th largest (invalid entries sorted last); rows without valid tokens keep nothing
    n = valid.sum(-1)
    k = torch.ceil(n.double() * config.top_ratio - 1e-9).long().clamp(min=1)
    ranked = torch.sort(ent.masked_fill(~valid, float("-inf")), dim=-1, descending=True).values
    t = ranked.gather(-1, (k - 1).clamp(max=ent.size(-1) - 1).unsqueeze(-1))
    return (ent >= t) & valid & (n > 0).unsqueeze(-1)


def gate_scale(gate: torch.Tensor, mask: torch.Tensor, config: GatingConfig,
               per_sequence: bool) -> torch.Tensor | None:
    """The factor that turns "divide by valid tokens" into "divide by kept tokens"; None = no rescaling.

    ``normalize="all"`` (TRL's behaviour) or an inactive gate: None. ``"selected"``: valid/kept -- per
    sequence, shape (B, 1), for sequence-normalised losses (grpo, sapo, luspo); otherwise the global ratio
    over all ranks, a 0-dim tensor (bnpo, dr_grpo, dapo, cispo, vespo). A row with no kept token gets 0.
    """
    if config.normalize == "all" or not config.active:
        return None
    g, m = gate.float(), mask.float()
    if per_sequence:
        kept = g.sum(-1, keepdim=True)
        return torch.where(kept > 0, m.sum(-1, keepdim=True) / kept.clamp(min=1.0), torch.zeros_like(kept))
    totals = torch.stack([m.sum(), g.sum()])
    if _world_size() > 1:
        dist.all_reduce(totals)
    return totals[0] / totals[1] if totals[1] > 0 else totals.new_zeros(())


def gate_weights(gate: torch.Tensor, mask: torch.Tensor, config: GatingConfig, per_sequence: bool) -> torch.Tensor:
    """Float (B, T) per-token policy-loss weights: the gate times `gate_scale` (the gate alone for "all")."""
    scale = gate_scale(gate, mask, config, per_sequence)
    return gate.float() if scale is None else gate.float() * scale


def scale_advantages(advantages: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Advantages times a `gate_scale` factor, keeping their shape ((B,), (B, 1) or (B, T)).

    Every TRL policy loss is linear in a positive scaling of the advantages (their sign is all the
    clipping and masking rules read), so this equals scaling the gated per-token policy loss, while the
    KL term and the entropy bonus stay untouched."""
    if scale.dim() == 0:
        return advantages * scale
    return advantages * (scale.reshape(-1) if advantages.dim() == 1 else scale)


@dataclass
class GateStats:
    """Summary of one gate decision (sums, so ranks and steps can be added before dividing)."""
    n_valid: float
    n_kept: float
    entropy_sum: float
    kept_entropy_sum: float

    @property
    def gated_fraction(self) -> float:
        return self.n_kept / self.n_valid if self.n_valid else float("nan")

    @property
    def mean_entropy(self) -> float:
        return self.entropy_sum / self.n_valid if self.n_valid else float("nan")

    @property
    def kept_entropy(self) -> float:
        return self.kept_entropy_sum / self.n_kept if self.n_kept else float("nan")

    @property
    def dropped_entropy(self) -> float:
        n = self.n_valid - self.n_kept
        return (self.entropy_sum - self.kept_entropy_sum) / n if n else float("nan")


def gate_stats(entropies: torch.Tensor, mask: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
    """Local [n_valid, n_kept, entropy_sum, kept_entropy_sum] as a tensor (all-reduce it, then GateStats)."""
    m, g, e = mask.float(), gate.float(), entropies.detach().float()
    return torch.stack([m.sum(), g.sum(), (e * m).sum(), (e * g).sum()])
