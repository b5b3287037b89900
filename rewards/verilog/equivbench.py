"""Equivalence testbenches generated from a reference design, for problems that ship no testbench.

Public RL datasets give a spec and a reference only. This module writes a bench that drives the
reference and the candidate with identical stimulus and compares every output, so such a problem is
scored like a VerilogEval one (the bench prints ``Mismatches: N in M samples`` through `$display`).

- Ports (names, directions, widths, signedness) and parameters come from pyslang's elaboration.
- Clock and reset come from the design itself: yosys flip-flop cells' CLK/ARST/SRST pins and their
  polarity parameters; port names only break ties (a `load` can drive an SRST pin too).
- Stimulus: a reset sequence, then random inputs mixed with corner values (all zeros, all ones,
  one-hot) and stretches of held or mostly-1 inputs, the reset asserted for a cycle at 1/4, 1/2 and
  3/4 of the run's start (not at random: random resets would keep counters from ever wrapping).
  Clocked designs get new inputs in both clock phases and are compared before every clock edge and
  after every active one (so Mealy outputs, async resets and the wrong edge show up); combinational
  ones after the inputs settle, every vector first when there are few.
- X in a reference output is a don't-care, X/Z in the candidate where the reference is 0/1 is a
  mismatch (VerilogEval's ``ref === (ref ^ dut ^ ref)``; a reference Z must be matched by Z).
- Seeded by the problem id: the same bench every run. Anything it cannot drive faithfully (several
  clocks, latch-only storage, inout or unpacked ports) raises `UnsupportedReference` with the reason.
"""
from __future__ import annotations

import hashlib
import json
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from typing import Any

from rewards.verilog.extract import (
    BLOCK_BEGIN,
    BLOCK_END,
    PER_DUT,
    group_header,
    module_names,
    rename_modules,
    root_modules,
)
from rewards.verilog.ports import Port
from rewards.verilog.problems import Problem
from sandboxes.limits import Backend

BENCH_TOP = "__eb_tb"
REF_PREFIX = "__eb_ref_"
DUT_PREFIX = "__eb_d_"          # names of the bench's per-candidate parts (rewards.verilog.group)
DEFAULT_CYCLES = 500
RESET_CYCLES = 3
_DIRECTIONS = {"In": "input", "Out": "output", "InOut": "inout", "Ref": "ref"}


class UnsupportedReference(Exception):
    """The reference uses something the generated bench cannot drive faithfully (the message says what)."""


# ---------------------------------------------------------------------------------------------
# ports (pyslang)

@dataclass
class Interface:
    module: str
    ports: list[Port]
    parameters: dict[str, str] = field(default_factory=dict)     # name -> elaborated value (not localparams)

    def port(self, name: str) -> Port | None:
        return next((p for p in self.ports if p.name == name), None)

    def port_named(self, name: str) -> Port:
        """The port `name`, which the caller knows is there."""
        port = self.port(name)
        if port is None:
            raise KeyError(f"module {self.module!r} has no port {name!r}")
        return port

    @property
    def inputs(self) -> list[Port]:
        return [p for p in self.ports if p.direction == "input"]

    @property
    def outputs(self) -> list[Port]:
        return [p for p in self.ports if p.direction == "output"]


def module_interface(source: str, module: str) -> Interface | None:
    """Ports and parameters of `module` as elaborated by pyslang (default parameter values), or None
    when the source has no top-level module of that name. Elaboration errors elsewhere don't matter."""
    from pyslang.ast import Compilation, SymbolKind
    from pyslang.syntax import SyntaxTree

    comp = Compilation()
    comp.addSyntaxTree(SyntaxTree.fromText(source))
    inst = next((i for i in comp.getRoot().topInstances if i.name == module), None)
    if inst is None:
        return None
    ports = []
    for p in inst.body.portList:
        if not hasattr(p, "direction") or not hasattr(p, "type"):
            raise UnsupportedReference(f"port {getattr(p, 'name', '?')!r} is an interface or multi-port")
        t = p.type
        if not t.isIntegral:
            raise UnsupportedReference(f"port {p.name!r} has non-integral type {t} (unpacked array, real, ...)")
        direction: str = p.direction.name          # pyslang's ArgumentDirection: In, Out, InOut, Ref
        ports.append(Port(_DIRECTIONS.get(direction, direction.lower()), p.name, int(t.bitWidth),
                          bool(t.isSigned)))
    params = {m.name: str(m.value) for m in inst.body
              if m.kind == SymbolKind.Parameter and not m.isLocalParam}
    return Interface(module, ports, params)


