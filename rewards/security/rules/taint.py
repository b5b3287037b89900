"""The taint engine's expression side: which values a function's caller controls, as the walk knows them.

``Env`` is the state at one point of a function (tainted names, strings being built, joined/resolved
paths, names a guard validated); the predicates here read it and never change it, so every sink can ask
them in any order. Sources: parameters (bound by the walk), request reads, ``input()``, ``sys.argv``,
exception text. Sanitizers: calls whose name matches ``SANITIZER_RE``; their arguments are not followed.
"""
from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field

SANITIZER_RE = re.compile(
    r"^(int|float|bool|len|abs|round|ord|hash|uuid\d?)$|escape|quote|saniti[sz]e|secure_filename|safe_join"
    r"|basename|clean|bleach|validat|antixss|strip_tags|format_html|urlencode|slugify", re.IGNORECASE)
VALIDATOR_RE = re.compile(
    r"^(match|fullmatch|search|isalnum|isalpha|isdigit|isdecimal|isnumeric|isidentifier|startswith"
    r"|commonpath|commonprefix|isabs)$|valid|check|verify|is_safe|allowed|ensure", re.IGNORECASE)
REQUEST_ATTRS = {"args", "form", "GET", "POST", "REQUEST", "values", "cookies", "COOKIES", "FILES",
                 "json", "data", "params", "query_params", "headers", "body", "get_json", "form_dict"}
STRING_KEEPING = {"str", "unicode", "format", "join", "strip", "lstrip", "rstrip", "lower", "upper", "title",
                  "replace", "decode", "encode", "split"}
MAPPING_GETS = {"get", "getlist", "getvalue", "pop"}
RESOLVERS = {"realpath", "abspath", "normpath", "resolve", "commonpath"}
INPUT_CALLS = {"input", "raw_input", "format_exc", "format_exception"}


def call_name(node: ast.AST) -> str:
    """Last component of a call's function: ``a.b.execute`` -> ``execute``."""
    f = node.func if isinstance(node, ast.Call) else node
    if isinstance(f, ast.Name):
        return f.id
    if isinstance(f, ast.Attribute):
        return f.attr
    if isinstance(f, ast.Subscript) and isinstance(f.slice, ast.Constant):   # __salt__['cmd.run'](..)
        return str(f.slice.value)
    return ""


def dotted(node: ast.AST) -> str:
    """``a.b.c`` for a Name/Attribute chain; '' otherwise."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return ""


def receiver(node: ast.Call) -> str:
    """First name of a method call's receiver (``os.path.join`` -> ``os``); '' for a plain call."""
    return dotted(node.func).split(".")[0] if isinstance(node.func, ast.Attribute) else ""


def is_request_expr(node: ast.AST) -> bool:
    """True for reads of web-request input: ``request.args[..]``, ``self.request.get('x')``, ..."""
    chain: list[str] = []
    cur = node
    while True:
        if isinstance(cur, ast.Attribute):
            chain.append(cur.attr)
            cur = cur.value
        elif isinstance(cur, ast.Subscript):
            cur = cur.value
        elif isinstance(cur, ast.Call):
            chain.append(call_name(cur))
            cur = cur.func.value if isinstance(cur.func, ast.Attribute) else cur.func
            if isinstance(cur, ast.Name):
                chain.append(cur.id)
                break
        elif isinstance(cur, ast.Name):
            chain.append(cur.id)
            break
        else:
            return False
    names = set(chain)
    if names & {"form_dict", "REQUEST"}:
        return True
    if names & {"request", "req"}:
        return len(chain) >= 2 and bool(names & (REQUEST_ATTRS | {"get", "getlist", "get_argument"}))
    return False


@dataclass
class StrExpr:
    """A string built at runtime: its literal text and the interpolated parts."""
    text: str
    parts: list[ast.expr]
    node: ast.AST


