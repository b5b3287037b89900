"""Ablation: RL variants ("arms") over several seeds from one SFT checkpoint, compared on the held-out set.

    python -m pipelines.ablation --config configs/verilog_tiny.yaml --seeds 0 1 2 --out runs/ablation \
        [--sft-run runs/verilog_tiny-<time>] [--arm NAME:KEY=VALUE,...] [key=value ...]

By default two arms: `earl` (the config's rl stage as it is) and `none` (the same with
`gating.granularity=none`): same steps, batch, learning rate and data, only the gate and the seed (sampling +
data order) differ. `--arm` (repeatable) replaces them: each patches keys of the rl stage, dotted and
relative to it, values in YAML (`--arm ds:dynamic_sampling.enabled=true,trainer.max_steps=38`), so arms can
differ in more than the gate (an equal wall-clock budget is a different step count). Each arm/seed is an
ordinary run folder (resumable); the summary compares held-out pass@1 (greedy when the eval decodes greedily
too), sampled pass@1 and pass@k with the shared SFT checkpoint, with paired fail->pass / pass->fail counts per
seed and pooled over the seeds, and writes <out>/ablation.md.
"""
from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from pipelines.config import ConfigError, PipelineConfig, load_config
from pipelines.evaluate import EvalResult, paired, sign_test
from pipelines.runner import RunFolder, resume, train

DEFAULT_ARMS: dict[str, dict[str, Any]] = {"earl": {}, "none": {"gating.granularity": "none"}}


