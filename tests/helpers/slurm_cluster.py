"""A throw-away single-node SLURM cluster for tests/test_slurm.py: munged, slurmctld and slurmd on this machine.

Debian 12's slurm-wlm 22.05 and munge (`.ci/run` installs them), run as root without systemd, every file in one
folder under /tmp: the munge key and socket, slurm.conf, the controller's state, the logs. All SLURM commands and
daemons read $SLURM_CONF, so `Cluster.env` (SLURM_CONF, and PATH with a `sacct` stand-in first) is all a process
needs to use it; sbatch passes it on to the jobs. One partition, `cpu`, with the machine's cores; accounting off.

    with local_cluster() as cluster:
        subprocess.run([...], env={**os.environ, **cluster.env})
"""

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional

PACKAGES = "slurm-wlm munge"
DAEMONS = ("mungekey", "munged", "slurmctld", "slurmd")
COMMANDS = ("sbatch", "srun", "squeue", "scontrol", "scancel", "sinfo")
SBIN = ("/usr/sbin", "/sbin", "/usr/local/sbin")  # root's daemons, when PATH lacks them
ACTIVE = "PD,CF,R,CG,S,SO,RQ,RS,RH,SI,ST"  # every state in which a job still holds or waits for the node
ACTIVE_NAMES = {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "STAGE_OUT", "REQUEUED",
                "RESIZING", "REQUEUE_HOLD", "REQUEUE_FED", "SIGNALING", "STOPPED"}

# Accounting is off, so `sacct` fails, and submitit would never learn that a job ended without a result (killed,
# cancelled): it waits for the result file for ever. squeue knows every job of this cluster's life (MinJobAge), so
# this answers the one query submitit makes:  sacct -o JobID,State,NodeList --parsable2 -j ID [-j ID ...]
SACCT = """#!/bin/bash
# sacct stand-in (accounting is off): submitit's state query, answered by squeue
ids=()
while [ $# -gt 0 ]; do case "$1" in -j) ids+=("$2"); shift 2;; *) shift;; esac; done
echo "JobID|State|NodeList"
[ ${#ids[@]} -eq 0 ] && exit 0
exec squeue --noheader --states=all -o "%i|%T|%N" -j "$(IFS=,; echo "${ids[*]}")"
"""


def _which(name: str) -> Optional[str]:
    return shutil.which(name) or shutil.which(name, path=os.pathsep.join(SBIN))


def unavailable() -> Optional[str]:
    """Why a local cluster cannot start here, or None."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "a local SLURM cluster needs root (munged, slurmctld and slurmd run as root here)"
    missing = [name for name in DAEMONS + COMMANDS if _which(name) is None]
    if missing:
        return (f"SLURM is not installed ({', '.join(missing)} missing); .ci/run installs it: "
                f"apt-get install -y {PACKAGES}")
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Cluster:
    root: Path  # everything: munge/, state/, spool/, log/, bin/sacct, slurm.conf, work/
    env: Dict[str, str]  # SLURM_CONF and PATH: merge into a process's environment to use the cluster
    partition: str

    def run(self, *cmd: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
        """A SLURM command (scontrol, scancel, squeue, ...) against this cluster."""
        result = subprocess.run(list(cmd), env={**os.environ, **self.env}, capture_output=True, text=True,
                                timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)}: exit {result.returncode}\n{result.stdout}{result.stderr}")
        return result

    def job(self, job_id: str) -> Dict[str, str]:
        """`scontrol show job`'s fields (JobState, Restarts, ExitCode, ...) of one job or array task, e.g. 12_0."""
        shown = self.run("scontrol", "--oneliner", "show", "job", job_id).stdout
        return dict(word.split("=", 1) for word in shown.split() if "=" in word)

    def ended(self, job_id: str, timeout: float = 30) -> Dict[str, str]:
        """The job's fields once it left the node: a job's result reaches submitit before its process ends."""
        deadline = time.monotonic() + timeout
        while True:
            fields = self.job(job_id)
            if fields.get("JobState") not in ACTIVE_NAMES or time.monotonic() > deadline:
                return fields
            time.sleep(0.1)

    def workdir(self, name: str) -> Path:
        """A fresh folder for a test's sweeps: under this cluster's world-traversable root, so jobs reach it."""
        folder = self.root / "work" / name
        folder.mkdir(parents=True)
        folder.chmod(0o755)
        return folder

    def logs(self, lines: int = 40) -> str:
        """The daemons' last log lines, for a failure message."""
        parts = []
        for name in ("slurmctld.log", "slurmd.log"):
            path = self.root / "log" / name
            text = path.read_text(errors="replace").splitlines()[-lines:] if path.is_file() else ["(none)"]
            parts.append(f"--- {path}\n" + "\n".join(text))
        return "\n".join(parts)

    def drain(self, timeout: float = 30) -> None:
        """Cancel every job and wait until none is left on the node (stopping slurmd earlier orphans slurmstepd)."""
        self.run("scancel", "--user=root", check=False)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            q = self.run("squeue", "--noheader", f"--states={ACTIVE}", check=False)
            if q.returncode != 0 or not q.stdout.strip():
                return
            time.sleep(0.2)


