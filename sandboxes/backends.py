"""Command lines that confine one program: bubblewrap, `unshare`, or rlimits only.

Every backend runs the program under a tiny /bin/sh wrapper that sets the rlimits with `ulimit` (one
exec, cheaper than Python's preexec_fn, which forces a full fork of a possibly huge trainer process) and
then reports the children's CPU time (`times`) on its stderr after a marker line; the runner strips that
report off. (Not a side pipe: dash can only name fds 0-9 in `>&N`, and reopening a pipe through
/proc/self/fd is permission-checked against the pipe's owner after the uid drop.)

Why the uid dance: the kernel never enforces RLIMIT_NPROC for kuid 0, and a user namespace that maps
the sandbox uid to root still runs as kuid 0. So when we are root we first drop to an unprivileged uid
(`setpriv`) and let bwrap map it; each run then gets its own user namespace, in
which the kernel counts processes separately (Linux >= 5.14 ucounts), so concurrent sandboxes do not
share the budget. bwrap resolves bind sources with the caller's uid, so the work dir's parents must be
traversable by that uid; when they are not (e.g. pytest's 0700 /tmp/pytest-of-root), we stay root and
warn once.

Network: every per-call run gets a fresh, empty network namespace of its own (bwrap's --unshare-net,
unshare --net), every persistent worker one for its box, whose jobs run one at a time: abstract unix
sockets live in a network namespace, so runs sharing one could talk to each other (an earlier design
shared one per process to save the ~0.7 ms it costs).
"""
from __future__ import annotations

import functools
import logging
import os
import resource
import signal
import stat
import subprocess
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sandboxes.limits import SandboxConfig, SandboxLimits
from sandboxes.tools import (
    BASE_PATH,
    backend_programs,
    find_program,
    install_command,
    require_programs,
    search_path,
)

log = logging.getLogger(__name__)

SANDBOX_UID = 65534            # "nobody": the uid inside the sandbox, and the one root drops to outside
# Backend `none` has no user namespace, so RLIMIT_NPROC counts every host process of the uid it drops to:
# it gets a uid of its own, or bwrap jobs and persistent workers (host uid 65534) would eat its process budget.
UNNAMESPACED_UID = 65533
BOX = "/box"                   # where the work dir appears inside the sandbox
# Host /etc entries a dynamically linked toolchain needs; nothing else of /etc is visible.
ETC_ENTRIES = ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/alternatives",
               "/etc/localtime")
NET_ETC_ENTRIES = ("/etc/resolv.conf", "/etc/hosts", "/etc/nsswitch.conf", "/etc/ssl", "/etc/ca-certificates")
TOP_DIRS = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
# Precedes the wrapper's `times` report at the very end of stderr (the runner strips both).
CPU_MARKER = b"\n<earl-sandbox-cpu>"
RLIMITS_FAILED = "earl-sandbox: cannot set rlimits"   # and exit 125, from the wrapper or the native job

_warned: set[str] = set()
_warn_lock = threading.Lock()


def sandbox_uid(backend: str) -> int:
    """The host uid root drops a run of `backend` to."""
    return UNNAMESPACED_UID if backend == "none" else SANDBOX_UID


def warn_once(key: str, message: str, *args: object) -> None:
    """logging.warning once per process per key (a training run makes millions of calls)."""
    with _warn_lock:
        if key in _warned:
            return
        _warned.add(key)
    log.warning(message, *args)


# ---------------------------------------------------------------- the rlimit wrapper

@functools.cache
def _nproc_flag() -> str:
    """dash spells RLIMIT_NPROC `ulimit -p`, bash `ulimit -u`."""
    probe = subprocess.run(["/bin/sh", "-c", "ulimit -u"], capture_output=True, check=False)
    return "-u" if probe.returncode == 0 else "-p"


# What the wrapper sets besides rlimits, so a program starts alike whatever the trainer's state: umask
# 022 (a trainer's 077 would change the modes of every file the program makes), and the OOM killer's
# first choice (a memory-starved node kills a candidate, not the trainer; raising one's own score needs no
# privilege; where /proc refuses it, the run goes on). Builtins only: no fork. The refusal is silenced by
# closing stderr for that one builtin, not by /dev/null: a host's /dev/null is not always writable to the
# sandbox uid (`iverilog -o /dev/null` run as root leaves it 0755), and the job's stderr must stay its own.
PROCESS_STATE = "umask 022\necho 1000 2>&- >/proc/self/oom_score_adj || :\n"


