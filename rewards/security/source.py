"""What both checkers share: the code as they read it (normalized, Python 3, parsed) and the ``Finding``
each reports. Its own module so that bandit's wrapper (``findings``) and our rules (``rules``) both import
it and neither imports the other's internals.
"""
from __future__ import annotations

import ast
import textwrap
import warnings
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any

SEVERITY_WEIGHT = {"LOW": 1.0, "MEDIUM": 2.0, "HIGH": 3.0}
CONFIDENCE_WEIGHT = {"LOW": 0.5, "MEDIUM": 0.75, "HIGH": 1.0}


@dataclass(frozen=True)
class Finding:
    """One issue: rule id (bandit ``B608`` or ours ``EARL-CWE-089``), CWE, severity, confidence, line."""
    rule: str
    cwe: str            # "CWE-89"; "" when unknown
    severity: str       # LOW | MEDIUM | HIGH
    confidence: str     # LOW | MEDIUM | HIGH
    line: int
    text: str
    source: str = "bandit"   # bandit | earl

    @property
    def weight(self) -> float:
        """Severity x confidence: what one finding costs in the security term."""
        return SEVERITY_WEIGHT.get(self.severity, 1.0) * CONFIDENCE_WEIGHT.get(self.confidence, 0.5)

    @property
    def key(self) -> tuple[str, str]:
        """Identity across versions of a function: the rule and its CWE, not the line (lines move)."""
        return (self.rule, self.cwe)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def normalize_source(code: str) -> str:
    """SVEN functions are indented methods with CRLF endings: make them parse as a module."""
    code = code.replace("\r\n", "\n").replace("\r", "\n").expandtabs(8)
    dedented = textwrap.dedent(code)
    first = next((line for line in dedented.split("\n") if line.strip()), "")
    indent = len(first) - len(first.lstrip())
    if indent == 0:
        return dedented
    # a multi-line string may hold lines indented less than the def: strip the def's indentation
    # where it is there and leave such lines alone
    return "\n".join(line[indent:] if not line[:indent].strip() else line for line in dedented.split("\n"))


@lru_cache(maxsize=1024)
def python3_source(code: str) -> str | None:
    """Normalized source that parses as Python 3: as is, else after lib2to3's fixers (SVEN holds some
    Python 2 functions: ``except E, e``, print statements); None when neither parses."""
    src = normalize_source(code)
    try:
        quiet_parse(src)
        return src
    except (SyntaxError, ValueError):
        pass
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from lib2to3 import refactor  # optional
            tool = refactor.RefactoringTool(refactor.get_fixers_from_package("lib2to3.fixes"))
            fixed = str(tool.refactor_string(src.rstrip("\n") + "\n", "<py2>"))
        quiet_parse(fixed)
        return fixed
    except Exception:  # noqa: BLE001 - lib2to3 is missing (3.13+) or the code is not Python 2 either
        return None


def quiet_parse(src: str) -> ast.Module:
    """ast.parse without warnings (invalid escapes are common in scraped code)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ast.parse(src)


def parse(code: str) -> ast.Module | None:
    """The module AST of ``code`` (normalized; Python 2 converted as for bandit, `python3_source`), or
    None when it does not parse either way."""
    src = python3_source(code)
    if src is None:
        return None
    try:
        return quiet_parse(src)
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return None
