"""The run folder's layout and crash-safe reads and writes of what goes in it."""

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Dict

import torch

from drakegpt.errors import UsageError


class RunDir:
    """Where one run keeps its files; every other module asks here."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.metrics = self.root / "metrics.csv"
        self.summary = self.root / "summary.json"
        self.refused = self.root / "refused.json"  # a job turned away because the folder holds another run
        self.checkpoints = self.root / "checkpoints"
        self.last = self.checkpoints / "last.pt"
        self.best = self.checkpoints / "best.pt"

    def holds_run(self) -> bool:
        return self.last.is_file() or self.summary.is_file()

    def read_summary(self) -> Dict[str, Any]:
        return json.loads(self.summary.read_text()) if self.summary.is_file() else {}


def atomic_write(path: Path, write) -> None:
    """Write through `write(file)` into a temporary file, fsync it, then rename it over `path`.

    A crash or `kill -9` at any moment leaves either the old file or the new one, never a torn one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    umask = os.umask(0)
    os.umask(umask)
    os.fchmod(fd, 0o666 & ~umask)  # mkstemp's 0600 would hide results from a shared cluster's group
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def save(obj: Dict[str, Any], path: Path) -> None:
    atomic_write(path, lambda f: torch.save(obj, f))


def write_json(obj: Dict[str, Any], path: Path) -> None:
    atomic_write(path, lambda f: f.write((json.dumps(obj, indent=2) + "\n").encode()))


def load(path: Path) -> Dict[str, Any]:
    """A checkpoint's contents; tensors stay on the CPU. Only plain data is unpickled (weights_only)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UsageError(f"no checkpoint at {path}; train one first (python run.py) or fix the path") from None
    except Exception as e:
        raise UsageError(
            f"{path} is not a DrakeGPT checkpoint ({type(e).__name__}); point at a .pt file written by run.py"
        ) from None