def port_mismatch(reference: Interface, candidate_code: str, top: str) -> str | None:
    """Why the candidate's ports differ from the reference's (names, directions, widths), or None.

    Signedness is not compared: it changes no bit at the port boundary, and the simulation judges how
    the candidate uses it. None as well when pyslang cannot find the module (iverilog will say why)."""
    try:
        cand = module_interface(candidate_code, top)
    except UnsupportedReference as exc:
        return f"candidate {exc}"
    except Exception:      # noqa: BLE001 - pyslang trouble with odd code: let iverilog judge it
        return None
    if cand is None:
        return None
    ref_names, cand_names = [p.name for p in reference.ports], [p.name for p in cand.ports]
    missing = [n for n in ref_names if n not in cand_names]
    if missing:
        p = reference.port_named(missing[0])
        return f"candidate lacks port {p.name!r} ({p.describe()})" + _more(missing)
    extra = [n for n in cand_names if n not in ref_names]
    if extra:
        p = cand.port_named(extra[0])
        return f"candidate has extra port {p.name!r} ({p.describe()})" + _more(extra)
    for r in reference.ports:
        c = cand.port_named(r.name)      # no port is missing
        if (c.direction, c.width) != (r.direction, r.width):
            return f"port {r.name!r}: reference {r.describe()}, candidate {c.describe()}"
    return None


def uses_bench_names(code: str) -> bool:
    """Does the candidate name the bench's identifiers (``__eb_...``)? A hierarchical reference such as
    ``__eb_tb.__eb_errors`` could otherwise reset the mismatch count."""
    from rewards.verilog.extract import _blank_strings, strip_comments

    return "__eb_" in _blank_strings(strip_comments(code))


def _more(names: list[str]) -> str:
    return f" and {len(names) - 1} more" if len(names) > 1 else ""


# ---------------------------------------------------------------------------------------------
# clock and reset (yosys)

_FF_RESET_PINS = {"$adff": ("ARST", "async"), "$adffe": ("ARST", "async"), "$sdff": ("SRST", "sync"),
                  "$sdffe": ("SRST", "sync"), "$sdffce": ("SRST", "sync"), "$dffsr": ("CLR", "async"),
                  "$dffsre": ("CLR", "async"), "$aldff": ("ALOAD", "async"), "$aldffe": ("ALOAD", "async")}


@dataclass
class Clocking:
    """How the reference is clocked and reset, as its flip-flops say."""
    clock: str | None = None       # the input port every flip-flop's clock comes from; None: combinational
    edge: str | None = None        # posedge | negedge | both
    reset: str | None = None
    reset_active: int = 1          # value that asserts the reset
    reset_kind: str | None = None  # async | sync | None (found by name only: no flip-flop pin)
    state_bits: int = 0
    latches: int = 0

    @property
    def clocked(self) -> bool:
        return self.clock is not None


def _yosys_friendly(source: str) -> str:
    """yosys 0.23 refuses an `always_comb` that infers a latch (an incomplete case); simulators and
    this analysis treat it as `always @*`, so read it that way."""
    source = re.sub(r"\balways_comb\b", "always @*", source)
    source = re.sub(r"\balways_latch\b", "always @*", source)
    return re.sub(r"\balways_ff\b", "always", source)


