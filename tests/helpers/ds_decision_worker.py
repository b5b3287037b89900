"""One rank of the 2-process dynamic-sampling decision test (tests/test_dynamic_sampling.py): each rank holds
its half of a crafted batch, gathers rewards and pass flags over gloo, plans the batch and writes the plan."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from pipelines import dynamic_sampling as ds

G = 4
# Global groups over two rounds, 2 groups per rank per round (rank 0: groups 0-1, rank 1: groups 2-3).
# round 0: [mixed, all-pass | all-fail, all-fail]; round 1: [mixed, mixed | all-pass, mixed]
GROUPS = [["mix", "pass", "fail", "fail"], ["mix", "mix", "pass", "mix"]]


def group_values(kind: str) -> list[float]:
    return {"mix": [1.0, 0.0, 1.0, 0.0], "pass": [1.0] * G, "fail": [0.0] * G}[kind]


def main(rank: int, world: int, port: int, out: Path) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    rounds = []
    for kinds in GROUPS:
        mine = kinds[rank * 2:(rank + 1) * 2]
        local = torch.tensor([v for k in mine for v in group_values(k)])
        values = ds.gather_flags(local)                       # the same gather TRL does for rewards
        passed = ds.gather_flags(local.long())
        rounds.append(ds.classify_round(values, passed, G, "pass"))
        if ds.ranks_full(rounds, world, 2):
            break
    plan = ds.plan_batch(rounds, world, 2)
    out.write_text(json.dumps({"picks": plan.picks, "metrics": plan.metrics()}))
    dist.destroy_process_group()


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4]))
