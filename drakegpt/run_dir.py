"""The run folder's layout, and the lock that keeps a second run out of it."""

import fcntl
import os
from pathlib import Path
from typing import Any, Dict

from drakegpt.errors import UsageError
from drakegpt.files import read_json

METRIC_COLUMNS = ["step", "train_loss", "val_loss", "train_bpc", "val_bpc", "lr", "tokens_per_s", "elapsed_s"]


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
        self.sample = self.root / "sample.txt"
        self.lock_file = self.root / ".lock"
        self._lock_fd = None

    @property
    def outputs(self):
        """Every path a run writes in its folder (W&B's folder aside)."""
        return (self.metrics, self.summary, self.refused, self.checkpoints, self.last, self.best, self.sample,
                self.lock_file)

    def check_outputs(self, fresh: bool) -> None:
        """Refuse a folder where a write would follow a symbolic link out of it, land on something of another kind
        (a folder where a file goes), or, for a run that is not continuing, overwrite a file the run did not
        write."""
        for path in (self.root, *self.outputs):
            if path.is_symlink():
                raise UsageError(f"{path} is a symbolic link: a run writes only inside its folder; remove the link, "
                                 f"or choose another hydra.run.dir")
        for path in self.outputs:
            wrong = path.exists() and (not path.is_dir() if path == self.checkpoints else not path.is_file())
            if wrong:
                kind = "a folder" if path == self.checkpoints else "a file"
                raise UsageError(f"{path} is not {kind}, where the run writes one; move it, or choose another "
                                 f"hydra.run.dir")
        taken = [p.name for p in (self.sample,) if p.exists()] if fresh else []
        taken += self.foreign_files()
        if taken:
            raise UsageError(f"{self.root} holds {', '.join(taken)}, which a run did not write and a run would "
                             f"overwrite; move them, or choose another hydra.run.dir")

    def foreign_files(self) -> list:
        """metrics.csv or summary.json that no run wrote (another header, not a run's summary): a user's own."""
        foreign = []
        if self.metrics.is_file() and not self.last.is_file():
            with open(self.metrics, "rb") as f:
                if f.readline().decode(errors="replace").strip() != ",".join(METRIC_COLUMNS):
                    foreign.append(self.metrics.name)
        if self.summary.is_file() and not self.last.is_file():
            try:
                if "status" not in read_json(self.summary):
                    foreign.append(self.summary.name)
            except UsageError:
                pass  # a damaged summary of a run: resume and the report say so
        return foreign

    def holds_run(self) -> bool:
        return self.last.is_file() or self.best.is_file() or self.summary.is_file() or self.evaluations_recorded()

    def evaluations_recorded(self) -> bool:
        """metrics.csv has a row below its header: the run evaluated, and saved a checkpoint, at least once."""
        try:
            with open(self.metrics, "rb") as f:
                return len(f.read(1 << 16).splitlines()) > 1
        except OSError:
            return False

    def read_summary(self) -> Dict[str, Any]:
        return read_json(self.summary)

    def lock(self) -> "RunDir":
        """Take the folder for this process, atomically; the kernel drops the lock when the process ends."""
        self.root.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o666)
        except OSError as e:  # ELOOP: the lock is a symbolic link, which would truncate what it points at
            raise UsageError(f"{self.lock_file} cannot be taken ({e.strerror}); remove it if it is a link, or choose "
                             f"another hydra.run.dir") from None
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