def yosys_netlist(source: str, module: str, backend: Backend = "auto") -> dict[str, Any]:
    """The flattened module after proc/memory/opt_dff as yosys JSON (run in the project sandbox)."""
    from rewards.verilog.formal import FormalConfig, _yosys_error, sandbox_runner

    script = (f"read_verilog -sv ref.sv\nhierarchy -check -top {module}\nproc\nflatten\nmemory\n"
              "opt_dff\nopt_clean\nwrite_json net.json\n")
    run = sandbox_runner(script, {"ref.sv": _yosys_friendly(source)}, FormalConfig(sandbox_backend=backend),
                         ("net.json",))
    if "net.json" not in run.outputs:
        raise UnsupportedReference(f"yosys cannot read the reference: {_yosys_error(run) or 'no netlist'}")
    mods = json.loads(run.outputs["net.json"]).get("modules", {})
    if module not in mods:
        raise UnsupportedReference(f"yosys netlist has no module {module!r}")
    return mods[module]


def detect_clocking(netlist: dict[str, Any], iface: Interface) -> Clocking:
    """Clock, edge and reset of the reference from its yosys cells (see `Clocking`)."""
    from rewards.verilog.formal import _modules

    mod = _modules({"modules": {"m": netlist}})["m"]
    inputs = {p.name for p in iface.inputs}
    primary = {c for c, _ in mod.clocks if c in inputs}
    if len(primary) > 1:
        raise UnsupportedReference(f"several clocks {sorted(primary)}")
    if not primary:
        if mod.clocks:
            raise UnsupportedReference(f"flip-flops clocked by internal nets only ({len(mod.clocks)} clock nets)")
        if mod.latches:
            raise UnsupportedReference(f"latch-only storage ({mod.latches} latch(es), no clock)")
        return Clocking()
    clock = primary.pop()
    pols = {pol for c, pol in mod.clocks if c == clock}
    edge = "both" if len(pols) > 1 else ("posedge" if pols == {1} else "negedge")
    reset, active, kind = _pick_reset(netlist, iface, clock)
    return Clocking(clock, edge, reset, active, kind, mod.state_bits, mod.latches)


def _pick_reset(netlist: dict[str, Any], iface: Interface, clock: str) -> tuple[str | None, int, str | None]:
    """(port, asserted value, async|sync|None). Flip-flop reset pins driven by a 1-bit input, preferring
    one named like a reset, then an async one, then a reset by name alone, then any sync-reset pin."""
    from rewards.verilog.formal import _RESET_LOW_RE, _RESET_RE

    one_bit = {p.name for p in iface.inputs if p.width == 1 and p.name != clock}
    bit_port = {b: name for name, info in netlist.get("ports", {}).items() for b in info["bits"]
                if name in one_bit}
    votes: dict[tuple[str, int, str], int] = {}
    for cell in netlist.get("cells", {}).values():
        pin = _FF_RESET_PINS.get(cell["type"])
        if pin is None:
            continue
        pol = _bit(cell["parameters"].get(f"{pin[0]}_POLARITY", "1"))
        for b in cell["connections"].get(pin[0], []):
            if b in bit_port:
                key = (bit_port[b], pol, pin[1])
                votes[key] = votes.get(key, 0) + 1

    def named(n: str) -> bool:
        return bool(_RESET_RE.match(n) or _RESET_LOW_RE.match(n))

    ranked = sorted(votes, key=lambda k: (not named(k[0]), k[2] != "async", -votes[k], k[0]))
    if ranked and (named(ranked[0][0]) or ranked[0][2] == "async"):
        return ranked[0]
    by_name = next((n for n in sorted(one_bit) if named(n)), None)
    if by_name is not None:
        return by_name, 0 if _RESET_LOW_RE.match(by_name) else 1, None
    return ranked[0] if ranked else (None, 1, None)


