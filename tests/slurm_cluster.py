"""A real one-node Slurm cluster for tests (fixture `slurm_cluster`, session scope).

As root with apt-get, installs Debian's slurmctld/slurmd/slurm-client/munge if missing (about 10 s),
then runs munged, slurmctld and `slurmd -N localhost` with everything (config, state, logs, munge key
and socket) under a pytest tmp dir, on free ports, so it never touches /etc/slurm or another cluster on
the machine. At teardown it cancels the jobs and stops every daemon it started, by PID. Elsewhere (not
root, no apt-get, install failed, RESTORELAB_SLURM_TESTS=0) the tests that use it are skipped.

Clients need `SLURM_CONF=<cluster.conf>` in their environment (`cluster.env()` or monkeypatch.setenv);
jobs inherit it, so `scontrol requeue` inside a job (Lightning's SIGUSR1 handler) reaches this cluster.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

PACKAGES = {"slurmctld": "slurmctld", "slurmd": "slurmd", "sbatch": "slurm-client", "munged": "munge"}
# limits on waits that end as soon as the cluster answers (a few seconds on idle cores): far above that
START_TIMEOUT = 300


@dataclass
class SlurmCluster:
    base: Path
    conf: Path
    procs: dict = field(default_factory=dict)  # daemon name -> pid
    children: dict = field(default_factory=dict)  # daemon name -> our Popen (slurmctld, slurmd)

    def env(self) -> dict:
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(argv, capture_output=True, text=True, env=self.env(), check=check, timeout=120)

    def log_tail(self, lines: int = 20) -> str:
        logs = sorted((self.base / "log").glob("*"))
        return "\n".join(f"--- {p.name}\n" + "\n".join(p.read_text(errors="replace").splitlines()[-lines:])
                         for p in logs)


def _why_unavailable() -> str | None:
    if os.environ.get("RESTORELAB_SLURM_TESTS") == "0":
        return "RESTORELAB_SLURM_TESTS=0"
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "a local Slurm cluster needs root (munged, slurmd)"
    missing = sorted({pkg for exe, pkg in PACKAGES.items() if shutil.which(exe) is None})
    if not missing:
        return None
    if shutil.which("apt-get") is None:
        return f"Slurm is not installed ({', '.join(missing)}) and there is no apt-get"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (["apt-get", "update", "-qq"],
                 ["apt-get", "install", "-y", "-qq", "--no-install-recommends",
                  "-o", "DPkg::Lock::Timeout=120", *missing]):
        try:
            done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=600)
        except subprocess.TimeoutExpired:
            return f"`{' '.join(argv)}` timed out"
        if done.returncode != 0:
            return f"`{' '.join(argv)}` failed: {done.stderr.strip()[-300:]}"
    still = [exe for exe in PACKAGES if shutil.which(exe) is None]
    return f"{still} missing after apt-get install" if still else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def _hardware() -> tuple[str, int]:
    """The node line's hardware as slurmd detects it (else slurmd drains the node on a mismatch)."""
    probe = subprocess.run(["slurmd", "-C"], capture_output=True, text=True).stdout.splitlines()
    found = dict(re.findall(r"(\w+)=(\d+)", probe[0] if probe else ""))
    cpus = int(found.get("CPUs", os.cpu_count() or 1))
    mem = int(found.get("RealMemory", 1024)) * 85 // 100  # never above physical
    topo = " ".join(f"{k}={found[k]}" for k in ("Boards", "SocketsPerBoard", "CoresPerSocket", "ThreadsPerCore")
                    if k in found)
    # DefMemPerCPU: without it every job takes the whole node's memory and jobs run one at a time
    return f"CPUs={cpus} {topo} RealMemory={mem}", mem // cpus


