"""Training end to end: the files a run writes, determinism, quick runs, exact resume, crash safety, bad input,
and the faults a run meets (occupied and read-only folders, a full disk, changed data, lost files)."""

import csv
import logging
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from drakegpt import checkpoints
from drakegpt.checkpoints import read_pretrained
from drakegpt.errors import UsageError
from drakegpt.run_dir import RunDir
from helpers.filesystems import mount, small_filesystem
from helpers.runs import ONE_THREAD, QUICK, ROOT, read_summary, run_py, train_in_process, typed_config

TINY = ["train.iters=20", "train.eval_interval=10", "train.eval_iters=2", "train.sample_length=0"]


def metrics(run_dir: Path):
    with open(run_dir / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def losses(run_dir: Path):
    return [(r["step"], r["train_loss"], r["val_loss"], r["lr"]) for r in metrics(run_dir)]


# --------------------------------------------------------------------------------------------- a run's files


def test_a_run_writes_metrics_summary_checkpoints_a_sample_and_publishes(tmp_path):
    summary = train_in_process(tmp_path, *QUICK, "train.sample_length=40")[0]
    out = tmp_path / "run"
    rows = metrics(out)
    assert [int(r["step"]) for r in rows] == [0, 10, 20]
    assert list(rows[0]) == ["step", "train_loss", "val_loss", "train_bpc", "val_bpc", "lr", "tokens_per_s",
                             "elapsed_s"]
    for r in rows:  # bits per character: nats / ln 2, to the 6 significant digits the file keeps
        assert float(r["val_bpc"]) == pytest.approx(float(r["val_loss"]) / math.log(2), rel=1e-5)
    assert all(float(r["tokens_per_s"]) > 0 for r in rows[1:])
    assert summary["status"] == "ok" and summary["model"] == "TransformerLM" and summary["scale"] == "default"
    assert (summary["vocab_size"], summary["params"], summary["device"]) == (29, 40029, "cpu")
    for key in ("final_train_loss", "final_val_loss", "best_val_loss", "tokens_per_s", "wall_s"):
        assert summary[key] > 0
    state = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    assert state["kind"] == "run" and state["progress"]["step"] == 20 and len(state["progress"]["history"]) == 3
    assert state["model_class"] == "LanguageModel" and state["model_config"]["num_layers"] == 3
    assert state["run_config"]["model"]["name"] == "TransformerLM" and len(state["data_digest"]) == 64
    published = read_pretrained(summary["published"])
    assert summary["published"].endswith(".safetensors") and published.vocab == state["vocab"]
    assert published.model_config == state["model_config"]  # every constructor argument: enough to rebuild
    assert all(torch.equal(published.model_state[k], v) for k, v in state["model_state"].items()
               if k in published.model_state)
    assert summary["eval"] == "exact"
    assert summary["best_val_bpc"] == pytest.approx(summary["best_val_loss"] / math.log(2))
    assert len(summary["sample"]) == 41 and (out / "sample.txt").read_text() == summary["sample"]


def test_the_val_loss_is_the_val_splits_and_the_train_loss_the_train_splits(tmp_path):
    """Against an evaluation written out here: the published weights, every val window, mean cross-entropy."""
    import torch.nn.functional as F

    from drakegpt.checkpoints import load_model
    from drakegpt.data import build_corpus
    from drakegpt.evaluation import exact_windows

    summary = train_in_process(tmp_path, *QUICK)[0]
    model, _, _ = load_model(summary["published"], torch.device("cpu"))
    cfg, _ = typed_config(*QUICK)
    corpus = build_corpus(cfg.data, 8)
    for split, key in ((corpus.val, "final_val_loss"), (corpus.train, None)):
        starts, first = exact_windows(len(split), 8)
        index = starts[:, None] + torch.arange(8)
        with torch.no_grad():
            logits = model.eval()(split[index][None])[0][0]
        losses = F.cross_entropy(logits.flatten(0, 1), split[index + 1].flatten(), reduction="none").view(-1, 8)
        counted = torch.arange(8) >= first[:, None]
        exact = (losses * counted).sum().item() / counted.sum().item()
        if key:
            assert summary[key] == pytest.approx(exact, abs=1e-5)
        else:
            assert abs(summary["final_train_loss"] - exact) > 1e-3  # the train loss is not the val split's


def test_a_stopped_run_with_dropout_resumes_to_exactly_the_straight_losses(tmp_path):
    """The quick tier's exact resume: dropout on (TransformerLM), every random stream restored from last.pt."""
    common = ["train.eval_interval=10", "logger=none", "train.sample_length=0", "train.threads=1", "seed=5"]
    straight = train_in_process(tmp_path / "straight", *common, "train.iters=40")[0]
    _first_half(tmp_path / "cut", *common)
    resumed = _resume(tmp_path / "cut", *common, "train.iters=40")[0]
    for key in ("final_train_loss", "final_val_loss", "best_val_loss", "best_step", "steps"):
        assert resumed[key] == straight[key], key
    assert losses(tmp_path / "cut" / "run") == losses(tmp_path / "straight" / "run")


def test_a_text_without_the_prompts_character_trains_publishes_and_samples(tmp_path):
    songs = tmp_path / "songs.txt"
    songs.write_text("la di da dum " * 400)  # no newline: the default prompt's character is not in the text
    summary = train_in_process(tmp_path, "data=text", f"data.path={songs}", *QUICK, "train.sample_length=30")[0]
    assert summary["status"] == "ok" and summary["sample"].startswith("l") and len(summary["sample"]) == 31
    assert Path(summary["published"]).is_file()


def test_same_seed_same_losses_on_cpu(tmp_path):
    for name, seed in (("a", 7), ("b", 7), ("c", 8)):
        train_in_process(tmp_path / name, *QUICK, f"seed={seed}")
    assert losses(tmp_path / "a" / "run") == losses(tmp_path / "b" / "run")
    assert losses(tmp_path / "c" / "run") != losses(tmp_path / "a" / "run")


def test_training_on_the_sample_corpus_lowers_the_val_loss(tmp_path):
    train_in_process(tmp_path, "train.iters=300", "train.eval_interval=100", "train.eval_iters=10", "logger=none",
                     "train.sample_length=0", ONE_THREAD)
    val = [float(r["val_loss"]) for r in metrics(tmp_path / "run")]
    assert val[-1] < val[0] - 0.5 and val == sorted(val, reverse=True)


@pytest.mark.parametrize("optimizer", ["adamw_cosine", "sgd_cyclic"])
def test_every_optimizer_trains(tmp_path, optimizer):
    train_in_process(tmp_path, f"optimizer={optimizer}", "train.iters=200", "train.eval_interval=100",
                     "train.eval_iters=10", "logger=none", "train.sample_length=0")
    val = [float(r["val_loss"]) for r in metrics(tmp_path / "run")]
    assert val[-1] < val[0] - 0.3, val


def test_train_iters_alone_trains_and_says_once_that_evaluation_follows_the_run(tmp_path, caplog):
    with caplog.at_level(logging.INFO):
        summary = train_in_process(tmp_path, "train.iters=7", "logger=none", "train.sample_length=0")[0]
    assert summary["status"] == "ok" and summary["steps"] == 7
    assert [int(r["step"]) for r in metrics(tmp_path / "run")] == [0, 7]
    assert sum("evaluating every 7 iterations" in r.message for r in caplog.records) == 1


def test_overfitting_experiment_works_at_any_length(tmp_path):
    for remedy in ("lr_decay", "all"):
        summary = train_in_process(tmp_path / remedy, "experiment=overfitting", f"remedy={remedy}", "scale=default",
                                   "train.iters=30", "train.eval_interval=10", "train.eval_iters=1", "logger=none",
                                   "train.sample_length=0")[0]
        assert summary["status"] == "ok"


@pytest.mark.slow
def test_debug_quick_touches_every_stage_and_publishes_nothing(run, tmp_path):
    result = run("debug=quick", f"hydra.run.dir={tmp_path / 'quick'}")
    assert result.returncode == 0, result.stderr
    summary = read_summary(tmp_path / "quick")
    assert summary["steps"] == 8 and summary["sample"] and "published" not in summary
    assert (tmp_path / "quick" / "checkpoints" / "best.pt").is_file()
    assert not (tmp_path / "registry").exists() and not (tmp_path / "quick" / "wandb").exists()  # nothing kept
    generated = run("task=generate", f"generate.checkpoint={tmp_path / 'quick'}", "generate.length=20")
    assert generated.returncode == 0, generated.stderr  # its checkpoint still samples
    assert len(list((tmp_path / "inference").glob("generation_TransformerLM_*.txt"))) == 1


# ---------------------------------------------------------------------------------------- stop and resume


def _wait_for(predicate, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError("timed out")


STOPPED = ["model=TransformerLM", "train.iters=400", "train.eval_interval=50", "train.eval_iters=5", "seed=3",
           "train.sample_length=0", ONE_THREAD]


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> Path:
    """The run the stopped and resumed ones must match, trained once for all of them."""
    folder = tmp_path_factory.mktemp("straight")
    assert run_py(*STOPPED, "logger=none", f"hydra.run.dir={folder / 'run'}", cwd=folder).returncode == 0
    return folder / "run"


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGUSR2])  # SIGTERM: the sweep and SLURM tests
def test_interrupted_run_resumes_to_exactly_the_straight_losses(tmp_path, straight, signum):
    cut = tmp_path / "cut"
    proc = subprocess.Popen([sys.executable, str(ROOT / "run.py"), *STOPPED, f"hydra.run.dir={cut}"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "WANDB_MODE": "offline"})
    _wait_for(lambda: (cut / "metrics.csv").is_file() and len(metrics(cut)) >= 3)  # mid-run, past step 100
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signum, err
    assert "train.resume=true" in err and "Traceback" not in err
    summary = read_summary(cut)
    assert summary["status"] == "interrupted"
    stopped_at = torch.load(cut / "checkpoints" / "last.pt", weights_only=True)["progress"]["step"]
    assert 100 <= stopped_at < 400

    before = (cut / "summary.json").read_bytes()  # without train.resume the occupied folder is refused, untouched
    records = sorted((cut / ".hydra").iterdir())
    refused = run_py(*STOPPED, f"hydra.run.dir={cut}", cwd=tmp_path)
    assert refused.returncode != 0 and "train.resume=true" in refused.stderr
    assert (cut / "summary.json").read_bytes() == before
    assert sorted((cut / ".hydra").iterdir()) == records  # nor does it leave its own config record there

    resumed = run_py(*STOPPED, f"hydra.run.dir={cut}", "train.resume=true", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    a, b = read_summary(straight), read_summary(cut)
    for key in ("final_train_loss", "final_val_loss", "best_val_loss", "best_step", "steps"):
        assert a[key] == b[key], key
    assert b["run_id"] == summary["run_id"]  # the same W&B run continues
    assert losses(cut) == losses(straight)  # each evaluation once, same values


@pytest.mark.slow
def test_a_replica_group_resumes_exactly(tmp_path):
    args = ["model=TransformerLM", "train.iters=400", "train.eval_interval=50", "train.eval_iters=3",
            "train.replicas=2", "logger=none", "train.sample_length=0", ONE_THREAD]
    straight, cut = tmp_path / "straight", tmp_path / "cut"
    assert run_py(*args, f"hydra.run.dir={straight}", cwd=tmp_path).returncode == 0
    proc = subprocess.Popen([sys.executable, str(ROOT / "run.py"), *args, f"hydra.run.dir={cut}"], cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _wait_for(lambda: (cut / "seed=1338" / "metrics.csv").is_file() and len(metrics(cut / "seed=1338")) >= 3)
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=120)
    assert proc.returncode == 130
    assert run_py(*args, f"hydra.run.dir={cut}", "train.resume=true", cwd=tmp_path).returncode == 0
    for seed in (1337, 1338):
        assert losses(cut / f"seed={seed}") == losses(straight / f"seed={seed}")
        assert read_summary(cut / f"seed={seed}")["status"] == "ok"


KILLER = """
import sys, torch
from drakegpt import checkpoints
state = {f"w{i}": torch.randn(256, 256) for i in range(24)}
record = checkpoints.PackedModel("LanguageModel", {}, "ab", state, {}, checkpoints.weights_digest(state, {}),
                                 {"step": 0}, {})
path = sys.argv[1]
checkpoints.save(record, path)
print("ready", flush=True)
while True:
    record.record["step"] += 1
    checkpoints.save(record, path)
"""


@pytest.mark.slow
def test_kill_9_while_saving_never_leaves_an_unloadable_checkpoint(tmp_path):
    path = tmp_path / "checkpoints" / "last.pt"
    for delay in (0.05, 0.31, 0.77):
        proc = subprocess.Popen([sys.executable, "-c", KILLER, str(path)], stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(delay)
        proc.kill()
        proc.wait()
        record = checkpoints.load(path, checkpoints.PackedModel)  # whole: its checksum holds
        assert len(record.dense_state) == 24 and record.record["step"] > 0  # it was killed mid-way, not before


def test_a_diverging_run_stops_with_status_diverged_and_keeps_the_good_checkpoint(tmp_path):
    with pytest.raises(UsageError) as diverged:
        train_in_process(tmp_path, "model=BigramLM", "optimizer.base_lr=1e6", "optimizer.max_lr=1e6",
                         "train.iters=40", "train.eval_interval=5", "train.eval_iters=2", "logger=none")
    assert "diverged" in str(diverged.value) and "optimizer.max_lr" in str(diverged.value)
    summary = read_summary(tmp_path / "run")
    assert summary["status"] == "diverged" and 0 < summary["steps"] < 40
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)
    assert all(torch.isfinite(t).all() for t in state["model_state"].values())


# A learning rate too small to move fp32 weights: the val loss never improves after step 0.
NO_PROGRESS = ["model=BigramLM", "optimizer.base_lr=1e-12", "optimizer.max_lr=1e-12",
               "optimizer.algorithm.weight_decay=0", "train.iters=200", "train.eval_interval=10",
               "train.eval_iters=2", "train.patience=2", "logger=none", "train.sample_length=0"]


def test_patience_stops_early_and_publishes_the_best_weights(tmp_path):
    summary = train_in_process(tmp_path, *NO_PROGRESS)[0]
    assert summary["stopped_early"] is True and summary["steps"] == 20 and summary["best_step"] == 0
    best = torch.load(tmp_path / "run" / "checkpoints" / "best.pt", weights_only=True)["model_state"]
    published = read_pretrained(summary["published"])
    assert all(torch.equal(best[k], published.model_state[k]) for k in published.model_state)
    assert (published.record["step"], published.record["val_loss"]) == (0, summary["best_val_loss"])


# ----------------------------------------------------------------------------- resume questions what changed


def _resume(folder: Path, *overrides: str):
    return train_in_process(folder, *overrides, resume=True)


def _first_half(folder: Path, *overrides: str) -> None:
    """A run stopped at step 20 of 40: the same files an interrupted run leaves."""
    train_in_process(folder, *overrides, "train.iters=20")
    cfg_file = folder / "run" / "checkpoints" / "last.pt"
    state = torch.load(cfg_file, weights_only=True)
    state["run_config"]["train"]["iters"] = 40  # as if the run had been asked for 40
    torch.save(state, cfg_file)


def test_resume_refuses_training_text_that_changed_with_the_same_characters(tmp_path):
    songs = tmp_path / "songs.txt"
    songs.write_text("".join(f"line {i} la la la\n" for i in range(400)))
    common = ["data=text", f"data.path={songs}", "train.eval_interval=10", "train.eval_iters=2", "logger=none",
              "train.sample_length=0"]
    _first_half(tmp_path, *common)
    songs.write_text("".join(f"line {i} la la la\n" for i in reversed(range(400))))  # reordered: same characters
    with pytest.raises(UsageError) as refused:
        _resume(tmp_path, *common, "train.iters=40")
    assert "training text changed" in str(refused.value)


def test_resume_without_last_pt_but_with_best_pt_says_how_to_go_on(tmp_path):
    train_in_process(tmp_path, *QUICK)
    (tmp_path / "run" / "checkpoints" / "last.pt").unlink()
    before = (tmp_path / "run" / "metrics.csv").read_bytes()
    with pytest.raises(UsageError) as refused:
        _resume(tmp_path, *QUICK)
    assert "best.pt" in str(refused.value) and "cp " in str(refused.value)
    assert (tmp_path / "run" / "metrics.csv").read_bytes() == before  # nothing overwritten


def test_resume_with_other_settings_names_what_changed(tmp_path):
    train_in_process(tmp_path, *QUICK)
    with pytest.raises(UsageError) as refused:
        _resume(tmp_path, *QUICK, "model.norm=none", "optimizer.max_lr=0.01")
    assert "model.norm: layernorm -> none; optimizer.max_lr: 0.005 -> 0.01" in str(refused.value)


def test_a_folder_holds_one_run_a_single_run_or_one_group_of_replicas(tmp_path):
    from drakegpt.replicas import plan_replicas

    RUN_SUMMARY = '{"status": "interrupted"}'  # what a run that began wrote (a summary without one is a user's)

    def plan(*overrides, resume=True):
        cfg, resolved = typed_config(*overrides)
        return plan_replicas(cfg, resolved, tmp_path, resume)

    for folder in (tmp_path / "seed=1", tmp_path / "seed=2"):  # a group of two replicas that began
        folder.mkdir()
        (folder / "summary.json").write_text(RUN_SUMMARY)
    assert [r.seed for r in plan("seed=1", "train.replicas=2")] == [1, 2]
    for overrides, asked in ((["seed=1"], "a single run"), (["seed=2", "train.replicas=2"], "seed=2, seed=3"),
                             (["seed=1", "train.replicas=3"], "seed=1, seed=2, seed=3")):
        for resume in (True, False):
            with pytest.raises(UsageError) as refused:
                plan(*overrides, resume=resume)
            assert f"holds replicas seed=1, seed=2, and {' '.join(overrides)}" in str(refused.value)
            assert f"asks for {asked if asked.startswith('a ') else 'replicas ' + asked};" in str(refused.value)
    (tmp_path / "summary.json").write_text(RUN_SUMMARY)
    with pytest.raises(UsageError, match="holds a single run and replicas seed=1, seed=2"):
        plan("seed=1", "train.replicas=2")


def test_resume_rebuilds_a_lost_or_shortened_metrics_csv_from_the_checkpoint(tmp_path):
    common = ["train.eval_interval=10", "train.eval_iters=2", "logger=none", "train.sample_length=0"]
    _first_half(tmp_path, *common)
    (tmp_path / "run" / "metrics.csv").unlink()
    _resume(tmp_path, *common, "train.iters=40")
    assert [int(r["step"]) for r in metrics(tmp_path / "run")] == [0, 10, 20, 30, 40]


# --------------------------------------------------------------------------------------- one run per folder


@pytest.mark.slow
def test_a_folder_in_use_by_a_live_run_is_refused(run, tmp_path):
    holder = RunDir(tmp_path / "busy").lock()
    try:
        result = run(*QUICK, f"hydra.run.dir={tmp_path / 'busy'}")
    finally:
        holder.unlock()
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert "in use by a run that is still going" in result.stderr
    assert not (tmp_path / "busy" / "metrics.csv").exists()


@pytest.mark.slow
def test_two_runs_started_at_once_into_one_folder_leave_one_clean_run(tmp_path):
    folder = tmp_path / "both"
    args = [sys.executable, str(ROOT / "run.py"), *QUICK, "train.iters=200", "train.eval_interval=50",
            f"hydra.run.dir={folder}"]
    procs = [subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    assert sorted(rc for rc, _ in results) == [0, 2], results
    refused = next(err for rc, err in results if rc == 2)
    assert "in use" in refused or "already holds a run" in refused
    assert [int(r["step"]) for r in metrics(folder)] == [0, 50, 100, 150, 200]  # each evaluation once


# ------------------------------------------------------------------------------------------ filesystem faults


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["full", "read-only"])
def test_a_fault_mid_run_is_one_line_keeps_the_last_checkpoint_and_a_resume_continues(tmp_path, fault):
    args = ["model=BigramLM", "train.iters=3000", "train.eval_interval=100", "train.eval_iters=2", "logger=none",
            "train.sample_length=0", "train.threads=1"]
    with small_filesystem(tmp_path / "disk", "4m") as disk:
        run_dir = disk / "run"
        proc = subprocess.Popen([sys.executable, str(ROOT / "run.py"), *args, f"hydra.run.dir={run_dir}"],
                                cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        _wait_for(lambda: (run_dir / "metrics.csv").is_file() and len(metrics(run_dir)) >= 3)
        checkpoints = run_dir / "checkpoints"
        if fault == "full":  # leave room for summary.json, not for the next checkpoint
            stat = os.statvfs(disk)
            try:
                (disk / "filler").write_bytes(bytes(max(0, stat.f_bavail * stat.f_frsize - 12 * 1024)))
            except OSError:
                pass
        elif not (mount("--bind", str(checkpoints), str(checkpoints))
                  and mount("-o", "remount,ro,bind", str(checkpoints))):  # a live mount with open files cannot
            proc.kill()
            pytest.skip("a read-only bind mount needs root and mount rights")
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 2, err
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: could not write"), err
        assert ("no space left" if fault == "full" else "read-only") in lines[0]
        saved = torch.load(checkpoints / "last.pt", weights_only=True)["progress"]["step"]
        assert saved >= 200
        assert read_summary(run_dir)["status"] == "failed"
        if fault == "full":
            (disk / "filler").unlink()
        else:
            subprocess.run(["umount", str(checkpoints)], check=True)
        resumed = run_py(*args, f"hydra.run.dir={run_dir}", "train.resume=true", cwd=tmp_path)
        assert resumed.returncode == 0, resumed.stderr
        assert read_summary(run_dir)["steps"] == 3000
        steps = [int(r["step"]) for r in metrics(run_dir)]
        assert steps == list(range(0, 3001, 100))


def test_memory_a_run_cannot_have_is_refused_before_anything_is_built(tmp_path):
    from drakegpt.runtime import check_memory
    from drakegpt.schema import model_config

    cfg, _ = typed_config("train.eval=random", "train.eval_iters=100000000000")
    with pytest.raises(UsageError) as refused:
        check_memory(cfg, model_config(cfg.model, cfg.scale, 80), torch.device("cpu"))
    assert "GiB" in str(refused.value) and "train.eval_iters" in str(refused.value)
    cfg, _ = typed_config("scale=large")  # the real presets fit
    check_memory(cfg, model_config(cfg.model, cfg.scale, 80), torch.device("cpu"))


# ------------------------------------------------------------------------------------- bad input, one line


@pytest.mark.slow
def test_a_compiled_training_step_gives_the_eager_losses(tmp_path):
    """train.compile (on by default on CUDA) checked on the CPU; without dropout, whose random draws differ."""
    common = [*QUICK, "train.precision=fp32", "model.dropout=false"]
    eager = train_in_process(tmp_path / "eager", *common, "train.compile=false")[0]
    compiled = train_in_process(tmp_path / "compiled", *common, "train.compile=true")[0]
    for key in ("final_train_loss", "final_val_loss"):
        assert compiled[key] == pytest.approx(eager[key], abs=1e-4), key


@pytest.mark.slow
def test_a_run_folder_that_cannot_be_made_is_one_line(tmp_path):
    (tmp_path / "afile").write_text("x")
    for key, flag in (("hydra.run.dir", []), ("hydra.sweep.dir", ["-m"])):
        folder = tmp_path / "afile" / "run"
        result = run_py(*flag, *QUICK, f"{key}={folder}", cwd=tmp_path)
        assert result.returncode == 2
        assert result.stderr.strip() == f"error: {key}={folder} is not writable (not a directory); choose a folder " \
                                        "you can write to"


@pytest.mark.slow
def test_a_file_size_limit_while_saving_is_one_line_and_keeps_what_was_written(tmp_path):
    """RLIMIT_FSIZE: torch's zip writer fails with a RuntimeError (not an OSError): still one line."""
    import resource

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG instead of killing the process
        resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))

    run_dir = tmp_path / "run"
    proc = subprocess.run([sys.executable, str(ROOT / "run.py"), *QUICK, f"hydra.run.dir={run_dir}"], cwd=tmp_path,
                          capture_output=True, text=True, preexec_fn=limit, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith(f"error: could not write {run_dir / 'checkpoints' / 'last.pt'}") and "no checkpoint" in line
    resumed = subprocess.run([sys.executable, str(ROOT / "run.py"), *QUICK, f"hydra.run.dir={run_dir}",
                              "train.resume=true"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr  # what the line says to do works: nothing half-written blocks it
    assert [int(r["step"]) for r in metrics(run_dir)] == [0, 10, 20]
