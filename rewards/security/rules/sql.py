"""SQL injection (CWE-89): SQL built by string formatting that reaches an ``execute``-like call.

Also records the lines of SQL-looking strings that interpolate only constants (``Scope.sql_safe``), so
``findings.scan`` can drop bandit's B608 guess there.
"""
from __future__ import annotations

import ast
import re

from rewards.security.rules.taint import is_const_like, string_build, tainted
from rewards.security.rules.walk import Scope, Sink

SQL_SINK_RE = re.compile(r"^(execute\w*|\w*_query|query|raw|mogrify|read_sql\w*|text)$")
SQL_WORDS_RE = re.compile(r"\b(select|insert|update|delete|create|drop|alter|where|from|values|set|"
                          r"into|order by|limit|join|pragma|grant)\b", re.IGNORECASE)


class SqlSink(Sink):
    """Formatted SQL handed to a query call; constant-only SQL strings marked safe for bandit's B608."""

    def on_string(self, node: ast.expr, scope: Scope) -> None:
        sb = string_build(node, scope.env)
        if sb is None or not SQL_WORDS_RE.search(sb.text):
            return
        if all(is_const_like(p, scope.env) for p in sb.parts):
            scope.sql_safe.update(range(node.lineno, (node.end_lineno or node.lineno) + 1))

    def on_call(self, call: ast.Call, name: str, scope: Scope) -> None:
        if not SQL_SINK_RE.match(name) or not call.args:
            return
        env = scope.env
        sb = string_build(call.args[0], env)
        if sb is None or not sb.parts or not SQL_WORDS_RE.search(sb.text):
            return
        unsafe = [p for p in sb.parts if not is_const_like(p, env)]
        if not unsafe:
            return
        if any(tainted(p, env) for p in unsafe):
            scope.report("089", call, f"SQL built from input by string formatting reaches {name}()",
                         "HIGH", "HIGH")
        else:
            scope.report("089", call, f"SQL built by string formatting from non-constant values reaches "
                         f"{name}(); use query parameters", "MEDIUM", "MEDIUM")
