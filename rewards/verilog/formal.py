"""Formal equivalence of a candidate module against the reference, with Yosys' SAT solver.

Why: random-stimulus testbenches pass wrong designs (a `>` comparator passed a `>=` bench). A miter
of reference (gold) and candidate (gate) proves equality for every input, or yields a counterexample.

- Combinational designs: one SAT proof over all inputs.
- Sequential designs: temporal induction from an unknown (X) state with the reset asserted in cycle 1
  (free afterwards, so reset bugs show up). Base cases grow one cycle at a time up to `seq_depth`, so
  a counterexample is the shortest; if an induction step closes, the proof is complete, otherwise the
  verdict is "equivalent up to N cycles".
- X in a reference output is a don't-care, as in VerilogEval's benches; X in the candidate's is not.
- If SAT times out, yosys' name-matching equiv_simple/equiv_induct may still prove a near-copy.
- Anything the check cannot decide (timeout, memory, unsupported construct, port mismatch, latch,
  several clocks, combinational loop, size budget) is `unknown` with a reason; it never raises,
  except `ToolNotFound` when yosys is missing (checked when the checker is built: a missing yosys is a
  setup error, not a stream of "unknown" verdicts).

Yosys runs inside the project sandbox with its own limits; results are cached by content hash.
See docs/formal.md.
"""
from __future__ import annotations

import hashlib
import json
import logging
import re
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from rewards.verilog.cache import EquivalenceCache
from rewards.verilog.extract import module_names, normalize
from sandboxes.limits import Backend
from sandboxes.tools import ToolNotFound

log = logging.getLogger(__name__)

EQUIVALENT, NOT_EQUIVALENT, UNKNOWN = "equivalent", "not_equivalent", "unknown"

# Port names taken for a reset (VerilogEval, RTLLM and rtlgen's name sets), and which are active low.
_RESET_RE = re.compile(r"^([as]?(rst|reset)|arst|clr|clear|ar|rs|r|zap)(_i)?$", re.IGNORECASE)
_RESET_LOW_RE = re.compile(r"^(([as]?(rst|reset)|arst|clr|clear|ar|rs|r|zap)_?n(i|_i)?|n_?[as]?(rst|reset))$",
                           re.IGNORECASE)
_FF_TYPES = {"$dff", "$dffe", "$adff", "$adffe", "$sdff", "$sdffe", "$sdffce", "$dffsr", "$dffsre",
             "$aldff", "$aldffe", "$ff"}
_LATCH_TYPES = {"$dlatch", "$adlatch", "$dlatchsr", "$sr"}


@dataclass
class FormalConfig:
    """Limits and depth of one equivalence check (defaults fit a reward call on a small CPU box)."""
    wall_s: float = 20.0             # per yosys run, whole process tree killed on expiry
    budget_s: float | None = None    # the whole check, all its yosys runs (None: wall_s per run only)
    memory_mb: int = 2048
    seq_depth: int = 20              # cycles of the bounded check from reset
    induction: bool = True           # try k-induction (k <= seq_depth) for a complete proof
    init: str = "undef"              # registers before cycle 1: undef (like a simulator's X) | zero
    max_cells: int = 20_000          # size budget per module after proc/flatten/memory
    max_state_bits: int = 4096       # flip-flop bits per module
    max_io_bits: int = 4096          # port bits per module; also the widest literal range `[N:M]`
    max_source_chars: int = 200_000  # per file, checked before yosys starts
    structural: bool = True          # when SAT times out, try yosys' equiv_simple/equiv_induct (proves
                                     # designs whose registers and nets match by name, e.g. a near copy)
    cache_size: int = 4096
    sandbox_backend: Backend = "auto"


