"""Persistent bwrap workers (SandboxConfig.persistent) with the real bubblewrap: jobs of one worker cannot
see or reach each other or the worker, hostile jobs leave the worker serving, verdicts match per-call
bwrap, and per-call bwrap takes over where a worker cannot start.

No timing assertions: hangs are deterministic (`sleep` far beyond the wall clock) and every wait is on
an event (a result, a marker file).
"""
from __future__ import annotations

import dataclasses
import logging
import os
import resource
import shutil
import signal
import tempfile
import uuid
from pathlib import Path

import pytest

from sandboxes import backends, native
from sandboxes.executor import ExecResult, Sandbox
from sandboxes.limits import SandboxConfig, SandboxLimits
from sandboxes.steps import Step
from tests.helpers.sandbox_probes import host_procs_with, sh

pytestmark = [
    pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap not installed"),
    pytest.mark.skipif(os.geteuid() != 0, reason="persistent workers attach work dirs with open_tree (root)"),
]
FAST = SandboxLimits(wall_s=10, cpu_s=10)


@pytest.fixture(params=["native", "python"])
def box(request):
    """A fresh persistent sandbox per test, so `workers_started` counts this test's workers only; every
    isolation test runs on both supervisors."""
    sb = Sandbox(SandboxConfig(backend="bwrap", limits=FAST, worker_supervisor=request.param))
    probe = sb.run(["true"], _mkdir())
    assert probe.ok and probe.persistent, probe
    assert sb._workers.supervisor.kind == request.param
    yield sb
    sb.close()


@pytest.fixture
def dirs():
    made: list[Path] = []

    def make() -> Path:
        made.append(_mkdir())
        return made[-1]

    yield make
    for path in made:
        shutil.rmtree(path, ignore_errors=True)


def _mkdir() -> Path:
    return Path(tempfile.mkdtemp(prefix="earl-sbxw-test-"))


def assert_worker_serves(sb: Sandbox, work: Path, workers: int = 1) -> None:
    """The next job runs normally, on the same worker (no restart was needed)."""
    r = sh(sb, "echo alive > alive.txt; cat alive.txt", work)
    assert r.ok and r.persistent and r.stdout == "alive\n", r
    assert sb.workers_started == workers


# ------------------------------------------------------------------ isolation between jobs

def test_next_job_sees_nothing_of_the_previous_one(box, dirs):
    marker = f"31{uuid.uuid4().int % 10**6:06d}"
    first, second = dirs(), dirs()
    r = sh(box, f"echo secret > mine.txt; echo secret > /tmp/left-{marker}; echo s > /dev/shm/shm-{marker}; "
                f"sleep {marker} & (setsid sleep {marker} &); "
                f"sh -c 'trap \"\" TERM HUP; exec sleep {marker}' & echo started", first)
    assert r.ok and r.stdout == "started\n", r
    assert (first / "mine.txt").read_text() == "secret\n"          # the caller reads what the job wrote
    assert host_procs_with(f"sleep {marker}") == []                 # gone with the job's PID namespace
    r = sh(box, 'for d in /box /tmp /dev/shm; do echo "$d: $(ls -A $d)"; done; ls /proc | grep -c "^[0-9]"; '
                'grep -l "sleep $M" /proc/[0-9]*/cmdline 2>&-; '
                'find / -xdev \\( -name mine.txt -o -name "left-$M" \\) 2>&-; true', second,
           env={"M": marker})                                         # the marker is not on this job's argv
    assert r.ok, r
    lines = r.stdout.splitlines()
    assert lines[:3] == ["/box: ", "/tmp: ", "/dev/shm: "], r.stdout   # all three empty
    assert int(lines[3]) < 6                                          # init, wrapper, sh, ls/grep: no leftovers
    assert lines[4:] == [], r.stdout                                  # no process or file of job 1
    assert box.workers_started == 1


def test_job_cannot_see_host_or_worker(box, dirs):
    """pid 1 is the job's own init (the native P, or a sh, of the job's uid); the supervisor, in the parent
    PID namespace, has no /proc entry here; the job has no capabilities."""
    work = dirs()
    r = sh(box, "cat /proc/1/comm; echo $$; id -u; "
                "cat /proc/[0-9]*/comm | sort -u | tr '\\n' ' '; echo; grep Cap /proc/self/status", work)
    assert r.ok, r
    lines = r.stdout.splitlines()
    init = {"native": "earl-init", "python": "sh"}[box._workers.supervisor.kind]
    assert lines[0] == init and int(lines[1]) < 6, lines
    assert lines[2] == str(backends.SANDBOX_UID), lines
    assert set(lines[3].split()) <= {"cat", "sh", "sort", "tr", init}, lines
    assert all(line.split()[1] == "0" * 16 for line in lines[4:] if not line.startswith("CapBnd")), lines
    r = sh(box, f"test -e /proc/{os.getpid()} && echo VISIBLE; ls /spool /root /home 2>&1 | grep -c 'No such'",
           work)
    assert "VISIBLE" not in r.stdout and r.stdout.strip() == "3", r


