"""`earl eval --model PATH --problems PATH --n 10 --k 1,5,10 [--out DIR]`: sample, score, pass@k."""
from __future__ import annotations

import argparse
import sys

from pipelines.commands import comma_ints
from pipelines.tasks import kinds


def add_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="checkpoint folder or hub id (e.g. runs/X/stages/rl/final)")
    parser.add_argument("--problems", required=True,
                        help="JSONL, VerilogEval folder, RTLLM folder, SVEN/security JSONL (with --task "
                             "security-repair), or a generator spec rtl:N[:seed[:split]] / security:N[:seed[:split]]")
    parser.add_argument("--task", choices=kinds.names(), default=None,
                        help="task kind (default: from the generator spec, else verilog)")
    parser.add_argument("--n", type=int, default=1, help="samples per problem")
    parser.add_argument("--k", default="1", help="comma-separated k values for pass@k (each <= n)")
    parser.add_argument("--temperature", type=float, default=None, help="default 0 (greedy) for n=1, else 0.8")
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--greedy", action="store_true",
                        help="with --n > 1 at T > 0: also decode greedily and report greedy pass@1")
    parser.add_argument("--max-new-tokens", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--backend", choices=["hf", "vllm"], default="hf")
    parser.add_argument("--limit", type=int, default=None, help="only the first N problems")
    parser.add_argument("--prompt-format", choices=["plain", "chat"], default=None,
                        help="default: chat when the tokenizer has a chat template, else plain")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--reward", default=None,
                        help="reward name from the registry (default: the task kind's, e.g. verilog_functional)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="write eval.json and table.md here")


def _prompt_format(model: str, wanted: str | None) -> str:
    if wanted:
        return wanted
    from pipelines.modeling import load_tokenizer
    return "chat" if getattr(load_tokenizer(model), "chat_template", None) else "plain"


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from pipelines.config import DataConfig, EvalSettings, ModelConfig, RewardEntry
    from pipelines.data import load_source, source_from_spec, task_kind
    from pipelines.evaluate import evaluate
    try:
        ks = comma_ints(args.k)
    except ValueError:
        print(f"earl eval: --k: expected comma-separated integers, got {args.k!r}", file=sys.stderr)
        return 2
    bad = [k for k in ks if not 1 <= k <= args.n]
    if bad:
        print(f"earl eval: --k: pass@{bad[0]} needs 1 <= k <= --n ({args.n})", file=sys.stderr)
        return 2
    temperature = args.temperature if args.temperature is not None else (0.0 if args.n == 1 else 0.8)
    if temperature == 0 and args.n > 1:
        print("earl eval: --temperature 0 (greedy) with --n > 1 gives identical samples", file=sys.stderr)
        return 2
    if args.greedy and temperature == 0:
        print("earl eval: --greedy adds a greedy decode next to sampling; the samples are greedy already "
              "(temperature 0)", file=sys.stderr)
        return 2
    from pipelines.modeling import check_model_path
    try:
        check_model_path(args.model)
    except ValueError as exc:
        print(f"earl eval: --model: {exc}", file=sys.stderr)
        return 2
    try:
        src = source_from_spec(args.problems)
        kind = task_kind(src, args.task)
        problems = load_source(src, kind.name)
    except (ValueError, OSError) as exc:
        print(f"earl eval: --problems: {exc}", file=sys.stderr)
        return 2
    ev = EvalSettings(n=args.n, k=ks, temperature=temperature, top_p=args.top_p,
                      max_new_tokens=args.max_new_tokens, batch_size=args.batch_size, backend=args.backend,
                      limit=args.limit, greedy=args.greedy)
    model_cfg = ModelConfig(name_or_path=args.model, dtype=args.dtype)
    data_cfg = DataConfig(prompt_format=_prompt_format(args.model, args.prompt_format))
    res = evaluate(args.model, problems, ev, [RewardEntry(name=args.reward or kind.default_reward)], model_cfg, data_cfg,
                   label=Path(args.model).name, seed=args.seed)
    from pipelines.evaluate import family_table
    families = "\n\n".join(t for t in (family_table([res], "family"), family_table([res], "phrasing")) if t)
    print(res.table())
    if families:
        print(families)
    print(res.summary())
    if args.out:
        out = Path(args.out)
        res.save(out / "eval.json")
        (out / "table.md").write_text(res.table() + "\n\n" + (families + "\n\n" if families else "")
                                      + res.summary() + "\n")
        print(f"[earl] wrote {out / 'eval.json'}")
    return 0