def _write_conf(base: Path) -> Path:
    node_hw, mem_per_cpu = _hardware()
    conf = base / "etc" / "slurm.conf"
    conf.write_text(f"""\
ClusterName=restorelab-test
SlurmctldHost=localhost
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# cred_expire is also how long a requeued job waits before it may start again (default 120 s)
AuthInfo=socket={base}/munge-run/munge.socket.2,cred_expire=10
StateSaveLocation={base}/spool/ctld
SlurmdSpoolDir={base}/spool/d
SlurmctldPidFile={base}/run/slurmctld.pid
SlurmdPidFile={base}/run/slurmd.pid
SlurmctldLogFile={base}/log/slurmctld.log
SlurmdLogFile={base}/log/slurmd.log
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
# no slurmdbd: `sacct -c` reads this job-completion file
JobCompType=jobcomp/filetxt
JobCompLoc={base}/log/jobcomp.txt
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU={mem_per_cpu}
SchedulerType=sched/backfill
# jobs start ~1 s after sbatch; pending (e.g. requeued) jobs are retried every 5 s, not 60 s
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0,sched_interval=5
ReturnToService=2
MpiDefault=none
SwitchType=switch/none
KillWait=5
InactiveLimit=0
MinJobAge=300
NodeName=localhost NodeAddr=127.0.0.1 {node_hw} State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
""")
    return conf


def _alive(pid: int | None, name: str) -> bool:
    try:
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError, TypeError):
        return False
    return comm == name and state != "Z"


def _stop(pid: int, name: str, timeout: float = 20) -> None:
    if not _alive(pid, name):
        return
    os.kill(pid, 15)
    deadline = time.monotonic() + timeout
    while _alive(pid, name) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _alive(pid, name):
        os.kill(pid, 9)


def start(base: Path) -> SlurmCluster:
    """Start the daemons; on any failure stop those already started, then raise."""
    cluster = SlurmCluster(base, base / "etc" / "slurm.conf")
    try:
        _start(cluster)
    except BaseException:
        stop(cluster)
        raise
    return cluster


def _start(cluster: SlurmCluster) -> None:
    base = cluster.base
    for sub in ("etc", "log", "run", "spool/ctld", "spool/d", "munge", "munge-run"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    for d in (base, base / "munge-run"):
        d.chmod(0o755)
    (base / "munge").chmod(0o700)
    key = base / "munge" / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    _write_conf(base)

    sock = base / "munge-run" / "munge.socket.2"
    # munged daemonizes itself; --force lets it run as root with our own paths
    subprocess.run(["munged", "--force", f"--key-file={key}", f"--socket={sock}",
                    f"--pid-file={base}/munge/munged.pid", f"--seed-file={base}/munge/munged.seed",
                    f"--log-file={base}/log/munged.log"], check=True, capture_output=True, timeout=30)
    cluster.procs["munged"] = int((base / "munge" / "munged.pid").read_text())
    for name, argv in (("slurmctld", ["slurmctld", "-D", "-f", str(cluster.conf)]),
                       ("slurmd", ["slurmd", "-D", "-N", "localhost", "-f", str(cluster.conf)])):
        with open(base / "log" / f"{name}.stdout", "ab") as out:
            # own session + no inherited pipes: pytest's capture never waits on the daemons
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                    env=cluster.env(), start_new_session=True)
        cluster.procs[name] = proc.pid
        cluster.children[name] = proc

    deadline = time.monotonic() + START_TIMEOUT
    while True:
        # poll(), not /proc/<pid>/comm: right after Popen the comm may still be the parent's
        dead = [n for n, p in cluster.children.items() if p.poll() is not None]
        if dead or not _alive(cluster.procs["munged"], "munged"):
            raise RuntimeError(f"{dead or 'munged'} died while starting:\n{cluster.log_tail()}")
        if "is UP" in cluster.run("scontrol", "ping", check=False).stdout:
            state = cluster.run("sinfo", "-h", "-n", "localhost", "-o", "%T", check=False).stdout.strip()
            if state.startswith(("idle", "mixed", "allocated", "completing")):
                return
            if any(s in state for s in ("drain", "down", "fail")):
                cluster.run("scontrol", "update", "NodeName=localhost", "State=RESUME", check=False)
        if time.monotonic() > deadline:
            raise RuntimeError(f"cluster not ready after {START_TIMEOUT} s:\n{cluster.log_tail()}")
        time.sleep(0.2)


def _descendants(pid: int) -> list[int]:
    children = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        kids = children.get(todo.pop(), [])
        out += kids
        todo += kids
    return out


