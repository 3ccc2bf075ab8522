"""What run.py does with a composed config: check it, run the task (`run_job`), and, in one wrapper
(`task_wrapper`, lightning-hydra-template's way), the failure policy: bad input is one line and a non-zero
exit, a stop says how to continue, and a sweep job records its failure instead of ending the sweep."""

import functools
import logging
import math
import os
import shutil
import sys
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from hydra import compose
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

from drakegpt import optim, registry
from drakegpt.callbacks import sweep_group, sweep_info
from drakegpt.errors import UsageError
from drakegpt.files import write_json, writable_folder
from drakegpt.generate import generate_task
from drakegpt.identity import RunIdentity, choice_diff, switch_diff, variant_parts
from drakegpt.overrides import as_dict, sweep_keys
from drakegpt.replicas import finished_summaries, plan_replicas
from drakegpt.run_dir import RunDir
from drakegpt.schema import RunConfig, Task, validate
from drakegpt.signals import Interrupted
from drakegpt.sweep_stop import STOP_FILE, mark_on_signal, mark_stopped, sweep_stopped
from drakegpt.train import Trainer

log = logging.getLogger(__name__)


class Job:
    """One invocation as Hydra runs it: its folder, its overrides, whether it is a sweep's job."""

    def __init__(self, cfg: DictConfig):
        hydra = HydraConfig.get()
        self.cfg, self.hydra = cfg, hydra
        self.sweeping = hydra.mode == RunMode.MULTIRUN
        self.sweep_dir = Path(hydra.sweep.dir) if self.sweeping else None
        self.run_dir = Path(hydra.runtime.output_dir)
        self.folder = RunDir(self.run_dir)
        self.overrides = list(hydra.overrides.task)
        self.trainer: Optional[Trainer] = None


def task_wrapper(task: Callable[[Job], List[Dict[str, Any]]]) -> Callable[[DictConfig], Any]:
    """The failure policy around a task: one line for bad input, a resumable stop, a recorded sweep failure."""

    @functools.wraps(task)
    def wrapped(cfg: DictConfig) -> Any:
        job = Job(cfg)
        logging.raiseExceptions = False  # a full disk must not turn every log line into a traceback on stderr
        if job.sweeping and os.environ.get("SUBMITIT_EXECUTOR") != "slurm":
            mark_on_signal(job.sweep_dir)  # a worker process, too, stops the sweep instead of raising
        try:
            summaries = task(job)
        except Interrupted as stop:
            summaries = _stopped(job, stop)
        except KeyboardInterrupt:  # outside training (a second Ctrl-C, or before it started): out at once
            print(_stopped_at_once(job), file=sys.stderr)
            sys.exit(130)
        except Exception as e:
            summaries = _failed(job, e)
        finally:
            job.folder.unlock()
            if _task(cfg) == Task.generate.value and not job.sweeping:
                _leave_no_trace(job.run_dir, job.hydra.output_subdir)
        if not summaries:
            return None
        metric = OmegaConf.select(cfg, "optimized_metric", default=None)
        if metric:  # a hyperparameter sweeper minimises this number; a failed trial is infinitely bad
            values = [s.get(metric) for s in summaries if s.get("status") == "ok" and s.get(metric) is not None]
            return sum(values) / len(values) if values else math.inf
        return summaries[0]

    return wrapped


def _stopped(job: Job, stop: Interrupted) -> List[Dict[str, Any]]:
    if stop.requeue is not None:
        stop.requeue(stop.signum, None)  # submitit's: requeues the job, now that it is saved, and exits
    if job.sweeping and os.environ.get("SUBMITIT_EXECUTOR") == "slurm" and not stop.by_sweep:
        # SLURM requeues (or cancels) the job itself: a result now would end it, unfinished, for the sweep.
        raise SystemExit(128 + stop.signum)
    if job.sweeping:
        mark_stopped(job.sweep_dir, stop.signum)
        return _summaries_or_failure(job, f"stopped by {stop}")
    print(f"stopped by {stop}; checkpoint saved in {job.run_dir}. To continue, add train.resume=true "
          f"hydra.run.dir={job.run_dir} to the same command", file=sys.stderr)
    sys.exit(128 + stop.signum)


def _stopped_at_once(job: Job) -> str:
    if _task(job.cfg) == Task.generate.value:
        return "stopped; the text sampled so far is not saved"
    if job.trainer is not None and any(r.files.last.is_file() for r in job.trainer.replicas):
        return (f"stopped at once; {job.run_dir} keeps the checkpoint of the last evaluation: add train.resume=true "
                f"hydra.run.dir={job.run_dir} to continue from it")
    return "stopped before training started; nothing to resume"


def _failed(job: Job, e: Exception) -> List[Dict[str, Any]]:
    bad_input = isinstance(e, UsageError)
    if os.environ.get("HYDRA_FULL_ERROR") == "1" or not (bad_input or job.sweeping):
        raise e  # a bug, not bad input: the traceback is what helps
    message = str(e) if bad_input else f"{type(e).__name__}: {e}"
    if not job.sweeping:
        if job.folder.locked or not job.folder.lock_file.exists():  # not a live run's folder
            _leave_no_trace(job.run_dir, job.hydra.output_subdir)
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)
    if bad_input:
        log.error(message)
    else:
        log.exception(message)
    return _summaries_or_failure(job, message)


