"""What run.py does with a composed config: check it, run the task, and turn bad input into one line."""

import logging
import math
import os
import shutil
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

from drakegpt import optim
from drakegpt.config import RunConfig, Task, validate
from drakegpt.errors import UsageError
from drakegpt.files import write_json, writable_folder
from drakegpt.generate import generate_task
from drakegpt.run_dir import RunDir
from drakegpt.signals import Interrupted
from drakegpt.sweep_stop import STOP_FILE, mark_on_signal, mark_stopped, sweep_stopped
from drakegpt.train import Trainer, finished_summaries, plan_replicas

log = logging.getLogger(__name__)


def run_job(cfg: DictConfig) -> Any:
    hydra = HydraConfig.get()
    logging.raiseExceptions = False  # a full disk must not turn every log line into a traceback on stderr
    sweeping = hydra.mode == RunMode.MULTIRUN
    run_dir = Path(hydra.runtime.output_dir)
    overrides = list(hydra.overrides.task)
    metric = OmegaConf.select(cfg, "optimized_metric", default=None)
    if sweeping and os.environ.get("SUBMITIT_EXECUTOR") != "slurm":
        mark_on_signal(Path(hydra.sweep.dir))  # a worker process, too, stops the sweep instead of raising
    if sweeping and sweep_stopped(Path(hydra.sweep.dir)):
        log.info("the sweep was stopped: %s not started", run_dir.name)
        return {"status": "not started"}
    folder = RunDir(run_dir)
    trainer: Optional[Trainer] = None
    try:
        config = _typed(cfg)
        resolved = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
        validate(config, resolved)
        optim.check(config.optimizer)
        if config.task is Task.generate:
            generate_task(config, resolved, overrides)
            return None
        folder.lock()
        writable_folder(run_dir, "hydra.run.dir")
        writable_folder(Path(config.paths.models_dir), "paths.models_dir")
        if config.train.threads is None:
            config.train.threads = threads_per_job(hydra.launcher)
        # A sweep re-run into its folder skips the finished jobs and resumes the cut-off ones.
        replicas = plan_replicas(config, resolved, run_dir, config.train.resume or sweeping)
        if config.train.resume and not sweeping and not any(r.files.holds_run() for r in replicas):
            raise UsageError(
                f"train.resume=true, but {run_dir} holds no run to continue; set hydra.run.dir to the folder of "
                f"the run (printed when it stopped), or drop train.resume=true to start a new one"
            )
        summaries = finished_summaries(replicas)
        if summaries is not None:
            log.info("%s already finished; nothing to do", run_dir)
        else:
            group = config.logger.group or (hydra.sweep.dir if sweeping else str(run_dir))
            stop_file = Path(hydra.sweep.dir) / STOP_FILE if sweeping else None
            trainer = Trainer(config, replicas, group, overrides, dict(hydra.runtime.choices), stop_file)
            summaries = trainer.run()
    except Interrupted as stop:
        if stop.requeue is not None:
            stop.requeue(stop.signum, None)  # submitit's: requeues the job, now that it is saved, and exits
        if sweeping and os.environ.get("SUBMITIT_EXECUTOR") == "slurm" and not stop.by_sweep:
            # SLURM requeues (or cancels) the job itself: a result now would end it, unfinished, for the sweep.
            raise SystemExit(128 + stop.signum)
        if sweeping:
            mark_stopped(Path(hydra.sweep.dir), stop.signum)
            return _summaries_or_failure(trainer, f"stopped by {stop}", cfg, folder)[0]
        print(
            f"stopped by {stop}; checkpoint saved in {run_dir}. To continue, add train.resume=true "
            f"hydra.run.dir={run_dir} to the same command",
            file=sys.stderr,
        )
        sys.exit(128 + stop.signum)
    except KeyboardInterrupt:
        print("stopped before training started; nothing to resume", file=sys.stderr)
        sys.exit(130)
    except Exception as e:
        bad_input = isinstance(e, UsageError)
        if os.environ.get("HYDRA_FULL_ERROR") == "1" or not (bad_input or sweeping):
            raise  # a bug, not bad input: the traceback is what helps
        message = str(e) if bad_input else f"{type(e).__name__}: {e}"
        if not sweeping:
            if folder.locked or not folder.lock_file.exists():  # not a live run's folder
                _remove_if_empty(run_dir, hydra.output_subdir)
            print(f"error: {message}", file=sys.stderr)
            sys.exit(2)
        if bad_input:
            log.error(message)
        else:
            log.exception(message)
        summaries = _summaries_or_failure(trainer, message, cfg, folder)
    finally:
        folder.unlock()
        if _task(cfg) == Task.generate.value and not sweeping:
            _remove_if_empty(run_dir, hydra.output_subdir)
    summary = summaries[0]
    if metric:  # a hyperparameter sweeper minimises this number; a failed trial is infinitely bad
        values = [s.get(metric) for s in summaries if s.get("status") == "ok" and s.get(metric) is not None]
        return sum(values) / len(values) if values else math.inf
    return summary


