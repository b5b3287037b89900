"""Procedural RTL tasks: the offline default's training and held-out problems.

Each task is a small Verilog module (gates, muxes, arithmetic, decoders, counters, shift registers, FSMs)
with a `// spec` + `// Ports: ...` comment prompt, a reference `RefModule`, and a VerilogEval-style bench
`tb` that drives RefModule and TopModule with the same random stimulus and prints
``Mismatches: N in M samples``. Variety (widths, options, ten port-name sets, several phrasings) keeps the
model from memorising prompts; the held-out split is disjoint from train by prompt text.
Everything is deterministic in ``(n, seed, split)``.
"""
from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, overload

from pipelines.tasks.options import index_set
from rewards.verilog.extract import PER_DUT, group_header
from rewards.verilog.ports import Port
from rewards.verilog.problems import Problem, reference_solution

SAMPLES = 200
R = "$random(tb_seed)"              # the bench's random source; its seed is per problem
SPLITS = ("train", "heldout")
HOLDOUT_MODES = ("prompt", "names")
HELDOUT_PERCENT = 10                 # share of the prompt space reserved for the held-out split
MAX_MISSES = 400                     # consecutive duplicate draws before a family counts as exhausted

# Ten port-name sets. Roles: a-d operands, y output, s select, ci/co carry, bi/bo borrow, v valid,
# clk, rst (active high), rstn (active low), en enable, din serial/data in, q registered output,
# up count direction, z detector output. Set 3 uses i/j/k/r/c on purpose (they once clashed with bench
# identifiers); the last set is kept out of training when holdout="names".
ROLES = ("a", "b", "c", "d", "y", "s", "ci", "co", "bi", "bo", "v",
         "clk", "rst", "rstn", "en", "din", "q", "up", "z")
NAME_SETS: list[dict[str, str]] = [dict(zip(ROLES, row.split(), strict=True)) for row in (
    "a b c d y sel cin cout bin bout valid clk reset reset_n en d q up z",
    "in0 in1 in2 in3 out s ci co bi bo vld clk rst rst_n ena din dout up match",
    "x y z w f sel carry_in carry_out brw_in brw_out valid clock reset resetn enable data_in data_out up hit",
    "i j k l o c ci co bi bo v clk r rn e i q u z",
    "p q r s out sel cin cout bin bout ok clk clear clear_n load si qout up hit",
    "A B C D Y S CI CO BI BO V CLK RST RST_N EN DIN Q UP Z",
    "op1 op2 op3 op4 result select c_in c_out b_in b_out valid clk srst srst_n ce serial_in out dir detected",
    "src0 src1 src2 src3 dst mode cy_in cy_out bw_in bw_out any clk_i rst_i rst_ni en_i d_i q_o up_i z_o",
    "lhs rhs third fourth res pick carry ovf brw under nz ck rs rs_n go bit_in word inc seen",
    "u v w t r k ic oc ib ob has tick zap zap_n act sin bits plus flag",
)]
HELDOUT_NAMES = len(NAME_SETS) - 1


@dataclass
class Design:
    """One generated circuit before it is rendered into a `Problem`."""
    family: str
    width: int
    variant: str
    ports: list[Port]
    phrasings: list[str]                  # alternative specs; sentences separated by "\n"
    body: list[str]                       # reference module body lines (unindented)
    sequential: bool = False
    stim: dict[str, str] = field(default_factory=dict)   # input -> stimulus expression (default: R)
    warm: dict[str, str] = field(default_factory=dict)   # input -> value held during warm-up
    after_drive: list[str] = field(default_factory=list)  # extra bench statements after each drive
    warm_cycles: int = 3

    def header(self, module: str) -> str:
        return f"module {module}({', '.join(p.decl() for p in self.ports)});"

    def module(self, module: str) -> str:
        return self.header(module) + "\n" + "".join(f"  {line}\n" for line in self.body) + "endmodule\n"


def _bits(w: int) -> str:
    return f"{w}-bit"


def _a(w: int) -> str:
    """'A 4-bit' / 'An 8-bit': the article that reads right before a width."""
    return "An" if w in (8, 11, 18) else "A"


@overload
def _reset(rng: random.Random, N: dict[str, str], optional: Literal[False] = False) -> dict: ...
@overload
def _reset(rng: random.Random, N: dict[str, str], optional: bool) -> dict | None: ...
def _reset(rng: random.Random, N: dict[str, str], optional: bool = False) -> dict | None:
    """Pick a reset style; returns name, active level, sync-ness and the spec/body fragments."""
    styles = ["sync", "sync_n", "async", "async_n"] + (["none", "none"] if optional else [])
    style = rng.choice(styles)
    if style == "none":
        return None
    low = style.endswith("_n")
    name = N["rstn"] if low else N["rst"]
    sync = style.startswith("sync")
    kind = ("a synchronous" if sync else "an asynchronous") + (" active-low" if low else " active-high")
    edge = "" if sync else f" or {'negedge' if low else 'posedge'} {name}"
    cond = f"!{name}" if low else name
    return {"name": name, "low": low, "sync": sync, "kind": kind, "edge": edge, "cond": cond, "style": style,
                "stim": f"(({R} & 31) {'!=' if low else '=='} 0)", "warm": "1'b0" if low else "1'b1"}


def _seq_ports(N: dict[str, str], rst: dict | None) -> list[Port]:
    ports = [Port("input", N["clk"], clock=True)]
    if rst:
        ports.append(Port("input", rst["name"]))
    return ports