def test_job_starts_with_no_ignored_signals(box, dirs):
    """pid 1 traps signals (so a job cannot end it early) by catching, not ignoring, them: an ignored
    disposition would survive exec into the program."""
    r = sh(box, "grep SigIgn /proc/self/status", dirs())
    assert r.ok and r.stdout.split() == ["SigIgn:", "0" * 16], r


def test_workers_cpu_counts_what_jobs_burn(box, dirs):
    """The host's rusage never sees a job's CPU (it is reaped in the box): workers_cpu_s does, at least
    what the wrapper reports for the program itself."""
    before = box.workers_cpu_s
    r = sh(box, "i=0; while [ $i -lt 100000 ]; do i=$((i+1)); done", dirs())
    assert r.ok and r.cpu_s > 0, r
    # Both are whole clock ticks (times(2)); the tolerance is for the float subtraction only (a run here had
    # 0.14 - 0.02 < 0.12).
    assert box.workers_cpu_s - before >= r.cpu_s - 1e-9


def test_concurrent_jobs_on_one_dir_and_separate_tmp(box, dirs):
    """Two jobs at once (two workers) over the same work dir, as per-call runs allow; /tmp stays per job."""
    from sandboxes.pool import SandboxPool
    work = dirs()
    (work / "go").write_text("")

    def job(i: int) -> str:
        return sh(box, f"echo {i} > /tmp/me; echo {i} > out{i}; "
                       f"while [ ! -e out{1 - i} ]; do sleep 0.01; done; cat /tmp/me", work).stdout

    with SandboxPool(workers=2) as pool:
        assert pool.map(job, [0, 1]) == ["0\n", "1\n"]                # each saw only its own /tmp/me
    assert sorted(p.name for p in work.iterdir()) == ["go", "out0", "out1"]


# ------------------------------------------------------------------ hostile jobs leave the worker serving

HOSTILE = {
    "kills_its_parent": "kill -9 $PPID; sleep 1",
    "kills_pid_1": "for s in KILL TERM INT HUP QUIT USR1 USR2 ALRM PIPE STOP; do kill -$s 1; done; echo survived",
    "kills_everything": "kill -9 -1; echo survived",
    "signals_every_pid": "for p in $(seq 1 400); do [ $p = $$ ] || [ $p = $PPID ] || "
                         "{ kill -STOP $p; kill -TERM $p; kill -9 $p; }; done 2>&-; echo survived",
    "stops_itself": "kill -STOP $$",
    "fork_bomb": "bomb() { bomb | bomb; }; bomb",
    "output_flood": "head -c 50000000 /dev/zero | tr '\\0' x; head -c 50000000 /dev/zero >&2",
    "loops_forever": "while :; do :; done",
    "sleeps_forever_detached": "(setsid sh -c 'trap \"\" TERM HUP; sleep 100000' &); sleep 100000",
    "closes_its_pipes_and_hangs": "exec >&- 2>&- <&-; sleep 100000",
    "fills_tmp": "head -c 100000000 /dev/zero > /tmp/big",
}


SURVIVABLE = {"kills_pid_1", "signals_every_pid"}     # the job itself goes on
# `kill -9 -1` also kills the job's own rlimit wrapper (same uid, same namespace): signal_9, as per call
KILLS_ITS_WRAPPER = {"kills_everything"}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_job_does_not_kill_or_stall_the_worker(box, dirs, name):
    lim = SandboxLimits(wall_s=2, cpu_s=2, max_procs=32, max_output_bytes=10_000, max_file_mb=4)
    r = sh(box, HOSTILE[name], dirs(), limits=lim)
    assert isinstance(r, ExecResult) and r.persistent, r
    assert r.ok == (name in SURVIVABLE), r
    assert_worker_serves(box, dirs())


