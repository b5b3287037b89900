"""Procedural security-repair tasks for the offline default: vulnerable function -> fixed function.

19 templates over CWE-22/78/79/89/327/377/502, each with several ways to build the unsafe string and
varied function, parameter, table and column names. Every task carries Python tests (plain asserts)
that the fix passes and that probe the flaw (an injection payload, a ``../`` path), so
"secure-and-correct" means something. ``generate(n, seed, split)`` is deterministic; the split is a
hash of the prompt text (train / heldout disjoint by text, same distribution).
"""
from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from string import Template

from pipelines.tasks.options import index_set
from rewards.security.tasks import SecurityTask, build_prompt

SPLITS = ("train", "heldout")
HELDOUT_SHARE = 10          # 1 in 10 prompts is held out
MAX_ATTEMPTS_PER_TASK = 50

NAMES = {
    "user": ["name", "username", "user_name", "login", "who", "account"],
    "term": ["term", "query", "needle", "text", "keyword", "pattern"],
    "path": ["path", "filename", "file_name", "fname", "target", "rel_path"],
    "base": ["base_dir", "root", "folder", "directory", "upload_dir", "storage"],
    "msg": ["message", "msg", "text", "words", "payload", "line"],
    "table": ["users", "accounts", "members", "customers", "people", "staff"],
    "col": ["name", "login", "handle", "nick", "title", "label"],
    "conn": ["conn", "db", "connection", "con"],
}


@dataclass(frozen=True)
class Template_:
    key: str
    cwe: str
    fn_names: tuple[str, ...]
    variants: tuple[str, ...]         # ways to write the vulnerable line(s)
    vulnerable: str                   # $body is replaced by the chosen variant
    fixed: str
    tests: str
    slots: tuple[str, ...]            # NAMES keys used


SQL_TESTS_SELECT = """
import sqlite3
$conn = sqlite3.connect(":memory:")
$conn.execute("CREATE TABLE $table (id INTEGER, $col TEXT)")
$conn.executemany("INSERT INTO $table VALUES (?, ?)", [(1, "alice"), (2, "bob"), (3, "o'hara")])
assert [r[0] for r in $fn($conn, "bob")] == [2]
assert [r[0] for r in $fn($conn, "o'hara")] == [3]
assert $fn($conn, "nobody") == []
assert $fn($conn, "x' OR '1'='1") == []
"""

