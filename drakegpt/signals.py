"""Stopping a run cleanly: a signal becomes a flag that the training loop reads between iterations."""

import signal
import threading
from typing import Callable, Dict, Optional

# SIGUSR2 is what submitit's SLURM jobs receive before a time limit or a preemption.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR2)


class Interrupted(KeyboardInterrupt):
    """The run stopped at an iteration boundary on a signal, its checkpoint saved.

    `requeue`: submitit's SIGUSR2 handler when that signal came (a SLURM time limit or preemption); called
    once the checkpoint is saved, it requeues the job and exits.
    """

    def __init__(self, signum: int, requeue: Optional[Callable] = None, by_sweep: bool = False):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.requeue = requeue
        self.by_sweep = by_sweep  # the sweep was stopped (drakegpt.sweep_stop), not this job's process


class StopSignals:
    """While active, SIGINT, SIGTERM and SIGUSR2 set `signum` instead of acting, so a stop never tears a step; a
    second Ctrl-C raises KeyboardInterrupt at once (the last checkpoint is whole: every write is atomic)."""

    def __init__(self):
        self.signum: Optional[int] = None
        self.seen = set()  # SLURM's preemption sends SIGTERM, then SIGUSR2 a few milliseconds later
        self._previous: Dict[int, object] = {}

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            for s in STOP_SIGNALS:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if signum == signal.SIGINT and signum in self.seen:  # a second Ctrl-C: out at once, no more waiting
            raise KeyboardInterrupt
        self.seen.add(signum)
        if self.signum is None:
            self.signum = signum

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)

    def interrupted(self) -> Interrupted:
        previous = self._previous.get(signal.SIGUSR2)
        submitit = callable(previous) and "submitit" in getattr(previous, "__module__", "")
        submitit = submitit and signal.SIGUSR2 in self.seen
        return Interrupted(signal.SIGUSR2 if submitit else self.signum, previous if submitit else None)
