"""drakegpt/tracking.py: the run's local files (W&B's side: test_wandb_session.py), the clock and the projection."""

import time

import pytest

from drakegpt.replicas import Progress
from drakegpt.tracking import Clock, duration, projection


def test_the_clock_leaves_the_first_iteration_and_the_evaluations_out():
    clock = Clock(elapsed_s=10.0)
    clock.count(100)  # the first iteration: only starts the clock
    assert clock.tokens == 0
    time.sleep(0.05)
    clock.count(100)
    clock.count(100)
    progresses = [Progress(), Progress()]
    rate = clock.bank(progresses)
    assert 0 < rate < 200 / 0.05 and all(p.train_tokens == 200 for p in progresses)
    assert all(p.elapsed_s >= 10.05 and 0.05 <= p.train_time_s < 1 for p in progresses)
    time.sleep(0.05)  # an evaluation: not timed
    clock.restart()
    clock.count(100)
    elapsed = progresses[0].train_time_s + time.perf_counter() - clock.since
    assert clock.tokens == 100 and clock.rate(progresses[0]) == pytest.approx(300 / elapsed, rel=0.2)


def test_the_projection_counts_iterations_evaluations_and_the_sweep():
    line = projection(iters_left=5000, step_s=7.9, eval_interval=500, eval_s=40.0, jobs_left=0)
    # 5,000 x 7.9 s + 10 x 40 s = 39,900 s: 665 minutes
    assert line.startswith("projected: about 11 h 05 min more for this run (5,000 iterations at 7,900.0 ms, "
                           "10 evaluations at 40.0 s)")
    assert "the 3 jobs after it in this sweep about 33 h 15 min more" in projection(5000, 7.9, 500, 40.0, 3)
    assert [duration(s) for s in (45, 12 * 60, 3 * 3600 + 300)] == ["45 s", "12 min", "3 h 05 min"]


def test_the_projection_is_said_once_the_iterations_have_run_a_while(monkeypatch):
    clock = Clock(0.0)
    clock.count(1)
    clock.count(256)
    assert clock.step_s(256) is None  # too early to tell
    clock.since -= 10  # as if ten seconds had passed
    assert clock.step_s(256) == pytest.approx(10, rel=0.01)
