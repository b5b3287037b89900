"""Security checkers: bandit in-process (nosec ignored) and our taint rules, per CWE."""
from __future__ import annotations

import ast
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from rewards.security.findings import bandit_findings, scan
from rewards.security.rules import SINKS, rule_findings
from rewards.security.rules.taint import Env, tainted
from rewards.security.rules.walk import FunctionWalker, Scope, Sink
from rewards.security.source import normalize_source


def cwes(code: str, **kw) -> set[str]:
    return {f.cwe for f in scan(textwrap.dedent(code), **kw)}


def earl(code: str) -> set[str]:
    return {f.rule for f in rule_findings(textwrap.dedent(code))}


def test_bandit_in_process_matches_cli_and_ignores_nosec(tmp_path: Path) -> None:
    code = textwrap.dedent("""
        import subprocess, hashlib
        def f(x, cur):
            subprocess.call("ls " + x, shell=True)  # nosec
            cur.execute("SELECT * FROM t WHERE a = '%s'" % x)  # nosec B608
            return hashlib.md5(x.encode()).hexdigest()
        """)
    (tmp_path / "c.py").write_text(code)
    cli = subprocess.run([sys.executable, "-m", "bandit", "-q", "-f", "json", "--ignore-nosec", str(tmp_path / "c.py")],
                         capture_output=True, text=True, check=False)
    expected = sorted((r["test_id"], r["line_number"]) for r in json.loads(cli.stdout)["results"])
    got = sorted((f.rule, f.line) for f in bandit_findings(code))
    assert got == expected
    assert {"B602", "B608", "B324"} <= {r for r, _ in got}


def test_indented_crlf_method_is_scanned() -> None:
    code = "    def q(self, name):\r\n        self.cur.execute(\"SELECT 1 FROM t WHERE n = '%s'\" % name)\r\n"
    assert normalize_source(code).startswith("def q(self, name):\n")
    assert "CWE-89" in cwes(code)


@pytest.mark.parametrize("vulnerable, fixed, cwe", [
    ('def f(conn, n):\n    sql = "SELECT a FROM t WHERE b = \'" + n + "\'"\n    return conn.execute(sql)\n',
     'def f(conn, n):\n    sql = "SELECT a FROM t WHERE b = ?"\n    return conn.execute(sql, (n,))\n', "CWE-89"),
    ('def f(conn, ids):\n    return conn.execute(f"SELECT a FROM t WHERE id IN ({ids})")\n',
     ('def f(conn, ids):\n    marks = ",".join("?" * len(ids))\n'
     '    return conn.execute(f"SELECT a FROM t WHERE id IN ({marks})", ids)\n'), "CWE-89"),
    ('def f(self, host):\n    return self._run_ssh("ping -c 1 %s" % host)\n',
     'def f(self, host):\n    return self._run_ssh(["ping", "-c", "1", host])\n', "CWE-78"),
    ('def f(user):\n    call(TEMPLATE.format(user))\n',
     'def f(user):\n    if re.match(r"^[a-z]+$", user):\n        call(TEMPLATE.format(user))\n', "CWE-78"),
    ('import os\ndef f(base, name):\n    return open(os.path.join(base, name)).read()\n',
     'import os\ndef f(base, name):\n    return open(os.path.join(base, os.path.basename(name))).read()\n', "CWE-22"),
    ('import os\ndef f(base, name):\n    p = os.path.realpath(os.path.join(base, name))\n    return open(p).read()\n',
     ('import os\ndef f(base, name):\n    p = os.path.realpath(os.path.join(base, name))\n'
     '    if not p.startswith(os.path.realpath(base) + os.sep):\n        raise ValueError(name)\n'
     '    return open(p).read()\n'), "CWE-22"),
    ('def f(name):\n    return "<b>%s</b>" % name\n',
     'import html\ndef f(name):\n    return "<b>%s</b>" % html.escape(name)\n', "CWE-79"),
    ('def view(request):\n    obj.notes = request.POST["notes"]\n',
     'def view(request):\n    obj.notes = escape(request.POST["notes"])\n', "CWE-79"),
    ('def f():\n    return Environment(loader=FileSystemLoader("t"))\n',
     'def f():\n    return Environment(loader=FileSystemLoader("t"), autoescape=True)\n', "CWE-79"),
    ('import hashlib\ndef f(d):\n    return hashlib.sha1(d).hexdigest()\n',
     'import hashlib\ndef f(d):\n    return hashlib.sha256(d).hexdigest()\n', "CWE-327"),
    ('import tempfile\ndef f():\n    return tempfile.mktemp()\n',
     'import tempfile\ndef f():\n    return tempfile.mkstemp()[1]\n', "CWE-377"),
    ('import yaml\ndef f(t):\n    return yaml.load(t, Loader=yaml.Loader)\n',
     'import yaml\ndef f(t):\n    return yaml.safe_load(t)\n', "CWE-502"),
])
def test_vulnerable_flagged_fix_clean(vulnerable: str, fixed: str, cwe: str) -> None:
    assert cwe in cwes(vulnerable)
    assert cwe not in cwes(fixed)


@pytest.mark.parametrize("code, cwe", [
    ('def f(self, host):\n    return self._run_ssh("ping -c 1 %s" % host)\n', "CWE-78"),
    ('import os\ndef f(base, name):\n    return open(os.path.join(base, name)).read()\n', "CWE-22"),
    ('def f(name):\n    return "<b>%s</b>" % name\n', "CWE-79"),
    ('def view(request):\n    obj.notes = request.POST["notes"]\n', "CWE-79"),
])
def test_our_rules_see_what_bandit_does_not(code: str, cwe: str) -> None:
    assert cwe not in cwes(code, use_rules=False)
    assert cwe in cwes(code)
    assert f"EARL-CWE-{int(cwe[4:]):03d}" in earl(code)


def test_nosec_does_not_hide_our_findings_either() -> None:
    assert "CWE-79" in cwes('def f(name):\n    return "<b>%s</b>" % name  # nosec\n')


def test_constant_sql_is_not_flagged_and_drops_bandits_guess() -> None:
    code = 'def f(cur, uid):\n    cur.execute("SELECT a FROM {} WHERE id = ?".format(TABLE), (uid,))\n'
    assert "B608" in {f.rule for f in bandit_findings(code)}
    assert "CWE-89" not in cwes(code)


def test_unparsable_code_has_no_findings() -> None:
    assert scan("def f(:\n") == []


def test_a_cwe_is_a_sink_the_walk_asks() -> None:
    """A new CWE family is a ``Sink`` subclass beside the others in ``SINKS``: the walk calls its hooks
    with the taint state at that point (here a guard cleaned ``y`` before the second call)."""
    class EvalSink(Sink):
        def on_call(self, call: ast.Call, name: str, scope: Scope) -> None:
            if name == "eval" and call.args and tainted(call.args[0], scope.env):
                scope.report("095", call, "input reaches eval()", "HIGH", "HIGH")

    code = "def f(x):\n    y = x.strip()\n    eval(y)\n    if y.isdigit():\n        eval(y)\n"
    scope = Scope(Env(), [], set())
    walker = FunctionWalker(scope, (*SINKS, EvalSink()))
    for stmt in ast.parse(code).body:
        walker.visit(stmt)
    assert [(f.rule, f.cwe, f.line) for f in scope.findings] == [("EARL-CWE-095", "CWE-95", 3)]