def _bit(value: Any) -> int:
    """yosys JSON parameters are binary strings (or ints)."""
    return int(value, 2) if isinstance(value, str) else int(value)


# ---------------------------------------------------------------------------------------------
# the bench

@dataclass
class EquivBench:
    text: str                      # the bench source (top module BENCH_TOP)
    reference: str                 # the reference with its modules renamed (REF_PREFIX / ref_module)
    ref_module: str                # the reference's top module name inside `reference`
    interface: Interface
    clocking: Clocking
    seed: int
    cycles: int


def problem_seed(problem_id: str) -> int:
    return int(hashlib.sha256(problem_id.encode()).hexdigest()[:8], 16) & 0x7FFFFFFF


def render_bench(iface: Interface, clk: Clocking, ref_module: str, dut_module: str, seed: int,
                 cycles: int) -> str:
    """Verilog source of the bench (see the module docstring for what it drives and compares)."""
    sig = {p.name: f"__eb_{i}" for i, p in enumerate(iface.ports)}     # no port name can clash
    lines = [group_header(DUT_PREFIX),
             f"module {BENCH_TOP};",      # no `timescale: the designs' own (or the default) applies
             f"  integer __eb_seed = {seed};",
             "  integer __eb_samples = 0, __eb_cycle = 0, __eb_k = 0, __eb_j = 0, __eb_v = 0;",
             "  reg __eb_hold = 0, __eb_miss = 0;",
             f"  integer {DUT_PREFIX}errors = 0;  {PER_DUT}",
             f"  reg {DUT_PREFIX}bad = 0;  {PER_DUT}"]
    for p in iface.inputs:
        lines.append(f"  reg {p.range}{sig[p.name]}_i = 0;" if p.name == clk.clock
                     else f"  reg {p.range}{sig[p.name]}_i;")
        if p.name not in (clk.clock, clk.reset):
            lines.append(f"  reg [1:0] {sig[p.name]}_m = 0;")
    for p in iface.outputs:
        lines += [f"  wire {p.range}{sig[p.name]}_r;", f"  wire {p.range}{_dut_wire(iface, p)};  {PER_DUT}"]
    for mod, inst, dut in ((ref_module, "__eb_ref", False), (dut_module, f"{DUT_PREFIX}inst", True)):
        conns = ", ".join(f".{p.name}({sig[p.name] + '_i' if p.direction == 'input' else _out(iface, sig, p, dut)})"
                          for p in iface.ports)
        lines.append(f"  {mod} {inst} ({conns});" + (f"  {PER_DUT}" if dut else ""))
    lines += _check_task(iface, sig) + _drive_task(iface, clk, sig) + _main(iface, clk, sig, cycles)
    lines.append("endmodule")
    return "\n".join(lines) + "\n"


def _dut_wire(iface: Interface, p: Port) -> str:
    """The candidate's output wire: per candidate, so its name starts with DUT_PREFIX."""
    return f"{DUT_PREFIX}{iface.ports.index(p)}"


def _out(iface: Interface, sig: dict[str, str], p: Port, dut: bool) -> str:
    return _dut_wire(iface, p) if dut else f"{sig[p.name]}_r"


