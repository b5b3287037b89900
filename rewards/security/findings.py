"""Security findings of one piece of Python code: bandit run in-process plus our own taint rules.

Bandit's CLI costs ~185 ms a call (interpreter start, plugin discovery); here its plugin set is loaded
once and each scan only walks the AST (~1-2 ms). ``# nosec`` comments are ignored on purpose: a policy
model must not be able to silence the checker by writing a comment.
"""
from __future__ import annotations

import io
import logging
import threading
import warnings
from functools import lru_cache

from rewards.security.rules import analyze
from rewards.security.source import Finding, python3_source

# Bandit tests that describe the *recommended* form rather than a flaw (argv-list subprocess calls,
# `import subprocess`, assert): reported in the detail record, never scored.
INFORMATIONAL = frozenset({"B101", "B403", "B404", "B603", "B607"})


class _BanditEngine:
    """Bandit's config and test set built once; ``scan`` runs its node visitor over one source."""

    def __init__(self) -> None:
        logging.getLogger("bandit").setLevel(logging.ERROR)
        with warnings.catch_warnings():          # stevedore's deprecation notes while loading plugins
            warnings.simplefilter("ignore", DeprecationWarning)
            from bandit.core import config as b_config  # startup
            from bandit.core import meta_ast, metrics, node_visitor  # noqa: F401 - startup
            from bandit.core import test_set as b_test_set  # startup
            self.config = b_config.BanditConfig()
            self.tests = b_test_set.BanditTestSet(self.config, {})
        self._lock = threading.Lock()   # bandit's visitor keeps per-run state in shared test objects

    def scan(self, source: str) -> list[Finding]:
        from bandit.core import meta_ast, metrics, node_visitor  # startup
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
        rep = analyze(code)
        if rep is not None:
            found = [f for f in found if not (f.rule == "B608" and f.line in rep.sql_safe_lines)]
            seen = {(f.cwe, f.line) for f in found if f.cwe}
            found += [f for f in rep.findings if (f.cwe, f.line) not in seen]
    return sorted(found, key=lambda f: (f.line, f.rule))
