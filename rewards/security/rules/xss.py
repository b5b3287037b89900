"""Cross-site scripting (CWE-79): request text or input-built HTML that reaches a response, a template
context, ``mark_safe``-like calls or a stored attribute without escaping; template environments without
autoescape.
"""
from __future__ import annotations

import ast
import re

from rewards.security.rules.taint import (
    call_name,
    dotted,
    is_const_like,
    request_tainted,
    string_build,
    tainted,
)
from rewards.security.rules.walk import Scope, Sink

MARK_SAFE = {"mark_safe", "Markup", "SafeString", "SafeText"}
OUTPUT_SINKS = {"write", "HttpResponse", "HttpResponseBadRequest", "Response", "make_response",
                "render_template_string", "send", "writelines", *MARK_SAFE}
TEMPLATE_CALLS = {"render", "render_template", "render_to_response", "TemplateResponse", "format"}
HTML_TAG_RE = re.compile(r"<\s*/?\s*[a-zA-Z!]")


def _boolean(node: ast.AST) -> bool:
    """Expressions that can only be True/False: no text to inject."""
    if isinstance(node, ast.Compare) or (isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not)):
        return True
    if isinstance(node, ast.BoolOp):
        return all(_boolean(v) for v in node.values)
    if isinstance(node, ast.Call):
        return bool(re.match(r"(is|has|can)_", call_name(node))) or call_name(node) == "bool"
    return False


def check_context(node: ast.Dict, scope: Scope) -> None:
    """A dict handed to a template or returned from a view: its values end up in a page."""
    env = scope.env
    for v in node.values:
        if isinstance(v, ast.Call) and dotted(v.func) in {"json.dumps", "simplejson.dumps"} and v.args \
                and not is_const_like(v.args[0], env) and not _boolean(v.args[0]) \
                and not any(k.arg == "cls" for k in v.keywords):
            scope.report("079", v, "json.dumps() output placed in a page context: it does not escape "
                         "'</script>'; use an HTML-safe encoder", "LOW", "MEDIUM")
        elif isinstance(v, ast.Dict):
            check_context(v, scope)
        elif v is not None and request_tainted(v, env):
            scope.report("079", v, "web-request input placed in a page context without escaping",
                         "LOW", "MEDIUM")


class XssSink(Sink):
    """Unescaped request text or input-built HTML in what a view returns, renders, writes or stores."""

    def on_call(self, call: ast.Call, name: str, scope: Scope) -> None:
        if name == "Environment" and not any(k.arg == "autoescape" for k in call.keywords):
            scope.report("079", call, "template environment without autoescape", "MEDIUM", "HIGH")
            return
        if name in OUTPUT_SINKS and self.check_output_arg(call, name, scope):
            return
        if name in OUTPUT_SINKS or name in TEMPLATE_CALLS:
            self.check_template_args(call, name, scope)

    def check_output_arg(self, call: ast.Call, name: str, scope: Scope) -> bool:
        """The first argument of a response/write/mark_safe call; True when it was reported."""
        env = scope.env
        for a in call.args[:1]:
            if request_tainted(a, env) or (name in MARK_SAFE and not is_const_like(a, env)):
                scope.report("079", call, f"unescaped value reaches {name}()", "MEDIUM", "MEDIUM")
                return True
            sb = string_build(a, env)
            if sb is not None and HTML_TAG_RE.search(sb.text) and any(
                    tainted(p, env) and not is_const_like(p, env) for p in sb.parts):
                scope.report("079", call, f"HTML built from input reaches {name}()", "MEDIUM", "MEDIUM")
                return True
        return False

    def check_template_args(self, call: ast.Call, name: str, scope: Scope) -> None:
        """Context dicts and keyword arguments of a render/response call."""
        for a in call.args:
            if isinstance(a, ast.Dict):
                check_context(a, scope)
        for k in call.keywords:
            if k.arg and request_tainted(k.value, scope.env):
                scope.report("079", k.value, f"web-request input passed to {name}() without escaping",
                             "LOW", "MEDIUM")

    def on_return(self, value: ast.expr, at: ast.Return, scope: Scope) -> None:
        if isinstance(value, ast.Dict):
            check_context(value, scope)
        sb = string_build(value, scope.env)
        if sb is not None and HTML_TAG_RE.search(sb.text):
            bad = [p for p in sb.parts if not is_const_like(p, scope.env) and tainted(p, scope.env)]
            if bad:
                scope.report("079", at, "HTML built from input without escaping", "MEDIUM", "MEDIUM")
                return
        if request_tainted(value, scope.env) and not isinstance(value, ast.Dict):
            scope.report("079", at, "web-request input returned without escaping", "MEDIUM", "MEDIUM")

    def on_store(self, target: ast.expr, value: ast.expr | None, scope: Scope) -> None:
        if isinstance(target, (ast.Attribute, ast.Subscript)) and value is not None \
                and request_tainted(value, scope.env):
            scope.report("079", target, "web-request input stored without escaping", "LOW", "MEDIUM")
