"""Sweeps through `hydra/launcher=slurm` on a real single-node SLURM cluster (tests/slurm_cluster.py).

One cluster serves the module: munged, slurmctld and slurmd started as root in a folder under /tmp, a `cpu`
partition with this machine's cores, accounting off. Each test runs `python run.py -m ... hydra/launcher=slurm`
in a subprocess, the way a user does on a login node, with conf/hydra/launcher/slurm.yaml's documented keys set
for a CPU-only cluster. The cluster's default is JobRequeue=0, as on many clusters, so a requeue works only
because slurm.yaml asks for it. Skipped without root or without slurm-wlm and munge (.ci/run installs them).
"""

import csv
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

import pytest

from helpers.runs import QUICK, ROOT, read_summary, skip_or_fail
from helpers.slurm_cluster import Cluster, local_cluster, unavailable
from helpers.wandb_files import read_run

pytestmark = pytest.mark.slow

# conf/hydra/launcher/slurm.yaml on a CPU-only cluster: the keys its header names, nothing else.
SLURM = [
    "hydra/launcher=slurm",
    "hydra.launcher.partition=cpu",
    "hydra.launcher.gpus_per_node=0",
    "hydra.launcher.cpus_per_task=1",
    "hydra.launcher.mem_gb=1",
    "hydra.launcher.timeout_min=5",
]
FAST = [*QUICK, "train.threads=1"]  # one torch thread: the job has one core
REPORT_FILES = ["comparison.csv", "summary.md", "train_loss.png", "val_loss.png", "loss.png"]
# Long enough that a signal sent after the first evaluation past step 0 lands mid-run, on 2 busy cores.
ITERS, EVERY = 600, 100
PREEMPT = ["model=TransformerLM", "seed=1,2", f"train.iters={ITERS}", f"train.eval_interval={EVERY}",
           "train.eval_iters=2", "train.sample_length=0", "train.threads=1", "logger=wandb"]


@pytest.fixture(scope="session")
def cluster():
    reason = unavailable()
    if reason:
        skip_or_fail(reason)
    # DRAKEGPT_KEEP_SLURM=1 keeps the cluster's folder (the daemons' logs, every sweep) for a look afterwards.
    with local_cluster(job_requeue=0, keep=os.environ.get("DRAKEGPT_KEEP_SLURM") == "1") as started:
        yield started


# ----------------------------------------------------------------------------------------------- helpers


@dataclass
class Sweep:
    """A `python run.py -m` running in the background; its output goes to a file."""

    proc: subprocess.Popen
    dir: Path
    log: Path
    cluster: Cluster

    def wait(self, timeout: float = 150) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"the sweep ran past {timeout} s\n{self.output()}") from None

    def output(self) -> str:
        """The head's output, every job's submitit log and the daemons' logs: what a failure needs."""
        parts = [f"--- {self.log} (exit {self.proc.poll()})", self.log.read_text(errors="replace")[-6000:]]
        for path in sorted(self.dir.glob(".submitit/*/*_log.*")):
            parts += [f"--- {path}", path.read_text(errors="replace")[-3000:]]
        return "\n".join([*parts, self.cluster.logs(20)])


def start_sweep(cluster: Cluster, work: Path, name: str, *overrides: str, slurm: bool = True) -> Sweep:
    """`python run.py -m overrides... hydra.sweep.dir=work/name` from work, through SLURM or the basic launcher."""
    sweep_dir = work / name
    cmd = [sys.executable, str(ROOT / "run.py"), "-m", *overrides, *(SLURM if slurm else []),
           f"hydra.sweep.dir={sweep_dir}"]
    home = work / "wandb-home"  # W&B's settings and artifact staging stay out of the user's home
    env = {**os.environ, **cluster.env, "WANDB_MODE": "offline", "WANDB_CONFIG_DIR": str(home / "config"),
           "WANDB_CACHE_DIR": str(home / "cache"), "WANDB_DATA_DIR": str(home / "data")}
    for key in ("HYDRA_FULL_ERROR", "WANDB_API_KEY", "WANDB_BASE_URL", "WANDB_DIR", "WANDB_SERVICE"):
        env.pop(key, None)
    log = work / f"{name}.log"
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, cwd=work, env=env, stdout=f, stderr=subprocess.STDOUT)
    return Sweep(proc, sweep_dir, log, cluster)