def _check_task(iface: Interface, sig: dict[str, str]) -> list[str]:
    """Per output: equal (`===`) passes at once; else every bit where the reference is not x must match
    exactly, so the candidate's x/z against a reference 0/1 is a mismatch. The bit loop runs only when the
    reference has an x or z bit: without one any difference is a mismatch (the loop would say so, in vvp's
    interpreter, one bit at a time: most of a wide mismatching candidate's simulation). (VerilogEval's
    ``r === (r ^ d ^ r)`` says the same for 0/1/x, but fails a reference z even against z.)"""
    bad, errors = f"{DUT_PREFIX}bad", f"{DUT_PREFIX}errors"
    out = ["  task __eb_check;", "    begin", "      __eb_samples = __eb_samples + 1;", BLOCK_BEGIN,
           f"      {bad} = 0;"]
    for p in iface.outputs:
        r, d = f"{sig[p.name]}_r", _dut_wire(iface, p)
        if p.width == 1:
            out.append(f"      __eb_miss = {r} !== 1'bx && {r} !== {d};")
        else:
            out += ["      __eb_miss = 0;", f"      if ({r} !== {d})",
                    f"        if ((^{r}) !== 1'bx) __eb_miss = 1;   // no x/z in the reference: any difference",
                    f"        else for (__eb_j = 0; __eb_j < {p.width}; __eb_j = __eb_j + 1)",
                    f"          if ({r}[__eb_j] !== 1'bx && {r}[__eb_j] !== {d}[__eb_j]) __eb_miss = 1;"]
        out += ["      if (__eb_miss) begin",
                f"        if ({errors} == 0 && !{bad})",
                (f'          $display("First mismatch: sample %0d cycle %0d output {p.name} expected %b got %b",'
                 f" __eb_samples, __eb_cycle, {r}, {d});"),
                f"        {bad} = 1;", "      end"]
    return out + [f"      if ({bad}) {errors} = {errors} + 1;", BLOCK_END, "    end", "  endtask"]


def _random_expr(width: int) -> str:
    words = (width + 31) // 32
    return "{" + ", ".join(["$random(__eb_seed)"] * words) + "}" if words > 1 else "$random(__eb_seed)"


def _driven(iface: Interface, clk: Clocking) -> list[Port]:
    """Inputs the stimulus drives (all but the clock, which the bench toggles)."""
    return [p for p in iface.inputs if p.name != clk.clock]


def _drive_task(iface: Interface, clk: Clocking, sig: dict[str, str]) -> list[str]:
    """New input values. Every SEGMENT cycles each input draws a mode for the segment:
    0 fresh values each phase, 6/16 of them corners (all zeros, all ones, one-hot, sign bit only, all but
      the sign bit, below 8), and 1/32 of the phases every input zero or every input ones;
    1 fresh corner values each phase (so two inputs meet at corners: a = 0 with b = -0);
    2 held, and a held input stays held into the next segment 1 time in 2 (a free-running counter
      needs hundreds of cycles to come round to a held limit);
    3 a 1-bit input mostly 1 (a `valid` stays high for the eight cycles a deserializer needs), a wider
      one as mode 0.
    Modes 2 and 3 only for clocked designs: holding an input of a combinational one tests nothing.
    The reset is asserted exactly while `__eb_hold` is set."""
    modes = 4 if clk.clocked else 2      # holding an input of a combinational design tests nothing
    out = ["  task __eb_modes;", "    begin"]
    out += [f"      if ({sig[p.name]}_m != 2 || $unsigned($random(__eb_seed)) % 2 == 0)"
            f" {sig[p.name]}_m = $unsigned($random(__eb_seed)) % {modes};"
            for p in _driven(iface, clk) if p.name != clk.reset]
    out += ["    end", "  endtask",
            "  task __eb_drive;", "    begin", "      __eb_k = $unsigned($random(__eb_seed)) % 32;"]
    for p in _driven(iface, clk):
        s, m = f"{sig[p.name]}_i", f"{sig[p.name]}_m"
        if p.name == clk.reset:
            out.append(f"      {s} = __eb_hold ? 1'b{clk.reset_active} : 1'b{1 - clk.reset_active};")
            continue
        known = f"(^{s}) !== 1'bx"
        out.append(f"      if ({m} == 2 && {known}) ;   // held")
        if p.width == 1:
            out.append(f"      else if ({m} == 3) {s} = $unsigned($random(__eb_seed)) % 16 != 0;   // mostly 1")
        out += [(f"      else case ({m} == 1 ? $unsigned($random(__eb_seed)) % 6 : __eb_k == 0 ? 0 : __eb_k == 1 ? 1"
                " : $unsigned($random(__eb_seed)) % 16)"),
                f"        0: {s} = 0;", f"        1: {s} = {{{p.width}{{1'b1}}}};",
                f"        2: {s} = {p.width}'d1 << ($unsigned($random(__eb_seed)) % {p.width});",
                f"        3: {s} = {p.width}'d1 << {p.width - 1};   // sign bit only (-0, most negative)",
                f"        4: {s} = ~({p.width}'d1 << {p.width - 1});   // most positive",
                f"        5: {s} = $unsigned($random(__eb_seed)) % 8;   // small: counter limits, shift amounts",
                f"        default: {s} = {_random_expr(p.width)};", "      endcase"]
    return out + ["    end", "  endtask"]


