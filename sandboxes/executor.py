"""Run one untrusted program over a private work directory and say what happened.

`Sandbox.run` never raises for anything the program does (crash, hang, flood, bomb): that becomes an
`ExecResult` with a verdict. It raises only for caller mistakes (missing work dir, empty argv).
"""
from __future__ import annotations

import contextlib
import os
import re
import select
import selectors
import signal as signals
import subprocess
import time
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from sandboxes import backends, steps, worker
from sandboxes.backends import BASE_PATH
from sandboxes.capture import READ_CHUNK, TAIL, Capped, read_into
from sandboxes.limits import SandboxConfig, SandboxLimits
from sandboxes.steps import Step
from sandboxes.tools import ToolNotFound, find_program, require_programs, search_path

# Under RLIMIT_AS an allocation fails rather than the kernel killing the program; these are the ways
# programs and runtimes say so (glibc strerror(ENOMEM), Python, C++, Icarus, Rust/Go runtimes).
_OOM_RE = re.compile(
    rb"MemoryError|Cannot allocate memory|out of memory|bad_alloc|memory exhausted|ENOMEM|"
    rb"failed to allocate|memory allocation (?:of .* )?failed|not enough memory|cannot allocate",
    re.IGNORECASE)


@dataclass
class ExecResult:
    returncode: int | None     # exit status; None when killed by a signal or the wall clock
    signal: int | None         # the signal that ended the program (SIGKILL on timeout)
    timed_out: bool
    memory_exceeded: bool      # heuristic, see _memory_exceeded
    cpu_exceeded: bool
    output_truncated: bool
    stdout: str
    stderr: str
    wall_s: float
    cpu_s: float               # user+sys of the program and its reaped children (0.0 if unknown)
    isolated: bool             # namespaces in force (bwrap); False for 'unshare' and 'none'
    backend: str
    persistent: bool = False   # ran as a job of a persistent bwrap worker (SandboxConfig.persistent)

    @property
    def ok(self) -> bool:
        """Exited 0, no limit hit."""
        return self.verdict == "ok"

    @property
    def verdict(self) -> str:
        if self.timed_out:
            return "timeout"
        if self.memory_exceeded:
            return "memory"
        if self.cpu_exceeded:
            return "cpu"
        if self.signal is not None:
            return f"signal_{self.signal}"
        if self.returncode != 0:
            return f"exit_{self.returncode}"
        if self.output_truncated:
            return "output_limit"
        return "ok"


@contextlib.contextmanager
def _no_blocked_signals() -> Iterator[None]:
    """Spawn with an empty signal mask: Popen's child keeps the calling thread's, exec keeps it, bwrap's
    init and bash (/bin/sh on some systems) keep it too, and `env` cannot clear it. Only a thread that
    blocks something pays (two syscalls); its mask is back before Popen returns."""
    blocked = signals.pthread_sigmask(signals.SIG_BLOCK, [])
    if not blocked:
        yield
        return
    signals.pthread_sigmask(signals.SIG_SETMASK, [])
    try:
        yield
    finally:
        signals.pthread_sigmask(signals.SIG_SETMASK, blocked)


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signals.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _pidfd(pid: int) -> int | None:
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None