@dataclass
class Counterexample:
    """Inputs that make reference and candidate differ (binary strings, MSB first, `x` = don't care).

    For sequential designs `steps[i]` are the inputs of cycle i+1 and `cycle` is the first cycle whose
    outputs differ (cycle 1 is the reset cycle; outputs are sampled before that cycle's clock edge).
    """
    inputs: dict[str, str]
    expected: dict[str, str]           # reference outputs at the failing cycle
    got: dict[str, str]                # candidate outputs at the failing cycle
    cycle: int | None = None
    steps: list[dict[str, str]] = field(default_factory=list)
    reset: str | None = None           # reset port asserted in cycle 1 (sequential only)


@dataclass
class FormalResult:
    verdict: str                       # equivalent | not_equivalent | unknown
    reason: str = ""
    method: str = ""                   # sat | induction | bmc
    sequential: bool = False
    complete: bool = False             # False: equivalent only up to `depth` cycles
    depth: int | None = None
    counterexample: Counterexample | None = None
    wall_s: float = 0.0
    cached: bool = False

    @property
    def decided(self) -> bool:
        return self.verdict != UNKNOWN

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class FormalError(Exception):
    """Internal: a check that ends as `unknown` with this message."""


# ---------------------------------------------------------------------------------------------
# yosys runner (sandboxed)

@dataclass
class YosysRun:
    log: str
    returncode: int | None
    timed_out: bool = False
    memory_exceeded: bool = False
    verdict: str = "ok"
    wall_s: float = 0.0
    outputs: dict[str, str] = field(default_factory=dict)   # files the script wrote, by name


Runner = Callable[[str, dict[str, str], FormalConfig, tuple[str, ...]], YosysRun]


def sandbox_runner(script: str, files: dict[str, str], cfg: FormalConfig,
                   outputs: tuple[str, ...] = ()) -> YosysRun:
    """Run `yosys -s check.ys` in a fresh sandbox work dir holding `files`; return its log and `outputs`."""
    box, limits = _sandbox(cfg)
    with tempfile.TemporaryDirectory(prefix="earl-formal-") as tmp:
        work = Path(tmp)
        for name, text in {**files, "check.ys": script}.items():
            (work / name).write_text(text, encoding="utf-8")
        yosys = box.program("yosys", YOSYS_NEEDED_FOR)
        res = box.run([yosys, "-q", "-l", "yosys.log", "-s", "check.ys"], work, limits=limits)
        log_path = work / "yosys.log"
        text = log_path.read_text(encoding="utf-8", errors="replace") if log_path.exists() else ""
        got = {n: (work / n).read_text(encoding="utf-8", errors="replace")
               for n in outputs if (work / n).is_file()}
    return YosysRun(log=text + "\n" + res.stdout + "\n" + res.stderr, returncode=res.returncode,
                    timed_out=res.timed_out, memory_exceeded=res.memory_exceeded,
                    verdict=res.verdict, wall_s=res.wall_s, outputs=got)


_SANDBOXES: dict[str, Any] = {}
_SANDBOX_LOCK = threading.Lock()


YOSYS_NEEDED_FOR = "formal equivalence checks (formal: confirm/required)"


def _sandbox(cfg: FormalConfig) -> tuple[Any, Any]:
    """(the shared sandbox of cfg's backend, the limits of one yosys run)."""
    from sandboxes.executor import Sandbox
    from sandboxes.limits import SandboxConfig, SandboxLimits

    limits = SandboxLimits(wall_s=cfg.wall_s, cpu_s=max(1, int(cfg.wall_s) + 1),
                           memory_mb=cfg.memory_mb, max_file_mb=64)
    with _SANDBOX_LOCK:
        if cfg.sandbox_backend not in _SANDBOXES:
            _SANDBOXES[cfg.sandbox_backend] = Sandbox(SandboxConfig(backend=cfg.sandbox_backend, limits=limits))
        return _SANDBOXES[cfg.sandbox_backend], limits


def preflight(cfg: FormalConfig) -> str:
    """yosys' path as the sandbox runs it; ToolNotFound (naming yosys and its install) when missing."""
    return _sandbox(cfg)[0].program("yosys", YOSYS_NEEDED_FOR)


# ---------------------------------------------------------------------------------------------
# scripts