def _reset_stim(d: Design, rst: dict | None) -> None:
    if rst:
        d.stim[rst["name"]] = rst["stim"]
        d.warm[rst["name"]] = rst["warm"]


# --------------------------------------------------------------------------- combinational families

_BITWISE = {  # op -> (expression template over operand list, description, symbol word)
    "and": (lambda xs: " & ".join(xs), "AND"),
    "or": (lambda xs: " | ".join(xs), "OR"),
    "xor": (lambda xs: " ^ ".join(xs), "XOR"),
    "nand": (lambda xs: f"~({' & '.join(xs)})", "NAND"),
    "nor": (lambda xs: f"~({' | '.join(xs)})", "NOR"),
    "xnor": (lambda xs: f"~({' ^ '.join(xs)})", "XNOR"),
    "andn": (lambda xs: f"{xs[0]} & ~{xs[1]}", "AND-NOT"),
    "orn": (lambda xs: f"{xs[0]} | ~{xs[1]}", "OR-NOT"),
}


def _list(xs: list[str]) -> str:
    return xs[0] if len(xs) == 1 else ", ".join(xs[:-1]) + " and " + xs[-1]


def fam_bitwise(rng: random.Random, N: dict[str, str]) -> Design:
    w = rng.randint(1, 16)
    op = rng.choice(list(_BITWISE))
    k = 3 if op in ("and", "or", "xor") and rng.random() < 0.3 else 2
    xs = [N["a"], N["b"], N["c"]][:k]
    make, word = _BITWISE[op]
    expr, y = make(xs), N["y"]
    if op == "andn":
        desc = f"the bitwise AND of {xs[0]} with the inverse of {xs[1]}"
    elif op == "orn":
        desc = f"the bitwise OR of {xs[0]} with the inverse of {xs[1]}"
    else:
        desc = f"the bitwise {word} of {_list(xs)}"
    ports = [Port("input", x, w) for x in xs] + [Port("output", y, w)]
    return Design("bitwise", w, f"{op}{k}", ports, [
        f"{y} is {desc} ({_bits(w)}).",
        f"Drive {y} with {desc}.\nAll signals are {w} bits wide.",
        f"{_a(w)} {_bits(w)} bitwise {word} block: {y} = {expr}.",
    ], [f"assign {y} = {expr};"])


def fam_not(rng: random.Random, N: dict[str, str]) -> Design:
    w = rng.randint(1, 16)
    a, y, s = N["a"], N["y"], N["s"]
    if rng.random() < 0.4:  # conditional inverter
        ports = [Port("input", a, w), Port("input", s), Port("output", y, w)]
        return Design("not", w, "cond", ports, [
            f"{y} is {a} inverted when {s} is 1, and {a} unchanged when {s} is 0 ({_bits(w)}).",
            f"{_a(w)} {_bits(w)} controllable inverter: {y} = {s} ? ~{a} : {a}.",
            f"Pass {a} to {y}, complementing every bit while {s} is high.\nData width is {w}.",
        ], [f"assign {y} = {s} ? ~{a} : {a};"])
    ports = [Port("input", a, w), Port("output", y, w)]
    return Design("not", w, "plain", ports, [
        f"{y} is the bitwise inverse of {a} ({_bits(w)}).",
        f"{_a(w)} {_bits(w)} inverter: every bit of {y} is the complement of the same bit of {a}.",
        f"Drive {y} with NOT {a}, bit by bit.\nWidth is {w}.",
    ], [f"assign {y} = ~{a};"])


def fam_mux2(rng: random.Random, N: dict[str, str]) -> Design:
    w = rng.randint(1, 16)
    a, b, y, s = N["a"], N["b"], N["y"], N["s"]
    p0, p1 = (a, b) if rng.random() < 0.7 else (b, a)
    ports = [Port("input", a, w), Port("input", b, w), Port("input", s), Port("output", y, w)]
    return Design("mux2", w, "ab" if p0 == a else "ba", ports, [
        f"{_a(w)} {_bits(w)} 2-to-1 multiplexer: {y} = {p1} when {s} is 1, else {p0}.",
        f"When {s} is 0, {y} follows {p0}; when {s} is 1, {y} follows {p1}.\nData is {w} bits wide.",
        f"Select between {a} and {b} ({w} bits each) with {s}: {s}=1 chooses {p1}, {s}=0 chooses {p0}.",
    ], [f"assign {y} = {s} ? {p1} : {p0};"])


def fam_mux4(rng: random.Random, N: dict[str, str]) -> Design:
    w = rng.randint(1, 16)
    xs = [N["a"], N["b"], N["c"], N["d"]]
    order = xs if rng.random() < 0.7 else xs[::-1]
    y, s = N["y"], N["s"]
    ports = [Port("input", x, w) for x in xs] + [Port("input", s, 2), Port("output", y, w)]
    x0, x1, x2, x3 = order
    expr = f"{s}[1] ? ({s}[0] ? {x3} : {x2}) : ({s}[0] ? {x1} : {x0})"
    return Design("mux4", w, "fwd" if order == xs else "rev", ports, [
        (f"{_a(w)} {_bits(w)} 4-to-1 multiplexer: {s}=0 selects {x0}, 1 selects {x1}, 2 selects {x2}, "
         f"3 selects {x3}."),
        (f"Route one of {x0}, {x1}, {x2}, {x3} (in that order, indexed by the 2-bit select {s}) to {y}.\n"
        f"Data width is {w}."),
        f"{y} = {x0} if {s} is 0, {x1} if 1, {x2} if 2, {x3} if 3 (all {w} bits).",
    ], [f"assign {y} = {expr};"])


