"""Ablation: EARL entropy gating vs no gating at equal budget, over several seeds, from one SFT checkpoint.

    python -m pipelines.ablation --config configs/verilog_tiny.yaml --seeds 0 1 2 --out runs/ablation \
        [--sft-run runs/verilog_tiny-<time>] [key=value ...]

Both arms run the config's rl stage with the same steps, batch, learning rate and data; only the gate
differs (`gating` from the config vs none) and the seed (sampling + data order). Each arm/seed is an
ordinary run folder (resumable); the summary compares held-out pass@1 to the shared SFT checkpoint with
paired fail->pass / pass->fail counts and writes <out>/ablation.md.
"""
from __future__ import annotations

import argparse
import copy
import statistics
import sys
from pathlib import Path

from pipelines.config import PipelineConfig, load_config
from pipelines.evaluate import EvalResult, paired
from pipelines.runner import RunFolder, resume, train


def _stages_cfg(base: PipelineConfig, stages: dict, **run) -> PipelineConfig:
    raw = base.to_dict()
    raw["stages"] = stages
    raw["run"].update(run)
    return load_config(raw=raw)


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
        raw = base.to_dict()
        ev = copy.deepcopy(raw["stages"]["eval"])
        ev["settings"]["models"] = []
        cfg = _stages_cfg(base, {"sft": raw["stages"]["sft"], "eval": ev}, run_dir=str(out / "sft"))
        run = _run(cfg)
    else:
        run = RunFolder(sft_run)
    model = run.final_dir("sft")
    if not (model / "config.json").is_file():
        raise FileNotFoundError(f"{model}: the run has no finished SFT model")
    saved = run.root / "eval" / "sft.json"
    if saved.is_file():
        return str(model), EvalResult.load(saved)
    # the SFT run has not evaluated its model (yet): an eval-only run of it
    raw = base.to_dict()
    ev = copy.deepcopy(raw["stages"]["eval"])
    ev["settings"]["models"] = []
    base_eval = copy.deepcopy(base)
    base_eval.model.name_or_path = str(model)
    cfg = _stages_cfg(base_eval, {"eval": ev}, run_dir=str(out / "sft-eval"), name="ablation-sft-eval")
    return str(model), EvalResult.load(_run(cfg).root / "eval" / "base.json")


def run_ablation(config: str, seeds: list[int], out: str | Path, sft_run: str | None = None,
                 overrides: list[str] | None = None) -> Path:
    base = load_config(config, overrides)
    out = Path(out)
    sft_model, sft_eval = sft_checkpoint(base, out, sft_run)
    raw = base.to_dict()
    ev = copy.deepcopy(raw["stages"]["eval"])
    ev["settings"]["models"] = []
    arms = ("earl", "none")
    results: dict[str, dict[int, EvalResult]] = {arm: {} for arm in arms}
    for seed in seeds:
        for arm in arms:
            rl = copy.deepcopy(raw["stages"]["rl"])
            if arm == "none":   # only the gate differs: other gating options (negative_weight) stay
                rl["gating"] = {**(rl.get("gating") or {}), "granularity": "none"}
            base_arm = copy.deepcopy(base)
            base_arm.model.name_or_path = sft_model
            cfg = _stages_cfg(base_arm, {"rl": rl, "eval": ev}, seed=seed, run_dir=str(out / f"{arm}-seed{seed}"),
                              name=f"ablation-{arm}-seed{seed}")
            run = _run(cfg)
            results[arm][seed] = EvalResult.load(run.root / "eval" / "rl.json")
    path = out / "ablation.md"
    path.write_text(summary(base, sft_eval, results))
    print(path.read_text())
    return path


def summary(base: PipelineConfig, sft_eval: EvalResult, results: dict[str, dict[int, EvalResult]]) -> str:
    rl = base.stages["rl"]
    t = rl.trainer
    intro = (f"Same SFT start (held-out pass@1 {sft_eval.pass_at_k[1]:.1%} on {len(sft_eval.problems)} problems), "
             f"{t.get('max_steps')} GRPO steps, lr {t.get('learning_rate')}, "
             f"{t.get('per_device_train_batch_size')} completions/step ({t.get('num_generations')} per prompt); "
             f"gate: {rl.gating}.")
    lines = ["## Ablation: EARL entropy gate vs no gate (equal budget)", "", intro, "",
             "| seed | arm | held-out pass@1 | Δ vs SFT | fail→pass | pass→fail | sign test p |",
             "|---|---|---|---|---|---|---|"]
    for seed in sorted(next(iter(results.values()))):
        for arm, by_seed in results.items():
            r = by_seed[seed]
            c = paired(sft_eval, r)
            lines.append(f"| {seed} | {arm} | {r.pass_at_k[1]:.1%} | {r.pass_at_k[1] - sft_eval.pass_at_k[1]:+.1%} "
                         f"| {c['up']} | {c['down']} | {c['sign_test_p']:.3g} |")
    lines += ["", "| arm | mean pass@1 | sd over seeds | mean Δ vs SFT |", "|---|---|---|---|"]
    for arm, by_seed in results.items():
        vals = [r.pass_at_k[1] for r in by_seed.values()]
        sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
        lines.append(f"| {arm} | {statistics.mean(vals):.1%} | {sd:.1%} | "
                     f"{statistics.mean(vals) - sft_eval.pass_at_k[1]:+.1%} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pipelines.ablation", description=(__doc__ or "").split("\n")[0])
    p.add_argument("--config", default="configs/verilog_tiny.yaml")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--out", default="runs/ablation")
    p.add_argument("--sft-run", default=None, help="reuse this run folder's SFT model and its eval")
    p.add_argument("overrides", nargs="*", metavar="key=value")
    args = p.parse_args(argv)
    run_ablation(args.config, args.seeds, args.out, args.sft_run, args.overrides)
    return 0


if __name__ == "__main__":
    sys.exit(main())