SEGMENT = 16
PULSE_SPAN = 400            # the mid-run reset pulses fall at 1/4, 1/2, 3/4 of min(cycles, this)
COMB_VECTORS_PER_CYCLE = 2  # random vectors per cycle for a combinational design too wide to enumerate
EXHAUSTIVE_BITS = 12      # combinational designs with at most this many input bits also get every vector


def _main(iface: Interface, clk: Clocking, sig: dict[str, str], cycles: int) -> list[str]:
    verdict = [f'    $display("Mismatches: %0d in %0d samples", {DUT_PREFIX}errors, __eb_samples);  {PER_DUT}',
               "    $finish;", "  end"]
    step = f"if (__eb_cycle % {SEGMENT} == 0) __eb_modes;"
    if clk.clock is None:       # not clk.clocked
        driven = _driven(iface, clk)
        bits = sum(p.width for p in driven)
        if not bits:
            body = [f"    repeat ({cycles}) #1 __eb_check;   // no inputs: watch it over time"]
        else:      # every vector when few (in order), then random ones: a candidate's latch remembers
            concat = "{" + ", ".join(f"{sig[p.name]}_i" for p in driven) + "}"
            every = [f"    for (__eb_v = 0; __eb_v < {1 << bits}; __eb_v = __eb_v + 1) begin",
                     f"      {concat} = __eb_v; #1 __eb_check;", "    end"] if bits <= EXHAUSTIVE_BITS else []
            body = [*every, (f"    repeat ({COMB_VECTORS_PER_CYCLE * cycles}) begin {step} __eb_drive;"
                             " #1 __eb_check; __eb_cycle = __eb_cycle + 1; end")]
        return ["  initial begin", *body, *verdict]
    c = f"{sig[clk.clock]}_i"
    inactive = 1 if clk.edge == "negedge" else 0
    # after the inactive edge a single-edge flip-flop design shows nothing new (a candidate on the wrong
    # edge already differs before it); with latches or both edges in use every edge is looked at
    after = "1" if clk.edge == "both" or clk.latches else f"{c} == 1'b{1 - inactive}"
    span = min(cycles, PULSE_SPAN)       # a long run keeps a long reset-free tail (a calendar's hours)
    pulses = " || ".join(f"__eb_cycle == {RESET_CYCLES + span * q // 4}" for q in (1, 2, 3))
    return [
        "  task __eb_phase;   // new inputs, compare before the clock edge, edge, compare after it",
        f"    begin __eb_drive; #2 __eb_check; #2 {c} = ~{c}; #1 if ({after}) __eb_check; end",
        "  endtask",
        "  initial begin",
        f"    {c} = 1'b{inactive};",
        "    __eb_modes;",
        f"    __eb_hold = {1 if clk.reset else 0};",
        f"    repeat ({RESET_CYCLES}) begin __eb_phase; __eb_phase; __eb_cycle = __eb_cycle + 1; end",
        "    __eb_hold = 0;",
        f"    repeat ({cycles}) begin   // the reset again at 1/4, 1/2, 3/4 of the run, asserted before an edge",
        f"      {step}",
        f"      __eb_hold = {pulses if clk.reset else '0'};",
        "      __eb_phase; __eb_phase; __eb_cycle = __eb_cycle + 1;",
        "    end",
        *verdict]


