"""The tiny offline model: builds without the hub, loads with Auto*, tokenizer is exact and digit-split,
generation runs with left padding, builds are cached and deterministic."""
from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import json
from pathlib import Path

import pytest

from pipelines.tasks.rtlgen import generate, solution
from pipelines.tiny import TinyConfig, build_tiny, load_tiny

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    return build_tiny(cache_dir=tmp_path_factory.mktemp("tiny-cache"))


@pytest.fixture(scope="module")
def tok(tiny_dir):
    return transformers.AutoTokenizer.from_pretrained(tiny_dir)


def test_folder_is_a_plain_hf_checkpoint(tiny_dir):
    names = {p.name for p in tiny_dir.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= names
    config = json.loads((tiny_dir / "config.json").read_text())
    assert config["model_type"] == "llama" and config["tie_word_embeddings"] is True
    assert (config["hidden_size"], config["num_hidden_layers"], config["num_attention_heads"]) == (256, 4, 4)


def test_model_loads_with_auto_and_has_the_intended_size(tiny_dir, tok):
    model = transformers.AutoModelForCausalLM.from_pretrained(tiny_dir)
    assert type(model).__name__ == "LlamaForCausalLM"
    assert next(model.parameters()).dtype == torch.float32
    n = sum(p.numel() for p in model.parameters())
    assert 2_500_000 <= n <= 4_000_000, n
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()  # tied
    assert model.config.vocab_size == len(tok) and 500 <= len(tok) <= 1000
    assert model.config.eos_token_id == tok.eos_token_id and model.config.pad_token_id == tok.pad_token_id


def test_tokenizer_special_tokens_and_plain_format(tok):
    assert (tok.bos_token, tok.eos_token, tok.pad_token) == ("<s>", "</s>", "<pad>")
    assert len({tok.bos_token_id, tok.eos_token_id, tok.pad_token_id}) == 3
    assert tok.padding_side == "left"
    assert not getattr(tok, "chat_template", None)  # chat-free: prompts are plain text
    ids = tok("// spec\n").input_ids
    assert ids[0] == tok.bos_token_id and tok.eos_token_id not in ids


def test_tokenizer_round_trips_verilog_exactly(tok):
    texts = [p.spec + solution(p) for p in generate(40, seed=8, split="heldout")]
    texts += ["module  m(input\t[15:0] x);\r\n  assign y = 16'hBEEF ^ x; // naïve ünïcode ✓\nendmodule",
              "   leading spaces and trailing   ", "", "\n\n"]
    for text in texts:
        ids = tok(text, add_special_tokens=False).input_ids
        assert tok.decode(ids) == text
        assert tok.decode(tok(text).input_ids, skip_special_tokens=True) == text


def test_digits_are_split_one_by_one(tok):
    ids = tok("output [15:0] q; 8'd255 + 1024", add_special_tokens=False).input_ids
    tokens = tok.convert_ids_to_tokens(ids)
    digit_tokens = [t for t in tokens if any(c.isdigit() for c in t)]
    assert digit_tokens and all(len(t) == 1 for t in digit_tokens), tokens
    assert "".join(digit_tokens) == "1508" + "255" + "1024"


def test_generation_runs_with_left_padding(tiny_dir):
    model, tok = load_tiny(tiny_dir)
    prompts = [p.prompt for p in generate(2, seed=4)]
    prompts = [prompts[0], prompts[0][: len(prompts[0]) // 3]]  # different lengths force padding
    batch = tok(prompts, return_tensors="pt", padding=True)
    assert (batch.input_ids[1, 0] == tok.pad_token_id) and batch.attention_mask[1, 0] == 0  # left pad
    with torch.no_grad():
        out = model.generate(**batch, max_new_tokens=6, do_sample=False)
        assert out.shape == (2, batch.input_ids.shape[1] + 6)
        # left padding must not change what the model sees: last-position logits match the unpadded run
        alone = tok(prompts[1:], return_tensors="pt")
        padded = model(**batch).logits[1, -1]
        single = model(**alone).logits[0, -1]
    assert torch.allclose(padded, single, atol=1e-4)


def test_build_is_cached_and_copied(tiny_dir, tmp_path):
    cache = tiny_dir.parent
    assert build_tiny(cache_dir=cache) == tiny_dir  # reused, not rebuilt
    before = (tiny_dir / "model.safetensors").stat().st_mtime_ns
    out = build_tiny(tmp_path / "run" / "base", cache_dir=cache)
    assert (out / "model.safetensors").read_bytes() == (tiny_dir / "model.safetensors").read_bytes()
    assert (tiny_dir / "model.safetensors").stat().st_mtime_ns == before
    assert tiny_dir.name == TinyConfig().key()


def test_same_seed_same_weights_other_seed_differs(tmp_path):
    small = {"corpus_tasks": 200, "vocab_size": 520}
    a = build_tiny(cache_dir=tmp_path / "a", seed=1, **small)
    b = build_tiny(cache_dir=tmp_path / "b", seed=1, **small)
    c = build_tiny(cache_dir=tmp_path / "c", seed=2, **small)
    assert (a / "model.safetensors").read_bytes() == (b / "model.safetensors").read_bytes()
    assert (a / "tokenizer.json").read_text() == (b / "tokenizer.json").read_text()
    assert (a / "model.safetensors").read_bytes() != (c / "model.safetensors").read_bytes()
    with pytest.raises(TypeError):
        build_tiny(cache_dir=tmp_path / "d", hidden=3)  # a misspelt option is an error, not ignored


def test_security_corpus_tokenizer_halves_python_length():
    from pipelines.tiny import corpus, train_tokenizer
    python = corpus(40, seed=3, kinds="security")
    rtl_tok = train_tokenizer(corpus(300, kinds="rtl"), 640)
    sec_tok = train_tokenizer(corpus(300, kinds="security"), 640)
    n_rtl = sum(len(rtl_tok(t).input_ids) for t in python)
    n_sec = sum(len(sec_tok(t).input_ids) for t in python)
    assert n_sec < 0.7 * n_rtl, (n_sec, n_rtl)
    assert sec_tok.decode(sec_tok(python[0]).input_ids, skip_special_tokens=True) == python[0]
    assert TinyConfig(corpus="rtl+security").key() != TinyConfig().key()
    with pytest.raises(ValueError, match="model.tiny.corpus"):
        TinyConfig(corpus="cobol")


def test_untied_embeddings_option_gives_a_separate_output_layer(tmp_path):
    small = {"corpus_tasks": 200, "vocab_size": 520}
    tied = transformers.AutoModelForCausalLM.from_pretrained(build_tiny(cache_dir=tmp_path / "a", **small))
    untied_dir = build_tiny(cache_dir=tmp_path / "b", tie_word_embeddings=False, **small)
    untied = transformers.AutoModelForCausalLM.from_pretrained(untied_dir)
    assert tied.lm_head.weight.data_ptr() == tied.get_input_embeddings().weight.data_ptr()
    assert untied.lm_head.weight.data_ptr() != untied.get_input_embeddings().weight.data_ptr()
    assert not torch.equal(untied.lm_head.weight, untied.get_input_embeddings().weight)   # saved and reloaded
    assert TinyConfig(tie_word_embeddings=False).key() != TinyConfig().key()
