"""The `earl` command line: a thin dispatcher over ``pipelines.commands.<name>`` modules.

Command modules are imported lazily so `earl --help` and `earl score` stay fast (no torch import).
"""
from __future__ import annotations

import argparse
import importlib
import sys

# sub-command -> (module, one-line help). Order is the order shown in --help.
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("pipelines.commands.train", "run a staged pipeline (sft -> rl -> eval) from a YAML config"),
    "eval": ("pipelines.commands.evaluate", "sample n completions per problem and report pass@k"),
    "score": ("pipelines.commands.score", "score completions against problems (Verilog, security repair)"),
    "entropy": ("pipelines.commands.entropy", "per-token entropy analysis of a model on a problem set"),
    "gen-tasks": ("pipelines.commands.gen_tasks", "write procedurally generated RTL tasks as JSONL"),
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
    return int(_load(args.command).run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
