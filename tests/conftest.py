"""Shared fixtures: the real Drake CSV when ../shared has it, and `python run.py` in a subprocess."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DRAKE_CSV = ROOT.parent / "shared" / "data" / "Drake.csv"
# Tiny but real: a few iterations of the real training loop, evaluation included.
QUICK = ["train.iters=20", "train.eval_interval=10", "train.eval_iters=2", "logger=none"]


@pytest.fixture
def drake_csv() -> Path:
    if not DRAKE_CSV.is_file():
        pytest.skip("../shared/data/Drake.csv is absent (it is not part of the repository)")
    return DRAKE_CSV


def run_py(*overrides: str, cwd: Path, env=None, timeout: float = 300, multirun: bool = False):
    """Run `python run.py [-m] overrides...` from `cwd` (models/ and inference/ land there)."""
    cmd = [sys.executable, str(ROOT / "run.py")] + (["-m"] if multirun else []) + list(overrides)
    full_env = {**os.environ, "WANDB_MODE": "offline", "HYDRA_FULL_ERROR": "0", **(env or {})}
    full_env.pop("HYDRA_FULL_ERROR")
    return subprocess.run(cmd, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout)


def read_summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


@pytest.fixture
def run(tmp_path):
    """run(*overrides) -> CompletedProcess, executed from a temp folder."""

    def _run(*overrides, **kwargs):
        return run_py(*overrides, cwd=tmp_path, **kwargs)

    return _run
