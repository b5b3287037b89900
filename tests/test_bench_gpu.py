"""bench/gpu.py (`make bench-gpu`) on CPU with its tiny shape: the code a rented GPU will run, minus the size.

Only the table's shape and finiteness are checked, never timings (a test must not depend on load).
"""
from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench import gpu
from bench.run import discover

STEP_ROWS = ("GRPO step: generate + reward + loss fwd/bwd", "loss fwd/bwd only", "loss fwd/bwd only")
ENTROPY_ROWS = ("TRL fused LM head", "earl `chunked_entropy`, 256 rows", "earl `chunked_entropy`, 1024 rows",
                "full fp32 log_softmax")


def _finite(cell: str) -> bool:
    try:
        return math.isfinite(float(cell))
    except ValueError:
        return False


def _tables(markdown: str) -> list[list[list[str]]]:
    """Data rows of each markdown table, as lists of cells (header and separator dropped)."""
    tables, rows = [], []
    for line in markdown.splitlines() + [""]:
        if line.startswith("|"):
            rows.append([c.strip() for c in line.strip("|").split(" | ")])
        elif rows:
            tables.append(rows[2:])
            rows = []
    return tables


@pytest.mark.slow
def test_tiny_run_on_cpu_prints_and_writes_the_gpu_section(tmp_path, capsys):
    out = tmp_path / "BENCHMARKS.md"
    out.write_text("# Benchmarks\n\nCPU header.\n\n<!-- bench:earl -->\n## earl\n\nkept\n")
    assert gpu.main(["--device", "cpu", "--tiny", "--steps", "1", "--out", str(out)]) == 0
    table = capsys.readouterr().out
    steps, entropy = _tables(table)

    assert len(steps) == len(STEP_ROWS) and all(r[0].startswith(p) for r, p in zip(steps, STEP_ROWS))
    for name, trl_s, earl_s, ratio in steps:
        assert _finite(trl_s) and _finite(earl_s) and _finite(ratio) and float(ratio) > 0, name

    assert len(entropy) == len(ENTROPY_ROWS) and all(r[0].startswith(p) for r, p in zip(entropy, ENTROPY_ROWS))
    for name, mib, ms, vs_full, diff in entropy:
        assert all(_finite(c) for c in (mib, ms, vs_full, diff)), name
        assert float(mib) > 0 and float(diff) < 1e-3, name       # every path measured the same entropy
    assert float(entropy[-1][3]) == 1.0

    text = out.read_text()
    assert text.startswith("# Benchmarks\n\nCPU header.\n"), "a GPU run keeps the file's own header"
    assert "<!-- bench:earl -->\n## earl\n\nkept\n" in text
    section = table[table.index("## GPU: EARL vs TRL"):].strip()      # stdout may carry library warnings first
    assert f"<!-- bench:gpu -->\n{section}\n" in text


def test_live_bytes_counts_each_storage_once_until_freed():
    with gpu.LiveBytes() as meter:
        a = torch.empty(1000, dtype=torch.float32)           # 4000 bytes
        view = a[:10]
        a.add_(1.0)                                          # in place: nothing new
        del a                                                # still held by the view
        b = torch.empty(500, dtype=torch.float32)            # +2000
        del view, b
        c = torch.empty(1000, dtype=torch.float32)           # reuses the freed budget
        del c
    assert meter.peak == 6000 and meter.live == 0


def test_gpu_bench_is_not_part_of_make_bench():
    assert "gpu" not in discover() and (REPO / "bench" / "gpu.py").is_file()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA message")
def test_cuda_requested_without_cuda_fails_at_once():
    with pytest.raises(SystemExit, match="no CUDA device"):
        gpu.preflight("cuda", "auto")


def test_padded_tokenizer_decodes_every_id():
    tok = gpu.padded_tokenizer(gpu.TINY.vocab)
    assert len(tok) == gpu.TINY.vocab
    assert tok.decode([gpu.TINY.vocab - 1]) != "" and tok.pad_token_id == 0 and tok.eos_token_id == 1


def test_an_oom_is_reported_in_the_table_not_raised():
    def oom():
        raise torch.OutOfMemoryError("CUDA out of memory")
    assert gpu.guarded("oom", oom) == "OOM"
    assert gpu.guarded("bug", lambda: 1 / 0) == "failed: ZeroDivisionError"
    h = torch.ones(4)
    rows = gpu._entropy_table_rows({"TRL fused LM head": (100, 0.01, h), gpu.FULL: "OOM"})
    assert (rows[0].vs_full, rows[1].extra_bytes) == ("n/a", "OOM")
    md = gpu.render(gpu.TINY, torch.float32, "about", [gpu._failed_row("GRPO step", "OOM")], rows, 4)
    assert "| GRPO step | OOM | OOM | OOM |" in md and f"| {gpu.FULL} | OOM | OOM | OOM | OOM |" in md
