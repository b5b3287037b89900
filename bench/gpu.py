"""`make bench-gpu`: EARL vs TRL GRPO step time and entropy-path peak memory, on one CUDA GPU.

The CPU bench (bench/bench_earl.py) times a tiny Llama (hidden 128); this check answers the same two questions at a
real size: a randomly initialised model of Qwen2.5-0.5B's shape (hand-written ``Qwen2Config``, nothing
downloaded), bf16, 8 prompts x 8 generations x 256 new tokens, TRL and EARL steps alternated and paired. It reuses
bench_earl's trainer, step and pairing code, so both benches measure the same thing.

    python -m bench.gpu [--device cuda] [--tiny] [--steps N] [--out BENCHMARKS.md]

Built to be run once on a rented GPU with a strict budget: the device and bf16 are checked in the first
seconds, progress goes to stderr, the paired steps are capped by ``--budget-s`` (the whole run stays well under
10 minutes on an H100/H200), and an out-of-memory or other failure in one measurement is reported in its table
cell instead of ending the run. The table goes to stdout and, with ``--out``, into that file's ``gpu`` section.
It is not a ``bench_*.py`` module, so ``make bench`` (CPU) does not discover it. ``--tiny --device cpu`` runs the
same code on a toy shape (tests/test_bench_gpu.py); on CPU, peak memory comes from :class:`LiveBytes`.
"""
from __future__ import annotations

import argparse
import copy
import gc
import json
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils import _pytree as pytree
from torch.utils._python_dispatch import TorchDispatchMode

from bench.bench_earl import REPO, _interleaved, _loss_times, _step_times

T0 = time.perf_counter()
TOP_RATIO = 0.2
Cell = float | str                   # a number, or why there is none ("OOM", "failed: ...", "n/a")


@dataclass(frozen=True)
class Shape:
    """Model and batch shape of one run."""
    label: str
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    vocab: int
    prompts: int
    generations: int
    new_tokens: int


QWEN05 = Shape("Qwen2.5-0.5B shape", hidden=896, layers=24, heads=14, kv_heads=2, intermediate=4864,
               vocab=151936, prompts=8, generations=8, new_tokens=256)
# Same code path in seconds on CPU: GQA kept (kv_heads < heads), vocabulary larger than the trained BPE's
TINY = Shape("tiny Qwen2", hidden=64, layers=2, heads=4, kv_heads=2, intermediate=128, vocab=1024,
             prompts=4, generations=2, new_tokens=8)


def log(msg: str) -> None:
    """Progress on stderr, with seconds since start, so a watcher of a rented GPU sees where it is."""
    print(f"[bench.gpu {time.perf_counter() - T0:6.1f}s] {msg}", file=sys.stderr, flush=True)


# ---- set-up ---------------------------------------------------------------------------------------------


def preflight(device: str, dtype: str) -> tuple[torch.device, torch.dtype]:
    """Resolve ``--device`` / ``--dtype`` and fail in the first seconds, not minutes into a paid run."""
    name = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
    if name == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"bench.gpu: --device cuda, but torch {torch.__version__} sees no CUDA device "
                         f"(built for CUDA {torch.version.cuda}); run `make setup` on the GPU machine")
    want = {"auto": torch.bfloat16 if name == "cuda" else torch.float32,
            "bf16": torch.bfloat16, "fp32": torch.float32}[dtype]
    dev = torch.device(name)
    if dev.type == "cuda":
        if want == torch.bfloat16 and not torch.cuda.is_bf16_supported():
            raise SystemExit(f"bench.gpu: {torch.cuda.get_device_name()} does not support bf16 (use --dtype fp32)")
        (torch.ones(8, 8, device=dev, dtype=want) @ torch.ones(8, 8, device=dev, dtype=want)).sum().item()
        free, total = torch.cuda.mem_get_info()
        log(f"{torch.cuda.get_device_name()}: {free / 2**30:.0f} of {total / 2**30:.0f} GiB free")
        if free < 40 * 2**30:
            log("WARNING: under 40 GiB free; some measurements may report OOM")
        if torch.cuda.device_count() > 1:
            log("WARNING: several GPUs visible; the Trainer would use DataParallel. Set CUDA_VISIBLE_DEVICES=0")
        from transformers.utils import is_triton_available
        if not is_triton_available():
            log("WARNING: triton not importable; TRL's fused LM head falls back to torch tiles")
    try:
        from trl.kernels import ChunkedLogProbFunction  # noqa: F401
    except ImportError as exc:
        log(f"WARNING: trl.kernels.ChunkedLogProbFunction unavailable ({exc}); its entropy row will say so")
    log(f"device {dev}, dtype {str(want).removeprefix('torch.')}, torch {torch.__version__}")
    return dev, want


