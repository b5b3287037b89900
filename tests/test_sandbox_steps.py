"""Jobs as steps (sandboxes/steps.py): the native supervisor runs them with no shell at all, everything else
as their sh script; results, files, limits and process state must be the same on every path.

The per-call bwrap run of `steps.script` is the reference (it is what ran before steps existed).
"""
from __future__ import annotations

import dataclasses
import os
import resource
import shutil
import tempfile
from pathlib import Path

import pytest

from sandboxes import steps
from sandboxes.executor import Sandbox
from sandboxes.limits import SandboxConfig, SandboxLimits
from sandboxes.steps import Step

SH = "/bin/sh"
LIMITS = SandboxLimits(wall_s=20, cpu_s=10, max_procs=20)
needs_workers = pytest.mark.skipif(shutil.which("bwrap") is None or os.geteuid() != 0,
                                   reason="persistent workers need bubblewrap and root (open_tree)")


def sh_step(script: str, **kw) -> Step:
    return Step((SH, "-c", script), **kw)


# ------------------------------------------------------------------ the contract (no sandbox)

def test_script_of_a_compile_job_is_the_one_the_reward_always_ran():
    job = [sh_step("cc", log="compile.log", status_file="compile.rc", stop_exit=113), Step(("/usr/bin/vvp", "sim"))]
    assert steps.script(job) == ("/bin/sh -c cc >compile.log 2>&1\nrc=$?\necho $rc >compile.rc\n"
                                 "[ $rc -eq 0 ] || exit 113\nexec /usr/bin/vvp sim\n")


@pytest.mark.parametrize(("job", "message"), [
    ([], "1 to 8 steps"),
    ([Step(("/bin/true",))] * 9, "1 to 8 steps"),
    ([Step(())], "step 0: argv"),
    ([Step(("/bin/true", "a\0b"))], "step 0: argv"),
    ([Step(("/bin/true",), log="../x")], "step 0: log must be a plain file name"),
    ([Step(("/bin/true",), status_file=".hidden"), Step(("/bin/true",))], "step 0: status_file"),
    ([Step(("/bin/true",), stop_exit=256), Step(("/bin/true",))], "step 0: stop_exit"),
    ([Step(("/bin/true",), stop_exit=True), Step(("/bin/true",))], "step 0: stop_exit"),
    ([Step("/bin/true")], "step 0: argv"),                        # a string, not a tuple of them
    (["/bin/true"], "step 0: must be a Step"),
    ([Step(("/bin/true",), status_file="rc")], "the last step"),
    ([Step(("/bin/true",), stop_exit=3)], "the last step"),
])
def test_steps_that_cannot_run_are_refused_by_name(job, message):
    with pytest.raises(ValueError, match=message):
        steps.validate(job)


@pytest.mark.parametrize("name", ["../x", "a/b", "/abs", ".hidden", "x y", "x;rm", "a>b"])
def test_file_names_outside_the_work_dir_are_refused_wherever_a_job_names_one(name):
    """One check (steps.plain_file_name) for a step's log and status file and a problem's extra and
    vector files."""
    from rewards.verilog.harness import build_job
    from rewards.verilog.problems import Problem
    assert not steps.plain_file_name(name)
    with pytest.raises(ValueError, match="log must be a plain file name"):
        steps.validate([Step(("/bin/true",), log=name)])
    bench, code = "module tb; endmodule\n", "module TopModule; endmodule"
    with pytest.raises(ValueError, match="extra file name .* must be a plain file name"):
        build_job(Problem(id="p", spec="", testbench=bench, files={name: "x"}), code)
    vectors = Problem(id="p", spec="", testbench=bench, harness="vectors",
                      meta={"expected_output": "1\n", "vector_file": name})
    with pytest.raises(ValueError, match="vector file .* must be a plain file name"):
        build_job(vectors, code)


def test_plain_file_names_pass():
    assert all(steps.plain_file_name(n) for n in ("compile.log", "sim.out", "a-b_c+1.v"))
    assert not steps.plain_file_name("")


def test_request_fields_layout():
    job = (Step(("/a", "x"), log="l", status_file="s", stop_exit=7), Step(("/b",)))
    assert steps.fields(job) == ["2", "2", "/a", "x", "l", "s", "7", "1", "/b", "", "", "-1"]


