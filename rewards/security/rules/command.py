"""Command injection (CWE-78): input in a command string that reaches a shell, ``subprocess`` or a
function whose name says it runs commands (``run_ssh``, ``execCommand``), or is bound to ``cmd``-like names.

An argument list (``[..]``, or a name bound to one) is never a finding: that is the recommended fix.
"""
from __future__ import annotations

import ast
import re

from rewards.security.rules.sql import SQL_SINK_RE, SQL_WORDS_RE
from rewards.security.rules.taint import Env, is_const_like, receiver, string_build, tainted
from rewards.security.rules.walk import Scope, Sink

SHELL_CALLS = {"system", "popen", "popen2", "popen3", "popen4", "getoutput", "getstatusoutput",
               "spawnlp", "spawnl", "startfile"}
SUBPROCESS_CALLS = {"call", "check_call", "check_output", "run", "Popen"}
CMD_WORDS = {"run", "exec", "execute", "call", "spawn", "popen", "system", "shell", "ssh", "cli", "cmd",
             "command", "runcmd", "execv", "execvp"}
CMD_VAR_RE = re.compile(r"(^|_)(cmd|command|cmdline|ssh_cmd|cli_cmd)s?($|_)", re.IGNORECASE)


def name_words(name: str) -> set[str]:
    """``_run_ssh`` -> {run, ssh}; ``execCommand`` -> {exec, command}; ``cmd.run`` -> {cmd, run}."""
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name)
    return {w.lower() for w in re.split(r"[_.\W]+", spaced) if w}


def command_arg(node: ast.Call) -> ast.AST | None:
    """The command a call runs: its first argument, or ``args=``/``cmd=``/``command=``/``cmdline=``."""
    if node.args:
        return node.args[0]
    for k in node.keywords:
        if k.arg in {"args", "cmd", "command", "cmdline"}:
            return k.value
    return None


def is_shell_call(node: ast.Call, name: str) -> bool:
    """``os.system``-like calls, ``shell=True`` (anything but a false constant), pexpect, ``exec_command``."""
    base = receiver(node)
    return (name in SHELL_CALLS and base in {"os", "commands", "subprocess", "popen2", ""}) \
        or has_shell_kw(node) or (name in {"spawn", "run"} and base == "pexpect") or name == "exec_command"


def has_shell_kw(node: ast.Call) -> bool:
    return any(k.arg == "shell" and not (isinstance(k.value, ast.Constant) and not k.value.value)
               for k in node.keywords)


def is_wrapper(name: str, arg0: ast.AST | None, env: Env) -> bool:
    """A function named for running commands, or one given a ``cmd``-named string."""
    return bool(name_words(name) & CMD_WORDS) or (
        isinstance(arg0, ast.Name) and bool(CMD_VAR_RE.search(arg0.id)) and arg0.id in env.strings)


class CommandSink(Sink):
    """Command strings built from input: at the call that runs them and where a ``cmd`` name is bound."""

    def on_store(self, target: ast.expr, value: ast.expr | None, scope: Scope) -> None:
        if not (isinstance(target, ast.Name) and CMD_VAR_RE.search(target.id) and value is not None):
            return
        env = scope.env
        sb = string_build(value, env)
        if sb is not None and any(tainted(p, env) and not is_const_like(p, env) for p in sb.parts):
            scope.report("078", target, "command line built as a string from input; "
                         "build an argument list", "MEDIUM", "MEDIUM")

    def on_call(self, call: ast.Call, name: str, scope: Scope) -> None:
        env = scope.env
        shell_call = is_shell_call(call, name)
        arg = command_arg(call)
        wrapper = is_wrapper(name, arg, env)
        plain = name in SUBPROCESS_CALLS and not has_shell_kw(call)
        if not (shell_call or wrapper or plain) or arg is None:
            return
        if isinstance(arg, (ast.List, ast.Tuple, ast.ListComp)):
            return      # an argument list: the recommended form
        if isinstance(arg, ast.Name) and arg.id in env.lists:
            return
        sb = string_build(arg, env)
        if sb is not None and SQL_SINK_RE.match(name) and SQL_WORDS_RE.search(sb.text):
            return      # a SQL statement handed to cursor.execute(): CWE-89's business
        if sb is None:
            if shell_call and tainted(arg, env):
                scope.report("078", call, f"input reaches shell command {name}()", "HIGH", "MEDIUM")
            return
        unsafe = [p for p in sb.parts if not is_const_like(p, env)
                  and not (isinstance(p, ast.Name) and p.id in env.validated)]   # checked by a guard
        if unsafe and any(tainted(p, env) for p in unsafe):
            conf = "HIGH" if shell_call or wrapper else "LOW"
            scope.report("078", call, f"command string built from input reaches {name}()", "HIGH", conf)
        elif unsafe and (shell_call or wrapper):
            scope.report("078", call, f"command string built from non-constant values reaches {name}(); "
                         "pass an argument list", "MEDIUM", "MEDIUM")
        elif wrapper and " " in sb.text.strip():
            scope.report("078", call, f"command given to {name}() as one shell string; pass an argument list",
                         "LOW", "MEDIUM")