def padded_tokenizer(vocab: int):
    """tests/conftest_earl.py's byte-level BPE with filler tokens up to the model's vocabulary, so every id a
    random model samples decodes to text, as with a real tokenizer of that size (unknown ids decode to '')."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    sys.path.insert(0, str(REPO / "tests"))
    from conftest_earl import tiny_tokenizer

    spec = json.loads(tiny_tokenizer().backend_tokenizer.to_str())
    table = spec["model"]["vocab"]
    fillers = (f"<f{i}>" for i in range(vocab))
    while len(table) < vocab:
        word = next(fillers)
        table.setdefault(word, len(table))
    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(json.dumps(spec)), pad_token="<pad>",
                                  eos_token="<eos>")
    tok.padding_side = "left"
    if len(tok) != vocab:
        raise ValueError(f"padded tokenizer has {len(tok)} tokens, wanted {vocab}")
    return tok


def build_model(shape: Shape, tok, device: torch.device, dtype: torch.dtype):
    """Random Qwen2 of ``shape`` (config written out, nothing downloaded), seeded, on ``device`` in ``dtype``."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    cfg = Qwen2Config(vocab_size=shape.vocab, hidden_size=shape.hidden, intermediate_size=shape.intermediate,
                      num_hidden_layers=shape.layers, num_attention_heads=shape.heads,
                      num_key_value_heads=shape.kv_heads, max_position_embeddings=32768, rope_theta=1e6,
                      rms_norm_eps=1e-6, tie_word_embeddings=True, pad_token_id=tok.pad_token_id,
                      eos_token_id=tok.eos_token_id, bos_token_id=tok.eos_token_id)
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(cfg)            # initialised on CPU: the conventional, well-trodden path
    return model.to(device=device, dtype=dtype)


# ---- measuring ------------------------------------------------------------------------------------------


def guarded(label: str, fn: Callable[[], object]) -> object:
    """Run one measurement; an OOM or any failure becomes the string its table cells show."""
    log(f"{label} ...")
    try:
        return fn()
    except torch.OutOfMemoryError:
        log(f"{label}: out of memory")
        return "OOM"
    except Exception as exc:  # noqa: BLE001 - one failed measurement must not lose the others
        traceback.print_exc(file=sys.stderr)
        return f"failed: {type(exc).__name__}"
    finally:
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


class LiveBytes(TorchDispatchMode):
    """CPU stand-in for ``torch.cuda.max_memory_allocated``: peak bytes of the storages allocated under the mode
    that are still referenced (each storage counted once, released when the last tensor on it is collected).
    Approximate by design (no allocator rounding); good enough to compare entropy paths on CPU."""

    def __init__(self) -> None:
        super().__init__()
        self.live = self.peak = 0
        self._refs: dict[int, list[int]] = {}        # storage data_ptr -> [tensors alive, nbytes]

    def _release(self, key: int) -> None:
        entry = self._refs[key]
        entry[0] -= 1
        if entry[0] == 0:
            del self._refs[key]
            self.live -= entry[1]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        seen = {t.untyped_storage().data_ptr() for t in pytree.tree_leaves((args, kwargs))
                if isinstance(t, torch.Tensor)}
        for t in pytree.tree_leaves(out):
            if not isinstance(t, torch.Tensor):
                continue
            key = t.untyped_storage().data_ptr()
            if key in self._refs:
                self._refs[key][0] += 1                   # a view or in-place result of a tracked storage
            elif key in seen or key == 0:
                continue                                  # in place on, or a view of, memory from before
            else:
                nbytes = t.untyped_storage().nbytes()
                self._refs[key] = [1, nbytes]
                self.live += nbytes
                self.peak = max(self.peak, self.live)
            weakref.finalize(t, self._release, key)
        return out


