"""Turn a model completion into Verilog source, and normalise source for the equivalence cache.

Completions arrive as plain text or as chat messages; the code may sit in a ```verilog fence, several
fences, bare `module ... endmodule` text, or inside `<think>`/`<answer>` wrappers. Everything here is
pure string work (no processes), so it is cheap and unit-testable.
"""
from __future__ import annotations

import re
from itertools import pairwise
from typing import Any

_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)
_CODE_LANGS = {"", "verilog", "systemverilog", "sv", "v", "vlog", "verilog2001", "vhdl-verilog"}
_MODULE_SPAN = re.compile(r"(?m)^[ \t]*(?:\(\*.*?\*\)\s*)?(?:macro)?module\b.*?\bendmodule\b", re.DOTALL)
_MODULE_DECL = re.compile(r"\b(?:macro)?module\s+(?:automatic\s+|static\s+)?([A-Za-z_][\w$]*|\\\S+)")
_HAS_MODULE = re.compile(r"\bmodule\b")


def completion_text(completion: Any) -> str:
    """Plain text of a completion: a string, a message dict, or a list of chat messages
    (the last assistant message's content, as TRL passes conversational completions)."""
    if completion is None:
        return ""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        return _content_text(completion.get("content"))
    if isinstance(completion, (list, tuple)):
        messages = [m for m in completion if isinstance(m, dict)]
        assistant = [m for m in messages if m.get("role") == "assistant"]
        chosen = assistant[-1] if assistant else (messages[-1] if messages else None)
        return _content_text(chosen.get("content")) if chosen else ""
    raise TypeError(f"completion must be str or a list of chat messages, got {type(completion).__name__}")


def _content_text(content: Any) -> str:
    """Message content may be a string or a list of typed parts ({"type": "text", "text": ...})."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") if isinstance(p, dict) else str(p) for p in content)
    return str(content)


def strip_wrappers(text: str) -> str:
    """Drop reasoning and keep the answer: `<think>...</think>` is removed (an unclosed one drops the
    rest, a lone `</think>` - the opening tag was in the prompt - drops what precedes it); if an
    `<answer>` block exists its inside is returned."""
    text = re.sub(r"<think>.*?</think>", "", text, flags=re.DOTALL)
    if "</think>" in text:
        text = text.rsplit("</think>", 1)[1]
    if "<think>" in text:
        text = text.split("<think>", 1)[0]
    answers = re.findall(r"<answer>(.*?)(?:</answer>|\Z)", text, flags=re.DOTALL)
    if answers:
        text = answers[-1]
    return text


def extract_code(completion: Any) -> str:
    """The Verilog in a completion ("" when there is none).

    Fenced blocks win: every verilog/systemverilog/untagged fence that declares a module is kept, in
    order (a model may put helper modules in their own fences). Without fences, every
    `module ... endmodule` span is kept. Text with no module at all is returned as-is only if it is
    inside a fence; the format check then names what is missing.
    """
    text = strip_wrappers(completion_text(completion))
    fences = [(lang.lower(), body) for lang, body in _FENCE.findall(text)]
    code_fences = [body for lang, body in fences if lang in _CODE_LANGS]
    with_module = [b for b in code_fences if _HAS_MODULE.search(strip_comments(b))]
    if with_module:
        return "\n\n".join(b.strip("\n") for b in with_module) + "\n"
    spans = _MODULE_SPAN.findall(text)
    if spans:
        return "\n\n".join(s.strip("\n") for s in spans) + "\n"
    unclosed = re.search(r"(?m)^[ \t]*module\b.*", text, flags=re.DOTALL)   # truncated generation
    if unclosed:
        return unclosed.group(0).strip("\n") + "\n"
    if code_fences:
        return code_fences[0].strip("\n") + "\n"
    return ""


def module_names(code: str) -> list[str]:
    """Names of the modules declared in `code`, in order (comments and strings ignored)."""
    return [m.lstrip("\\") for m in _MODULE_DECL.findall(_blank_strings(strip_comments(code)))]


def rename_module(code: str, old: str, new: str) -> str:
    """Rename the declaration of module `old` to `new` (used to run a reference as a candidate)."""
    out, n = re.subn(rf"(\bmodule\s+){re.escape(old)}\b", rf"\g<1>{new}", code, count=1)
    if not n:
        raise ValueError(f"no module named {old!r} to rename")
    return out


def rename_modules(code: str, mapping: dict[str, str]) -> str:
    """Rename modules everywhere they are named (declarations and instantiations), outside comments
    and strings, so a reference's helper modules cannot clash with a candidate's of the same name."""
    if not mapping:
        return code
    pattern = re.compile(r"(?<![\w$`\\])(" + "|".join(map(re.escape, sorted(mapping, key=len, reverse=True)))
                         + r")(?![\w$])")
    return "".join(pattern.sub(lambda m: mapping[m.group(1)], text) if kind == "code" else text
                   for kind, text in _scan(code))


_KEYWORDS = frozenset([
    "module", "macromodule", "endmodule", "function", "endfunction", "task", "endtask", "if", "else", "for",
    "while", "case", "casez", "casex", "begin", "end", "always", "always_ff", "always_comb", "always_latch",
    "initial", "final", "assign", "wire", "reg", "logic", "bit", "integer", "real", "input", "output", "inout",
    "parameter", "localparam", "genvar", "generate", "endgenerate", "return", "repeat", "forever", "posedge",
    "negedge", "and", "or", "not", "nand", "nor", "xor", "xnor", "buf", "bufif0", "bufif1", "notif0", "notif1",
    "pullup", "pulldown", "default", "typedef", "struct", "enum", "int", "byte", "shortint", "longint", "wait",
    "fork", "join", "disable", "force", "release", "deassign", "tri", "supply0", "supply1"
])
_INSTANCE = re.compile(
    r"(?m)^[ \t]*([A-Za-z_][\w$]*)(?![\w$])\s*(?:#\s*\((?:[^()]|\([^()]*\))*\)\s*)?"
    r"([A-Za-z_][\w$]*)(?![\w$])\s*(?:\[[^\]]*\]\s*)?\(")


def instantiated_modules(code: str) -> list[str]:
    """Module names instantiated in `code` (a regex heuristic good enough for testbenches)."""
    clean = _blank_strings(strip_comments(code))
    seen: list[str] = []
    for mod, inst in _INSTANCE.findall(clean):
        if mod not in _KEYWORDS and inst not in _KEYWORDS and mod not in seen:
            seen.append(mod)
    return seen


def root_modules(code: str) -> list[str]:
    """Declared modules that no other module in `code` instantiates."""
    used = set(instantiated_modules(code))
    return [m for m in module_names(code) if m not in used]


# ---------------------------------------------------------------------------- group-capable benches
# The markers of the group-bench protocol (`rewards.verilog.group` explains it), kept here with the other
# plain text helpers so that bench writers (`rewards.verilog.equivbench`, `pipelines.tasks.rtlgen`) need
# not import the group machinery, which builds on `rewards.verilog.harness`.

GROUP_HEADER = "// earl group bench: per-candidate names start with "
PER_DUT = "// @dut"
BLOCK_BEGIN, BLOCK_END = "// @dut {", "// @dut }"


def group_header(prefix: str) -> str:
    """The first line of a group-capable bench."""
    return GROUP_HEADER + prefix


# ---------------------------------------------------------------------------- comments and whitespace

_SPECIAL = re.compile(r'"|/[/*]')                       # where a string or a comment may start
_STRING_BODY = re.compile(r'[^"\\\n]*(?:\\[\s\S][^"\\\n]*)*')     # up to the closing quote or the line's end


def _scan(code: str):
    """Yield (kind, text) pieces: kind in code|string|line_comment|block_comment. A string ends at its
    closing quote or, unterminated, after its line's newline; a backslash escapes the next character."""
    i, n = 0, len(code)
    while (m := _SPECIAL.search(code, i)) is not None:
        at = m.start()
        if i < at:
            yield "code", code[i:at]
        if m.group() == '"':
            body = _STRING_BODY.match(code, at + 1)
            assert body is not None                       # the pattern matches the empty string
            j = min(body.end() + 1, n)
            yield "string", code[at:j]
        elif m.group() == "//":
            j = code.find("\n", at)
            j = n if j < 0 else j
            yield "line_comment", code[at:j]
        else:
            j = code.find("*/", at + 2)
            j = n if j < 0 else j + 2
            yield "block_comment", code[at:j]
        i = j
    if i < n:
        yield "code", code[i:]