def fam_adder(rng: random.Random, N: dict[str, str]) -> Design:
    w = rng.randint(1, 16)
    a, b, y, ci, co = N["a"], N["b"], N["y"], N["ci"], N["co"]
    cin, cout = rng.random() < 0.5, rng.random() < 0.5
    ports = [Port("input", a, w), Port("input", b, w)] + ([Port("input", ci)] if cin else [])
    ports += [Port("output", y, w)] + ([Port("output", co)] if cout else [])
    expr = f"{a} + {b}" + (f" + {ci}" if cin else "")
    lhs = f"{{{co}, {y}}}" if cout else y
    plus_ci = f" plus the carry-in {ci}" if cin else ""
    carry = f" and the carry out on {co}" if cout else ""
    return Design("adder", w, f"ci{int(cin)}co{int(cout)}", ports, [
        f"{_a(w)} {_bits(w)} adder: {y} = {expr}" + (f", with carry out {co}." if cout else "."),
        f"Add {a} and {b}{plus_ci}.\nPut the low {w} bits of the sum on {y}{carry}.",
        f"{_bits(w)} binary addition of {a} and {b}{plus_ci}: {y} holds the sum{carry}.",
    ], [f"assign {lhs} = {expr};"])


def fam_subtractor(rng: random.Random, N: dict[str, str]) -> Design:
    w = rng.randint(1, 16)
    a, b, y, bi, bo = N["a"], N["b"], N["y"], N["bi"], N["bo"]
    bin_, bout = rng.random() < 0.4, rng.random() < 0.5
    ports = [Port("input", a, w), Port("input", b, w)] + ([Port("input", bi)] if bin_ else [])
    ports += [Port("output", y, w)] + ([Port("output", bo)] if bout else [])
    minus_bi = f" - {bi}" if bin_ else ""
    if bout:
        body = f"assign {{{bo}, {y}}} = {{1'b0, {a}}} - {{1'b0, {b}}}{minus_bi};"
    else:
        body = f"assign {y} = {a} - {b}{minus_bi};"
    bi_txt = f" minus the borrow-in {bi}" if bin_ else ""
    bo_txt = f"; {bo} is 1 when the subtraction borrows (the true result is negative)" if bout else ""
    return Design("subtractor", w, f"bi{int(bin_)}bo{int(bout)}", ports, [
        f"{_a(w)} {_bits(w)} subtractor: {y} = {a} - {b}{minus_bi} (modulo 2^{w}){bo_txt}.",
        f"Subtract {b} from {a}{bi_txt}, keeping the low {w} bits in {y}{bo_txt}.",
        f"{y} is the {_bits(w)} difference {a} minus {b}{bi_txt}{bo_txt}.",
    ], [body], after_drive=[f"if (({R} & 3) == 0) tb_in_{b} = tb_in_{a};"])


_CMP = {"==": "equals", "!=": "differs from", "<": "is less than", "<=": "is less than or equal to",
        ">": "is greater than", ">=": "is greater than or equal to"}


def fam_comparator(rng: random.Random, N: dict[str, str]) -> Design:
    w = rng.randint(1, 16)
    a, b, y = N["a"], N["b"], N["y"]
    signed = w >= 2 and rng.random() < 0.3
    sa, sb = (f"$signed({a})", f"$signed({b})") if signed else (a, b)
    kind = "signed two's-complement" if signed else "unsigned"
    eq = [f"if (({R} & 3) == 0) tb_in_{b} = tb_in_{a};"]
    if rng.random() < 0.25:  # three-output magnitude comparator
        ports = [Port("input", a, w), Port("input", b, w), Port("output", "eq"), Port("output", "lt"),
                 Port("output", "gt")]
        return Design("comparator", w, f"triple{'_s' if signed else ''}", ports, [
            (f"Compare {kind} {_bits(w)} numbers {a} and {b}: eq = ({a} == {b}), lt = ({a} < {b}), "
            f"gt = ({a} > {b})."),
            (f"{_a(w)} {_bits(w)} {kind} magnitude comparator.\nExactly one of eq, lt, gt is 1: "
            f"{a} equal to, less than, or greater than {b}."),
        ], [f"assign eq = {a} == {b};", f"assign lt = {sa} < {sb};", f"assign gt = {sa} > {sb};"],
            after_drive=eq)
    op = rng.choice(list(_CMP))
    if op in ("==", "!="):
        signed, sa, sb, kind = False, a, b, "unsigned"
    ports = [Port("input", a, w), Port("input", b, w), Port("output", y)]
    return Design("comparator", w, f"{op}{'_s' if signed else ''}", ports, [
        f"{y} is 1 when {a} {_CMP[op]} {b}, else 0 ({kind} {_bits(w)} numbers).",
        f"{_a(w)} {_bits(w)} {kind} comparator: {y} = ({a} {op} {b}).",
        f"Compare {a} and {b} as {kind} {w}-bit values.\nSet {y} when {a} {_CMP[op]} {b}.",
    ], [f"assign {y} = {sa} {op} {sb};"], after_drive=eq)


_REDUCE = {"and": ("&", "every bit of {a} is 1"), "or": ("|", "any bit of {a} is 1"),
           "xor": ("^", "{a} has an odd number of 1 bits"), "nand": ("~&", "at least one bit of {a} is 0"),
           "nor": ("~|", "all bits of {a} are 0"), "xnor": ("~^", "{a} has an even number of 1 bits")}
