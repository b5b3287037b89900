"""The persistent worker's supervisor: runs INSIDE a long-lived bwrap box, one job at a time.

Started as `python3 -I -S -c <this file> <socket fd> <tree fd>` by sandboxes/worker.py, with the system Python
(stdlib only, no project imports: the project is not mounted). It holds CAP_SYS_ADMIN in the box's user
namespace (and nothing outside it) so that each job can get fresh namespaces without bwrap's mount
set-up. Per job request (sandboxes/worker.py: NUL-ended fields + the job's stdin/stdout/stderr fds over a
SOCK_SEQPACKET socket). The native supervisor (supervisor.c) does the same, with its P as the job's init
instead of a `sh`; this one runs where that cannot be built or started:

    supervisor: clone3 into fresh PID, mount, IPC and UTS namespaces
      --> P, pid 1 of the new PID namespace: private /tmp and /dev/shm (tmpfs);
          the job's work dir, a detached mount the host cloned with open_tree(2), attached at /box; a
          fresh /proc; unshare(user) -> uid 65534 with no capabilities anywhere above it; setsid, cwd
          /box, fds 0-2 only, clean env; exec the job's init, a `sh` (INIT) whose subshell (pid 2) runs
          the rlimit wrapper around the program (pid 3), the same tree as per-call bwrap's

One Python child per job (a fork of a Python process pays copy-on-write faults for every page it then
touches; the shell forks after it are cheap). The supervisor is non-dumpable and lives in the parent PID
namespace, so a job can neither name it nor ptrace it; pid 1 ignores every signal sent from inside its
namespace that it has no handler for (sh installs none), so `kill -9 -1` or `kill 1` cannot end the
init early. The wall clock is the supervisor's: on expiry it SIGKILLs P, and the kernel kills every
process of P's PID namespace (setsid escapes included) before P's exit is reported, so when the
supervisor replies nothing of the job is left. Replies: {"rc": <exit code or 128+signal>, "timed_out": bool}.
"""
import ctypes
import gc
import json
import os
import select
import signal
import socket
import sys
import time

CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC = 0x00020000, 0x04000000, 0x08000000
CLONE_NEWUSER, CLONE_NEWPID = 0x10000000, 0x20000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_BIND, MS_REC, MS_PRIVATE = 1, 2, 4, 8, 4096, 16384, 1 << 18
PR_SET_PDEATHSIG, PR_SET_DUMPABLE = 1, 4
SYS_OPEN_TREE, SYS_MOVE_MOUNT, SYS_CLONE3 = 428, 429, 435        # the same on every architecture (5.2, 5.3)
CLONE_PIDFD = 0x1000
OPEN_TREE_CLONE, OPEN_TREE_CLOEXEC, AT_RECURSIVE = 1, os.O_CLOEXEC, 0x8000
MOVE_MOUNT_F_EMPTY_PATH, AT_FDCWD = 0x4, -100
STDOUT, STDERR, TREE, STDIN = range(4)                           # the order of a request's fds
SETUP_FAILED = 125
SANDBOX_UID = 65534
FD_BOUND = 1 << 30          # above any fd number: the trainer's (kept by pass_fds) may exceed 65535
libc = ctypes.CDLL(None, use_errno=True)


def check(rc, what):
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def mount(src, dst, fstype, flags, data=None):
    def enc(s):
        return None if s is None else s.encode()
    check(libc.mount(enc(src), enc(dst), enc(fstype), flags, enc(data)), f"mount {dst}")


def fail(message):
    """Setup error inside a job process: say so on the job's stderr (fd 2 by then, or the passed one)."""
    try:
        os.write(2, f"earl-sandbox: {message}\n".encode())
    finally:
        os._exit(SETUP_FAILED)


def close_all(fds):
    for fd in set(fds):
        os.close(fd)


def status_code(status):
    """A child's wait status as a shell would report it: the code, or 128 + the signal."""
    return os.WEXITSTATUS(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)


def job_namespaces(req, fds):
    """In P: a private mount tree with a fresh /tmp, /dev/shm and /proc, the job's work dir at /box."""
    mount(None, "/", None, MS_REC | MS_PRIVATE)                     # P's own mount namespace (clone3)
    size = f"size={int(req['tmp_bytes'])},mode=1777"
    keep = [(path, clone(path)) for path in req.get("under_tmp", ())]   # ro_binds the new /tmp would hide
    mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, size)
    mount("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, size)
    for path, fd in keep:
        os.makedirs(path, exist_ok=True)
        check(libc.syscall(SYS_MOVE_MOUNT, fd, b"", AT_FDCWD, path.encode(), MOVE_MOUNT_F_EMPTY_PATH), path)
        os.close(fd)
    check(libc.syscall(SYS_MOVE_MOUNT, fds[TREE], b"", AT_FDCWD, b"/box", MOVE_MOUNT_F_EMPTY_PATH),
          "move_mount /box")
    mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)     # P is pid 1 of its own namespace