def _prep_script(reference_top: str, candidate_top: str) -> str:
    """Read each file into its own design (no module-name clashes), flatten, rename to gold/gate."""
    def one(path: str, top: str, name: str) -> str:
        return (f"read_verilog -sv {path}\n"
                f"hierarchy -check -top {top}\n"
                "proc\nflatten\nmemory\nopt_clean\n"
                f"rename {top} {name}\n")
    return (one("gold.sv", reference_top, "gold") + "design -stash golddesign\n"
            + one("gate.sv", candidate_top, "gate")
            + "design -copy-from golddesign -as gold gold\n")


def _inspect_script(reference_top: str, candidate_top: str) -> str:
    return _prep_script(reference_top, candidate_top) + "check\nwrite_json iface.json\n"


def _miter_script(reference_top: str, candidate_top: str, sequential: bool) -> str:
    return (_prep_script(reference_top, candidate_top)
            + ("async2sync\n" if sequential else "")
            + "miter -equiv -flatten -make_outputs -ignore_gold_x gold gate miter\n"
            + "hierarchy -top miter\nopt\n")


_SAT_COMMON = "-prove trigger 0 -show-inputs -show-outputs -enable_undef -set-def-inputs"


# ---------------------------------------------------------------------------------------------
# parsing

_ROW_RE = re.compile(r"^\s*(?:(\d+)\s+)?\\(\S+)\s+(\S+)\s+(\S+)\s+([01xz]+)\s*$")


def _parse_model(log_text: str) -> dict[int, dict[str, str]]:
    """The last SAT model table in the log: {step (0 = combinational): {signal: bits}}."""
    start = log_text.rfind("Signal Name")
    if start < 0:
        return {}
    model: dict[int, dict[str, str]] = {}
    for line in log_text[start:].splitlines()[2:]:
        if line.strip().startswith("init"):
            continue
        m = _ROW_RE.match(line)
        if m is None:
            if line.strip() and not line.strip().startswith("----"):
                break
            continue
        step = int(m.group(1)) if m.group(1) else 0
        model.setdefault(step, {})[m.group(2)] = m.group(5)
    return model


def _counterexample(model: dict[int, dict[str, str]], widths: dict[str, int],
                    reset: tuple[str, int] | None, sequential: bool) -> Counterexample:
    def split(row: dict[str, str], prefix: str) -> dict[str, str]:
        return {k[len(prefix):]: _fit(v, widths.get(k[len(prefix):]))
                for k, v in sorted(row.items()) if k.startswith(prefix)}

    steps = sorted(model)
    fail = next((s for s in steps if model[s].get("trigger", "0") != "0"), steps[-1] if steps else 0)
    row = model.get(fail, {})
    if not sequential:
        return Counterexample(inputs=split(row, "in_"), expected=split(row, "gold_"), got=split(row, "gate_"))
    trace = [split(model[s], "in_") for s in steps if s <= fail]
    if reset is not None and trace:       # the wrapper forces the reset in cycle 1, whatever the input
        trace[0][reset[0]] = str(reset[1])
    return Counterexample(inputs=trace[-1] if trace else {}, expected=split(row, "gold_"),
                          got=split(row, "gate_"), cycle=fail, steps=trace, reset=reset[0] if reset else None)


def _fit(bits: str, width: int | None) -> str:
    """Yosys prints minimal-width numbers in some columns; pad the binary to the port width."""
    if width is None or len(bits) >= width:
        return bits
    return bits[0] * (width - len(bits)) if bits[0] in "xz" else bits.zfill(width)


@dataclass
class _Module:
    ports: dict[str, tuple[str, int]]        # name -> (direction, width)
    cells: int
    state_bits: int
    latches: int
    clocks: set[tuple[str, int]]            # (clock port or net, polarity)