def peak_extra_bytes(fn: Callable[[], torch.Tensor], device: torch.device) -> tuple[int, torch.Tensor]:
    """Peak memory ``fn`` allocates above what was allocated before it, and its result."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        out = fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - before, out
    with LiveBytes() as meter:
        out = fn()
    return meter.peak, out


def _sync_for(device: torch.device) -> Callable[[], None] | None:
    return torch.cuda.synchronize if device.type == "cuda" else None


def _seconds(fn: Callable[[], object], device: torch.device, reps: int = 3) -> float:
    sync = _sync_for(device) or (lambda: None)
    times = []
    for _ in range(reps):
        sync()
        t = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


# ---- step time ------------------------------------------------------------------------------------------


@dataclass
class StepRow:
    name: str
    trl: Cell
    earl: Cell
    ratio: Cell


def _paired(name: str, base, earl, steps: int, budget_s: float) -> StepRow:
    """Warm both up (timed), then as many alternated pairs as ``steps`` and the time budget allow."""
    pair = base(0) + earl(0)
    reps = max(1, min(steps, int(budget_s // max(pair, 1e-9))))
    if reps < steps:
        log(f"{name}: warm-up pair took {pair:.1f}s; {reps} of {steps} pairs fit the {budget_s:.0f}s budget")
    t_base, t_earl, ratio = _interleaved(base, earl, reps, warmup=False)
    log(f"{name}: TRL {t_base:.3f}s, EARL {t_earl:.3f}s, ratio {ratio:.3f} ({reps} pairs)")
    return StepRow(name, t_base, t_earl, ratio)


def _failed_row(name: str, why: object) -> StepRow:
    return StepRow(name, str(why), str(why), str(why))


def step_rows(shape: Shape, tok, model, device: torch.device, dtype: torch.dtype, steps: int,
              budget_s: float) -> list[StepRow]:
    """EARL vs TRL: a whole GRPO step (generation included), then the loss alone on a fixed batch per gate."""
    from trl import GRPOTrainer

    from pipelines.earl_trainer import EARLGRPOTrainer
    from pipelines.gating import GatingConfig

    args = {"use_cpu": device.type == "cpu", "bf16": dtype == torch.bfloat16}
    sync = _sync_for(device)
    n_seq = shape.prompts * shape.generations
    prompt_len = max(len(ids) for ids in tok(_prompts(), add_special_tokens=False).input_ids)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        name = (f"GRPO step: generate + reward + loss fwd/bwd ({shape.prompts} prompts × {shape.generations} "
                f"generations, {shape.new_tokens} new tokens), gate `batch` ρ {TOP_RATIO}")

        def whole_step() -> StepRow:
            kw = {"n_prompts": shape.prompts, "num_generations": shape.generations,
                  "max_completion_length": shape.new_tokens, "sync": sync, **args}
            base = _step_times(GRPOTrainer, copy.deepcopy(model), tok, d / "s1", **kw)
            earl = _step_times(EARLGRPOTrainer, copy.deepcopy(model), tok, d / "s2",
                               GatingConfig(granularity="batch", top_ratio=TOP_RATIO), **kw)
            return _paired(name, base, earl, steps, budget_s)
        result = guarded(name, whole_step)
        rows.append(result if isinstance(result, StepRow) else _failed_row(name, result))

        for gate in ("batch", "response"):
            name = (f"loss fwd/bwd only ({n_seq} × ({prompt_len} + {shape.new_tokens}) tokens), "
                    f"gate `{gate}` ρ {TOP_RATIO}")

            def loss_only(gate: str = gate, name: str = name) -> StepRow:
                kw = {"shape": (n_seq, prompt_len, shape.new_tokens), "device": str(device), "sync": sync,
                      "per_device_train_batch_size": n_seq, "num_generations": shape.generations,
                      "max_completion_length": shape.new_tokens, **args}
                base = _loss_times(GRPOTrainer, copy.deepcopy(model), tok, d / f"l0-{gate}", **kw)
                earl = _loss_times(EARLGRPOTrainer, copy.deepcopy(model), tok, d / f"l1-{gate}",
                                   GatingConfig(granularity=gate, top_ratio=TOP_RATIO), **kw)
                return _paired(name, base, earl, steps, budget_s / 4)
            result = guarded(name, loss_only)
            rows.append(result if isinstance(result, StepRow) else _failed_row(name, result))
    return rows


def _prompts() -> list[str]:
    sys.path.insert(0, str(REPO / "tests"))
    from conftest_earl import PROMPTS
    return list(PROMPTS)


# ---- entropy memory -------------------------------------------------------------------------------------


@dataclass
class EntropyRow:
    name: str
    extra_bytes: Cell
    seconds: Cell
    vs_full: Cell = "n/a"
    max_abs_diff: Cell = "n/a"


FULL = "full fp32 log_softmax of the logits (baseline)"


def entropy_paths(hidden: torch.Tensor, weight: torch.Tensor) -> dict[str, Callable[[], torch.Tensor]]:
    """Per-token entropy of ``softmax(hidden @ weight.T)`` three ways, each from the final hidden states.

    TRL's fused LM head (what the GRPO loss, and so EARL's gate, uses) never materialises the logits; earl's
    ``chunked_entropy`` (the `earl entropy` analysis) and the baseline take the logits, so they include them.
    """
    from pipelines.entropy import chunked_entropy, full_softmax_entropy

    targets = torch.zeros(hidden.size(0), dtype=torch.long, device=hidden.device)

    def trl_fused() -> torch.Tensor:
        from trl.kernels import ChunkedLogProbFunction
        try:
            from trl.trainer.utils import _CHUNKED_LOGPROB_CHUNK_SIZE as vocab_chunk
        except ImportError:
            vocab_chunk = 32768
        return ChunkedLogProbFunction.apply(hidden, weight, None, targets, 1.0, vocab_chunk, None, 1.0,
                                            ("log_probs", "entropy"))[1]

    paths = {"TRL fused LM head (`trl.kernels.ChunkedLogProbFunction`, log-probs + entropy)": trl_fused}
    for rows in (256, 1024):
        paths[f"earl `chunked_entropy`, {rows} rows per chunk (+ the logits)"] = (
            lambda rows=rows: chunked_entropy(hidden @ weight.T, 1.0, rows))
    paths[FULL] = lambda: full_softmax_entropy(hidden @ weight.T, 1.0)
    return paths


def entropy_rows(shape: Shape, model, device: torch.device, dtype: torch.dtype) -> tuple[list[EntropyRow], int]:
    """Peak extra memory and time of each entropy path on one GRPO batch's completion tokens, no grad."""
    n_tokens = shape.prompts * shape.generations * shape.new_tokens
    g = torch.Generator(device=device).manual_seed(0)
    weight = model.get_output_embeddings().weight.detach()
    hidden = torch.randn(n_tokens, shape.hidden, generator=g, device=device, dtype=dtype)
    results: dict[str, tuple[int, float, torch.Tensor] | str] = {}
    with torch.no_grad():
        for name, fn in entropy_paths(hidden, weight).items():
            def measure(fn: Callable[[], torch.Tensor] = fn) -> tuple[int, float, torch.Tensor]:
                fn()                                               # warm-up: Triton compiles, cuBLAS picks
                seconds = _seconds(fn, device)
                extra, h = peak_extra_bytes(fn, device)
                return extra, seconds, h.float().cpu()
            results[name] = guarded(f"entropy: {name}", measure)
    return _entropy_table_rows(results), n_tokens


