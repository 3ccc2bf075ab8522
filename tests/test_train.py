"""run.py end to end: the files a run writes, W&B offline, determinism, exact resume, crash safety."""

import csv
import hashlib
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import QUICK, ROOT, read_summary, run_py

TINY = ["train.iters=20", "train.eval_interval=10", "train.eval_iters=2"]


def metrics(run_dir: Path):
    with open(run_dir / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_run_writes_metrics_summary_checkpoint_and_offline_wandb(run, tmp_path):
    out = tmp_path / "run"
    result = run(*TINY, f"hydra.run.dir={out}")
    assert result.returncode == 0, result.stderr
    rows = metrics(out)
    assert [int(r["step"]) for r in rows] == [0, 10, 20]
    assert list(rows[0]) == ["step", "train_loss", "val_loss", "lr", "tokens_per_s", "elapsed_s"]
    assert all(float(r["tokens_per_s"]) > 0 for r in rows[1:])

    summary = read_summary(out)
    assert summary["status"] == "ok"
    assert summary["model"] == "TransformerLM" and summary["scale"] == "default"
    assert summary["vocab_size"] == 29  # the shipped sample corpus
    assert summary["params"] == 40029
    for key in ("final_train_loss", "final_val_loss", "best_val_loss", "tokens_per_s", "wall_s"):
        assert summary[key] > 0
    assert summary["device"] == "cpu"

    state = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    assert state["progress"]["step"] == 20
    assert {"model_state", "optimizer_state", "schedule_state", "batches_rng", "torch_rng", "config", "vocab"} <= set(
        state
    )
    assert state["config"]["model"]["name"] == "TransformerLM"

    published = torch.load(tmp_path / "models" / "TransformerLM_default.pt", weights_only=True)
    assert published["vocab"] == state["vocab"] and published["config"]["scale"]["embedding_dim"] == 32

    wandb_runs = list((out / "wandb").glob("offline-run-*"))
    assert len(wandb_runs) == 1 and list(wandb_runs[0].glob("run-*.wandb"))
    assert summary["run_id"] in wandb_runs[0].name


def test_training_on_the_sample_corpus_lowers_the_val_loss(run, tmp_path):
    out = tmp_path / "run"
    result = run(
        "train.iters=300", "train.eval_interval=100", "train.eval_iters=10", "logger=none", f"hydra.run.dir={out}"
    )
    assert result.returncode == 0, result.stderr
    val = [float(r["val_loss"]) for r in metrics(out)]
    assert val[-1] < val[0] - 0.5
    assert val == sorted(val, reverse=True)


def test_same_seed_same_losses_on_cpu(run, tmp_path):
    outs = [tmp_path / "a", tmp_path / "b"]
    for out in outs:
        assert run(*QUICK, "seed=7", f"hydra.run.dir={out}").returncode == 0

    def strip(rows):
        return [(r["step"], r["train_loss"], r["val_loss"], r["lr"]) for r in rows]

    assert strip(metrics(outs[0])) == strip(metrics(outs[1]))
    other = tmp_path / "c"
    assert run(*QUICK, "seed=8", f"hydra.run.dir={other}").returncode == 0
    assert strip(metrics(other)) != strip(metrics(outs[0]))


def _wait_for(predicate, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError("timed out")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_interrupted_run_resumes_to_exactly_the_straight_losses(tmp_path, signum):
    args = ["model=TransformerLM", "train.iters=800", "train.eval_interval=50", "train.eval_iters=5", "seed=3"]
    straight = tmp_path / "straight"
    assert run_py(*args, "logger=none", f"hydra.run.dir={straight}", cwd=tmp_path).returncode == 0

    cut = tmp_path / "cut"
    cmd = [sys.executable, str(ROOT / "run.py"), *args, f"hydra.run.dir={cut}"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for(lambda: (cut / "metrics.csv").is_file() and len(metrics(cut)) >= 5)  # mid-run, past step 200
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signum, err
    assert "train.resume=true" in err and "Traceback" not in err
    summary = read_summary(cut)
    assert summary["status"] == "interrupted"
    stopped_at = torch.load(cut / "checkpoints" / "last.pt", weights_only=True)["progress"]["step"]
    assert 200 <= stopped_at < 800

    # Without train.resume the occupied folder is refused and left as it was.
    before = (cut / "summary.json").read_bytes()
    refused = run_py(*args, f"hydra.run.dir={cut}", cwd=tmp_path)
    assert refused.returncode != 0 and "train.resume=true" in refused.stderr
    assert (cut / "summary.json").read_bytes() == before

    resumed = run_py(*args, f"hydra.run.dir={cut}", "train.resume=true", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    a, b = read_summary(straight), read_summary(cut)
    assert b["status"] == "ok"
    for key in ("final_train_loss", "final_val_loss", "best_val_loss", "best_step", "steps"):
        assert a[key] == b[key], key
    assert b["run_id"] == summary["run_id"]  # the same W&B run continues
    runs = sorted((cut / "wandb").glob("offline-run-*"))
    assert len(runs) == 2 and all(r.name.endswith(summary["run_id"]) for r in runs)

    def losses(rows):
        return [(r["step"], r["train_loss"], r["val_loss"]) for r in rows]

    assert losses(metrics(cut)) == losses(metrics(straight))  # each evaluation once, same values


KILLER = """
import sys, torch
from drakegpt import checkpoint
path = sys.argv[1]
state = {"model_state": {f"w{i}": torch.randn(256, 256) for i in range(24)}, "step": 0}
checkpoint.save(state, path)
print("ready", flush=True)
step = 0
while True:
    step += 1
    state["step"] = step
    checkpoint.save(state, path)
"""


def test_kill_9_while_saving_never_leaves_an_unloadable_checkpoint(tmp_path):
    path = tmp_path / "checkpoints" / "last.pt"
    for delay in (0.05, 0.13, 0.31, 0.52, 0.77):
        proc = subprocess.Popen([sys.executable, "-c", KILLER, str(path)], stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(delay)
        proc.kill()
        proc.wait()
        state = torch.load(path, weights_only=True)
        assert len(state["model_state"]) == 24 and state["step"] >= 0


def test_a_diverging_run_stops_with_status_diverged_and_keeps_the_good_checkpoint(run, tmp_path):
    out = tmp_path / "run"
    result = run(
        "model=BigramLM",
        "optimizer.base_lr=1e6",
        "optimizer.max_lr=1e6",
        "train.iters=40",
        "train.eval_interval=5",
        "train.eval_iters=2",
        "logger=none",
        f"hydra.run.dir={out}",
    )
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "diverged" in lines[0] and "optimizer.max_lr" in lines[0]
    summary = read_summary(out)
    assert summary["status"] == "diverged"
    state = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    assert all(torch.isfinite(t).all() for t in state["model_state"].values())


# A learning rate too small to move fp32 weights: the val loss never improves after step 0.
NO_PROGRESS = [
    "model=BigramLM",
    "optimizer.base_lr=1e-12",
    "optimizer.max_lr=1e-12",
    "optimizer.weight_decay=0",
    "train.iters=200",
    "train.eval_interval=10",
    "train.eval_iters=2",
    "train.patience=2",
    "logger=none",
]


def test_patience_stops_early_and_publishes_the_best_weights(run, tmp_path):
    out = tmp_path / "run"
    result = run(*NO_PROGRESS, f"hydra.run.dir={out}")
    assert result.returncode == 0, result.stderr
    summary = read_summary(out)
    assert summary["stopped_early"] is True and summary["steps"] == 20 and summary["best_step"] == 0
    best = torch.load(out / "checkpoints" / "best.pt", weights_only=True)["model_state"]
    published = torch.load(tmp_path / "models" / "BigramLM_default.pt", weights_only=True)
    assert all(torch.equal(best[k], published["model_state"][k]) for k in best)
    assert (published["step"], published["val_loss"]) == (0, summary["best_val_loss"])


def _tree_digest(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.is_file() and ".hydra" not in path.parts and path.name != "run.log":
            digest.update(str(path.relative_to(folder)).encode() + path.read_bytes())
    return digest.hexdigest()


BAD_INPUTS = [
    (["scale.num_heads=5"], "scale.embedding_dim=32 is not divisible by scale.num_heads=5"),
    (["scale.batch_size=0"], "scale.batch_size=0 must be positive"),
    (["scale.embedding_dim=-8"], "scale.embedding_dim=-8 must be positive"),
    (["train.iters=0"], "train.iters=0 must be positive"),
    (["optimizer.max_lr=-1"], "optimizer.max_lr=-1.0 must be positive"),
    (["train.iters=50", "train.eval_interval=100"], "train.eval_interval=100 is larger than train.iters=50"),
    (["scale.dropout=1.0"], "scale.dropout=1.0 is outside [0, 1)"),
    (["scale.context_length=100000"], "too few for scale.context_length=100000"),
    (["device=cuda:7"], "device=cuda:7 is not available"),
    (["device=tpu"], "device=tpu is not a device name"),
    (["data=csv", "data.path=missing.csv"], "data.path=missing.csv: no such file"),
    (["data=csv"], "data.path is not set"),
    (["data=csv", "data.path=empty.csv"], "is empty"),
    (["data=csv", "data.path=header_only.csv"], "has no rows with lyrics"),
    (["data=csv", "data.path=no_lyric.csv"], "has no 'Lyric' column"),
    (["data=csv", "data.path=songs.csv", "data.artist=Nobody"], "artists present: Juno Vale"),
    (["data=text", "data.path=latin1.txt"], "is not UTF-8"),
    (["data=kaggle", "data.cache_dir=kaggle_cache"], "Kaggle is not authenticated"),
    (["train.resume=true"], "holds no run to continue"),
]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A folder with an earlier finished run, its published model, and the bad files of the table."""
    root = tmp_path_factory.mktemp("bad_inputs")
    (root / "empty.csv").write_text("")
    (root / "header_only.csv").write_text(",Artist,Title,Album,Year,Date,Lyric\n")
    (root / "no_lyric.csv").write_text("Artist,Title\nJuno Vale,Exit Fourteen\n")
    (root / "songs.csv").write_text("Artist,Lyric\nJuno Vale,la la la\n")
    (root / "latin1.txt").write_bytes("caf\xe9 au lait".encode("latin-1"))
    assert run_py(*QUICK, f"hydra.run.dir={root / 'earlier'}", cwd=root).returncode == 0
    return root


@pytest.mark.parametrize("overrides,expected", BAD_INPUTS, ids=[" ".join(o) for o, _ in BAD_INPUTS])
def test_bad_input_gets_one_line_a_nonzero_exit_and_touches_nothing(workspace, overrides, expected):
    before = _tree_digest(workspace / "earlier"), _tree_digest(workspace / "models")
    env = {"HOME": str(workspace), "KAGGLE_CONFIG_DIR": str(workspace / "no_kaggle")}
    started = time.time()
    result = run_py(*overrides, "logger=none", f"hydra.run.dir={workspace / 'bad'}", cwd=workspace, env=env)
    assert time.time() - started < 60
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert expected in lines[0]
    assert "Traceback" not in result.stdout
    assert (_tree_digest(workspace / "earlier"), _tree_digest(workspace / "models")) == before
    assert not (workspace / "bad" / "checkpoints").exists()


def test_a_run_cut_between_its_last_checkpoint_and_its_summary_resumes_to_the_same_end(run, tmp_path):
    out = tmp_path / "run"
    args = ["model=BigramLM", "train.iters=40", "train.eval_interval=10", "train.eval_iters=2", "logger=none"]
    assert run(*args, f"hydra.run.dir={out}").returncode == 0
    finished = read_summary(out)
    (out / "summary.json").unlink()  # as if killed right after the final checkpoint
    resumed = run(*args, f"hydra.run.dir={out}", "train.resume=true")
    assert resumed.returncode == 0, resumed.stderr
    again = read_summary(out)
    assert again["status"] == "ok" and again["steps"] == 40
    assert again["final_val_loss"] == finished["final_val_loss"]


def test_an_early_stopped_run_stays_stopped_when_resumed(run, tmp_path):
    out = tmp_path / "run"
    assert run(*NO_PROGRESS, f"hydra.run.dir={out}").returncode == 0
    (out / "summary.json").unlink()
    assert run(*NO_PROGRESS, f"hydra.run.dir={out}", "train.resume=true").returncode == 0
    summary = read_summary(out)
    assert summary["steps"] == 20 and summary["stopped_early"] is True
    assert [int(r["step"]) for r in metrics(out)] == [0, 10, 20]
