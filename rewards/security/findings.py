"""Security findings of one piece of Python code: bandit run in-process plus our own taint rules.

Bandit's CLI costs ~185 ms a call (interpreter start, plugin discovery); here its plugin set is loaded
once and each scan only walks the AST (~1-2 ms). ``# nosec`` comments are ignored on purpose: a policy
model must not be able to silence the checker by writing a comment.
"""
from __future__ import annotations

import ast
import io
import logging
import textwrap
import threading
import warnings
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any

SEVERITY_WEIGHT = {"LOW": 1.0, "MEDIUM": 2.0, "HIGH": 3.0}
CONFIDENCE_WEIGHT = {"LOW": 0.5, "MEDIUM": 0.75, "HIGH": 1.0}
# Bandit tests that describe the *recommended* form rather than a flaw (argv-list subprocess calls,
# `import subprocess`, assert): reported in the detail record, never scored.
INFORMATIONAL = frozenset({"B101", "B403", "B404", "B603", "B607"})


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
        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from lib2to3 import refactor
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


class _BanditEngine:
    """Bandit's config and test set built once; ``scan`` runs its node visitor over one source."""

    def __init__(self) -> None:
        logging.getLogger("bandit").setLevel(logging.ERROR)
        with warnings.catch_warnings():          # stevedore's deprecation notes while loading plugins
            warnings.simplefilter("ignore", DeprecationWarning)
            from bandit.core import config as b_config
            from bandit.core import meta_ast, metrics, node_visitor  # noqa: F401 - imported once, quietly
            from bandit.core import test_set as b_test_set
            self.config = b_config.BanditConfig()
            self.tests = b_test_set.BanditTestSet(self.config, {})
        self._lock = threading.Lock()   # bandit's visitor keeps per-run state in shared test objects

    def scan(self, source: str) -> list[Finding]:
        from bandit.core import meta_ast, metrics, node_visitor
        data = source.encode("utf-8")
        with self._lock, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            visitor = node_visitor.BanditNodeVisitor(
                "candidate.py", io.BytesIO(data), meta_ast.BanditMetaAst(), self.tests,
                False, {}, metrics.Metrics())   # {} = no nosec lines: `# nosec` is ignored
            visitor.process(data)
            issues = list(visitor.tester.results)
        out = []
        for it in issues:
            cwe = getattr(it.cwe, "id", 0)
            out.append(Finding(rule=it.test_id, cwe=f"CWE-{cwe}" if cwe else "", severity=it.severity,
                               confidence=it.confidence, line=int(it.lineno or 0), text=it.text,
                               source="bandit"))
        return out


@lru_cache(maxsize=1)
def _engine() -> _BanditEngine:
    return _BanditEngine()


def bandit_findings(code: str) -> list[Finding]:
    """Bandit's findings for ``code`` (in-process, nosec ignored); [] when it does not parse."""
    return list(_bandit_cached(code))


@lru_cache(maxsize=4096)
def _bandit_cached(code: str) -> tuple[Finding, ...]:
    src = python3_source(code)
    return () if src is None else tuple(_engine().scan(src))


def scan(code: str, *, use_bandit: bool = True, use_rules: bool = True,
         informational: bool = False) -> list[Finding]:
    """All findings: bandit's plus our taint rules (``rewards.security.rules``), sorted by line.

    Where our SQL analysis saw that a SQL-looking string interpolates only constants, bandit's B608
    guess on those lines is dropped; a bandit and an EARL finding of the same CWE on one line count once.
    """
    found = bandit_findings(code) if use_bandit else []
    if not informational:
        found = [f for f in found if f.rule not in INFORMATIONAL]
    if use_rules:
        from rewards.security.rules import analyze
        rep = analyze(code)
        if rep is not None:
            found = [f for f in found if not (f.rule == "B608" and f.line in rep.sql_safe_lines)]
            seen = {(f.cwe, f.line) for f in found if f.cwe}
            found += [f for f in rep.findings if (f.cwe, f.line) not in seen]
    return sorted(found, key=lambda f: (f.line, f.rule))