TEMPLATES: list[Template_] = [
    Template_("sql_select", "cwe-089", ("find_user", "get_user", "lookup_user", "fetch_user", "user_rows"),
              ('"SELECT id, $col FROM $table WHERE $col = \'%s\'" % $user',
               'f"SELECT id, $col FROM $table WHERE $col = \'{$user}\'"',
               '"SELECT id, $col FROM $table WHERE $col = \'" + $user + "\'"',
               '"SELECT id, $col FROM $table WHERE $col = \'{}\'".format($user)'),
              """
def $fn($conn, $user):
    cur = $conn.cursor()
    cur.execute($body)
    return cur.fetchall()
""", """
def $fn($conn, $user):
    cur = $conn.cursor()
    cur.execute("SELECT id, $col FROM $table WHERE $col = ?", ($user,))
    return cur.fetchall()
""", SQL_TESTS_SELECT, ("conn", "user", "table", "col")),
    Template_("sql_query_var", "cwe-089", ("search_users", "select_user", "query_user", "rows_for"),
              ('"SELECT id FROM $table WHERE $col = \'%s\'" % $user',
               'f"SELECT id FROM $table WHERE $col = \'{$user}\'"'),
              """
def $fn($conn, $user):
    sql = $body
    return $conn.execute(sql).fetchall()
""", """
def $fn($conn, $user):
    sql = "SELECT id FROM $table WHERE $col = ?"
    return $conn.execute(sql, ($user,)).fetchall()
""", SQL_TESTS_SELECT, ("conn", "user", "table", "col")),
    Template_("sql_delete", "cwe-089", ("delete_user", "remove_user", "drop_user", "purge_user"),
              ('"DELETE FROM $table WHERE $col = \'%s\'" % $user',
               'f"DELETE FROM $table WHERE $col = \'{$user}\'"',
               '"DELETE FROM $table WHERE $col = \'" + $user + "\'"'),
              """
def $fn($conn, $user):
    cur = $conn.execute($body)
    $conn.commit()
    return cur.rowcount
""", """
def $fn($conn, $user):
    cur = $conn.execute("DELETE FROM $table WHERE $col = ?", ($user,))
    $conn.commit()
    return cur.rowcount
""", """
import sqlite3
$conn = sqlite3.connect(":memory:")
$conn.execute("CREATE TABLE $table (id INTEGER, $col TEXT)")
$conn.executemany("INSERT INTO $table VALUES (?, ?)", [(1, "alice"), (2, "bob")])
assert $fn($conn, "x' OR '1'='1") == 0
assert $fn($conn, "bob") == 1
assert $conn.execute("SELECT COUNT(*) FROM $table").fetchone()[0] == 1
""", ("conn", "user", "table", "col")),
    Template_("sql_insert", "cwe-089", ("add_user", "insert_user", "create_user", "register_user"),
              ('"INSERT INTO $table ($col) VALUES (\'%s\')" % $user',
               'f"INSERT INTO $table ($col) VALUES (\'{$user}\')"',
               '"INSERT INTO $table ($col) VALUES (\'{}\')".format($user)'),
              """
def $fn($conn, $user):
    $conn.execute($body)
    $conn.commit()
""", """
def $fn($conn, $user):
    $conn.execute("INSERT INTO $table ($col) VALUES (?)", ($user,))
    $conn.commit()
""", """
import sqlite3
$conn = sqlite3.connect(":memory:")
$conn.execute("CREATE TABLE $table ($col TEXT)")
$fn($conn, "alice")
$fn($conn, "o'hara")
$fn($conn, "x'); DROP TABLE $table; --")
assert sorted(r[0] for r in $conn.execute("SELECT $col FROM $table")) == ["alice", "o'hara", "x'); DROP TABLE $table; --"]
""", ("conn", "user", "table", "col")),  # noqa: E501  a line of the generated test itself: wrapping it changes the task
    Template_("sql_like", "cwe-089", ("search", "find_matching", "search_names", "match_rows"),
              ('"SELECT $col FROM $table WHERE $col LIKE \'%%%s%%\'" % $term',
               'f"SELECT $col FROM $table WHERE $col LIKE \'%{$term}%\'"',
               '"SELECT $col FROM $table WHERE $col LIKE \'%" + $term + "%\'"'),
              """
def $fn($conn, $term):
    rows = $conn.execute($body).fetchall()
    return sorted(r[0] for r in rows)
""", """
def $fn($conn, $term):
    rows = $conn.execute("SELECT $col FROM $table WHERE $col LIKE ?", ("%" + $term + "%",)).fetchall()
    return sorted(r[0] for r in rows)
""", """
import sqlite3
$conn = sqlite3.connect(":memory:")
$conn.execute("CREATE TABLE $table ($col TEXT)")
$conn.executemany("INSERT INTO $table VALUES (?)", [("alice",), ("alina",), ("bob",)])
assert $fn($conn, "ali") == ["alice", "alina"]
assert $fn($conn, "zzz") == []
assert $fn($conn, "' OR 1=1 --") == []
""", ("conn", "term", "table", "col")),
    Template_("cmd_echo", "cwe-078", ("echo_back", "shout", "say", "repeat_message"),
              ('subprocess.check_output("echo " + $msg, shell=True, text=True)',
               'subprocess.check_output(f"echo {$msg}", shell=True, text=True)',
               'os.popen("echo %s" % $msg).read()'),
              """
import os
import subprocess


def $fn($msg):
    return $body
""", """
import os
import subprocess


def $fn($msg):
    return subprocess.check_output(["echo", $msg], text=True)
""", """
assert $fn("hello") == "hello\\n"
assert $fn("a; echo pwned") == "a; echo pwned\\n"
assert $fn("$$(id)") == "$$(id)\\n"
""", ("msg",)),
    Template_("cmd_wc", "cwe-078", ("count_lines", "line_count", "lines_in", "wc_lines"),
              ('subprocess.check_output("wc -l < " + $path, shell=True, text=True)',
               'os.popen("wc -l < %s" % $path).read()',
               'subprocess.run(f"wc -l < {$path}", shell=True, capture_output=True, text=True).stdout'),
              """
import os
import subprocess


def $fn($path):
    out = $body
    return int(out.split()[0])
""", """
import os
import subprocess


def $fn($path):
    with open($path, "rb") as fh:
        out = subprocess.run(["wc", "-l"], stdin=fh, capture_output=True, text=True, check=True).stdout
    return int(out.split()[0])
""", """
with open("three lines.txt", "w") as fh:
    fh.write("a\\nb\\nc\\n")
with open("one.txt", "w") as fh:
    fh.write("x\\n")
assert $fn("one.txt") == 1
assert $fn("three lines.txt") == 3
try:
    $fn("one.txt; touch hacked")
except (OSError, ValueError, subprocess.CalledProcessError):
    pass
import os
assert not os.path.exists("hacked")
""", ("path",)),
    Template_("cmd_ls", "cwe-078", ("list_files", "ls_dir", "dir_entries", "listing"),
              ('subprocess.run("ls " + $base, shell=True, capture_output=True, text=True).stdout',
               'os.popen("ls %s" % $base).read()',
               'subprocess.getoutput(f"ls {$base}")'),
              """
import os
import subprocess


def $fn($base):
    out = $body
    return sorted(out.split())
""", """
import os
import subprocess


def $fn($base):
    out = subprocess.run(["ls", "--", $base], capture_output=True, text=True).stdout
    return sorted(out.split())
""", """
import os
os.mkdir("d")
for n in ("b.txt", "a.txt"):
    open(os.path.join("d", n), "w").close()
assert $fn("d") == ["a.txt", "b.txt"]
$fn("d; touch hacked")
assert not os.path.exists("hacked")
""", ("base",)),
    Template_("path_read", "cwe-022", ("read_file", "load_file", "file_text", "open_upload", "get_document"),
              ("os.path.join($base, $path)", '$base + "/" + $path', '"%s/%s" % ($base, $path)'),
              """
import os


def $fn($base, $path):
    full = $body
    with open(full) as fh:
        return fh.read()
""", """
import os


def $fn($base, $path):
    root = os.path.realpath($base)
    full = os.path.realpath(os.path.join(root, $path))
    if not full.startswith(root + os.sep):
        raise ValueError("path escapes the base directory")
    with open(full) as fh:
        return fh.read()
""", """
import os
os.mkdir("pub")
with open("pub/a.txt", "w") as fh:
    fh.write("hello")
with open("secret.txt", "w") as fh:
    fh.write("top secret")
assert $fn("pub", "a.txt") == "hello"
try:
    leaked = $fn("pub", "../secret.txt")
except (ValueError, OSError):
    leaked = None
assert leaked != "top secret"
""", ("base", "path")),
    Template_("path_basename", "cwe-022", ("read_upload", "fetch_upload", "serve_file", "download"),
              ("os.path.join($base, $path)", '$base + "/" + $path'),
              """
import os


def $fn($base, $path):
    with open($body, "rb") as fh:
        return fh.read()
""", """
import os


def $fn($base, $path):
    with open(os.path.join($base, os.path.basename($path)), "rb") as fh:
        return fh.read()
""", """
import os
os.mkdir("up")
with open("up/x.bin", "wb") as fh:
    fh.write(b"data")
with open("key.pem", "wb") as fh:
    fh.write(b"KEY")
assert $fn("up", "x.bin") == b"data"
try:
    leaked = $fn("up", "../key.pem")
except OSError:
    leaked = None
assert leaked != b"KEY"
""", ("base", "path")),
    Template_("path_delete", "cwe-022", ("delete_file", "remove_upload", "discard", "erase_file"),
              ("os.path.join($base, $path)", '$base + "/" + $path'),
              """
import os


def $fn($base, $path):
    os.remove($body)
""", """
import os


def $fn($base, $path):
    os.remove(os.path.join($base, os.path.basename($path)))
""", """
import os
os.mkdir("tmpd")
open("tmpd/old.log", "w").close()
open("keep.txt", "w").close()
$fn("tmpd", "old.log")
assert not os.path.exists("tmpd/old.log")
try:
    $fn("tmpd", "../keep.txt")
except OSError:
    pass
assert os.path.exists("keep.txt")
""", ("base", "path")),
    Template_("path_write", "cwe-022", ("save_file", "store_upload", "write_upload", "put_file"),
              ("os.path.join($base, $path)",),
              """
import os


def $fn($base, $path, data):
    target = $body
    with open(target, "w") as fh:
        fh.write(data)
    return target
""", """
import os


def $fn($base, $path, data):
    root = os.path.realpath($base)
    target = os.path.realpath(os.path.join(root, $path))
    if os.path.commonpath([root, target]) != root:
        raise ValueError("path escapes the base directory")
    with open(target, "w") as fh:
        fh.write(data)
    return target
""", """
import os
os.mkdir("store")
$fn("store", "a.txt", "hi")
assert open("store/a.txt").read() == "hi"
try:
    $fn("store", "../evil.txt", "x")
except (ValueError, OSError):
    pass
assert not os.path.exists("evil.txt")
""", ("base", "path")),
    Template_("html_greet", "cwe-079", ("greeting", "render_greeting", "hello_html", "welcome"),
              ('"<p>Hello, %s!</p>" % $user', 'f"<p>Hello, {$user}!</p>"', '"<p>Hello, " + $user + "!</p>"'),
              """
import html


def $fn($user):
    return $body
""", """
import html


def $fn($user):
    return "<p>Hello, %s!</p>" % html.escape($user)
""", """
assert $fn("Ann") == "<p>Hello, Ann!</p>"
out = $fn("<script>alert(1)</script>")
assert "<script>" not in out and "&lt;script&gt;" in out
""", ("user",)),
    Template_("html_comment", "cwe-079", ("render_comment", "comment_html", "format_comment", "comment_item"),
              ('f"<li><b>{author}</b>: {$msg}</li>"', '"<li><b>%s</b>: %s</li>" % (author, $msg)',
               '"<li><b>" + author + "</b>: " + $msg + "</li>"'),
              """
import html


def $fn(author, $msg):
    return $body
""", """
import html


def $fn(author, $msg):
    return "<li><b>%s</b>: %s</li>" % (html.escape(author), html.escape($msg))
""", """
assert $fn("bo", "hi") == "<li><b>bo</b>: hi</li>"
out = $fn("<i>x</i>", "<img src=x onerror=alert(1)>")
assert "<img" not in out and "<i>" not in out
""", ("msg",)),
    Template_("html_link", "cwe-079", ("make_link", "link_html", "anchor", "render_link"),
              ("'<a href=\"' + url + '\">' + $msg + '</a>'", "'<a href=\"%s\">%s</a>' % (url, $msg)",
               "f'<a href=\"{url}\">{$msg}</a>'"),
              """
import html


def $fn(url, $msg):
    return $body
""", """
import html


def $fn(url, $msg):
    return '<a href="%s">%s</a>' % (html.escape(url, quote=True), html.escape($msg))
""", """
assert $fn("/home", "Home") == '<a href="/home">Home</a>'
out = $fn('x" onmouseover="alert(1)', "<b>")
assert 'onmouseover="' not in out and "<b>" not in out
""", ("msg",)),
    Template_("weak_hash_pw", "cwe-327", ("hash_password", "password_digest", "store_password", "pw_hash"),
              ("hashlib.md5((salt + $msg).encode()).hexdigest()", "hashlib.sha1((salt + $msg).encode()).hexdigest()"),
              """
import hashlib


def $fn($msg, salt):
    return $body
""", """
import hashlib


def $fn($msg, salt):
    return hashlib.pbkdf2_hmac("sha256", $msg.encode(), salt.encode(), 100_000).hex()
""", """
a = $fn("pw", "s1")
assert a == $fn("pw", "s1")
assert a != $fn("pw", "s2")
assert len(a) == 64
""", ("msg",)),
    Template_("weak_digest", "cwe-327", ("fingerprint", "file_digest", "checksum", "content_id"),
              ("hashlib.md5(data).hexdigest()", "hashlib.sha1(data).hexdigest()",
               'hashlib.new("md5", data).hexdigest()'),
              """
import hashlib


def $fn(data):
    return $body
""", """
import hashlib


def $fn(data):
    return hashlib.sha256(data).hexdigest()
""", """
import hashlib
assert $fn(b"abc") == hashlib.sha256(b"abc").hexdigest()
assert $fn(b"abc") != $fn(b"abd")
""", ()),
    Template_("tempfile", "cwe-377", ("write_temp", "temp_report", "spill_to_disk", "save_scratch"),
              ('tempfile.mktemp(suffix=".txt")', "tempfile.mktemp()"),
              """
import os
import tempfile


def $fn($msg):
    path = $body
    with open(path, "w") as fh:
        fh.write($msg)
    return path
""", """
import os
import tempfile


def $fn($msg):
    fd, path = tempfile.mkstemp(suffix=".txt")
    with os.fdopen(fd, "w") as fh:
        fh.write($msg)
    return path
""", """
p = $fn("report body")
assert open(p).read() == "report body"
assert p != $fn("again")
""", ("msg",)),
    Template_("pickle_load", "cwe-502", ("load_session", "decode_state", "restore", "read_cookie"),
              ("pickle.loads(blob)", "pickle.loads(bytes(blob))"),
              """
import json
import pickle


def $fn(blob):
    return $body
""", """
import json
import pickle


def $fn(blob):
    return json.loads(blob)
""", """
import json
assert $fn(json.dumps({"user": "ann", "n": 2}).encode()) == {"user": "ann", "n": 2}
import pickle
class Boom:
    def __reduce__(self):
        return (open, ("pwned.txt", "w"))
try:
    $fn(pickle.dumps(Boom()))
except Exception:
    pass
import os
assert not os.path.exists("pwned.txt")
""", ()),
    Template_("marshal_load", "cwe-502", ("load_config", "parse_blob", "read_settings", "import_state"),
              ("marshal.loads(raw)", "pickle.loads(raw)"),
              """
import json
import marshal
import pickle


def $fn(raw):
    data = $body
    return dict(data)
""", """
import json
import marshal
import pickle


def $fn(raw):
    data = json.loads(raw)
    return dict(data)
""", """
import json
assert $fn(json.dumps({"a": 1})) == {"a": 1}
assert $fn(b'{"b": [1, 2]}') == {"b": [1, 2]}
""", ()),
]
TEMPLATE_KEYS = [t.key for t in TEMPLATES]