@dataclass
class Env:
    """What the analysis knows at a point of the function."""
    tainted: set[str] = field(default_factory=set)       # derived from inputs
    request: set[str] = field(default_factory=set)       # derived from web-request input (XSS)
    strings: dict[str, StrExpr] = field(default_factory=dict)
    lists: set[str] = field(default_factory=set)         # bound to a list/tuple (argv style)
    const: set[str] = field(default_factory=set)
    joined: set[str] = field(default_factory=set)        # bound to os.path.join(base, <input>)
    resolved: set[str] = field(default_factory=set)      # bound to realpath/abspath/normpath(..)
    validated: set[str] = field(default_factory=set)     # checked by a guard: safe to interpolate

    def copy(self) -> Env:
        return Env(set(self.tainted), set(self.request), dict(self.strings), set(self.lists), set(self.const),
                   set(self.joined), set(self.resolved), set(self.validated))


def is_const_like(node: ast.AST, env: Env) -> bool:
    """A value no caller controls: literals, UPPER_CASE constants, counts, placeholder lists."""
    if isinstance(node, ast.Constant):
        return True
    if isinstance(node, ast.Name):
        return node.id.isupper() or node.id in env.const
    if isinstance(node, ast.Attribute):
        return node.attr.isupper() or (dotted(node).split(".")[0] in {"settings", "config"})
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return all(is_const_like(e, env) for e in node.elts)
    if isinstance(node, (ast.ListComp, ast.GeneratorExp)):
        return is_const_like(node.elt, env)
    if isinstance(node, ast.BinOp):
        if isinstance(node.op, ast.Mult):
            return is_const_like(node.left, env) or is_const_like(node.right, env)
        return is_const_like(node.left, env) and is_const_like(node.right, env)
    if isinstance(node, ast.JoinedStr):
        return all(is_const_like(v.value, env) for v in node.values if isinstance(v, ast.FormattedValue))
    if isinstance(node, ast.Call):
        return _const_call(node, env)
    return False


def _const_call(node: ast.Call, env: Env) -> bool:
    """A call is constant when it sanitizes, or joins/formats/converts only constants."""
    name = call_name(node)
    args = [*node.args, *(k.value for k in node.keywords)]
    if SANITIZER_RE.search(name):
        return True
    if name == "join" and isinstance(node.func, ast.Attribute) and node.args:
        return is_const_like(node.func.value, env) and is_const_like(node.args[0], env)
    if name == "format" and isinstance(node.func, ast.Attribute):
        return is_const_like(node.func.value, env) and all(is_const_like(a, env) for a in args)
    if name == "str" or isinstance(node.func, ast.Name) or dotted(node.func).split(".")[0] in {
            "settings", "config"}:
        return bool(args) and all(is_const_like(a, env) for a in args)
    return False


