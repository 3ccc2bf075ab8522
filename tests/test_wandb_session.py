"""drakegpt/wandb_session.py: a run's W&B run and the sweep summary, read back from the offline W&B files they write;
the online paths (no key, no server, Ctrl-C during a stuck start) in subprocesses, with local stand-ins for the
server."""

import csv
import json
import os
import pty
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Dict, List

import pandas as pd
import pytest
from matplotlib.image import imsave

from drakegpt.run_dir import RunDir
from drakegpt.tracking import Tracker
from drakegpt.wandb_session import RunInfo, log_sweep_summary
from helpers.runs import ROOT
from helpers.wandb_files import OfflineRun, offline_runs

CHOICES = {"model": "TransformerLM", "scale": "default", "remedy": "none", "experiment": "ablation", "variant": None,
           "debug": None, "logger": "wandb", "hydra/launcher": "basic"}
CONFIG = {"model": {"name": "TransformerLM", "norm": "none"}, "scale": {"name": "default"}, "seed": 1}
LONG_PART = "data.path=" + "/very/long/folder" * 6 + "/lyrics.csv"  # over W&B's 64 characters for a tag


def logger(name="wandb"):
    return SimpleNamespace(name=name, project="DrakeGPT", mode="offline", entity=None, group=None, tags=["ladder"],
                           init_timeout_s=30.0)


def eval_row(step, loss):
    return {"step": step, "train_loss": loss, "val_loss": loss + 0.1, "train_bpc": loss / 0.6931,
            "val_bpc": (loss + 0.1) / 0.6931, "lr": 1e-3, "tokens_per_s": float("nan"), "elapsed_s": step / 10}


def run_info(folder: Path, seed=1) -> RunInfo:
    return RunInfo(f"TransformerLM-default-norm=none-s{seed}", folder.name, f"run{seed:05d}", {**CONFIG, "seed": seed},
                   CHOICES, ["norm=none", LONG_PART])


def only_run(root: Path) -> OfflineRun:
    runs = offline_runs(root)
    assert len(runs) == 1, [r.folder for r in runs]
    return runs[0]


def table(path: Path) -> List[Dict[str, Any]]:
    """A logged wandb.Table's rows, as written."""
    data = json.loads(path.read_text())
    return [dict(zip(data["columns"], row)) for row in data["data"]]


@pytest.fixture(autouse=True, scope="module")
def wandb_home(tmp_path_factory):
    """wandb's folders, settings and credentials in a temporary home; no key, offline unless a test says so."""
    import wandb

    home = tmp_path_factory.mktemp("home")
    with pytest.MonkeyPatch.context() as mp:
        for key in ("WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE", "WANDB_BASE_URL", "WANDB_MODE", "WANDB_SERVICE"):
            mp.delenv(key, raising=False)
        mp.setenv("HOME", str(home))
        for key, folder in [("WANDB_DIR", "wandb"), ("WANDB_DATA_DIR", "data"), ("WANDB_CACHE_DIR", "cache"),
                            ("WANDB_CONFIG_DIR", "config")]:
            mp.setenv(key, str(home / folder))
        wandb.teardown()  # a W&B set up earlier in this process would keep its own folders
        yield home
        wandb.teardown()


# ------------------------------------------------------------------------------------------ a training run


