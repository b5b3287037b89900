"""Our own checkers for what bandit cannot see: taint from a function's inputs to dangerous sinks.

Bandit matches call names and string shapes one node at a time; it misses path traversal and XSS
entirely and most command injection through wrapper functions. These rules follow data inside one
function, in source order. Where things live:

* ``taint`` - sources, propagation through string building, sanitizers: ``Env`` (what is known at a
  point), ``StrExpr``/``string_build``, ``tainted``, ``request_tainted``, ``is_const_like``;
* ``walk`` - the walk over a function: bindings and guards update the ``Env``; at each call, stored
  value, returned/yielded value and string-building expression it calls the hooks of every ``Sink``;
* one module per CWE family, each a ``Sink``: ``sql`` (CWE-89), ``command`` (CWE-78), ``path`` (CWE-22),
  ``xss`` (CWE-79), ``misc`` (weak hashes/ciphers 327, temp files 377, deserializers 502).

Adding a CWE is adding a module with a ``Sink`` subclass and an entry in ``SINKS``. Every finding is a
``Finding`` with rule id ``EARL-CWE-<nnn>``; the SQL sink also tells which SQL-looking strings
interpolate only constants, so bandit's B608 guess on those lines can be dropped (``findings.scan``).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from rewards.security.rules import command, misc, path, sql, xss
from rewards.security.rules.taint import Env
from rewards.security.rules.walk import FunctionWalker, Scope, Sink
from rewards.security.source import Finding, python3_source, quiet_parse

SINKS: tuple[Sink, ...] = (sql.SqlSink(), command.CommandSink(), path.PathSink(), xss.XssSink(),
                           misc.MiscSink())


@dataclass
class RuleReport:
    """The rules' findings (one per rule and line, the weightiest) and the lines bandit's B608 may skip."""
    findings: list[Finding]
    sql_safe_lines: set[int]


@lru_cache(maxsize=4096)
def analyze(code: str) -> RuleReport | None:
    """Run all rules over ``code``; None when it does not parse."""
    src = python3_source(code)
    if src is None:
        return None
    try:
        tree = quiet_parse(src)
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return None
    scope = Scope(Env(), [], set())
    walker = FunctionWalker(scope, SINKS)
    for stmt in tree.body:
        walker.visit(stmt)
    return RuleReport(_weightiest(scope.findings), scope.sql_safe)


def _weightiest(findings: list[Finding]) -> list[Finding]:
    """One finding per (rule, line): the first of the highest weight, sorted by line."""
    dedup: dict[tuple[str, int], Finding] = {}
    for f in findings:
        if (f.rule, f.line) not in dedup or f.weight > dedup[(f.rule, f.line)].weight:
            dedup[(f.rule, f.line)] = f
    return sorted(dedup.values(), key=lambda f: (f.line, f.rule))


def rule_findings(code: str) -> list[Finding]:
    """Our rules' findings for ``code``; [] when it does not parse."""
    rep = analyze(code)
    return rep.findings if rep else []