def clone(path):
    """fd of a detached copy of the (read-only) mount at `path`, to attach again above a fresh tmpfs."""
    fd = libc.syscall(SYS_OPEN_TREE, AT_FDCWD, path.encode(), OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE)
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"open_tree {path}: {os.strerror(err)}")
    return fd


SYS_RT_SIGACTION = {"x86_64": 13, "aarch64": 134}.get(os.uname().machine)


def reset_signals():
    """Default dispositions, once, in the supervisor (every job's P inherits them; per job it cost ~0.5 ms of
    CPU): Python's own ignores (SIGPIPE, SIGXFSZ) and whatever the trainer inherited (`nohup` ignores SIGHUP)
    would otherwise survive the job's exec. Signals the C library keeps for itself (32, 33) are reset with
    the raw syscall: an ignore inherited there survives exec too. The supervisor needs no handler: a
    signal that ends it ends the worker, which the host sees and replaces."""
    for sig in signal.valid_signals():
        if sig not in (signal.SIGKILL, signal.SIGSTOP):
            signal.signal(sig, signal.SIG_DFL)
    if SYS_RT_SIGACTION is None:
        return
    default = (ctypes.c_ulong * 4)()          # struct kernel_sigaction: handler SIG_DFL, flags, restorer, mask
    for sig in (32, 33):
        libc.syscall(SYS_RT_SIGACTION, sig, ctypes.byref(default), None, 8)


def exec_job(req, fds):
    """In P, after its mounts: drop into a new user namespace (no capabilities, uid 65534), then exec the
    job's init."""
    uid, gid = os.getuid(), os.getgid()
    check(libc.prctl(PR_SET_DUMPABLE, 1, 0, 0, 0), "dumpable")   # to write our own maps (exec resets it anyway)
    check(libc.unshare(CLONE_NEWUSER), "unshare user")
    for name, text in (("setgroups", "deny"), ("uid_map", f"{SANDBOX_UID} {uid} 1"),
                       ("gid_map", f"{SANDBOX_UID} {gid} 1")):
        fd = os.open(f"/proc/self/{name}", os.O_WRONLY)
        os.write(fd, text.encode())
        os.close(fd)
    os.setsid()
    os.chdir("/box")
    stdin = fds[STDIN] if len(fds) > STDIN else os.open("/dev/null", os.O_RDONLY)
    for target, fd in ((0, stdin), (1, fds[STDOUT]), (2, fds[STDERR])):
        os.dup2(fd, target)
    os.closerange(3, FD_BOUND)                 # close_range(2): costs the open fds, not the span
    os.execve(req["argv"][0], req["argv"], req["env"])


def job_process(req, fds):
    """P: the job's namespaces and mounts, then its init. Never returns."""
    try:
        os.dup2(fds[STDERR], 2)                                    # setup errors reach the job's stderr
        check(libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "pdeathsig")
        job_namespaces(req, fds)
        exec_job(req, fds)
    except BaseException as exc:  # noqa: BLE001 - a forked child must never return into our loop
        fail(f"cannot set up the job: {exc}")


class CloneArgs(ctypes.Structure):
    _fields_ = [(name, ctypes.c_uint64) for name in ("flags", "pidfd", "child_tid", "parent_tid", "exit_signal",
                                                     "stack", "stack_size", "tls")]


def fork_job(req, fds):
    """Fork P with clone3(2) straight into fresh PID, mount, IPC and UTS namespaces (P is pid 1 of its
    PID namespace); returns (pid, pidfd). Like fork (no new stack), without libc's fork bookkeeping
    (atfork handlers, the cached thread id): safe here because this process is single-threaded and P runs
    only a little Python (mounts, the user namespace, dup2) before it execs or _exits. A clone3 refused
    (seccomp: ENOSYS) fails the worker's self-test, and runs fall back to per-call bwrap.

    Not unshare + fork: a second unshare(CLONE_NEWPID) needs setns back to our own PID namespace, which
    bwrap's nested user namespace forbids; that would cost a second Python fork per job."""
    pidfd = ctypes.c_int(-1)
    args = CloneArgs(flags=CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_PIDFD,
                     pidfd=ctypes.addressof(pidfd), exit_signal=signal.SIGCHLD)
    pid = libc.syscall(SYS_CLONE3, ctypes.byref(args), ctypes.sizeof(args))
    if pid < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"clone3: {os.strerror(err)}")
    if pid == 0:
        job_process(req, fds)
    return pid, pidfd.value


