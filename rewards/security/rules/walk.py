"""The taint engine's statement side: one walk over a function in source order.

Bindings (assignment, ``+=``, ``for``/``with`` targets, walrus) carry taint, strings being built and
joined/resolved paths from value to name; guards (a validator in an ``if``/``while``/``assert``, a
standalone ``check*(x)``) clean what they test. At each call, stored value, returned or yielded value and
string-building expression the walk asks every ``Sink``; sinks only read the ``Env`` and report, so the
walk, not a sink, decides what is tainted where.
"""
from __future__ import annotations

import ast
from collections.abc import Sequence
from dataclasses import dataclass

from rewards.security.rules.taint import (
    RESOLVERS,
    SANITIZER_RE,
    VALIDATOR_RE,
    Env,
    StrExpr,
    call_name,
    is_const_like,
    is_tainted_join,
    joined_method,
    names_in,
    request_tainted,
    string_build,
    tainted,
)
from rewards.security.source import Finding

PATH_GUARDS = {"startswith", "commonpath", "commonprefix", "is_relative_to", "relative_to"}


@dataclass
class Scope:
    """What a sink sees at one point of one function: the taint state, and where its results go (shared
    with nested functions, which get a copy of the state)."""
    env: Env
    findings: list[Finding]
    sql_safe: set[int]      # lines of SQL-looking strings that interpolate only constants

    def report(self, cwe: str, node: ast.AST, text: str, severity: str, confidence: str) -> None:
        self.findings.append(Finding(rule=f"EARL-CWE-{cwe}", cwe=f"CWE-{int(cwe)}", severity=severity,
                                     confidence=confidence, line=getattr(node, "lineno", 0), text=text,
                                     source="earl"))

    def nested(self) -> Scope:
        return Scope(self.env.copy(), self.findings, self.sql_safe)


class Sink:
    """One CWE family's checks. The walk calls every hook of every sink; a sink overrides those it needs.
    Hooks must not change ``scope.env`` (sinks are asked in any order)."""

    def on_call(self, call: ast.Call, name: str, scope: Scope) -> None:
        """A call, after its arguments were walked; ``name`` is ``call_name(call)``, never a sanitizer."""

    def on_string(self, node: ast.expr, scope: Scope) -> None:
        """An expression that may build a string: f-string, ``%``, ``+``, ``.format(..)``."""

    def on_store(self, target: ast.expr, value: ast.expr | None, scope: Scope) -> None:
        """One target of a binding (a name, attribute or subscript), before the binding takes effect."""

    def on_return(self, value: ast.expr, at: ast.Return, scope: Scope) -> None:
        """A returned value, after it was walked."""

    def on_yield(self, value: ast.expr, at: ast.Yield, scope: Scope) -> None:
        """A yielded value, after it was walked."""


