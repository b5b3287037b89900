"""Run report: plots of the RL curves (reward, pass rate, entropy, gated fraction vs step) and report.md
with stage times, held-out pass@k (and task metrics such as secure@1) per model and paired fail->pass /
pass->fail counts."""
from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

# plot title -> metric-name fragments tried in order (TRL and EARLGRPOTrainer names)
PLOTS: dict[str, tuple[str, ...]] = {
    "loss": ("loss",),
    "reward": ("reward",),
    "pass_rate": ("/pass_rate",),
    "entropy": ("earl/entropy_mean", "entropy"),
    "gated_fraction": ("earl/gated_fraction",),
}


def _series(rows: list[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    by_step: dict[int, float] = {}
    for r in rows:
        v = r.get(key)
        if isinstance(v, (int, float)):
            by_step[int(r["step"])] = float(v)
    steps = sorted(by_step)
    return steps, [by_step[s] for s in steps]


def _pick(rows: list[dict[str, Any]], fragments: tuple[str, ...]) -> str | None:
    keys = {k for r in rows for k in r}
    for frag in fragments:
        exact = [k for k in keys if k == frag]
        if exact:
            return exact[0]
        found = sorted(k for k in keys if k.endswith(frag))
        if found:
            return found[0]
    return None


def write_plots(rows: list[dict[str, Any]], out_dir: Path, stage: str) -> list[Path]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for title, frags in PLOTS.items():
        key = _pick(rows, frags)
        if key is None:
            continue
        steps, vals = _series(rows, key)
        if not steps:
            continue
        fig, ax = plt.subplots(figsize=(5, 3))
        ax.plot(steps, vals, marker=".", linewidth=1)
        ax.set_xlabel("step")
        ax.set_ylabel(key)
        ax.set_title(f"{stage}: {title}")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        path = out_dir / f"{stage}_{title}.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        paths.append(path)
    return paths


def _metrics_table(results: list) -> list[str]:
    """The task's own metrics per model (security: secure@1, secure_and_correct@1, similarity)."""
    from pipelines.evaluate import format_metric
    names = [k for k, v in next((r.metrics for r in results if r.metrics), {}).items() if isinstance(v, float)]
    if not names:
        return []
    out = ["", "| model | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for r in results:
        cells = [r.metrics.get(k) for k in names]
        out.append(f"| {r.label} | " + " | ".join(format_metric(k, v) if isinstance(v, float) else ""
                                                  for k, v in zip(names, cells)) + " |")
    return out


def _eval_section(title: str, folder: Path, order: list[str]) -> list[str]:
    """One eval stage's table (pass@k per evaluated model, greedy pass@1 when sampled), paired counts and
    per-family / per-wording tables, from its eval/*.json."""
    from pipelines.evaluate import EvalResult, family_table, paired
    results = [EvalResult.load(p) for p in sorted(folder.glob("*.json"), key=lambda p: p.stat().st_mtime)]
    results.sort(key=lambda r: order.index(r.label) if r.label in order else -1)
    if not results:
        return []
    ks = results[0].k
    greedy = all(r.greedy for r in results)       # sampled pass@k next to greedy pass@1
    lines = ["", f"## {title}", "",
             "| model | problems | n | " + " | ".join(f"pass@{k}" for k in ks)
             + (" | greedy pass@1" if greedy else "") + " |",
             "|---|---|---|" + "---|" * (len(ks) + greedy)]
    for r in results:
        lines.append(f"| {r.label} | {len(r.problems)} | {r.n} | "
                     + " | ".join(f"{r.pass_at_k.get(k, float('nan')):.1%}" for k in ks)
                     + (f" | {r.greedy_pass_at_1:.1%}" if greedy else "") + " |")
    lines += _metrics_table(results)
    for a, b in itertools.pairwise(results):
        for g in (False, True) if greedy else (False,):
            c = paired(a, b, greedy=g)
            what = " (greedy)" if g else (" (first sample)" if greedy else "")
            lines.append(f"\n{a.label} → {b.label}{what}: {c['up']} fail→pass, {c['down']} pass→fail "
                         f"(two-sided sign test p = {c['sign_test_p']:.3g}) on {c['problems']} problems.")
    for key in ("family", "phrasing"):
        table = family_table(results, key)
        if table:
            lines += ["", f"### {title.removeprefix('Held-out evaluation').strip(': ') or 'Held-out'} by {key}",
                      "", table]
    return lines


def write_report(run) -> Path:
    """Write <run>/report.md (and plots/) from the run folder's state, metrics and eval results."""
    state = run.load_state()
    lines = [f"# Run report: {run.root.name}", ""]
    lines += ["| stage | kind | wall s | result |", "|---|---|---|---|"]
    for name, st in state.get("stages", {}).items():
        extra = {k: v for k, v in st.items() if k not in ("status", "kind", "wall_s", "model", "pass_at_k")
                 and not isinstance(v, dict)}
        lines.append(f"| {name} | {st.get('kind')} | {st.get('wall_s', '')} | "
                     f"{st.get('status')} {json.dumps(extra) if extra else ''} |")
    if state.get("finished") and state.get("started"):
        lines += ["", f"Total wall time: {state['finished'] - state['started']:.0f} s"]
    order = list(state.get("stages", {}))
    for title, folder in [("Held-out evaluation", run.root / "eval")] + [
            (f"Held-out evaluation: {d.name}", d) for d in sorted((run.root / "eval").glob("*/"))]:
        lines += _eval_section(title, folder, order)
    plots: list[Path] = []
    for name, st in state.get("stages", {}).items():
        if st.get("kind") in ("rl", "sft"):
            rows = run.read_metrics(name)
            if rows:
                plots += write_plots(rows, run.root / "plots", name)
    if plots:
        lines += ["", "## Curves", ""] + [f"![{p.stem}](plots/{p.name})" for p in plots]
    path = run.root / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path
