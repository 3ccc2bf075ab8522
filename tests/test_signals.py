"""drakegpt/signals.py: a stop signal becomes a flag read between iterations; a second Ctrl-C acts at once."""

import os
import signal

import pytest

from drakegpt.signals import StopSignals


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGUSR2])
def test_stop_signals_become_a_flag_and_the_old_handlers_come_back(signum):
    before = signal.getsignal(signum)
    with StopSignals() as signals:
        os.kill(os.getpid(), signum)
        assert signals.signum == signum  # no exception: the loop reads the flag at its next iteration
        stop = signals.interrupted()
        assert stop.signum == signum and stop.requeue is None
    assert signal.getsignal(signum) == before


def test_submitits_usr2_handler_is_kept_to_requeue_the_job_after_the_checkpoint():
    calls = []

    def checkpoint_and_try_requeue(signum, frame):  # what submitit installs in a SLURM job
        calls.append(signum)

    checkpoint_and_try_requeue.__module__ = "submitit.core.job_environment"
    previous = signal.signal(signal.SIGUSR2, checkpoint_and_try_requeue)
    try:
        with StopSignals() as signals:
            os.kill(os.getpid(), signal.SIGTERM)  # a preemption: SIGTERM, then SIGUSR2
            os.kill(os.getpid(), signal.SIGUSR2)
            stop = signals.interrupted()
        assert calls == []  # not called while training: the trainer saves first
        assert stop.signum == signal.SIGUSR2 and stop.requeue is checkpoint_and_try_requeue
    finally:
        signal.signal(signal.SIGUSR2, previous)


def test_a_second_ctrl_c_raises_at_once():
    with StopSignals() as signals:
        os.kill(os.getpid(), signal.SIGINT)
        assert signals.signum == signal.SIGINT
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)


def test_a_sigterm_after_a_ctrl_c_does_not_end_the_process_at_once():
    with StopSignals() as signals:
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGTERM)  # SLURM's preemption sends more than one signal: only Ctrl-C twice acts
        assert signals.signum == signal.SIGINT
