"""`earl data fetch verilogeval|rtllm [--to DIR] [--url URL]`: a pinned, verified benchmark checkout.

Prints the checkout folder (stdout, alone, for scripts); configs name it `path: verilogeval:spec-to-rtl`
or `path: rtllm`. See pipelines/benchmarks.py for the pins, the cache and the URL overrides.
"""
from __future__ import annotations

import argparse
import sys


def add_parser(parser: argparse.ArgumentParser) -> None:
    from pipelines.benchmarks import BENCHMARKS

    sub = parser.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    fetch = sub.add_parser("fetch", help="clone a benchmark at its pinned commit and verify it",
                           description="clone a benchmark at its pinned commit into the cache (or --to DIR) "
                                       "and verify its file count")
    fetch.add_argument("name", choices=sorted(BENCHMARKS), help="benchmark")
    fetch.add_argument("--to", metavar="DIR", default=None,
                       help="checkout folder (default: ~/.cache/earl/benchmarks/<name>-<commit>; "
                            "$EARL_CACHE/benchmarks/... when set)")
    fetch.add_argument("--url", default=None,
                       help="clone from this repository instead (a mirror, a local path); "
                            "or set EARL_<NAME>_URL")


def run(args: argparse.Namespace) -> int:
    from pipelines.benchmarks import BENCHMARKS, fetch

    bench = BENCHMARKS[args.name]
    path = fetch(args.name, to=args.to, url=args.url)
    subsets = ", ".join(f"{bench.name}:{k}" if s.folder else bench.name for k, s in bench.subsets.items())
    print(f"{bench.name} at {bench.commit[:12]}, verified; configs: path: {subsets}", file=sys.stderr)
    print(path)
    return 0