# ------------------------------------------------------------------ every path runs them alike

@pytest.fixture(scope="module")
def boxes():
    """per-call bwrap (the reference), the native worker (no shell), the Python one (the script)."""
    made = {"per_call": Sandbox(SandboxConfig(backend="bwrap", limits=LIMITS, persistent=False))}
    for kind in ("native", "python"):
        made[kind] = Sandbox(SandboxConfig(backend="bwrap", limits=LIMITS, worker_supervisor=kind))
    yield made
    for sb in made.values():
        sb.close()


def _run(sb: Sandbox, job: list[Step], **kw) -> tuple:
    work = Path(tempfile.mkdtemp(prefix="earl-steps-test-"))
    try:
        (work / "in.txt").write_text("from the work dir\n")
        (work / "noshebang").write_text("echo no-shebang \"$1\" $0\n")
        (work / "noshebang").chmod(0o755)
        (work / "adder.v").write_text(ADDER)
        r = sb.run_steps(job, work, **kw)
        files = {p.name: p.read_text(errors="replace") for p in sorted(work.iterdir())}
        if "sim" in files:                          # vvp code holds the compiler's heap addresses (ASLR)
            files["sim"] = files["sim"].splitlines()[0]
        return r, (r.verdict, r.returncode, r.signal, r.stdout, r.stderr, files)
    finally:
        shutil.rmtree(work, ignore_errors=True)


ADDER = """module tb; reg [3:0] a; initial begin a = 4'd9; $display("sum %0d", a + 4'd3); end endmodule
"""
JOBS = {
    "compile_then_run": [sh_step("echo compiled; echo warn >&2; cat in.txt > sim", log="compile.log",
                                 status_file="compile.rc", stop_exit=113), sh_step("cat sim; echo done >&2")],
    "compile_fails": [sh_step("echo broken >&2; exit 4", log="compile.log", status_file="compile.rc",
                              stop_exit=113), sh_step("echo never")],
    "failure_without_stop": [sh_step("exit 5", status_file="rc"), sh_step("cat rc; exit 6")],
    "killed_step": [sh_step("kill -9 $$", status_file="rc", stop_exit=9), sh_step("echo never")],
    "killed_last_step": [sh_step("echo before"), sh_step("kill -TERM $$")],
    "stdin_and_env": [sh_step("read line; echo \"$line $EARL_X\""), sh_step("echo $EARL_X >&2")],
    "last_step_logged": [sh_step("echo a"), sh_step("echo b; echo c >&2", log="run.log")],
    "umask_and_state": [sh_step("umask; cat /proc/self/oom_score_adj; ulimit -a; : > made; ls -l made | cut -c1-10")],
    "cpu_limit": [sh_step("while :; do :; done", status_file="rc"), sh_step("cat rc")],
    # programs run with no shell on the native path: what they inherit must still be what sh gives them
    "environment": [Step(("printenv", "PWD", "HOME", "PATH", "LANG", "TMPDIR", "EARL_X"))],
    "no_shebang": [Step(("./noshebang", "arg"), status_file="rc"), sh_step("cat rc")],
    "icarus": [Step(("iverilog", "-o", "sim", "adder.v"), log="compile.log", status_file="compile.rc",
                    stop_exit=113), Step(("vvp", "-n", "sim"))],
    "icarus_broken": [Step(("iverilog", "-o", "sim", "in.txt"), log="compile.log", status_file="compile.rc",
                           stop_exit=113), Step(("vvp", "-n", "sim"))],
}


@needs_workers
@pytest.mark.parametrize("kind", ["native", "python"])
@pytest.mark.parametrize("name", sorted(JOBS))
def test_steps_run_alike_on_every_path(boxes, kind, name):
    if name.startswith("icarus") and shutil.which("iverilog") is None:
        pytest.skip("iverilog not installed")
    kw = {"stdin": b"hello\n", "env": {"EARL_X": "x1"}} if name in ("stdin_and_env", "environment") else {}
    if name == "cpu_limit":
        kw["limits"] = dataclasses.replace(LIMITS, cpu_s=1, wall_s=60)
    res, got = _run(boxes[kind], JOBS[name], **kw)
    _, want = _run(boxes["per_call"], JOBS[name], **kw)
    assert res.persistent
    assert got == want