@dataclass(frozen=True)
class Rlimit:
    """One limit a job runs under: the wrapper sets it with `ulimit -{flag}` (in units of `unit` bytes),
    the native supervisor with setrlimit(2) (`resource`, in bytes, counts or seconds)."""
    resource: int
    flag: str
    soft: int
    hard: int
    unit: int = 1

    def ulimit(self) -> list[str]:
        """The `ulimit` commands that set it (soft and hard apart where they differ)."""
        if self.soft == self.hard:
            return [f"ulimit -{self.flag} {self.soft // self.unit}"]
        return [f"ulimit -S -{self.flag} {self.soft // self.unit}", f"ulimit -H -{self.flag} {self.hard // self.unit}"]


def rlimits(limits: SandboxLimits, nproc: bool) -> list[Rlimit]:
    """Every rlimit of a run, hard (so the program cannot raise them). `nproc`: RLIMIT_NPROC too (only
    where it counts this run's processes alone: `Sandbox._command`)."""
    mib = 1024 * 1024
    cpu = int(limits.cpu_s)
    table = [
        Rlimit(resource.RLIMIT_CORE, "c", 0, 0),
        Rlimit(resource.RLIMIT_CPU, "t", cpu, cpu + 1),   # SIGXCPU at the soft limit, SIGKILL a second later
        Rlimit(resource.RLIMIT_AS, "v", int(limits.memory_mb) * mib, int(limits.memory_mb) * mib, 1024),
        # dash and POSIX-mode bash count `ulimit -f` in 512-byte blocks
        Rlimit(resource.RLIMIT_FSIZE, "f", int(limits.max_file_mb) * mib, int(limits.max_file_mb) * mib, 512),
        Rlimit(resource.RLIMIT_NOFILE, "n", int(limits.max_open_files), int(limits.max_open_files)),
        Rlimit(resource.RLIMIT_RTPRIO, "r", 0, 0),   # no real-time priority, whatever the trainer may use
        # thread stacks (glibc's default size) count in RLIMIT_AS
        Rlimit(resource.RLIMIT_STACK, "s", int(limits.stack_mb) * mib, int(limits.stack_mb) * mib, 1024),
    ]
    if nproc:
        table.append(Rlimit(resource.RLIMIT_NPROC, _nproc_flag()[1], int(limits.max_procs), int(limits.max_procs)))
    return table


def wrapper_script(limits: SandboxLimits, nproc: bool, inline: bool = False) -> str:
    """sh -c script: set `rlimits` and PROCESS_STATE, run "$@", then append CPU_MARKER and `times` to
    stderr (one builtin each: no fork, so it works even at the process limit). `inline`: "$1" is a shell
    script, run as `sh -c "$1"` would run it but in a subshell of the wrapper (see `wrapped`)."""
    sets = [cmd for limit in rlimits(limits, nproc) for cmd in limit.ulimit()]
    script = " && ".join(sets) + f" || {{ echo '{RLIMITS_FAILED}' >&2; exit 125; }}\n"
    script += PROCESS_STATE
    # eval's argument is expanded first, so `shift` leaves the script no positional parameters, as sh -c
    run = '(eval "shift; $1")' if inline else '"$@"'
    marker = CPU_MARKER.decode().replace("\n", "\\n")
    return script + f'{run}\nrc=$?\n{{ printf \'{marker}\'; command times; }} >&2\nexit $rc\n'


def sh_argv(script: str, args: list[str]) -> list[str]:
    """`sh -c SCRIPT /bin/sh ARGS`: how every wrapper and init script runs (that $0 is what an inline
    script's error messages name, as a fresh `/bin/sh -c` names itself)."""
    return ["/bin/sh", "-c", script, "/bin/sh", *args]


def wrapped(limits: SandboxLimits, nproc: bool, argv: list[str], inline: bool = False) -> tuple[str, list[str]]:
    """(wrapper script, its positional parameters) that run argv under the limits, through `sh_argv`.
    `inline`: argv is `/bin/sh -c SCRIPT`, run in a subshell of the wrapper (Sandbox.run_script)."""
    if not inline:
        return wrapper_script(limits, nproc), list(argv)
    if len(argv) != 3 or argv[:2] != ["/bin/sh", "-c"]:
        raise ValueError(f"an inline run takes ['/bin/sh', '-c', SCRIPT], got {argv!r}")
    return wrapper_script(limits, nproc, inline=True), [argv[2]]


# ---------------------------------------------------------------- signal dispositions

