"""Persistent bwrap workers: bwrap's set-up (namespaces, ~20 mounts: 15-25 ms) paid once per worker, not
per run. Each worker is one long-lived bwrap box running a supervisor, which gives every job fresh
namespaces of its own (see sandboxes/_supervisor.py and docs/sandbox.md for the isolation argument): the
native one (sandboxes/supervisor.c, built by sandboxes/native.py; a job costs a fork of a small C process)
or, where it cannot be built or started, the Python one (the same protocol; ~2 ms more CPU a job).

A job's work dir reaches the box as a detached mount: the host clones it with open_tree(2) (root only,
like bwrap's bind as root) and passes the fd with the job's stdin/stdout/stderr by SCM_RIGHTS; the job
attaches it at /box in its own mount namespace. Callers keep their paths, share dirs between concurrent
runs as before, and read what the job wrote. The host pumps the job's output itself, so the output caps
are those of a per-call run; the wall clock is the supervisor's, with a host-side backstop that kills a
worker that stops answering.

A request is one SOCK_SEQPACKET message of NUL-ended fields (`encode_request`; both supervisors parse it):
    earl-job-1, wall_s, tmp_bytes, n, n paths under /tmp to keep, argc, argv..., envc, KEY=VALUE...
with the fds stdout, stderr, work-dir tree[, stdin]. The reply is JSON: {"rc", "timed_out", "cpu_s"} or
{"error"}. A job given as steps (sandboxes/steps.py) goes to a native supervisor as `earl-job-2`, with the
rlimits and steps in place of argv (supervisor.c), and runs without a shell; the Python one gets its script.
"""
from __future__ import annotations

import concurrent.futures as cf
import ctypes
import json
import os
import select
import shutil
import signal as signals
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from sandboxes import backends, native, steps
from sandboxes.backends import BASE_PATH, warn_once
from sandboxes.capture import read_into
from sandboxes.limits import SandboxConfig, SandboxLimits
from sandboxes.steps import Step

SUPERVISOR = (Path(__file__).with_name("_supervisor.py")).read_text()
READY_TIMEOUT_S = 30.0         # start-up of a worker (bwrap + Python + its self-test job)
BACKSTOP_S = 10.0              # extra wall time after which a silent supervisor counts as dead
DRAIN_S = 2.0                  # reading what is left in the pipes once the job is over
SYS_OPEN_TREE, SYS_MOUNT_SETATTR = 428, 442          # the same numbers on every architecture (5.2, 5.12)
OPEN_TREE_CLONE, OPEN_TREE_CLOEXEC, AT_EMPTY_PATH, AT_FDCWD = 1, os.O_CLOEXEC, 0x1000, -100
MOUNT_ATTR_NOSUID, MOUNT_ATTR_NODEV = 0x2, 0x4
_libc = ctypes.CDLL(None, use_errno=True)
# Spawned from one long-lived thread: bwrap's --die-with-parent is a parent-death signal, which fires
# when the *thread* that forked it ends, and pool or caller threads may be short-lived.
_SPAWNER = cf.ThreadPoolExecutor(max_workers=1, thread_name_prefix="earl-sbx-spawn")


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


def clone_tree(path: Path) -> int:
    """fd of a detached copy of the mount at `path` (nosuid, nodev), for a job to attach at /box.

    Needs CAP_SYS_ADMIN over the host's mount namespace (root); OSError otherwise."""
    fd = _libc.syscall(SYS_OPEN_TREE, AT_FDCWD, os.fsencode(path), OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC)
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"open_tree({path}): {os.strerror(err)}")
    attr = _MountAttr(MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV, 0, 0, 0)
    if _libc.syscall(SYS_MOUNT_SETATTR, fd, b"", AT_EMPTY_PATH, ctypes.byref(attr), ctypes.sizeof(attr)) != 0:
        err = ctypes.get_errno()
        os.close(fd)
        raise OSError(err, f"mount_setattr({path}): {os.strerror(err)}")
    return fd


REQUEST_TAG, STEPS_TAG = "earl-job-1", "earl-job-2"


