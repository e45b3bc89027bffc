"""A real one-node Slurm cluster for tests: a private munged, slurmctld and slurmd (Debian's `munge`,
`slurmctld`, `slurmd`, `slurm-client`), on free ports, all state under one temporary directory.

Nothing of the machine's own Slurm or MUNGE is used or touched: our `slurm.conf` names our munged's
socket, and every command a test (or the batch backend) runs is given `SLURM_CONF` pointing at it
(`Slurm.env`). The daemons run in the foreground as our children (`-D`, `--foreground`), so they are
stopped and reaped here (PID 1 does not reap). Two partitions: `debug` (up, the default) and `closed`
(down: a job sent there stays queued).
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from fleethub.shared.net import free_port

DAEMONS = {"munged": "/usr/sbin/munged", "slurmctld": "/usr/sbin/slurmctld", "slurmd": "/usr/sbin/slurmd"}
CLIENTS = ("sbatch", "squeue", "scancel", "sinfo")
INSTALL = "apt-get install slurmctld slurmd slurm-client munge sudo (the .ci/run script does)"

CONF = """\
ClusterName=fhtest
SlurmctldHost={node}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={run}/munge/munge.socket
StateSaveLocation={run}/state
SlurmdSpoolDir={run}/spool
SlurmctldPidFile={run}/slurmctld.pid
SlurmdPidFile={run}/slurmd.pid
SlurmctldLogFile={run}/slurmctld.log
SlurmdLogFile={run}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
KillWait=5
MinJobAge=60
SlurmctldDebug=info
SlurmdDebug=info
MailProg=/bin/true
NodeName={node} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory=1000 State=UNKNOWN
PartitionName=debug Nodes={node} Default=YES MaxTime=INFINITE State=UP
PartitionName=closed Nodes={node} MaxTime=INFINITE State=DOWN
"""


def missing() -> list[str]:
    """What of Slurm and MUNGE is not installed here."""
    out = [path for path in DAEMONS.values() if not os.access(path, os.X_OK)]
    out += [name for name in (*CLIENTS, "sudo") if shutil.which(name) is None]
    return out


@dataclass
class Slurm:
    """A running cluster: its config file, its node's name and the daemons' processes."""

    run: Path
    conf: Path
    node: str
    cpus: int
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def env(self) -> dict[str, str]:
        """What a Slurm command needs in its environment to talk to this cluster."""
        return {"SLURM_CONF": str(self.conf)}

    def command(self, *argv: str, check: bool = True, timeout: float = 20) -> str:
        """Run a Slurm client command (as root) against this cluster; its stdout."""
        done = subprocess.run(list(argv), env={**os.environ, **self.env}, capture_output=True, text=True,
                              timeout=timeout)
        if check and done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()}")
        return done.stdout

    def jobs(self, *fields: str) -> list[list[str]]:
        """Every job squeue lists (all states it keeps), each as the `fields` asked for ('%i', '%u', ...)."""
        out = self.command("squeue", "-h", "-t", "all", "-o", "|".join(fields))
        return [line.split("|") for line in out.splitlines() if line.strip()]

    def live_jobs(self, *fields: str) -> list[list[str]]:
        """The jobs that are pending, running or completing."""
        out = self.command("squeue", "-h", "-t", "PD,R,CG,CF", "-o", "|".join(fields))
        return [line.split("|") for line in out.splitlines() if line.strip()]

    def log(self) -> str:
        """The tail of the daemons' logs (for a failure's message)."""
        parts = []
        for name in ("slurmctld.log", "slurmd.log", "munge/munged.log"):
            path = self.run / name
            if path.exists():
                parts.append(f"--- {name}\n" + path.read_text(errors="replace")[-3000:])
        return "\n".join(parts)


def _wait(check: object, what: str, slurm: Slurm, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(check) and check():
            return
        for name, proc in slurm.procs.items():
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited ({proc.returncode}) while waiting for {what}\n{slurm.log()}")
        time.sleep(0.1)
    raise RuntimeError(f"Slurm: {what} not within {timeout:g}s\n{slurm.log()}")


def _stop(procs: dict[str, subprocess.Popen[bytes]]) -> None:
    for name in ("slurmd", "slurmctld", "munged"):  # the reverse order of their start
        proc = procs.get(name)
        if proc is None or proc.poll() is not None:
            continue
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    for proc in procs.values():
        if proc.poll() is None:
            proc.kill()
        proc.wait()


@contextmanager
def slurm_cluster(cpus: int = 2) -> Iterator[Slurm]:
    """Start munged, slurmctld and slurmd; yield the cluster once its node is idle; stop them all.

    Raises:
        RuntimeError: Slurm or MUNGE is not installed (the message says what to install), or a daemon
            did not come up (the message holds its log).
    """
    lacking = missing()
    if lacking:
        raise RuntimeError(f"Slurm tests need {', '.join(lacking)}: {INSTALL}")
    # not under pytest's basetemp (mode 0700): munged runs as `munge` and must reach its socket dir
    run = Path(tempfile.mkdtemp(prefix="fleethub-slurm-"))
    run.chmod(0o711)
    munge = pwd.getpwnam("munge")
    node = socket.gethostname().split(".")[0]
    slurm = Slurm(run=run, conf=run / "slurm.conf", node=node, cpus=cpus)
    try:
        for sub in ("state", "spool"):
            (run / sub).mkdir(mode=0o700)
        (run / "munge").mkdir()
        os.chown(run / "munge", munge.pw_uid, munge.pw_gid)
        (run / "munge").chmod(0o711)  # clients (every user's sbatch) reach the socket; the key stays private
        key = run / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        os.chown(key, munge.pw_uid, munge.pw_gid)
        key.chmod(0o400)
        slurm.conf.write_text(CONF.format(node=node, run=run, cpus=cpus, ctld_port=free_port(),
                                          slurmd_port=free_port()))
        slurm.conf.chmod(0o644)
        logs = open(run / "daemons.out", "ab")
        env = {**os.environ, **slurm.env}
        slurm.procs["munged"] = subprocess.Popen(
            [DAEMONS["munged"], "--foreground", f"--socket={run}/munge/munge.socket", f"--key-file={key}",
             f"--pid-file={run}/munge/munged.pid", f"--log-file={run}/munge/munged.log",
             f"--seed-file={run}/munge/munged.seed"],
            stdout=logs, stderr=subprocess.STDOUT, env=env, user=munge.pw_uid, group=munge.pw_gid, extra_groups=[])
        _wait(lambda: (run / "munge" / "munge.socket").exists(), "munged's socket", slurm)
        slurm.procs["slurmctld"] = subprocess.Popen([DAEMONS["slurmctld"], "-D", "-f", str(slurm.conf)],
                                                    stdout=logs, stderr=subprocess.STDOUT, env=env)
        slurm.procs["slurmd"] = subprocess.Popen([DAEMONS["slurmd"], "-D", "-f", str(slurm.conf), "-N", node],
                                                 stdout=logs, stderr=subprocess.STDOUT, env=env)
        logs.close()

        def idle() -> bool:
            try:
                return "idle" in slurm.command("sinfo", "-h", "-p", "debug", "-o", "%T", check=False, timeout=5)
            except subprocess.TimeoutExpired:
                return False

        _wait(idle, "the node idle", slurm)
        yield slurm
    finally:
        try:
            for job in slurm.live_jobs("%i") if slurm.procs.get("slurmctld") else []:
                slurm.command("scancel", job[0], check=False)
        except Exception:  # the controller may be the thing that failed
            pass
        _stop(slurm.procs)
        shutil.rmtree(run, ignore_errors=True)