def _modules(iface: dict[str, Any]) -> dict[str, _Module]:
    out = {}
    for name, mod in iface.get("modules", {}).items():
        bit_port = {b: p for p, info in mod["ports"].items() for b in info["bits"]}
        state = latches = 0
        clocks: set[tuple[str, int]] = set()
        for cell in mod.get("cells", {}).values():
            ctype = cell["type"]
            if ctype in _FF_TYPES:
                state += int(cell["parameters"].get("WIDTH", "1"), 2) if isinstance(
                    cell["parameters"].get("WIDTH"), str) else int(cell["parameters"].get("WIDTH", 1))
                clk = cell["connections"].get("CLK", [])
                if clk:
                    pol = cell["parameters"].get("CLK_POLARITY", "1")
                    pol = int(pol, 2) if isinstance(pol, str) else int(pol)
                    clocks.add((str(bit_port.get(clk[0], clk[0])), pol))
            elif ctype in _LATCH_TYPES:
                latches += 1
        out[name] = _Module(ports={p: (i["direction"], len(i["bits"])) for p, i in mod["ports"].items()},
                            cells=len(mod.get("cells", {})), state_bits=state, latches=latches, clocks=clocks)
    return out


def _find_reset(ports: dict[str, tuple[str, int]]) -> tuple[str, int] | None:
    """(port, asserted value) for the first 1-bit input named like a reset."""
    for name, (direction, width) in ports.items():
        if direction != "input" or width != 1:
            continue
        if _RESET_LOW_RE.match(name):
            return name, 0
        if _RESET_RE.match(name):
            return name, 1
    return None


_ERROR_RE = re.compile(r"ERROR: (.*)")


def _yosys_error(run: YosysRun) -> str:
    if run.timed_out:
        return "timeout"
    if run.memory_exceeded:
        return "memory limit"
    if run.verdict not in ("ok",) and run.verdict.startswith(("cpu", "signal", "output")):
        return f"yosys ended with {run.verdict}"
    m = _ERROR_RE.search(run.log)
    if m:
        return " ".join(run.log[m.start(1):m.start(1) + 400].split())[:300]
    if run.returncode not in (0, None):
        return f"yosys exited {run.returncode}: {run.log.strip()[-300:]}"
    return ""


# ---------------------------------------------------------------------------------------------
# the checker