_DENSE = f"((({R} & 3) == 0) ? ~0 : (({R} & 3) == 0) ? 0 : {R})"  # hit all-ones / all-zeros often


def fam_reduction(rng: random.Random, N: dict[str, str]) -> Design:
    w = rng.randint(2, 16)
    a, y = N["a"], N["y"]
    op = rng.choice(list(_REDUCE))
    sym, cond = _REDUCE[op]
    cond = cond.format(a=a)
    ports = [Port("input", a, w), Port("output", y)]
    return Design("reduction", w, op, ports, [
        f"{y} is the {op.upper()} of all {w} bits of {a}.",
        f"Reduce the {_bits(w)} input {a} with {op.upper()}: {y} = {sym}{a}.",
        f"{y} = 1 when {cond}, else 0 ({a} has {w} bits).",
    ], [f"assign {y} = {sym}{a};"], stim={a: _DENSE})


def fam_parity(rng: random.Random, N: dict[str, str]) -> Design:
    w = rng.randint(2, 16)
    a, b, y = N["a"], N["b"], N["y"]
    kind = rng.choice(["even", "odd", "check"])
    if kind == "check":
        ports = [Port("input", a, w), Port("input", b), Port("output", y)]
        return Design("parity", w, kind, ports, [
            (f"{b} is an even-parity bit for the {_bits(w)} word {a}.\n{y} is 1 when the parity is wrong "
            f"(the total number of 1s in {a} and {b} is odd)."),
            f"Even-parity checker: {y} flags an error when {a} ({w} bits) and {b} hold an odd number of 1s.",
        ], [f"assign {y} = ^{{{a}, {b}}};"])
    ports = [Port("input", a, w), Port("output", y)]
    total = kind
    return Design("parity", w, kind, ports, [
        f"{y} is the {kind}-parity bit for {a}: it makes the total number of 1s in {a} and {y} {total}.",
        f"An {kind}-parity generator for a {_bits(w)} word {a}; output the parity bit on {y}.",
        f"Compute {y} so that {a} ({w} bits) together with {y} has an {total} number of 1 bits.",
    ], [f"assign {y} = {'^' if kind == 'even' else '~^'}{a};"])


def fam_decoder(rng: random.Random, N: dict[str, str]) -> Design:
    n = rng.choice([1, 2, 2, 3, 3, 4])
    m = 1 << n
    a, y, en = N["a"], N["y"], N["en"]
    has_en, low = rng.random() < 0.4, rng.random() < 0.25
    ports = [Port("input", a, n)] + ([Port("input", en)] if has_en else []) + [Port("output", y, m)]
    core = f"{m}'d1 << {a}"
    if has_en:
        core = f"{en} ? {core} : {m}'d0"
    expr = f"~({core})" if low else core
    extra = ""
    if has_en:
        extra += f"\nWhen {en} is 0, all outputs are {'1 (inactive)' if low else '0'}."
    if low:
        extra += "\nOutputs are active low: the selected bit is 0 and the others are 1."
    sel = "0" if low else "1"
    return Design("decoder", n, f"{n}to{m}{'_en' if has_en else ''}{'_low' if low else ''}", ports, [
        f"A {n}-to-{m} decoder: bit {a} of {y} is {sel}.{extra}",
        (f"Decode the {n}-bit input {a} into the {m}-bit output {y}: {y}[k] is {sel} exactly when {a} == k."
        f"{extra}"),
        f"{n}:{m} binary decoder driving {y} from {a}.{extra}",
    ], [f"assign {y} = {expr};"])


def fam_encoder(rng: random.Random, N: dict[str, str]) -> Design:
    n = rng.randint(2, 16)
    m = max(1, (n - 1).bit_length())
    a, y, v = N["a"], N["y"], N["v"]
    kind = rng.choice(["onehot", "high", "low"])
    valid = kind != "onehot" and rng.random() < 0.5
    ports = [Port("input", a, n), Port("output", y, m, reg=True)] + ([Port("output", v)] if valid else [])
    loop = (f"for (idx = 0; idx < {n}; idx = idx + 1)" if kind != "low"
            else f"for (idx = {n - 1}; idx >= 0; idx = idx - 1)")
    body = ["integer idx;", "always @* begin", f"  {y} = 0;", f"  {loop} if ({a}[idx]) {y} = idx;", "end"]
    if valid:
        body.append(f"assign {v} = |{a};")
    v_txt = f"\n{v} is 1 when any bit of {a} is set." if valid else ""
    if kind == "onehot":
        stim = f"(1 << ($unsigned({R}) % {n}))"
        phr = [f"{_a(n)} {n}-to-{m} encoder: {a} is one-hot; {y} is the index of its set bit.",
               (f"Binary encoder: exactly one bit of the {_bits(n)} input {a} is 1; output its position on "
                f"{y}."),
               f"Encode the one-hot {_bits(n)} input {a} as a {_bits(m)} index {y}."]
    else:
        which = "highest" if kind == "high" else "lowest"
        stim = f"(({R} & 1) ? ({R} >> ($unsigned({R}) % 32)) : (1 << ($unsigned({R}) % {n})))"
        phr = [(f"{_a(n)} {_bits(n)} priority encoder: {y} is the index of the {which} set bit of {a} "
               f"(0 when {a} is 0).{v_txt}"),
               (f"Find the {which} bit of {a} ({n} bits) that is 1 and output its index on {y}; "
               f"{y} is 0 if no bit is set.{v_txt}"),
               (f"Priority encoder, {which} index wins: {y} = position of the {which} 1 in {a}, "
               f"or 0.{v_txt}")]
    return Design("encoder", n, f"{kind}{'_v' if valid else ''}", ports, phr, body, stim={a: stim})