def string_build(node: ast.AST, env: Env) -> StrExpr | None:
    """Describe ``node`` if it builds a string (f-string, %, +, .format, join, or a name bound to one)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return StrExpr(node.value, [], node)
    if isinstance(node, ast.JoinedStr):
        text = "".join(v.value for v in node.values
                       if isinstance(v, ast.Constant) and isinstance(v.value, str))
        return StrExpr(text, [v.value for v in node.values if isinstance(v, ast.FormattedValue)], node)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mod):
        left = string_build(node.left, env)
        if left is None:
            return None
        r = node.right
        parts = list(r.elts) if isinstance(r, ast.Tuple) else list(r.values) if isinstance(
            r, ast.Dict) else [r]
        return StrExpr(left.text, left.parts + parts, node)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = string_build(node.left, env), string_build(node.right, env)
        if left is None and right is None:
            return None
        text = (left.text if left else "") + (right.text if right else "")
        parts = (left.parts if left else [node.left]) + (right.parts if right else [node.right])
        return StrExpr(text, parts, node)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
        return _method_string(node, node.func, env)
    if isinstance(node, ast.Name) and node.id in env.strings:
        return env.strings[node.id]
    return None


def _method_string(node: ast.Call, func: ast.Attribute, env: Env) -> StrExpr | None:
    """``base.format(..)``, ``sep.join(..)`` and text-keeping methods (``.strip()``) of a built string."""
    if func.attr == "format":
        base = string_build(func.value, env)
        args = list(node.args) + [k.value for k in node.keywords]
        if base is not None:
            return StrExpr(base.text, base.parts + args, node)
        if isinstance(func.value, (ast.Name, ast.Attribute)):   # TEMPLATE.format(..)
            return StrExpr("", args, node)
    if func.attr == "join" and node.args:
        base = string_build(func.value, env)
        if base is not None and not base.parts:
            return StrExpr(base.text, [node.args[0]], node)
    if func.attr in {"replace", "strip", "lower", "upper"}:
        return string_build(func.value, env)
    return None


def names_in(node: ast.AST, *, skip_sanitized: bool = True) -> set[str]:
    """Names read in ``node``, not descending into sanitizer calls."""
    out: set[str] = set()
    stack = [node]
    while stack:
        n = stack.pop()
        if skip_sanitized and isinstance(n, ast.Call) and SANITIZER_RE.search(call_name(n)):
            continue
        if isinstance(n, ast.Name):
            out.add(n.id)
        stack.extend(ast.iter_child_nodes(n))
    return out


def has_request(node: ast.AST) -> bool:
    """Does ``node`` read input directly (request, ``input()``, ``sys.argv``, exception text), outside
    sanitizer calls?"""
    stack = [node]
    while stack:
        n = stack.pop()
        if isinstance(n, ast.Call) and SANITIZER_RE.search(call_name(n)):
            continue
        if is_request_expr(n):
            return True
        if isinstance(n, ast.Call) and call_name(n) in INPUT_CALLS:
            return True     # user input; exception text (may echo input)
        if dotted(n) == "sys.argv":
            return True
        stack.extend(ast.iter_child_nodes(n))
    return False


def tainted(node: ast.AST, env: Env) -> bool:
    """Does any input reach ``node`` (a tainted name or a direct read), outside sanitizer calls?"""
    return bool(names_in(node) & env.tainted) or has_request(node)


def _string_view(node: ast.AST, env: Env) -> list[ast.AST]:
    """Sub-expressions through which request *text* flows: a call that is not a string operation
    (``Model.objects.get(id=..)``, ``parse_bool(..)``, ``int(..)``) turns text into something else."""
    out, stack = [], [node]
    while stack:
        n = stack.pop()
        out.append(n)
        if isinstance(n, ast.Call):
            name = call_name(n)
            obj = n.func.value if isinstance(n.func, ast.Attribute) else None
            keeps = name in STRING_KEEPING or is_request_expr(n) or (
                name in MAPPING_GETS and isinstance(obj, ast.Name) and obj.id in env.request)
            if not keeps:
                continue
        stack.extend(ast.iter_child_nodes(n))
    return out


def request_tainted(node: ast.AST, env: Env) -> bool:
    """Does request text (not a value computed from it) reach ``node``? Used for XSS."""
    view = _string_view(node, env)
    if any(isinstance(n, ast.Name) and n.id in env.request for n in view):
        return True
    return any(is_request_expr(n) and not (isinstance(n, ast.Call) and SANITIZER_RE.search(call_name(n)))
               for n in view) and has_request(node)


def is_tainted_join(value: ast.AST, env: Env) -> bool:
    """``os.path.join(base, <input>)`` or ``"%s/%s" % (base, <input>)``, also under realpath(..)."""
    if isinstance(value, ast.Call) and call_name(value) in RESOLVERS and value.args:
        return is_tainted_join(value.args[0], env)
    if isinstance(value, ast.Call) and call_name(value) == "join" \
            and dotted(value.func).endswith("path.join"):
        return any(tainted(a, env) for a in value.args[1:])
    sb = string_build(value, env) if isinstance(value, (ast.BinOp, ast.JoinedStr, ast.Call)) else None
    return sb is not None and "/" in sb.text and len(sb.parts) > 1 and any(
        tainted(p, env) for p in sb.parts[1:])


def joined_method(value: ast.AST, env: Env) -> bool:
    """``p.rstrip('/')`` of a joined path is still that path."""
    return (isinstance(value, ast.Call) and isinstance(value.func, ast.Attribute)
            and isinstance(value.func.value, ast.Name) and value.func.value.id in env.joined
            and value.func.attr in {"rstrip", "lstrip", "strip", "replace", "lower", "encode", "decode"})
