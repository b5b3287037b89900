"""Chunked entropy equals a float64 reference (any chunking, temperature, dtype, masked vocab), and the
`earl entropy` analysis writes a ranking and an HTML page from a real (tiny) model."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from pipelines.entropy import (
    ScoredCompletion,
    chunked_entropy,
    completion_entropies,
    full_softmax_entropy,
    reference_entropy,
)
from pipelines.entropy_report import rank_token_types, render_html
from tests.helpers.tiny_grpo import tiny_model, tiny_tokenizer


@pytest.mark.parametrize("chunk", [1, 7, 64, 4096])
@pytest.mark.parametrize("temperature", [0.6, 1.0, 1.7])
def test_chunked_entropy_matches_float64_reference(chunk, temperature):
    torch.manual_seed(0)
    logits = torch.randn(3, 37, 501) * 4
    got = chunked_entropy(logits, temperature, chunk)
    assert got.shape == (3, 37) and got.dtype == torch.float32
    torch.testing.assert_close(got.double(), reference_entropy(logits, temperature), rtol=1e-5, atol=1e-5)


def test_chunked_entropy_bf16_logits_match_reference_of_the_same_values():
    torch.manual_seed(1)
    logits = (torch.randn(50, 1000) * 3).bfloat16()
    torch.testing.assert_close(chunked_entropy(logits, 0.8, 16).double(), reference_entropy(logits.float(), 0.8),
                               rtol=1e-5, atol=1e-5)


def test_extreme_and_masked_logits():
    logits = torch.tensor([[1e4, 0.0, -1e4, float("-inf")],     # one-hot: 0 nats
                           [0.0, 0.0, 0.0, 0.0],                 # uniform: log 4
                           [5.0, 5.0, float("-inf"), float("-inf")]])  # two-way: log 2
    got = chunked_entropy(logits, 1.0, 2)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got.double(), torch.tensor([0.0, 1.3862943611, 0.6931471806], dtype=torch.float64),
                               rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(got.double(), reference_entropy(logits), rtol=1e-6, atol=1e-6)


def test_full_softmax_baseline_agrees():
    torch.manual_seed(2)
    logits = torch.randn(20, 300)
    torch.testing.assert_close(full_softmax_entropy(logits, 1.3), chunked_entropy(logits, 1.3, 3))


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="temperature"):
        chunked_entropy(torch.zeros(2, 3), 0.0)
    with pytest.raises(ValueError, match="chunk_size"):
        chunked_entropy(torch.zeros(2, 3), 1.0, 0)


def test_completion_entropies_of_a_model_match_reference():
    tok = tiny_tokenizer()
    model = tiny_model(tok).eval()
    torch.manual_seed(3)
    ids = torch.randint(2, len(tok), (3, 12))
    am = torch.ones_like(ids)
    am[0, :4] = 0                                  # left padding
    got = completion_entropies(model, ids, am, n_completion=5, temperature=0.7, chunk_size=3, batch_size=2)
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=am).logits
    ref = reference_entropy(logits[:, -6:-1], 0.7)   # position t-1 predicts completion token t
    torch.testing.assert_close(got.double(), ref, rtol=1e-5, atol=1e-5)


def test_rank_token_types_orders_by_mean_and_filters_by_count():
    comps = [ScoredCompletion("p", 0, [" always", "@", "(", " always", " x"], [2.0, 0.1, 0.2, 1.0, 3.0]),
             ScoredCompletion("p", 1, ["always", "@", "@"], [3.0, 0.3, 0.2])]
    rows = rank_token_types(comps, min_count=2)
    assert [(r["token"], r["count"]) for r in rows] == [("always", 3), ("@", 3)]
    assert rows[0]["mean_entropy"] == pytest.approx(2.0) and rows[0]["rank"] == 1
    assert rank_token_types(comps, min_count=1)[0]["token"] == "x"


def test_html_escapes_and_colours(tmp_path):
    page = render_html([ScoredCompletion("p<1>", 0, ["<a>", " b"], [0.0, 2.0])], tmp_path / "e.html").read_text()
    assert "&lt;a&gt;" in page and "p&lt;1&gt;" in page and "<a>" not in page
    assert "rgba(220,30,30,0.00)" in page and "rgba(220,30,30,1.00)" in page


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tiny")
    tok = tiny_tokenizer()
    tiny_model(tok).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def _args(**kw):
    from argparse import ArgumentParser

    from pipelines.commands import entropy as cmd
    p = ArgumentParser()
    cmd.add_parser(p)
    argv = []
    for k, v in kw.items():
        argv += [f"--{k.replace('_', '-')}", str(v)]
    return cmd, p.parse_args(argv)


def test_earl_entropy_command_end_to_end(tiny_dir, tmp_path, capsys):
    problems = tmp_path / "p.jsonl"
    problems.write_text("".join(json.dumps({"id": f"t{i}", "spec": f"// task {i}\nmodule TopModule(input a);\n",
                                            "testbench": "module tb; endmodule"}) + "\n" for i in range(2)))
    out = tmp_path / "out"
    cmd, args = _args(model=tiny_dir, problems=problems, n=3, out=out, max_new_tokens=12, min_count=2,
                      temperature=0.9, chunk_size=5, batch_size=4)
    assert cmd.run(args) == 0
    rows = list(csv.DictReader((out / "entropy_tokens.csv").open()))
    data = json.loads((out / "entropy_tokens.json").read_text())
    assert rows and data["meta"]["n_completions"] == 6 and data["meta"]["n_tokens"] > 0
    means = [float(r["mean_entropy"]) for r in rows]
    assert means == sorted(means, reverse=True)
    assert all(int(r["count"]) >= 2 for r in rows)
    page = (out / "entropy.html").read_text()
    assert page.count("<pre>") == 6 and "title=" in page
    comps = [json.loads(line) for line in (out / "entropy_completions.jsonl").read_text().splitlines()]
    assert all(len(c["tokens"]) == len(c["entropies"]) > 0 for c in comps)
    assert "highest-entropy token types" in capsys.readouterr().out


def test_earl_entropy_reads_a_verilogeval_folder(tiny_dir, tmp_path, verilog_eval_dir):
    cmd, args = _args(model=tiny_dir, problems=verilog_eval_dir, n=1, limit=2, out=tmp_path, max_new_tokens=4,
                      min_count=1)
    assert cmd.run(args) == 0
    assert json.loads((tmp_path / "entropy_tokens.json").read_text())["meta"]["n_problems"] == 2


def test_earl_entropy_bad_input_is_a_clear_error(tiny_dir, tmp_path, capsys):
    cmd, args = _args(model=tiny_dir, problems=tmp_path / "missing.jsonl", out=tmp_path)
    assert cmd.run(args) == 2
    assert "missing.jsonl" in capsys.readouterr().err
    cmd, args = _args(model=tiny_dir, problems=tmp_path, out=tmp_path, n=0)
    assert cmd.run(args) == 2
    assert "--n" in capsys.readouterr().err
