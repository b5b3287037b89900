"""Path traversal (CWE-22): input placed under a base directory, or request input used as a path, that
reaches a file operation, or a joined path handed on (returned, yielded, passed) without a containment check.

A containment check is a guard on the *resolved* path (``realpath(p).startswith(base)``, ``commonpath``):
the walk's guards clean it; ``basename``/``secure_filename``/``safe_join`` are sanitizers.
"""
from __future__ import annotations

import ast

from rewards.security.rules.taint import (
    RESOLVERS,
    VALIDATOR_RE,
    Env,
    is_tainted_join,
    receiver,
    request_tainted,
    string_build,
    tainted,
)
from rewards.security.rules.walk import Scope, Sink

FILE_SINKS = {"open", "file", "remove", "unlink", "rmdir", "removedirs", "makedirs", "mkdir", "listdir",
              "rename", "renames", "replace", "chmod", "chown", "scandir", "copy", "copy2", "copyfile",
              "copytree", "move", "rmtree", "send_file", "static_file", "FileResponse", "Path",
              "read_text", "read_bytes", "write_text", "write_bytes", "truncate", "symlink", "link"}
# names also common as methods of non-file objects: a file sink only on os/shutil/io/.. or unqualified
GENERIC_NAMES = {"copy", "move", "replace", "open", "remove", "get", "write"}
FILE_MODULES = {"os", "shutil", "io", "codecs", "pathlib", ""}
# calls that inspect a path rather than use it: a joined path passed to them is not handed on
PATH_INSPECTORS = {"join", "dirname", "exists", "isfile", "isdir", "getsize", "split", "splitext"}


def is_joined_input(value: ast.AST, env: Env) -> bool:
    """``os.path.join(base, <input>)`` itself, or a tainted name bound to one."""
    return is_tainted_join(value, env) or (
        isinstance(value, ast.Name) and value.id in env.joined and value.id in env.tainted)


def path_danger(a: ast.AST, env: Env) -> bool:
    """Input placed under a base directory (join, '/' or + concatenation), or request input as a path."""
    if is_joined_input(a, env):
        return True
    if isinstance(a, ast.BinOp) and isinstance(a.op, ast.Add) and not tainted(a.left, env) \
            and tainted(a.right, env):
        return True
    sb = string_build(a, env)
    if sb is not None and "/" in sb.text and any(tainted(p, env) for p in sb.parts[1:]):
        return True
    return request_tainted(a, env)


class PathSink(Sink):
    """File operations on input paths; joined input paths handed on unchecked."""

    def on_call(self, call: ast.Call, name: str, scope: Scope) -> None:
        generic = name in GENERIC_NAMES and receiver(call) not in FILE_MODULES
        if name in FILE_SINKS and not generic:
            self.check_file_op(call, name, scope)
        elif name not in PATH_INSPECTORS and not VALIDATOR_RE.search(name) and name not in RESOLVERS:
            for a in call.args:
                self.check_handed_on(a, call, scope)

    def check_file_op(self, call: ast.Call, name: str, scope: Scope) -> None:
        for a in call.args[:2]:
            if path_danger(a, scope.env):
                conf = "HIGH" if request_tainted(a, scope.env) else "MEDIUM"
                scope.report("022", call, f"path from input reaches {name}() without a containment check",
                             "MEDIUM", conf)
                return

    def check_handed_on(self, value: ast.AST, at: ast.AST, scope: Scope, *, returned: bool = False) -> None:
        """``os.path.join(base, <input>)`` handed on (returned, yielded, passed) unchecked."""
        if is_joined_input(value, scope.env):
            scope.report("022", at, "path joined from input is used without a containment check",
                         "MEDIUM", "LOW" if not returned else "MEDIUM")

    def on_return(self, value: ast.expr, at: ast.Return, scope: Scope) -> None:
        self.check_handed_on(value, at, scope, returned=True)

    def on_yield(self, value: ast.expr, at: ast.Yield, scope: Scope) -> None:
        self.check_handed_on(value, at, scope, returned=True)
