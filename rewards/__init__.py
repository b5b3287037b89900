"""earl rewards: verifiable reward functions (TRL signature) and their registry.

A reward is a plain callable ``f(prompts, completions, **columns) -> list[float | None]``; nothing here
imports a trainer, so rewards can be used from a notebook or `earl score`.
"""