# ---------------------------------------------------------------------------------------------
# problems

def reference_top(problem: Problem) -> str:
    """The reference's top module: ref_module, else top_module, else its only root module."""
    names = module_names(problem.reference or "")
    for want in (problem.ref_module, problem.top_module):
        if want in names:
            return want
    roots = root_modules(problem.reference or "")
    if len(roots) == 1:
        return roots[0]
    raise UnsupportedReference(f"cannot tell the reference's top module among {names or 'no modules'}")


def build_equiv_bench(problem: Problem, cycles: int = DEFAULT_CYCLES, backend: Backend = "auto") -> EquivBench:
    """Analyse the reference and write its bench (uncached; `equivalence_bench` caches)."""
    if not problem.reference:
        raise UnsupportedReference("the problem has neither a testbench nor a reference")
    top = reference_top(problem)
    iface = module_interface(problem.reference, top)
    if iface is None:
        raise UnsupportedReference(f"pyslang finds no top-level module {top!r} in the reference")
    odd = [p.name for p in iface.ports if p.direction not in ("input", "output")]
    if odd:
        raise UnsupportedReference(f"inout/ref port(s) {odd}")
    if not iface.outputs:
        raise UnsupportedReference("the reference has no outputs to compare")
    clocking = detect_clocking(yosys_netlist(problem.reference, top, backend), iface)
    ref_name = problem.ref_module if problem.ref_module != problem.top_module else REF_PREFIX + top
    mapping = {n: REF_PREFIX + n for n in module_names(problem.reference)}
    mapping[top] = ref_name
    reference = rename_modules(problem.reference, mapping)
    seed = problem_seed(problem.id)
    text = render_bench(iface, clocking, ref_name, problem.top_module, seed, cycles)
    return EquivBench(text, reference, ref_name, iface, clocking, seed, cycles)


_CACHE: OrderedDict[tuple, EquivBench | UnsupportedReference] = OrderedDict()
_CACHE_LOCK = threading.Lock()
_BUILDING: dict[tuple, threading.Lock] = {}      # one build per key while a batch's threads all ask for it
_CACHE_SIZE = 4096


def equivalence_bench(problem: Problem, cycles: int = DEFAULT_CYCLES, backend: Backend = "auto") -> EquivBench:
    """The bench for a reference-only problem, generated once per (id, reference, names, cycles);
    raises `UnsupportedReference` (also cached) when the reference cannot be benched."""
    ref_hash = hashlib.sha256((problem.reference or "").encode("utf-8", "surrogatepass")).hexdigest()
    key = (problem.id, ref_hash, problem.top_module, problem.ref_module, cycles)
    with _CACHE_LOCK:
        hit = _CACHE.get(key)
        building = _BUILDING.setdefault(key, threading.Lock()) if hit is None else None
    if building is not None:
        with building:
            with _CACHE_LOCK:
                hit = _CACHE.get(key)
            if hit is None:
                try:
                    hit = build_equiv_bench(problem, cycles, backend)
                except UnsupportedReference as exc:
                    hit = exc
                with _CACHE_LOCK:
                    _CACHE[key] = hit
                    _BUILDING.pop(key, None)
                    while len(_CACHE) > _CACHE_SIZE:
                        _CACHE.popitem(last=False)
    if isinstance(hit, UnsupportedReference):
        raise hit
    assert hit is not None      # found in the cache, or built above
    return hit


def with_equiv_bench(problem: Problem, cycles: int = DEFAULT_CYCLES, backend: Backend = "auto") -> Problem:
    """The problem as a VerilogEval-style one whose testbench is the generated bench."""
    bench = equivalence_bench(problem, cycles, backend)
    return replace(problem, testbench=bench.text, reference=bench.reference, ref_module=bench.ref_module,
                   harness="verilogeval", meta={**(problem.meta or {}), "tb_top": BENCH_TOP})
