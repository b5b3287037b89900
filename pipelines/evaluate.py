"""Evaluation: n samples per problem (HF generate or vLLM), scored by the reward engine, unbiased pass@k.

Scoring goes through the same reward callables training uses (rewards.registry.compose), so "passes in
eval" and "rewarded in RL" can never drift apart. Results are records: one per problem, written as JSON.
A task kind with a `judge` (security repair) reads pass/fail from the reward's detail records and adds
its own metrics (secure@1, ...); "passed" is then its notion of correct (secure and correct).
"""
from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pipelines.config import DataConfig, EvalSettings, ModelConfig, RewardEntry
from pipelines.data import format_prompt, kind_of, prompt_text, reward_rows
from rewards.base import scores_of
from rewards.metrics import pass_at_k
from rewards.verilog.problems import Problem


def format_metric(name: str, value: float) -> str:
    """A task metric as printed and reported: rates (`...@1`) as percentages, the rest to 3 decimals."""
    return f"{value:.1%}" if name.endswith("@1") else f"{value:.3f}"


@dataclass
class ProblemResult:
    id: str
    n: int
    correct: int
    passed: list[bool]
    rewards: list[float]
    stages: list[str] = field(default_factory=list)    # furthest stage each sample reached, when known
    samples: list[str] = field(default_factory=list)
    errors: int = 0                                     # samples the reward could not score (None)
    details: list[dict] = field(default_factory=list)  # per-sample judged records (task kinds with a judge)

    def pass_at(self, k: int) -> float:
        return pass_at_k(self.n, self.correct, k)


@dataclass
class EvalResult:
    label: str
    model: str
    n: int
    k: list[int]
    problems: list[ProblemResult]
    wall_s: float = 0.0
    settings: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)   # task metrics (security: secure@1, ...)

    @property
    def pass_at_k(self) -> dict[int, float]:
        return {k: sum(p.pass_at(k) for p in self.problems) / len(self.problems) for k in self.k}

    def to_dict(self) -> dict[str, Any]:
        d = {**asdict(self), "pass_at_k": {str(k): v for k, v in self.pass_at_k.items()}}
        if not self.metrics:                 # kinds without a judge write the same JSON as before
            d.pop("metrics")
            for p in d["problems"]:
                p.pop("details")
        return d

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=1))
        return path

    @classmethod
    def load(cls, path: str | Path) -> EvalResult:
        d = json.loads(Path(path).read_text())
        d.pop("pass_at_k", None)
        d["problems"] = [ProblemResult(**p) for p in d["problems"]]
        return cls(**d)

    def summary(self) -> str:
        ks = ", ".join(f"pass@{k} = {v:.1%}" for k, v in self.pass_at_k.items())
        errors = sum(p.errors for p in self.problems)
        note = f"; WARNING: {errors} samples unscored (reward error, counted as failures)" if errors else ""
        extra = "".join(f", {k} = {format_metric(k, v)}"
                        for k, v in self.metrics.items() if isinstance(v, float) and not math.isnan(v))
        return f"{self.label}: {ks}{extra} over {len(self.problems)} problems (n={self.n}){note}"

    def table(self, limit: int | None = None) -> str:
        """Per-problem markdown table: samples, correct, pass@k, how far failing samples got."""
        head = "| problem | n | correct | " + " | ".join(f"pass@{k}" for k in self.k) + " | stages |"
        rows = [head, "|" + "---|" * (4 + len(self.k))]
        for p in self.problems[:limit]:
            stages = ", ".join(f"{s}×{c}" for s, c in _count(p.stages).items()) if p.stages else ""
            rows.append(f"| {p.id} | {p.n} | {p.correct} | "
                        + " | ".join(f"{p.pass_at(k):.2f}" for k in self.k) + f" | {stages} |")
        if limit is not None and len(self.problems) > limit:
            rows.append(f"| … {len(self.problems) - limit} more | | | " + " | " * len(self.k) + " |")
        return "\n".join(rows)


