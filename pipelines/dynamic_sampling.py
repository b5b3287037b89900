"""Dynamic sampling (DAPO's ``filter_groups``): drop GRPO groups whose values are all equal, refill the batch.

A group whose G completions all got the same reward has zero advantage everywhere: it costs a generation and
a backward pass and moves nothing (TRL logs their share as ``frac_reward_zero_std``). With dynamic sampling
the trainer keeps generating groups for fresh prompts until the batch holds as many informative groups as a
plain generation batch, or ``max_rounds`` generation rounds were spent.

This module is the pure part (no trainer): which groups are uniform, and which groups of which round each
rank trains on. Every rank calls these on the *gathered* (all-rank) values, so every rank computes the same
plan; the trainer (pipelines/earl_trainer.py) does the generating and the tensor assembly.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from pipelines.gating import gather_across_ranks

METRICS = ("reward", "pass")


@dataclass
class DynamicSamplingConfig:
    """``stages.rl.dynamic_sampling``. Off by default: the batch is then TRL's, group for group.

    ``metric="reward"`` drops groups whose total (weighted) reward is equal across the group; ``"pass"`` drops
    groups whose completions all passed or all failed (pass = the first reward's last stage, from its
    ``last_scores``), which also drops groups that differ only in partial credit among failures.
    ``max_rounds`` bounds the generation cost per batch (round 1 is the normal batch); when it is reached the
    batch is completed with uniform groups (zero advantage, as TRL would have trained on them) and a warning
    is logged.
    """
    enabled: bool = False
    metric: Literal["reward", "pass"] = "reward"
    max_rounds: int = 4

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise ValueError(f"dynamic_sampling.metric: expected one of {METRICS}, got {self.metric!r}")
        if isinstance(self.max_rounds, bool) or int(self.max_rounds) < 1:
            raise ValueError(f"dynamic_sampling.max_rounds: must be >= 1, got {self.max_rounds!r}")


@dataclass
class RoundGroups:
    """One generation round, over all ranks (global group order = rank order, as TRL gathers rewards)."""
    informative: torch.Tensor        # (n_groups,) bool: values differ inside the group
    all_pass: torch.Tensor           # (n_groups,) bool: uniform and every completion passed (needs pass flags)
    all_fail: torch.Tensor           # (n_groups,) bool: uniform and every completion failed (needs pass flags)

    @property
    def n(self) -> int:
        return int(self.informative.numel())


def uniform_groups(values: torch.Tensor, num_generations: int, atol: float = 1e-6) -> torch.Tensor:
    """(n_groups,) bool: True where a group's values are all equal. NaN (unscored; TRL gives it advantage 0)
    is ignored; a group with fewer than two scored values is uniform (no baseline to differ from)."""
    v = values.detach().float().reshape(-1, num_generations)
    finite = torch.isfinite(v)
    hi = torch.where(finite, v, torch.full_like(v, -torch.inf)).amax(dim=1)
    lo = torch.where(finite, v, torch.full_like(v, torch.inf)).amin(dim=1)
    return (finite.sum(dim=1) < 2) | ((hi - lo) <= atol)


def classify_round(values: torch.Tensor, passed: torch.Tensor | None, num_generations: int,
                   metric: str = "reward") -> RoundGroups:
    """Which groups of a round are informative. ``values``: the total reward per completion (all ranks);
    ``passed``: 1 pass / 0 fail / -1 unknown per completion, or None when the reward reports no stages."""
    if metric == "pass":
        if passed is None:
            raise ValueError("dynamic_sampling.metric=pass: the first reward reported no pass/fail stages")
        uniform = uniform_groups(torch.where(passed >= 0, passed.float(), torch.nan), num_generations)
    else:
        uniform = uniform_groups(values, num_generations)
    n = uniform.numel()
    if passed is None:
        none = torch.zeros(n, dtype=torch.bool)
        return RoundGroups(~uniform.cpu(), none, none.clone())
    p = passed.detach().reshape(-1, num_generations).cpu()
    known = p >= 0
    all_pass = uniform.cpu() & known.any(1) & ((p == 1) | ~known).all(1)
    all_fail = uniform.cpu() & known.any(1) & ((p == 0) | ~known).all(1)
    return RoundGroups(~uniform.cpu(), all_pass, all_fail)


def gather_flags(local: torch.Tensor) -> torch.Tensor:
    """This rank's per-completion pass flags concatenated with every other rank's, in rank order (the
    layout TRL gathers rewards in); identity with one process."""
    return gather_across_ranks(local)


@dataclass
class BatchPlan:
    """Which (round, local group) each rank trains on, in round then group order, and the counts logged."""
    picks: list[list[tuple[int, int]]]          # per rank: (round, group index within that rank's slice)
    generated: int = 0
    kept: int = 0                               # informative groups in the batch
    filled: int = 0                             # uniform groups used to complete a batch (max_rounds reached)
    surplus: int = 0                            # informative groups left out (their rank was already full)
    dropped: int = 0                            # uniform groups generated (all rounds)
    dropped_all_pass: int = 0
    dropped_all_fail: int = 0
    rounds: int = 0
    complete: bool = True                       # every rank got its informative groups without filling

    def metrics(self) -> dict[str, float]:
        """What the trainer logs per generation batch (group counts are over all ranks)."""
        out = {f"dynamic_sampling/groups_{n}": float(getattr(self, n))
               for n in ("generated", "kept", "filled", "surplus", "dropped")}
        out["dynamic_sampling/dropped_all_pass"] = float(self.dropped_all_pass)
        out["dynamic_sampling/dropped_all_fail"] = float(self.dropped_all_fail)
        out["dynamic_sampling/rounds"] = float(self.rounds)
        out["dynamic_sampling/max_rounds_reached"] = float(not self.complete)
        return out


def _rank_slice(rank: int, per_rank: int) -> range:
    return range(rank * per_rank, (rank + 1) * per_rank)


def ranks_full(rounds: list[RoundGroups], world: int, per_rank: int) -> bool:
    """True when every rank holds at least ``per_rank`` informative groups over the rounds so far."""
    for rank in range(world):
        have = sum(int(r.informative[list(_rank_slice(rank, per_rank))].sum()) for r in rounds)
        if have < per_rank:
            return False
    return True


def plan_batch(rounds: list[RoundGroups], world: int, per_rank: int) -> BatchPlan:
    """Each rank trains on the first ``per_rank`` informative groups of its own slices, round by round; a rank
    short of them after the last round is completed with its uniform groups, earliest round first (round 0
    is TRL's own batch, so ``max_rounds=1`` trains on exactly TRL's batch). Groups never move between ranks:
    the batch keeps TRL's per-rank shape, and the plan is a function of the gathered values only."""
    picks: list[list[tuple[int, int]]] = []
    kept = filled = 0
    for rank in range(world):
        idx = _rank_slice(rank, per_rank)
        good = [(r, i) for r, rg in enumerate(rounds) for i, g in enumerate(idx) if bool(rg.informative[g])]
        chosen = good[:per_rank]
        kept += len(chosen)
        if len(chosen) < per_rank:
            bad = [(r, i) for r, rg in enumerate(rounds) for i, g in enumerate(idx) if not bool(rg.informative[g])]
            fill = bad[:per_rank - len(chosen)]
            filled += len(fill)
            chosen = chosen + fill
        picks.append(sorted(chosen))
    generated = sum(r.n for r in rounds)
    informative = sum(int(r.informative.sum()) for r in rounds)
    return BatchPlan(
        picks=picks, generated=generated, kept=kept, filled=filled, surplus=informative - kept,
        dropped=generated - informative,
        dropped_all_pass=sum(int(r.all_pass.sum()) for r in rounds),
        dropped_all_fail=sum(int(r.all_fail.sum()) for r in rounds),
        rounds=len(rounds), complete=filled == 0)


