"""Hydra callbacks (conf/config.yaml, hydra.callbacks), all in one place.

- OutputFolder: a run or sweep folder that cannot be written fails in one line before Hydra writes into it;
  a SLURM launcher with no reachable controller too.
- SweepProgress: the sweep's size and what varies between its jobs, for the jobs' names and projections
  (`<sweep>/.sweep.json`), and after each job a line: jobs done of the total, time so far and left.
- SweepReport: the comparison when a sweep ends (drakegpt/report.py), also on W&B; the exit code says
  whether every job finished ok.
"""

import logging
import math
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, Optional

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from drakegpt.errors import UsageError
from drakegpt.files import read_json, writable_folder, write_json
from drakegpt.overrides import sweep_keys
from drakegpt.sweep_stop import SweepSignals, sweep_stopped
from drakegpt.tracking import duration

log = logging.getLogger(__name__)
SWEEP_FILE = ".sweep.json"
CONTROLLER_TIMEOUT_S = 10
MAX_TAGS = 20


def _refuse(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


class OutputFolder(Callback):
    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        self._check(config.hydra.run.dir, "hydra.run.dir")
        folder = Path(config.hydra.run.dir)
        for name, is_kind, kind in ((".hydra", Path.is_dir, "a folder"), ("run.log", Path.is_file, "a file")):
            path = folder / name  # Hydra writes these before any task code: they are checked here
            if path.is_symlink() or (path.exists() and not is_kind(path)):
                what = "a symbolic link" if path.is_symlink() else f"not {kind}"
                _refuse(f"{path} is {what}, where Hydra writes {kind}; move it, or choose another hydra.run.dir")

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        self._check(config.hydra.sweep.dir, "hydra.sweep.dir")
        if "SlurmLauncher" in str(OmegaConf.select(config, "hydra.launcher._target_", default="")):
            problem = slurm_problem()
            if problem:
                _refuse(problem)

    @staticmethod
    def _check(folder: str, key: str) -> None:
        if not str(folder).strip():  # Hydra would write into the current folder
            _refuse(f"{key} is empty, which would mean the current folder; name a folder, or leave {key} out for "
                    f"its default")
        try:
            writable_folder(Path(folder), key)
        except UsageError as e:
            _refuse(str(e))


def slurm_problem() -> Optional[str]:
    """Why a SLURM sweep could not be submitted from here, or None."""
    if shutil.which("sbatch") is None:
        return "hydra/launcher=slurm needs SLURM's sbatch on this machine (run the sweep from a login node)"
    try:
        subprocess.run(["scontrol", "ping"], capture_output=True, timeout=CONTROLLER_TIMEOUT_S, check=True)
    except (OSError, subprocess.SubprocessError):
        return (f"hydra/launcher=slurm: no SLURM controller answered `scontrol ping` within {CONTROLLER_TIMEOUT_S} s; "
                f"check that slurmctld runs and that this machine can reach it")
    return None


def sweep_info(sweep_dir: Path) -> Dict[str, Any]:
    try:
        return read_json(Path(sweep_dir) / SWEEP_FILE)
    except UsageError:
        return {}


def jobs_done(sweep_dir: Path) -> int:
    """Jobs of the sweep with a final summary (a job's replicas count once)."""
    done = set()
    for summary in Path(sweep_dir).glob("*/summary.json"):
        done.add(summary.parent)
    for summary in Path(sweep_dir).glob("*/seed=*/summary.json"):
        done.add(summary.parent.parent)
    finished = 0
    for job in done:
        files = [job / "summary.json", *job.glob("seed=*/summary.json")]
        statuses = {_status(f) for f in files if f.is_file()}
        finished += bool(statuses) and "interrupted" not in statuses
    return finished


def _status(path: Path) -> Optional[str]:
    try:
        return read_json(path).get("status")
    except UsageError:
        return None


class SweepProgress(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        params = config.hydra.sweeper.get("params")
        params = OmegaConf.to_container(params, resolve=False) if params is not None else {}
        # in the sweeper's order: its params, then the command line's (a later override of a key wins)
        overrides = [*(f"{k}={v}" for k, v in params.items()), *config.hydra.overrides.task]
        total = OmegaConf.select(config, "hydra.sweeper.n_trials") or count_jobs(overrides)
        write_json({"total": total, "started": time.time(), "done_at_start": jobs_done(sweep_dir),
                    "varying": sweep_keys(overrides)}, sweep_dir / SWEEP_FILE)

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        info = sweep_info(sweep_dir)
        if not info.get("total"):
            return
        done, total = jobs_done(sweep_dir), info["total"]
        elapsed = time.time() - info["started"]
        new = done - info.get("done_at_start", 0)
        left = f", about {duration(elapsed / new * (total - done))} left" if 0 < new and done < total else ""
        log.info("sweep: %d of %d jobs done, %s so far%s", min(done, total), total, duration(elapsed), left)


def count_jobs(overrides) -> int:
    """How many jobs the basic sweeper makes of these overrides: the product of the swept values, where a later
    override of a key replaces an earlier one (a command line's `variant=a,b` replaces a preset's list)."""
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser

    loader = GlobalHydra.instance().config_loader() if GlobalHydra.instance().is_initialized() else None
    parsed = OverridesParser.create(config_loader=loader).parse_overrides(list(overrides))
    sizes = {o.get_key_element(): len(list(o.sweep_iterator())) if o.is_sweep_override() else 1 for o in parsed}
    return math.prod(sizes.values())


class SweepReport(Callback):
    """Writes the comparison when a sweep ends; the sweep exits non-zero if any job did not finish ok."""

    def __init__(self):
        self.signals: Optional[SweepSignals] = None

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        self.signals = SweepSignals(Path(config.hydra.sweep.dir))

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        from drakegpt.report import write_report
        from drakegpt.wandb_session import log_sweep_summary

        sweep_dir = Path(config.hydra.sweep.dir)
        if self.signals is not None:
            self.signals.restore()
        try:
            report = write_report(sweep_dir)
        except UsageError as e:
            _refuse(str(e))
        except Exception as e:  # Hydra turns a callback's exception into a warning: the exit code must say it
            log.exception("the comparison could not be written")
            _refuse(f"the sweep's comparison could not be written ({type(e).__name__}: {e}); its jobs' files are "
                    f"in {sweep_dir}: python -m drakegpt.report {sweep_dir} rebuilds it")
        table = report.table
        experiment = HydraConfig.get().runtime.choices.get("experiment") if HydraConfig.initialized() else None
        # Tagged as its jobs are (drakegpt.wandb_session.run_tags): a filter on a tag shows them together.
        tags = [*dict.fromkeys(table.model.dropna()), *(f"scale={s}" for s in dict.fromkeys(table.scale.dropna())),
                *([f"experiment={experiment}"] if experiment else [])][:MAX_TAGS]
        log_sweep_summary(sweep_dir, config.logger, config.logger.group or sweep_group(sweep_dir, experiment), table,
                          None if report.ablation.empty else report.ablation, report.figures, report.curves, tags)
        failed = table[table.status != "ok"]
        log.info("comparison of %d jobs in %s", len(table), sweep_dir)
        stopped = sweep_stopped(sweep_dir)
        if stopped:
            print(
                f"sweep stopped by {stopped}: {len(table) - len(failed)} of its jobs finished, comparison in "
                f"{sweep_dir}; run the same command with hydra.sweep.dir={sweep_dir} to continue",
                file=sys.stderr,
            )
            sys.exit(128 + signal.Signals[stopped].value)
        if not failed.empty:
            print(f"{len(failed)} of {len(table)} jobs did not finish ok; see {sweep_dir / 'summary.md'}",
                  file=sys.stderr)
            sys.exit(1)


def sweep_group(sweep_dir: Path, experiment: Optional[str]) -> str:
    """The W&B group of a sweep's runs: its folder's name, after the experiment's."""
    return "-".join(p for p in (experiment, Path(sweep_dir).name) if p)
