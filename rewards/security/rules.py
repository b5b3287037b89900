"""Our own checkers for what bandit cannot see: taint from a function's inputs to dangerous sinks.

Bandit matches call names and string shapes one node at a time; it misses path traversal and XSS
entirely and most command injection through wrapper functions. These rules follow data inside one
function, in source order:

* **sources** - the function's parameters (not ``self``/``cls``), request objects (``request.args``,
  ``self.request.get(..)``, ``form_dict``), ``input()``, ``sys.argv``, caught exceptions;
* **propagation** - assignment, augmented assignment, ``for`` targets, string building;
* **sanitizers** - calls that make a value safe (``int``, ``len``, ``*escape*``, ``*quote*``,
  ``basename``, ``secure_filename``, ``safe_join``, ``*sanitize*``, ``bleach.clean``, ...);
* **guards** - a value tested by a validator in an ``if``/``while``/``assert`` (``re.match``,
  ``.isalnum()``, ``.startswith()``, ``commonpath``, ``validate*(..)``) or passed to a standalone
  ``check*/validate*`` call is clean afterwards;
* **sinks** - per CWE (see ``docs/security-reward.md``).

Every finding is a ``Finding`` with rule id ``EARL-CWE-<nnn>``. The SQL analysis also tells which
SQL-looking strings interpolate only constants, so bandit's B608 guess on those lines can be dropped.
"""
from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from functools import lru_cache

from rewards.security.source import Finding, python3_source, quiet_parse

SANITIZER_RE = re.compile(
    r"^(int|float|bool|len|abs|round|ord|hash|uuid\d?)$|escape|quote|saniti[sz]e|secure_filename|safe_join"
    r"|basename|clean|bleach|validat|antixss|strip_tags|format_html|urlencode|slugify", re.IGNORECASE)
VALIDATOR_RE = re.compile(
    r"^(match|fullmatch|search|isalnum|isalpha|isdigit|isdecimal|isnumeric|isidentifier|startswith"
    r"|commonpath|commonprefix|isabs)$|valid|check|verify|is_safe|allowed|ensure", re.IGNORECASE)
SQL_SINK_RE = re.compile(r"^(execute\w*|\w*_query|query|raw|mogrify|read_sql\w*|text)$")
SQL_WORDS_RE = re.compile(r"\b(select|insert|update|delete|create|drop|alter|where|from|values|set|"
                          r"into|order by|limit|join|pragma|grant)\b", re.IGNORECASE)
SHELL_CALLS = {"system", "popen", "popen2", "popen3", "popen4", "getoutput", "getstatusoutput",
               "spawnlp", "spawnl", "startfile"}
SUBPROCESS_CALLS = {"call", "check_call", "check_output", "run", "Popen"}
CMD_WORDS = {"run", "exec", "execute", "call", "spawn", "popen", "system", "shell", "ssh", "cli", "cmd",
             "command", "runcmd", "execv", "execvp"}
CMD_VAR_RE = re.compile(r"(^|_)(cmd|command|cmdline|ssh_cmd|cli_cmd)s?($|_)", re.IGNORECASE)
FILE_SINKS = {"open", "file", "remove", "unlink", "rmdir", "removedirs", "makedirs", "mkdir", "listdir",
              "rename", "renames", "replace", "chmod", "chown", "scandir", "copy", "copy2", "copyfile",
              "copytree", "move", "rmtree", "send_file", "static_file", "FileResponse", "Path",
              "read_text", "read_bytes", "write_text", "write_bytes", "truncate", "symlink", "link"}
OUTPUT_SINKS = {"write", "HttpResponse", "HttpResponseBadRequest", "Response", "make_response",
                "render_template_string", "send", "writelines", "mark_safe", "Markup", "SafeString", "SafeText"}
TEMPLATE_CALLS = {"render", "render_template", "render_to_response", "TemplateResponse", "format"}
DESERIALIZERS = {("pickle", "load"), ("pickle", "loads"), ("cPickle", "load"), ("cPickle", "loads"),
                 ("dill", "load"), ("dill", "loads"), ("marshal", "load"), ("marshal", "loads"),
                 ("pickle", "Unpickler"), ("shelve", "open"), ("jsonpickle", "decode"),
                 ("yaml", "unsafe_load"), ("yaml", "full_load"), ("pandas", "read_pickle"),
                 ("pd", "read_pickle")}
