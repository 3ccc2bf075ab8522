"""drakegpt/tasks.py and run.py: the failure policy through the real command path. Every row of the README's
bad-input table is one line on stderr, a non-zero exit, no run folder left, nothing already written touched;
typos are named with the closest key; sweep presets sweep without -m."""

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from helpers.runs import QUICK, ROOT, read_summary, run_py, tree_digest

BAD_INPUTS = [
    (["scale.num_heads=5"], "scale.embedding_dim=32 is not divisible by scale.num_heads=5"),
    (["scale.batch_size=0"], "scale.batch_size=0 must be positive"),
    (["train.iters=0"], "train.iters=0 must be positive"),
    (["optimizer.max_lr=-1"], "optimizer.max_lr=-1.0 must be positive"),
    (["optimizer.base_lr=nan"], "optimizer.base_lr=nan is not a finite number"),
    (["seed=18446744073709551616"], "seed=18446744073709551616 is an integer beyond 64 bits"),
    (["seed=9223372036854775807"], "seed=9223372036854775807 must be between 0 and"),
    (["task=generate", "seed=18446744073709551615"], "is an integer beyond 64 bits"),
    (["optimizer.algorithm.betas=[0.9,1.5]"], "optimizer.algorithm (torch.optim.AdamW): Invalid beta parameter"),
    (["optimizer.schedule.step_size_up=-5"], "optimizer.schedule.step_size_up=-5 must be positive"),
    (["optimizer.schedule.step_size_up=0"], "optimizer.schedule.step_size_up=0 must be positive"),
    (["optimizer.schedule._target_=torch.optim.lr_scheduler.ReduceLROnPlateau", "~optimizer.schedule.base_lr",
      "~optimizer.schedule.max_lr", "~optimizer.schedule.step_size_up", "~optimizer.schedule.mode",
      "~optimizer.schedule.cycle_momentum"], "cannot be stepped once per iteration without arguments"),
    (["scale.dropout=1.0"], "scale.dropout=1.0 is outside [0, 1)"),
    (["scale.context_length=100000"], "too few for scale.context_length=100000"),
    (["train.eval=random", "train.eval_iters=100000000000"], "GiB of memory"),
    (["train.sample_length=100000000000"], "(train.sample_length=100000000000); lower them"),
    (["train.replicas=100000"], "train.replicas=100000 is above 1024"),
    (["train.threads=100000"], "train.threads=100000 must be between 1 and this machine's"),
    (["model=BigramLM", "model.positions=rotary"], "model.positions=rotary needs attention"),
    (["model.kv_heads=3"], "model.kv_heads=3 must divide the 4 query heads"),
    (["model.name=" + "x" * 250], "is not a name of at most 64 bytes"),
    (["logger.project=my/project"], "logger.project='my/project' is not a W&B project name"),
    (["device=cuda:7"], "device=cuda:7 is not available"),
    (["device=tpu"], "device=tpu is not a device name"),
    (["data=csv", "data.path=missing.csv"], "data.path=missing.csv: no such file"),
    (["data=csv", "data.path=pipe"], "data.path=pipe is not a regular file"),
    (["data=csv"], "data.path is not set"),
    (["data=csv", "data.path=empty.csv"], "is empty"),
    (["data=csv", "data.path=no_lyric.csv"], "has no 'Lyric' column"),
    (["data=csv", "data.path=songs.csv", "data.artist=Nobody"], "artists present: Juno Vale"),
    (["data=text", "data.path=latin1.txt"], "is not UTF-8"),
    (["data.train_fraction=0.9", "data.test_fraction=0.2"], "must leave a validation split"),
    (["data=kaggle", "data.cache_dir=kaggle_cache"], "Kaggle is not authenticated"),
    (["data=kaggle", "data.artist=../../etc/passwd"], "is not a file name"),
    (["train.resume=true"], "holds no run to continue"),
    (["paths.registry_dir=afile/registry"], "paths.registry_dir="),
    (["train.iter=5"], "train.iter is not a key of this config (train.iter=5); did you mean train.iters?"),
    (["+train.iter=5"], "train.iter is not a key of this config (+train.iter=5); did you mean train.iters?"),
    (["+train.eval_itres=5"], "did you mean train.eval_iters?"),
    (["task=generate", "generate.checkpoint=damaged.safetensors"], "is damaged: its weights do not match"),
    (["task=generate", "generate.checkpoint=group"], "holds a group of replicas (seed=1, seed=2); pick one with "
     "'generate.checkpoint=\"group/seed=1\"'"),
    (["optimizer.algorithm.lr=0.5"], "optimizer.algorithm.lr=0.5 would be overwritten by the schedule"),
    (["optimizer.algorithm.betas=[0.9,0.95,0.99]"], "optimizer.algorithm.betas=[0.9, 0.95, 0.99] must be two numbers"),
    (["paths.registry_dir=."], "hydra.run.dir=.* and paths.registry_dir=.* overlap"),
    (["model.feed_forward_ratio=0.01"], "model.feed_forward_ratio=0.01 gives a feed-forward 0 units wide"),
    (["model.feed_forward_ratio=1e10"], "GiB of memory .*model.feed_forward_ratio=10000000000"),
    (["data.path=songs.csv"], "data.path=songs.csv is not read by data=sample; add data=csv"),
    (["data=text", "data.path=latin1.txt", "data.artist=Nobody"], "data.artist=Nobody is not read by data=text"),
    (["paths.registry_dir="], "paths.registry_dir is empty, which would mean the current folder"),
    (["paths.inference_dir=", "task=generate"], "paths.inference_dir is empty"),
    (["paths.registry_dir=registry_with_a_file"], "TransformerLM_default is not a folder, where the registry keeps"),
    (["task=generate", "generate.checkpoint=songs.csv"], "songs.csv is not a DrakeGPT weights file"),
    (["task=generate", "generate.checkpoint=lying_run"], "summary.json cannot be read \\(its 'published' is 5"),
    (["optimizer=muon", "optimizer.algorithm.muon_momentum=5"], "muon_momentum=5 must be in \\[0, 1\\)"),
    (["optimizer=muon", "optimizer.algorithm.muon_lr_factor=-1"], "muon_lr_factor=-1 must be above 0"),
    (["optimizer.algorithm.fused=maybe"], "optimizer.algorithm.fused=maybe must be true or false"),
    (["device=cpu:7"], "device=cpu:7 is not available"),
]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A folder with an earlier finished run, its published weights, and the bad files of the table."""
    root = tmp_path_factory.mktemp("bad_inputs")
    (root / "empty.csv").write_text("")
    (root / "no_lyric.csv").write_text("Artist,Title\nJuno Vale,Exit Fourteen\n")
    (root / "songs.csv").write_text("Artist,Lyric\nJuno Vale,la la la\n")
    (root / "latin1.txt").write_bytes("caf\xe9 au lait".encode("latin-1"))
    (root / "afile").write_text("a file where a folder should be")
    os.mkfifo(root / "pipe")
    assert run_py(*QUICK, f"hydra.run.dir={root / 'earlier'}", cwd=root).returncode == 0
    published = Path(read_summary(root / "earlier")["published"])
    raw = bytearray(published.read_bytes())
    raw[-50:] = bytes(50)  # zeros over the last weights: the checksum no longer holds
    (root / "damaged.safetensors").write_bytes(bytes(raw))
    (root / "damaged.json").write_bytes(published.with_suffix(".json").read_bytes())
    (root / "registry_with_a_file").mkdir()
    (root / "registry_with_a_file" / "TransformerLM_default").write_text("a file where a model's folder goes")
    (root / "lying_run").mkdir()
    (root / "lying_run" / "summary.json").write_text('{"status": "ok", "published": 5}')
    for seed in (1, 2):  # a group of replicas' folder
        (root / "group" / f"seed={seed}").mkdir(parents=True)
        (root / "group" / f"seed={seed}" / "summary.json").write_text('{"status": "ok"}')
    return root


@pytest.fixture(scope="module")
def refused(workspace):
    """Every row of BAD_INPUTS through run.py, two at a time (each is mostly Python and torch starting up), each
    into a folder of its own; with the digests of the earlier run and the registry before and after them all."""
    env = {"HOME": str(workspace), "KAGGLE_CONFIG_DIR": str(workspace / "no_kaggle")}
    before = tree_digest(workspace / "earlier"), tree_digest(workspace / "registry")

    def attempt(index: int):
        return run_py(*BAD_INPUTS[index][0], "logger=none", f"hydra.run.dir={workspace / f'bad-{index}'}",
                      cwd=workspace, env=env, timeout=120)

    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(attempt, range(len(BAD_INPUTS))))
    return results, before, (tree_digest(workspace / "earlier"), tree_digest(workspace / "registry"))


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(BAD_INPUTS)), ids=[" ".join(o)[:60] for o, _ in BAD_INPUTS])
def test_bad_input_gets_one_line_a_nonzero_exit_and_touches_nothing(workspace, refused, index):
    results, before, after = refused
    result, expected = results[index], BAD_INPUTS[index][1]
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert expected in lines[0] or re.search(expected, lines[0]), lines[0]
    assert "Traceback" not in result.stdout
    assert after == before
    assert not (workspace / f"bad-{index}").exists()  # a refused command leaves no run folder behind


def test_the_readme_bad_input_table_has_a_row_for_every_kind_tested_here():
    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("### Bad input"):readme.index("## Results")]
    for overrides, _ in BAD_INPUTS:
        keys = [o.split("=")[0].lstrip("+~") for o in overrides if not o.startswith("task=")]
        assert any(key in table for key in keys), overrides


@pytest.mark.slow
@pytest.mark.parametrize("multirun", [False, True])
def test_an_empty_output_folder_is_refused_not_taken_for_the_current_one(tmp_path, multirun):
    key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    result = run_py(*QUICK, f"{key}=", cwd=tmp_path, multirun=multirun)
    (line,) = result.stderr.strip().splitlines()
    assert result.returncode == 2 and line == (f"error: {key} is empty, which would mean the current folder; name a "
                                               f"folder, or leave {key} out for its default")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_a_users_file_in_the_run_folder_is_never_overwritten(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "sample.txt").write_text("my notes")
    result = run_py(*QUICK, f"hydra.run.dir={folder}", cwd=tmp_path)
    assert result.returncode == 2 and "sample.txt, which a run did not write and a run would overwrite" in result.stderr
    assert (folder / "sample.txt").read_text() == "my notes"
    (folder / "sample.txt").unlink()
    # not even when told to continue: it is no run of ours (test_run_dir checks each file both ways)
    users = (("metrics.csv", "my metrics\n", []), ("summary.json", '{"a": 1}', ["train.resume=true"]))
    for name, text, resume in users:
        (folder / name).write_text(text)
        result = run_py(*QUICK, f"hydra.run.dir={folder}", *resume, cwd=tmp_path)
        assert result.returncode == 2 and f"holds {name}, which a run did not write" in result.stderr
        assert (folder / name).read_text() == text
        (folder / name).unlink()
    (folder / "metrics.csv").symlink_to(tmp_path / "elsewhere.csv")
    result = run_py(*QUICK, f"hydra.run.dir={folder}", cwd=tmp_path)
    assert result.returncode == 2 and "is a symbolic link" in result.stderr
    assert not (tmp_path / "elsewhere.csv").exists()
    (folder / "metrics.csv").unlink()
    for name in ("run.log", ".hydra"):  # what Hydra writes before any task code
        shutil.rmtree(folder / name) if (folder / name).is_dir() else (folder / name).unlink(missing_ok=True)
        (folder / name).symlink_to(tmp_path / f"elsewhere-{name}")
        result = run_py(*QUICK, f"hydra.run.dir={folder}", cwd=tmp_path)
        assert result.returncode == 2 and f"{name} is a symbolic link" in result.stderr, result.stderr
        assert not (tmp_path / f"elsewhere-{name}").exists()
        (folder / name).unlink()


@pytest.mark.slow
def test_two_starts_in_one_second_keep_each_their_own_hydra_record(tmp_path):
    folder = tmp_path / "run"
    procs = [subprocess.Popen([sys.executable, str(ROOT / "run.py"), *QUICK, "train.iters=200",
                               f"hydra.run.dir={folder}"], cwd=tmp_path, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert sorted(p.returncode for p in procs) == [0, 2]  # one trains, the other is refused: the folder is taken
    assert any("in use by a run that is still going" in e or "already holds a run" in e for e in errors)
    assert len(list((folder / ".hydra").iterdir())) == 2  # the refused one's record did not replace the winner's


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["experiment=ablation", "hparams_search=transformer_optuna"])
def test_a_sweep_preset_sweeps_without_dash_m(tmp_path, preset):
    limit = ["hydra.sweeper.n_trials=2"] if "optuna" in preset else ["variant=baseline,no_norm", "train.replicas=1"]
    result = run_py(preset, *limit, *QUICK, "train.iters=4", "train.eval_interval=4",
                    f"hydra.sweep.dir={tmp_path / 'sweep'}", cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr
    assert len([p for p in (tmp_path / "sweep").iterdir() if p.is_dir() and not p.name.startswith(".")]) == 2
    assert (tmp_path / "sweep" / "comparison.csv").is_file()
    assert "sweep: 2 of 2 jobs done" in result.stdout  # progress, jobs done of the total


@pytest.mark.slow
def test_a_variant_that_changes_nothing_is_refused_before_training(tmp_path):
    result = run_py("experiment=ablation", "model=BigramLM", "variant=baseline,no_norm,no_dropout", *QUICK,
                    "train.iters=4", "train.eval_interval=4", "train.replicas=1", f"hydra.sweep.dir={tmp_path}",
                    cwd=tmp_path, timeout=300)
    assert result.returncode == 1  # the sweep ran, and says two of its jobs did not finish
    table = (tmp_path / "comparison.csv").read_text()
    assert table.count("variant=no_norm changes nothing in model=BigramLM") == 1
    assert table.count("changes nothing") == 2 and table.count(",ok,") == 1
    assert not list(tmp_path.glob("*no_norm*/checkpoints"))  # refused before training


@pytest.mark.slow
def test_the_projected_time_is_said_after_the_first_steps(tmp_path):
    """A long run says what it will cost after its first steps; the test stops it once it has said so."""
    proc = subprocess.Popen([sys.executable, str(ROOT / "run.py"), "train.iters=100000", "train.eval_interval=25000",
                             "logger=none", "train.sample_length=0", "train.publish=false", "train.threads=1",
                             f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        line = next((line for line in proc.stdout if "projected:" in line), "")
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=60)
    assert re.search(r"about (\d+ min|\d+ h \d+ min) more for this run \(9\d,\d{3} iterations at [\d.]+ ms, "
                     r"4 evaluations at [\d.]+ s\)", line), line


@pytest.mark.slow
def test_a_stop_during_the_sample_after_training_keeps_the_finished_run(tmp_path):
    """Ctrl-C while the run samples its last text: the run is complete and says so; the sample is skipped."""
    folder = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, str(ROOT / "run.py"), *QUICK, "train.sample_length=2000000",
                             f"hydra.run.dir={folder}"], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not list((tmp_path / "registry").glob("*/*.json")) and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # into the sample
    proc.send_signal(2)
    out, err = proc.communicate(timeout=60)
    summary = read_summary(folder)
    assert summary["status"] == "ok" and summary["sample"] == "" and "Traceback" not in err
    assert "the run is complete, the sample skipped" in out


def test_a_tiny_sweep_trains_its_jobs_and_writes_their_comparison(tmp_path):
    """The quick tier's sweep: two BigramLM seeds through the real `python run.py -m`, their report, no skips."""
    result = run_py("model=BigramLM", "seed=1,2", *QUICK, "train.iters=4", "train.eval_interval=2",
                    f"hydra.sweep.dir={tmp_path / 'sweep'}", cwd=tmp_path, multirun=True)
    assert result.returncode == 0, result.stderr
    rows = (tmp_path / "sweep" / "comparison.csv").read_text().splitlines()
    assert len(rows) == 3 and all(",ok," in row for row in rows[1:])
    assert "sweep: 2 of 2 jobs done" in result.stdout
    summary = (tmp_path / "sweep" / "summary.md").read_text()
    assert "| BigramLM | default |" in summary and "±" in summary  # two seeds: one row, mean ± std


@pytest.mark.slow
def test_ctrl_c_while_starting_is_one_line_at_any_moment(tmp_path):
    for delay in (0.3, 1.0, 2.0):
        proc = subprocess.Popen([sys.executable, str(ROOT / "run.py"), *QUICK, "train.iters=100000",
                                 f"hydra.run.dir={tmp_path / str(delay)}"], cwd=tmp_path, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        time.sleep(delay)
        proc.send_signal(2)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 130 and "Traceback" not in err, err
        assert len(err.strip().splitlines()) == 1, err


@pytest.mark.slow
def test_a_finished_run_whose_summary_cannot_be_written_fails_in_one_line(tmp_path):
    folder = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, str(ROOT / "run.py"), *QUICK, "train.iters=400", "train.eval_interval=50",
                             f"hydra.run.dir={folder}"], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (folder / "metrics.csv").is_file() and time.time() < deadline:
        time.sleep(0.05)
    (folder / "summary.json").mkdir()  # nothing can be written there now
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 2 and "Traceback" not in err
    (line,) = err.strip().splitlines()
    assert line.startswith("error: could not write") and "summary.json" in line