def _slurm_conf(root: Path, socket_path: Path, partition: str, kill_wait: int, job_requeue: int) -> str:
    host = socket.gethostname().split(".")[0]  # slurmd's own node name; it must resolve (it is in /etc/hosts)
    node = subprocess.run([_which("slurmd"), "-C"], capture_output=True, text=True, check=True).stdout.splitlines()[0]
    return f"""\
ClusterName=drakegpt-tests
SlurmctldHost={host}
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# cred_expire: a requeued job may start again only after its credential expired (default 120 s)
AuthInfo=socket={socket_path},cred_expire=5
StateSaveLocation={root / "state"}
SlurmdSpoolDir={root / "spool"}
SlurmctldPidFile={root / "slurmctld.pid"}
SlurmdPidFile={root / "slurmd.pid"}
SlurmctldLogFile={root / "log" / "slurmctld.log"}
SlurmdLogFile={root / "log" / "slurmd.log"}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SwitchType=switch/none
MpiDefault=none
MailProg=/bin/true
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,bf_interval=1
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
JobRequeue={job_requeue}
KillWait={kill_wait}
MinJobAge=3600
InactiveLimit=0
{node} State=UNKNOWN
PartitionName={partition} Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""


def _stop_pids(pidfiles: List[Path], timeout: float = 15) -> None:
    """SIGTERM the daemons named in the pid files (together: each takes 2-3 s), SIGKILL what outlives timeout."""
    pids = []
    for f in pidfiles:
        with contextlib.suppress(OSError, ValueError):
            pids.append(int(f.read_text().strip()))
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for pid in pids:
        while True:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            if time.monotonic() > deadline:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                break
            time.sleep(0.1)


@contextlib.contextmanager
def local_cluster(partition: str = "cpu", kill_wait: int = 5, job_requeue: int = 1,
                  keep: bool = False) -> Iterator[Cluster]:
    """Start munged, slurmctld and slurmd; yield the Cluster once its node is idle; drain, stop and remove it.

    job_requeue: the cluster's default for batch jobs (JobRequeue); a job's own --requeue overrides it.
    keep: leave the folder (logs, the tests' sweeps) behind.
    """
    # Not pytest's tmp_path: munged refuses a socket whose parent folders are not all o+x, and pytest keeps
    # /tmp/pytest-of-<user> at 0700.
    root = Path(tempfile.mkdtemp(prefix="drakegpt-slurm-")).resolve()
    root.chmod(0o755)
    for sub in ("munge", "state", "spool", "log", "bin", "work"):
        (root / sub).mkdir()
        (root / sub).chmod(0o755)
    munge_socket, key = root / "munge" / "munge.socket", root / "munge" / "munge.key"
    sacct = root / "bin" / "sacct"
    sacct.write_text(SACCT)
    sacct.chmod(0o755)
    conf = root / "slurm.conf"
    path = os.pathsep.join([str(root / "bin"), os.environ.get("PATH", ""), *SBIN])
    env = {"SLURM_CONF": str(conf), "PATH": path}
    daemon_env = {**os.environ, **env}
    cluster = Cluster(root, env, partition)
    munged = False
    try:
        subprocess.run([_which("mungekey"), "--create", f"--keyfile={key}"], check=True, capture_output=True)
        subprocess.run([_which("munged"), f"--socket={munge_socket}", f"--key-file={key}",
                        f"--pid-file={root / 'munge' / 'munged.pid'}", f"--seed-file={root / 'munge' / 'munged.seed'}",
                        f"--log-file={root / 'log' / 'munged.log'}"], check=True, capture_output=True)
        munged = True
        conf.write_text(_slurm_conf(root, munge_socket, partition, kill_wait, job_requeue))
        for daemon in ("slurmctld", "slurmd"):  # each forks into the background once it is up
            started = subprocess.run([_which(daemon)], env=daemon_env, capture_output=True, text=True)
            if started.returncode != 0:
                raise RuntimeError(f"{daemon} did not start: {started.stderr.strip()}\n{cluster.logs()}")
        deadline, state = time.monotonic() + 30, ""
        while state != "idle":
            if time.monotonic() > deadline:
                raise RuntimeError(f"the SLURM node never became idle (sinfo: {state!r})\n{cluster.logs()}")
            time.sleep(0.2)
            state = cluster.run("sinfo", "--noheader", "--Node", "-o", "%t", check=False).stdout.strip()
        yield cluster
    finally:
        if (root / "slurmctld.pid").is_file():
            cluster.drain(timeout=3 * kill_wait + 10)
        _stop_pids([root / "slurmd.pid", root / "slurmctld.pid"])
        if munged:
            subprocess.run([_which("munged"), f"--socket={munge_socket}", "--stop"], capture_output=True)
        if not keep:
            shutil.rmtree(root, ignore_errors=True)
