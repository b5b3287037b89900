"""`earl gen-tasks`: write procedurally generated RTL tasks (canonical Problem JSONL)."""
from __future__ import annotations

import argparse
import sys
from collections import Counter

from pipelines.commands import comma_ints


def add_parser(parser: argparse.ArgumentParser) -> None:
    from pipelines.tasks.rtlgen import FAMILIES, HOLDOUT_MODES, PRESETS, SPLITS

    parser.add_argument("--n", type=int, required=True, help="number of distinct tasks")
    parser.add_argument("--seed", type=int, default=0, help="generator seed (same seed, same tasks)")
    parser.add_argument("--split", choices=SPLITS, default="train",
                        help="train or heldout; the two never share a prompt")
    parser.add_argument("--holdout", choices=HOLDOUT_MODES, default="prompt",
                        help="prompt: split by prompt text; names: held-out tasks use unseen port names")
    parser.add_argument("--families", default=None,
                        help=f"a preset ({', '.join(PRESETS)}) or a comma-separated subset of: "
                             f"{','.join(FAMILIES)}")
    parser.add_argument("--phrasings", default=None, type=_indices,
                        help="comma-separated spec wordings to draw, e.g. 0,1 (default: all)")
    parser.add_argument("--reference-only", action="store_true",
                        help="drop the generator's bench: rows of spec + reference, like the public RL datasets")
    parser.add_argument("--out", required=True, help="output JSONL path")


def _indices(text: str) -> list[int]:
    try:
        return comma_ints(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def run(args: argparse.Namespace) -> int:
    from pipelines.tasks.rtlgen import generate
    from rewards.verilog.problems import write_jsonl

    try:
        problems = generate(args.n, seed=args.seed, split=args.split, holdout=args.holdout,
                            families=args.families, phrasings=args.phrasings, reference_only=args.reference_only)
    except ValueError as exc:
        print(f"earl gen-tasks: {exc}", file=sys.stderr)
        return 2
    path = write_jsonl(problems, args.out)
    mix = Counter(p.meta["family"] for p in problems)
    print(f"wrote {len(problems)} {args.split} tasks (seed {args.seed}) to {path}")
    print("families: " + ", ".join(f"{k} {v}" for k, v in sorted(mix.items())))
    return 0
