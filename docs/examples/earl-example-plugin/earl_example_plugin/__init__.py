"""Example earl reward plugins: a function and a configurable class, both with TRL's signature."""
from __future__ import annotations


def _text(completion) -> str:
    if isinstance(completion, list):          # conversational: last message's content
        return completion[-1]["content"] if completion else ""
    return completion


def length_penalty(prompts, completions, max_chars: int = 400, **columns) -> list[float]:
    """1.0 for completions within `max_chars`, falling linearly to 0 at twice that."""
    out = []
    for c in completions:
        n = len(_text(c))
        out.append(1.0 if n <= max_chars else max(0.0, 2.0 - n / max_chars))
    return out


class KeywordBonus:
    """Reward 1.0 when the completion contains every required keyword (e.g. `always_ff`)."""

    def __init__(self, keywords: list[str]):
        self.keywords = list(keywords)
        self.__name__ = "keyword_bonus"

    def __call__(self, prompts, completions, **columns) -> list[float]:
        return [float(all(k in _text(c) for k in self.keywords)) for c in completions]