def run_job(sock, req, fds):
    """Fork P, wait for it under the wall clock; SIGKILL it on expiry. Returns the reply."""
    start = time.monotonic()
    try:
        pid, pidfd = fork_job(req, fds)
    finally:
        close_all(fds)
    timed_out = host_gone = exited = False
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    poller.register(sock, select.POLLIN)
    try:
        deadline = start + float(req["wall_s"])
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                timed_out = True
                break
            ready = {fd for fd, _ in poller.poll(max(1, int(min(left, 3600) * 1000 + 0.999)))}
            if pidfd in ready:
                exited = True
                break
            if sock.fileno() in ready:                             # a request mid-job: the host is gone
                host_gone = True
                break
    finally:
        if not exited:                     # any way out but P's own exit: P and its namespace die now
            os.kill(pid, signal.SIGKILL)
        try:
            _, status = os.waitpid(pid, 0)
        finally:
            os.close(pidfd)
    if host_gone:
        sys.exit(0)
    return {"rc": status_code(status), "timed_out": timed_out, "cpu_s": worker_cpu_s()}


def worker_cpu_s():
    """CPU seconds this worker has used so far: the supervisor's own and its reaped jobs' (each job's P
    reaps everything of the job), what the host cannot see until the worker exits."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def parse(msg):
    """A request (sandboxes/worker.py, `encode_request`): NUL-ended fields."""
    fields = msg.decode("utf-8", "surrogateescape").split("\0")
    if fields.pop() != "" or fields[0] != "earl-job-1":
        raise ValueError("malformed request")
    at = 4 + int(fields[3])
    argc = int(fields[at])
    argv = fields[at + 1:at + 1 + argc]
    envc = int(fields[at + 1 + argc])
    env = fields[at + 2 + argc:]
    if not argv or len(env) != envc:
        raise ValueError("malformed request")
    return {"wall_s": float(fields[1]), "tmp_bytes": int(fields[2]), "under_tmp": fields[4:at], "argv": argv,
            "env": dict(entry.split("=", 1) for entry in env)}


def serve(sock):
    while True:
        try:
            msg, fds, _, _ = socket.recv_fds(sock, 1 << 20, 4)
        except OSError:
            return
        if not msg:
            return                                                 # EOF: the host closed or died
        try:
            req = parse(msg)
        except (ValueError, IndexError) as exc:
            close_all(fds)
            reply = {"error": f"malformed request: {exc}"}
            sock.send(json.dumps(reply).encode())
            continue
        try:
            reply = run_job(sock, req, fds)
        except Exception as exc:  # noqa: BLE001 - report, keep serving
            reply = {"error": f"{type(exc).__name__}: {exc}"}
        sock.send(json.dumps(reply).encode())


def self_test(tree):
    """One real job (`true` through every step, over the empty dir `tree`) before saying ready: nested
    namespaces or attaching a detached mount may be refused here."""
    r, w = os.pipe()
    req = {"argv": ["/bin/true"], "env": {}, "wall_s": 30, "tmp_bytes": 1 << 20}
    try:
        pid, pidfd = fork_job(req, [w, w, tree])
    finally:
        close_all([w, tree])
    os.close(pidfd)
    _, status = os.waitpid(pid, 0)
    err = os.read(r, 4096).decode(errors="replace").strip()
    os.close(r)
    return status_code(status) == 0, err


def main():
    # A job's P is a fork of this process: every page either side writes afterwards is copied. No cyclic
    # GC (it would walk, and write to, every tracked object; the loop makes no cycles) keeps that small.
    reset_signals()
    signal.pthread_sigmask(signal.SIG_SETMASK, [])   # the spawning thread's blocked mask survives exec too
    gc.disable()
    gc.freeze()
    sock = socket.socket(fileno=int(sys.argv[1]))
    sock.set_inheritable(False)                  # pass_fds made it inheritable: no job may hold it
    check(libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0), "dumpable")
    ok, err = self_test(int(sys.argv[2]))
    sock.send(json.dumps({"ready": ok, "error": err}).encode())
    if ok:
        serve(sock)


main()
