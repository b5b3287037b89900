"""Official VerilogEval-style benches rewritten in the group protocol (rewards.verilog.group).

A VerilogEval bench drives RefModule and TopModule with one stimulus and compares them: the stimulus, the
clock and the reference are the same for every candidate, only the TopModule instance and what is computed
from its outputs (the match wires, the stats, the compare block, the verdict lines) belong to the candidate.
`group_capable` finds those parts and marks them, so a GRPO group of candidates with their own bench (not
only reference-only problems) can share one compile and one simulation.

It must give every candidate exactly the verdict it gets alone, so it refuses (None: the candidates run one
by one) every bench whose shape it cannot vouch for: per-candidate parts are found by data flow from the
TopModule instance's own connections (names the reference instance does not share); a per-candidate part
must not call a system task with global state (`$random`, `$finish`, files, ...), the reference instance and
anything it reads must stay shared, a shared part may print only in whole-line `$display`-like statements
(then every candidate prints it, tagged), and each part must have its lines to itself. A bench module's
input from a candidate that only decides whether a hint line prints is tied to 1 (`_hint_only`). `$dump*` calls go:
the group runs without waveforms, and no verdict reads one. Per-candidate names get the prefix OWN_PREFIX.
The reward checks the result on every batch the tests score: group verdicts equal the ones alone.
"""
from __future__ import annotations

import bisect
import re

from rewards.verilog.extract import BLOCK_BEGIN, BLOCK_END, PER_DUT, _scan, group_header
from rewards.verilog.group import SAFE_SYSTEM, dut_prefix, expand

OWN_PREFIX = "__earl_d_"
_IDENT = re.compile(r"(?<![\w$'`\\.])[A-Za-z_][\w$]*")
_WORD = re.compile(r"[A-Za-z_][\w$]*|\S")
_OPENERS = {"begin": "end", "fork": "join", "case": "endcase", "casez": "endcase", "casex": "endcase",
            "task": "endtask", "function": "endfunction", "generate": "endgenerate", "module": "endmodule"}
_CLOSERS = {"end", "join", "join_any", "join_none", "endcase", "endtask", "endfunction", "endgenerate"}
_BLOCK_ITEMS = {"always", "always_ff", "always_comb", "always_latch", "initial", "final"}
# An assignment's target: a name, then members or selects, then the operator (`<=` only as the first token
# of a statement would be an assignment; within an expression it may compare: both count, the safe side).
_WRITTEN = re.compile(r"(?<![\w$.])([A-Za-z_][\w$]*)(?:\s*\.\s*[\w$]+|\s*\[[^\]]*\])*\s*"
                      r"(?:<=|=(?!=)|\+\+|--|[-+*/%|&^]=|<<=|>>=)")
_CONCAT_WRITTEN = re.compile(r"\{([^{}]*)\}\s*(?:<=|=(?!=))")             # {a, b} = ...: a and b
_OTHER_WRITTEN = re.compile(r"(?:->|\b(?:release|deassign))\s*([A-Za-z_][\w$]*)")   # events, forces
_IMPLICIT = re.compile(r"\.\s*([A-Za-z_][\w$]*)\s*(?=[,)])")                 # `.name` connections
_PRINT_LINE = re.compile(r"^\s*\$(?:display|write|strobe)[bho]?\s*(?:\(.*\))?\s*;\s*$")
_DUMP = re.compile(r"\$dump\w*\s*(?:\([^;]*\))?\s*;")
_SYSTEM = re.compile(r"\$[A-Za-z_][\w$]*")
# An instance item's head: module name, parameters, instance name, the opening of its connections.
_INSTANCE_HEAD = re.compile(r"\s*([A-Za-z_][\w$]*)\s+(?:#\s*\((?:[^()]|\([^()]*\))*\)\s*)?([A-Za-z_][\w$]*)\s*\(")
_NOT_MODULES = frozenset(["assign", "always", "always_ff", "always_comb", "always_latch", "initial", "final", "task",
                          "function", "typedef", "wire", "reg", "logic", "bit", "int", "integer", "byte", "real",
                          "time", "genvar", "parameter", "localparam"])