WEAK_HASHES = {"md5", "sha1", "md4", "md2"}
WEAK_CIPHERS = {"DES", "DES3", "ARC4", "ARC2", "Blowfish", "RC4", "TripleDES"}
HTML_TAG_RE = re.compile(r"<\s*/?\s*[a-zA-Z!]")
REQUEST_NAMES = {"request", "req", "form_dict", "REQUEST"}
REQUEST_ATTRS = {"args", "form", "GET", "POST", "REQUEST", "values", "cookies", "COOKIES", "FILES",
                 "json", "data", "params", "query_params", "headers", "body", "get_json", "form_dict"}

SEV = {"089": ("HIGH", "MEDIUM"), "078": ("HIGH", "MEDIUM"), "022": ("MEDIUM", "MEDIUM"),
       "079": ("MEDIUM", "MEDIUM")}


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


def name_words(name: str) -> set[str]:
    """``_run_ssh`` -> {run, ssh}; ``execCommand`` -> {exec, command}; ``cmd.run`` -> {cmd, run}."""
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name)
    return {w.lower() for w in re.split(r"[_.\W]+", spaced) if w}


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


@dataclass
class StrExpr:
    """A string built at runtime: its literal text and the interpolated parts."""
    text: str
    parts: list[ast.expr]
    node: ast.AST