def test_a_run_carries_its_name_group_tags_choices_history_weights_sample_and_summary(tmp_path):
    files = RunDir(tmp_path / "run")
    (files.root / "wandb").mkdir(parents=True)  # resumed after step 0, which the W&B run has (it ended cleanly)
    (files.root / "wandb" / "logged_steps.json").write_text('{"run00001": 0}')
    tracker = Tracker(files, logger(), run_info(tmp_path), history=[eval_row(0, 4.0)])
    tracker.log_eval(eval_row(10, 3.0))
    tracker.log_eval(eval_row(20, 2.0))
    weights = tmp_path / "registry" / "TransformerLM_default" / "seed1-ab12cd34.safetensors"
    weights.parent.mkdir(parents=True)
    weights.write_bytes(b"the weights")
    weights.with_suffix(".json").write_text("{}")
    tracker.log_model(weights, {"step": 20, "val_loss": 2.1, "digest": "ab12cd34"}, best=True)
    tracker.write_sample("started from the bottom")
    tracker.finish({"status": "ok", "final_val_loss": 2.1, "best_val_loss": 2.1, "error": None})

    with open(files.metrics, newline="") as f:
        assert [(r["step"], r["train_loss"], r["tokens_per_s"]) for r in csv.DictReader(f)] == [
            ("0", "4", ""), ("10", "3", ""), ("20", "2", "")]
    assert json.loads(files.summary.read_text())["status"] == "ok"
    run = only_run(files.root)
    assert (run.id, run.name, run.group, run.job_type) == (
        "run00001", "TransformerLM-default-norm=none-s1", tmp_path.name, "train")
    assert run.tags == ["TransformerLM", "scale=default", "norm=none", LONG_PART[:64], "experiment=ablation", "ladder"]
    assert run.config["model"] == CONFIG["model"] and run.config["choices"] == CHOICES
    evals = [row for row in run.history if "val/loss" in row]  # named as W&B groups panels: train/..., val/...
    assert [(row["step"], row["train/loss"]) for row in evals] == [(10, 3.0), (20, 2.0)]  # the run had step 0
    assert evals[0]["val/bpc"] == pytest.approx(3.1 / 0.6931) and "tokens_per_s" not in evals[0]  # NaN: no value
    assert run.summary["val/loss"]["min"] == pytest.approx(2.1)  # define_metric: the best val loss as the summary
    assert run.summary["final_val_loss"] == 2.1 and "error" not in run.summary
    assert run.exit_code == 0
    model = next(a for a in run.artifacts if a["type"] == "model")
    assert model["name"] == "TransformerLM_default-seed1-ab12cd34"
    assert sorted(model["files"]) == ["seed1-ab12cd34.json", "seed1-ab12cd34.safetensors"]
    assert model["metadata"]["digest"] == "ab12cd34" and sorted(model["aliases"]) == ["best", "latest"]
    (sample,) = [row for row in run.history if "samples" in row]
    assert sample["step"] == 20
    assert table(run.folder / "files" / sample["samples"]["path"]) == [{"step": 20, "text": "started from the bottom"}]


def test_replicas_in_one_process_each_get_their_own_run(tmp_path):
    trackers = [Tracker(RunDir(tmp_path / f"seed={s}"), logger(), run_info(tmp_path, seed=s), []) for s in (1, 2)]
    for step in (0, 10):
        for seed, tracker in enumerate(trackers, 1):
            tracker.log_eval(eval_row(step, 4.0 - seed))
    for tracker in trackers:
        tracker.finish({"status": "ok"})
    for seed in (1, 2):
        run = only_run(tmp_path / f"seed={seed}")
        assert run.name.endswith(f"-s{seed}") and run.group == tmp_path.name
        assert [row["train/loss"] for row in run.history] == [4.0 - seed, 4.0 - seed]


def test_a_failed_run_still_ends_its_wandb_run(tmp_path):
    files = RunDir(tmp_path / "run")
    tracker = Tracker(files, logger(), run_info(tmp_path), [])
    files.summary.mkdir()  # summary.json cannot be written
    with pytest.raises(OSError):
        tracker.finish({"status": "failed", "error": "RuntimeError: boom"})
    assert only_run(files.root).exit_code == 1


def test_without_wandb_only_the_csv_and_the_summary(tmp_path):
    files = RunDir(tmp_path / "run")
    files.root.mkdir()
    files.metrics.write_text("step,train_loss\n0,4\n10,3\n20,2\n")  # rows past the checkpoint go
    tracker = Tracker(files, logger(name="none"), run_info(tmp_path), [eval_row(0, 4.0)])
    tracker.log_model(tmp_path / "absent.pt", {}, best=True)
    tracker.write_sample("text")
    tracker.finish({"status": "ok"})
    assert files.metrics.read_text().splitlines()[1:] == [f"0,4,4.1,{4 / 0.6931:.6g},{4.1 / 0.6931:.6g},0.001,,0"]
    assert sorted(p.name for p in files.root.iterdir()) == ["metrics.csv", "sample.txt", "summary.json"]


# ------------------------------------------------------------------------------------------ the sweep summary