def test_hostile_verdicts(box, dirs):
    lim = SandboxLimits(wall_s=2, cpu_s=1, max_procs=32, max_output_bytes=10_000, max_file_mb=4)
    # 1 s of CPU can take more than 2 s of wall time on a busy machine: the wall clock here is far off
    assert sh(box, HOSTILE["loops_forever"], dirs(), limits=dataclasses.replace(lim, wall_s=60)).verdict == "cpu"
    assert sh(box, HOSTILE["sleeps_forever_detached"], dirs(), limits=lim).verdict == "timeout"
    assert sh(box, HOSTILE["closes_its_pipes_and_hangs"], dirs(), limits=lim).verdict == "timeout"
    assert sh(box, HOSTILE["kills_its_parent"], dirs(), limits=lim).verdict == "signal_9"
    flood = sh(box, HOSTILE["output_flood"], dirs(), limits=lim)
    assert flood.verdict == "output_limit" and flood.stdout == "x" * 10_000
    tmp = sh(box, HOSTILE["fills_tmp"], dirs(), limits=lim)
    assert tmp.signal == 25                                           # SIGXFSZ: /tmp is capped per job
    for name in sorted(SURVIVABLE | KILLS_ITS_WRAPPER):
        r = sh(box, HOSTILE[name], dirs(), limits=lim)
        assert r.stdout.endswith("survived\n"), (name, r)
        assert r.verdict == ("signal_9" if name in KILLS_ITS_WRAPPER else "ok"), (name, r)
    assert_worker_serves(box, dirs())


def test_worker_killed_mid_job_gives_a_verdict_and_is_replaced(box, dirs):
    """The host-side failure path: the whole worker dies under a running job (nothing a job can do; here
    the test kills it). That job gets a verdict, the next one a fresh worker."""
    import threading
    work = dirs()
    done: list[ExecResult] = []
    runner = threading.Thread(target=lambda: done.append(sh(box, "touch running; sleep 100000", work,
                                                              limits=SandboxLimits(wall_s=600))))
    runner.start()
    while not (work / "running").exists():                            # event: the job is running
        runner.join(0.01)
    for pid in box._workers.pids():
        os.killpg(pid, signal.SIGKILL)
    runner.join()
    assert done and done[0].verdict == "signal_9" and "worker died" in done[0].stderr, done
    assert_worker_serves(box, dirs(), workers=2)


# ------------------------------------------------------------------ same verdicts as per-call bwrap

def _verdicts(sb: Sandbox, dirs, run=sh) -> dict[str, tuple]:
    lim = SandboxLimits(wall_s=2, cpu_s=1, memory_mb=256, max_procs=20, max_output_bytes=10_000, max_file_mb=1)
    out = {}
    for name, script in {**HOSTILE, "exit_3": "echo out; echo err >&2; exit 3",
                         "memory": "python3 -c 'x = bytearray(4 * 1024**3)'",
                         "file_size": "head -c 5000000 /dev/zero > big",
                         "escape_write": "echo x > /usr/x || echo x > /x || echo x > ../x; exit 1",
                         "stdin_echo": "cat"}.items():
        wall = 60 if name == "loops_forever" else lim.wall_s        # cpu, never timeout, however busy
        r = run(sb, script, dirs(), limits=dataclasses.replace(lim, wall_s=wall),
                stdin=b"in" if name == "stdin_echo" else None)
        out[name] = (r.verdict, r.returncode, r.signal, r.timed_out, r.output_truncated,
                     r.stdout if name in ("exit_3", "stdin_echo", "output_flood") else "")
    return out


def test_same_verdicts_as_per_call_bwrap(box, dirs):
    per_call = Sandbox(dataclasses.replace(box.config, persistent=False))
    assert not per_call.run(["true"], dirs()).persistent
    assert _verdicts(box, dirs) == _verdicts(per_call, dirs)


def step_sh(sandbox: Sandbox, script: str, workdir: Path, **kw) -> ExecResult:
    """The script as the one step of a steps job (run without the wrapper shell on a native worker)."""
    return sandbox.run_steps([Step(("/bin/sh", "-c", script))], workdir, **kw)


def test_steps_jobs_same_verdicts_as_per_call_bwrap(box, dirs):
    """The hostile corpus as steps: the native supervisor runs them with no wrapper shell (its job process
    sets the limits and reports the CPU), the Python one as their script; both as per-call bwrap."""
    per_call = Sandbox(dataclasses.replace(box.config, persistent=False))
    assert _verdicts(box, dirs, step_sh) == _verdicts(per_call, dirs)