def _pump(proc: subprocess.Popen, stdin: bytes | None, wall_s: float, cap: int) -> tuple[Capped, Capped, bool]:
    """Feed stdin, read stdout/stderr incrementally until the program ends or the wall clock runs out.

    Kills the whole process group on expiry and after exit (stragglers). Returns (stdout, stderr, timed_out).
    The child is left unreaped for the caller to wait().
    """
    sel = selectors.DefaultSelector()
    streams: dict[int, Capped] = {}
    assert proc.stdout is not None and proc.stderr is not None, "Sandbox.run pipes stdout and stderr"
    stdin_pipe = proc.stdin                 # piped when there is stdin to feed, else None
    for pipe, slack in ((proc.stdout, 0), (proc.stderr, TAIL)):
        fd = pipe.fileno()
        os.set_blocking(fd, False)
        streams[fd] = Capped(cap, slack)
        sel.register(fd, selectors.EVENT_READ)
    out_fd, err_fd = proc.stdout.fileno(), proc.stderr.fileno()
    pending = memoryview(stdin or b"")
    in_fd = None
    if stdin_pipe is not None:
        in_fd = stdin_pipe.fileno()
        os.set_blocking(in_fd, False)
        sel.register(in_fd, selectors.EVENT_WRITE)
    pidfd = _pidfd(proc.pid)
    if pidfd is not None:
        sel.register(pidfd, selectors.EVENT_READ)

    deadline = time.monotonic() + wall_s
    timed_out = exited = False
    open_reads = {out_fd, err_fd}
    try:
        while open_reads and not exited:
            now = time.monotonic()
            if now >= deadline:
                timed_out = True
                _kill_group(proc.pid)
                break
            wait = deadline - now if pidfd is not None else min(deadline - now, 0.005)
            for key, _ in sel.select(wait):
                fd = key.fd
                if fd == pidfd:
                    exited = True
                elif in_fd is not None and stdin_pipe is not None and fd == in_fd:
                    try:
                        pending = pending[os.write(in_fd, pending[:READ_CHUNK]):]
                    except (BrokenPipeError, OSError):
                        pending = pending[:0]
                    if not pending:
                        sel.unregister(in_fd)
                        stdin_pipe.close()
                        in_fd = None
                elif read_into(fd, streams[fd]) == 0:
                    sel.unregister(fd)
                    open_reads.discard(fd)
            if pidfd is None and _has_exited(proc):
                exited = True
        if exited or not open_reads:
            # The program has ended (or closed both pipes): what it wrote is already in the pipe
            # buffers (a writer blocks until we read). Take that, then kill stragglers holding the
            # pipes open instead of waiting for them; the unreaped leader keeps the pgid ours.
            for fd in open_reads:
                while read_into(fd, streams[fd]) > 0:
                    pass
            if not exited:
                timed_out = not _wait_exit(proc, pidfd, deadline)
            _kill_group(proc.pid)
    finally:
        sel.close()
        if pidfd is not None:
            os.close(pidfd)
        if in_fd is not None and stdin_pipe is not None:
            try:
                stdin_pipe.close()
            except OSError:
                pass
    return streams[out_fd], streams[err_fd], timed_out


def _has_exited(proc: subprocess.Popen) -> bool:
    """Exited, without reaping it (a reaped leader's pgid could be reused before we killpg it)."""
    try:
        return os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT | os.WNOHANG) is not None
    except ChildProcessError:
        return True


def _wait_exit(proc: subprocess.Popen, pidfd: int | None, deadline: float) -> bool:
    """Wait (without reaping) until the program ends or the deadline; True if it ended."""
    while not _has_exited(proc):
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        if pidfd is not None:
            poller = select.poll()                               # not select(2): fds >= 1024
            poller.register(pidfd, select.POLLIN)
            poller.poll(max(1, int(left * 1000) + 1))
        else:
            time.sleep(min(left, 0.005))
    return True


def _decode_status(rc: int, wrapped: bool) -> tuple[int | None, int | None]:
    """(returncode, signal). Through sh and bwrap a death by signal N arrives as exit 128+N."""
    if rc < 0:
        return None, -rc
    if wrapped and 128 < rc < 128 + 65:
        return None, rc - 128
    return rc, None


def _memory_exceeded(code: int | None, sig: int | None, stdout: bytes, stderr: bytes) -> bool:
    """Heuristic (no cgroup): the program failed and said it could not allocate.

    Under RLIMIT_AS an allocation fails (malloc returns NULL, mmap ENOMEM) instead of the kernel killing
    the program, and runtimes report it (MemoryError, bad_alloc, "out of memory", strerror(ENOMEM)). A
    bare SIGSEGV/SIGKILL is not counted: a segfault is more often a bug than a full address space.
    """
    if code == 0 and sig is None:
        return False
    return bool(_OOM_RE.search(stderr[-8192:]) or _OOM_RE.search(stdout[-4096:]))