def sweep_tables(tmp_path: Path):
    comparison = pd.DataFrame({"model": ["BigramLM", "TransformerLM"], "params": pd.array([4225, None], "Int64"),
                               "final_val_loss": [2.5, float("nan")], "status": ["ok", "failed"]})
    ablation = pd.DataFrame({"variant": ["norm=none"], "delta_val_loss": [0.12]})
    curves = pd.DataFrame({"job": ["a", "a", "b", "b"], "model": ["BigramLM"] * 2 + ["TransformerLM"] * 2,
                           "scale": ["default"] * 4, "variant": ["", "", "norm=none", "norm=none"], "seed": [1] * 4,
                           "step": [0, 10, 0, 10], "train_loss": [4.0, 3.0, 4.2, None],
                           "val_loss": [4.1, 3.1, 4.3, 3.3]})
    figure = tmp_path / "val_loss.png"
    imsave(figure, [[0.0, 1.0], [1.0, 0.0]])
    return comparison, ablation, [figure], curves


def test_the_sweep_summary_is_one_run_in_the_group_with_tables_figures_and_curves(tmp_path):
    comparison, ablation, figures, curves = sweep_tables(tmp_path)
    log_sweep_summary(tmp_path, logger(), "ablation-2026-01-01_12-00-00", comparison, ablation, figures, curves,
                      ["TransformerLM", "scale=default", "experiment=ablation"])

    run = only_run(tmp_path / "wandb")
    assert (run.name, run.group, run.job_type) == ("comparison-ablation-2026-01-01_12-00-00",
                                                   "ablation-2026-01-01_12-00-00", "report")
    assert run.tags == ["TransformerLM", "scale=default", "experiment=ablation", "ladder"]  # tagged like its jobs
    (row,) = run.history
    assert table(run.folder / "files" / row["comparison"]["path"]) == [  # NaN and <NA> as empty cells
        {"model": "BigramLM", "params": 4225, "final_val_loss": 2.5, "status": "ok"},
        {"model": "TransformerLM", "params": None, "final_val_loss": None, "status": "failed"},
    ]
    assert table(run.folder / "files" / row["ablation"]["path"]) == [{"variant": "norm=none", "delta_val_loss": 0.12}]
    assert (run.folder / "files" / row["figures/val_loss"]["path"]).read_bytes()[:4] == b"\x89PNG"
    for metric in ("train_loss", "val_loss"):
        assert run.config["_wandb"]["visualize"][metric]["panel_config"]["panelDefId"] == "wandb/lineseries/v0"
        lines = table(run.folder / "files" / row[f"{metric}_table"]["path"])
        expected = curves.dropna(subset=[metric])
        assert sorted((r["lineKey"], r["step"], r["lineVal"]) for r in lines) == sorted(
            zip(expected.job, expected.step, expected[metric]))


def test_the_sweep_summary_without_ablation_or_without_wandb(tmp_path):
    comparison, _, _, curves = sweep_tables(tmp_path)
    log_sweep_summary(tmp_path / "none", logger(name="none"), "g", comparison, None, [], curves)
    assert not (tmp_path / "none").exists()
    log_sweep_summary(tmp_path, logger(), "g", comparison, None, [], pd.DataFrame())
    (row,) = only_run(tmp_path / "wandb").history
    assert "comparison" in row and "ablation" not in row and "val_loss_table" not in row


# ------------------------------------------------------------------------------------------ online, in a subprocess

CHILD = """
import logging, sys, time
from pathlib import Path
from types import SimpleNamespace
from drakegpt.run_dir import RunDir
from drakegpt.tracking import RunInfo, Tracker

logging.basicConfig(format="%(levelname)s %(message)s")
folder, timeout, replicas = Path(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
logger = SimpleNamespace(name="wandb", project="DrakeGPT", mode="online", entity=None, group=None, tags=[],
                         init_timeout_s=timeout)
start = time.monotonic()
try:
    trackers = [Tracker(RunDir(folder / f"seed={s}"), logger, RunInfo(f"run-s{s}", str(folder), f"id{s}", {}), [])
                for s in range(replicas)]
except KeyboardInterrupt:
    print("stopped before training started", file=sys.stderr)
    sys.exit(130)
for tracker in trackers:
    tracker.log_eval({"step": 0, "train_loss": 4.0, "val_loss": 4.1, "train_bpc": 5.8, "val_bpc": 5.9, "lr": 1e-3,
                      "tokens_per_s": 1.0, "elapsed_s": 0})
    tracker.finish({"status": "ok"})
(folder / "started_s").write_text(str(time.monotonic() - start))
"""


