"""Per-token entropy of a causal LM's next-token distribution at the sampling temperature.

The entropy gate and the `earl entropy` analysis both need H_t = -Σ_v p_v log p_v with
p = softmax(logits / T). On a 32k-150k vocabulary a full fp32 ``log_softmax`` makes two or three
(tokens × vocab) fp32 temporaries; here rows are processed in chunks, each upcast to fp32 on its own,
so the extra memory is O(chunk × vocab) whatever the sequence length. (Inside training TRL's fused LM
head already computes the same entropy tile by tile without materialising logits; the EARL trainer
reuses that value, and the tests check both against a float64 reference.)

This module is the kernel (entropy, sampling with entropies, token strings); ranking token types and
writing the CSV/JSON/HTML report is pipelines/entropy_report.py.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch


def _rows_entropy(rows: torch.Tensor, temperature: float) -> torch.Tensor:
    z = rows.to(torch.float32, copy=True)       # the one fp32 copy of this chunk; the rest is in place
    if temperature != 1.0:
        z.div_(temperature)
    z.sub_(torch.logsumexp(z, dim=-1, keepdim=True))            # log p
    z.clamp_(min=torch.finfo(torch.float32).min)                # -inf -> finite, so 0 · log 0 = 0
    return -(z.exp().mul_(z)).sum(-1)


@torch.no_grad()
def chunked_entropy(logits: torch.Tensor, temperature: float = 1.0, chunk_size: int = 256) -> torch.Tensor:
    """Entropy (nats, float32, no gradient) over the last dim of ``logits`` (any leading shape).

    ``chunk_size`` rows at a time, each with two fp32 (chunk × vocab) temporaries, so peak extra memory
    does not grow with the number of tokens.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    flat = logits.reshape(-1, logits.size(-1))
    out = torch.empty(flat.size(0), dtype=torch.float32, device=logits.device)
    for start in range(0, flat.size(0), chunk_size):
        out[start:start + chunk_size] = _rows_entropy(flat[start:start + chunk_size], temperature)
    return out.view(logits.shape[:-1])


def full_softmax_entropy(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """The naive version (whole fp32 copy + log_softmax), kept as the benchmark baseline."""
    logp = torch.log_softmax(logits.float() / temperature, dim=-1)
    return -(logp.exp() * logp).sum(-1)


def reference_entropy(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Float64 reference for tests."""
    return torch.special.entr(torch.softmax(logits.double() / temperature, dim=-1)).sum(-1)


@torch.no_grad()
def completion_entropies(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, n_completion: int,
                         temperature: float = 1.0, chunk_size: int = 256,
                         batch_size: int = 8) -> torch.Tensor:
    """Entropy of the distribution each of the last ``n_completion`` tokens was sampled from: (B, n_completion).

    The model is asked only for the logits it needs (``logits_to_keep``), in its own dtype, and the
    entropy is taken chunk by chunk, so no full fp32 copy of the logits is ever made.
    """
    out = []
    for start in range(0, input_ids.size(0), batch_size):
        ids = input_ids[start:start + batch_size]
        am = attention_mask[start:start + batch_size]
        logits = model(input_ids=ids, attention_mask=am, logits_to_keep=n_completion + 1).logits
        out.append(chunked_entropy(logits[:, :-1], temperature, chunk_size))
        del logits
    return torch.cat(out, dim=0)


# ---- analysis: which token types carry the entropy (the EARL paper's observation) ----------------------

def token_string(tokenizer: Any, token_id: int) -> str:
    """Readable text of one token; byte fragments of a multi-byte character fall back to the vocab entry."""
    text = tokenizer.decode([int(token_id)])
    if "\ufffd" in text:
        text = tokenizer.convert_ids_to_tokens(int(token_id))
    return text


def token_type(text: str) -> str:
    """The key tokens are ranked by: the text without surrounding whitespace (" always" == "always")."""
    stripped = text.strip()
    return stripped if stripped else repr(text)


@dataclass
class ScoredCompletion:
    problem_id: str
    sample: int
    tokens: list[str]            # one string per completion token (EOS included when sampled)
    entropies: list[float]       # nats, at the sampling temperature

    @property
    def text(self) -> str:
        return "".join(self.tokens)


@torch.no_grad()
def sample_with_entropy(model: Any, tokenizer: Any, prompts: Sequence[tuple[str, str]], n: int = 4,
                        temperature: float = 1.0, max_new_tokens: int = 256, chunk_size: int = 1024,
                        batch_size: int = 8) -> list[ScoredCompletion]:
    """Sample ``n`` completions per ``(problem_id, prompt)`` and score each token's entropy.

    Entropy is recomputed by a forward pass over prompt + completion (the same quantity the trainer
    gates on), not taken from ``generate``'s processed scores.
    """
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    device = next(model.parameters()).device
    jobs = [(pid, text, k) for pid, text in prompts for k in range(n)]
    out: list[ScoredCompletion] = []
    for start in range(0, len(jobs), batch_size):
        batch = jobs[start:start + batch_size]
        enc = tokenizer([text for _, text, _ in batch], return_tensors="pt", padding=True,
                        add_special_tokens=False).to(device)
        seqs = model.generate(**enc, do_sample=True, temperature=temperature, top_k=0, top_p=1.0,
                              max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id)
        completion = seqs[:, enc.input_ids.size(1):]
        if completion.size(1) == 0:
            continue
        cmask = _completion_mask(completion, tokenizer.eos_token_id)
        attention = torch.cat([enc.attention_mask, cmask], dim=1)
        ent = completion_entropies(model, seqs, attention, completion.size(1), temperature, chunk_size,
                                   batch_size).cpu()
        for row, (pid, _, k) in enumerate(batch):
            n_tok = int(cmask[row].sum())
            ids = completion[row, :n_tok].tolist()
            out.append(ScoredCompletion(pid, k, [token_string(tokenizer, i) for i in ids],
                                        ent[row, :n_tok].tolist()))
    return out


def _completion_mask(completion: torch.Tensor, eos_id: int | None) -> torch.Tensor:
    """1 up to and including the first EOS, 0 after (generate pads finished rows)."""
    if eos_id is None:
        return torch.ones_like(completion)
    is_eos = completion == eos_id
    after = (is_eos.cumsum(1) - is_eos.long()) > 0
    return (~after).long()
