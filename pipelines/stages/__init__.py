"""One module per stage kind (sft, rl, eval); each exposes ``run(ctx: StageContext) -> dict``.

The returned dict lands in the run's state.json; its ``model`` key (a folder) is the next stage's input.
"""
