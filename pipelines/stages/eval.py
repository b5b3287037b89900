"""Eval stage: score the current model (and any earlier stages' models listed in `eval.models`) on the
held-out problems; writes eval/<label>.json (eval/<stage>/<label>.json for a stage not named `eval`) and
prints pass@k (plus the task's metrics, e.g. secure@1) and paired fail->pass / pass->fail counts. With
`settings.greedy` (n > 1 at T > 0) greedy pass@1 and its paired counts come too; generated task sets get a
per-family and per-wording table (families.md beside the results)."""
from __future__ import annotations

import itertools
from typing import Any

from pipelines.data import load_source
from pipelines.evaluate import EvalResult, evaluate, family_table, paired
from pipelines.runner import StageContext, is_main


def eval_dir(run_root, stage: str):
    """<run>/eval for the stage named `eval`; <run>/eval/<stage> for others (a config may evaluate on
    several benchmarks, one eval stage each, and the labels (sft, rl) would collide)."""
    return run_root / "eval" if stage == "eval" else run_root / "eval" / stage


def run(ctx: StageContext) -> dict[str, Any]:
    if not is_main():            # under a multi-process launcher rank 0 evaluates; the others are done
        return {}
    cfg, ev = ctx.cfg, ctx.stage.settings
    problems = load_source(ctx.stage.data or cfg.data.eval, cfg.data.task)
    targets = [(m, ctx.finals[m]) for m in ev.models]
    current = next((k for k, v in ctx.finals.items() if v == ctx.model_path), "base")
    if current not in ev.models:
        targets.append((current, ctx.model_path))
    out_dir = eval_dir(ctx.run.root, ctx.name)
    results: list[EvalResult] = []
    for label, path in targets:
        saved = out_dir / f"{label}.json"
        if saved.is_file():                     # resumed run: this model was scored already
            res = EvalResult.load(saved)
        else:
            res = evaluate(path, problems, ev, cfg.rewards, cfg.model, cfg.data, label, cfg.run.seed)
            res.save(saved)
        print(f"[earl] held-out {res.summary()}")
        results.append(res)
    summary: dict[str, Any] = {"pass_at_k": {r.label: {str(k): round(v, 4) for k, v in r.pass_at_k.items()}
                                             for r in results}}
    if any(r.metrics for r in results):
        summary["metrics"] = {r.label: r.metrics for r in results}
    if all(r.greedy for r in results):
        summary["greedy_pass_at_1"] = {r.label: round(r.greedy_pass_at_1, 4) for r in results}
    for a, b in itertools.pairwise(results):
        for greedy in (False, True) if a.greedy and b.greedy else (False,):
            cmp = paired(a, b, greedy=greedy)
            what = "greedy" if greedy else ("first sample" if a.greedy else "")
            print(f"[earl] {a.label} -> {b.label}{f' ({what})' if what else ''}: {cmp['up']} fail->pass, "
                  f"{cmp['down']} pass->fail (sign test p = {cmp['sign_test_p']:.3g}, {cmp['problems']} problems)")
            summary[f"{a.label}->{b.label}" + (" greedy" if greedy else "")] = cmp
    tables = [t for t in (family_table(results, "family"), family_table(results, "phrasing")) if t]
    if tables:
        (out_dir / "families.md").write_text("\n\n".join(tables) + "\n")
        print("[earl] held-out by family and wording:\n" + "\n\n".join(tables))
    return summary
