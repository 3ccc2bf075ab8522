"""drakegpt/callbacks.py: the sweep's size as Hydra expands it, its progress, and a SLURM launcher that cannot
reach its controller."""

import json
import os

from drakegpt.callbacks import count_jobs, jobs_done, slurm_problem, sweep_group
from drakegpt.schema import group_options


def test_a_sweep_is_counted_as_hydra_expands_it():
    from drakegpt.schema import _with_conf

    total = _with_conf(lambda _: count_jobs(["model=glob(*)", "seed=1,2", "train.iters=5"]))
    assert total == 2 * len(group_options("model"))
    assert _with_conf(lambda _: count_jobs(["variant=glob([baseline,no_*])"])) == 1 + sum(
        v.startswith("no_") for v in group_options("variant"))
    # the command line's list replaces the preset's (the sweeper's params come first), as Hydra's sweeper does
    assert _with_conf(lambda _: count_jobs(["variant=glob(*)", "seed=1,2,3", "variant=baseline,no_norm"])) == 6
    assert _with_conf(lambda _: count_jobs(["variant=glob(*)", "variant=baseline"])) == 1


def test_jobs_done_count_a_group_of_replicas_once_and_an_interrupted_job_not(tmp_path):
    for job, statuses in {"a": ["ok"], "b": ["ok", "ok"], "c": ["interrupted"], "d": ["ok", "interrupted"]}.items():
        for i, status in enumerate(statuses):
            folder = tmp_path / job / (f"seed={i}" if len(statuses) > 1 else "")
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "summary.json").write_text(json.dumps({"status": status}))
    assert jobs_done(tmp_path) == 2


def test_a_slurm_launcher_without_sbatch_or_a_controller_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch here
    assert "needs SLURM's sbatch" in slurm_problem()
    for name in ("sbatch", "scontrol"):  # a scontrol that cannot reach its controller
        (tmp_path / name).write_text("#!/bin/sh\nexit 1\n")
        os.chmod(tmp_path / name, 0o755)
    assert "no SLURM controller answered" in slurm_problem()


def test_a_sweeps_group_is_its_name_after_its_experiment(tmp_path):
    assert sweep_group(tmp_path / "2026-01-01_10-00-00", "ablation") == "ablation-2026-01-01_10-00-00"
    assert sweep_group(tmp_path / "2026-01-01_10-00-00", None) == "2026-01-01_10-00-00"
