"""`earl entropy`: sample completions from any model on any problem set, score each token's entropy,
rank token types by mean entropy, and write an HTML page of completions coloured by entropy.

    earl entropy --model runs/x/sft/final --problems ../shared/data/verilog-eval-v2-sample --n 4 --out out/ent
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from pipelines.tasks import kinds

log = logging.getLogger(__name__)


def add_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="model folder (or a hub id present in the local cache)")
    parser.add_argument("--tokenizer", default=None, help="tokenizer folder if not beside the model")
    parser.add_argument("--problems", required=True,
                        help="the problem sets `earl eval` takes: JSONL, a VerilogEval or RTLLM folder, or a "
                             "generator spec rtl:N[:seed[:split]] / security:N[:seed[:split]]")
    parser.add_argument("--task", choices=kinds.names(), default=None,
                        help="task kind (default: from the generator spec, else verilog)")
    parser.add_argument("--n", type=int, default=4, help="completions per problem (default 4)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--limit", type=int, default=None, help="use only the first N problems")
    parser.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (entropy is at it)")
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--min-count", type=int, default=5, help="rank only token types seen this often")
    parser.add_argument("--chunk-size", type=int, default=256,
                        help="tokens per entropy chunk (fp32 temporaries: chunk × vocab)")
    parser.add_argument("--batch-size", type=int, default=8, help="sequences per generate/forward batch")
    parser.add_argument("--prompt-format", choices=["plain", "chat"], default="plain",
                        help="chat: wrap each prompt with the tokenizer's chat template")
    parser.add_argument("--dtype", choices=["auto", "float32", "bfloat16", "float16"], default="auto")
    parser.add_argument("--device", default=None, help="cpu | cuda | cuda:N (default: cuda if available)")
    parser.add_argument("--seed", type=int, default=0)


def load_problem_set(spec: str, task: str | None = None) -> list:
    """The same problem specs as `earl eval` (pipelines.data.source_from_spec)."""
    from pipelines.data import load_source, source_from_spec, task_kind
    src = source_from_spec(spec)
    return load_source(src, task_kind(src, task).name)


def _prompts(problems, tokenizer, fmt: str) -> list[tuple[str, str]]:
    from pipelines.data import prompt_text
    out = []
    for p in problems:
        text = prompt_text(p)
        if fmt == "chat":
            if not getattr(tokenizer, "chat_template", None):
                raise ValueError("--prompt-format chat: the tokenizer has no chat template")
            text = tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                                 add_generation_prompt=True)
        out.append((p.id, text))
    return out


def _validate(args: argparse.Namespace) -> None:
    checks = [(args.n >= 1, "--n must be >= 1"), (args.temperature > 0, "--temperature must be > 0"),
              (args.max_new_tokens >= 1, "--max-new-tokens must be >= 1"),
              (args.min_count >= 1, "--min-count must be >= 1"), (args.chunk_size >= 1, "--chunk-size must be >= 1"),
              (args.batch_size >= 1, "--batch-size must be >= 1"),
              (args.limit is None or args.limit >= 1, "--limit must be >= 1")]
    for ok, msg in checks:
        if not ok:
            raise ValueError(msg)


def run(args: argparse.Namespace) -> int:
    from pipelines.modeling import check_model_path, check_tokenizer_path
    checks = [("", lambda: _validate(args)), ("--model: ", lambda: check_model_path(args.model)),
              ("--tokenizer: " if args.tokenizer else "--model: ",
               lambda: check_tokenizer_path(args.tokenizer or args.model)),
              ("--problems: ", lambda: load_problem_set(args.problems, args.task))]
    for flag, check in checks:         # cheap checks first; the last one returns the problems
        try:
            problems = check()
        except (ValueError, OSError) as exc:
            print(f"earl entropy: {flag}{exc}", file=sys.stderr)
            return 2
    if args.limit:
        problems = problems[: args.limit]
    if not problems:
        print(f"earl entropy: no problems in {args.problems}", file=sys.stderr)
        return 2

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from pipelines import entropy as E
    from pipelines import entropy_report as R

    torch.manual_seed(args.seed)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = "auto" if args.dtype == "auto" else getattr(torch, args.dtype)
    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer or args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=dtype).to(device).eval()  # pyright: ignore[reportArgumentType]
    prompts = _prompts(problems, tokenizer, args.prompt_format)

    completions = E.sample_with_entropy(model, tokenizer, prompts, n=args.n, temperature=args.temperature,
                                        max_new_tokens=args.max_new_tokens, chunk_size=args.chunk_size,
                                        batch_size=args.batch_size)
    rows = R.rank_token_types(completions, min_count=args.min_count)
    n_tok = sum(len(c.entropies) for c in completions)
    mean = sum(sum(c.entropies) for c in completions) / max(n_tok, 1)
    meta = {"model": args.model, "problems": args.problems, "n_problems": len(problems), "n": args.n,
            "temperature": args.temperature, "max_new_tokens": args.max_new_tokens, "min_count": args.min_count,
            "seed": args.seed, "n_completions": len(completions), "n_tokens": n_tok, "mean_entropy": mean}
    out = Path(args.out)
    csv_path, json_path = R.write_token_ranking(rows, out, meta)
    html_path = R.render_html(completions, out / "entropy.html", title=f"per-token entropy: {args.model}")
    R.write_completions(completions, out / "entropy_completions.jsonl")
    top = ", ".join(f"{r['token']}({r['mean_entropy']:.2f})" for r in rows[:10])
    print(f"{len(completions)} completions, {n_tok} tokens, mean entropy {mean:.4f} nats\n"
          f"highest-entropy token types: {top or '(none with count >= --min-count)'}\n"
          f"wrote {csv_path}, {json_path}, {html_path}")
    return 0
