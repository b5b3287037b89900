"""Group simulation: every distinct candidate of a problem in one sandbox, one compile, one simulation.

GRPO scores 8-16 candidates of a problem against the same reference every step. Where earl writes the bench
itself (`pipelines.tasks.rtlgen`, `rewards.verilog.equivbench`) or marks an official one
(`rewards.verilog.groupbench`), the bench marks which of its lines belong
to the one candidate it drives, so it can be written for several: the reference once, the stimulus once,
and per candidate an instance, its output wires, its mismatch counter and its verdict line, each with its
own output tag, so `harness.parse_verdict(stdout, tag)` reads each candidate's verdict as if it ran alone.

The protocol (a bench that follows it is "group-capable"):

- its first line is ``// earl group bench: per-candidate names start with <prefix>``;
- a line ending in ``// @dut`` belongs to the candidate, as do the lines between ``// @dut {`` and
  ``// @dut }``; every per-candidate name starts with <prefix>, and every `$display` is per candidate;
- the candidate's instance line starts with the top module's name.

For candidate k, its lines are repeated with <prefix> -> <prefix>g<k>_, the top module -> the candidate's
renamed top module, and tag k. Candidate k's modules are renamed ``__earl_g<k>_<name>`` (file cand<k>.sv), so
helpers of equal names cannot collide. Unexpanded, the bench is the ordinary one-candidate bench.

A grouped candidate must get exactly the verdict it gets alone, so `solo_reason` sends to a run of its own
any candidate that could reach another one or the bench: hierarchical names, the bench's own identifiers,
system tasks with global state or files (`$random`, `$monitor`, `$fopen`, `$finish`, ...), macros and
other compiler directives (they carry over into the following files), declarations outside modules.
`timescale / `default_nettype at the top carry over too, so they are part of the group key.
"""
from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from rewards.verilog.extract import (
    BLOCK_BEGIN,
    BLOCK_END,
    GROUP_HEADER,
    PER_DUT,
    _blank_strings,
    module_names,
    rename_modules,
    strip_comments,
)
from sandboxes.steps import Step

CANDIDATE_PREFIX = "__earl_g"          # candidate k's modules: __earl_g<k>_<name>

# System tasks and functions that read or write nothing outside the candidate (output only goes to stdout,
# which verdicts ignore: they read tagged lines). `$monitor` is not here: there is one monitor per simulation.
SAFE_SYSTEM = frozenset([
    "$display", "$displayb", "$displayh", "$displayo", "$write", "$writeb", "$writeh", "$writeo", "$strobe",
    "$strobeb", "$strobeh", "$strobeo", "$signed", "$unsigned", "$clog2", "$bits", "$time", "$stime",
    "$realtime", "$countones", "$onehot", "$onehot0", "$isunknown", "$size", "$high", "$low", "$left", "$right",
    "$increment", "$dimensions", "$itor", "$rtoi", "$bitstoreal", "$realtobits", "$shortrealtobits",
    "$bitstoshortreal", "$ceil", "$floor", "$ln", "$log10", "$exp", "$sqrt", "$pow", "$error", "$warning",
    "$info",
])
GROUPABLE_DIRECTIVES = frozenset({"timescale", "default_nettype"})
_IDENT = re.compile(r"(?<![\w$'`\\])[A-Za-z_][\w$]*")
_SYSTEM = re.compile(r"\$[A-Za-z_][\w$]*")
_DIRECTIVE = re.compile(r"`([A-Za-z_]\w*)")
_DIRECTIVE_LINE = re.compile(r"(?m)^[ \t]*`.*$")
_HIERARCHICAL = re.compile(r"[\w$\]]\s*\.\s*[A-Za-z_\\]")
_MODULE_BODY = re.compile(r"\bmodule\b.*?\bendmodule\b", re.DOTALL)
_PORT_CONN = re.compile(r"\.\s*([A-Za-z_][\w$]*)\s*(?:\(|(?=[,)]))")     # `.port(x)` and `.port`
_NOT_NAMES = frozenset([
    "module", "endmodule", "input", "output", "inout", "wire", "reg", "logic", "integer", "real", "time",
    "genvar", "parameter", "localparam", "signed", "unsigned", "assign", "always", "always_ff", "always_comb",
    "always_latch", "initial", "begin", "end", "if", "else", "for", "while", "repeat", "forever", "case",
    "casez", "casex", "endcase", "default", "task", "endtask", "function", "endfunction", "posedge", "negedge",
    "or", "and", "not", "xor", "generate", "endgenerate", "bit", "byte", "int", "ps", "ns", "us", "ms", "fs",
])


