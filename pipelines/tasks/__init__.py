"""Built-in task sources: the procedural RTL generator behind the offline default (`earl gen-tasks`)."""
from pipelines.tasks.rtlgen import FAMILIES, PRESETS, generate, solution

__all__ = ["FAMILIES", "PRESETS", "generate", "solution"]