# --------------------------------------------------------------------------- sequential families

def _always(clk: str, rst: dict | None) -> str:
    return f"always @(posedge {clk}{rst['edge'] if rst else ''})"


def fam_counter(rng: random.Random, N: dict[str, str]) -> Design:
    w = rng.randint(2, 16)
    clk, q, en, up = N["clk"], N["q"], N["en"], N["up"]
    rst = _reset(rng, N)
    direction = rng.choice(["up", "up", "down", "updown"])
    modulo = direction == "up" and w <= 5 and rng.random() < 0.4
    mod = rng.randint(3, (1 << w) - 1) if modulo else 0
    has_en = rng.random() < 0.6
    ports = _seq_ports(N, rst) + ([Port("input", en)] if has_en else [])
    ports += ([Port("input", up)] if direction == "updown" else []) + [Port("output", q, w, reg=True)]
    step = {"up": f"{q} + 1", "down": f"{q} - 1", "updown": f"{up} ? {q} + 1 : {q} - 1"}[direction]
    if modulo:
        step = f"({q} == {w}'d{mod - 1}) ? {w}'d0 : {q} + 1"
    body = [_always(clk, rst), f"  if ({rst['cond']}) {q} <= 0;", (f"  else{f' if ({en})' if has_en else ''} "
            f"{q} <= {step};")]
    what = {"up": "counts up by 1", "down": "counts down by 1",
            "updown": f"counts up by 1 when {up} is 1 and down by 1 when {up} is 0"}[direction]
    if modulo:
        what = f"counts 0, 1, ..., {mod - 1} and then wraps to 0"
    en_txt = f" while {en} is 1 (it holds when {en} is 0)" if has_en else ""
    rst_txt = f"{rst['name']} is {rst['kind']} reset that sets {q} to 0."
    d = Design("counter", w, f"{direction}{mod or ''}{'_en' if has_en else ''}_{rst['style']}", ports, [
        f"{_a(w)} {_bits(w)} counter {q} that {what} on each rising edge of {clk}{en_txt}.\n{rst_txt}",
        f"On every posedge of {clk}, {q} ({w} bits) {what}{en_txt}.\n{rst_txt}",
        (f"{_bits(w)} {direction if direction != 'updown' else 'up/down'} counter.\n"
        f"{q} {what}{en_txt}; {rst_txt}"),
    ], body, sequential=True)
    _reset_stim(d, rst)
    if has_en:
        d.stim[en] = f"(({R} & 3) != 0)"
    return d


def fam_shift(rng: random.Random, N: dict[str, str]) -> Design:
    w = rng.randint(2, 16)
    clk, q, en, din = N["clk"], N["q"], N["en"], N["din"]
    rst = _reset(rng, N, optional=True)
    left = rng.random() < 0.5
    has_en = rng.random() < 0.4
    ports = _seq_ports(N, rst) + ([Port("input", en)] if has_en else [])
    ports += [Port("input", din), Port("output", q, w, reg=True)]
    nxt = f"{{{q}[{w - 2}:0], {din}}}" if left else f"{{{din}, {q}[{w - 1}:1]}}"
    cond = f"if ({en}) " if has_en else ""
    body = [_always(clk, rst)]
    if rst:
        body += [f"  if ({rst['cond']}) {q} <= 0;", f"  else {cond}{q} <= {nxt};"]
    else:
        body[0] += f" {cond}{q} <= {nxt};"
    how = (f"shifts left by one and {din} enters at bit 0" if left
           else f"shifts right by one and {din} enters at bit {w - 1}")
    en_txt = f" when {en} is 1 (it holds otherwise)" if has_en else ""
    rst_txt = f"\n{rst['name']} is {rst['kind']} reset that clears {q}." if rst else ""
    d = Design("shift", w, f"{'left' if left else 'right'}{'_en' if has_en else ''}_"
               f"{rst['style'] if rst else 'nores'}", ports, [
        f"{_a(w)} {_bits(w)} shift register: on each rising edge of {clk}, {q} {how}{en_txt}.{rst_txt}",
        (f"Serial-in, parallel-out {'left' if left else 'right'} shift register of {w} bits: "
        f"{q} <= {nxt}{en_txt}.{rst_txt}"),
        f"At every posedge of {clk}, {q} ({w} bits) {how}{en_txt}.{rst_txt}",
    ], body, sequential=True, warm_cycles=3 if rst else w + 1)
    _reset_stim(d, rst)
    if has_en:
        d.stim[en] = f"(({R} & 3) != 0)"
        d.warm[en] = "1'b1"
    return d


