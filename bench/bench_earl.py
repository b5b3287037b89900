"""EARL overhead: step time of EARLGRPOTrainer vs plain TRL GRPOTrainer (same model, data, batch, seed),
and peak memory of the chunked entropy vs a full fp32 log_softmax on a 32k vocabulary."""
from __future__ import annotations

import copy
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

# ---- step time -------------------------------------------------------------------------------------------


def _tiny():
    sys.path.insert(0, str(REPO / "tests"))
    from conftest_earl import tiny_model, tiny_tokenizer
    tok = tiny_tokenizer()
    return tok, tiny_model(tok, seed=0, hidden=128, layers=4)


def _trainer(cls, model, tok, out: Path, gating=None, **overrides):
    sys.path.insert(0, str(REPO / "tests"))
    from conftest_earl import grpo_args, length_reward, tiny_dataset

    kw = {} if gating is None else {"gating": gating}
    trainer = cls(model=model, reward_funcs=[length_reward], args=grpo_args(out, **overrides),
                  train_dataset=tiny_dataset(8), processing_class=tok, **kw)
    trainer.current_gradient_accumulation_steps = 1
    trainer.model.train()
    return trainer


def _step_times(cls, model, tok, out: Path, gating=None, n_prompts: int = 4, num_generations: int = 4,
                max_completion_length: int = 48, sync=None, **overrides):
    """One GRPO training step minus the optimizer update (identical code for both): generate, reward,
    advantages, loss forward + backward. Seeded per call so both trainers sample identical completions.
    ``sync`` (e.g. ``torch.cuda.synchronize``) runs before each clock read so queued kernels are counted."""
    import torch
    sys.path.insert(0, str(REPO / "tests"))
    from conftest_earl import PROMPTS

    sync = sync or (lambda: None)
    trainer = _trainer(cls, model, tok, out, gating, per_device_train_batch_size=n_prompts * num_generations,
                       num_generations=num_generations, max_completion_length=max_completion_length, **overrides)
    rows = [{"prompt": PROMPTS[i % len(PROMPTS)]} for i in range(n_prompts) for _ in range(num_generations)]

    def once(seed: int) -> float:
        trainer.model.zero_grad()
        torch.manual_seed(seed)
        sync()
        t = time.perf_counter()
        trainer.training_step(trainer.model, rows, None)
        sync()
        return time.perf_counter() - t
    return once


def _loss_times(cls, model, tok, out: Path, gating=None, shape: tuple[int, int, int] = (32, 24, 96),
                device: str = "cpu", sync=None, **overrides):
    """forward + backward of `_compute_loss` on one fixed batch of ``shape`` = (sequences, prompt tokens,
    completion tokens), no generation: the gate's direct cost."""
    import torch

    sync = sync or (lambda: None)
    trainer = _trainer(cls, model, tok, out, gating, **overrides)
    g = torch.Generator().manual_seed(0)
    b, p, c = shape
    batch = {"prompt_ids": torch.randint(2, len(tok), (b, p), generator=g),
             "prompt_mask": torch.ones(b, p, dtype=torch.long),
             "completion_ids": torch.randint(2, len(tok), (b, c), generator=g),
             "completion_mask": torch.ones(b, c, dtype=torch.long),
             "advantages": torch.randn(b, generator=g)}
    batch["num_items_in_batch"] = batch["completion_mask"].sum()
    batch = {k: v.to(device) for k, v in batch.items()}

    def once(seed: int = 0) -> float:
        trainer.model.zero_grad()
        sync()
        t = time.perf_counter()
        trainer._compute_loss(trainer.model, dict(batch)).backward()
        sync()
        return time.perf_counter() - t
    once.trainer = trainer
    return once


def _time_earl_hooks(trainer) -> list[float]:
    """Wrap the two EARL additions to the loss (gate hook, metrics) to time them directly."""
    spent: list[float] = []

    def timed(fn):
        def inner(*a, **k):
            t = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                spent.append(time.perf_counter() - t)
        return inner
    trainer.get_high_entropy_mask = timed(trainer.get_high_entropy_mask)
    trainer._log_gate = timed(trainer._log_gate)
    return spent


def _interleaved(base, earl, reps: int, warmup: bool = True) -> tuple[float, float, float]:
    """Median seconds of each and the median of per-pair ratios, alternating which runs first so load
    drift on a shared machine hits both alike."""
    if warmup:
        base(0), earl(0)
    a, e = [], []
    for i in range(reps):
        if i % 2:
            e.append(earl(i + 1)); a.append(base(i + 1))
        else:
            a.append(base(i + 1)); e.append(earl(i + 1))
    return statistics.median(a), statistics.median(e), statistics.median(y / x for x, y in zip(a, e))