@pytest.mark.slow
def test_verilog_hostile_corpus_same_scores_as_per_call(dirs):
    from rewards.verilog.loaders import load_problems
    from rewards.verilog.reward import VerilogReward
    from tests.helpers.verilog_mutants import as_top, hostile_candidates
    data = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "verilog-eval-v2-sample"
    if shutil.which("iverilog") is None or not data.is_dir():
        pytest.skip("iverilog or the VerilogEval sample missing")
    problem = {p.id: p for p in load_problems(data)}["Prob001_zero"]
    cands = {"good": f"```verilog\n{as_top(problem.reference)}```", **hostile_candidates("earl_w")}

    def scores(persistent: bool) -> dict[str, tuple]:
        reward = VerilogReward([problem], time_limit_s=3, workers=2, forbidden=())
        sb = reward._get_sandbox()
        reward._sandbox = Sandbox(dataclasses.replace(sb.config, persistent=persistent))
        try:
            got = reward.score_batch([problem] * len(cands), list(cands.values()))
        finally:
            reward.close()
            reward._sandbox.close()
        return {name: (s.stage, s.passed, s.reward, s.error) for name, s in zip(cands, got, strict=True)}

    ours, theirs = scores(True), scores(False)
    assert ours["good"][1] and ours == theirs


@pytest.mark.parametrize("persistent", [True, False])
def test_shared_temp_root_as_work_dir_is_refused(dirs, monkeypatch, persistent):
    """Root hands a run's work dir tree to uid 65534; the temp root itself (here a scratch stand-in, so a
    broken guard could only chown that) must be refused, not walked."""
    scratch = dirs()
    (scratch / "someone-elses").write_text("x")
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    sb = Sandbox(SandboxConfig(backend="bwrap", limits=FAST, persistent=persistent))
    with pytest.raises(ValueError, match="shared folder"):
        sb.run(["true"], scratch)
    assert (scratch / "someone-elses").stat().st_uid == os.geteuid()
    sb.close()


@pytest.fixture
def over_1024_fds():
    """More than 1024 fds held open (a trainer's sockets, shards, CUDA handles): every fd the sandbox
    opens next (the worker's socket, a job's pipes, pidfds) is above what select(2) can watch."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 2048:
        pytest.skip(f"RLIMIT_NOFILE hard limit {hard} < 2048")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 2048) if soft != resource.RLIM_INFINITY else soft, hard))
    held = [os.open("/dev/null", os.O_RDONLY) for _ in range(1100)]
    try:
        yield held
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.mark.parametrize("persistent", [True, False])
def test_runs_with_more_than_1024_fds_open(dirs, over_1024_fds, persistent):
    probe = os.open("/dev/null", os.O_RDONLY)
    os.close(probe)
    assert probe >= 1024                                             # the next fds really are high
    sb = Sandbox(SandboxConfig(backend="bwrap", limits=FAST, persistent=persistent))
    try:
        r = sh(sb, "cat; echo out; echo err >&2", dirs(), stdin=b"in\n")
        assert (r.verdict, r.persistent, r.stdout, r.stderr) == ("ok", persistent, "in\nout\n", "err\n"), r
        hung = sh(sb, HOSTILE["closes_its_pipes_and_hangs"], dirs(), limits=dataclasses.replace(FAST, wall_s=1))
        assert hung.verdict == "timeout" and hung.persistent == persistent, hung
    finally:
        sb.close()


# ------------------------------------------------------------------ fallback

def test_fallback_to_per_call_when_the_worker_cannot_start(dirs, caplog):
    backends._warned.discard("worker-start")
    sb = Sandbox(SandboxConfig(backend="bwrap", limits=FAST, worker_supervisor="python", worker_python="/bin/false"))
    with caplog.at_level(logging.WARNING, logger="sandboxes.backends"):
        results = [sh(sb, "echo ok; cat /proc/1/cmdline | tr '\\0' ' '", dirs()) for _ in range(3)]
    for r in results:
        assert r.ok and r.isolated and not r.persistent and r.stdout.startswith("ok\n"), r
        assert "bwrap" in r.stdout                                    # pid 1 is per-call bwrap's init
    warnings = [rec for rec in caplog.records if "persistent worker unavailable" in rec.getMessage()]
    assert len(warnings) == 1 and sb.workers_started == 0


def test_persistent_off_uses_per_call(dirs):
    r = Sandbox(SandboxConfig(backend="bwrap", persistent=False)).run(["true"], dirs())
    assert r.ok and not r.persistent
    with pytest.raises(TypeError, match="persistent"):
        SandboxConfig(persistent="yes")


@pytest.fixture
def fresh_native(monkeypatch, tmp_path):
    """supervisor_binary() recomputed under this test's environment (an empty build cache)."""
    monkeypatch.setenv("EARL_CACHE_DIR", str(tmp_path / "cache"))
    clear = native.supervisor_binary.cache_clear          # a test may monkeypatch the function itself
    clear()
    yield
    clear()