def _mask(text: str) -> str:
    """`text` with comments and the insides of strings blanked (same length, newlines kept)."""
    out = []
    for kind, piece in _scan(text):
        if kind == "code":
            out.append(piece)
        elif kind == "string":
            out.append(re.sub(r"[^\n\"]", " ", piece))
        else:
            out.append(re.sub(r"[^\n]", " ", piece))
    return "".join(out)


def _modules(masked: str) -> dict[str, tuple[int, int]]:
    """Module name -> (start of its body, start of its `endmodule`)."""
    out: dict[str, tuple[int, int]] = {}
    for m in re.finditer(r"\bmodule\s+([A-Za-z_][\w$]*)", masked):
        end = re.compile(r"\bendmodule\b").search(masked, m.end())
        if end is None:
            raise ValueError("a module without endmodule")
        out[m.group(1)] = (m.end(), end.start())
    return out


def _items(masked: str, start: int, end: int) -> list[tuple[int, int]]:
    """The module items between `start` and `end`: declarations, assigns, instances (to their `;`), always /
    initial / final blocks (to the end of their one statement), tasks and functions (to their end word)."""
    body = masked[start:end]
    header = re.match(r"\s*(?:#\s*\((?:[^()]|\([^()]*\))*\))?\s*(?:\((?:[^()]|\([^()]*\))*\))?\s*;", body)
    pos = header.end() if header else 0
    items: list[tuple[int, int]] = []
    stack: list[str] = []
    depth = 0                                    # ( [ {
    item_start: int | None = None
    block = False
    for tok in _WORD.finditer(body, pos):
        word = tok.group(0)
        if item_start is None:
            item_start, block = tok.start(), word in _BLOCK_ITEMS
        if word in "([{":
            depth += 1
        elif word in ")]}":
            depth -= 1
        elif word in _OPENERS and depth == 0:
            stack.append(_OPENERS[word])
        elif word in _CLOSERS and depth == 0:
            if not stack:
                raise ValueError(f"unbalanced {word!r}")
            stack.pop()
            if not stack and (block or word in ("endtask", "endfunction", "endgenerate")):
                items.append((start + item_start, start + tok.end()))
                item_start = None
        elif word == ";" and depth == 0 and not stack:
            items.append((start + item_start, start + tok.end()))
            item_start = None
    if item_start is not None or stack or depth:
        raise ValueError("a module item is not closed")
    return items


def _connections(item: str) -> dict[str, str | None] | None:
    """port -> connected expression (None for `.name`) of an instance; None unless every connection is
    `.port(expr)` or `.port` (no `.*`, no positional ones)."""
    m = _instance_head(item)
    if m is None:
        return None
    inner = item[m.end():item.rindex(")")]
    out: dict[str, str | None] = {}
    for part in _split_top(inner):
        c = re.fullmatch(r"\s*\.\s*([A-Za-z_][\w$]*)\s*(?:\((.*)\))?\s*", part, re.DOTALL)
        if c is None:
            return None
        out[c.group(1)] = None if c.group(2) is None else c.group(2).strip()
    return out


