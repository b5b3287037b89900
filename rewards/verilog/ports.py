"""The one port record: what equivbench reads off a reference (pyslang) and what rtlgen designs, so a
port's range and declaration are written one way everywhere."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Port:
    direction: str          # input | output | inout | ref
    name: str
    width: int = 1
    signed: bool = False
    reg: bool = False       # declared `reg` (an output driven from an always block)
    clock: bool = False     # the design's clock input (rtlgen: the bench drives it, not the stimulus)

    @property
    def range(self) -> str:
        """`[w-1:0] ` with its trailing space, for a declaration; empty for one bit."""
        return f"[{self.width - 1}:0] " if self.width > 1 else ""

    def describe(self) -> str:
        """Direction, signedness and range, for messages: `input signed [7:0]`."""
        return " ".join(filter(None, (self.direction, "signed" if self.signed else "", self.range.strip())))

    def decl(self) -> str:
        """The ANSI port declaration: `output reg [3:0] q`."""
        kinds = [self.direction] + (["reg"] if self.reg else []) + (["signed"] if self.signed else [])
        return f"{' '.join(kinds)} {self.range}{self.name}"
