"""The embedded offline default model: a byte-level BPE tokenizer and a ~3 M-parameter Llama, built locally.

Nothing is downloaded. The tokenizer is trained on generated RTL specs + solutions (digits split one by one
so widths and constants stay compositional); the model is a randomly initialised `LlamaForCausalLM` saved as
an ordinary Hugging Face folder, so every downstream stage (SFT, GRPO, eval) loads it with
``AutoModelForCausalLM`` / ``AutoTokenizer.from_pretrained(path)`` exactly like a hub model.
Prompts are plain text (no chat template): the `// spec` + `// Ports:` comment, then the module.
A Llama config is used on purpose: a Qwen2 config makes transformers swap in Qwen's tokenizer class.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

BOS, EOS, PAD = "<s>", "</s>", "<pad>"
BUILD_VERSION = 1      # bump when the recipe changes so cached builds are not reused
_DONE = "tiny_build.json"


@dataclass
class TinyConfig:
    """What the tiny model is; the defaults are the measured working point (≈ 3.3 M params, fp32)."""
    seed: int = 0
    vocab_size: int = 640          # BPE target; the trained vocab may come out a little smaller
    corpus_tasks: int = 4000       # generated train tasks the tokenizer is trained on
    corpus: str = "rtl"            # what the tokenizer is trained on: rtl | security | rtl+security
    hidden_size: int = 256
    intermediate_size: int = 688
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    max_position_embeddings: int = 512
    # tied input/output embeddings collapse names the model only ever copies (SQL table names drawn
    # uniformly: cosine 0.9, never copied); untied, the input side keeps them apart (security default)
    tie_word_embeddings: bool = True

    def __post_init__(self) -> None:
        from pipelines.tasks import kinds
        if any(p not in kinds.generators() for p in self.corpus.split("+")):
            raise ValueError(f"model.tiny.corpus: expected {' | '.join(kinds.generators())} or a '+' of them, "
                             f"got {self.corpus!r}")

    def key(self) -> str:
        blob = json.dumps({"v": BUILD_VERSION, **asdict(self)}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def default_cache_dir() -> Path:
    """`$EARL_CACHE/tiny`, else `<repo>/.cache/tiny` (git-ignored)."""
    root = os.environ.get("EARL_CACHE")
    return (Path(root) if root else Path(__file__).resolve().parents[1] / ".cache") / "tiny"


def _texts(generator: str, n_tasks: int, seed: int) -> list[str]:
    """Prompt + SFT target of `n_tasks` generated train tasks of the kind `generator` makes."""
    from pipelines.tasks import kinds
    kind = kinds.for_generator(generator)
    return [kind.prompt_text(t) + kind.completion_text(t) for t in kind.generate(n_tasks, seed=seed, split="train")]


def corpus(n_tasks: int, seed: int = 0, kinds: str = "rtl") -> list[str]:
    """Prompt + canonical completion texts of generated train tasks (what the model will read and write).

    A tokenizer that never saw Python splits it into ~2x more tokens, which a 3 M model then fails to copy:
    the security default trains its tokenizer on the security tasks.
    """
    return [text for generator in kinds.split("+") for text in _texts(generator, n_tasks, seed)]


def train_tokenizer(texts: Iterable[str], vocab_size: int = 640):
    """Byte-level BPE (exact round trip of any text), digits one per token, bos prepended on encode."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[PAD, BOS, EOS],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(list(texts), trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, tok.token_to_id(BOS))])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD,
                                   padding_side="left", model_max_length=512,
                                   clean_up_tokenization_spaces=False)


def tiny_model(cfg: TinyConfig, tokenizer):
    """A freshly initialised Llama sized by ``cfg`` (deterministic in cfg.seed)."""
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_hidden_layers, num_attention_heads=cfg.num_attention_heads,
        num_key_value_heads=cfg.num_attention_heads, max_position_embeddings=cfg.max_position_embeddings,
        tie_word_embeddings=cfg.tie_word_embeddings, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, dtype="float32",
    )
    torch.manual_seed(cfg.seed)
    model = LlamaForCausalLM(config).float()
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, max_new_tokens=128)
    return model


def _write(cfg: TinyConfig, out: Path) -> None:
    tokenizer = train_tokenizer(corpus(cfg.corpus_tasks, cfg.seed, cfg.corpus), cfg.vocab_size)
    model = tiny_model(cfg, tokenizer)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    n_params = sum(p.numel() for p in model.parameters())
    info = {"config": asdict(cfg), "key": cfg.key(), "vocab": len(tokenizer), "parameters": n_params}
    (out / _DONE).write_text(json.dumps(info, indent=2) + "\n")


def build_tiny(out_dir: str | Path | None = None, seed: int = 0, cache_dir: str | Path | None = None,
               **overrides) -> Path:
    """Build (once) the tiny tokenizer + model and return a folder `from_pretrained` can load.

    The build lands in ``cache_dir/<hash of the config>``; later calls reuse it. With ``out_dir`` the
    cached folder is copied there (a fresh, independent checkpoint, e.g. a run's starting point).
    """
    cfg = TinyConfig(seed=seed, **overrides)
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    built = cache / cfg.key()
    if not (built / _DONE).exists():
        cache.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{cfg.key()}-", dir=cache))
        try:
            _write(cfg, tmp)
            try:
                tmp.rename(built)          # atomic: a concurrent builder either wins or finds it done
            except OSError:
                if not (built / _DONE).exists():
                    raise
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    if out_dir is None:
        return built
    out = Path(out_dir)
    if not (out / _DONE).exists() or json.loads((out / _DONE).read_text()).get("key") != cfg.key():
        out.mkdir(parents=True, exist_ok=True)
        shutil.copytree(built, out, dirs_exist_ok=True)
    return out


def load_tiny(path: str | Path):
    """(model, tokenizer) from a folder, ready for batched generation (left padding, eval mode)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    tokenizer.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(path, dtype="float32")
    return model.eval(), tokenizer