class Sandbox:
    """Runs commands confined to a work dir; see docs/sandbox.md for the threat model."""

    def __init__(self, config: SandboxConfig | None = None):
        self.config = config or SandboxConfig()
        for path in self.config.ro_binds:
            if not os.path.exists(path):
                raise FileNotFoundError(f"SandboxConfig.ro_binds: {path!r} does not exist")
        self.backend = backends.choose_backend(self.config)
        self._helpers: dict[str, str] = {}
        self._programs: dict[tuple[str, str], str] = {}
        self._helper()
        self._workers = self._worker_set()
        if self._workers is not None:
            weakref.finalize(self, self._workers.close)

    def _worker_set(self) -> worker.WorkerSet | None:
        """Persistent workers for this sandbox, when configured and applicable (bwrap)."""
        if not (self.config.persistent and self.backend == "bwrap"):
            return None
        python = self.config.worker_python or find_program("python3", roots=("/usr", *backends.TOP_DIRS))
        return worker.WorkerSet(self.config, self._helper(), python)

    @property
    def workers_started(self) -> int:
        """How many persistent workers this sandbox has started (restarts included)."""
        return self._workers.started if self._workers is not None else 0

    @property
    def workers_cpu_s(self) -> float:
        """CPU seconds used inside this sandbox's persistent workers (their supervisors and every job run
        there), which the caller's rusage cannot see; 0.0 without persistent workers."""
        return self._workers.cpu_s() if self._workers is not None else 0.0

    def close(self) -> None:
        """Stop this sandbox's persistent workers (also done at exit); later runs start new ones."""
        if self._workers is not None:
            self._workers.close()

    def _helper(self) -> str:
        """The backend's program (bwrap, unshare), found by the rule of `program` and cached per PATH."""
        key = search_path()
        if key not in self._helpers:
            found = require_programs(backends.backend_programs(self.backend), f"backend {self.backend!r}")
            self._helpers[key] = backends.helper_path(found[self.backend]) if found else ""
        return self._helpers[key]

    @property
    def isolated(self) -> bool:
        return self.backend == "bwrap"

    def program(self, name: str, needed_for: str = "") -> str:
        """Absolute path of program `name` as runs of this sandbox exec it; ToolNotFound when missing.

        Looked up like the backend's helper (`sandboxes.tools.find_program`: the caller's PATH), taking
        the first hit under what the bwrap box mounts, whatever the backend (so the backend never
        changes which binary runs; a pyenv shim or venv script, useless in the box, is passed over).
        Cached per name and PATH."""
        key = (name, search_path())
        if key not in self._programs:
            self._programs[key] = self._locate(name, needed_for)
        return self._programs[key]

    def _locate(self, name: str, needed_for: str) -> str:
        path = find_program(name, roots=("/usr", *backends.TOP_DIRS, *self.config.ro_binds))
        if path is not None:
            return path
        elsewhere = find_program(name)
        if elsewhere is None:
            raise ToolNotFound(name, needed_for)
        raise ToolNotFound(name, needed_for, f"found only at {elsewhere}, which the sandbox does not mount "
                           "(it sees /usr, /bin, /lib* and SandboxConfig.ro_binds)")

    def run(self, argv: list[str], workdir: str | Path, *, stdin: bytes | None = None,
            limits: SandboxLimits | None = None, env: dict[str, str] | None = None) -> ExecResult:
        """Run argv with cwd = the work dir (seen inside the sandbox at /box; argv should use relative paths).
        Only the work dir is writable; private /tmp; /usr, /bin, /lib* read-only; no /home, no project.
        A bare program name is resolved by `program` (ToolNotFound when missing)."""
        return self._run(argv, workdir, stdin, limits, env, inline=False)

    def run_script(self, script: str, workdir: str | Path, *, stdin: bytes | None = None,
                   limits: SandboxLimits | None = None, env: dict[str, str] | None = None) -> ExecResult:
        """Run a POSIX sh script as `run(['/bin/sh', '-c', script], ...)` does, but in a subshell of the
        rlimit wrapper instead of a fresh sh: one exec less per run (~1.2 ms of CPU on a small VM, a
        fifth of a persistent job's overhead; `run_steps` saves the shell too). The process tree,
        limits, verdicts and caps are the same; only `$$` and `$PPID` differ (the wrapper's shell's)."""
        return self._run(["/bin/sh", "-c", script], workdir, stdin, limits, env, inline=True)

    def run_steps(self, job: Sequence[Step], workdir: str | Path, *, stdin: bytes | None = None,
                  limits: SandboxLimits | None = None, env: dict[str, str] | None = None) -> ExecResult:
        """Run a job given as steps (sandboxes/steps.py: programs in order, each optionally logged to a
        file, its status saved, stopping on failure): on a native persistent worker without any shell,
        one exec less than `run_script` of the same job; elsewhere as `run_script(steps.script(job))`.
        Results are the same either way. Bare program names are resolved as by `run`."""
        resolved = tuple(replace(s, argv=(self._resolve(s.argv[0]), *s.argv[1:])) for s in steps.validate(job))
        return self._run(["/bin/sh", "-c", steps.script(resolved)], workdir, stdin, limits, env, inline=True,
                         job_steps=resolved)

    def _resolve(self, program: str) -> str:
        return program if os.sep in program else self.program(program)

    def _run(self, argv: list[str], workdir: str | Path, stdin: bytes | None, limits: SandboxLimits | None,
             env: dict[str, str] | None, inline: bool, job_steps: tuple[Step, ...] | None = None) -> ExecResult:
        if not argv or not all(isinstance(a, str) for a in argv):
            raise ValueError(f"Sandbox.run: argv must be a non-empty list of strings, got {argv!r}")
        work = Path(workdir).resolve()
        if not work.is_dir():
            raise FileNotFoundError(f"Sandbox.run: work dir {str(workdir)!r} does not exist or is not a directory")
        argv = [self._resolve(argv[0]), *argv[1:]]
        lim = limits or self.config.limits
        box = self._workers.acquire() if self._workers is not None else None
        if box is not None:
            try:
                return self._run_persistent(box, argv, work, stdin, lim, env or {}, inline, job_steps)
            except OSError as exc:                              # the work dir could not be cloned
                backends.warn_once(f"clone:{exc.errno}", "sandbox: %s; such runs use per-call bwrap.", exc)
        launcher, popen_env, nproc = self._command(work, lim, env or {})
        wrapper, args = backends.wrapped(lim, nproc, argv, inline)
        start = time.monotonic()
        with _no_blocked_signals():
            proc = subprocess.Popen(
                [*launcher, *backends.sh_argv(wrapper, args)],
                cwd=work, env=popen_env, stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True, bufsize=0)
        try:
            out, err, timed_out = _pump(proc, stdin, float(lim.wall_s), int(lim.max_output_bytes))
        finally:
            _kill_group(proc.pid)
            rc = proc.wait()
            for pipe in (proc.stdout, proc.stderr):
                if pipe is not None:        # always piped (stdout=PIPE, stderr=PIPE above)
                    pipe.close()
        return self._result(rc, out, err, timed_out, time.monotonic() - start, lim)

    def _run_persistent(self, box: worker.Worker, argv: list[str], work: Path, stdin: bytes | None,
                        lim: SandboxLimits, env: dict[str, str], inline: bool,
                        job_steps: tuple[Step, ...] | None) -> ExecResult:
        """One run as a job of a persistent worker (same limits, verdicts and caps as per-call bwrap)."""
        assert self._workers is not None, "a persistent run needs the sandbox's worker set"
        cap = int(lim.max_output_bytes)
        out, err = Capped(cap), Capped(cap, TAIL)
        start, healthy = time.monotonic(), True
        try:                                                  # OSError before the job ran: per-call instead
            outcome = box.run(argv, inline, backends.box_env(env), work, lim, stdin, (out, err), job_steps)
            healthy = outcome.healthy
        except worker.JobRefused:
            healthy = False
            raise
        finally:
            self._workers.release(box, healthy)
        if outcome.worker_died:
            err.add(b"\nearl-sandbox: the persistent worker died during this run\n")
        res = self._result(outcome.rc, out, err, outcome.timed_out, time.monotonic() - start, lim)
        res.persistent = True
        return res

    # ------------------------------------------------------------ helpers

    def _command(self, work: Path, lim: SandboxLimits, env: dict[str, str]) -> tuple[list[str], dict[str, str], bool]:
        """(launcher argv, env for Popen, whether to set RLIMIT_NPROC); the sh wrapper and argv follow.

        RLIMIT_NPROC is set only where it counts this run's processes: in a fresh user namespace
        (bwrap, unshare), or under the dropped uid; never on a caller's own uid (it would count all of
        the caller's processes) and pointlessly on root (not enforced)."""
        binds = [str(work), *self.config.ro_binds] if self.backend == "bwrap" else []
        prefix, dropped = backends.launch_prefix(self.backend, binds)
        prefix = [*backends.default_signals_prefix(), *prefix]
        if dropped:
            backends.hand_over(work, backends.sandbox_uid(self.backend))
        if self.backend == "bwrap":
            bwrap = backends.bwrap_argv(self.config, lim, backends.box_env(env), work, self._helper())
            launcher = [*prefix, *bwrap]
            return launcher, {"PATH": BASE_PATH}, True
        host_env = {"PATH": BASE_PATH, "HOME": str(work), "LANG": "C.UTF-8", **env}
        if self.backend == "unshare":
            unshare = backends.unshare_argv(self.config, self._helper())
            return [*prefix, *unshare], host_env, True
        return prefix, host_env, dropped

    def _result(self, rc: int, out: Capped, err: Capped, timed_out: bool, wall: float,
                lim: SandboxLimits) -> ExecResult:
        stdout, out_cut, _ = out.finish()
        stderr, err_cut, cpu = err.finish(strip_report=True)
        code, sig = (None, signals.SIGKILL) if timed_out else _decode_status(rc, wrapped=True)
        cpu_hit = not timed_out and (sig == signals.SIGXCPU or
                                     (sig == signals.SIGKILL and cpu >= 0.8 * lim.cpu_s))
        mem = not (timed_out or cpu_hit) and _memory_exceeded(code, sig, stdout, stderr)
        return ExecResult(
            returncode=code, signal=sig, timed_out=timed_out, memory_exceeded=mem, cpu_exceeded=cpu_hit,
            output_truncated=out_cut or err_cut,
            stdout=stdout.decode("utf-8", errors="replace"), stderr=stderr.decode("utf-8", errors="replace"),
            wall_s=wall, cpu_s=cpu, isolated=self.isolated, backend=self.backend)