def encode_request(argv: list[str], env: dict[str, str], wall_s: float, tmp_bytes: int,
                   under_tmp: list[str], direct: tuple[list[backends.Rlimit], tuple[Step, ...]] | None = None) -> bytes:
    """One job request (the module docstring's layout). NUL cannot occur in an argv, env or path.
    `direct`: (rlimits, steps) that the native supervisor runs without a shell, instead of argv."""
    if direct is None:
        tag, body = REQUEST_TAG, [str(len(argv)), *argv]
    else:
        rlimits, job_steps = direct
        tag = STEPS_TAG
        body = [str(len(rlimits)), *(str(v) for r in rlimits for v in (r.resource, r.soft, r.hard)),
                *steps.fields(job_steps)]
    fields = [tag, repr(float(wall_s)), str(int(tmp_bytes)), str(len(under_tmp)), *under_tmp,
              *body, str(len(env)), *(f"{k}={v}" for k, v in env.items())]
    if any("\0" in f for f in fields):
        raise ValueError("a sandbox argv, env entry or path cannot contain NUL")
    return "".join(f + "\0" for f in fields).encode("utf-8", "surrogateescape")


@dataclass(frozen=True)
class Supervisor:
    """What a worker's box runs: the native build (passed to bwrap as an fd: nothing of it is visible in
    the box) or the Python one (`program` is then the interpreter under /usr)."""
    kind: str           # "native" | "python"
    program: str

    def argv(self, sock: int, tree: int, binary: int | None) -> list[str]:
        if self.kind == "native":
            return [f"/proc/self/fd/{binary}", str(sock), str(tree), str(binary)]
        return [self.program, "-I", "-S", "-c", SUPERVISOR, str(sock), str(tree)]

    def job_argv(self, script: str, args: list[str]) -> list[str]:
        """What a job's P runs: the native P is the job's init itself and execs the rlimit wrapper; the
        Python one execs an init `sh` around it (`job_argv`)."""
        if self.kind == "native":
            return backends.sh_argv(script, args)
        return job_argv(script, args)


def supervisors(config: SandboxConfig, python: str | None) -> tuple[list[Supervisor], list[str]]:
    """The supervisors to try, best first, for `config.worker_supervisor`, and why any were left out."""
    chosen, why = [], []
    if config.worker_supervisor in ("auto", "native"):
        binary, reason = native.supervisor_binary()
        if binary is not None:
            chosen.append(Supervisor("native", str(binary)))
        else:
            why.append(f"native supervisor: {reason}")
    if config.worker_supervisor in ("auto", "python"):
        if python:
            chosen.append(Supervisor("python", python))
        else:
            why.append("Python supervisor: no python3 under /usr")
    return chosen, why


class JobRefused(OSError):
    """The supervisor answered a request with an error before running it (the worker is discarded; the
    caller runs that job per call)."""


class WorkerError(RuntimeError):
    """A worker could not start or stopped answering (the caller falls back or restarts it)."""


@dataclass
class JobOutcome:
    rc: int                    # the wrapper's exit code, or 128 + signal (as through per-call bwrap)
    timed_out: bool
    worker_died: bool = False  # the worker broke mid-job (it is discarded; the next job gets a new one)
    healthy: bool = True       # the worker may take the next job


