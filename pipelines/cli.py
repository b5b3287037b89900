"""The `earl` command line: a thin dispatcher over ``pipelines.commands.<name>`` modules.

Command modules are imported lazily so `earl --help` and `earl score` stay fast (no torch import).

Errors a user can fix (bad config, missing file or program, unreadable data: `USER_ERRORS`) print as one line
naming the command, exit code 2; `--debug` or EARL_DEBUG=1 shows the traceback instead. Ctrl-C exits 130
with no traceback.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys

from pipelines.preemption import EXIT_INTERRUPTED
from sandboxes.tools import ToolNotFound

EXIT_USAGE = 2
USER_ERRORS = (ValueError, OSError, ToolNotFound)    # what a user fixes: shown as one line, exit 2

# sub-command -> (module, one-line help). Order is the order shown in --help.
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("pipelines.commands.train", "run a staged pipeline (sft -> rl -> eval) from a YAML config"),
    "eval": ("pipelines.commands.evaluate", "sample n completions per problem and report pass@k"),
    "score": ("pipelines.commands.score", "score completions against problems (Verilog, security repair)"),
    "entropy": ("pipelines.commands.entropy", "per-token entropy analysis of a model on a problem set"),
    "gen-tasks": ("pipelines.commands.gen_tasks", "write procedurally generated RTL tasks as JSONL"),
    "data": ("pipelines.commands.data", "fetch a public benchmark (verilogeval, rtllm) at a pinned commit"),
    "submit": ("pipelines.commands.submit", "render and submit a Slurm batch job for a config"),
}


def _load(name: str):
    module, _ = COMMANDS[name]
    return importlib.import_module(module)


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="earl",
        description="RL fine-tuning of code LLMs on verifiable rewards (entropy-gated GRPO).",
    )
    parser.add_argument("--debug", action="store_true",
                        help="show the traceback of an error instead of one line (or set EARL_DEBUG=1)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    wanted = None
    if argv:
        wanted = next((a for a in argv if not a.startswith("-")), None)
    for name, (_, help_text) in COMMANDS.items():
        if wanted == name:
            _load(name).add_parser(sub.add_parser(name, help=help_text, description=help_text))
        else:  # cheap placeholder: only the chosen command's module is imported
            sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 0
    debug = args.debug or os.environ.get("EARL_DEBUG", "") not in ("", "0")
    try:
        return int(_load(args.command).run(args) or 0)
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"earl {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except USER_ERRORS as exc:
        if debug:
            raise
        print(f"earl {args.command}: error: {one_line(exc)} (--debug for the traceback)", file=sys.stderr)
        return EXIT_USAGE


def one_line(exc: BaseException) -> str:
    """An exception as one line: its message (its type when it has none), newlines folded."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, OSError) and exc.filename and str(exc.filename) not in text:
        text = f"{exc.filename}: {text}"
    return text


if __name__ == "__main__":
    sys.exit(main())
