"""Checks that need no taint: weak hashes and ciphers, ECB mode (CWE-327), predictable temp file names
(CWE-377), deserializers that run code (CWE-502). At most one finding a call.
"""
from __future__ import annotations

import ast

from rewards.security.rules.taint import dotted
from rewards.security.rules.walk import Scope, Sink

DESERIALIZERS = {("pickle", "load"), ("pickle", "loads"), ("cPickle", "load"), ("cPickle", "loads"),
                 ("dill", "load"), ("dill", "loads"), ("marshal", "load"), ("marshal", "loads"),
                 ("pickle", "Unpickler"), ("shelve", "open"), ("jsonpickle", "decode"),
                 ("yaml", "unsafe_load"), ("yaml", "full_load"), ("pandas", "read_pickle"),
                 ("pd", "read_pickle")}
WEAK_HASHES = {"md5", "sha1", "md4", "md2"}
WEAK_CIPHERS = {"DES", "DES3", "ARC4", "ARC2", "Blowfish", "RC4", "TripleDES"}


def is_weak_hash(call: ast.Call, name: str, base: str) -> bool:
    """``hashlib.md5(..)`` or ``hashlib.new('md5', ..)``."""
    return base == "hashlib" and (name in WEAK_HASHES or (name == "new" and bool(call.args) and isinstance(
        call.args[0], ast.Constant) and str(call.args[0].value).lower() in WEAK_HASHES))


def not_for_security(kw: dict[str | None, ast.expr]) -> bool:
    """``usedforsecurity=False``: the caller says the hash protects nothing."""
    flag = kw.get("usedforsecurity")
    return isinstance(flag, ast.Constant) and flag.value is False


class MiscSink(Sink):
    """Weak crypto, ``mktemp``, unsafe deserialization: the first check that matches a call decides."""

    def on_call(self, call: ast.Call, name: str, scope: Scope) -> None:
        d = dotted(call.func)
        base = d.split(".")[0] if "." in d else ""
        kw = {k.arg: k.value for k in call.keywords}
        if is_weak_hash(call, name, base):
            if not not_for_security(kw):
                scope.report("327", call, f"weak hash {d}()", "MEDIUM", "HIGH")
        elif name == "new" and any(c in d.split(".") for c in WEAK_CIPHERS):
            scope.report("327", call, f"weak cipher {d}()", "HIGH", "HIGH")
        elif any(isinstance(a, ast.Attribute) and a.attr == "MODE_ECB" for a in call.args) or name == "ECB":
            scope.report("327", call, "ECB mode", "MEDIUM", "HIGH")
        elif name in {"mktemp", "tempnam", "tmpnam"} and base in {"tempfile", "os", ""}:
            scope.report("377", call, f"{name}() returns a name another process can take first; "
                         "use mkstemp/NamedTemporaryFile", "MEDIUM", "HIGH")
        elif (base, name) in DESERIALIZERS:
            scope.report("502", call, f"{d}() deserializes untrusted data", "HIGH", "HIGH")
        elif base == "yaml" and name == "load":
            loader = kw.get("Loader") or (call.args[1] if len(call.args) > 1 else None)
            if loader is None or "Safe" not in (dotted(loader) or ""):
                scope.report("502", call, "yaml.load without SafeLoader", "HIGH", "HIGH")
        elif base == "torch" and name == "load":
            w = kw.get("weights_only")
            if not (isinstance(w, ast.Constant) and w.value is True):
                scope.report("502", call, "torch.load without weights_only=True", "MEDIUM", "MEDIUM")