class FormalChecker:
    """Equivalence checks with a content-hash cache (thread-safe; one instance per reward)."""

    def __init__(self, config: FormalConfig | None = None, runner: Runner | None = None):
        self.config = config or FormalConfig()
        if runner is None:
            preflight(self.config)
        self.runner = runner or sandbox_runner
        self._cache: EquivalenceCache[FormalResult] = EquivalenceCache(max_entries=self.config.cache_size)
        self._lock = threading.Lock()
        self._local = threading.local()          # this thread's check: the deadline of config.budget_s
        self.stats = {"checks": 0, "cache_hits": 0, EQUIVALENT: 0, NOT_EQUIVALENT: 0, UNKNOWN: 0}

    def check(self, candidate: str, reference: str, *, top: str = "TopModule", ref_top: str = "RefModule",
              reset: str | tuple[str, int] | None = None) -> FormalResult:
        """Is `candidate`'s module `top` equivalent to `reference`'s `ref_top`? Never raises (a missing
        yosys aside: ToolNotFound).

        `reset` names the reset port (active high), or gives (port, asserted value); by default it
        is found by name (reset, rst, areset, rst_n, resetn, ...)."""
        if isinstance(reset, str):
            reset = (reset, 1)
        # comments and whitespace cannot change a proof: keyed like the simulation cache (rewards.verilog.cache)
        key = hashlib.sha256(json.dumps([normalize(candidate), reference, top, ref_top, reset,
                                         asdict(self.config)]).encode("utf-8", "surrogatepass")).hexdigest()
        hit = self._cache.get(key)
        if hit is not None:
            with self._lock:
                self.stats["cache_hits"] += 1
            return FormalResult(**{**asdict(hit), "cached": True, "counterexample": hit.counterexample})
        t0 = time.monotonic()
        budget = self.config.budget_s
        self._local.deadline = None if budget is None else t0 + budget
        try:
            result = self._check(candidate, reference, top, ref_top, reset)
        except FormalError as exc:
            result = FormalResult(UNKNOWN, reason=str(exc))
        except ToolNotFound:
            raise
        except Exception as exc:
            log.exception("formal check failed unexpectedly")
            result = FormalResult(UNKNOWN, reason=f"internal error: {type(exc).__name__}: {exc}")
        result.wall_s = round(time.monotonic() - t0, 4)
        with self._lock:
            self.stats["checks"] += 1
            self.stats[result.verdict] += 1
        self._cache.put(key, result)
        return result

    def check_problem(self, problem: Any, candidate: str) -> FormalResult:
        """Check a candidate against a `Problem`'s reference (its top/ref module names; the reset
        port from `meta["reset"]` — a name or {"name", "active"} — when the generator gives one)."""
        if not problem.reference:
            return FormalResult(UNKNOWN, reason="problem has no reference")
        return self.check(candidate, problem.reference, top=problem.top_module, ref_top=problem.ref_module,
                          reset=reset_of(problem))

    # -- steps ----------------------------------------------------------------------------

    def _run(self, script: str, files: dict[str, str], outputs: tuple[str, ...] = ()) -> YosysRun:
        """One yosys run, limited to wall_s and to what is left of the check's budget_s."""
        cfg, deadline = self.config, getattr(self._local, "deadline", None)
        if deadline is not None:
            left = deadline - time.monotonic()
            if left < 0.05:
                raise FormalError(f"timeout: the check's budget ({cfg.budget_s:g} s) is spent")
            if left < cfg.wall_s:
                cfg = replace(cfg, wall_s=left)
        return self.runner(script, files, cfg, outputs)

    def _check(self, candidate: str, reference: str, top: str, ref_top: str,
               reset: tuple[str, int] | None) -> FormalResult:
        for side, source in (("reference", reference), ("candidate", candidate)):
            _precheck(source, side, self.config)
        ref_top = _pick_module(reference, ref_top, "reference")
        top = _pick_module(candidate, top, "candidate")
        files = {"gold.sv": reference, "gate.sv": candidate}
        gold, gate, loops = self._inspect(files, ref_top, top)
        self._check_compatible(gold, gate, loops)
        sequential = bool(gold.state_bits or gate.state_bits)
        if reset is not None and gold.ports.get(reset[0], ("", 0)) != ("input", 1):
            raise FormalError(f"reset {reset[0]!r} is not a 1-bit input of the reference")
        try:
            if not sequential:
                return self._prove_comb(files, ref_top, top, {p: w for p, (_, w) in gold.ports.items()})
            return self._prove_seq(files, ref_top, top, gold.ports, reset or _find_reset(gold.ports))
        except FormalError as exc:
            if not (self.config.structural and "timeout" in str(exc)):
                raise
            if self._prove_structural(files, ref_top, top, sequential):
                return FormalResult(EQUIVALENT, method="structural", sequential=sequential, complete=True,
                                    reason=f"SAT gave up ({exc}); proven by equiv_simple/equiv_induct")
            raise

    def _inspect(self, files: dict[str, str], ref_top: str, top: str) -> tuple[_Module, _Module, bool]:
        run = self._run(_inspect_script(ref_top, top), files, ("iface.json",))
        err = _yosys_error(run)
        if err or "iface.json" not in run.outputs:
            raise FormalError(f"yosys could not read the designs: {err or 'no interface written'}")
        match = re.search(r"found logic loop", run.log)
        mods = _modules(json.loads(run.outputs["iface.json"]))
        if "gold" not in mods or "gate" not in mods:
            raise FormalError("yosys did not produce both modules (gold, gate)")
        return mods["gold"], mods["gate"], match is not None

    def _check_compatible(self, gold: _Module, gate: _Module, loops: bool) -> None:
        cfg = self.config
        if loops:
            raise FormalError("combinational loop in a design")
        for side, mod in (("reference", gold), ("candidate", gate)):
            if mod.latches:
                raise FormalError(f"{side} has {mod.latches} latch(es); level-sensitive storage is not checked")
            if mod.cells > cfg.max_cells:
                raise FormalError(f"size budget: {side} has {mod.cells} cells > max_cells {cfg.max_cells}")
            if mod.state_bits > cfg.max_state_bits:
                raise FormalError(f"size budget: {side} has {mod.state_bits} state bits > "
                                  f"max_state_bits {cfg.max_state_bits}")
            io = sum(w for _, w in mod.ports.values())
            if io > cfg.max_io_bits:
                raise FormalError(f"size budget: {side} has {io} port bits > max_io_bits {cfg.max_io_bits}")
            if len(mod.clocks) > 1:
                raise FormalError(f"{side} uses several clocks or both edges {sorted(mod.clocks)}")
        if gold.clocks and gate.clocks and gold.clocks != gate.clocks:
            raise FormalError(f"clocking differs: reference {sorted(gold.clocks)}, candidate {sorted(gate.clocks)}")
        _check_ports(gold.ports, gate.ports)

    def _prove_comb(self, files: dict[str, str], ref_top: str, top: str, widths: dict[str, int]) -> FormalResult:
        script = _miter_script(ref_top, top, False) + f"sat -verify {_SAT_COMMON} miter\n"
        run = self._run(script, files)
        if "SAT proof finished - no model found: SUCCESS" in run.log:
            return FormalResult(EQUIVALENT, method="sat", complete=True)
        if "model found: FAIL" in run.log:
            cex = _counterexample(_parse_model(run.log), widths, None, False)
            return FormalResult(NOT_EQUIVALENT, reason="outputs differ", method="sat", complete=True,
                                counterexample=cex)
        raise FormalError(f"SAT check did not finish: {_yosys_error(run) or 'no verdict in log'}")

    def _prove_structural(self, files: dict[str, str], ref_top: str, top: str, sequential: bool) -> bool:
        """yosys' equivalence-cell flow: matches nets by name and proves each one (inductively across
        registers). Fast on near-identical designs where a monolithic SAT problem is hopeless
        (multipliers, dividers); it can only prove, never refute."""
        script = (_prep_script(ref_top, top) + ("async2sync\n" if sequential else "")
                  + "equiv_make gold gate equiv\nhierarchy -top equiv\n"
                  + "equiv_simple -undef\nequiv_induct -undef\nequiv_status -assert\n")
        run = self._run(script, files)
        return "Equivalence successfully proven!" in run.log and not _yosys_error(run)

    def _prove_seq(self, files: dict[str, str], ref_top: str, top: str, ports: dict[str, tuple[str, int]],
                   reset: tuple[str, int] | None) -> FormalResult:
        """Temporal induction: base cases grow one cycle at a time (so the first failure is the shortest
        counterexample), induction steps try to close the proof; `seq_depth` bounds both."""
        cfg = self.config
        depth = cfg.seq_depth
        widths = {p: w for p, (_, w) in ports.items()}
        script = _miter_script(ref_top, top, True)
        top_name = "miter"
        if reset is not None:
            files = {**files, "wrap.sv": _reset_wrapper(ports, reset)}
            script += "read_verilog -sv wrap.sv\nhierarchy -top earl_wrap\nproc\nflatten\nopt_clean\n"
            top_name = "earl_wrap"
        mode = "-tempinduct" if cfg.induction else "-tempinduct -tempinduct-baseonly"
        init = "-set-init-zero" if cfg.init == "zero" else "-set-init-undef"
        if reset is not None:
            init = f"-set-init earl_started 0 {init}"
        script += f"sat {mode} -maxsteps {depth} {init} {_SAT_COMMON} {top_name}\n"
        run = self._run(script, files)
        text = run.log
        if "model found for base case: FAIL" in text:
            cex = _counterexample(_parse_model(text), widths, reset, True)
            return FormalResult(NOT_EQUIVALENT, reason=f"outputs differ in cycle {cex.cycle}", method="bmc",
                                sequential=True, complete=True, depth=depth, counterexample=cex)
        proven = re.findall(r"Base case for induction length (\d+) proven", text)
        if "Induction step proven: SUCCESS" in text:
            return FormalResult(EQUIVALENT, method="induction", sequential=True, complete=True,
                                depth=int(proven[-1]) if proven else None,
                                reason="base case from reset plus k-induction")
        if "Reached maximum number of time steps" in text:
            return FormalResult(EQUIVALENT, method="bmc", sequential=True, complete=False, depth=depth,
                                reason=f"no difference within {depth} cycles from reset (induction did not close)")
        upto = f"; no difference within {proven[-1]} cycles" if proven else ""
        raise FormalError(f"sequential check did not finish: {_yosys_error(run) or 'no verdict in log'}{upto}")


