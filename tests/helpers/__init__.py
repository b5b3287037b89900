"""Test helpers importable as `tests.helpers.*` (also by the processes a test launches from the repo root)."""