def metrics(run_dir: Path) -> List[Dict[str, str]]:
    if not (run_dir / "metrics.csv").is_file():
        return []
    with open(run_dir / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def losses(run_dir: Path) -> List[tuple]:
    return [(r["step"], r["train_loss"], r["val_loss"], r["lr"]) for r in metrics(run_dir)]


def rows(sweep_dir: Path) -> List[Dict[str, str]]:
    with open(sweep_dir / "comparison.csv", newline="") as f:
        return list(csv.DictReader(f))


def job_dir(sweep_dir: Path, part: str) -> Path:
    """The one job folder whose name contains part (job folders are named after their overrides)."""
    found = [d for d in sweep_dir.iterdir() if d.is_dir() and part in d.name and not d.name.startswith(".")]
    assert len(found) == 1, (part, sorted(p.name for p in sweep_dir.iterdir()))
    return found[0]


def slurm_id(run_dir: Path) -> str:
    """The SLURM job (array task) that ran a job folder: Hydra records submitit's id as hydra.job.id."""
    for path in sorted(run_dir.glob(".hydra/*/hydra.yaml")):
        found = re.search(r"^    id: '?(\d+_\d+)'?$", path.read_text(), re.MULTILINE)
        if found:
            return found.group(1)
    raise AssertionError(f"no SLURM job id in {run_dir}/.hydra/*/hydra.yaml")


def wait_for(condition, what: str, sweep: Sweep, timeout: float = 90):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        assert sweep.proc.poll() is None, f"the sweep ended before {what}\n{sweep.output()}"
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}\n{sweep.output()}")


def summary_if(run_dir: Path, status: str) -> Optional[dict]:
    try:
        summary = read_summary(run_dir)
    except (OSError, ValueError):  # not written yet, or being replaced
        return None
    return summary if summary.get("status") == status else None


# ------------------------------------------------------------------------------------- shared sweeps


@pytest.fixture(scope="module")
def models(cluster):
    work = cluster.workdir("models")
    sweep = start_sweep(cluster, work, "sweep", "model=BigramLM,MultiHeadAttentionLM,TransformerLM", *FAST)
    sweep.wait()
    return sweep


@pytest.fixture(scope="module")
def failing(cluster):
    """scale.num_heads=3 fails validation (32 % 3); num_heads=4 finishes."""
    work = cluster.workdir("failing")
    sweep = start_sweep(cluster, work, "sweep", "model=MultiHeadAttentionLM", "scale.num_heads=3,4", *FAST)
    sweep.wait()
    return sweep


@pytest.fixture(scope="module")
def preempted(cluster):
    """Two jobs that SLURM stops mid-run: seed=1 by `scontrol requeue` (SIGTERM, as a preemption), seed=2 by
    `scancel --signal=USR2` (what a time limit sends signal_delay_s before it). Beside them, the same two jobs
    straight through the basic launcher, for the numbers."""
    work = cluster.workdir("preempted")
    sweep = start_sweep(cluster, work, "slurm", *PREEMPT)
    straight = start_sweep(cluster, work, "straight", *PREEMPT, slurm=False)
    commands = {"seed=1": ["scontrol", "requeue"], "seed=2": ["scancel", "--signal=USR2"]}
    cut: Dict[str, dict] = {}
    try:
        folders = {}
        for part in commands:
            folders[part] = wait_for(lambda: next((d for d in sweep.dir.glob(f"*{part},*") if d.is_dir()), None),
                                     f"the {part} job folder", sweep)
        pending = dict(commands)
        while pending:  # stop each job once it has evaluated past step 0: mid-run, most iterations to go
            for part in list(pending):
                if len(metrics(folders[part])) >= 2:
                    cut[part] = {"id": slurm_id(folders[part]), "command": pending.pop(part)}
                    cluster.run(*cut[part]["command"], cut[part]["id"])
            assert sweep.proc.poll() is None, f"the sweep ended before it could be stopped\n{sweep.output()}"
            time.sleep(0.02)
        for part in commands:  # what the stop left behind, before the requeued job resumes and overwrites it
            cut[part]["summary"] = wait_for(lambda: summary_if(folders[part], "interrupted"),
                                            f"the {part} job's interrupted summary", sweep)
            cut[part]["metrics"] = losses(folders[part])
        sweep.wait()
        straight.wait()
    finally:
        for s in (sweep, straight):
            if s.proc.poll() is None:
                s.proc.kill()
                s.proc.wait()
    return {"sweep": sweep, "straight": straight, "cut": cut, "folders": folders}