class SlowProblems:
    """Caps what confirming passes costs (formal `confirm`; the reward's `formal_confirm_s`, also each
    check's budget_s): a problem whose check took `slow_s` or ran out of time is not checked again this
    run; its later passes keep their simulation verdict (formal unknown, the reason says why). While a
    problem's first check runs, its other candidates wait for it at most until it has run `slow_s` (slow
    then, whatever it ends as): a slow problem costs one check per run, not one per pass per step.
    Checks are usually ~0.1 s; outliers (gshare: SAT times out at the yosys limit, then the structural
    proof) take tens of seconds, which the trainer would wait for. In confirm mode an unknown verdict pays
    what a proof pays (the simulation's), so only slow refutations are lost."""

    def __init__(self, slow_s: float | None):
        self.slow_s = slow_s
        self._lock = threading.Lock()
        self._first: dict[str, tuple[threading.Event, float]] = {}   # problem -> (first proof done, its start)
        self._slow: dict[str, float] = {}                            # problem -> seconds its first proof took
        self.skipped = 0

    def check(self, key: str, prove: Callable[[], FormalResult]) -> FormalResult:
        """`prove()`, unless problem `key` is known (or being found) to be slow to prove."""
        if self.slow_s is None:
            return prove()
        with self._lock:
            first = self._first.get(key)
            if first is None:
                done = threading.Event()
                self._first[key] = (done, time.monotonic())
        if first is None:
            return self._first_proof(key, prove, done)
        done, start = first
        if not done.wait(max(0.0, start + self.slow_s - time.monotonic())):
            return self._skip(f"the first proof on this problem has run over {self.slow_s:g} s")
        took = self._slow.get(key)
        return prove() if took is None else self._skip(f"a proof on this problem took {took:.1f} s")

    def _first_proof(self, key: str, prove: Callable[[], FormalResult], done: threading.Event) -> FormalResult:
        t0, result = time.monotonic(), None
        try:
            result = prove()
            return result
        finally:
            took = time.monotonic() - t0
            timed_out = result is not None and not result.decided and "timeout" in result.reason
            if self.slow_s is not None and (took >= self.slow_s or timed_out):
                with self._lock:
                    self._slow[key] = took
            done.set()

    def _skip(self, why: str) -> FormalResult:
        with self._lock:
            self.skipped += 1
        return FormalResult(UNKNOWN, reason=f"not proved: {why} (formal_confirm_s {self.slow_s:g}); "
                                            "the simulation verdict stands")

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {"formal/slow_problems": len(self._slow), "formal/skipped_slow": self.skipped}


