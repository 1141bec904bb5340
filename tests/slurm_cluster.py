"""A real single-node SLURM cluster on loopback for the tests: munge, slurmctld and slurmd started
from a temporary folder (no accounting database) and stopped afterwards."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "sinfo", "scontrol")


def missing() -> str | None:
    """Why a cluster cannot be started here, or ``None``."""
    absent = [name for name in DAEMONS if shutil.which(name) is None and not Path(f"/usr/sbin/{name}").exists()]
    if absent:
        return "SLURM/munge not installed (" + ", ".join(absent) + "); Debian packages slurm-wlm and munge"
    if os.geteuid() != 0:
        return "slurmd must run as root"
    return None


def _binary(name: str) -> str:
    return shutil.which(name) or f"/usr/sbin/{name}"


def _memory_mb() -> int:
    with open("/proc/meminfo") as fh:
        total_kb = int(next(line for line in fh if line.startswith("MemTotal")).split()[1])
    return total_kb // 1024 - 1024  # slurmd drains a node whose RealMemory exceeds what it finds


@contextmanager
def local_cluster(folder: Path, *, cpus: int | None = None):
    """Start the cluster in ``folder``; yields the environment for SLURM clients."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)  # munged refuses a key or socket in a folder others can write
    host = socket.gethostname().split(".")[0]
    cpus = cpus or os.cpu_count()
    key = folder / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    sock = folder / "munge.socket"
    conf = folder / "slurm.conf"
    conf.write_text("\n".join([
        "ClusterName=exotrack-test",
        f"SlurmctldHost={host}(127.0.0.1)",
        "AuthType=auth/munge", f"AuthInfo=socket={sock}", "CredType=cred/munge",
        "SlurmUser=root", "SlurmdUser=root",
        "SlurmctldPort=16817", "SlurmdPort=16818",
        f"StateSaveLocation={folder / 'state'}", f"SlurmdSpoolDir={folder / 'spool'}",
        f"SlurmctldPidFile={folder / 'slurmctld.pid'}", f"SlurmdPidFile={folder / 'slurmd.pid'}",
        f"SlurmctldLogFile={folder / 'slurmctld.log'}", f"SlurmdLogFile={folder / 'slurmd.log'}",
        "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none", "JobAcctGatherType=jobacct_gather/none",
        "AccountingStorageType=accounting_storage/none", "JobCompType=jobcomp/none",
        "SelectType=select/cons_tres", "SelectTypeParameters=CR_Core",
        "SchedulerType=sched/backfill", "MpiDefault=none", "ReturnToService=2",
        # Without accounting, finished jobs are only known to squeue while they are this young.
        "MinJobAge=3600", "InactiveLimit=0", "KillWait=5",
        f"NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={_memory_mb()} State=UNKNOWN",
        "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP",
    ]) + "\n")
    for sub in ("state", "spool"):
        (folder / sub).mkdir(exist_ok=True)
    env = {**os.environ, "SLURM_CONF": str(conf)}
    # Inside a job, the executor's srun drops SLURM_* variables (SLURM_CONF with them) and reads
    # the system's configuration path, as on a real cluster: ours goes there for the test's time.
    system = Path("/etc/slurm/slurm.conf")
    backup = system.read_bytes() if system.exists() else None
    system.parent.mkdir(parents=True, exist_ok=True)
    system.write_text(conf.read_text())
    processes = []
    try:
        processes.append(subprocess.Popen(
            [_binary("munged"), "--foreground", "--force", f"--key-file={key}", f"--socket={sock}",
             f"--pid-file={folder / 'munged.pid'}", f"--log-file={folder / 'munged.log'}",
             f"--seed-file={folder / 'munged.seed'}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        _wait(lambda: sock.exists(), "munged", folder)
        for daemon in ("slurmctld", "slurmd"):
            processes.append(subprocess.Popen([_binary(daemon), "-D", "-f", str(conf)], env=env,
                                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        _wait(lambda: _node_state(env) in ("idle", "mix", "alloc"), "the node to come up", folder,
              nudge=lambda: subprocess.run(["scontrol", "update", f"nodename={host}", "state=resume"], env=env,
                                           capture_output=True))
        yield env
    finally:
        if backup is None:
            system.unlink(missing_ok=True)
        else:
            system.write_bytes(backup)
        for process in reversed(processes):
            process.terminate()
        for process in reversed(processes):
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _node_state(env) -> str:
    result = subprocess.run(["sinfo", "-h", "-o", "%t"], env=env, capture_output=True, text=True)
    return result.stdout.strip().rstrip("*~#")


def _wait(condition, what, folder, *, timeout=60, nudge=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        if nudge:
            nudge()
        time.sleep(1)
    logs = "\n".join(f"--- {p.name}\n{p.read_text()[-2000:]}" for p in sorted(folder.glob("*.log")))
    raise RuntimeError(f"timed out waiting for {what}\n{logs}")
