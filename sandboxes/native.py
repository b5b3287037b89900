"""The persistent worker's native supervisor (sandboxes/supervisor.c): compiled once per machine with the
system C compiler and cached, so `pip install` needs no build step. Where no compiler is found or the build
fails, workers run the Python supervisor (same protocol and isolation, ~2 ms more CPU a job) and say why once.
"""
from __future__ import annotations

import functools
import hashlib
import logging
import os
import platform
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

SOURCE = Path(__file__).with_name("supervisor.c")
CFLAGS = ("-O2", "-std=gnu11", "-Wall", "-Wextra")
BUILD_TIMEOUT_S = 120.0
log = logging.getLogger(__name__)


def cache_dir() -> Path:
    """Where built supervisors live: $EARL_CACHE_DIR, else $XDG_CACHE_HOME/earl, else ~/.cache/earl (made
    0700; used only while private to this user)."""
    if os.environ.get("EARL_CACHE_DIR"):
        return Path(os.environ["EARL_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "earl"


def compiler() -> str | None:
    """$CC if set, else the first of cc, gcc, clang on PATH."""
    if os.environ.get("CC"):
        return shutil.which(os.environ["CC"])
    return next((found for name in ("cc", "gcc", "clang") if (found := shutil.which(name))), None)


@functools.cache
def supervisor_binary() -> tuple[Path | None, str]:
    """(path of the built supervisor, "") or (None, why not). Keyed by the source, flags, compiler and
    machine, so an edited source or another node's architecture gets its own build; built to a temporary
    name and renamed, so concurrent trainers on one node never run a half-written file."""
    cc = compiler()
    if cc is None:
        return None, "no C compiler (cc, gcc or clang) on PATH"
    source = SOURCE.read_bytes()
    key = hashlib.sha256(b"\0".join([source, " ".join(CFLAGS).encode(), cc.encode(), platform.machine().encode(),
                                     " ".join(platform.libc_ver()).encode()])).hexdigest()[:16]
    target = cache_dir() / f"supervisor-{key}"
    try:
        why = _private_dir(target.parent)
        if why:
            return None, why
        if _ours(target):
            return target, ""
        fd, tmp = tempfile.mkstemp(prefix=".supervisor-", dir=target.parent)
        os.close(fd)
    except OSError as exc:
        return None, f"cannot write the build cache {target.parent}: {exc}"
    try:
        proc = subprocess.run([cc, *CFLAGS, "-o", tmp, str(SOURCE)], capture_output=True, text=True,
                              timeout=BUILD_TIMEOUT_S, check=False)
        if proc.returncode != 0:
            return None, f"{cc} failed on {SOURCE.name}: {(proc.stderr or proc.stdout).strip()[-400:]}"
        os.chmod(tmp, 0o755)
        os.replace(tmp, target)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"cannot build {SOURCE.name}: {exc}"
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    log.debug("built the native sandbox supervisor: %s", target)
    return target, ""


def _private_dir(path: Path) -> str:
    """Make the cache dir (0700); "" when only this user can write it, else why not: whoever can write
    there could plant the binary a worker runs with CAP_SYS_ADMIN over its jobs."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = path.stat()
    if st.st_uid != os.geteuid() or st.st_mode & 0o022:
        return (f"the build cache {path} is not private to this user (owner uid {st.st_uid}, mode "
                f"{stat.filemode(st.st_mode)}): set EARL_CACHE_DIR to a dir of your own")
    return ""


def _ours(path: Path) -> bool:
    """A built supervisor this user made and only this user can change."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        return False
    return stat.S_ISREG(st.st_mode) and st.st_uid == os.geteuid() and not st.st_mode & 0o022 and \
        bool(st.st_mode & stat.S_IXUSR)