def fam_register(rng: random.Random, N: dict[str, str]) -> Design:
    w = rng.randint(1, 16)
    clk, q, en, din = N["clk"], N["q"], N["en"], N["din"]
    rst = _reset(rng, N, optional=True)
    init = rng.randrange(1 << w) if rst and rng.random() < 0.3 else 0
    ports = _seq_ports(N, rst) + [Port("input", en), Port("input", din, w), Port("output", q, w, reg=True)]
    body = [_always(clk, rst)]
    if rst:
        body += [f"  if ({rst['cond']}) {q} <= {w}'d{init};", f"  else if ({en}) {q} <= {din};"]
    else:
        body[0] += f" if ({en}) {q} <= {din};"
    rst_txt = f"\n{rst['name']} is {rst['kind']} reset that sets {q} to {init}." if rst else ""
    d = Design("register", w, f"{rst['style'] if rst else 'nores'}{'_init' if init else ''}", ports, [
        (f"{_a(w)} {_bits(w)} register: {q} loads {din} on the rising edge of {clk} when {en} is 1 and holds "
        f"its value otherwise.{rst_txt}"),
        f"{_bits(w)} D flip-flops with enable: at posedge {clk}, if {en} then {q} <= {din}.{rst_txt}",
        f"Store {din} ({w} bits) into {q} at each rising {clk} edge where {en} is high.{rst_txt}",
    ], body, sequential=True, stim={en: f"(({R} & 3) != 0)"}, warm={en: "1'b1"})
    _reset_stim(d, rst)
    return d


def fam_fsm(rng: random.Random, N: dict[str, str]) -> Design:
    clk, din, z, q, en = N["clk"], N["din"], N["z"], N["q"], N["en"]
    rst = _reset(rng, N)
    rst_txt = f"{rst['name']} is {rst['kind']} reset"
    if rng.random() < 0.2:  # toggle flip-flop
        ports = _seq_ports(N, rst) + [Port("input", en), Port("output", q, reg=True)]
        body = [_always(clk, rst), f"  if ({rst['cond']}) {q} <= 0;", f"  else if ({en}) {q} <= ~{q};"]
        d = Design("fsm", 1, f"tff_{rst['style']}", ports, [
            (f"A toggle flip-flop: {q} inverts on each rising edge of {clk} when {en} is 1.\n"
            f"{rst_txt} that sets {q} to 0."),
            f"T flip-flop with toggle input {en}: at posedge {clk}, {q} <= {q} ^ {en}.\n{rst_txt} to 0.",
        ], body, sequential=True)
        _reset_stim(d, rst)
        return d
    k = rng.randint(2, 4)
    pattern = "1" + "".join(rng.choice("01") for _ in range(k - 1))
    seq = ", ".join(pattern)
    mealy = rng.random() < 0.4
    ports = _seq_ports(N, rst) + [Port("input", din), Port("output", z)]
    if mealy:
        h = k - 1
        decl = "reg hist;" if h == 1 else f"reg [{h - 1}:0] hist;"
        nxt = din if h == 1 else f"{{hist[{h - 2}:0], {din}}}"
        match = f"assign {z} = ({{hist, {din}}} == {k}'b{pattern});"
        when = (f"{z} is 1 while {din} carries the last bit of the sequence "
                f"(Mealy output, combinational from {din})")
    else:
        decl = f"reg [{k - 1}:0] hist;"
        nxt = f"{{hist[{k - 2}:0], {din}}}"
        match = f"assign {z} = (hist == {k}'b{pattern});"
        when = f"{z} is 1 in the cycle after the last bit of the sequence was sampled (Moore output)"
    body = [decl, _always(clk, rst), f"  if ({rst['cond']}) hist <= 0;", f"  else hist <= {nxt};", match]
    d = Design("fsm", k, f"seq{pattern}_{'mealy' if mealy else 'moore'}_{rst['style']}", ports, [
        (f"Detect the bit sequence {seq} (first bit first) on {din}, sampled at each rising edge of {clk}; "
        f"overlaps count.\n{when}.\n{rst_txt} that forgets all bits seen so far."),
        (f"Sequence detector for {pattern} on serial input {din}.\n{when}.\n"
        f"{rst_txt}; bits before it do not count."),
    ], body, sequential=True)
    _reset_stim(d, rst)
    return d


def fam_edge(rng: random.Random, N: dict[str, str]) -> Design:
    w = rng.randint(1, 8)
    clk, din, z = N["clk"], N["din"], N["z"]
    kind = rng.choice(["rise", "fall", "any"])
    registered = rng.random() < 0.5
    expr = {"rise": f"{din} & ~prev", "fall": f"~{din} & prev", "any": f"{din} ^ prev"}[kind]
    what = {"rise": "0-to-1", "fall": "1-to-0", "any": "any"}[kind]
    ports = [Port("input", clk, clock=True), Port("input", din, w), Port("output", z, w, reg=registered)]
    decl = "reg prev;" if w == 1 else f"reg [{w - 1}:0] prev;"
    if registered:
        body = [decl, f"always @(posedge {clk}) begin", "  prev <= " + din + ";", f"  {z} <= {expr};", "end"]
        when = (f"{z} is registered: each bit of {z} is 1 for one cycle after the rising edge of {clk} "
                f"that saw a {what} change of the same bit of {din}")
    else:
        body = [decl, f"always @(posedge {clk}) prev <= {din};", f"assign {z} = {expr};"]
        when = (f"{z} is combinational: each bit is 1 while that bit of {din} differs from its value at the "
                f"last rising edge of {clk} by a {what} change")
    return Design("edge", w, f"{kind}_{'reg' if registered else 'comb'}", ports, [
        f"{_a(w)} {_bits(w)} {what} edge detector on {din}.\n{when}.",
        f"Detect {what} transitions of each bit of {din} ({w} bits) sampled on {clk}.\n{when}.",
    ], body, sequential=True)