# ------------------------------------------------------------------------------------------ sweeps


def test_a_sweep_of_several_models_runs_as_slurm_jobs_and_writes_the_comparison(models, cluster):
    assert models.proc.returncode == 0, models.output()
    for name in REPORT_FILES:
        assert (models.dir / name).is_file(), f"{name} missing\n{models.output()}"
    for name in ("train_loss.png", "val_loss.png"):
        assert (models.dir / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = rows(models.dir)
    assert sorted(r["model"] for r in table) == ["BigramLM", "MultiHeadAttentionLM", "TransformerLM"], table
    assert {r["status"] for r in table} == {"ok"}, table
    summary_md = (models.dir / "summary.md").read_text()
    ids = set()
    for model in ("BigramLM", "MultiHeadAttentionLM", "TransformerLM"):
        assert f"| {model} " in summary_md, summary_md
        run_dir = job_dir(models.dir, f"model={model},")
        assert read_summary(run_dir)["steps"] == 20
        assert [r["step"] for r in metrics(run_dir)] == ["0", "10", "20"]
        # Each ran as its own SLURM job, an array task that finished: its log folder is in the sweep's .submitit/.
        ids.add(slurm_id(run_dir))
        job = cluster.ended(slurm_id(run_dir))
        assert (job["JobState"], job["ExitCode"], job["Partition"]) == ("COMPLETED", "0:0", "cpu"), job
        assert (models.dir / ".submitit" / slurm_id(run_dir)).is_dir()
        # slurm.yaml's resources as set; requeue allowed although the cluster's default says no
        assert (job["NumCPUs"], job["MinMemoryNode"], job["TimeLimit"], job["Requeue"]) == ("1", "1G", "00:05:00", "1")
    (array,) = {i.split("_")[0] for i in ids}
    assert len(ids) == 3, ids  # one array of three tasks
    script = (models.dir / ".submitit" / array / f"{array}_submission.sh").read_text()
    assert "#SBATCH --signal=USR2@120\n" in script and "#SBATCH --requeue\n" in script, script


def test_a_failing_job_is_recorded_and_the_sweep_exits_non_zero(failing):
    assert failing.proc.returncode not in (0, None), failing.output()
    assert "1 of 2 jobs did not finish ok" in failing.log.read_text(), failing.output()
    table = {r["job"]: r for r in rows(failing.dir)}
    assert len(table) == 2, table
    (bad,) = [r for job, r in table.items() if "scale.num_heads=3" in job]
    (good,) = [r for job, r in table.items() if "scale.num_heads=4" in job]
    assert bad["status"] == "failed" and "scale.num_heads" in bad["error"] and "divisible" in bad["error"], bad
    assert good["status"] == "ok", good
    assert read_summary(failing.dir / bad["job"])["status"] == "failed"
    assert f"`{bad['job']}`: failed:" in (failing.dir / "summary.md").read_text()


# ------------------------------------------------------------------------------------- preemption


@pytest.mark.parametrize("part", ["seed=1", "seed=2"], ids=["scontrol_requeue", "usr2_time_limit"])
def test_a_stopped_job_checkpoints_is_requeued_and_resumes_to_the_straight_losses(preempted, cluster, part):
    sweep, straight = preempted["sweep"], preempted["straight"]
    assert sweep.proc.returncode == 0, sweep.output()
    assert straight.proc.returncode == 0, straight.output()
    run_dir, cut = preempted["folders"][part], preempted["cut"][part]

    # Stopped at an iteration boundary past the first evaluation, checkpoint saved.
    stopped = cut["summary"]
    assert stopped["status"] == "interrupted" and EVERY <= stopped["steps"] < ITERS, stopped
    assert cut["metrics"] == losses(run_dir)[: len(cut["metrics"])]

    # Requeued once by SLURM, the same array task, which then finished.
    job = cluster.ended(cut["id"])
    assert (job["JobState"], job["Restarts"]) == ("COMPLETED", "1"), job
    log = (run_dir / "run.log").read_text()
    assert f"at step {stopped['steps']}" in log and "resuming" in log, log
    submitit_log = "".join(p.read_text() for p in (sweep.dir / ".submitit" / cut["id"]).glob("*_log.*"))
    if cut["command"][0] == "scancel":  # USR2: submitit's handler requeued the job, counting a time-out
        assert "Requeued job" in submitit_log, submitit_log
    else:  # SIGTERM: SLURM requeued the job itself; it exited without a result
        assert "Requeued job" not in submitit_log, submitit_log

    # The same numbers as the job run straight through: each evaluation once.
    resumed = read_summary(run_dir)
    reference_dir = straight.dir / run_dir.name
    reference = read_summary(reference_dir)
    assert resumed["status"] == "ok" and resumed["steps"] == ITERS, resumed
    for key in ("final_train_loss", "final_val_loss", "best_val_loss", "best_step", "steps"):
        assert resumed[key] == reference[key], (key, resumed[key], reference[key])
    assert losses(run_dir) == losses(reference_dir)
    assert [int(r[0]) for r in losses(run_dir)] == list(range(0, ITERS + 1, EVERY))
    assert {r["status"] for r in rows(sweep.dir)} == {"ok"}


@pytest.mark.parametrize("part", ["seed=1", "seed=2"], ids=["scontrol_requeue", "usr2_time_limit"])
def test_a_requeued_job_continues_its_wandb_run_with_each_evaluation_once(preempted, part):
    sweep = preempted["sweep"]
    assert sweep.proc.returncode == 0, sweep.output()
    run_dir, cut = preempted["folders"][part], preempted["cut"][part]
    run_id = cut["summary"]["run_id"]
    assert run_id and read_summary(run_dir)["run_id"] == run_id
    # One offline run folder per attempt, each under the run's id. The jobs have ended: read each file as it is.
    runs = [read_run(folder, wait_s=0) for folder in sorted((run_dir / "wandb").glob("offline-run-*"))]
    assert len(runs) == 2, [r.folder for r in runs]
    for run in runs:
        assert run.folder.name.endswith(f"-{run_id}"), run.folder
    # SIGTERM ends wandb-core too (SLURM signals every process of the job): the first attempt's file may hold
    # nothing, but whatever it holds is this run's, and no evaluation is missing from or doubled in the run.
    assert {r.id for r in runs} <= {run_id, ""} and runs[-1].id == run_id, [(r.folder.name, r.id) for r in runs]
    logged = sorted(row["step"] for run in runs for row in run.history if "val/loss" in row)
    assert logged == list(range(0, ITERS + 1, EVERY)), (
        "W&B rows per attempt (a SIGTERM that ended wandb-core loses the rows it had not written):",
        [[row.get("step") for row in r.history] for r in runs])
    assert runs[-1].exit_code == 0 and runs[-1].summary.get("status") == "ok", (runs[-1].exit_code, runs[-1].summary)