def problem_key(problem: Any) -> str:
    """What makes two rows the same formal problem: the reference and the two module names."""
    return hashlib.sha256(json.dumps([problem.reference, problem.top_module, problem.ref_module]).encode(
        "utf-8", "surrogatepass")).hexdigest()


def _reset_wrapper(ports: dict[str, tuple[str, int]], reset: tuple[str, int]) -> str:
    """Wrap the miter so the reset is asserted in cycle 1 and free afterwards.

    (yosys 0.23 `sat -tempinduct -set-at` does not constrain the base case correctly; a register that
    starts at zero under `-set-init-zero` does.) Clocks are ignored by `sat`: every register steps once
    per time step, so any input serves as this register's clock.
    """
    name, active = reset
    decl, conn = [], []
    for port, (direction, width) in ports.items():
        rng = f"[{width - 1}:0] " if width > 1 else ""
        if direction == "input":
            decl.append(f"input {rng}in_{port}")
            value = f"(earl_started ? in_{port} : 1'b{active})" if port == name else f"in_{port}"
            conn.append(f".in_{port}({value})")
        else:
            decl += [f"output {rng}gold_{port}", f"output {rng}gate_{port}"]
            conn += [f".gold_{port}(gold_{port})", f".gate_{port}(gate_{port})"]
    clock = f"in_{name}"
    return ("module earl_wrap(" + ", ".join(decl + ["output trigger"]) + ");\n"
            "  reg earl_started = 1'b0;\n"
            f"  always @(posedge {clock}) earl_started <= 1'b1;\n"
            "  miter m(" + ", ".join(conn + [".trigger(trigger)"]) + ");\n"
            "endmodule\n")