def _count(items: Sequence[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for s in items:
        out[s] = out.get(s, 0) + 1
    return out


# --------------------------------------------------------------------------- paired comparison


def paired(before: EvalResult, after: EvalResult) -> dict[str, Any]:
    """Per-problem first-sample comparison: fail->pass (up), pass->fail (down), two-sided sign-test p."""
    a = {p.id: p.passed[0] for p in before.problems}
    b = {p.id: p.passed[0] for p in after.problems}
    common = [i for i in a if i in b]
    up = sum(1 for i in common if not a[i] and b[i])
    down = sum(1 for i in common if a[i] and not b[i])
    return {"problems": len(common), "up": up, "down": down, "sign_test_p": sign_test(up, down)}


def sign_test(up: int, down: int) -> float:
    """Two-sided exact binomial sign test on the discordant pairs."""
    n = up + down
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(up, down) + 1)) / 2 ** n
    return min(1.0, 2 * tail)


# --------------------------------------------------------------------------- generation


def _prompts(problems: list[Problem], data_cfg: DataConfig, tokenizer) -> list[str]:
    out = []
    for p in problems:
        prompt = format_prompt(prompt_text(p), data_cfg)
        if isinstance(prompt, list):
            prompt = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
        out.append(prompt)
    return out


def generate_hf(model_path: str, problems: list[Problem], ev: EvalSettings, model_cfg: ModelConfig,
                data_cfg: DataConfig, seed: int = 0) -> list[list[str]]:
    """n completions per problem with transformers' generate (left padding, batched prompts)."""
    import torch

    from pipelines.modeling import load_model, load_tokenizer, tokenizer_path
    tok = load_tokenizer(tokenizer_path(model_path, model_cfg), padding_side="left")
    model = load_model(model_path, model_cfg)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device).eval()
    prompts = _prompts(problems, data_cfg, tok)
    greedy = ev.temperature == 0
    gen_kw: dict[str, Any] = {"max_new_tokens": ev.max_new_tokens, "do_sample": not greedy,
                              "num_return_sequences": ev.n, "pad_token_id": tok.pad_token_id}
    if not greedy:
        gen_kw.update(temperature=ev.temperature, top_p=ev.top_p)
    torch.manual_seed(seed)
    out: list[list[str]] = []
    step = max(1, ev.batch_size // ev.n) if ev.n > 1 else ev.batch_size
    with torch.no_grad():
        for i in range(0, len(prompts), step):
            # plain prompts get BOS like TRL's trainers add it; a chat template renders its own
            batch = tok(prompts[i:i + step], return_tensors="pt", padding=True,
                        add_special_tokens=data_cfg.prompt_format != "chat")
            batch = {k: v.to(device) for k, v in batch.items()}
            ids = model.generate(**batch, **gen_kw)[:, batch["input_ids"].shape[1]:]
            texts = tok.batch_decode(ids, skip_special_tokens=True)
            out.extend(texts[j:j + ev.n] for j in range(0, len(texts), ev.n))
    return out


def generate_vllm(model_path: str, problems: list[Problem], ev: EvalSettings, model_cfg: ModelConfig,
                  data_cfg: DataConfig, seed: int = 0) -> list[list[str]]:
    try:
        from vllm import LLM, SamplingParams
    except ImportError:
        raise RuntimeError("eval backend vllm: vllm is not installed (pip install 'earl[vllm]'), "
                           "or set backend: hf") from None
    from pipelines.modeling import resolve_model_path
    llm = LLM(model=resolve_model_path(model_path), dtype=model_cfg.dtype if model_cfg.dtype != "float32"
              else "auto", seed=seed, trust_remote_code=model_cfg.trust_remote_code)
    params = SamplingParams(n=ev.n, temperature=ev.temperature, top_p=ev.top_p, max_tokens=ev.max_new_tokens,
                            seed=seed)
    prompts = _prompts(problems, data_cfg, llm.get_tokenizer())
    return [[o.text for o in r.outputs] for r in llm.generate(prompts, params)]


# --------------------------------------------------------------------------- scoring


def score(problems: list[Problem], samples: list[list[str]], reward_entries: Sequence[RewardEntry],
          data_cfg: DataConfig, threshold: float = 1.0, chunk: int = 256) -> list[ProblemResult]:
    """Score every sample through the composed rewards. A sample passes as the task kind's judge says
    (on the first reward's `last_scores`), else as the first reward's Scores say (`passed`: its last
    stage reached) when it leaves them, else when the weighted reward >= threshold."""
    from rewards.registry import compose
    funcs, weights = compose([asdict(r) for r in reward_entries])
    rows = reward_rows(problems, data_cfg)
    flat = [(i, s) for i, ss in enumerate(samples) for s in ss]
    totals: list[float] = []
    stages: list[str] = []
    missing: list[bool] = []
    details: list[dict | None] = []
    for c in range(0, len(flat), chunk):
        part = flat[c:c + chunk]
        cols = {k: [rows[i][k] for i, _ in part] for k in rows[0] if k != "prompt"}
        prompts = [rows[i]["prompt"] for i, _ in part]
        completions = [s for _, s in part]
        if data_cfg.prompt_format == "chat":
            completions = [[{"role": "assistant", "content": s}] for s in completions]
        part_total = [0.0] * len(part)
        part_stage = [""] * len(part)
        part_details: list[dict | None] = [None] * len(part)
        for j, (fn, w) in enumerate(zip(funcs, weights)):
            vals = fn(prompts, completions, **cols)
            if j == 0:
                missing += [v is None for v in vals]
            for t, v in enumerate(vals):
                part_total[t] += w * (v or 0.0)
            if j == 0:
                got = _details(fn, len(part))
                if got:
                    part_stage = [str(d.get("stage", "")) if isinstance(d, dict) else "" for d in got]
                    part_details = [d if isinstance(d, dict) and v is not None else None
                                    for d, v in zip(got, vals)]
        totals += part_total
        stages += part_stage
        details += part_details
    judge = kind_of(problems[0]).judge if problems else None
    results = []
    pos = 0
    for p, ss in zip(problems, samples):
        r = totals[pos:pos + len(ss)]
        st = stages[pos:pos + len(ss)]
        judged: list[dict] = []
        if judge is not None:
            judged = [judge(p, d) if d is not None else {"passed": False, "stage": "error", "reason": "unscored"}
                      for d in details[pos:pos + len(ss)]]
            passed, st = [bool(j["passed"]) for j in judged], [str(j["stage"]) for j in judged]
        else:
            dets = details[pos:pos + len(ss)]         # the reward's Score.passed: its last stage reached
            passed = [bool(d and d.get("passed")) for d in dets] if all(st) else [v >= threshold - 1e-9 for v in r]
        results.append(ProblemResult(p.id, len(ss), sum(passed), passed, [round(v, 4) for v in r],
                                     st if all(st) else [], list(ss), sum(missing[pos:pos + len(ss)]), judged))
        pos += len(ss)
    return results


def _details(fn, n: int) -> list | None:
    """The first reward's per-sample records with their stage (rewards.base.scores_of), or None."""
    scores = scores_of(fn, n)
    return None if scores is None else [{**s.details, "stage": s.stage, "passed": s.passed} for s in scores]


def evaluate(model_path: str, problems: list[Problem], ev: EvalSettings, rewards: Sequence[RewardEntry],
             model_cfg: ModelConfig, data_cfg: DataConfig, label: str = "model", seed: int = 0) -> EvalResult:
    if ev.limit:
        problems = problems[: ev.limit]
    t0 = time.time()
    gen = generate_vllm if ev.backend == "vllm" else generate_hf
    samples = gen(model_path, problems, ev, model_cfg, data_cfg, seed)
    results = score(problems, samples, rewards, data_cfg, ev.pass_threshold)
    kind = kind_of(problems[0])
    metrics = kind.metrics([d for r in results for d in r.details]) if kind.metrics else {}
    return EvalResult(label, str(model_path), ev.n, list(ev.k), results, round(time.time() - t0, 1), asdict(ev),
                      metrics)