def _split_top(text: str) -> list[str]:
    """`text` split at its commas outside brackets."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    return [*parts, text[start:]] if text.strip() else parts


def _names(expr: str | None, port: str) -> set[str]:
    return {port} if expr is None else set(_IDENT.findall(expr))


def group_capable(testbench: str, top: str, ref_module: str) -> str | None:
    """`testbench` in the group protocol, or None where it has not the shape this module can vouch for."""
    if dut_prefix(testbench) is not None:
        return testbench
    if OWN_PREFIX in testbench or PER_DUT in testbench:
        return None
    try:
        return _rewrite(testbench, top, ref_module)
    except Exception:  # noqa: BLE001 - a bench it cannot read is one it cannot vouch for: scored one by one
        return None


def _instance_head(text: str) -> re.Match[str] | None:
    """The head of an instance item (groups: module, instance name), None for any other item."""
    m = _INSTANCE_HEAD.match(text)
    return m if m and m.group(1) not in _NOT_MODULES else None


def _instance_module(text: str) -> str:
    """The module an instance item (one `_instance_head` matched) instantiates."""
    head = _instance_head(text)
    assert head is not None, "not an instance item"
    return head.group(1)


def _instances(texts: list[str], module: str) -> list[int]:
    return [k for k, t in enumerate(texts) if (m := _instance_head(t)) and m.group(1) == module]


def _rewrite(testbench: str, top: str, ref_module: str) -> str | None:
    masked = _DUMP.sub(lambda m: ";" + re.sub(r"[^\n]", " ", m.group(0)[1:]), _mask(testbench))
    modules = _modules(masked)
    if top in modules or ref_module in modules:
        return None
    holders = [name for name, (a, b) in modules.items() if re.search(rf"(?<![\w$]){re.escape(top)}(?![\w$])",
                                                                      masked[a:b])]
    if len(holders) != 1:
        return None
    a, b = modules[holders[0]]
    if "`" in masked[a:b] or re.search(r"/\*[^\n]*?\n", _only_comments(testbench)):
        return None                                    # macros or directives in the bench, a comment over lines
    items = _items(masked, a, b)
    texts = [masked[s:e] for s, e in items]
    if any(re.match(r"\s*(?:else|for|if|case\w?|generate|begin)\b", t) for t in texts):
        return None                                    # an `else` on its own line, module-level generate code
    dut, ref = _instances(texts, top), _instances(texts, ref_module)
    if len(dut) != 1 or len(ref) != 1:
        return None
    dut_conns, ref_conns = _connections(texts[dut[0]]), _connections(texts[ref[0]])
    if dut_conns is None or ref_conns is None:
        return None
    shared_seed = set().union(*(_names(e, p) for p, e in ref_conns.items()))
    for port, expr in dut_conns.items():               # a port is the reference's input too, or all its own
        if (port not in ref_conns or ref_conns[port] != expr) and _names(expr, port) & shared_seed:
            return None
    head = _instance_head(texts[dut[0]])
    assert head is not None
    per = {head.group(2)} | (set().union(*(_names(e, p) for p, e in dut_conns.items())) - shared_seed)
    ports = _star_ports(masked, modules, texts)
    hints = {k: {p for p in ports[k] if _hint_only(masked, modules, _instance_module(texts[k]), p)}
             for k in ports}
    ports = {k: names - hints[k] for k, names in ports.items()}
    subroutines = set().union(*(_declared(t) for t in texts if re.match(r"\s*(?:task|function)\b", t)))
    marked = {dut[0]}
    changed = True
    while changed:                 # items reading a candidate's names are its; what they write or call, too
        changed = False
        for k, text in enumerate(texts):
            if k in marked:
                continue
            names = set(_IDENT.findall(text)) | ports.get(k, set()) | set(_IMPLICIT.findall(text))
            if names & per:
                marked.add(k)
                changed = True
        for k in marked:
            new = (_written(texts[k]) | _declared(texts[k]) | (set(_IDENT.findall(texts[k])) & subroutines)
                   | _call_arguments(texts[k], subroutines))
            if not new <= per:
                per |= new
                changed = True
    if per & shared_seed:
        return None                                    # the reference (or what it reads) would depend on a candidate
    for k in marked - set(dut):
        if _instance_head(texts[k]):
            return None                                # another instance per candidate (a stimulus reading tb_match)
    for k in marked:
        system = set(_SYSTEM.findall(texts[k])) - SAFE_SYSTEM   # `$dump*` calls are already blanked
        if system or re.search(r"\bdisable\b", texts[k]):
            return None                                # global state, or ends a shared block
        for m in re.finditer(r"(?<![\w$.])([A-Za-z_][\w$]*)\s*\.\s*[A-Za-z_]", texts[k]):
            if m.group(1) not in per:
                return None                            # a hierarchical name into shared parts (a task of the stimulus)
    ties = {items[k][0] + m.start(): sorted(hints[k] & per) for k in hints if k not in marked and hints[k] & per
            for m in [re.search(r"\.\s*\*", texts[k])] if m}
    return _write(testbench, masked, items, marked, per, top, ties)


def _hint_only(masked: str, modules: dict[str, tuple[int, int]], module: str, port: str) -> bool:
    """Does `port`, an input of the bench's `module`, only decide whether hint lines print? VerilogEval's
    `reset_test` copies `!tb_match` into task variables read only in the conditions of `if (..) $display`
    chains. No verdict reads a hint line, so in a group the port is tied to a constant and the stimulus
    stays shared. Every other use (a wait on it, a stimulus that depends on it, a hierarchical read from
    outside) refuses."""
    a, b = modules[module]
    body = masked[a:b]
    if re.search(r"[\\`]", body):
        return False                                   # an escaped name or a macro may spell the port
    header = re.match(r"\s*(?:#\s*\((?:[^()]|\([^()]*\))*\))?\s*(\((?:[^()]|\([^()]*\))*\))?\s*;", body)
    if header is None or header.group(1) is None or not re.search(
            rf"\binput\b(?:(?!\b(?:output|inout)\b)[^;])*?(?<![\w$]){re.escape(port)}(?![\w$])", header.group(1)):
        return False
    ports, body = header.group(1), body[header.end():]
    if re.search(rf"\.\s*(?:\*|{re.escape(port)}(?![\w$]))", body):
        return False                                   # passed on to an instance inside (`.*`, `.port`)
    copies = list(re.finditer(rf"(?<=[;\s])([A-Za-z_][\w$]*)\s*=\s*[!~]?\s*{re.escape(port)}\s*;", body))
    if len(copies) != len(_occurrences(body, port)):
        return False                                   # read other than copied whole into a variable
    conditions = _print_only_conditions(body)
    if re.search(rf"[\w$)\]]\s*\.\s*{re.escape(port)}(?![\w$])", masked):
        return False                                   # read by a hierarchical name
    declared = [(d.start(), d.end()) for d in re.finditer(r"(?<![\w$])(?:bit|reg|logic|int|integer|byte)\b"
                                                            r"[^;=()]*;", body)]
    for var in {m.group(1) for m in copies}:
        if re.search(rf"\.\s*{re.escape(var)}(?![\w$])", masked) or _occurrences(ports, var):
            return False                               # a port, or reached by name from elsewhere
        places = _occurrences(body, var)
        if not any(s <= pos < e for pos in places for s, e in declared):
            return False                               # not a variable of this module's own
        for pos in places:
            write = re.match(r"\s*(?:<=|=(?!=))", body[pos + len(var):]) and _statement_start(body, pos)
            if not (write or any(s <= pos < e for s, e in declared) or any(s <= pos < e for s, e in conditions)):
                return False                           # read beyond the condition of a print
    return True


def _statement_start(body: str, pos: int) -> bool:
    """Does a statement start at body[pos] (so `var <=` there is a write, not a comparison)? After `;`,
    `begin`, `end` or `else` outside any bracket, or after an `@(..)`, `#(..)` or `if (..)` that itself
    starts one; never inside a `for (..)` header or after an intra-assignment delay."""
    before = body[:pos].rstrip()
    if before.endswith(")"):
        depth, j = 0, len(before) - 1
        while j >= 0:
            depth += {")": 1, "(": -1}.get(before[j], 0)
            if depth == 0:
                break
            j -= 1
        control = re.search(r"(?:@|#|(?<![\w$])if)\s*$", before[:j]) if j >= 0 else None
        return control is not None and _statement_start(body, control.start())
    at_top = body.count("(", 0, pos) == body.count(")", 0, pos)
    return at_top and (before.endswith(";") or bool(re.search(r"(?<![\w$])(?:begin|end|else)$", before)))


def _occurrences(text: str, name: str) -> list[int]:
    return [m.start() for m in re.finditer(rf"(?<![\w$.']){re.escape(name)}(?![\w$])", text)]


def _balanced(text: str, i: int) -> int | None:
    """The index after the bracket group opening at text[i] (`(`), None if it does not close."""
    depth = 0
    for j in range(i, len(text)):
        depth += {"(": 1, ")": -1}.get(text[j], 0)
        if depth == 0:
            return j + 1
    return None


_ASSIGNS = re.compile(r"(?<![=!<>])=(?!=)|\+\+|--")     # `=`, `++`, `--` in an expression
_PRINT_CALL = re.compile(r"\s*\$(?:display|write)[bho]?\s*(?=\()")


def _print_statement(text: str, i: int) -> int | None:
    """The end of a `$display(...);` statement starting at text[i] (after blanks), None if none is there or
    it calls more than printing."""
    m = _PRINT_CALL.match(text, i)
    end = _balanced(text, m.end()) if m else None
    if m is None or end is None:
        return None
    semi = re.compile(r"\s*;").match(text, end)
    if semi is None or _ASSIGNS.search(text[m.end():end]):
        return None                                    # an argument that assigns changes the stimulus
    return None if _calls_beyond_printing(text[m.start():semi.end()]) else semi.end()


def _print_only_if(text: str, i: int) -> tuple[int, list[tuple[int, int]]] | None:
    """For an `if` at text[i]: its end and its conditions' spans, when every branch of it (`else if`
    chains included) is one print statement and no condition calls or assigns; else None."""
    m = re.compile(r"if\s*(?=\()").match(text, i)
    close = _balanced(text, m.end()) if m else None
    if m is None or close is None:
        return None
    cond = text[m.end():close]
    if re.search(r"[\w$]\s*\(", cond) or _ASSIGNS.search(cond) or set(_SYSTEM.findall(cond)) - SAFE_SYSTEM:
        return None
    end = _print_statement(text, close)
    if end is None:
        return None
    spans = [(m.end(), close)]
    other = re.compile(r"\s*else\b\s*").match(text, end)
    if other is None:
        return end, spans
    if text.startswith("if", other.end()):
        rest = _print_only_if(text, other.end())
        return None if rest is None else (rest[0], spans + rest[1])
    end = _print_statement(text, other.end())
    return None if end is None else (end, spans)


def _print_only_conditions(body: str) -> list[tuple[int, int]]:
    """Spans of the conditions of print-only `if` statements in `body` (see _print_only_if)."""
    spans: list[tuple[int, int]] = []
    for m in re.finditer(r"(?<![\w$])if(?![\w$])", body):
        found = _print_only_if(body, m.start())
        if found:
            spans += found[1]
    return spans


def _only_comments(text: str) -> str:
    return "".join(piece for kind, piece in _scan(text) if kind == "block_comment")


def _call_arguments(text: str, subroutines: set[str]) -> set[str]:
    """Names passed to the bench's own tasks and functions (an `output` argument writes them)."""
    names: set[str] = set()
    for m in re.finditer(r"(?<![\w$.])([A-Za-z_][\w$]*)\s*\(", text):
        if m.group(1) in subroutines:
            depth, i = 1, m.end()
            while i < len(text) and depth:
                depth += {"(": 1, ")": -1}.get(text[i], 0)
                i += 1
            names |= set(_IDENT.findall(text[m.end():i]))
    return names