def strip_comments(code: str) -> str:
    """Remove // and /* */ comments, but not comment-like text inside string literals.
    A block comment becomes one space (or its newlines) so tokens never fuse."""
    parts = []
    for kind, text in _scan(code):
        if kind == "block_comment":
            parts.append("\n" * text.count("\n") or " ")
        elif kind != "line_comment":
            parts.append(text)
    return "".join(parts)


def _blank_strings(code: str) -> str:
    return "".join('""' if kind == "string" else text for kind, text in _scan(code))


_GLUE = set("()[]{},;")


def normalize(code: str) -> str:
    """Canonical text for the equivalence cache: comments dropped, whitespace outside strings
    collapsed to one space, and dropped next to ( ) [ ] { } , ; where that cannot fuse tokens.
    Lines holding a compiler directive (`define ...) keep their own line, because there a newline
    ends the directive and is meaningful."""
    strings: list[str] = []

    def mask(kind: str, text: str) -> str:
        if kind != "string":
            return text
        strings.append(text)
        return f"\x01{len(strings) - 1}\x02"

    masked = "".join(mask(k, t) for k, t in _scan(strip_comments(code)))
    segments: list[list[str]] = []
    stream: list[str] | None = None
    for line in masked.split("\n"):
        toks = line.split()
        if not toks:
            continue
        if toks[0].startswith("`"):
            segments.append(toks)
            stream = None
        elif stream is None:
            stream = list(toks)
            segments.append(stream)
        else:
            stream.extend(toks)
    text = "\n".join(_join(toks) for toks in segments)
    return re.sub("\x01(\\d+)\x02", lambda m: strings[int(m.group(1))], text)


def _join(toks: list[str]) -> str:
    out = [toks[0]]
    for prev, nxt in pairwise(toks):
        a, b = prev[-1], nxt[0]
        glue = ((a in _GLUE or b in _GLUE) and "\\" not in prev
                and not (a == "(" and b == "*") and not (a == "*" and b == ")"))
        out.append(nxt if glue else " " + nxt)
    return "".join(out)
