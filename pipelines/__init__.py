"""earl pipelines: configs, stage runner (SFT -> EARL-GRPO -> eval), trainers and the `earl` CLI."""