def stop(cluster: SlurmCluster) -> None:
    """Cancel jobs, stop slurmd and slurmctld, end this cluster's leftover step daemons and their job
    processes, then munged; all by PID."""
    ctld = cluster.children.get("slurmctld")
    if ctld is not None and ctld.poll() is None:
        jobs = cluster.run("squeue", "-h", "-o", "%i", check=False).stdout.split()
        if jobs:
            cluster.run("scancel", *{j.split("_")[0] for j in jobs}, check=False)
            deadline = time.monotonic() + 15
            while cluster.run("squeue", "-h", check=False).stdout.strip() and time.monotonic() < deadline:
                time.sleep(0.2)
    for name in ("slurmd", "slurmctld"):
        proc = cluster.children.get(name)
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    # a slurmstepd of ours keeps our slurmd.log open; its job processes would outlive a kill of it
    our_log = str(cluster.base / "log" / "slurmd.log")
    for comm in Path("/proc").glob("[0-9]*/comm"):
        try:
            if comm.read_text().strip() != "slurmstepd":
                continue
            pid = int(comm.parent.name)
            if not any(os.readlink(fd) == our_log for fd in (comm.parent / "fd").iterdir()):
                continue
        except OSError:
            continue
        for kid in _descendants(pid):
            try:
                os.kill(kid, 9)
            except OSError:
                pass
        _stop(pid, "slurmstepd", timeout=5)
    _stop(cluster.procs.get("munged"), "munged")


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory):
    reason = _why_unavailable()
    if reason:
        pytest.skip(reason)
    cluster = start(tmp_path_factory.mktemp("slurm"))
    try:
        yield cluster
    finally:
        stop(cluster)


def _lightning_callback():
    from lightning.pytorch.callbacks import Callback

    return Callback


class HoldFirstAttempt(_lightning_callback()):
    """A test instrument for real `restorelab fit` trials on the cluster (`--trainer.callbacks+=` this class):
    the first attempt of a Slurm task stops before training step `step` (the checkpoint of step `step` is
    written by then) and waits there until Slurm's SIGTERM (a requeue) arrives, so that a test can requeue it
    mid-run however fast or slow the cores are. A requeued attempt (SLURM_RESTART_COUNT >= 1) runs through.
    `limit_s` only bounds a test that never requeues."""

    def __init__(self, step: int = 10, limit_s: float = 1800.0):
        self.step, self.limit_s = step, limit_s

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if int(os.environ.get("SLURM_RESTART_COUNT") or 0) > 0 or trainer.global_step < self.step:
            return
        deadline = time.monotonic() + self.limit_s
        (Path(trainer.default_root_dir) / "holding").write_text(f"{trainer.global_step}\n")
        while not trainer.received_sigterm and time.monotonic() < deadline:
            time.sleep(0.1)


class RecordRank(_lightning_callback()):
    """A test instrument (`--trainer.callbacks+=` this class): every rank writes `<run dir>/ranks/<global rank>.json`
    once its process group is up, with what Lightning made of its environment and the Slurm variables srun gave it,
    so that a test can tell which processes Slurm started and how Lightning took them."""

    def setup(self, trainer, pl_module, stage: str) -> None:
        import torch.distributed as dist

        names = ("SLURM_JOB_ID", "SLURM_STEP_ID", "SLURM_PROCID", "SLURM_LOCALID", "SLURM_NTASKS",
                 "SLURM_NTASKS_PER_NODE", "MASTER_ADDR", "MASTER_PORT")
        record = {"global_rank": trainer.global_rank, "world_size": trainer.world_size, "pid": os.getpid(),
                  "cluster_environment": type(trainer.strategy.cluster_environment).__name__,
                  "backend": dist.get_backend() if dist.is_available() and dist.is_initialized() else None,
                  "env": {n: os.environ.get(n) for n in names}}
        out = Path(trainer.default_root_dir) / "ranks"
        out.mkdir(parents=True, exist_ok=True)
        (out / f"{trainer.global_rank}.json").write_text(json.dumps(record, indent=1) + "\n")
