"""Verilog functional reward: extract -> format -> syntax -> compile (iverilog) -> simulate (vvp)."""
