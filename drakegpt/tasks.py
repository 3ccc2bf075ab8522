"""What run.py does with a composed config: check it, run the task, and turn bad input into one line."""

import logging
import os
import sys
from pathlib import Path
from typing import Any, Dict, Optional

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from drakegpt.checkpoint import RunDir, write_json
from drakegpt.config import RunConfig, Task, validate
from drakegpt.errors import UsageError
from drakegpt.train import Interrupted, Trainer

log = logging.getLogger(__name__)


def run_job(cfg: DictConfig) -> Optional[Dict[str, Any]]:
    hydra = HydraConfig.get()
    sweeping = hydra.mode == RunMode.MULTIRUN
    run_dir = Path(hydra.runtime.output_dir)
    try:
        config: RunConfig = OmegaConf.to_object(cfg)
        validate(config)
        if config.task is Task.generate:
            from drakegpt.generate import generate_task

            named = dict(o.split("=", 1) for o in hydra.overrides.task if o.split("=", 1)[0] in ("model", "scale"))
            generate_task(config, named)
            return None

        resolved = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
        group = config.logger.group or (hydra.sweep.dir if sweeping else None)
        # A sweep re-run into its folder skips the finished jobs and resumes the cut-off ones.
        trainer = Trainer(config, resolved, run_dir, group, resume=config.train.resume or sweeping)
        return trainer.run()
    except Interrupted as stop:
        print(
            f"stopped by {stop}; checkpoint saved in {run_dir}. Continue with the same command plus "
            f"train.resume=true hydra.run.dir={run_dir}" + (" (a sweep resumes by itself)" if sweeping else ""),
            file=sys.stderr,
        )
        sys.exit(128 + stop.signum)
    except UsageError as e:
        return _refuse(str(e), cfg, run_dir, sweeping)
    except Exception as e:
        if not sweeping:
            raise
        log.exception("job failed")
        return _refuse(f"{type(e).__name__}: {e}", cfg, run_dir, sweeping)


def _refuse(message: str, cfg: DictConfig, run_dir: Path, sweeping: bool) -> Dict[str, Any]:
    """A sweep records the failure and goes on with the next job; a single run exits with one line."""
    log.error(message)
    if not sweeping:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)
    files = RunDir(run_dir)
    summary = {
        "model": OmegaConf.select(cfg, "model.name", default=None),
        "scale": OmegaConf.select(cfg, "scale.name", default=None),
        "seed": OmegaConf.select(cfg, "seed", default=None),
        "status": "failed",
        "error": message,
    }
    if not files.summary.is_file():  # a training run that failed has written its own
        write_json(summary, files.summary)
    return files.read_summary()