def _entropy_table_rows(results: dict) -> list[EntropyRow]:
    full = results.get(FULL)
    rows = []
    for name, r in results.items():
        if isinstance(r, str):
            rows.append(EntropyRow(name, r, r, r, r))
            continue
        extra, seconds, h = r
        row = EntropyRow(name, float(extra), seconds)
        if not isinstance(full, str) and full is not None:
            row.vs_full = extra / full[0] if full[0] else "n/a"
            row.max_abs_diff = float((h - full[2]).abs().max())
        rows.append(row)
    return rows


# ---- report ---------------------------------------------------------------------------------------------


def _fmt(x: Cell, spec: str) -> str:
    return format(x, spec) if isinstance(x, float) else str(x)


def _about(device: torch.device, dtype: torch.dtype, model) -> str:
    import transformers
    import trl
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                            check=False).stdout.strip() or "?"
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    params = sum(p.numel() for p in model.parameters())
    return (f"Written by `make bench-gpu` ({time.strftime('%Y-%m-%d')}, commit {commit}, {where}, torch "
            f"{torch.__version__}, transformers {transformers.__version__}, TRL {trl.__version__}); "
            f"{params:,} parameters, {str(dtype).removeprefix('torch.')}.")


def render(shape: Shape, dtype: torch.dtype, about: str, steps: list[StepRow], ent: list[EntropyRow],
           n_tokens: int) -> str:
    """The `gpu` section of BENCHMARKS.md, as markdown."""
    lines = [f"## GPU: EARL vs TRL GRPO step and entropy memory ({shape.label}, random init)", "", about, "",
             "| measurement | TRL GRPO (s) | EARL (s) | EARL / TRL (median of paired ratios) |", "|---|---|---|---|"]
    lines += [f"| {r.name} | {_fmt(r.trl, '.4f')} | {_fmt(r.earl, '.4f')} | {_fmt(r.ratio, '.3f')} |" for r in steps]
    logits_mib = n_tokens * shape.vocab * dtype.itemsize / 2**20
    dtype_name = str(dtype).removeprefix("torch.")
    lines += ["", (f"Entropy of {n_tokens} tokens × {shape.vocab} vocab from the final hidden states, no grad "
                   f"(the {dtype_name} logits alone are {logits_mib:.1f} MiB):"), "",
              "| entropy path | peak extra memory (MiB) | time (ms) | memory vs full | max abs diff vs full (nats) |",
              "|---|---|---|---|---|"]
    for r in ent:
        mib = r.extra_bytes / 2**20 if isinstance(r.extra_bytes, float) else r.extra_bytes
        ms = r.seconds * 1e3 if isinstance(r.seconds, float) else r.seconds
        lines.append(f"| {r.name} | {_fmt(mib, '.1f')} | {_fmt(ms, '.2f')} | {_fmt(r.vs_full, '.3f')} | "
                     f"{_fmt(r.max_abs_diff, '.2e')} |")
    lines += ["", ("Step rows: bench/bench_earl.py's measurement at this size — wall time of `training_step` "
              "(optimizer update excluded, the same code for both) and of `_compute_loss` forward + backward on a "
              "fixed batch, CUDA synchronised around each call, TRL and EARL alternated and seeded alike, after one "
              "warm-up each; the ratio is the median of per-pair ratios. Memory: `torch.cuda.max_memory_allocated` "
              "minus the memory allocated before the call (on CPU, live tensor storage under a dispatch mode), "
              "after a warm-up call; time is the median of 3 calls. OOM or failed: that measurement did not run.")]
    return "\n".join(lines) + "\n"


