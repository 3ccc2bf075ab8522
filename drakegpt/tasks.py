"""What run.py does with a composed config: check it, run the task, and turn bad input into one line."""

import logging
import math
import os
import sys
from pathlib import Path
from typing import Any, Dict, Optional

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

from drakegpt.checkpoint import RunDir, write_json
from drakegpt.config import RunConfig, Task, validate
from drakegpt.errors import UsageError
from drakegpt.generate import generate_task
from drakegpt.train import Interrupted, Trainer

log = logging.getLogger(__name__)


def run_job(cfg: DictConfig) -> Any:
    hydra = HydraConfig.get()
    sweeping = hydra.mode == RunMode.MULTIRUN
    run_dir = Path(hydra.runtime.output_dir)
    metric = OmegaConf.select(cfg, "optimized_metric", default=None)
    trainer: Optional[Trainer] = None
    try:
        config = _typed(cfg)
        validate(config)
        if config.task is Task.generate:
            named = dict(o.split("=", 1) for o in hydra.overrides.task if o.split("=", 1)[0] in ("model", "scale"))
            generate_task(config, named)
            return None
        if config.train.threads is None:
            config.train.threads = threads_per_job(hydra.launcher)
        resolved = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
        group = config.logger.group or (hydra.sweep.dir if sweeping else None)
        if config.train.resume and not sweeping and not RunDir(run_dir).holds_run():
            raise UsageError(
                f"train.resume=true, but {run_dir} holds no run to continue; set hydra.run.dir to the folder of "
                f"the run (printed when it stopped), or drop train.resume=true to start a new one"
            )
        # A sweep re-run into its folder skips the finished jobs and resumes the cut-off ones.
        resume = config.train.resume or sweeping
        trainer = Trainer(config, resolved, run_dir, group, resume, tuple(hydra.overrides.task))
        summary = trainer.run()
    except Interrupted as stop:
        again = (
            f"run the same sweep again with hydra.sweep.dir={hydra.sweep.dir}"
            if sweeping
            else f"add train.resume=true hydra.run.dir={run_dir} to the same command"
        )
        print(f"stopped by {stop}; checkpoint saved in {run_dir}. To continue, {again}", file=sys.stderr)
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
            print(f"error: {message}", file=sys.stderr)
            sys.exit(2)
        if bad_input:
            log.error(message)
        else:
            log.exception(message)
        summary = _record_failure(message, cfg, run_dir, trainer)
    if metric:  # a hyperparameter sweeper minimises this number; a failed trial is infinitely bad
        value = summary.get(metric) if summary.get("status") == "ok" else None
        return float(value) if value is not None else math.inf
    return summary


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


def _record_failure(message: str, cfg: DictConfig, run_dir: Path, trainer: Optional[Trainer]) -> Dict[str, Any]:
    """A failed sweep job's summary, so that the report and the sweep's exit code show it."""
    files = RunDir(run_dir)
    if trainer is not None and trainer.finished:
        return files.read_summary()  # the training run wrote its own
    summary = {
        "model": OmegaConf.select(cfg, "model.name", default=None),
        "scale": OmegaConf.select(cfg, "scale.name", default=None),
        "seed": OmegaConf.select(cfg, "seed", default=None),
        "overrides": list(HydraConfig.get().overrides.task),
        "status": "failed",
        "error": message,
    }
    # The folder may hold another run (two jobs mapped to one folder): keep its summary, file this one beside it.
    own = trainer is not None or not files.summary.is_file()
    write_json(summary, files.summary if own else files.refused)
    return summary