def render(t: Template_, rng: random.Random, variants: set[int] | None = None) -> SecurityTask:
    """One task from template ``t`` with names and variant drawn from ``rng``: one of ``variants`` (None = any;
    a template with none of them keeps its first)."""
    subs = {k: rng.choice(NAMES[k]) for k in NAMES}
    if subs["path"] == subs["base"]:
        subs["path"] = "name_" + subs["path"]
    subs["fn"] = rng.choice(t.fn_names)
    variant = rng.choice([v for v in range(len(t.variants)) if variants is None or v in variants] or [0])
    subs["body"] = Template(t.variants[variant]).substitute(subs)

    def fill(text: str) -> str:
        return Template(text).substitute(subs).strip() + "\n"

    task = SecurityTask(id="", vulnerable=fill(t.vulnerable), vul_type=t.cwe, reference=fill(t.fixed),
                        func_name=subs["fn"], tests=fill(t.tests),
                        meta={"template": t.key, "variant": variant, "generator": "secgen"})
    task.prompt = build_prompt(task)
    return task


def split_of(prompt: str) -> str:
    h = int(hashlib.sha256(prompt.encode()).hexdigest()[:8], 16)
    return "heldout" if h % HELDOUT_SHARE == 0 else "train"


def generate(n: int, seed: int = 0, split: str = "train", templates: list[str] | None = None,
             variants: list[int] | None = None) -> list[SecurityTask]:
    """``n`` distinct tasks of ``split`` (fewer if the name space runs out), round-robin over templates.

    variants: which ways of writing the vulnerable line to draw (indices into each template's variants;
    None = all; a template without any of them keeps its first). E.g. an SFT set with reference fixes for
    variants [0, 1] while RL prompts (judged by the checkers and tests alone) use them all.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    allowed = index_set(variants, "variants", "variant")
    chosen = [t for t in TEMPLATES if templates is None or t.key in templates]
    unknown = sorted(set(templates or []) - set(TEMPLATE_KEYS))
    if unknown:
        raise ValueError(f"unknown templates {unknown}; known: {TEMPLATE_KEYS}")
    rng = random.Random(f"secgen:{seed}:{split}")
    out: list[SecurityTask] = []
    seen: set[str] = set()
    misses = 0
    while len(out) < n and misses < MAX_ATTEMPTS_PER_TASK * max(1, len(chosen)):
        t = chosen[len(out) % len(chosen)] if misses == 0 else rng.choice(chosen)
        task = render(t, rng, allowed)
        prompt = task.prompt
        assert prompt is not None, "render sets the prompt"
        if prompt in seen or split_of(prompt) != split:
            misses += 1
            continue
        misses = 0
        seen.add(prompt)
        task.id = f"sec-{split}-{seed}-{len(out):05d}"
        task.meta["split"] = split
        out.append(task)
    return out


def one_per_template(seed: int = 0) -> list[SecurityTask]:
    """A task from each template and each variant (for tests of the templates themselves)."""
    out = []
    for t in TEMPLATES:
        for v in range(len(t.variants)):
            rng = random.Random(f"secgen-check:{seed}:{t.key}:{v}")
            task = render(t, rng)
            while task.meta["variant"] != v:
                task = render(t, rng)
            task.id = f"{t.key}-{v}"
            out.append(task)
    return out