@pytest.fixture
def silent_server():
    """A W&B host that takes connections and never answers: a start that hangs."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(16)
        yield server


@pytest.fixture
def no_server():
    """A W&B host that refuses connections, as one without a network does (a port bound, not listening)."""
    with socket.socket() as port:
        port.bind(("127.0.0.1", 0))
        yield "http://127.0.0.1:%d" % port.getsockname()[1]


def child_env(tmp_path: Path, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    home = tmp_path / "home"
    home.mkdir()
    return {**env, "HOME": str(home), "WANDB_MODE": "online", "WANDB_DATA_DIR": str(home / "data"),
            "WANDB_CACHE_DIR": str(home / "cache"), "WANDB_CONFIG_DIR": str(home / "config"),
            "PYTHONPATH": str(ROOT), **extra}


def child(tmp_path: Path, env: dict, timeout: float, replicas: int = 1, **popen) -> subprocess.Popen:
    command = [sys.executable, "-c", CHILD, str(tmp_path / "run"), str(timeout), str(replicas)]
    return subprocess.Popen(command, env=env, cwd=tmp_path, text=True, **popen)


def assert_logged_offline(folder: Path, replicas: int = 1) -> None:
    for s in range(replicas):
        run = only_run(folder / f"seed={s}")
        assert run.name == f"run-s{s}" and [row["val/loss"] for row in run.history] == [4.1] and run.exit_code == 0
        assert run.folder.name.startswith("offline-run-")


@pytest.mark.slow
def test_online_without_a_key_logs_offline_after_one_line_even_on_a_terminal(tmp_path):
    # A terminal is where wandb would prompt for a key and wait for ever.
    controller, terminal = pty.openpty()
    start = time.monotonic()
    process = child(tmp_path, child_env(tmp_path), timeout=30, stdin=terminal, stdout=terminal, stderr=terminal)
    os.close(terminal)
    output = b""
    while time.monotonic() - start < 60:
        if select.select([controller], [], [], 1)[0]:
            try:
                chunk = os.read(controller, 4096)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            output += chunk
    process.kill()
    process.wait()
    os.close(controller)
    lines = output.decode().splitlines()
    assert process.returncode == 0, lines
    assert time.monotonic() - start < 10, lines  # the failure mode is a prompt that never ends
    assert len(lines) == 1, lines
    assert lines[0].startswith("WARNING W&B: no API key") and "wandb login" in lines[0]
    assert f"wandb sync {tmp_path / 'run' / 'seed=0' / 'wandb' / 'offline-run-'}" in lines[0]
    assert_logged_offline(tmp_path / "run")


@pytest.mark.slow
def test_online_without_a_server_logs_offline_after_the_init_timeout(tmp_path, no_server):
    env = child_env(tmp_path, WANDB_API_KEY="a" * 40, WANDB_BASE_URL=no_server)
    process = child(tmp_path, env, timeout=2, replicas=2, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE)
    out, err = process.communicate(timeout=60)
    lines = (out + err).splitlines()
    assert process.returncode == 0, lines
    # One wait for the first replica; the second goes offline at once, without a second line.
    assert float((tmp_path / "run" / "started_s").read_text()) < 2 + 5, lines
    assert len(lines) == 1 and lines[0].startswith(f"WARNING W&B: {no_server} did not start the run"), lines
    assert_logged_offline(tmp_path / "run", replicas=2)


@pytest.mark.slow
def test_ctrl_c_during_a_stuck_online_start_ends_the_process_at_once(tmp_path, silent_server):
    host = "http://127.0.0.1:%d" % silent_server.getsockname()[1]
    env = child_env(tmp_path, WANDB_API_KEY="a" * 40, WANDB_BASE_URL=host)
    process = child(tmp_path, env, timeout=120, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE)
    silent_server.settimeout(30)
    connection, _ = silent_server.accept()  # wandb-core is asking the server: the start is stuck
    time.sleep(0.5)
    process.send_signal(signal.SIGINT)
    interrupted = time.monotonic()
    try:
        out, err = process.communicate(timeout=60)
    finally:
        process.kill()
        connection.close()
    assert time.monotonic() - interrupted < 5, err  # wandb-core would hold the exit until its init timeout
    assert process.returncode == 130, err
    assert (out + err).splitlines() == ["stopped before training started"]
