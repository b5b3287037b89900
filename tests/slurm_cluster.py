"""Start and stop a real single-node Slurm (munged + slurmctld + slurmd) under a temporary directory.

No systemd here, so the daemons are started directly in the foreground-less way each supports, with every
path (key, socket, state, spool, logs, pid files) under ``root`` and free TCP ports, so parallel runs and a
host Slurm do not collide. Stopped by PID. Used by tests/test_slurm.py; usable by hand:

    python -m tests.slurm_cluster /tmp/slurm   # starts, prints `export SLURM_CONF=...`, waits for Ctrl-C

Traps handled here (all seen on Debian's slurm-wlm 22.05): munged wants its key private and its socket
directory world-executable; the hostname differs from the node name, so ``slurmd -N localhost``; sacct has no
database, so jobs are polled with ``scontrol show job``; RealMemory above what slurmd measures drains the node.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.helpers.net import free_port

DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "scontrol", "squeue", "scancel", "srun")


def missing_binaries() -> list[str]:
    return [b for b in DAEMONS + CLIENTS if shutil.which(b) is None and not Path(f"/usr/sbin/{b}").exists()]


def _which(name: str) -> str:
    return shutil.which(name) or f"/usr/sbin/{name}"



def _real_memory_mb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(int(line.split()[1]) / 1024 * 0.9)  # below what slurmd measures, or the node drains
    return 1024


def parse_fields(text: str) -> dict[str, str]:
    """`scontrol show ... -o` output as a dict (values without spaces; enough for state and reasons)."""
    out: dict[str, str] = {}
    for tok in text.split():
        if "=" in tok:
            key, _, value = tok.partition("=")
            out.setdefault(key, value)
    return out


@dataclass
class SlurmCluster:
    root: Path
    partition: str = "debug"
    node: str = "localhost"
    cpus: int = field(default_factory=lambda: os.cpu_count() or 1)
    pids: dict[str, int] = field(default_factory=dict)

    @property
    def conf(self) -> Path:
        return self.root / "slurm.conf"

    @property
    def env(self) -> dict[str, str]:
        """Environment for client commands (sbatch, scontrol, earl submit) that points at this cluster."""
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    # ---- set-up -------------------------------------------------------------------------------------
    def _write_munge_key(self) -> Path:
        key_dir = self.root / "munge-etc"
        key_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(key_dir, 0o700)
        key = key_dir / "munge.key"
        key.write_bytes(os.urandom(1024))
        os.chmod(key, 0o400)
        return key

    def _write_conf(self) -> None:
        r = self.root
        for d in ("state", "spool", "log"):
            (r / d).mkdir(parents=True, exist_ok=True)
        self.conf.write_text("\n".join([
            "ClusterName=earltest",
            f"SlurmctldHost={socket.gethostname()}(127.0.0.1)",
            "SlurmUser=root", "SlurmdUser=root",
            f"SlurmctldPort={free_port()}", f"SlurmdPort={free_port()}",
            "AuthType=auth/munge", "CredType=cred/munge",
            # cred_expire also delays a requeued job's restart (default 120 s)
            f"AuthInfo=socket={r / 'munge-run' / 'munge.socket'},cred_expire=10",
            f"StateSaveLocation={r / 'state'}", f"SlurmdSpoolDir={r / 'spool'}",
            f"SlurmctldPidFile={r / 'slurmctld.pid'}", f"SlurmdPidFile={r / 'slurmd.pid'}",
            f"SlurmctldLogFile={r / 'log' / 'slurmctld.log'}", f"SlurmdLogFile={r / 'log' / 'slurmd.log'}",
            "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none",
            "SelectType=select/cons_tres", "SelectTypeParameters=CR_CPU",
            "JobAcctGatherType=jobacct_gather/none", "AccountingStorageType=accounting_storage/none",
            "JobCompType=jobcomp/none", "MpiDefault=none", "SwitchType=switch/none",
            "ReturnToService=2", "JobRequeue=1", "MinJobAge=600", "KillWait=5",
            "SchedulerType=sched/backfill", "SchedulerParameters=sched_interval=2",
            "SlurmctldTimeout=30", "SlurmdTimeout=60", "InactiveLimit=0", "Waittime=0",
            "SlurmctldDebug=info", "SlurmdDebug=info",
            (f"NodeName={self.node} NodeHostname={self.node} NodeAddr=127.0.0.1 CPUs={self.cpus} "
            f"RealMemory={_real_memory_mb()} State=UNKNOWN"),
            (f"PartitionName={self.partition} Nodes={self.node} Default=YES MaxTime=INFINITE State=UP "
            "OverSubscribe=NO"),
            "",
        ]))

    def _start_munged(self) -> None:
        run_dir = self.root / "munge-run"
        run_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(run_dir, 0o755)  # clients must reach the socket
        key = self._write_munge_key()
        (self.root / "munge-lib").mkdir(mode=0o700, exist_ok=True)
        subprocess.run([_which("munged"), "--force", f"--socket={run_dir / 'munge.socket'}",
                        f"--key-file={key}", f"--pid-file={run_dir / 'munged.pid'}",
                        f"--log-file={self.root / 'log' / 'munged.log'}",
                        f"--seed-file={self.root / 'munge-lib' / 'munged.seed'}"],
                       check=True, capture_output=True, text=True, timeout=30)
        self.pids["munged"] = self._read_pid(run_dir / "munged.pid")

    def _read_pid(self, path: Path, timeout: float = 15.0) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if path.exists() and path.read_text().strip():
                return int(path.read_text().split()[0])
            time.sleep(0.1)
        raise RuntimeError(f"daemon did not write {path}; logs: {self.logs()}")

    def start(self, timeout: float = 60.0) -> SlurmCluster:
        self.root.mkdir(parents=True, exist_ok=True)
        self._write_conf()
        self._start_munged()
        conf = str(self.conf)
        # -i: ignore saved state from a previous run of this dir; both fork and write their pid files.
        subprocess.run([_which("slurmctld"), "-f", conf, "-i"], check=True, capture_output=True, timeout=30)
        self.pids["slurmctld"] = self._read_pid(self.root / "slurmctld.pid")
        subprocess.run([_which("slurmd"), "-f", conf, "-N", self.node], check=True, capture_output=True,
                       timeout=30)
        self.pids["slurmd"] = self._read_pid(self.root / "slurmd.pid")
        self.wait_node_idle(timeout)
        return self

    # ---- queries ------------------------------------------------------------------------------------
    def scontrol(self, *args: str, check: bool = True) -> str:
        proc = subprocess.run(["scontrol", *args], env=self.env, capture_output=True, text=True, timeout=30,
                              check=False)
        if check and proc.returncode != 0:
            raise RuntimeError(f"scontrol {' '.join(args)} failed: {proc.stderr.strip()}")
        return proc.stdout

    def node_state(self) -> str:
        return parse_fields(self.scontrol("show", "node", self.node, "-o", check=False)).get("State", "?")

    def wait_node_idle(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        state = "?"
        while time.monotonic() < deadline:
            state = self.node_state()
            if state.startswith(("IDLE", "MIXED")):
                return
            if "DRAIN" in state or "DOWN" in state:  # e.g. after a previous run left it drained
                self.scontrol("update", f"NodeName={self.node}", "State=RESUME", check=False)
            time.sleep(0.5)
        raise RuntimeError(f"node {self.node} not idle after {timeout}s (state {state}); logs: {self.logs()}")

    def job(self, job_id: int | str) -> dict[str, str]:
        return parse_fields(self.scontrol("show", "job", str(job_id), "-o", check=False))

    def wait_job(self, job_id: int | str, states: tuple[str, ...] = ("COMPLETED", "FAILED", "CANCELLED",
                 "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE", "PREEMPTED"),
                 timeout: float = 300.0, poll: float = 0.5) -> dict[str, str]:
        """Poll ``scontrol show job`` (no accounting database here) until the job reaches one of ``states``."""
        deadline = time.monotonic() + timeout
        info: dict[str, str] = {}
        while time.monotonic() < deadline:
            info = self.job(job_id)
            if info.get("JobState") in states:
                return info
            time.sleep(poll)
        raise TimeoutError(f"job {job_id} not in {states} after {timeout}s: {info}; logs: {self.logs()}")

    def logs(self, tail: int = 15) -> str:
        parts = []
        for f in sorted((self.root / "log").glob("*.log")):
            lines = f.read_text(errors="replace").splitlines()[-tail:]
            parts.append(f"--- {f.name}\n" + "\n".join(lines))
        return "\n".join(parts)

    # ---- tear-down ----------------------------------------------------------------------------------
    def stop(self, timeout: float = 15.0) -> None:
        """Stop the daemons we started, by PID, newest first; escalate to SIGKILL after ``timeout``."""
        for name in reversed(DAEMONS):
            pid = self.pids.pop(name, None)
            if pid is None:
                continue
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.1)
            else:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


if __name__ == "__main__":
    import sys

    cluster = SlurmCluster(Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/earl-slurm")).start()
    print(f"export SLURM_CONF={cluster.conf}   # pids {cluster.pids}; Ctrl-C stops", flush=True)
    try:
        signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        cluster.stop()