# Popen sets SIGPIPE and SIGXFSZ back to default in its child (restore_signals); 32 and 33 are the C
# library's own (no program can use them through it, and `env` cannot reset them). Any other signal the
# trainer ignores (`nohup` ignores SIGHUP; a script's background job, SIGINT and SIGQUIT) survives every
# exec, and no shell can undo an ignore it inherited, so the program would start with it: a per-call run is
# launched through `env --default-signal` then. Read from the kernel (/proc), not `signal.getsignal`, which
# misses an ignore set from C (an extension, ctypes). A persistent worker's supervisor resets dispositions
# and the blocked mask once, at its start.
_NOT_INHERITED = (1 << (signal.SIGPIPE - 1)) | (1 << (signal.SIGXFSZ - 1)) | (1 << 31) | (1 << 32)


def ignored_signals() -> int:
    """This process's ignored signals as the kernel keeps them: bit n-1 for signal n (`SigIgn`)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("SigIgn:"):
                    return int(line.split()[1], 16)
    except OSError:
        pass
    return sum(1 << (s - 1) for s in signal.valid_signals() if signal.getsignal(s) == signal.SIG_IGN)


def default_signals_prefix() -> list[str]:
    """`[env, --default-signal]` while this process ignores a signal a per-call run would inherit, else []."""
    if not ignored_signals() & ~_NOT_INHERITED:
        return []
    env = _default_signal_env()
    if env is None:
        warn_once("default-signal", "sandbox: this process ignores some signals and `env --default-signal` "
                  "(coreutils >= 8.31) is missing: per-call runs start with those signals ignored.")
        return []
    return [env, "--default-signal"]


@functools.cache
def _default_signal_env() -> str | None:
    env = find_program("env")
    if env is None:
        return None
    probe = subprocess.run([env, "--default-signal", "true"], capture_output=True, check=False)
    return env if probe.returncode == 0 else None


# ---------------------------------------------------------------- privilege drop

def is_root() -> bool:
    return os.geteuid() == 0


def _setpriv() -> str | None:
    return find_program("setpriv")


def untraversable_parent(path: str | Path) -> str | None:
    """First ancestor of `path` that 'others' cannot search (so an unprivileged bwrap cannot reach it)."""
    p = Path(path).resolve()
    for parent in reversed(p.parents):
        try:
            mode = parent.stat().st_mode
        except OSError:
            return str(parent)
        if not mode & stat.S_IXOTH:
            return str(parent)
    return None


def can_drop(bind_sources: list[str]) -> bool:
    """Whether root may drop to SANDBOX_UID: every bind source must be reachable by that uid.

    Only bwrap needs the checks (it resolves bind sources after the drop); the other backends get
    their cwd from Popen while still root and bind nothing, so pass them []."""
    for path in bind_sources:
        blocked = untraversable_parent(path)
        if blocked is not None:
            warn_once(f"untraversable:{blocked}",
                      "sandbox: %s is under %s, which uid %d cannot search; running bwrap as root, so "
                      "RLIMIT_NPROC (fork bombs) is NOT enforced for such runs. Put work dirs under a "
                      "world-searchable folder such as tempfile.gettempdir().", path, blocked, SANDBOX_UID)
            return False
    return True


def drop_prefix(bind_sources: list[str], uid: int = SANDBOX_UID) -> list[str]:
    """`setpriv` argv that drops root to `uid`, or [] when not root or a bind source is unreachable."""
    if not is_root():
        return []
    setpriv = _setpriv()
    if setpriv is None:
        warn_once("nosetpriv", "sandbox: setpriv not found; running as root, so RLIMIT_NPROC (fork bombs) "
                  "is NOT enforced. Install util-linux.")
        return []
    if not can_drop(bind_sources):
        return []
    return [setpriv, f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--"]


def launch_prefix(backend: str, bind_sources: list[str]) -> tuple[list[str], bool]:
    """(argv before the backend's own, dropped to `sandbox_uid(backend)`?): the `setpriv` drop (root) or
    nothing (not root, or a bind source the dropped uid cannot reach)."""
    drop = drop_prefix(bind_sources, sandbox_uid(backend))
    return drop, bool(drop)


def helper_path(found: str) -> str:
    """Where to exec a backend helper found on the PATH: its real path, since it may run after the uid
    drop and SANDBOX_UID may not reach the PATH entry (a 0700 folder of links, say)."""
    return os.path.realpath(found)


def hand_over(workdir: Path, uid: int = SANDBOX_UID) -> None:
    """chown the work dir tree to the sandbox uid so it can write there (and read 0600 files).

    lchown and no symlink following, and hard-linked files are left alone: a previous run must not be
    able to plant a link that makes root hand a host file to the sandbox uid. A shared root (/, /tmp
    itself, ...) is refused, a caller mistake: walking it would hand every other user's files over."""
    if is_shared_folder(workdir):
        raise ValueError(f"sandbox: work dir {str(workdir)!r} is a shared folder; pass a private dir in it, "
                         "such as tempfile.mkdtemp()")

    def fix(path: str) -> None:
        st = os.lstat(path)
        if st.st_uid != uid and not (stat.S_ISREG(st.st_mode) and st.st_nlink > 1):
            os.lchown(path, uid, uid)
    fix(str(workdir))
    for root, dirs, files in os.walk(workdir):
        for name in dirs + files:
            fix(os.path.join(root, name))


def shared_roots() -> frozenset[str]:
    """Folders that are never a run's work dir: handing their tree to the sandbox uid (hand_over) would
    give it every other user's files there. Resolved once per temp root and home (every run asks)."""
    return _shared_roots(tempfile.gettempdir(), os.path.expanduser("~"))


@functools.lru_cache(maxsize=8)
def _shared_roots(temp_root: str, home: str) -> frozenset[str]:
    roots = {"/", "/tmp", "/var/tmp", "/dev/shm", "/root", "/home", "/usr", "/etc", "/opt", "/srv", temp_root, home}
    return frozenset(os.path.realpath(r) for r in roots)


def is_shared_folder(workdir: str | Path) -> bool:
    """A shared root, an ancestor of one (/var holds /var/tmp), or a home folder (/home/<user>): a
    caller mistake that hand_over must refuse rather than walk."""
    real = os.path.realpath(workdir)
    roots = shared_roots()
    if real in roots or os.path.dirname(real) == "/home":
        return True
    return any(root.startswith(real.rstrip("/") + "/") for root in roots)


# ---------------------------------------------------------------- command lines

@functools.cache
def _root_layout() -> tuple[str, ...]:
    """bwrap args recreating /bin, /lib* ... as on the host (symlinks into /usr on merged-/usr systems)."""
    args: list[str] = ["--ro-bind", "/usr", "/usr"]
    for top in TOP_DIRS:
        if os.path.islink(top):
            args += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            args += ["--ro-bind", top, top]
    return tuple(args)


def box_env(env: dict[str, str]) -> dict[str, str]:
    """The environment a program sees in a bwrap box, per call or as a worker's job: `env` over the defaults."""
    return {"PATH": BASE_PATH, "HOME": BOX, "LANG": "C.UTF-8", "TMPDIR": "/tmp", **env}


def bwrap_argv(config: SandboxConfig, limits: SandboxLimits, env: dict[str, str], work: str | Path,
               program: str = "bwrap") -> list[str]:
    """bwrap command line up to and including `--`; the command follows. `program`: bwrap's path as
    `find_program` resolved it."""
    args = bwrap_base(config, int(limits.max_file_mb) * 1024 * 1024, program)
    # bwrap's new root and /dev are uncapped tmpfs: make them read-only (mounts on them stay writable)
    args += ["--bind", str(work), BOX, "--remount-ro", "/dev", "--remount-ro", "/", "--chdir", BOX,
             "--clearenv"]
    for key, value in env.items():
        args += ["--setenv", key, value]
    return args + ["--"]


def worker_bwrap_argv(config: SandboxConfig, program: str = "bwrap") -> list[str]:
    """bwrap command line of a persistent worker (sandboxes/worker.py), up to `--`: the same box as a run's,
    with an empty /box (each job gets its work dir attached there) and CAP_SYS_ADMIN in the box's user
    namespace, which the supervisor needs to give each job fresh mount, PID, IPC and UTS namespaces; the
    job itself then drops into a user namespace of its own, with no capabilities over the box's."""
    args = bwrap_base(config, 1024 * 1024, program)
    return args + ["--cap-add", "CAP_SYS_ADMIN", "--dir", BOX,
                   "--remount-ro", "/dev", "--remount-ro", "/", "--chdir", "/", "--clearenv",
                   "--setenv", "PATH", BASE_PATH, "--"]


def bwrap_base(config: SandboxConfig, tmp_bytes: int, program: str) -> list[str]:
    """The bwrap options a run and a worker share: namespaces, uid, the read-only root, /proc, /dev, /tmp."""
    args = [program, "--unshare-all", "--unshare-user", "--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_UID),
            "--die-with-parent", "--new-session", "--cap-drop", "ALL", "--hostname", "sandbox",
            *_root_layout()]
    etc = ETC_ENTRIES + (NET_ETC_ENTRIES if config.network else ())
    for entry in etc:
        args += ["--ro-bind-try", entry, entry]
    if config.network:
        args.append("--share-net")
    tmp_size = str(tmp_bytes)
    args += ["--proc", "/proc", "--dev", "/dev", "--perms", "1777", "--size", tmp_size, "--tmpfs", "/dev/shm",
             "--perms", "1777", "--size", tmp_size, "--tmpfs", "/tmp"]   # 1777, as on a worker and a host
    for path in config.ro_binds:
        args += ["--ro-bind", path, path]
    return args


def unshare_argv(config: SandboxConfig, program: str = "unshare") -> list[str]:
    """util-linux unshare: network/PID/IPC/UTS/user namespaces, but the host file system stays visible."""
    args = [program, "--user", f"--map-user={SANDBOX_UID}", f"--map-group={SANDBOX_UID}",
            "--pid", "--fork", "--kill-child", "--ipc", "--uts", "--mount", "--mount-proc"]
    if not config.network:
        args.append("--net")
    return args + ["--"]


# ---------------------------------------------------------------- backend choice (cached self-test)

_backend_cache: dict[tuple, str] = {}
_backend_lock = threading.Lock()


def _self_test(argv_for: Callable[[Path], list[str]], workdir: Path) -> tuple[bool, str]:
    try:
        proc = subprocess.run(argv_for(workdir), cwd=workdir, capture_output=True, timeout=30, check=False,
                              stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, str(exc)
    ok = proc.returncode == 0 and proc.stdout.strip() == b"earl-sandbox-ok"
    return ok, proc.stderr.decode(errors="replace").strip()[-300:]


def _probe(backend: str, config: SandboxConfig) -> tuple[bool, str]:
    env = {"PATH": BASE_PATH}
    probe_cmd = ["/bin/sh", "-c", "echo earl-sandbox-ok"]
    with tempfile.TemporaryDirectory(prefix="earl-sbx-probe-") as tmp:
        work = Path(tmp)
        prefix, dropped = launch_prefix(backend, [str(work)] if backend == "bwrap" else [])
        if dropped:
            hand_over(work, sandbox_uid(backend))
        program = find_program(backend)
        if program is None:
            return False, f"{backend} not found on PATH ({search_path()}; {install_command([backend])})"
        program = helper_path(program)
        if backend == "bwrap":
            probe_config = SandboxConfig(network=config.network)
            return _self_test(lambda w: [*prefix, *bwrap_argv(probe_config, SandboxLimits(), env, w, program),
                                         *probe_cmd], work)
        return _self_test(lambda w: [*prefix, *unshare_argv(config, program), *probe_cmd], work)


def choose_backend(config: SandboxConfig) -> str:
    """The backend runs will use: the requested one, or for 'auto' the first that passes a self-test.

    Cached per process and helper path. An explicit 'bwrap'/'unshare' that is not on the PATH raises
    ToolNotFound, one that fails its self-test RuntimeError; 'auto' degrades to 'none'.
    """
    if config.backend in ("bwrap", "unshare"):
        require_programs(backend_programs(config.backend), f"sandbox backend {config.backend!r}")
    key = (config.backend, config.network, os.geteuid(),
           find_program("bwrap"), find_program("unshare"))
    reasons: list[str] = []
    with _backend_lock:
        if key in _backend_cache:
            return _warn_weak(_backend_cache[key], reasons)
        if config.backend == "none":
            chosen = "none"
        elif config.backend in ("bwrap", "unshare"):
            ok, why = _probe(config.backend, config)
            if not ok:
                raise RuntimeError(f"sandbox backend {config.backend!r} failed its self-test: {why}")
            chosen = config.backend
        else:
            chosen = "none"
            for candidate in ("bwrap", "unshare"):
                ok, why = _probe(candidate, config)
                if ok:
                    chosen = candidate
                    break
                reasons.append(f"{candidate}: {why}")
        _backend_cache[key] = chosen
    return _warn_weak(chosen, reasons)


def _warn_weak(chosen: str, reasons: list[str]) -> str:
    """The one loud warning per process when runs will not be fully isolated."""
    why = f" (self-test failures: {'; '.join(reasons)})" if reasons else ""
    if chosen == "none":
        warn_once("none", "SANDBOX NOT ISOLATED: backend 'none' runs untrusted code with rlimits only (no "
                  "namespaces: it can read the host file system and use the network). Results say "
                  "isolated=False.%s", why)
    elif chosen == "unshare":
        warn_once("unshare", "SANDBOX PARTLY ISOLATED: backend 'unshare' isolates network and PIDs but the "
                  "host file system stays visible. Results say isolated=False.%s", why)
    return chosen