FAMILIES: dict[str, Callable[[random.Random, dict[str, str]], Design]] = {
    "bitwise": fam_bitwise, "not": fam_not, "mux2": fam_mux2, "mux4": fam_mux4, "adder": fam_adder,
    "subtractor": fam_subtractor, "comparator": fam_comparator, "reduction": fam_reduction,
    "parity": fam_parity, "decoder": fam_decoder, "encoder": fam_encoder, "counter": fam_counter,
    "shift": fam_shift, "register": fam_register, "fsm": fam_fsm, "edge": fam_edge,
}
# Named family mixes. "basic" is the ten-family set the tiny default was first measured on
# (docs/experiments.md); "all" adds subtractor, parity, mux4, encoder, fsm and edge.
PRESETS: dict[str, list[str]] = {
    "all": list(FAMILIES),
    "basic": ["bitwise", "not", "mux2", "adder", "comparator", "reduction", "decoder", "counter", "shift",
              "register"],
    "combinational": [f for f in FAMILIES if f not in ("counter", "shift", "register", "fsm", "edge")],
    "sequential": ["counter", "shift", "register", "fsm", "edge"],
}


def resolve_families(families: str | list[str] | None) -> list[str]:
    """A preset name, a comma-separated string or a list -> family names; unknown names raise."""
    if families is None:
        return list(FAMILIES)
    if isinstance(families, str):
        families = PRESETS.get(families) or [f.strip() for f in families.split(",") if f.strip()]
    fams = list(families)
    unknown = sorted(set(fams) - set(FAMILIES))
    if unknown or not fams:
        raise ValueError(f"unknown task families {unknown or fams}; known: {sorted(FAMILIES)}, "
                         f"presets: {sorted(PRESETS)}")
    return fams


# --------------------------------------------------------------------------- rendering

def spec_text(design: Design, phrasing: int) -> str:
    """The prompt: spec sentences as `//` comments, then the port list the module must have."""
    lines = [f"// {s}" for s in design.phrasings[phrasing].split("\n")]
    lines.append("// Ports: " + ", ".join(p.decl() for p in design.ports))
    return "\n".join(lines) + "\n"


DUT_PREFIX = "tb_dut_"      # the bench's per-candidate names (rewards.verilog.group); ports never start "_"


def testbench(design: Design, seed: int, samples: int = SAMPLES) -> str:
    """VerilogEval-style bench: same random stimulus into RefModule and TopModule, count mismatches.
    Its per-candidate lines are marked (rewards.verilog.group), so one bench can drive a GRPO group."""
    ins = [p for p in design.ports if p.direction == "input" and not p.clock]
    outs = [p for p in design.ports if p.direction == "output"]

    dut, match, bad, errors = DUT_PREFIX, f"{DUT_PREFIX}_match", f"{DUT_PREFIX}_bad", f"{DUT_PREFIX}_errors"

    def conns(side: str) -> str:
        parts = []
        for p in design.ports:
            if p.clock:
                sig = "tb_clk"
            else:
                sig = f"tb_in_{p.name}" if p.direction == "input" else f"{side}{p.name}"
            parts.append(f".{p.name}({sig})")
        return ", ".join(parts)

    ref = "{" + ", ".join(f"tb_ref_{p.name}" for p in outs) + "}"
    got = "{" + ", ".join(f"{dut}{p.name}" for p in outs) + "}"
    L = [group_header(DUT_PREFIX), "`timescale 1 ps/1 ps", "module tb;"]
    L += [f"  reg {p.range}tb_in_{p.name};" for p in ins]
    L += [f"  wire {p.range}tb_ref_{p.name};" for p in outs]
    L += [f"  wire {p.range}{dut}{p.name};  {PER_DUT}" for p in outs]
    L += [f"  integer tb_seed = {seed}, tb_samples = 0, tb_k;", "  reg tb_clk = 0;",
          f"  integer {errors} = 0;  {PER_DUT}", f"  reg {bad};  {PER_DUT}"]
    L += [f"  RefModule tb_ref_inst ({conns('tb_ref_')});", f"  TopModule {dut}_inst ({conns(dut)});  {PER_DUT}"]
    # An X in the reference matches anything; an X in the candidate only matches an X.
    L += [f"  wire {match} = ({ref} === ({ref} ^ {got} ^ {ref}));  {PER_DUT}"]
    L += ["  task tb_drive; begin"]
    L += [f"    tb_in_{p.name} = {design.stim.get(p.name, R)};" for p in ins]
    L += [f"    {s}" for s in design.after_drive] + ["  end endtask"]
    if design.sequential:
        L += ["  task tb_warm; begin", "    tb_drive;"]
        L += [f"    tb_in_{n} = {v};" for n, v in design.warm.items()] + ["  end endtask"]
        L += ["  always #5 tb_clk = ~tb_clk;", "  initial begin", "    tb_warm;",
              f"    repeat ({design.warm_cycles}) @(negedge tb_clk) tb_warm;",
              f"    for (tb_k = 0; tb_k < {samples}; tb_k = tb_k + 1) begin",
              "      @(negedge tb_clk);", f"      {bad} = !{match};  {PER_DUT}",
              "      tb_drive;", "      #1;", f"      if (!{match}) {bad} = 1;  {PER_DUT}"]
    else:
        L += ["  initial begin", f"    for (tb_k = 0; tb_k < {samples}; tb_k = tb_k + 1) begin",
              "      tb_drive;", "      #1;", f"      {bad} = !{match};  {PER_DUT}"]
    L += ["      tb_samples = tb_samples + 1;", f"      if ({bad}) {errors} = {errors} + 1;  {PER_DUT}", "    end",
          f'    $display("Mismatches: %0d in %0d samples", {errors}, tb_samples);  {PER_DUT}', "    $finish;",
          "  end", "  initial begin", "    #1000000;", f'    $display("TIMEOUT");  {PER_DUT}', "    $finish;",
          "  end", "endmodule"]
    return "\n".join(L) + "\n"


