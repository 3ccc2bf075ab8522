"""drakegpt/run_dir.py: the run folder's layout, its lock, and what a new run may not overwrite."""

import subprocess
import sys

import pytest

from drakegpt.errors import UsageError
from drakegpt.run_dir import RunDir
from helpers.runs import ROOT


def test_the_run_folder_lock_is_exclusive_and_dies_with_its_process(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from drakegpt.run_dir import RunDir; RunDir(sys.argv[1]).lock(); "
        "print('locked', flush=True); time.sleep(60)"), str(tmp_path)], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(UsageError, match=f"in use by a run that is still going \\(pid {holder.pid}\\)"):
            RunDir(tmp_path).lock()
    finally:
        holder.kill()
        holder.wait()
    folder = RunDir(tmp_path).lock()  # a crashed holder leaves a stale lock file that no longer locks
    assert folder.locked
    folder.unlock()


def test_a_lock_that_is_a_link_is_refused_and_what_it_points_at_is_kept(tmp_path):
    target = tmp_path / "precious"
    target.write_text("data")
    run = tmp_path / "run"
    run.mkdir()
    (run / ".lock").symlink_to(target)
    with pytest.raises(UsageError, match="cannot be taken"):
        RunDir(run).lock()
    assert target.read_text() == "data"


def test_a_new_run_never_overwrites_a_users_file_or_writes_through_a_link(tmp_path):
    (tmp_path / "sample.txt").write_text("mine")
    with pytest.raises(UsageError, match="sample.txt, which a run did not write and a run would overwrite"):
        RunDir(tmp_path).check_outputs(fresh=True)
    RunDir(tmp_path).check_outputs(fresh=False)  # a run continuing wrote it itself
    (tmp_path / "sample.txt").unlink()
    (tmp_path / "checkpoints").symlink_to(tmp_path.parent)
    with pytest.raises(UsageError, match="checkpoints is a symbolic link"):
        RunDir(tmp_path).check_outputs(fresh=False)


def test_a_run_is_there_once_metrics_record_an_evaluation(tmp_path):
    files = RunDir(tmp_path)
    assert not files.holds_run()
    files.metrics.write_text("step,train_loss\n")
    assert not files.holds_run()
    files.metrics.write_text("step,train_loss\n0,4.2\n")
    assert files.holds_run() and files.evaluations_recorded()


def test_a_users_metrics_or_summary_is_never_taken_for_a_runs(tmp_path):
    for name, text in (("metrics.csv", "my metrics\n"), ("summary.json", '{"a": 1}')):
        (tmp_path / name).write_text(text)
        for fresh in (True, False):  # a new run, or one told to continue
            with pytest.raises(UsageError, match=f"holds {name}, which a run did not write"):
                RunDir(tmp_path).check_outputs(fresh=fresh)
        (tmp_path / name).unlink()
    (tmp_path / "summary.json").write_text('{"a": 1}')
    (tmp_path / "summary.json").write_text('{"status": "failed"}')  # a run's own, that failed before a checkpoint
    RunDir(tmp_path).check_outputs(fresh=False)


@pytest.mark.parametrize("name, make", [("metrics.csv", "folder"), ("checkpoints", "file"), ("summary.json", "folder")])
def test_something_of_another_kind_where_a_run_writes_is_refused(tmp_path, name, make):
    path = tmp_path / name
    path.mkdir() if make == "folder" else path.write_text("x")
    with pytest.raises(UsageError, match=f"{name} is not a"):
        RunDir(tmp_path).check_outputs(fresh=True)
