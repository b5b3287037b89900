"""Evaluation: n samples per problem (HF generate or vLLM), scored by the reward engine, unbiased pass@k.

With `greedy: true` next to n > 1 samples at temperature T, each model is also decoded greedily: sampled
pass@1 and pass@k against greedy pass@1 tell sharpening (RL moves mass onto answers the model could already
sample: greedy and pass@1 rise, pass@k does not) from teaching (pass@k rises too). Generated task sets
carry `meta` (family, phrasing): `family_table` breaks the numbers down by it.

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
from dataclasses import asdict, dataclass, field, replace
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
    meta: dict[str, Any] = field(default_factory=dict)  # the problem's family / phrasing (generated tasks)

    def pass_at(self, k: int) -> float:
        return pass_at_k(self.n, self.correct, k)


META_KEYS = ("family", "phrasing")       # the Problem.meta fields a result keeps, for per-family tables


def problem_meta(p: Problem) -> dict[str, Any]:
    return {k: p.meta[k] for k in META_KEYS if k in (p.meta or {})}


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
    greedy: list[ProblemResult] = field(default_factory=list)   # greedy decode of the same problems (greedy: true)

    @property
    def pass_at_k(self) -> dict[int, float]:
        return {k: sum(p.pass_at(k) for p in self.problems) / len(self.problems) for k in self.k}

    @property
    def greedy_pass_at_1(self) -> float | None:
        return sum(p.passed[0] for p in self.greedy) / len(self.greedy) if self.greedy else None

    def to_dict(self) -> dict[str, Any]:
        d = {**asdict(self), "pass_at_k": {str(k): v for k, v in self.pass_at_k.items()}}
        if self.greedy:
            d["greedy_pass_at_1"] = self.greedy_pass_at_1
        else:                                # results without the greedy decode write the same JSON as before
            d.pop("greedy")
        for p in [*d["problems"], *d.get("greedy", [])]:
            if not self.metrics:             # kinds without a judge write the same JSON as before
                p.pop("details")
            if not p["meta"]:
                p.pop("meta")
        if not self.metrics:
            d.pop("metrics")
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
        d.pop("greedy_pass_at_1", None)
        d["problems"] = [ProblemResult(**p) for p in d["problems"]]
        d["greedy"] = [ProblemResult(**p) for p in d.get("greedy", [])]   # older files have none
        return cls(**d)

    def summary(self) -> str:
        ks = ", ".join(f"pass@{k} = {v:.1%}" for k, v in self.pass_at_k.items())
        errors = sum(p.errors for p in self.problems)
        note = f"; WARNING: {errors} samples unscored (reward error, counted as failures)" if errors else ""
        extra = "".join(f", {k} = {format_metric(k, v)}"
                        for k, v in self.metrics.items() if isinstance(v, float) and not math.isnan(v))
        if self.greedy:
            ks = f"sampled {ks} (T={self.settings.get('temperature')}), greedy pass@1 = {self.greedy_pass_at_1:.1%}"
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


def paired(before: EvalResult, after: EvalResult, greedy: bool = False) -> dict[str, Any]:
    """Per-problem first-sample comparison: fail->pass (up), pass->fail (down), two-sided sign-test p.
    ``greedy``: compare the greedy decodes instead (both results need them)."""
    a = {p.id: p.passed[0] for p in (before.greedy if greedy else before.problems)}
    b = {p.id: p.passed[0] for p in (after.greedy if greedy else after.problems)}
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


def family_table(results: Sequence[EvalResult], key: str = "family") -> str:
    """Markdown table per value of the problems' ``meta[key]`` (family, phrasing): problems, and per model
    sampled pass@1, the largest pass@k and greedy pass@1 (when decoded). Empty when no problem has the key."""
    groups: dict[str, list[str]] = {}
    for p in results[0].problems if results else []:
        if key in p.meta:
            groups.setdefault(str(p.meta[key]), []).append(p.id)
    if not groups:
        return ""
    top = max(results[0].k)
    cols = []
    for r in results:
        cols += [f"{r.label} pass@1"] + ([f"{r.label} pass@{top}"] if top > 1 else [])
        cols += [f"{r.label} greedy"] if r.greedy else []
    rows = [f"| {key} | problems | " + " | ".join(cols) + " |", "|---|---|" + "---|" * len(cols)]
    for value, ids in sorted(groups.items()):
        cells = []
        for r in results:
            mine = [p for p in r.problems if p.id in set(ids)]
            cells.append(_mean([p.pass_at(1) for p in mine]))
            if top > 1:
                cells.append(_mean([p.pass_at(top) for p in mine if p.n >= top]))
            if r.greedy:
                cells.append(_mean([float(p.passed[0]) for p in r.greedy if p.id in set(ids)]))
        rows.append(f"| {value} | {len(ids)} | " + " | ".join(f"{c:.1%}" for c in cells) + " |")
    return "\n".join(rows)


def _mean(xs: Sequence[float]) -> float:
    return sum(xs) / len(xs) if xs else float("nan")


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


@dataclass
class SampleScore:
    """One sample, scored: the weighted total, what the first reward reported (stage, detail record) and
    whether it could score the sample at all."""
    total: float = 0.0
    stage: str = ""                  # the first reward's stage ("" when it leaves no Scores)
    passed: bool | None = None       # the first reward's Score.passed (its last stage reached)
    detail: dict | None = None       # the first reward's detail record (None when unscored or absent)
    missing: bool = False            # the first reward returned None


def _score_chunk(part: list[tuple[int, str]], rows: list[dict], funcs: list, weights: list[float],
                 data_cfg: DataConfig) -> list[SampleScore]:
    cols = {k: [rows[i][k] for i, _ in part] for k in rows[0] if k != "prompt"}
    prompts = [rows[i]["prompt"] for i, _ in part]
    completions: list = [s for _, s in part]
    if data_cfg.prompt_format == "chat":
        completions = [[{"role": "assistant", "content": s}] for s in completions]
    records = [SampleScore() for _ in part]
    for j, (fn, w) in enumerate(zip(funcs, weights)):
        vals = fn(prompts, completions, **cols)
        for rec, v in zip(records, vals):
            rec.total += w * (v or 0.0)
        if j > 0:
            continue
        scores = scores_of(fn, len(part))
        for rec, v, sc in zip(records, vals, scores or [None] * len(part)):
            rec.missing = v is None
            if sc is not None:
                rec.stage, rec.passed = sc.stage, sc.passed
                rec.detail = {**sc.details, "stage": sc.stage} if v is not None else None
    return records


def _problem_result(p: Problem, ss: list[str], recs: list[SampleScore], judge, threshold: float) -> ProblemResult:
    stages = [r.stage for r in recs]
    judged: list[dict] = []
    if judge is not None:
        judged = [judge(p, r.detail) if r.detail is not None
                  else {"passed": False, "stage": "error", "reason": "unscored"} for r in recs]
        passed, stages = [bool(j["passed"]) for j in judged], [str(j["stage"]) for j in judged]
    elif all(stages):
        passed = [bool(r.passed) for r in recs]
    else:
        passed = [r.total >= threshold - 1e-9 for r in recs]
    return ProblemResult(p.id, len(ss), sum(passed), passed, [round(r.total, 4) for r in recs],
                         stages if all(stages) else [], list(ss), sum(r.missing for r in recs), judged,
                         problem_meta(p))


def score(problems: list[Problem], samples: list[list[str]], reward_entries: Sequence[RewardEntry],
          data_cfg: DataConfig, threshold: float = 1.0, chunk: int = 256) -> list[ProblemResult]:
    """Score every sample through the composed rewards. A sample passes as the task kind's judge says
    (on the first reward's `last_scores`), else as the first reward's Scores say (`passed`: its last
    stage reached) when it leaves them, else when the weighted reward >= threshold."""
    from rewards.registry import compose
    funcs, weights = compose([asdict(r) for r in reward_entries])
    rows = reward_rows(problems, data_cfg)
    flat = [(i, s) for i, ss in enumerate(samples) for s in ss]
    records: list[SampleScore] = []
    for c in range(0, len(flat), chunk):
        records += _score_chunk(flat[c:c + chunk], rows, funcs, weights, data_cfg)
    judge = kind_of(problems[0]).judge if problems else None
    it = iter(records)
    return [_problem_result(p, ss, [next(it) for _ in ss], judge, threshold) for p, ss in zip(problems, samples)]


def evaluate(model_path: str, problems: list[Problem], ev: EvalSettings, rewards: Sequence[RewardEntry],
             model_cfg: ModelConfig, data_cfg: DataConfig, label: str = "model", seed: int = 0) -> EvalResult:
    if ev.limit:
        problems = problems[: ev.limit]
    t0 = time.time()
    gen = generate_vllm if ev.backend == "vllm" else generate_hf
    samples = gen(model_path, problems, ev, model_cfg, data_cfg, seed)
    results = score(problems, samples, rewards, data_cfg, ev.pass_threshold)
    greedy: list[ProblemResult] = []
    if ev.greedy:
        once = replace(ev, n=1, k=[1], temperature=0.0, greedy=False)
        greedy = score(problems, gen(model_path, problems, once, model_cfg, data_cfg, seed), rewards, data_cfg,
                       ev.pass_threshold)
    kind = kind_of(problems[0])
    metrics = kind.metrics([d for r in results for d in r.details]) if kind.metrics else {}
    return EvalResult(label, str(model_path), ev.n, list(ev.k), results, round(time.time() - t0, 1), asdict(ev),
                      metrics, greedy)