def reset_of(problem: Any) -> tuple[str, int] | None:
    """The reset a problem declares in `meta["reset"]` (name, or {"name", "active"|"low"}), else None."""
    spec = (problem.meta or {}).get("reset")
    if isinstance(spec, str):
        return spec, 1
    if isinstance(spec, dict) and "name" in spec:
        active = spec.get("active", 0 if spec.get("low") else 1)
        return str(spec["name"]), int(active)
    return None


def _check_ports(gold: dict[str, tuple[str, int]], gate: dict[str, tuple[str, int]]) -> None:
    missing, extra = sorted(set(gold) - set(gate)), sorted(set(gate) - set(gold))
    if missing or extra:
        raise FormalError(f"port mismatch: candidate lacks {missing}, has extra {extra}")
    diff = [f"{p} {gold[p][0]}[{gold[p][1]}] vs {gate[p][0]}[{gate[p][1]}]" for p in gold if gold[p] != gate[p]]
    if diff:
        raise FormalError("port mismatch (direction/width, reference vs candidate): " + "; ".join(diff))


_RANGE_RE = re.compile(r"\[\s*(\d+)\s*:\s*(\d+)\s*\]")


def _precheck(source: str, side: str, cfg: FormalConfig) -> None:
    """Size budget on the text, so a hostile design cannot spend the yosys time limit being read."""
    if len(source) > cfg.max_source_chars:
        raise FormalError(f"size budget: {side} source has {len(source)} characters > {cfg.max_source_chars}")
    for hi, lo in _RANGE_RE.findall(source):
        width = abs(int(hi) - int(lo)) + 1
        if width > cfg.max_io_bits:
            raise FormalError(f"size budget: {side} declares a {width}-bit range > max_io_bits {cfg.max_io_bits}")


def _pick_module(source: str, wanted: str, side: str) -> str:
    """`wanted` if the source defines it, else its only top-level module (RTLLM: file name != module)."""
    names = module_names(source)
    if wanted in names:
        return wanted
    if len(names) == 1:
        return names[0]
    if not names:
        raise FormalError(f"{side} defines no module")
    instantiated = {n for n in names if re.search(rf"^\s*{re.escape(n)}\s+(#\s*\(|[A-Za-z_])", source, re.MULTILINE)}
    tops = [n for n in names if n not in instantiated]
    if len(tops) == 1:
        return tops[0]
    raise FormalError(f"{side} has no module {wanted!r} and several candidates {names}")


def formal_summary(records: list[dict[str, Any]]) -> dict[str, int] | None:
    """Counts over scored records (rows of `earl score`, or `VerilogScore.to_dict()`s): simulation
    passes checked, proven, refuted (testbench false positives) and unknown; None if formal was off."""
    verdicts = [(r.get("details") or r).get("formal") for r in records]
    verdicts = [v for v in verdicts if v]
    if not verdicts:
        return None
    return {"checked": len(verdicts), EQUIVALENT: verdicts.count(EQUIVALENT),
            "false_positives": verdicts.count(NOT_EQUIVALENT), UNKNOWN: verdicts.count(UNKNOWN)}