class Worker:
    """One bwrap box with a supervisor in it, talking over a SOCK_SEQPACKET socket; one job at a time."""

    def __init__(self, config: SandboxConfig, bwrap: str, supervisor: Supervisor):
        self.supervisor = supervisor
        prefix, self.dropped = backends.launch_prefix("bwrap", list(config.ro_binds))
        self.under_tmp = [p for p in config.ro_binds if _under(p, ("/tmp", "/dev/shm"))]
        # bwrap's and Python's own errors (a file: a pipe nobody reads could fill and block the worker)
        self.log = tempfile.TemporaryFile(prefix="earl-sbx-worker-")  # noqa: SIM115 - lives with the worker
        self.cpu_s = 0.0       # CPU the box has used (supervisor + jobs), as of its last reply
        probe = Path(tempfile.mkdtemp(prefix="earl-sbx-probe-"))        # /box of the self-test job
        if self.dropped:
            backends.hand_over(probe)
        try:
            self.proc, self.sock = self._spawn(config, bwrap, prefix, probe)
            self._await_ready()
        finally:
            shutil.rmtree(probe, ignore_errors=True)

    def _spawn(self, config: SandboxConfig, bwrap: str, prefix: list[str],
               probe: Path) -> tuple[subprocess.Popen, socket.socket]:
        binary = None
        try:
            tree = clone_tree(probe)
            if self.supervisor.kind == "native":
                binary = os.open(self.supervisor.program, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            self.log.close()
            raise WorkerError(str(exc)) from exc
        host, inside = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        argv = [*prefix, *backends.worker_bwrap_argv(config, bwrap),
                *self.supervisor.argv(inside.fileno(), tree, binary)]
        passed = (inside.fileno(), tree, *([binary] if binary is not None else []))
        try:
            proc = _SPAWNER.submit(
                subprocess.Popen, argv, pass_fds=passed, env={"PATH": BASE_PATH},
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self.log,
                start_new_session=True).result()
        except OSError as exc:
            host.close()
            self.log.close()
            raise WorkerError(f"cannot start bwrap: {exc}") from exc
        finally:
            inside.close()
            os.close(tree)
            if binary is not None:
                os.close(binary)
        return proc, host

    def _await_ready(self) -> None:
        reply = self._recv(time.monotonic() + READY_TIMEOUT_S)
        if reply is None or not reply.get("ready"):
            why = reply.get("error") if reply else self._stderr_tail()
            self.close()
            raise WorkerError(f"the worker ({self.supervisor.kind} supervisor) did not start: {why or 'no reply'}")

    def _stderr_tail(self) -> str:
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        self.log.seek(0)
        return self.log.read(4000).decode(errors="replace").strip()[-500:]

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def run(self, argv: list[str], inline: bool, env: dict[str, str], work: Path, lim: SandboxLimits,
            stdin: bytes | None, sinks: tuple, job_steps: tuple[Step, ...] | None = None) -> JobOutcome:
        """Run one job over `work`: argv under the rlimit wrapper (`backends.wrapped`, `inline` as there);
        `sinks` are the (stdout, stderr) Capped buffers its output goes to. `job_steps`: the same job as
        steps (argv is their script), which a native supervisor runs without a shell. OSError (before
        anything ran) when `work` cannot be cloned."""
        direct = None
        if job_steps is not None and self.supervisor.kind == "native":
            direct = (backends.rlimits(lim, True), job_steps)
            argv, env = [], {**env, "PWD": backends.BOX}    # what the wrapper's sh exports to its programs
        else:
            argv = self.supervisor.job_argv(*backends.wrapped(lim, True, argv, inline))
        request = encode_request(argv, env, lim.wall_s, int(lim.max_file_mb) * 1024 * 1024, self.under_tmp, direct)
        if self.dropped:
            backends.hand_over(work)
        tree = clone_tree(work)
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        fds, in_w = [out_w, err_w, tree], None
        if stdin is not None:
            in_r, in_w = os.pipe()
            fds.append(in_r)
        try:
            socket.send_fds(self.sock, [request], fds)
        except OSError:
            for fd in (out_r, err_r, *([in_w] if in_w is not None else [])):
                os.close(fd)
            self.kill()
            return JobOutcome(rc=128 + signals.SIGKILL, timed_out=False, worker_died=True, healthy=False)
        finally:
            for fd in fds:                                        # the job's ends now live in the box
                os.close(fd)
        deadline = time.monotonic() + float(lim.wall_s) + BACKSTOP_S
        return self._pump(out_r, err_r, in_w, memoryview(stdin or b""), sinks, deadline)

    def _pump(self, out_r: int, err_r: int, in_w: int | None, pending: memoryview, sinks: tuple,
              deadline: float) -> JobOutcome:
        """Read the job's output into the capped sinks and feed its stdin until the supervisor replies.
        poll(2), not select(2): a trainer may hold more than 1024 fds, and select cannot watch those."""
        streams = {out_r: sinks[0], err_r: sinks[1]}
        poller, sock = select.poll(), self.sock.fileno()
        for fd in streams:
            os.set_blocking(fd, False)
            poller.register(fd, select.POLLIN)
        poller.register(sock, select.POLLIN)
        if in_w is not None:
            os.set_blocking(in_w, False)
            poller.register(in_w, select.POLLOUT)
        reads, reply = set(streams), None
        try:
            while reply is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                events = poller.poll(_ms(left))
                for fd, _ in events:
                    if fd == sock:
                        reply = self._recv_now()
                    elif in_w is not None and fd == in_w:
                        pending = _feed(in_w, pending)
                        if not pending:
                            poller.unregister(in_w)
                            os.close(in_w)
                            in_w = None
                    elif fd in reads and read_into(fd, streams[fd]) == 0:
                        poller.unregister(fd)
                        reads.discard(fd)
                if reply is None and any(fd == sock for fd, _ in events):
                    break                                         # EOF or garbage: the worker is gone
            _drain(reads, streams)
        finally:
            for fd in (out_r, err_r, *([in_w] if in_w is not None else [])):
                _close_quietly(fd)
        return self._outcome(reply)

    def _outcome(self, reply: dict | None) -> JobOutcome:
        if reply is not None and "error" in reply:                # refused before the job ran
            self.kill()
            raise JobRefused(f"the persistent worker refused a job ({reply['error']})")
        if reply is None or "rc" not in reply:
            timed_out = reply is None and self.alive              # the backstop: a silent supervisor
            self.kill()
            return JobOutcome(rc=128 + signals.SIGKILL, timed_out=timed_out, worker_died=not timed_out,
                              healthy=False)
        cpu = reply.get("cpu_s")
        if isinstance(cpu, (int, float)) and cpu >= self.cpu_s:
            self.cpu_s = float(cpu)
        return JobOutcome(rc=int(reply["rc"]), timed_out=bool(reply["timed_out"]))

    def _recv_now(self) -> dict | None:
        try:
            msg = self.sock.recv(1 << 16)
            return json.loads(msg) if msg else None
        except (OSError, ValueError):
            return None

    def _recv(self, deadline: float) -> dict | None:
        poller = select.poll()
        poller.register(self.sock.fileno(), select.POLLIN)
        left = deadline - time.monotonic()
        if left <= 0 or not poller.poll(_ms(left)):
            return None
        return self._recv_now()

    def kill(self) -> None:
        """SIGKILL the whole box (bwrap's process group; --die-with-parent takes the rest)."""
        try:
            os.killpg(self.proc.pid, signals.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def close(self) -> None:
        """Stop the worker: its socket's EOF ends the supervisor; then the group is killed."""
        self.sock.close()
        try:
            self.proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            pass
        self.kill()
        self.proc.wait()
        self.log.close()


def _under(path: str, roots: tuple[str, ...]) -> bool:
    return any(path == r or path.startswith(r + "/") for r in roots)


def _feed(fd: int, pending: memoryview) -> memoryview:
    try:
        return pending[os.write(fd, pending[:65536]):]
    except (BlockingIOError, InterruptedError):
        return pending
    except OSError:                                              # the job closed its stdin
        return pending[:0]


def _drain(reads: set[int], streams: dict) -> None:
    """After the reply every job process is dead (its PID namespace is gone), so the pipes hit EOF."""
    deadline = time.monotonic() + DRAIN_S
    poller = select.poll()
    for fd in reads:
        poller.register(fd, select.POLLIN)
    while reads and (left := deadline - time.monotonic()) > 0:
        for fd, _ in poller.poll(_ms(left)):
            if read_into(fd, streams[fd]) == 0:
                poller.unregister(fd)
                reads.discard(fd)


def _ms(seconds: float) -> int:
    """A poll(2) timeout: whole milliseconds, rounded up (0 would spin)."""
    return max(1, int(seconds * 1000) + 1)


def _close_quietly(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass


class WorkerSet:
    """Idle workers of one Sandbox: a run takes one (starting a new one if none is idle) and gives it back,
    so there are as many workers as runs have ever been concurrent. A worker that broke is dropped and
    replaced by the next run. If the first worker cannot start on the native supervisor, the Python one is
    tried; if none starts, persistent mode is off for this set (one warning) and the caller runs per-call
    bwrap instead."""

    def __init__(self, config: SandboxConfig, bwrap: str, python: str | None):
        self.config, self.bwrap = config, bwrap
        self.supervisors, left_out = supervisors(config, python)
        for why in left_out if self.supervisors else ():      # none left: the one warning below says why
            warn_once(f"worker-{why}", "sandbox: %s; persistent workers use the %s supervisor.", why,
                      self.supervisors[0].kind)
        self._idle: list[Worker] = []
        self._lock = threading.Lock()
        self._all: set[Worker] = set()
        self.broken: str | None = None if self.supervisors else "; ".join(left_out)
        if self.broken:
            warn_once("worker-none", "sandbox: persistent worker unavailable (%s); using per-call bwrap.",
                      self.broken)
        self._started_once = False
        self.started = 0
        self._gone_cpu_s = 0.0

    @property
    def supervisor(self) -> Supervisor | None:
        """The supervisor new workers run (None: persistent mode is off)."""
        with self._lock:
            return self.supervisors[0] if self.supervisors and self.broken is None else None

    def acquire(self) -> Worker | None:
        """An idle or new worker; None when persistent mode is (now) off."""
        with self._lock:
            while self._idle:
                worker = self._idle.pop()
                if worker.alive:
                    return worker
                self._discard(worker)
        while (supervisor := self.supervisor) is not None:
            try:
                worker = Worker(self.config, self.bwrap, supervisor)
            except WorkerError as exc:
                if not self._give_up_on(supervisor, exc):
                    return None
                continue
            with self._lock:
                self._started_once = True
                self.started += 1
                self._all.add(worker)
            return worker
        return None

    def _give_up_on(self, supervisor: Supervisor, exc: WorkerError) -> bool:
        """A worker failed to start: before any has started, drop its supervisor (True: try the next one);
        after, this run goes per-call (False) and the next run tries again."""
        with self._lock:
            first = not self._started_once
            if first and self.supervisors and self.supervisors[0] == supervisor:
                self.supervisors.pop(0)
                if not self.supervisors:
                    self.broken = str(exc)
            following = self.supervisors[0].kind if first and self.supervisors else None
        if following is not None:
            warn_once(f"worker-start-{supervisor.kind}", "sandbox: %s; trying the %s supervisor.", exc, following)
            return True
        warn_once("worker-start", "sandbox: persistent worker unavailable (%s); falling back to per-call "
                  "bwrap (slower, same isolation).", exc)
        return False

    def release(self, worker: Worker, healthy: bool) -> None:
        with self._lock:
            if healthy and worker.alive:
                self._idle.append(worker)
                return
            self._discard(worker)

    def _discard(self, worker: Worker) -> None:
        self._all.discard(worker)
        self._gone_cpu_s += worker.cpu_s
        worker.close()

    def cpu_s(self) -> float:
        """CPU seconds used inside this set's workers (supervisors and jobs, as of their last replies),
        closed ones included: the host's rusage never sees it (jobs are reaped in the box)."""
        with self._lock:
            return self._gone_cpu_s + sum(w.cpu_s for w in self._all)

    def pids(self) -> list[int]:
        """Host pids of the live workers' bwrap processes (each heads its own process group)."""
        with self._lock:
            return [w.proc.pid for w in self._all if w.alive]

    def close(self) -> None:
        with self._lock:
            workers, self._idle, self._all = list(self._all), [], set()
            self._gone_cpu_s += sum(w.cpu_s for w in workers)
        for worker in workers:
            worker.close()


def job_argv(script: str, argv: list[str]) -> list[str]:
    """What a job's P execs: its init (pid 1 of the job's PID namespace), a `sh` whose subshell (pid 2)
    runs the rlimit wrapper `script` around argv (pid 3): the tree of a per-call bwrap run (bwrap's init,
    the wrapper, the program), so a program that kills its parent or `kill -9 -1` gets the same verdict.
    pid 1 only waits. Signals from inside its namespace reach it only where it has a handler: sh would
    catch SIGINT and exit 130, so it traps the catchable ones with `:` (caught, not ignored: the subshell
    and the program start with default dispositions, as per call)."""
    return backends.sh_argv(f"{INIT_TRAPS}\n(\n{script.rstrip()}\n)\nexit $?\n", argv)


INIT_TRAPS = "trap : HUP INT QUIT TERM USR1 USR2 ALRM"