def dut_prefix(testbench: str | None) -> str | None:
    """The per-candidate name prefix a group-capable bench declares, else None."""
    first = (testbench or "").split("\n", 1)[0]
    if not first.startswith(GROUP_HEADER):
        return None
    return first[len(GROUP_HEADER):].strip() or None


def _segments(bench: str) -> list[tuple[bool, list[str]]]:
    """(per candidate?, lines) in order."""
    out: list[tuple[bool, list[str]]] = []
    block: list[str] | None = None
    for line in bench.split("\n"):
        if line.strip() == BLOCK_BEGIN:
            block = []
        elif line.strip() == BLOCK_END and block is not None:
            out.append((True, block))
            block = None
        elif block is not None:
            block.append(line)
        else:
            out.append((line.rstrip().endswith(PER_DUT), [line]))
    if block is not None:
        raise ValueError("group bench: a `// @dut {` block is not closed")
    return out


_K, _MOD, _TAG = "\x00k\x00", "\x00m\x00", "\x00t\x00"      # placeholders of a per-candidate template


def expand(bench: str, top: str, duts: Sequence[tuple[str, str]]) -> str:
    """The bench written for several candidates: `duts` is (renamed top module, output tag) per candidate.
    Each per-candidate segment becomes a template once (its names, instance and `$display` tags as
    placeholders), then one copy per candidate by plain string replacement."""
    from rewards.verilog.harness import tag_testbench

    prefix = dut_prefix(bench)
    if prefix is None:
        raise ValueError("not a group-capable bench (no group header)")
    if "\x00" in bench:
        raise ValueError("group bench: a NUL character")      # the placeholders' own; the bench runs alone
    name = re.compile(rf"(?<![\w$]){re.escape(prefix)}")
    inst = re.compile(rf"(?m)^([ \t\r\f\v]*){re.escape(top)}(?![\w$])")     # a line's \s*: no newline
    out: list[str] = []
    for per_dut, lines in _segments(bench):
        if not per_dut:
            if "$display" in lines[0] or "$write" in lines[0]:
                raise ValueError(f"group bench: shared line prints: {lines[0].strip()!r}")
            out += lines
            continue
        text = name.sub(lambda _: prefix + _K, "\n".join(lines))
        template = tag_testbench(inst.sub(lambda m: m.group(1) + _MOD, text), _TAG)
        out += [template.replace(_K, f"g{k}_").replace(_MOD, module).replace(_TAG, tag)
                for k, (module, tag) in enumerate(duts)]
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------- who may join

@functools.lru_cache(maxsize=1024)      # per problem, every step: the bench and reference do not change
def bench_names(testbench: str, reference: str) -> frozenset[str]:
    """Identifiers of the bench and the reference a candidate has no business naming: all but keywords,
    the ports (named connections, `.port(x)` or `.port`) and the top module, which the candidate declares
    itself."""
    bench = _code(testbench)
    bench_wo_directives = _DIRECTIVE_LINE.sub("", bench)
    ports = set(_PORT_CONN.findall(bench))
    names = set(_IDENT.findall(bench_wo_directives)) | set(module_names(reference))
    return frozenset(names - ports - _NOT_NAMES)