def step_time_rows(quick: bool) -> list[tuple[str, float, float]]:
    from trl import GRPOTrainer

    from pipelines.earl_trainer import EARLGRPOTrainer
    from pipelines.gating import GatingConfig

    tok, model = _tiny()
    reps = 5 if quick else 11
    rows = []
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        gate = GatingConfig(granularity="batch", top_ratio=0.2)
        base = _step_times(GRPOTrainer, copy.deepcopy(model), tok, d / "s1")
        earl = _step_times(EARLGRPOTrainer, copy.deepcopy(model), tok, d / "s2", gate)
        rows.append(("GRPO step: generate + reward + loss fwd/bwd (16 × ≤48 tokens), gate `batch` ρ 0.2",
                     *_interleaved(base, earl, reps)))
        base = _loss_times(GRPOTrainer, copy.deepcopy(model), tok, d / "l1")
        for name in ("batch", "response"):
            earl = _loss_times(EARLGRPOTrainer, copy.deepcopy(model), tok, d / f"l-{name}",
                               GatingConfig(granularity=name, top_ratio=0.2))
            spent = _time_earl_hooks(earl.trainer)
            t_base, t_earl, ratio = _interleaved(base, earl, reps)
            rows.append((f"loss fwd/bwd only (32 × 96 tokens), gate `{name}` ρ 0.2", t_base, t_earl, ratio))
            per_call = statistics.median(spent[i] + spent[i + 1] for i in range(0, len(spent) - 1, 2))
            rows.append((f"… EARL's own work alone (gate + metrics, timed directly), gate `{name}`", t_base,
                         t_base + per_call, (t_base + per_call) / t_base))
    return rows


# ---- entropy memory ---------------------------------------------------------------------------------------

_CHILD = r"""
import json, resource, sys, time, torch
torch.set_num_threads(1)
from pipelines.entropy import chunked_entropy, full_softmax_entropy
n, v, mode, chunk = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
torch.manual_seed(0)
logits = torch.empty(n, v, dtype=torch.bfloat16)
for i in range(0, n, 64):                      # fill in slices: no full fp32 temporary before measuring
    logits[i:i + 64] = torch.randn(min(64, n - i), v) * 3
def rss_kb():
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * resource.getpagesize() // 1024
try:                                           # reset VmHWM to the current RSS (Linux >= 4.0)
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")
except OSError:
    pass
before = rss_kb()
t = time.perf_counter()
with torch.no_grad():
    h = chunked_entropy(logits, 1.0, chunk) if mode == "chunked" else full_softmax_entropy(logits, 1.0)
dt = time.perf_counter() - t
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent across fork + exec
peak = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:"))
print(json.dumps({"extra_mb": (peak - before) / 1024, "s": dt, "mean": float(h.mean())}))
"""


def _measure(n: int, v: int, mode: str, chunk: int) -> dict:
    out = subprocess.run([sys.executable, "-c", _CHILD, str(n), str(v), mode, str(chunk)], cwd=REPO,
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def memory_rows(quick: bool) -> list[tuple[str, dict]]:
    n, v = (1024, 32000) if quick else (2048, 32000)
    rows = [("full fp32 log_softmax (baseline)", _measure(n, v, "full", 0))]
    for chunk in (256, 1024):
        rows.append((f"chunked, {chunk} tokens per chunk", _measure(n, v, "chunked", chunk)))
    return rows, n, v


def run(quick: bool = False) -> str:
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)              # shared 2-core machine: one thread keeps the A/B timing stable
    try:
        steps = step_time_rows(quick)
    finally:
        torch.set_num_threads(threads)
    mem, n, v = memory_rows(quick)
    lines = ["## EARL entropy gate: step time and entropy memory", "",
             "| measurement | TRL GRPO (s) | EARL (s) | EARL / TRL (median of paired ratios) |", "|---|---|---|---|"]
    for name, base, earl, ratio in steps:
        lines.append(f"| {name} | {base:.4f} | {earl:.4f} | {ratio:.3f} |")
    lines += ["", f"Entropy of {n} tokens × {v} vocab, bf16 logits ({n * v * 2 / 2**20:.0f} MiB), one thread:", "",
              "| entropy path | extra peak RSS (MiB) | time (s) | memory vs full |", "|---|---|---|---|"]
    base_mb = mem[0][1]["extra_mb"]
    for name, r in mem:
        lines.append(f"| {name} | {r['extra_mb']:.0f} | {r['s']:.3f} | {r['extra_mb'] / base_mb:.2f} |")
    lines += ["", ("Measured in one process, one torch thread: median wall time of `training_step` (optimizer "
              "update excluded, it is the same code for both) and of `_compute_loss` forward + backward on a "
              "fixed batch, tiny Llama (hidden 128, 4 layers), TRL and EARL calls alternated, each call seeded "
              "alike so both sample identical completions; the ratio is the median of per-pair ratios. The "
              "'own work' rows add the directly timed gate + metrics time to TRL's loss time (robust to load "
              "from other processes, which the paired timings are not). Goal EARL / TRL ≤ 1.05. Memory: peak RSS (VmHWM "
              "after reset) minus RSS before the call, each variant in a fresh process.")]
    return "\n".join(lines)


if __name__ == "__main__":
    print(run(quick="--quick" in sys.argv))