def split_of(prompt: str) -> str:
    """Which split a prompt text belongs to (hash buckets: the same text never lands in both)."""
    bucket = int(hashlib.sha256(prompt.encode()).hexdigest()[:8], 16) % 100
    return "heldout" if bucket < HELDOUT_PERCENT else "train"


def solution(problem: Problem) -> str:
    """The canonical completion for SFT (rewards.verilog.problems.reference_solution)."""
    return reference_solution(problem)


def _check_names(design: Design) -> None:
    names = [p.name for p in design.ports]
    if len(set(names)) != len(names) or any(n.startswith(("tb_", "_")) for n in names):
        raise AssertionError(f"rtlgen bug: port names clash in {design.family}/{design.variant}: {names}")


def generate(n: int, seed: int = 0, split: str = "train", holdout: str = "prompt",
             families: str | list[str] | None = None, phrasings: list[int] | None = None,
             reference_only: bool = False) -> list[Problem]:
    """``n`` distinct tasks for ``split``; deterministic in (n, seed, split, holdout, families, phrasings).

    families: None (all), a preset name from PRESETS, a comma-separated string or a list.

    holdout="prompt": the split is a hash of the prompt text (disjoint by text, same distribution).
    holdout="names": held-out tasks alone use the last port-name set, so names are never seen in training.
    phrasings: which spec wordings to draw (indices into each family's phrasings; None = all). E.g. an SFT
    set with reference solutions for wordings [0, 1] while RL prompts (verified by testbenches alone) use
    them all: the situation where tests are cheaper to come by than written solutions.
    reference_only: drop the generator's own bench (the same tasks otherwise): problems shaped like the
    public RL datasets' (spec + reference design), judged by the bench earl generates from the reference.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if holdout not in HOLDOUT_MODES:
        raise ValueError(f"holdout must be one of {HOLDOUT_MODES}, got {holdout!r}")
    if not isinstance(n, int) or n < 0:
        raise ValueError(f"n (number of tasks) must be a non-negative integer, got {n!r}")
    if not isinstance(seed, int):
        raise ValueError(f"seed must be an integer, got {seed!r}")  # noqa: TRY004 - a config error
    if not isinstance(reference_only, bool):
        raise ValueError(f"reference_only must be true or false, got {reference_only!r}")  # noqa: TRY004
    fams = resolve_families(families)
    allowed = index_set(phrasings, "phrasings", "phrasing")
    if holdout == "names":
        name_ids = [HELDOUT_NAMES] if split == "heldout" else list(range(HELDOUT_NAMES))
    else:
        name_ids = list(range(len(NAME_SETS)))
    rng = random.Random(f"rtlgen:{seed}:{split}:{holdout}")
    out: list[Problem] = []
    seen: set[str] = set()
    misses = dict.fromkeys(fams, 0)     # consecutive duplicate draws; a family is spent after MAX_MISSES
    order: list[str] = []
    while len(out) < n:
        live = [f for f in fams if misses[f] < MAX_MISSES]
        if not live:
            raise ValueError(f"only {len(out)} distinct {split} tasks exist for families {fams}; "
                             f"asked for {n}")
        if not order:  # balanced: every family once per round, in a shuffled order
            order = rng.sample(live, len(live))
        fam = order.pop()
        if misses[fam] >= MAX_MISSES:
            continue
        names = rng.choice(name_ids)
        design = FAMILIES[fam](rng, NAME_SETS[names])
        choices = [i for i in range(len(design.phrasings)) if allowed is None or i in allowed]
        if not choices:           # this variant has fewer wordings; another draw of the family may have it
            misses[fam] += 1
            if misses[fam] >= MAX_MISSES and not any(p.meta["family"] == fam for p in out):
                raise ValueError(f"phrasings {sorted(allowed or ())}: no variant of family {fam!r} has them "
                                 f"(it has {len(design.phrasings)} phrasings, indices 0-{len(design.phrasings) - 1})")
            order.append(fam)
            continue
        phrasing = rng.choice(choices)
        prompt = spec_text(design, phrasing)
        if prompt in seen or (holdout == "prompt" and split_of(prompt) != split):
            misses[fam] += 1
            order.append(fam)  # retry the same family so the mix stays balanced
            continue
        misses[fam] = 0
        seen.add(prompt)
        _check_names(design)
        out.append(_problem(design, prompt, f"rtlgen-{split}-{seed}-{len(out):05d}-{fam}",
                            rng.randrange(1, 2**31 - 1), split, names, phrasing, reference_only))
    return out


def _problem(design: Design, prompt: str, pid: str, tb_seed: int, split: str, names: int,
             phrasing: int, reference_only: bool = False) -> Problem:
    return Problem(
        id=pid, spec=prompt, prompt=prompt, testbench=None if reference_only else testbench(design, tb_seed),
        top_module="TopModule", reference=design.module("RefModule"), ref_module="RefModule",
        harness="verilogeval",
        meta={"family": design.family, "variant": design.variant, "width": design.width,
              "sequential": design.sequential, "split": split, "names": names, "phrasing": phrasing,
              "solution": design.module("TopModule"), "source": "rtlgen"},
    )