def _written(text: str) -> set[str]:
    """Names an item may write: assignment targets (`x =`, `x[i] <=`, `s.f++`, `{a, b} =`), triggered
    events, released forces. Comparisons read as writes too (`a <= b`): the safe side."""
    names = set(_WRITTEN.findall(text)) | set(_OTHER_WRITTEN.findall(text))
    for inner in _CONCAT_WRITTEN.findall(text):
        names |= set(_IDENT.findall(re.sub(r"\[[^\]]*\]", " ", inner)))
    return names


def _declared(text: str) -> set[str]:
    """Names an item declares: a task's or function's, a declaration's (`wire x = ...`, `stats s1;`,
    `logic [7:0] a, b;`); none for others."""
    sub = re.match(r"\s*(?:task|function)\b(?:\s+automatic)?(?:\s+(?:\[[^\]]*\]|[A-Za-z_][\w$]*))*?\s+"
                   r"([A-Za-z_][\w$]*)\s*[(;]", text)
    if sub:
        return {sub.group(1)}
    m = re.match(r"\s*(?:wire|reg|logic|bit|int|integer|byte|real|time|[A-Za-z_][\w$]*)\b(.*);\s*$", text, re.DOTALL)
    if m is None or re.match(r"\s*(assign|always\w*|initial|final|task|function|typedef)\b", text):
        return set()
    rest = re.sub(r"\[[^\]]*\]", " ", m.group(1))
    if "(" in rest.split("=")[0]:
        return set()                                   # an instance, not a declaration
    return {d.split("=")[0].split()[-1] for d in rest.split(",") if d.split("=")[0].split()}


