"""The run folder's layout, and the lock that keeps a second run out of it."""

import fcntl
import os
import sys
from pathlib import Path
from typing import Any, Dict

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from drakegpt.errors import UsageError
from drakegpt.files import read_json, writable_folder


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
        self.lock_file = self.root / ".lock"
        self._lock_fd = None

    def holds_run(self) -> bool:
        return self.last.is_file() or self.best.is_file() or self.summary.is_file()

    def read_summary(self) -> Dict[str, Any]:
        return read_json(self.summary)

    def lock(self) -> "RunDir":
        """Take the folder for this process, atomically; the kernel drops the lock when the process ends."""
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise UsageError(
                f"{self.root} is in use by a run that is still going (pid {holder}); wait for it to end, "
                f"or choose another hydra.run.dir"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._lock_fd = fd
        return self

    @property
    def locked(self) -> bool:
        return self._lock_fd is not None

    def unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing releases the flock
            self._lock_fd = None


class OutputFolder(Callback):
    """Hydra creates the run (or sweep) folder before any task code runs: a location that cannot hold one
    fails here, in one line, instead of in a traceback from Hydra."""

    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        self._check(config.hydra.run.dir, "hydra.run.dir")

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        self._check(config.hydra.sweep.dir, "hydra.sweep.dir")

    @staticmethod
    def _check(folder: str, key: str) -> None:
        try:
            writable_folder(Path(folder), key)
        except UsageError as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)