class RefillStream:
    """Fresh prompts for refill rounds: a seeded permutation of the dataset per pass, read in order by a
    cursor that only moves forward. Identical on every rank (each rank takes its slice), a function of the
    seed and the cursor only, so a resumed run continues it from the cursor saved in the checkpoint.

    Why not the Trainer's own dataloader iterator: Transformers counts an epoch as len(dataloader) //
    gradient_accumulation_steps optimizer steps and, on resume, skips global_step x accumulation batches;
    batches pulled out of that iterator for refills would end epochs early (max_steps then never reached)
    and make the resume skip land on the wrong batch. The normal batch of every step stays TRL's.
    """

    def __init__(self, size: int, seed: int, cursor: int = 0):
        if size < 1:
            raise ValueError("dynamic sampling needs a non-empty training dataset")
        self.size, self.seed, self.cursor = int(size), int(seed), int(cursor)
        self._perm: tuple[int, torch.Tensor] | None = None

    def _permutation(self, epoch: int) -> torch.Tensor:
        if self._perm is None or self._perm[0] != epoch:
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + 7_919 + epoch)
            self._perm = (epoch, torch.randperm(self.size, generator=gen))
        return self._perm[1]

    def take(self, n: int) -> list[int]:
        """The next ``n`` dataset indices (global, same on every rank)."""
        out = []
        for j in range(self.cursor, self.cursor + n):
            out.append(int(self._permutation(j // self.size)[j % self.size]))
        self.cursor += n
        return out


def local_rows(prompt_indices: list[int], num_generations: int, rank: int, per_rank_samples: int) -> list[int]:
    """This rank's dataset rows for a round: each prompt repeated G times (TRL's RepeatSampler layout), the
    global list split into equal consecutive slices in rank order."""
    flat = [i for i in prompt_indices for _ in range(num_generations)]
    return flat[rank * per_rank_samples:(rank + 1) * per_rank_samples]


# Keys of TRL's generation output this module knows how to concatenate: (pad side, pad value or None for
# the tokenizer's pad id). Anything else (images, tiles) is refused rather than silently mis-assembled.
LEFT_PADDED = {"prompt_ids": None, "prompt_mask": 0}
RIGHT_PADDED = {"completion_ids": None, "completion_mask": 0, "old_per_token_logps": 0.0,
                "sampling_per_token_logps": 0.0, "ref_per_token_logps": 0.0, "importance_sampling_ratio": 0.0,
                "tool_mask": 1}
PER_SAMPLE = ("advantages",)
RECOMPUTED = ("num_items_in_batch",)


def check_keys(batch: dict) -> None:
    """Refuse generation outputs dynamic sampling cannot re-assemble (multimodal inputs)."""
    known = set(LEFT_PADDED) | set(RIGHT_PADDED) | set(PER_SAMPLE) | set(RECOMPUTED)
    extra = sorted(k for k in batch if k not in known)
    if extra:
        raise ValueError(f"dynamic_sampling: cannot assemble generation outputs with {extra} "
                         "(multimodal inputs are not supported); disable stages.rl.dynamic_sampling")


def _pad_to(t: torch.Tensor, width: int, value: float, left: bool) -> torch.Tensor:
    if t.size(1) == width:
        return t
    pad = t.new_full((t.size(0), width - t.size(1), *t.shape[2:]), value)
    return torch.cat([pad, t] if left else [t, pad], dim=1)


def assemble(parts: list[dict], picks: list[tuple[int, int]], num_generations: int,
             pad_token_id: int) -> dict:
    """One rank's batch: the picked groups' rows of each round's output, concatenated in pick order, with
    prompts re-padded on the left and completions on the right to the longest picked row. ``num_items_in_batch``
    is left out: it is a count over all ranks, recomputed by the caller."""
    check_keys(parts[0])
    g = num_generations
    out: dict = {}
    for key in parts[0]:
        if key in RECOMPUTED:
            continue
        chunks = [parts[r][key][i * g:(i + 1) * g] for r, i in picks]
        if key in PER_SAMPLE:
            out[key] = torch.cat(chunks)
            continue
        left = key in LEFT_PADDED
        value = (LEFT_PADDED if left else RIGHT_PADDED)[key]
        value = pad_token_id if value is None else value
        width = max(c.size(1) for c in chunks)
        out[key] = torch.cat([_pad_to(c, width, value, left) for c in chunks])
    return out
