"""The entropy gate on crafted batches: exactly the expected tokens per granularity, ties, padding,
normalisation weights, and the batch quantile across 2 real processes (gloo)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from pipelines.gating import GateStats, GatingConfig, entropy_gate, gate_stats, gate_weights, kth_largest
from tests.helpers.net import free_port

# 3 responses, padded to 5; the 0.0 entries under mask 0 are padding.
ENT = torch.tensor([[0.9, 0.1, 0.5, 0.0, 0.0],
                    [0.2, 0.8, 0.3, 0.7, 0.05],
                    [0.6, 0.4, 0.0, 0.0, 0.0]])
MASK = torch.tensor([[1, 1, 1, 0, 0],
                     [1, 1, 1, 1, 1],
                     [1, 1, 0, 0, 0]])


def as_set(gate: torch.Tensor) -> set[tuple[int, int]]:
    return {tuple(ix) for ix in gate.nonzero().tolist()}


def test_batch_keeps_top_ratio_of_all_valid_tokens():
    # 10 valid tokens, rho 0.3 -> k = 3: 0.9, 0.8, 0.7
    gate = entropy_gate(ENT, MASK, GatingConfig(granularity="batch", top_ratio=0.3))
    assert as_set(gate) == {(0, 0), (1, 1), (1, 3)}


def test_batch_ratio_rounds_up_and_never_selects_padding():
    # rho 0.25 of 10 -> k = ceil(2.5) = 3; a large padding entropy must be ignored
    ent = ENT.clone()
    ent[0, 4] = 99.0
    gate = entropy_gate(ent, MASK, GatingConfig(granularity="batch", top_ratio=0.25))
    assert as_set(gate) == {(0, 0), (1, 1), (1, 3)}


def test_response_keeps_top_ratio_within_each_response():
    # rho 0.5: row0 n=3 -> k=2 (0.9, 0.5); row1 n=5 -> k=3 (0.8, 0.7, 0.3); row2 n=2 -> k=1 (0.6)
    gate = entropy_gate(ENT, MASK, GatingConfig(granularity="response", top_ratio=0.5))
    assert as_set(gate) == {(0, 0), (0, 2), (1, 1), (1, 3), (1, 2), (2, 0)}


def test_threshold_keeps_tokens_at_or_above_tau():
    gate = entropy_gate(ENT, MASK, GatingConfig(granularity="threshold", threshold=0.5))
    assert as_set(gate) == {(0, 0), (0, 2), (1, 1), (1, 3), (2, 0)}


def test_none_keeps_every_valid_token():
    gate = entropy_gate(ENT, MASK, GatingConfig(granularity="none"))
    assert torch.equal(gate, MASK.bool())


def test_ties_at_the_threshold_are_all_kept():
    ent = torch.tensor([[1.0, 0.5, 0.5, 0.5, 0.1]])
    mask = torch.ones_like(ent)
    # k = ceil(0.4 * 5) = 2 -> threshold 0.5; all three 0.5s tie and are kept
    gate = entropy_gate(ent, mask, GatingConfig(granularity="batch", top_ratio=0.4))
    assert gate.tolist() == [[True, True, True, True, False]]


def test_gate_is_independent_of_token_order():
    torch.manual_seed(0)
    ent = torch.rand(4, 16)
    mask = torch.ones(4, 16)
    perm = torch.randperm(64)
    cfg = GatingConfig(granularity="batch", top_ratio=0.2)
    a = entropy_gate(ent, mask, cfg).flatten()[perm]
    b = entropy_gate(ent.flatten()[perm].view(4, 16), mask, cfg).flatten()
    assert torch.equal(a, b) and int(a.sum()) == 13   # ceil(0.2 * 64)


def test_empty_batch_selects_nothing():
    gate = entropy_gate(ENT, torch.zeros_like(MASK), GatingConfig(granularity="batch"))
    assert not gate.any()
    assert kth_largest(torch.tensor([]), 0.2) is None


def test_weights_all_is_the_gate_and_selected_rescales_per_sequence():
    cfg = GatingConfig(granularity="response", top_ratio=0.5, normalize="selected")
    gate = entropy_gate(ENT, MASK, cfg)
    w = gate_weights(gate, MASK, cfg, per_sequence=True)
    # row sums of weights equal the valid counts: sum(loss*w)/n_valid == sum over kept / n_kept
    assert torch.allclose(w.sum(-1), MASK.sum(-1).float())
    assert torch.allclose(w[0], torch.tensor([1.5, 0, 1.5, 0, 0]))
    w_all = gate_weights(gate, MASK, GatingConfig(granularity="response", top_ratio=0.5, normalize="all"), True)
    assert torch.equal(w_all, gate.float())


def test_weights_selected_global_ratio_for_token_level_losses():
    cfg = GatingConfig(granularity="batch", top_ratio=0.3)
    gate = entropy_gate(ENT, MASK, cfg)
    w = gate_weights(gate, MASK, cfg, per_sequence=False)
    assert torch.allclose(w.sum(), MASK.sum().float())       # 3 kept, each weighted 10/3


def test_gate_stats_split_kept_and_dropped():
    gate = entropy_gate(ENT, MASK, GatingConfig(granularity="threshold", threshold=0.5))
    s = GateStats(*gate_stats(ENT, MASK, gate).tolist())
    assert s.n_valid == 10 and s.n_kept == 5
    assert s.kept_entropy == pytest.approx((0.9 + 0.5 + 0.8 + 0.7 + 0.6) / 5)
    assert s.dropped_entropy == pytest.approx((0.1 + 0.2 + 0.3 + 0.05 + 0.4) / 5)


@pytest.mark.parametrize("bad, field", [
    ({"granularity": "token"}, "gating.granularity"),
    ({"top_ratio": 0.0}, "gating.top_ratio"),
    ({"top_ratio": 1.5}, "gating.top_ratio"),
    ({"granularity": "threshold"}, "gating.threshold"),
    ({"normalize": "mean"}, "gating.normalize"),
    ({"kl_scope": "some"}, "gating.kl_scope"),
])
def test_bad_config_names_the_field(bad, field):
    with pytest.raises(ValueError, match=field):
        GatingConfig(**bad)


# ---- 2 processes --------------------------------------------------------------------------------------


RATIOS = (0.2, 0.37)


def _worker(rank: int, world: int, port: int, out_dir: str, ent, mask) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        half = ent.size(0) // 2
        rows = slice(rank * half, (rank + 1) * half)
        result = {"world": dist.get_world_size()}
        for ratio in RATIOS:
            cfg = GatingConfig(granularity="batch", top_ratio=ratio)
            gate = entropy_gate(ent[rows], mask[rows], cfg)
            result[ratio] = (gate, gate_weights(gate, mask[rows], cfg, per_sequence=False))
        torch.save(result, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_batch_gate_across_two_processes_matches_one_process(tmp_path):
    torch.manual_seed(1)
    ent = torch.rand(8, 12)
    ent[ent < 0.1] = 0.5                      # some exact ties
    mask = (torch.rand(8, 12) > 0.25).long()
    mask[0:4, 10:] = 0                        # rank 0 holds fewer valid tokens than rank 1: uneven gather
    mp.spawn(_worker, args=(2, free_port(), str(tmp_path), ent, mask), nprocs=2, join=True)
    parts = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    assert [p["world"] for p in parts] == [2, 2]
    for ratio in RATIOS:
        cfg = GatingConfig(granularity="batch", top_ratio=ratio)
        expected = entropy_gate(ent, mask, cfg)
        assert torch.equal(torch.cat([p[ratio][0] for p in parts]), expected), ratio
        assert torch.allclose(torch.cat([p[ratio][1] for p in parts]),
                              gate_weights(expected, mask, cfg, per_sequence=False))
        # not trivial: each half on its own would choose differently
        local = torch.cat([entropy_gate(ent[:4], mask[:4], cfg), entropy_gate(ent[4:], mask[4:], cfg)])
        assert not torch.equal(local, expected), ratio