def run(shape: Shape, device: torch.device, dtype: torch.dtype, steps: int, budget_s: float) -> str:
    """Build the model, measure, and return the markdown table."""
    log(f"building {shape.label} (hidden {shape.hidden}, {shape.layers} layers, vocab {shape.vocab})")
    tok = padded_tokenizer(shape.vocab)
    model = build_model(shape, tok, device, dtype)
    about = _about(device, dtype, model)
    log(about)
    steps_table = step_rows(shape, tok, model, device, dtype, steps, budget_s)
    ent, n_tokens = entropy_rows(shape, model, device, dtype)
    return render(shape, dtype, about, steps_table, ent, n_tokens)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.gpu", description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto")
    ap.add_argument("--dtype", choices=("auto", "bf16", "fp32"), default="auto", help="auto: bf16 on CUDA, else fp32")
    ap.add_argument("--tiny", action="store_true", help="toy model shape (the CPU test)")
    ap.add_argument("--steps", type=int, default=5, help="paired TRL/EARL steps per measurement (default 5)")
    ap.add_argument("--budget-s", type=float, default=300.0,
                    help="cap on the paired whole steps' time; fewer pairs are run if the warm-up says so")
    ap.add_argument("--out", type=Path, help="also write the table as the `gpu` section of this markdown file")
    args = ap.parse_args(argv)
    if args.steps < 1:
        ap.error("--steps must be >= 1")
    if args.out is not None and not args.out.resolve().parent.is_dir():
        ap.error(f"--out {args.out}: no such directory")           # now, not after minutes of measuring
    device, dtype = preflight(args.device, args.dtype)
    body = run(TINY if args.tiny else QWEN05, device, dtype, args.steps, args.budget_s)
    print(body, flush=True)
    if args.out is not None:
        from bench.run import replace_section
        replace_section(args.out, "gpu", body)
        log(f"wrote the gpu section of {args.out}")
    log("done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