def solo_reason(code: str, reserved: frozenset[str], top: str) -> str | None:
    """Why `code` must be simulated on its own rather than in a group (None: it may join one)."""
    clean = _code(code)
    if "\\" in clean:
        return "escaped identifiers"
    system = sorted(set(_SYSTEM.findall(clean)) - SAFE_SYSTEM)
    if system:
        return f"uses {', '.join(system[:3])}"
    directives = sorted(set(_DIRECTIVE.findall(clean)) - GROUPABLE_DIRECTIVES)
    if directives:
        return f"uses `{directives[0]}"
    first_module = re.search(r"\bmodule\b", clean)
    last_directive = max((m.start() for m in _DIRECTIVE.finditer(clean)), default=-1)
    if first_module and last_directive > first_module.start():
        return "a compiler directive after a module"
    outside = _MODULE_BODY.sub("", _DIRECTIVE_LINE.sub("", clean)).strip()
    if outside:
        return f"code outside modules ({outside.split()[0]!r})"
    if _HIERARCHICAL.search(clean):
        return "a hierarchical name"
    named = (set(_IDENT.findall(_DIRECTIVE_LINE.sub("", clean))) - {top}) & (reserved | {"bind"})
    if named:
        return f"names the bench's {min(named)!r}"
    if CANDIDATE_PREFIX in clean:
        return f"names {CANDIDATE_PREFIX}..."
    return None


def directive_key(code: str) -> tuple[str, ...]:
    """The compiler directives a candidate opens with: they carry over into the bench and reference, so
    only candidates with the same ones share a compile (their verdicts then match their runs alone)."""
    return tuple(" ".join(m.group(0).split()) for m in _DIRECTIVE_LINE.finditer(_code(code)))


def _code(text: str) -> str:
    return _blank_strings(strip_comments(text or ""))


# ---------------------------------------------------------------------------------------------- the job

@dataclass
class GroupJob:
    """Files for one work dir and the steps compiling and simulating every candidate at once."""
    files: dict[str, str]
    script: tuple[Step, ...]
    tags: list[str]                 # output tag of candidate k


def candidate_file(k: int) -> str:
    return f"cand{k}.sv"


def rename_candidate(code: str, k: int) -> tuple[str, dict[str, str]]:
    """Candidate k's source with its modules renamed apart, and the mapping."""
    mapping = {m: f"{CANDIDATE_PREFIX}{k}_{m}" for m in module_names(code)}
    return rename_modules(code, mapping), mapping


def build_group_job(problem, codes: Sequence[str], flags: Sequence[str], vvp_flags: Sequence[str],
                    tools: Mapping[str, str] | None = None) -> GroupJob:
    """`problem`: a verilogeval-style problem with a group-capable bench and a reference (for a
    reference-only problem, `equivbench.with_equiv_bench` of it)."""
    from rewards.verilog.harness import compile_and_run_steps, new_tag

    files: dict[str, str] = {}
    duts: list[tuple[str, str]] = []
    for k, code in enumerate(codes):
        renamed, mapping = rename_candidate(code, k)
        files[candidate_file(k)] = renamed
        duts.append((mapping[problem.top_module], new_tag()))
    files["test.sv"] = expand(problem.testbench, problem.top_module, duts)
    files["ref.sv"] = problem.reference or ""
    return GroupJob(files, compile_and_run_steps(problem, files, flags, vvp_flags, tools), [t for _, t in duts])


def culprits(compile_log: str, n: int, prefix: str) -> set[int] | None:
    """Candidates that iverilog's error lines name (by file, module or instance); None when some error
    line names none of them (then nobody can be kept in the group)."""
    pattern = re.compile(rf"cand(\d+)\.sv|{CANDIDATE_PREFIX}(\d+)_|{re.escape(prefix)}g(\d+)_")
    found: set[int] = set()
    for line in compile_log.splitlines():
        if not re.search(r"error|syntax|unable|unknown module", line, re.IGNORECASE) \
                or "warning" in line.lower() or re.match(r"\s*\d+ error\(s\)", line):
            continue
        ks = {int(next(g for g in m.groups() if g)) for m in pattern.finditer(line)}
        ks = {k for k in ks if k < n}
        if not ks:
            return None
        found |= ks
    return found or None