class FunctionWalker(ast.NodeVisitor):
    """Walks one function body in source order, tracking taint and asking the sinks at each hook."""

    def __init__(self, scope: Scope, sinks: Sequence[Sink]):
        self.scope, self.sinks = scope, sinks

    # -- binding ----------------------------------------------------------------------------------
    def bind(self, target: ast.expr, value: ast.expr | None, *, aug: bool = False) -> None:
        if isinstance(target, (ast.Tuple, ast.List)):
            for t in target.elts:
                self.bind(t, value, aug=True if value is not None else aug)
            return
        for sink in self.sinks:
            sink.on_store(target, value, self.scope)
        if isinstance(target, ast.Name):
            self.bind_name(target.id, value, aug=aug)

    def bind_name(self, name: str, value: ast.expr | None, *, aug: bool) -> None:
        """``name = value`` (or ``name += value``). The steps run in this order: each reads what the
        previous ones already updated."""
        self._bind_taint(name, value, aug)
        self._bind_string(name, value, aug)
        if not aug:
            self._bind_path(name, value)
        self._bind_const(name, value, aug)

    def _bind_taint(self, name: str, value: ast.AST | None, aug: bool) -> None:
        env = self.scope.env
        t = value is not None and tainted(value, env)
        rq = value is not None and request_tainted(value, env)
        if aug:
            t = t or name in env.tainted
            rq = rq or name in env.request
        for s, flag in ((env.tainted, t), (env.request, rq)):
            s.add(name) if flag else s.discard(name)

    def _bind_string(self, name: str, value: ast.expr | None, aug: bool) -> None:
        env = self.scope.env
        sb = string_build(value, env) if value is not None else None
        if aug and name in env.strings and value is not None:
            prev = env.strings[name]
            add = sb or StrExpr("", [value], value)
            env.strings[name] = StrExpr(prev.text + add.text, prev.parts + add.parts, prev.node)
        elif sb is not None:
            env.strings[name] = sb
        elif not aug:
            env.strings.pop(name, None)
        if value is not None and isinstance(value, (ast.List, ast.Tuple, ast.ListComp)) and not aug:
            env.lists.add(name)
        elif not aug:
            env.lists.discard(name)

    def _bind_path(self, name: str, value: ast.AST | None) -> None:
        env = self.scope.env
        joined = value is not None and (is_tainted_join(value, env) or joined_method(value, env))
        env.validated.discard(name)
        env.joined.discard(name)
        env.resolved.discard(name)
        if joined:
            env.joined.add(name)
        if value is not None and any(isinstance(n, ast.Call) and call_name(n) in RESOLVERS
                                     for n in ast.walk(value)):
            env.resolved.add(name)

    def _bind_const(self, name: str, value: ast.AST | None, aug: bool) -> None:
        env = self.scope.env
        safe_value = value is not None and (is_const_like(value, env) or (
            isinstance(value, ast.Name) and value.id in env.validated))
        if aug:     # `flags += flag`: stays constant / validated only if what is added is
            for s in (env.const, env.validated):
                if name in s and not safe_value:
                    s.discard(name)
        elif value is not None and is_const_like(value, env):
            env.const.add(name)
        else:
            env.const.discard(name)

    def visit_Assign(self, node: ast.Assign) -> None:
        self.visit(node.value)
        for t in node.targets:
            self.bind(t, node.value)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        if node.value is not None:
            self.visit(node.value)
            self.bind(node.target, node.value)

    def visit_AugAssign(self, node: ast.AugAssign) -> None:
        self.visit(node.value)
        self.bind(node.target, node.value, aug=True)

    def visit_For(self, node: ast.For | ast.AsyncFor) -> None:
        self.visit(node.iter)
        self.bind(node.target, node.iter)
        for stmt in node.body + node.orelse:
            self.visit(stmt)

    visit_AsyncFor = visit_For

    def visit_With(self, node: ast.With | ast.AsyncWith) -> None:
        for item in node.items:
            self.visit(item.context_expr)
            if item.optional_vars is not None:
                self.bind(item.optional_vars, item.context_expr)
        for stmt in node.body:
            self.visit(stmt)

    visit_AsyncWith = visit_With

    def visit_ExceptHandler(self, node: ast.ExceptHandler) -> None:
        if node.name:        # exception messages may echo input
            self.scope.env.tainted.add(node.name)
        for stmt in node.body:
            self.visit(stmt)

    def visit_NamedExpr(self, node: ast.NamedExpr) -> None:
        self.visit(node.value)
        self.bind(node.target, node.value)

    # -- guards -----------------------------------------------------------------------------------
    def untaint_guarded(self, test: ast.AST) -> None:
        for n in ast.walk(test):
            if isinstance(n, ast.Call) and VALIDATOR_RE.search(call_name(n)):
                for a in self._guarded_args(n):
                    for name in names_in(a, skip_sanitized=False):
                        self.validate(name)
            elif isinstance(n, ast.Compare) and any(isinstance(o, (ast.In, ast.NotIn)) for o in n.ops):
                right = n.comparators[0]
                if isinstance(n.left, ast.Name) and not isinstance(right, ast.Constant):
                    self.validate(n.left.id)          # x in ALLOWED
                elif isinstance(n.left, ast.Constant) and isinstance(right, ast.Name):
                    self.validate(right.id)           # '/' not in x

    def _guarded_args(self, n: ast.Call) -> list[ast.expr]:
        """What a validator call proves safe: its arguments and receiver; for a prefix test only the
        resolved paths among them (a prefix of an unresolved path proves no containment)."""
        args: list[ast.expr] = list(n.args) + [k.value for k in n.keywords]
        if call_name(n) in PATH_GUARDS:
            return [a for a in [*args, getattr(n.func, "value", None)] if a is not None and (
                any(isinstance(x, ast.Call) and call_name(x) in RESOLVERS for x in ast.walk(a))
                or names_in(a, skip_sanitized=False) & self.scope.env.resolved)]
        if isinstance(n.func, ast.Attribute):
            args.append(n.func.value)
        return args

    def validate(self, name: str) -> None:
        env = self.scope.env
        env.tainted.discard(name)
        env.request.discard(name)
        env.validated.add(name)

    def visit_If(self, node: ast.If) -> None:
        self.visit(node.test)
        self.untaint_guarded(node.test)
        for stmt in node.body + node.orelse:
            self.visit(stmt)

    def visit_While(self, node: ast.While) -> None:
        self.visit(node.test)
        for stmt in node.body + node.orelse:
            self.visit(stmt)
        self.untaint_guarded(node.test)
        for n in ast.walk(node):     # `while not ok: x = input(); if valid(x): ok = True`
            if isinstance(n, ast.If):
                self.untaint_guarded(n.test)

    def visit_Assert(self, node: ast.Assert) -> None:
        self.visit(node.test)
        self.untaint_guarded(node.test)

    def visit_Expr(self, node: ast.Expr) -> None:
        self.visit(node.value)
        if isinstance(node.value, ast.Call) and VALIDATOR_RE.search(call_name(node.value)):
            self.untaint_guarded(node.value)

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        walk_function(node, self.scope.nested(), self.sinks)

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_Lambda(self, node: ast.Lambda) -> None:
        return

    # -- sink hooks -------------------------------------------------------------------------------
    def visit_Call(self, node: ast.Call) -> None:
        self.generic_visit(node)
        name = call_name(node)
        if SANITIZER_RE.search(name):
            return
        if name == "format":
            self.on_string(node)
        for sink in self.sinks:
            sink.on_call(node, name, self.scope)

    def visit_Return(self, node: ast.Return) -> None:
        if node.value is not None:
            self.visit(node.value)
            for sink in self.sinks:
                sink.on_return(node.value, node, self.scope)

    def visit_Yield(self, node: ast.Yield) -> None:
        if node.value is not None:
            self.visit(node.value)
            for sink in self.sinks:
                sink.on_yield(node.value, node, self.scope)

    def visit_JoinedStr(self, node: ast.JoinedStr) -> None:
        self.on_string(node)
        self.generic_visit(node)

    def visit_BinOp(self, node: ast.BinOp) -> None:
        if isinstance(node.op, (ast.Mod, ast.Add)):
            self.on_string(node)
        self.generic_visit(node)

    def on_string(self, node: ast.expr) -> None:
        for sink in self.sinks:
            sink.on_string(node, self.scope)


def walk_function(fn: ast.FunctionDef | ast.AsyncFunctionDef, scope: Scope, sinks: Sequence[Sink]) -> None:
    """Walk ``fn``'s body with its parameters (not ``self``/``cls``) as taint sources."""
    env = scope.env
    params = [a.arg for a in fn.args.posonlyargs + fn.args.args + fn.args.kwonlyargs]
    params += [a.arg for a in (fn.args.vararg, fn.args.kwarg) if a is not None]
    for p in params:
        if p not in {"self", "cls"}:
            env.tainted.add(p)
            env.strings.pop(p, None)
            env.lists.discard(p)
            env.const.discard(p)
    walker = FunctionWalker(scope, sinks)
    for stmt in fn.body:
        walker.visit(stmt)
