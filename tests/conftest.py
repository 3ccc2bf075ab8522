"""Shared fixtures: the real Drake CSV when ../shared has it, composed configs, and `python run.py` in a subprocess."""

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Tuple

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from drakegpt.config import RunConfig, register_configs

ROOT = Path(__file__).resolve().parent.parent
DRAKE_CSV = ROOT.parent / "shared" / "data" / "Drake.csv"
# Tiny but real: a few iterations of the real training loop, evaluation included. One torch thread: beside
# other work on a 2-core machine, two OpenMP threads per process were measured up to 100x slower per iteration.
ONE_THREAD = "train.threads=1"
QUICK = ["train.iters=20", "train.eval_interval=10", "train.eval_iters=2", "logger=none", "train.sample_length=0",
         ONE_THREAD]
PATHS = ["paths.models_dir=/tmp/drakegpt-test/models", "paths.inference_dir=/tmp/drakegpt-test/inference"]

register_configs()


@pytest.fixture
def drake_csv() -> Path:
    if not DRAKE_CSV.is_file():
        pytest.skip("../shared/data/Drake.csv is absent (it is not part of the repository)")
    return DRAKE_CSV


def compose_config(*overrides: str, hydra_config: bool = False):
    """conf/ composed with Hydra's compose API (${hydra:runtime.cwd} only resolves in a real run: paths are set)."""
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(config_name="config", overrides=PATHS + list(overrides), return_hydra_config=hydra_config)


def typed_config(*overrides: str) -> Tuple[RunConfig, Dict[str, Any]]:
    """The typed config and the same as resolved plain data, as run.py gets them."""
    cfg = compose_config(*overrides)
    return OmegaConf.to_object(cfg), OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)


def train_in_process(folder: Path, *overrides: str) -> List[Dict[str, Any]]:
    """Train with the real Trainer in this process (no Hydra run): each replica's summary."""
    from drakegpt.train import Trainer, plan_replicas

    own_models = any(o.startswith("paths.models_dir=") for o in overrides)
    cfg, resolved = typed_config(*([] if own_models else [f"paths.models_dir={folder / 'models'}"]), *overrides)
    return Trainer(cfg, plan_replicas(cfg, resolved, folder / "run", resume=False), overrides=overrides).run()


def run_py(*overrides: str, cwd: Path, env=None, timeout: float = 300, multirun: bool = False):
    """Run `python run.py [-m] overrides...` from `cwd` (models/ and inference/ land there)."""
    cmd = [sys.executable, str(ROOT / "run.py")] + (["-m"] if multirun else []) + list(overrides)
    full_env = {**os.environ, "WANDB_MODE": "offline", **(env or {})}
    full_env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run(cmd, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout)


def read_summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


@pytest.fixture
def run(tmp_path):
    """run(*overrides) -> CompletedProcess, executed from a temp folder."""

    def _run(*overrides, **kwargs):
        return run_py(*overrides, cwd=tmp_path, **kwargs)

    return _run
