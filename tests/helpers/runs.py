"""Composed configs, training in this process, `python run.py` in a subprocess, and the files a run leaves."""

import copy
import functools
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Tuple

from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from drakegpt.schema import RunConfig, register_configs

ROOT = Path(__file__).resolve().parents[2]
DRAKE_CSV = ROOT.parent / "shared" / "data" / "Drake.csv"
# Tiny but real: a few iterations of the real training loop, evaluation included. One torch thread: beside
# other work on a 2-core machine, two OpenMP threads per process were measured up to 100x slower per iteration.
ONE_THREAD = "train.threads=1"
QUICK = ["train.iters=20", "train.eval_interval=10", "train.eval_iters=2", "logger=none", "train.sample_length=0",
         ONE_THREAD]
PATHS = ["paths.registry_dir=/tmp/drakegpt-test/registry", "paths.inference_dir=/tmp/drakegpt-test/inference"]

register_configs()


def compose_config(*overrides: str, hydra_config: bool = False):
    """conf/ composed with Hydra's compose API (${hydra:runtime.cwd} only resolves in a real run: paths are set).
    A copy of the composed config: the tests compose the same overrides hundreds of times, at 40x a copy's cost."""
    return copy.deepcopy(_composed(overrides, hydra_config))


@functools.lru_cache(maxsize=None)
def _composed(overrides: Tuple[str, ...], hydra_config: bool):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(config_name="config", overrides=PATHS + list(overrides), return_hydra_config=hydra_config)


def typed_config(*overrides: str) -> Tuple[RunConfig, Dict[str, Any]]:
    """The typed config and the same as resolved plain data, as run.py gets them."""
    cfg = compose_config(*overrides)
    return OmegaConf.to_object(cfg), OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)


def train_in_process(folder: Path, *overrides: str, resume: bool = False) -> List[Dict[str, Any]]:
    """Train with the real Trainer in this process (no Hydra run): each replica's summary."""
    from drakegpt.identity import RunIdentity, variant_parts
    from drakegpt.replicas import plan_replicas
    from drakegpt.train import Trainer

    own_registry = any(o.startswith("paths.registry_dir=") for o in overrides)
    cfg, resolved = typed_config(*([] if own_registry else [f"paths.registry_dir={folder / 'registry'}"]), *overrides)
    identity = RunIdentity(variant_parts(resolved, overrides, {}, {}), overrides=list(overrides))
    return Trainer(cfg, plan_replicas(cfg, resolved, folder / "run", resume=resume), identity).run()


def run_py(*overrides: str, cwd: Path, env=None, timeout: float = 300, multirun: bool = False):
    """Run `python run.py [-m] overrides...` from `cwd` (registry/ and inference/ land there)."""
    cmd = [sys.executable, str(ROOT / "run.py")] + (["-m"] if multirun else []) + list(overrides)
    full_env = {**os.environ, "WANDB_MODE": "offline", **(env or {})}
    full_env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run(cmd, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout)


def read_summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def skip_or_fail(reason: str) -> None:
    """Outside CI a test that cannot run here skips with its reason; under CI (DRAKEGPT_CI=1, set by .ci/run),
    where .ci/run installed what it needs, it fails instead: a green CI never hides a skipped suite."""
    import pytest

    if os.environ.get("DRAKEGPT_CI") == "1":
        pytest.fail(f"under CI this test must run: {reason}")
    pytest.skip(reason)


def one_line_error(proc, *fragments: str) -> str:
    """A refused command: a non-zero exit, no traceback, one line on stderr that holds every fragment."""
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"
    return lines[0]


def tree_digest(folder: Path) -> str:
    """sha256 of every file's path and bytes under `folder`: equal before and after means nothing was touched."""
    import hashlib

    digest = hashlib.sha256()
    for path in sorted(Path(folder).rglob("*")):
        digest.update(str(path.relative_to(folder)).encode())
        if path.is_file() and not path.is_symlink():
            digest.update(path.read_bytes())
    return digest.hexdigest()