@task_wrapper
def run_job(job: Job) -> List[Dict[str, Any]]:
    """Train or generate, as the config says."""
    cfg = job.cfg
    if job.sweeping and sweep_stopped(job.sweep_dir):
        log.info("the sweep was stopped: %s not started", job.run_dir.name)
        return [{"status": "not started"}]
    config = _typed(cfg)
    resolved = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    validate(config, resolved)
    optim.check(config.optimizer)
    if config.task is Task.generate:
        generate_task(config, resolved, job.overrides)
        return []
    job.folder.lock()
    writable_folder(job.run_dir, "hydra.run.dir")
    if config.train.publish:
        _check_apart(job.run_dir, Path(config.paths.registry_dir))
        registry.check_folder(config.paths.registry_dir, config.model.name, config.scale.name)
    if config.train.publish:
        writable_folder(Path(config.paths.registry_dir), "paths.registry_dir")
    if config.train.threads is None:
        config.train.threads = threads_per_job(job.hydra.launcher)
    identity = run_identity(job, resolved)
    # A sweep re-run into its folder skips the finished jobs and resumes the cut-off ones.
    replicas = plan_replicas(config, resolved, job.run_dir, config.train.resume or job.sweeping)
    if config.train.resume and not job.sweeping and not any(r.files.holds_run() for r in replicas):
        raise UsageError(
            f"train.resume=true, but {job.run_dir} holds no run to continue; set hydra.run.dir to the folder of "
            f"the run (printed when it stopped), or drop train.resume=true to start a new one"
        )
    summaries = finished_summaries(replicas)
    if summaries is not None:
        log.info("%s already finished; nothing to do", job.run_dir)
        return summaries
    stop_file = job.sweep_dir / STOP_FILE if job.sweeping else None
    job.trainer = Trainer(config, replicas, identity, stop_file)
    return job.trainer.run()


def _check_apart(run_dir: Path, registry_dir: Path) -> None:
    """A run's folder never inside the registry (nor the registry inside a run's folder): list and remove would
    meet a run's files, and a run a registry's."""
    run, registry = run_dir.resolve(), registry_dir.expanduser().resolve()
    if run == registry or registry in run.parents or run in registry.parents:
        raise UsageError(f"hydra.run.dir={run_dir} and paths.registry_dir={registry_dir} overlap; keep runs and "
                         f"published weights in folders apart")


def run_identity(job: Job, resolved: Dict[str, Any]) -> RunIdentity:
    """The run's variant, its W&B name parts and group, and its place in the sweep; a variant that changes
    nothing in this model (experiment=ablation model=BigramLM) is refused here, before anything is built."""
    choices = {k: v for k, v in job.hydra.runtime.choices.items() if not k.startswith("hydra")}
    defaults = {k: v for k, v in compose(job.hydra.job.config_name, return_hydra_config=True)
                .hydra.runtime.choices.items() if not k.startswith("hydra")}
    parts = variant_parts(resolved, job.overrides, choices, defaults)
    effect = switch_diff(resolved) + choice_diff(choices, defaults)
    variant = choices.get("variant")
    if variant not in (None, "baseline") and not effect:
        raise UsageError(
            f"variant={variant} changes nothing in model={resolved['model']['name']} (its preset does not have the "
            f"idea it takes away or already has the one it adds); drop it, or choose a model it applies to"
        )
    if job.sweeping:
        info = sweep_info(job.sweep_dir)
        varying = set(info.get("varying") or sweep_keys(job.overrides)) - {"model", "scale", "seed"}
        values = as_dict(job.overrides)
        names = [p for key in sorted(varying) for p in (effect if key == "variant" else [f"{key}={values.get(key)}"])]
        group = sweep_group(job.sweep_dir, choices.get("experiment"))
        jobs_left = max(0, int(info.get("total") or 0) - job.hydra.job.num - 1)
    else:
        names, group, jobs_left = effect, job.run_dir.name, 0
    return RunIdentity(parts, names, choices, job.overrides, job.cfg.logger.group or group, jobs_left)


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


def _summaries_or_failure(job: Job, message: str) -> List[Dict]:
    """A failed or stopped sweep job's summaries, so that the report and the sweep's exit code show it."""
    trainer = job.trainer
    if trainer is not None and all(r.summary for r in trainer.replicas):
        return [r.summary for r in trainer.replicas]  # the training run wrote its own
    cfg = job.cfg
    summary = {
        "model": OmegaConf.select(cfg, "model.name", default=None),
        "scale": OmegaConf.select(cfg, "scale.name", default=None),
        "seed": OmegaConf.select(cfg, "seed", default=None),
        "overrides": job.overrides,
        "status": "failed",
        "error": message,
    }
    # The folder may hold another run (two jobs mapped to one folder): keep its summary, file this one beside it.
    own = trainer is not None or not job.folder.summary.is_file()
    try:
        write_json(summary, job.folder.summary if own else job.folder.refused)
    except OSError as e:
        log.error("could not record the failure in %s: %s", job.folder.root, e)
    return [summary]


def _leave_no_trace(run_dir: Path, output_subdir: Optional[str]) -> None:
    """A generation or a refused command leaves nothing behind: the run folder if this invocation made it alone,
    else its own config record in .hydra/ (named by its start and pid), beside another run's files."""
    own = {"run.log", ".lock", ".hydra"}
    try:
        if not run_dir.is_dir():
            return
        hydra_dir = run_dir / ".hydra"
        record = run_dir / output_subdir if output_subdir else None
        ours = (record is not None and record.parent == hydra_dir and record.name.endswith(f"_{os.getpid()}")
                and record.is_dir() and not record.is_symlink())
        earlier = hydra_dir.is_dir() and [p for p in hydra_dir.iterdir()] != [record]
        if {p.name for p in run_dir.iterdir()} - own or earlier:
            if ours:
                shutil.rmtree(record)
            return
        for handler in logging.getLogger().handlers[:]:
            if isinstance(handler, logging.FileHandler) and Path(handler.baseFilename).parent == run_dir:
                handler.close()
                logging.getLogger().removeHandler(handler)
        shutil.rmtree(run_dir)
    except OSError:
        pass