def _task(cfg: DictConfig) -> Optional[str]:
    task = OmegaConf.select(cfg, "task", default=None)
    return getattr(task, "value", task)


def _typed(cfg: DictConfig) -> RunConfig:
    """The config as dataclasses, every interpolation resolved; a missing or unresolvable value is bad input."""
    try:
        return OmegaConf.to_object(cfg)
    except MissingMandatoryValue as e:
        raise UsageError(f"{e.full_key} has no value; set it on the command line: {e.full_key}=...") from None
    except OmegaConfBaseException as e:
        raise UsageError(f"{e.full_key}: {str(e).splitlines()[0]}") from None


def threads_per_job(launcher: DictConfig) -> Optional[int]:
    """Parallel local jobs share the cores: n_jobs processes get cores // n_jobs torch threads each."""
    if "JoblibLauncher" not in str(launcher.get("_target_", "")):
        return None
    n_jobs = launcher.get("n_jobs") or 1
    cores = os.cpu_count() or 1
    return max(1, cores // (cores if n_jobs < 0 else n_jobs))


def _summaries_or_failure(trainer: Optional[Trainer], message: str, cfg: DictConfig, folder: RunDir) -> List[Dict]:
    """A failed or stopped sweep job's summaries, so that the report and the sweep's exit code show it."""
    if trainer is not None and all(r.summary for r in trainer.replicas):
        return [r.summary for r in trainer.replicas]  # the training run wrote its own
    summary = {
        "model": OmegaConf.select(cfg, "model.name", default=None),
        "scale": OmegaConf.select(cfg, "scale.name", default=None),
        "seed": OmegaConf.select(cfg, "seed", default=None),
        "overrides": list(HydraConfig.get().overrides.task),
        "status": "failed",
        "error": message,
    }
    # The folder may hold another run (two jobs mapped to one folder): keep its summary, file this one beside it.
    own = trainer is not None or not folder.summary.is_file()
    try:
        write_json(summary, folder.summary if own else folder.refused)
    except OSError as e:
        log.error("could not record the failure in %s: %s", folder.root, e)
    return [summary]


def _remove_if_empty(run_dir: Path, output_subdir: Optional[str]) -> None:
    """A generation or a refused command leaves no run folder behind: remove it if this invocation made it alone."""
    own = {"run.log", ".lock", ".hydra"}
    try:
        if not run_dir.is_dir() or {p.name for p in run_dir.iterdir()} - own:
            return
        hydra_dir = run_dir / ".hydra"
        if hydra_dir.is_dir() and output_subdir and [p for p in hydra_dir.iterdir()] != [run_dir / output_subdir]:
            return  # an earlier invocation's config is there too
        for handler in logging.getLogger().handlers[:]:
            if isinstance(handler, logging.FileHandler) and Path(handler.baseFilename).parent == run_dir:
                handler.close()
                logging.getLogger().removeHandler(handler)
        shutil.rmtree(run_dir)
    except OSError:
        pass
