"""Shared fixtures: the real Drake CSV when ../shared has it, a temp folder to run `python run.py` from, and
two tiny models trained once for the files that sample, publish and pack."""

import os
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from helpers.runs import DRAKE_CSV, run_py, train_in_process


def pytest_configure(config):
    """Under pytest-xdist each worker, and each run it starts, takes its share of the cores instead of all."""
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if workers:
        threads = max(1, (os.cpu_count() or 1) // int(workers))
        os.environ["OMP_NUM_THREADS"] = str(threads)
        torch.set_num_threads(threads)


@pytest.fixture
def drake_csv():
    if not DRAKE_CSV.is_file():
        pytest.skip("../shared/data/Drake.csv is absent (it is not part of the repository)")
    return DRAKE_CSV


@pytest.fixture
def run(tmp_path):
    """run(*overrides) -> CompletedProcess, executed from a temp folder."""

    def _run(*overrides, **kwargs):
        return run_py(*overrides, cwd=tmp_path, **kwargs)

    return _run


@dataclass
class Trained:
    root: Path
    registry: Path
    published: Path  # the TransformerLM's .safetensors
    run_dir: Path
    bitnet: Path  # the BitNetLM's .safetensors


TRAIN = ["train.iters=30", "train.eval_interval=10", "train.eval_iters=2", "logger=none", "train.sample_length=0",
         "train.threads=1"]


@pytest.fixture(scope="session")
def trained(tmp_path_factory) -> Trained:
    """A tiny TransformerLM and a tiny BitNetLM, trained once with the real Trainer on the shipped sample."""
    root = tmp_path_factory.mktemp("trained")
    summary = train_in_process(root, *TRAIN)[0]
    bitnet = train_in_process(root / "bitnet", *TRAIN, "model=BitNetLM", f"paths.registry_dir={root / 'registry'}")[0]
    return Trained(root, root / "registry", Path(summary["published"]), root / "run", Path(bitnet["published"]))
