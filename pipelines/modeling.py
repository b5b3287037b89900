"""Load a model + tokenizer for a stage: a hub id, a local path, or `tiny` (built by pipelines/tiny.py).

Why one place: every stage (and `earl eval`) needs the same dtype, padding and LoRA handling; a stage's
final checkpoint is a plain folder the next stage loads through here.
"""
from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Any, get_args

import torch

from pipelines.config import Dtype, LoraConfig, ModelConfig


def torch_dtype(name: str) -> Any:
    """A `config.Dtype` name as torch wants it ("auto" stays a string)."""
    if name not in get_args(Dtype):
        raise ValueError(f"model.dtype: expected one of {list(get_args(Dtype))}, got {name!r}")
    return name if name == "auto" else getattr(torch, name)


def build_tiny(out_dir: str | Path, tiny_kwargs: dict[str, Any]) -> Path:
    """Build the embedded tiny model + tokenizer (pipelines/tiny.py) into `out_dir`; idempotent.
    Its init seed is `model.tiny.seed` (default 0), not run.seed: seeds of a sweep share one start."""
    out_dir = Path(out_dir)
    done = out_dir / ".built"
    if int(os.environ.get("RANK", "0")) != 0:        # other ranks wait for rank 0's build
        deadline = time.time() + 600
        while not done.is_file():
            if time.time() > deadline:
                raise TimeoutError(f"rank {os.environ.get('RANK')}: waited 600 s for {done}")
            time.sleep(0.5)
        return out_dir
    if done.is_file():
        return out_dir
    from pipelines import tiny
    try:
        tiny.build_tiny(out_dir, **tiny_kwargs)
    except TypeError as exc:
        raise ValueError(f"model.tiny: {exc} (fields of pipelines.tiny.TinyConfig)") from None
    done.touch()
    return out_dir


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def check_model_path(name: str) -> str:
    """Fail in a second, with a reason, where loading would fail late or retry for a minute offline:
    a local model folder needs config.json; a hub id must be in the local cache or on a reachable hub."""
    path = Path(os.path.expanduser(name))
    if path.exists():
        if not (path / "config.json").is_file():
            raise ValueError(f"{name} is not a model folder (no config.json in it; a run's models are "
                             "<run>/stages/<stage>/final)")
        return str(path)
    if not _HUB_ID.match(name) or name.startswith((".", "/", "~")):
        raise ValueError(f"{name} does not exist (neither a local folder nor a hub id like "
                         "Qwen/Qwen2.5-Coder-7B-Instruct)")
    from huggingface_hub import try_to_load_from_cache
    if isinstance(try_to_load_from_cache(name, "config.json"), str):
        return name
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on"):
        raise ValueError(f"{name} is neither a local folder nor in the Hugging Face cache, and HF_HUB_OFFLINE "
                         "is set (download it on a machine with access: `hf download NAME`)")
    return _check_on_hub(name)


def check_tokenizer_path(name: str) -> str:
    """A local folder must hold a tokenizer (else transformers guesses and asks for sentencepiece)."""
    path = Path(os.path.expanduser(name))
    if path.is_dir() and not any((path / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json")):
        raise ValueError(f"{name} holds no tokenizer (tokenizer.json / tokenizer_config.json); give --tokenizer")
    return name


def _check_on_hub(name: str) -> str:
    from huggingface_hub import model_info
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError
    try:
        model_info(name, timeout=10)
    except GatedRepoError:
        return name                                   # exists; loading says what access it needs
    except RepositoryNotFoundError:
        raise ValueError(f"{name}: no such model on the Hugging Face hub (and no local folder of that name)") \
            from None
    except Exception as exc:  # noqa: BLE001 - the transport's error class varies by hub version: unreachable
        raise ValueError(f"{name} is neither a local folder nor in the Hugging Face cache, and the hub cannot "
                         f"be reached ({type(exc).__name__}); pre-download it or give a local path") from None
    return name


def resolve_model_path(name_or_path: str) -> str:
    """A local folder wins; otherwise a hub id (offline machines need it in the HF cache)."""
    p = Path(os.path.expanduser(name_or_path))
    return str(p) if p.exists() else name_or_path


def tokenizer_path(model_path: str, cfg: ModelConfig) -> str:
    """A stage's own folder carries its tokenizer; otherwise model.tokenizer (or the model id)."""
    if (Path(model_path) / "tokenizer_config.json").is_file():
        return model_path
    return cfg.tokenizer or model_path


def load_tokenizer(path: str, padding_side: str = "left"):
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(resolve_model_path(path))
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = padding_side        # generation needs left padding (transformers 5 TokenizersBackend)
    return tok


def load_model(path: str, cfg: ModelConfig):
    from transformers import AutoModelForCausalLM
    kwargs: dict[str, Any] = {"dtype": torch_dtype(cfg.dtype), "trust_remote_code": cfg.trust_remote_code}
    if cfg.attn_implementation:
        kwargs["attn_implementation"] = cfg.attn_implementation
    return AutoModelForCausalLM.from_pretrained(resolve_model_path(path), **kwargs)


def peft_config(lora: LoraConfig | None):
    if lora is None:
        return None
    from peft import LoraConfig as PeftLora
    return PeftLora(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                    target_modules=lora.target_modules, task_type="CAUSAL_LM")


def save_final(trainer, out_dir: str | Path, tokenizer) -> Path:
    """Save a stage's final model as a plain checkpoint (LoRA merged) so the next stage can load it."""
    out_dir = Path(out_dir)
    model = trainer.accelerator.unwrap_model(trainer.model)
    if hasattr(model, "merge_and_unload"):          # PEFT: fold the adapter into the weights
        if trainer.is_world_process_zero():
            model.merge_and_unload().save_pretrained(out_dir)
    else:
        trainer.save_model(str(out_dir))            # handles DeepSpeed ZeRO-3 gathering
    if trainer.is_world_process_zero():
        tokenizer.save_pretrained(out_dir)
    return out_dir