def test_native_supervisor_is_built_once_and_cached(fresh_native, tmp_path):
    if native.compiler() is None:
        pytest.skip("no C compiler on PATH")
    binary, why = native.supervisor_binary()
    assert binary is not None and why == "" and binary.parent == tmp_path / "cache", why
    stamp = binary.stat().st_mtime_ns
    native.supervisor_binary.cache_clear()
    assert native.supervisor_binary() == (binary, "") and binary.stat().st_mtime_ns == stamp
    assert [p.name for p in binary.parent.iterdir()] == [binary.name]       # no temporary left behind


def test_no_compiler_runs_the_python_supervisor(fresh_native, monkeypatch, dirs, caplog):
    monkeypatch.setenv("CC", "/nonexistent/cc")
    backends._warned.clear()
    with caplog.at_level(logging.WARNING, logger="sandboxes.backends"):
        auto = Sandbox(SandboxConfig(backend="bwrap", limits=FAST))
        only_native = Sandbox(SandboxConfig(backend="bwrap", limits=FAST, worker_supervisor="native"))
    try:
        r = sh(auto, "cat /proc/1/comm", dirs())
        assert r.ok and r.persistent and r.stdout == "sh\n", r                # the Python supervisor's init
        r = sh(only_native, "echo ok", dirs())
        assert r.ok and r.isolated and not r.persistent, r                    # per-call bwrap
    finally:
        auto.close()
        only_native.close()
    messages = [rec.getMessage() for rec in caplog.records]
    assert any("no C compiler" in m and "python supervisor" in m for m in messages), messages
    assert any("no C compiler" in m and "per-call bwrap" in m for m in messages), messages


def test_native_supervisor_that_cannot_start_falls_back_to_python(fresh_native, monkeypatch, dirs, caplog,
                                                                  tmp_path):
    broken = tmp_path / "supervisor-broken"
    broken.write_bytes(b"not an executable\n")
    broken.chmod(0o755)
    monkeypatch.setattr(native, "supervisor_binary", lambda: (broken, ""))
    backends._warned.clear()
    with caplog.at_level(logging.WARNING, logger="sandboxes.backends"):
        sb = Sandbox(SandboxConfig(backend="bwrap", limits=FAST))
        try:
            results = [sh(sb, "cat /proc/1/comm", dirs()) for _ in range(2)]
            assert sb._workers.supervisor.kind == "python" and sb.workers_started == 1
        finally:
            sb.close()
    for r in results:
        assert r.ok and r.persistent and r.stdout == "sh\n", r
    messages = [rec.getMessage() for rec in caplog.records]
    assert sum("native supervisor) did not start" in m and "trying the python" in m for m in messages) == 1, messages


def test_build_cache_that_others_can_write_is_not_used(fresh_native, tmp_path):
    """Whoever can write the cache could plant the binary a worker runs with CAP_SYS_ADMIN over its jobs."""
    if native.compiler() is None:
        pytest.skip("no C compiler on PATH")
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o777)
    cache.chmod(0o777)
    binary, why = native.supervisor_binary()
    assert binary is None and "not private" in why and "EARL_CACHE_DIR" in why, why
    cache.chmod(0o700)
    native.supervisor_binary.cache_clear()
    binary, _ = native.supervisor_binary()
    binary.write_bytes(b"planted")                 # a file of the right name that others could have changed
    binary.chmod(0o777)
    native.supervisor_binary.cache_clear()
    rebuilt, why = native.supervisor_binary()
    assert rebuilt == binary and why == "" and binary.read_bytes()[:4] == b"\x7fELF", why
    assert binary.stat().st_mode & 0o777 == 0o755


def test_a_refused_request_runs_per_call_and_replaces_the_worker(box, dirs, monkeypatch):
    """A request the supervisor cannot parse gets an error reply before anything ran: that job runs per
    call (same verdict), the worker is discarded, the next job starts a new one."""
    from sandboxes import worker
    real = worker.encode_request
    monkeypatch.setattr(worker, "encode_request", lambda *a: b"earl-job-1\0not a number\0")
    r = sh(box, "echo refused-but-run", dirs())
    assert r.ok and r.isolated and not r.persistent and r.stdout == "refused-but-run\n", r
    monkeypatch.setattr(worker, "encode_request", real)
    assert_worker_serves(box, dirs(), workers=2)


def test_limits_must_be_finite():
    for bad in (float("inf"), float("nan")):
        with pytest.raises(ValueError, match="wall_s must be a finite number"):
            SandboxLimits(wall_s=bad)