def string_build(node: ast.AST, env: Env) -> StrExpr | None:
    """Describe ``node`` if it builds a string (f-string, %, +, .format, join, or a name bound to one)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return StrExpr(node.value, [], node)
    if isinstance(node, ast.JoinedStr):
        text = "".join(v.value for v in node.values if isinstance(v, ast.Constant) and isinstance(v.value, str))
        return StrExpr(text, [v.value for v in node.values if isinstance(v, ast.FormattedValue)], node)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mod):
        left = string_build(node.left, env)
        if left is None:
            return None
        r = node.right
        parts = list(r.elts) if isinstance(r, ast.Tuple) else [v for v in r.values] if isinstance(
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
        if node.func.attr == "format":
            base = string_build(node.func.value, env)
            args = list(node.args) + [k.value for k in node.keywords]
            if base is not None:
                return StrExpr(base.text, base.parts + args, node)
            if isinstance(node.func.value, (ast.Name, ast.Attribute)):   # TEMPLATE.format(..)
                return StrExpr("", args, node)
        if node.func.attr == "join" and node.args:
            base = string_build(node.func.value, env)
            if base is not None and not base.parts:
                return StrExpr(base.text, [node.args[0]], node)
        if node.func.attr in {"replace", "strip", "lower", "upper"}:
            return string_build(node.func.value, env)
    if isinstance(node, ast.Name) and node.id in env.strings:
        return env.strings[node.id]
    return None


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
    stack = [node]
    while stack:
        n = stack.pop()
        if isinstance(n, ast.Call) and SANITIZER_RE.search(call_name(n)):
            continue
        if is_request_expr(n):
            return True
        if isinstance(n, ast.Call) and call_name(n) in {"input", "raw_input", "format_exc", "format_exception"}:
            return True     # user input; exception text (may echo input)
        if dotted(n) == "sys.argv":
            return True
        stack.extend(ast.iter_child_nodes(n))
    return False


def tainted(node: ast.AST, env: Env) -> bool:
    return bool(names_in(node) & env.tainted) or has_request(node)


STRING_KEEPING = {"str", "unicode", "format", "join", "strip", "lstrip", "rstrip", "lower", "upper", "title",
                  "replace", "decode", "encode", "split"}
MAPPING_GETS = {"get", "getlist", "getvalue", "pop"}


def _string_view(node: ast.AST, env: Env) -> list[ast.AST]:
    """Sub-expressions through which request *text* flows: a call that is not a string operation
    (``Model.objects.get(id=..)``, ``parse_bool(..)``, ``int(..)``) turns text into something else."""
    out, stack = [], [node]
    while stack:
        n = stack.pop()
        out.append(n)
        if isinstance(n, ast.Call):
            name = call_name(n)
            receiver = n.func.value if isinstance(n.func, ast.Attribute) else None
            keeps = name in STRING_KEEPING or is_request_expr(n) or (
                name in MAPPING_GETS and isinstance(receiver, ast.Name) and receiver.id in env.request)
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


RESOLVERS = {"realpath", "abspath", "normpath", "resolve", "commonpath"}
PATH_GUARDS = {"startswith", "commonpath", "commonprefix", "is_relative_to", "relative_to"}


def is_tainted_join(value: ast.AST, env: Env) -> bool:
    """``os.path.join(base, <input>)`` or ``"%s/%s" % (base, <input>)``, also under realpath(..)."""
    if isinstance(value, ast.Call) and call_name(value) in RESOLVERS and value.args:
        return is_tainted_join(value.args[0], env)
    if isinstance(value, ast.Call) and call_name(value) == "join" and dotted(value.func).endswith("path.join"):
        return any(tainted(a, env) for a in value.args[1:])
    sb = string_build(value, env) if isinstance(value, (ast.BinOp, ast.JoinedStr, ast.Call)) else None
    return sb is not None and "/" in sb.text and len(sb.parts) > 1 and any(
        tainted(p, env) for p in sb.parts[1:])


def _boolean(node: ast.AST) -> bool:
    """Expressions that can only be True/False: no text to inject."""
    if isinstance(node, (ast.Compare,)) or (isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not)):
        return True
    if isinstance(node, ast.BoolOp):
        return all(_boolean(v) for v in node.values)
    if isinstance(node, ast.Call):
        return bool(re.match(r"(is|has|can)_", call_name(node))) or call_name(node) == "bool"
    return False


def _joined_method(value: ast.AST, env: Env) -> bool:
    """``p.rstrip('/')`` of a joined path is still that path."""
    return (isinstance(value, ast.Call) and isinstance(value.func, ast.Attribute)
            and isinstance(value.func.value, ast.Name) and value.func.value.id in env.joined
            and value.func.attr in {"rstrip", "lstrip", "strip", "replace", "lower", "encode", "decode"})


class FunctionRules(ast.NodeVisitor):
    """Walks one function body in source order, tracking taint and reporting sink hits."""

    def __init__(self, env: Env, findings: list[Finding], sql_safe: set[int]):
        self.env, self.findings, self.sql_safe = env, findings, sql_safe

    # -- reporting --------------------------------------------------------------------------------
    def report(self, cwe: str, node: ast.AST, text: str, severity: str, confidence: str) -> None:
        self.findings.append(Finding(rule=f"EARL-CWE-{cwe}", cwe=f"CWE-{int(cwe)}", severity=severity,
                                     confidence=confidence, line=getattr(node, "lineno", 0), text=text,
                                     source="earl"))

    # -- binding ----------------------------------------------------------------------------------
    def bind(self, target: ast.AST, value: ast.AST | None, *, aug: bool = False) -> None:
        env = self.env
        if isinstance(target, (ast.Tuple, ast.List)):
            for t in target.elts:
                self.bind(t, value, aug=True if value is not None else aug)
            return
        if isinstance(target, (ast.Attribute, ast.Subscript)):
            self.check_store(target, value)
            return
        if not isinstance(target, ast.Name):
            return
        name = target.id
        t = value is not None and tainted(value, env)
        rq = value is not None and request_tainted(value, env)
        if aug:
            t = t or name in env.tainted
            rq = rq or name in env.request
        if CMD_VAR_RE.search(name) and value is not None:
            sb0 = string_build(value, env)
            if sb0 is not None and any(tainted(p, env) and not is_const_like(p, env) for p in sb0.parts):
                self.report("078", target, "command line built as a string from input; "
                            "build an argument list", "MEDIUM", "MEDIUM")
        for s, flag in ((env.tainted, t), (env.request, rq)):
            s.add(name) if flag else s.discard(name)
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
        if not aug:
            joined = value is not None and (is_tainted_join(value, env) or _joined_method(value, env))
            env.validated.discard(name)
            env.joined.discard(name)
            env.resolved.discard(name)
            if joined:
                env.joined.add(name)
            if value is not None and any(isinstance(n, ast.Call) and call_name(n) in RESOLVERS
                                         for n in ast.walk(value)):
                env.resolved.add(name)
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

    def visit_For(self, node: ast.For) -> None:
        self.visit(node.iter)
        self.bind(node.target, node.iter)
        for stmt in node.body + node.orelse:
            self.visit(stmt)

    visit_AsyncFor = visit_For

    def visit_With(self, node: ast.With) -> None:
        for item in node.items:
            self.visit(item.context_expr)
            if item.optional_vars is not None:
                self.bind(item.optional_vars, item.context_expr)
        for stmt in node.body:
            self.visit(stmt)

    visit_AsyncWith = visit_With

    def visit_ExceptHandler(self, node: ast.ExceptHandler) -> None:
        if node.name:        # exception messages may echo input
            self.env.tainted.add(node.name)
        for stmt in node.body:
            self.visit(stmt)

    def visit_NamedExpr(self, node: ast.NamedExpr) -> None:
        self.visit(node.value)
        self.bind(node.target, node.value)

    # -- guards -----------------------------------------------------------------------------------
    def untaint_guarded(self, test: ast.AST) -> None:
        for n in ast.walk(test):
            if isinstance(n, ast.Call) and VALIDATOR_RE.search(call_name(n)):
                args = list(n.args) + [k.value for k in n.keywords]
                if call_name(n) in PATH_GUARDS:    # a prefix test only proves containment of a resolved path
                    args = [a for a in [*args, getattr(n.func, "value", None)] if a is not None and (
                        any(isinstance(x, ast.Call) and call_name(x) in RESOLVERS for x in ast.walk(a))
                        or names_in(a, skip_sanitized=False) & self.env.resolved)]
                elif isinstance(n.func, ast.Attribute):
                    args.append(n.func.value)
                for a in args:
                    for name in names_in(a, skip_sanitized=False):
                        self.validate(name)
            elif isinstance(n, ast.Compare) and any(isinstance(o, (ast.In, ast.NotIn)) for o in n.ops):
                right = n.comparators[0]
                if isinstance(n.left, ast.Name) and not isinstance(right, ast.Constant):
                    self.validate(n.left.id)          # x in ALLOWED
                elif isinstance(n.left, ast.Constant) and isinstance(right, ast.Name):
                    self.validate(right.id)           # '/' not in x

    def validate(self, name: str) -> None:
        self.env.tainted.discard(name)
        self.env.request.discard(name)
        self.env.validated.add(name)

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

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        analyze_function(node, self.env.copy(), self.findings, self.sql_safe)

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_Lambda(self, node: ast.Lambda) -> None:
        return

    # -- sinks ------------------------------------------------------------------------------------
    def visit_Return(self, node: ast.Return) -> None:
        if node.value is not None:
            self.visit(node.value)
            if isinstance(node.value, ast.Dict):
                self.check_context(node.value)
            self.check_output(node.value, node)
            self.check_path_value(node.value, node, returned=True)

    def visit_Yield(self, node: ast.Yield) -> None:
        if node.value is not None:
            self.visit(node.value)
            self.check_path_value(node.value, node, returned=True)

    def visit_JoinedStr(self, node: ast.JoinedStr) -> None:
        self.check_sql_string(node)
        self.generic_visit(node)

    def visit_BinOp(self, node: ast.BinOp) -> None:
        if isinstance(node.op, (ast.Mod, ast.Add)):
            self.check_sql_string(node)
        self.generic_visit(node)

    def check_context(self, node: ast.Dict) -> None:
        """A dict handed to a template or returned from a view: its values end up in a page."""
        for v in node.values:
            if isinstance(v, ast.Call) and dotted(v.func) in {"json.dumps", "simplejson.dumps"} and v.args \
                    and not is_const_like(v.args[0], self.env) and not _boolean(v.args[0]) \
                    and not any(k.arg == "cls" for k in v.keywords):
                self.report("079", v, "json.dumps() output placed in a page context: it does not escape "
                            "'</script>'; use an HTML-safe encoder", "LOW", "MEDIUM")
            elif isinstance(v, ast.Dict):
                self.check_context(v)
            elif v is not None and request_tainted(v, self.env):
                self.report("079", v, "web-request input placed in a page context without escaping",
                            "LOW", "MEDIUM")

    def visit_Call(self, node: ast.Call) -> None:
        self.generic_visit(node)
        name = call_name(node)
        if SANITIZER_RE.search(name):
            return
        if name == "format":
            self.check_sql_string(node)
        self.check_sql_call(node, name)
        self.check_command(node, name)
        self.check_path_call(node, name)
        self.check_xss_call(node, name)
        self.check_misc(node, name)

    # SQL (CWE-89) ---------------------------------------------------------------------------------
    def check_sql_string(self, node: ast.AST) -> None:
        sb = string_build(node, self.env)
        if sb is None or not SQL_WORDS_RE.search(sb.text):
            return
        if all(is_const_like(p, self.env) for p in sb.parts):
            self.sql_safe.update(range(node.lineno, (node.end_lineno or node.lineno) + 1))

    def check_sql_call(self, node: ast.Call, name: str) -> None:
        if not SQL_SINK_RE.match(name) or not node.args:
            return
        sb = string_build(node.args[0], self.env)
        if sb is None or not sb.parts or not SQL_WORDS_RE.search(sb.text):
            return
        unsafe = [p for p in sb.parts if not is_const_like(p, self.env)]
        if not unsafe:
            return
        if any(tainted(p, self.env) for p in unsafe):
            self.report("089", node, f"SQL built from input by string formatting reaches {name}()",
                        "HIGH", "HIGH")
        else:
            self.report("089", node, f"SQL built by string formatting from non-constant values reaches "
                        f"{name}(); use query parameters", "MEDIUM", "MEDIUM")

    # command injection (CWE-78) -------------------------------------------------------------------
    def command_arg(self, node: ast.Call) -> ast.AST | None:
        if node.args:
            return node.args[0]
        for k in node.keywords:
            if k.arg in {"args", "cmd", "command", "cmdline"}:
                return k.value
        return None

    def check_command(self, node: ast.Call, name: str) -> None:
        shell_kw = any(k.arg == "shell" and not (isinstance(k.value, ast.Constant) and not k.value.value)
                       for k in node.keywords)
        base = dotted(node.func).split(".")[0] if isinstance(node.func, ast.Attribute) else ""
        shell_call = (name in SHELL_CALLS and base in {"os", "commands", "subprocess", "popen2", ""}) \
            or shell_kw or (name in {"spawn", "run"} and base == "pexpect") or name == "exec_command"
        arg0 = self.command_arg(node)
        wrapper = bool(name_words(name) & CMD_WORDS) or (
            isinstance(arg0, ast.Name) and bool(CMD_VAR_RE.search(arg0.id)) and arg0.id in self.env.strings)
        plain = name in SUBPROCESS_CALLS and not shell_kw
        if not (shell_call or wrapper or plain):
            return
        arg = self.command_arg(node)
        if arg is None:
            return
        if isinstance(arg, ast.Name) and arg.id in self.env.lists:
            return
        if isinstance(arg, (ast.List, ast.Tuple, ast.ListComp)):
            return
        sb = string_build(arg, self.env)
        if sb is not None and SQL_SINK_RE.match(name) and SQL_WORDS_RE.search(sb.text):
            return      # a SQL statement handed to cursor.execute(): CWE-89's business
        if sb is None:
            if shell_call and tainted(arg, self.env):
                self.report("078", node, f"input reaches shell command {name}()", "HIGH", "MEDIUM")
            return
        unsafe = [p for p in sb.parts if not is_const_like(p, self.env)
                  and not (isinstance(p, ast.Name) and p.id in self.env.validated)]   # checked by a guard
        if unsafe and any(tainted(p, self.env) for p in unsafe):
            conf = "HIGH" if shell_call or wrapper else "LOW"
            self.report("078", node, f"command string built from input reaches {name}()", "HIGH", conf)
        elif unsafe and (shell_call or wrapper):
            self.report("078", node, f"command string built from non-constant values reaches {name}(); "
                        "pass an argument list", "MEDIUM", "MEDIUM")
        elif wrapper and " " in sb.text.strip():
            self.report("078", node, f"command given to {name}() as one shell string; pass an argument list",
                        "LOW", "MEDIUM")

    # path traversal (CWE-22) ----------------------------------------------------------------------
    def check_path_value(self, value: ast.AST, at: ast.AST, *, returned: bool = False) -> None:
        """``os.path.join(base, <input>)`` handed on (returned, yielded, passed) unchecked."""
        if is_tainted_join(value, self.env) or (
                isinstance(value, ast.Name) and value.id in self.env.joined and value.id in self.env.tainted):
            self.report("022", at, "path joined from input is used without a containment check",
                        "MEDIUM", "LOW" if not returned else "MEDIUM")

    def path_danger(self, a: ast.AST) -> bool:
        """Input placed under a base directory (join, '/' or + concatenation), or request input as a path."""
        env = self.env
        if is_tainted_join(a, env) or (isinstance(a, ast.Name) and a.id in env.joined and a.id in env.tainted):
            return True
        if isinstance(a, ast.BinOp) and isinstance(a.op, ast.Add) and not tainted(a.left, env) \
                and tainted(a.right, env):
            return True
        sb = string_build(a, env)
        if sb is not None and "/" in sb.text and any(tainted(p, env) for p in sb.parts[1:]):
            return True
        return request_tainted(a, env)

    def check_path_call(self, node: ast.Call, name: str) -> None:
        receiver = dotted(node.func).split(".")[0] if isinstance(node.func, ast.Attribute) else ""
        generic = name in {"copy", "move", "replace", "open", "remove", "get", "write"} and receiver not in {
            "os", "shutil", "io", "codecs", "pathlib", ""}
        if name in FILE_SINKS and not generic:
            for a in node.args[:2]:
                if self.path_danger(a):
                    conf = "HIGH" if request_tainted(a, self.env) else "MEDIUM"
                    self.report("022", node, f"path from input reaches {name}() without a containment check",
                                "MEDIUM", conf)
                    return
        elif name not in {"join", "dirname", "exists", "isfile", "isdir", "getsize", "split", "splitext"} \
                and not VALIDATOR_RE.search(name) and name not in RESOLVERS:
            for a in node.args:
                self.check_path_value(a, node)

    # XSS (CWE-79) ---------------------------------------------------------------------------------
    def check_output(self, value: ast.AST, at: ast.AST) -> None:
        sb = string_build(value, self.env)
        if sb is not None and HTML_TAG_RE.search(sb.text):
            bad = [p for p in sb.parts if not is_const_like(p, self.env) and tainted(p, self.env)]
            if bad:
                self.report("079", at, "HTML built from input without escaping", "MEDIUM", "MEDIUM")
                return
        if request_tainted(value, self.env) and not isinstance(value, ast.Dict):
            self.report("079", at, "web-request input returned without escaping", "MEDIUM", "MEDIUM")

    def check_store(self, target: ast.AST, value: ast.AST | None) -> None:
        if value is not None and request_tainted(value, self.env):
            self.report("079", target, "web-request input stored without escaping", "LOW", "MEDIUM")

    def check_xss_call(self, node: ast.Call, name: str) -> None:
        if name == "Environment" and not any(k.arg == "autoescape" for k in node.keywords):
            self.report("079", node, "template environment without autoescape", "MEDIUM", "HIGH")
            return
        if name in OUTPUT_SINKS:
            for a in node.args[:1]:
                if request_tainted(a, self.env) or (
                        name in {"mark_safe", "Markup", "SafeString", "SafeText"} and not is_const_like(a, self.env)):
                    self.report("079", node, f"unescaped value reaches {name}()", "MEDIUM", "MEDIUM")
                    return
                sb = string_build(a, self.env)
                if sb is not None and HTML_TAG_RE.search(sb.text) and any(
                        tainted(p, self.env) and not is_const_like(p, self.env) for p in sb.parts):
                    self.report("079", node, f"HTML built from input reaches {name}()", "MEDIUM", "MEDIUM")
                    return
        if name in OUTPUT_SINKS or name in TEMPLATE_CALLS:
            for a in node.args:
                if isinstance(a, ast.Dict):
                    self.check_context(a)
            for k in node.keywords:
                if k.arg and request_tainted(k.value, self.env):
                    self.report("079", k.value, f"web-request input passed to {name}() without escaping",
                                "LOW", "MEDIUM")

    # weak crypto (327), insecure temp files (377), unsafe deserialization (502) ---------------------
    def check_misc(self, node: ast.Call, name: str) -> None:
        d = dotted(node.func)
        base = d.split(".")[0] if "." in d else ""
        kw = {k.arg: k.value for k in node.keywords}
        if base == "hashlib" and (name in WEAK_HASHES or (name == "new" and node.args and isinstance(
                node.args[0], ast.Constant) and str(node.args[0].value).lower() in WEAK_HASHES)):
            if not (isinstance(kw.get("usedforsecurity"), ast.Constant) and kw["usedforsecurity"].value is False):
                self.report("327", node, f"weak hash {d}()", "MEDIUM", "HIGH")
        elif name == "new" and any(c in d.split(".") for c in WEAK_CIPHERS):
            self.report("327", node, f"weak cipher {d}()", "HIGH", "HIGH")
        elif any(isinstance(a, ast.Attribute) and a.attr == "MODE_ECB" for a in node.args) or name == "ECB":
            self.report("327", node, "ECB mode", "MEDIUM", "HIGH")
        elif name in {"mktemp", "tempnam", "tmpnam"} and base in {"tempfile", "os", ""}:
            self.report("377", node, f"{name}() returns a name another process can take first; "
                        "use mkstemp/NamedTemporaryFile", "MEDIUM", "HIGH")
        elif (base, name) in DESERIALIZERS:
            self.report("502", node, f"{d}() deserializes untrusted data", "HIGH", "HIGH")
        elif base == "yaml" and name == "load":
            loader = kw.get("Loader") or (node.args[1] if len(node.args) > 1 else None)
            if loader is None or "Safe" not in (dotted(loader) or ""):
                self.report("502", node, "yaml.load without SafeLoader", "HIGH", "HIGH")
        elif base == "torch" and name == "load":
            w = kw.get("weights_only")
            if not (isinstance(w, ast.Constant) and w.value is True):
                self.report("502", node, "torch.load without weights_only=True", "MEDIUM", "MEDIUM")


def analyze_function(fn: ast.FunctionDef | ast.AsyncFunctionDef, env: Env, findings: list[Finding],
                     sql_safe: set[int]) -> None:
    params = [a.arg for a in fn.args.posonlyargs + fn.args.args + fn.args.kwonlyargs]
    params += [a.arg for a in (fn.args.vararg, fn.args.kwarg) if a is not None]
    for p in params:
        if p not in {"self", "cls"}:
            env.tainted.add(p)
            env.strings.pop(p, None)
            env.lists.discard(p)
            env.const.discard(p)
    visitor = FunctionRules(env, findings, sql_safe)
    for stmt in fn.body:
        visitor.visit(stmt)


@dataclass
class RuleReport:
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
    findings: list[Finding] = []
    sql_safe: set[int] = set()
    visitor = FunctionRules(Env(), findings, sql_safe)
    for stmt in tree.body:
        visitor.visit(stmt)
    dedup: dict[tuple[str, int], Finding] = {}
    for f in findings:
        if (f.rule, f.line) not in dedup or f.weight > dedup[(f.rule, f.line)].weight:
            dedup[(f.rule, f.line)] = f
    return RuleReport(sorted(dedup.values(), key=lambda f: (f.line, f.rule)), sql_safe)


def rule_findings(code: str) -> list[Finding]:
    rep = analyze(code)
    return rep.findings if rep else []