def _star_ports(masked: str, modules: dict[str, tuple[int, int]], texts: list[str]) -> dict[int, set[str]]:
    """For instances of the bench's own modules connected with `.*`: the port names, which `.*` connects."""
    out: dict[int, set[str]] = {}
    for k, text in enumerate(texts):
        m = _instance_head(text)
        if m and m.group(1) in modules and ".*" in re.sub(r"\s+", "", text[m.end():]):
            a, b = modules[m.group(1)]
            head = masked[a:b].split(";", 1)[0]
            out[k] = set(_IDENT.findall(re.sub(r"\[[^\]]*\]", " ", head)))
    return out


def _write(testbench: str, masked: str, items: list[tuple[int, int]], marked: set[int], per: set[str],
           top: str, ties: dict[int, list[str]]) -> str | None:
    """The marked bench: per-candidate items with their names prefixed and their lines marked, shared
    print lines marked, `$dump*` calls gone, hint-only ports tied to 1 before the `.*` at each `ties` key."""
    starts = [0] + [m.end() for m in re.finditer("\n", testbench)]

    def line_of(pos: int) -> int:
        return bisect.bisect_right(starts, pos) - 1
    lines = testbench.split("\n")
    for pos in sorted(ties, reverse=True):            # on a shared line (the instance is shared): last first
        i, col = line_of(pos), pos - starts[line_of(pos)]
        lines[i] = lines[i][:col] + "".join(f".{port}(1'b1), " for port in ties[pos]) + lines[i][col:]
    mlines = masked.split("\n")
    per_line: dict[int, str] = {}                      # line index -> "one" | "begin" | "end" | "inside"
    for k in sorted(marked):
        s, e = items[k]
        first, last = line_of(s), line_of(e - 1)
        if mlines[first][:s - starts[first]].strip() or mlines[last][e - starts[last]:].strip():
            return None                                # shares a line with another item
        if first == last:
            per_line[first] = "one"
        else:
            per_line[first], per_line[last] = "begin", "end"
            for i in range(first + 1, last):
                per_line[i] = "inside"
    rename = re.compile(r"(?<![\w$'`\\.])(" + "|".join(map(re.escape, sorted(per, key=len, reverse=True)))
                        + r")(?![\w$])")
    out = [group_header(OWN_PREFIX)]
    for i, line in enumerate(lines):
        kind = per_line.get(i)
        line = _drop_dumps(line)
        if "$dump" in _mask(line):
            return None                                # a `$dump*` call over several lines
        if kind is None:
            if re.search(r"\$(?:display|write|strobe|monitor)", mlines[i]):
                if not _PRINT_LINE.match(mlines[i]) or "`" in mlines[i] or _calls_beyond_printing(mlines[i]):
                    return None                        # a shared line that prints and does more
                indent = line[:len(line) - len(line.lstrip())]
                # begin/end: the copies stay one statement (the print may be the body of an `if`)
                out += [f"{indent}begin", f"{line}  {PER_DUT}", f"{indent}end"]
            else:
                out.append(line)
            continue
        line = _rename_code(line, rename)
        if kind == "one":
            out.append(f"{line}  {PER_DUT}")
        elif kind == "begin":
            out += [BLOCK_BEGIN, line]
        elif kind == "end":
            out += [line, BLOCK_END]
        else:
            out.append(line)
    text = "\n".join(out)
    expand(text, top, [(top, "")])                     # raises ValueError where the protocol is broken
    return text


def _calls_beyond_printing(line: str) -> bool:
    """Does a print line call anything with effects (`$random`, a function of the bench)? Copied per
    candidate, it would run once per candidate."""
    rest = line.split("(", 1)[1] if "(" in line else ""
    calls = re.findall(r"(\$?[A-Za-z_][\w$]*)\s*\(", rest)
    return any(c not in SAFE_SYSTEM for c in calls) or bool(set(_SYSTEM.findall(rest)) - SAFE_SYSTEM)


def _rename_code(line: str, pattern: re.Pattern[str]) -> str:
    return "".join(pattern.sub(lambda m: OWN_PREFIX + m.group(1), piece) if kind == "code" else piece
                   for kind, piece in _scan(line))


def _drop_dumps(line: str) -> str:
    """`line` with its `$dump*(...);` statements replaced by `;` (found with strings and comments masked)."""
    out, pos = [], 0
    for m in _DUMP.finditer(_mask(line)):
        out += [line[pos:m.start()], ";"]
        pos = m.end()
    return "".join(out) + line[pos:]