@needs_workers
@pytest.mark.parametrize("kind", ["native", "python"])
def test_a_missing_program_fails_its_step_as_sh_would(boxes, kind):
    """127 and a message on the step's stderr (sh's words differ from the supervisor's; the status not)."""
    job = [Step(("/no/such/tool",), log="compile.log", status_file="compile.rc", stop_exit=113), Step(("/bin/true",))]
    res, got = _run(boxes[kind], job)
    _, want = _run(boxes["per_call"], job)
    assert res.returncode == want[1] == 113
    assert got[5]["compile.rc"] == want[5]["compile.rc"] == "127\n"
    assert "/no/such/tool" in got[5]["compile.log"]


@needs_workers
def test_native_worker_runs_steps_without_a_shell(boxes):
    """A step's parent is the job process itself on a native worker (no wrapper `sh`), holding no
    capabilities (as the wrapper, an exec'd program, holds none), and the CPU its steps burn is still
    reported."""
    parent = [sh_step("cat /proc/$PPID/comm; grep -E '^Cap(Eff|Prm)' /proc/$PPID/status")]
    loop = [sh_step("i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done")]
    caps = "CapPrm:\t0000000000000000\nCapEff:\t0000000000000000\n"
    assert _run(boxes["native"], parent)[0].stdout == "earl-init\n" + caps
    assert _run(boxes["per_call"], parent)[0].stdout == "sh\n" + caps
    r, _ = _run(boxes["native"], loop)
    assert r.ok and r.cpu_s > 0 and "earl-sandbox-cpu" not in r.stderr, r


@needs_workers
def test_limits_that_cannot_be_set_fail_the_job_as_the_wrapper_does(boxes):
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard == resource.RLIM_INFINITY:
        pytest.skip("no hard limit on open files to exceed")
    lim = dataclasses.replace(LIMITS, max_open_files=hard + 1)
    for kind in ("native", "per_call"):
        r, _ = _run(boxes[kind], [Step(("/bin/true",))], limits=lim)
        assert r.returncode == 125 and "earl-sandbox: cannot set rlimits" in r.stderr, (kind, r)


@needs_workers
def test_malformed_steps_requests_are_refused_and_run_per_call(boxes, monkeypatch):
    """The native supervisor parses an earl-job-2 request against its own field count: every truncation
    of a valid one, and out-of-range counts, get an error reply before anything runs; the job then runs
    per call (same output) and the worker is replaced."""
    from sandboxes import backends, worker
    job = (Step(("/bin/echo", "ran"), log="l", status_file="s", stop_exit=3), Step(("/bin/cat", "l")))
    valid = worker.encode_request([], {"A": "1"}, 5.0, 1 << 20, [], (backends.rlimits(LIMITS, True), job))
    fields = valid.split(b"\0")[:-1]
    nsteps_at = 5 + 3 * int(fields[4])             # after tag, wall, tmp, n_under (0), nlim and the limits
    stop_at = nsteps_at + 6                         # step 0: argc, /bin/echo, ran, log, status_file, stop_exit
    assert fields[stop_at] == b"3"
    bad = [b"".join(f + b"\0" for f in fields[:k]) for k in range(1, len(fields))]
    last_stop = stop_at + 6                         # step 1: argc, /bin/cat, l, log, status_file, stop_exit
    for at, value in ((4, b"99"), (5, b"-1"), (6, b" -1"), (6, b"+5"), (nsteps_at, b"0"), (nsteps_at, b"9"),
                      (nsteps_at + 1, b"999"), (stop_at, b"256"), (stop_at, b"x"), (last_stop, b"0")):
        changed = list(fields)
        changed[at] = value
        bad.append(b"".join(f + b"\0" for f in changed))
    real = worker.encode_request
    for request in bad:
        monkeypatch.setattr(worker, "encode_request", lambda *a, r=request: r)
        res, _ = _run(boxes["native"], list(job))
        assert not res.persistent and res.stdout == "ran\n", (request, res)
    monkeypatch.setattr(worker, "encode_request", real)
    assert _run(boxes["native"], list(job))[0].persistent
