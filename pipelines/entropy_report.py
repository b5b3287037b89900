"""The `earl entropy` report: token types ranked by mean entropy, as CSV/JSON, and an HTML page of
completions coloured by entropy. The numbers come from the kernel in pipelines/entropy.py."""
from __future__ import annotations

import csv
import html
import json
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from pipelines.entropy import ScoredCompletion, token_type


def rank_token_types(completions: Sequence[ScoredCompletion], min_count: int = 5) -> list[dict]:
    """Token types by mean entropy, highest first (ties by count, then name); types seen < min_count dropped."""
    sums: dict[str, list[float]] = defaultdict(list)
    for c in completions:
        for tok, h in zip(c.tokens, c.entropies, strict=False):
            sums[token_type(tok)].append(h)
    rows = []
    for tok, hs in sums.items():
        if len(hs) < min_count:
            continue
        mean = sum(hs) / len(hs)
        std = math.sqrt(sum((h - mean) ** 2 for h in hs) / len(hs))
        rows.append({"token": tok, "count": len(hs), "mean_entropy": mean, "std_entropy": std,
                     "max_entropy": max(hs)})
    rows.sort(key=lambda r: (-r["mean_entropy"], -r["count"], r["token"]))
    for rank, r in enumerate(rows, 1):
        r["rank"] = rank
    return rows


def write_token_ranking(rows: list[dict], out_dir: Path, meta: dict) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path, json_path = out_dir / "entropy_tokens.csv", out_dir / "entropy_tokens.json"
    cols = ["rank", "token", "count", "mean_entropy", "std_entropy", "max_entropy"]
    with csv_path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=cols)
        w.writeheader()
        w.writerows({k: r[k] for k in cols} for r in rows)
    json_path.write_text(json.dumps({"meta": meta, "tokens": rows}, indent=1, ensure_ascii=False), encoding="utf-8")
    return csv_path, json_path


def render_html(completions: Sequence[ScoredCompletion], path: Path, title: str = "per-token entropy") -> Path:
    """A self-contained page: every completion, each token's background as dark as its entropy is high."""
    all_h = sorted(h for c in completions for h in c.entropies)
    scale = all_h[int(0.99 * (len(all_h) - 1))] if all_h else 1.0   # 99th percentile = full colour
    scale = scale if scale > 0 else 1.0
    parts = [f"<!doctype html><meta charset='utf-8'><title>{html.escape(title)}</title>",
             ("<style>body{font-family:sans-serif}pre{font-family:monospace;white-space:pre-wrap;"
             "border:1px solid #ccc;padding:6px}span{border-radius:2px}</style>"),
             (f"<h1>{html.escape(title)}</h1><p>Background: entropy in nats (white 0, red &ge; {scale:.3f}, "
             "the 99th percentile). Hover a token for its value.</p>")]
    for c in completions:
        mean = sum(c.entropies) / len(c.entropies) if c.entropies else float("nan")
        parts.append(f"<h3>{html.escape(c.problem_id)} #{c.sample} &mdash; {len(c.tokens)} tokens, "
                     f"mean {mean:.3f} nats</h3><pre>")
        for tok, h in zip(c.tokens, c.entropies, strict=False):
            a = min(1.0, h / scale)
            parts.append(f"<span style='background:rgba(220,30,30,{a:.2f})' title='{h:.3f}'>"
                         f"{html.escape(tok)}</span>")
        parts.append("</pre>")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(parts), encoding="utf-8")
    return path


def write_completions(completions: Sequence[ScoredCompletion], path: Path) -> Path:
    with path.open("w", encoding="utf-8") as fh:
        for c in completions:
            fh.write(json.dumps(asdict(c), ensure_ascii=False) + "\n")
    return path