def parse_arm(text: str) -> tuple[str, dict[str, Any]]:
    """`NAME:KEY=VALUE,KEY=VALUE` -> (name, {dotted key under the rl stage: YAML value})."""
    name, _, body = text.partition(":")
    if not name.strip():
        raise ConfigError(f"--arm {text!r}: expected NAME:KEY=VALUE,... (keys under stages.rl)")
    patch: dict[str, Any] = {}
    for item in filter(None, (x.strip() for x in body.split(","))):
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise ConfigError(f"--arm {name}: {item!r} is not KEY=VALUE")
        try:
            patch[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            raise ConfigError(f"--arm {name}: {key}: not YAML ({exc})") from None
    return name.strip(), patch


def patched(stage: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """A copy of a stage dict with dotted keys set (missing or null sections become dicts)."""
    out = copy.deepcopy(stage)
    for key, value in patch.items():
        node = out
        *parents, leaf = key.split(".")
        for part in parents:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[leaf] = value
    return out


def _stages_cfg(base: PipelineConfig, stages: dict, **run) -> PipelineConfig:
    raw = base.to_dict()
    raw["stages"] = stages
    raw["run"].update(run)
    return load_config(raw=raw)


def _own_eval(base: PipelineConfig) -> dict[str, Any]:
    """The config's eval stage, evaluating only the run's own model (no earlier stages' models)."""
    ev = copy.deepcopy(base.to_dict()["stages"]["eval"])
    ev["settings"]["models"] = []
    return ev


def _run(cfg: PipelineConfig) -> RunFolder:
    assert cfg.run.run_dir, "ablation configs always set run.run_dir"
    root = Path(cfg.run.run_dir)
    state = RunFolder(root).load_state()
    if state.get("finished"):
        return RunFolder(root)
    if (root / "config.yaml").is_file():
        run = resume(root)
        assert run is not None, "resume returns None only for a dry run"
        return run
    return train(cfg)


def sft_checkpoint(base: PipelineConfig, out: Path, sft_run: str | None) -> tuple[str, EvalResult]:
    """The shared start: an existing run's SFT model and its held-out eval, or a fresh SFT + eval run."""
    if sft_run is None:
        cfg = _stages_cfg(base, {"sft": base.to_dict()["stages"]["sft"], "eval": _own_eval(base)},
                          run_dir=str(out / "sft"))
        run = _run(cfg)
    else:
        run = RunFolder(sft_run)
    model = run.final_dir("sft")
    if not (model / "config.json").is_file():
        raise FileNotFoundError(f"{model}: the run has no finished SFT model")
    ev = _own_eval(base)
    saved = run.root / "eval" / "sft.json"
    if saved.is_file():
        result = EvalResult.load(saved)
        if _same_settings(result, ev["settings"]):
            return str(model), result
    # the SFT run has not evaluated its model (yet), or with other settings: an eval-only run of it
    base_eval = copy.deepcopy(base)
    base_eval.model.name_or_path = str(model)
    cfg = _stages_cfg(base_eval, {"eval": ev}, run_dir=str(out / "sft-eval"), name="ablation-sft-eval")
    return str(model), EvalResult.load(_run(cfg).root / "eval" / "base.json")


def _same_settings(result: EvalResult, settings: dict[str, Any]) -> bool:
    """Was `result` decoded as `settings` would decode (the keys that change what is sampled)?"""
    keys = ("n", "k", "temperature", "greedy", "top_p", "max_new_tokens", "limit")
    return all(result.settings.get(k) == settings.get(k) for k in keys if k in result.settings or k in settings)


@dataclass
class ArmRun:
    """One arm and seed: its held-out result and what its RL stage cost."""
    result: EvalResult
    rl_s: float = 0.0
    steps: int = 0
    zero_std: float | None = None      # mean frac_reward_zero_std over the logged steps

    @classmethod
    def load(cls, run: RunFolder) -> ArmRun:
        state = run.load_state()["stages"].get("rl", {})
        rows = [r for r in run.read_metrics("rl") if "frac_reward_zero_std" in r]
        zero = statistics.mean(r["frac_reward_zero_std"] for r in rows) if rows else None
        return cls(EvalResult.load(run.root / "eval" / "rl.json"), float(state.get("wall_s", 0.0)),
                   int(state.get("global_step", 0)), zero)


def run_ablation(config: str, seeds: list[int], out: str | Path, sft_run: str | None = None,
                 overrides: list[str] | None = None, arms: dict[str, dict[str, Any]] | None = None) -> Path:
    base = load_config(config, overrides)
    out = Path(out)
    arms = arms or DEFAULT_ARMS
    sft_model, sft_eval = sft_checkpoint(base, out, sft_run)
    raw, ev = base.to_dict(), _own_eval(base)
    results: dict[str, dict[int, ArmRun]] = {arm: {} for arm in arms}
    for seed in seeds:
        for arm, patch in arms.items():
            rl = patched(raw["stages"]["rl"], patch)
            base_arm = copy.deepcopy(base)
            base_arm.model.name_or_path = sft_model
            cfg = _stages_cfg(base_arm, {"rl": rl, "eval": ev}, seed=seed, run_dir=str(out / f"{arm}-seed{seed}"),
                              name=f"ablation-{arm}-seed{seed}")
            results[arm][seed] = ArmRun.load(_run(cfg))
    path = out / "ablation.md"
    path.write_text(summary(base, sft_eval, results, arms))
    print(path.read_text())
    return path


def _first(result: EvalResult) -> float:
    """The pass@1 the comparison is made on: greedy when decoded, else the first sample's."""
    greedy = result.greedy_pass_at_1
    return greedy if greedy is not None else result.pass_at_k[1]


def summary(base: PipelineConfig, sft_eval: EvalResult, results: dict[str, dict[int, ArmRun]],
            arms: dict[str, dict[str, Any]] | None = None) -> str:
    rl = base.stages["rl"]
    t = rl.trainer
    greedy = sft_eval.greedy_pass_at_1 is not None
    kmax = max(sft_eval.k)
    what = "greedy pass@1" if greedy else "pass@1"
    intro = (f"Same SFT start (held-out {what} {_first(sft_eval):.1%} on {len(sft_eval.problems)} problems), "
             f"{t.get('max_steps')} GRPO steps unless an arm says otherwise, lr {t.get('learning_rate')}, "
             f"{t.get('per_device_train_batch_size')} completions/step ({t.get('num_generations')} per prompt); "
             f"gate: {rl.gating}.")
    arm_lines = [f"- `{a}`: " + (", ".join(f"{k}={json.dumps(v)}" for k, v in p.items()) or "the config's rl stage")
                 for a, p in (arms or {a: {} for a in results}).items()]
    sampled = sft_eval.n > 1
    head = f"| seed | arm | {what} | Δ vs SFT | fail→pass | pass→fail | sign test p |"
    rule = "|---|---|---|---|---|---|---|"
    if sampled:
        head += f" sampled pass@1 | pass@{kmax} |"
        rule += "---|---|"
    head += " RL s | steps | zero-std groups |"
    rule += "---|---|---|"
    lines = ["## Ablation: RL arms from one SFT checkpoint", "", intro, "", *arm_lines, "", head, rule]
    for seed in sorted(next(iter(results.values()))):
        for arm, by_seed in results.items():
            a = by_seed[seed]
            r = a.result
            c = paired(sft_eval, r, greedy=greedy)
            row = (f"| {seed} | {arm} | {_first(r):.1%} | {_first(r) - _first(sft_eval):+.1%} "
                   f"| {c['up']} | {c['down']} | {c['sign_test_p']:.3g} |")
            if sampled:
                row += f" {r.pass_at_k[1]:.1%} | {r.pass_at_k.get(kmax, float('nan')):.1%} |"
            zero = "" if a.zero_std is None else f"{a.zero_std:.2f}"
            lines.append(row + f" {a.rl_s:.0f} | {a.steps} | {zero} |")
    lines += ["", (f"| arm | mean {what} | sd over seeds | mean Δ vs SFT | pooled fail→pass / pass→fail | "
                   "pooled sign test p |"), "|---|---|---|---|---|---|"]
    for arm, by_seed in results.items():
        vals = [_first(a.result) for a in by_seed.values()]
        sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
        ups = downs = 0
        for a in by_seed.values():
            c = paired(sft_eval, a.result, greedy=greedy)
            ups, downs = ups + c["up"], downs + c["down"]
        lines.append(f"| {arm} | {statistics.mean(vals):.1%} | {sd:.1%} | "
                     f"{statistics.mean(vals) - _first(sft_eval):+.1%} | {ups} / {downs} | "
                     f"{sign_test(ups, downs):.3g} |")
    lines += _head_to_head(results, greedy)
    return "\n".join(lines) + "\n"


def _head_to_head(results: dict[str, dict[int, ArmRun]], greedy: bool) -> list[str]:
    """Each pair of arms on the same seeds: problems only the first / only the second solves, pooled."""
    names = list(results)
    if len(names) < 2:
        return []
    lines = ["", "| arm A vs arm B | A only / B only (pooled over seeds) | sign test p |", "|---|---|---|"]
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            a_only = b_only = 0
            for seed in results[a]:
                if seed in results[b]:
                    c = paired(results[b][seed].result, results[a][seed].result, greedy=greedy)
                    a_only, b_only = a_only + c["up"], b_only + c["down"]
            lines.append(f"| {a} vs {b} | {a_only} / {b_only} | {sign_test(a_only, b_only):.3g} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pipelines.ablation", description=(__doc__ or "").split("\n")[0])
    p.add_argument("--config", default="configs/verilog_tiny.yaml")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--out", default="runs/ablation")
    p.add_argument("--sft-run", default=None, help="reuse this run folder's SFT model and its eval")
    p.add_argument("--arm", action="append", default=[], metavar="NAME:KEY=VALUE,...",
                   help="an RL arm: keys under stages.rl to set (repeatable; default: earl and none)")
    p.add_argument("overrides", nargs="*", metavar="key=value")
    args = p.parse_args(argv)
    arms = dict(parse_arm(a) for a in args.arm) or None
    run_ablation(args.config, args.seeds, args.out, args.sft_run, args.overrides, arms)
    return 0


if __name__ == "__main__":
    sys.exit(main())
