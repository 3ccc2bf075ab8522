"""One Ctrl-C (or SIGTERM) stops a whole sweep, with the comparison of the jobs that finished.

A signal to the sweep's process, or to any of its local job processes, marks the sweep folder as
stopped. A training job then checkpoints at its next iteration (on its own signal) or evaluation (on the
mark) and returns; a job that has not started does not start; and the report callback writes the
comparison, says so in one line and exits 128+N. No process raises KeyboardInterrupt, so no pool prints
tracebacks. SLURM jobs are left to SLURM: there SIGTERM means a requeue or a cancel of that job alone.
"""

import signal
from pathlib import Path
from typing import Optional

STOP_FILE = ".stopped"
SIGNALS = (signal.SIGINT, signal.SIGTERM)


def mark_stopped(sweep_dir: Path, signum: int) -> None:
    Path(sweep_dir).mkdir(parents=True, exist_ok=True)
    (Path(sweep_dir) / STOP_FILE).write_text(signal.Signals(signum).name)


def sweep_stopped(sweep_dir: Path) -> Optional[str]:
    """The name of the signal that stopped the sweep, or None."""
    marker = Path(sweep_dir) / STOP_FILE
    return (marker.read_text().strip() or "SIGINT") if marker.is_file() else None


def mark_on_signal(sweep_dir: Path) -> None:
    """From now on in this process, SIGINT and SIGTERM mark the sweep stopped instead of raising."""

    def handle(signum, frame):
        if not sweep_stopped(sweep_dir):
            mark_stopped(sweep_dir, signum)

    for s in SIGNALS:
        signal.signal(s, handle)


class SweepSignals:
    """In the sweep's own process, from the first job to the report."""

    def __init__(self, sweep_dir: Path):
        (Path(sweep_dir) / STOP_FILE).unlink(missing_ok=True)  # a re-run continues where the stopped sweep ended
        self.previous = {s: signal.getsignal(s) for s in SIGNALS}
        mark_on_signal(Path(sweep_dir))

    def restore(self) -> None:
        for s, handler in self.previous.items():
            signal.signal(s, handler)
