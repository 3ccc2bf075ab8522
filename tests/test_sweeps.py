"""Hydra multiruns end to end: `python run.py -m ...` in a subprocess, then the sweep folder it leaves.

Every test runs the real entry point with tiny settings (QUICK) from a temporary working folder, so
registry/ lands there, and points hydra.sweep.dir at a temporary folder. Sweeps that several tests read
are module-scoped fixtures: each subprocess runs once. All of them train: the module is `slow`.
"""

import csv
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List

import pytest

from helpers.runs import ONE_THREAD, QUICK, ROOT, read_summary, run_py
from helpers.wandb_files import offline_runs
from drakegpt import registry, report
from drakegpt.schema import ladder

MODELS = ladder()

pytestmark = pytest.mark.slow
REPORT_FILES = ["comparison.csv", "summary.md", "train_loss.png", "val_loss.png", "loss.png"]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
FAST = QUICK


# ----------------------------------------------------------------------------------------------- helpers


def sweep(tmp: Path, *overrides: str, name: str = "sweep", **kwargs):
    """`python run.py -m overrides... hydra.sweep.dir=tmp/name` from tmp; returns (result, sweep dir)."""
    sweep_dir = tmp / name
    result = run_py(*overrides, f"hydra.sweep.dir={sweep_dir}", cwd=tmp, multirun=True, **kwargs)
    return result, sweep_dir


def output(result) -> str:
    return f"exit {result.returncode}\n--- stdout\n{result.stdout[-3000:]}\n--- stderr\n{result.stderr[-6000:]}"


def rows(sweep_dir: Path) -> List[Dict[str, str]]:
    with open(sweep_dir / "comparison.csv", newline="") as f:
        return list(csv.DictReader(f))


def job_dirs(sweep_dir: Path) -> List[Path]:
    return sorted(p.parent for p in sweep_dir.glob("*/summary.json"))


def job(sweep_dir: Path, *parts: str) -> Path:
    """The one job folder whose name contains every part, e.g. job(d, "model=BigramLM", "seed=2")."""
    found = [d for d in job_dirs(sweep_dir) if all(p in d.name for p in parts)]
    assert len(found) == 1, f"{parts}: {[d.name for d in job_dirs(sweep_dir)]}"
    return found[0]


def png_width(path: Path) -> int:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, f"{path} is not a PNG"
    assert len(data) > 5000, f"{path} is only {len(data)} bytes"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">I", data[16:20])[0]


def assert_report(sweep_dir: Path, n_rows: int) -> List[Dict[str, str]]:
    for name in REPORT_FILES:
        assert (sweep_dir / name).is_file(), f"{name} missing from {sorted(p.name for p in sweep_dir.iterdir())}"
    png_width(sweep_dir / "train_loss.png")
    png_width(sweep_dir / "val_loss.png")
    table = rows(sweep_dir)
    assert len(table) == n_rows, table
    assert list(table[0]) == report.COLUMNS
    return table


def markdown_row(sweep_dir: Path, model: str, scale: str = "default") -> List[str]:
    """The cells of summary.md's table row for one model and scale."""
    for line in (sweep_dir / "summary.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and len(cells) > 2 and cells[0] == model and cells[1] == scale:
            return cells
    raise AssertionError(f"no {model}/{scale} row in summary.md:\n{(sweep_dir / 'summary.md').read_text()}")


def snapshot(paths) -> Dict[Path, tuple]:
    return {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in paths}


# ------------------------------------------------------------------------------------- shared sweeps


@pytest.fixture(scope="module")
def all_models(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("all_models")
    result, sweep_dir = sweep(tmp, "model=glob(*)", *FAST)
    return result, sweep_dir


@pytest.fixture(scope="module")
def seeds(tmp_path_factory):
    """Three seeds of BigramLM, then the identical command again (the jobs are finished: all skipped)."""
    tmp = tmp_path_factory.mktemp("seeds")
    overrides = ["model=BigramLM", "seed=1,2,3", *FAST]
    first, sweep_dir = sweep(tmp, *overrides)
    assert first.returncode == 0, output(first)
    report = {name: (sweep_dir / name).read_bytes() for name in ("comparison.csv", "summary.md")}
    files = [
        f for d in job_dirs(sweep_dir) for f in (d / "metrics.csv", d / "summary.json", d / "checkpoints" / "last.pt")
    ]
    before = snapshot(files)
    time.sleep(0.05)  # a rewrite within the same clock tick could keep the mtime
    again, _ = sweep(tmp, *overrides)
    return {"first": first, "again": again, "dir": sweep_dir, "report": report, "before": before}


@pytest.fixture(scope="module")
def failing(tmp_path_factory):
    """Four jobs: num_heads=3 fails validation (32 % 3), max_lr=1e6 diverges, the fourth finishes ok."""
    tmp = tmp_path_factory.mktemp("failing")
    result, sweep_dir = sweep(
        tmp, "model=MultiHeadAttentionLM", "scale.num_heads=3,4", "optimizer.max_lr=5e-3,1e6", *FAST
    )
    return result, sweep_dir


# ------------------------------------------------------------------------------- 1. all models, scales


def test_glob_sweeps_all_seven_models_and_writes_the_report(all_models):
    result, sweep_dir = all_models
    assert result.returncode == 0, output(result)
    table = assert_report(sweep_dir, len(MODELS))
    assert sorted(r["model"] for r in table) == sorted(MODELS)
    assert {r["status"] for r in table} == {"ok"}, table
    assert {r["scale"] for r in table} == {"default"}
    assert f"sweep: {len(MODELS)} of {len(MODELS)} jobs done" in result.stdout  # glob(*) counted as Hydra expands it
    for r in table:
        assert int(float(r["params"])) > 0
        for column in ("final_train_loss", "final_val_loss", "best_val_loss", "tokens_per_s", "wall_s"):
            assert float(r[column]) > 0, (column, r)

    for model in MODELS:
        cells = markdown_row(sweep_dir, model)
        assert cells[-1] == "ok", cells

    dirs = job_dirs(sweep_dir)
    assert len(dirs) == len(MODELS), [d.name for d in dirs]
    for model in MODELS:
        d = job(sweep_dir, f"model={model},")
        assert "train.iters=20" in d.name  # readable: named after the overrides
        assert (d / "metrics.csv").is_file() and (d / "checkpoints" / "last.pt").is_file()
        summary = read_summary(d)
        assert summary["model"] == model and summary["status"] == "ok" and summary["steps"] == 20
        with open(d / "metrics.csv", newline="") as f:
            assert [int(r["step"]) for r in csv.DictReader(f)] == [0, 10, 20]
        (entry,) = registry.entries(sweep_dir.parent / "registry", model, "default")  # published from the tmp cwd
        assert str(entry.weights) == summary["published"]


def test_scale_sweep_gives_a_row_and_a_panel_per_preset(tmp_path, all_models):
    result, sweep_dir = sweep(
        tmp_path,
        "model=BigramLM,MultiHeadAttentionLM",
        "scale=default,large",
        "train.iters=2",
        "train.eval_interval=1",
        "train.eval_iters=1",
        "logger=none",
        ONE_THREAD,
    )
    assert result.returncode == 0, output(result)
    table = assert_report(sweep_dir, 4)
    assert sorted((r["model"], r["scale"]) for r in table) == sorted(
        (m, s) for m in ("BigramLM", "MultiHeadAttentionLM") for s in ("default", "large")
    )
    assert {r["status"] for r in table} == {"ok"}
    large = {r["model"]: int(float(r["params"])) for r in table if r["scale"] == "large"}
    default = {r["model"]: int(float(r["params"])) for r in table if r["scale"] == "default"}
    assert large["MultiHeadAttentionLM"] > default["MultiHeadAttentionLM"]  # the real large preset
    for model in ("BigramLM", "MultiHeadAttentionLM"):
        for scale in ("default", "large"):
            markdown_row(sweep_dir, model, scale)
    # One panel per preset: the figure is as many panels wide as there are presets.
    one_panel = png_width(all_models[1] / "val_loss.png")
    for name in ("train_loss.png", "val_loss.png"):
        assert png_width(sweep_dir / name) > 1.5 * one_panel


# ------------------------------------------------------------------------------ 2. failures, divergence


def test_invalid_preset_fails_its_job_and_the_sweep_goes_on(failing):
    result, sweep_dir = failing
    assert result.returncode != 0, output(result)
    assert "did not finish ok" in result.stderr
    table = assert_report(sweep_dir, 4)
    bad = [r for r in table if "scale.num_heads=3" in r["job"]]
    assert len(bad) == 2
    for r in bad:
        assert r["status"] == "failed", r
        assert "scale.num_heads" in r["error"] and "divisible" in r["error"], r
        summary = read_summary(sweep_dir / r["job"])
        assert summary["status"] == "failed" and "scale.num_heads" in summary["error"]
    good = [r for r in table if "scale.num_heads=4" in r["job"] and "optimizer.max_lr=0.005" in r["job"]]
    assert len(good) == 1 and good[0]["status"] == "ok", table
    assert read_summary(sweep_dir / good[0]["job"])["steps"] == 20

    text = (sweep_dir / "summary.md").read_text()
    assert "Failed jobs:" in text
    for r in bad:
        assert f"`{r['job']}`: failed:" in text, text


def test_diverging_job_is_recorded_as_diverged_while_the_others_finish(failing):
    result, sweep_dir = failing
    table = rows(sweep_dir)
    diverged = [r for r in table if "scale.num_heads=4" in r["job"] and "optimizer.max_lr=1000000.0" in r["job"]]
    assert len(diverged) == 1, [r["job"] for r in table]
    r = diverged[0]
    assert r["status"] == "diverged", r
    assert "lower optimizer.max_lr" in r["error"], r
    summary = read_summary(sweep_dir / r["job"])
    assert summary["status"] == "diverged"
    assert 0 < summary["steps"] < 20  # it did stop before the end
    assert (sweep_dir / r["job"] / "checkpoints" / "last.pt").is_file()  # the last good checkpoint is kept
    assert f"`{r['job']}`: diverged:" in (sweep_dir / "summary.md").read_text()
    assert [x["status"] for x in table].count("ok") == 1  # the ok job ran after or before it, regardless


# ---------------------------------------------------------------------------------- 3. skip and resume


def test_rerunning_a_finished_sweep_skips_every_job(seeds):
    again, sweep_dir = seeds["again"], seeds["dir"]
    assert again.returncode == 0, output(again)
    assert len(seeds["before"]) == 9
    for path, (content, mtime) in seeds["before"].items():
        assert path.read_bytes() == content, f"{path} changed"
        assert path.stat().st_mtime_ns == mtime, f"{path} was rewritten"
    for d in job_dirs(sweep_dir):
        log = (d / "run.log").read_text()
        assert "already finished" in log, log
        assert "resuming" not in log
        assert log.count("step 20: train loss") == 1, log  # trained once
    # The report is rebuilt from the same summaries: same table.
    assert (sweep_dir / "comparison.csv").read_bytes() == seeds["report"]["comparison.csv"]


def _popen_sweep(cwd: Path, overrides: List[str], log: Path) -> subprocess.Popen:
    cmd = [sys.executable, str(ROOT / "run.py"), "-m", *overrides]
    env = {**os.environ, "WANDB_MODE": "offline"}
    env.pop("HYDRA_FULL_ERROR", None)
    with open(log, "w") as f:
        return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=f, stderr=subprocess.STDOUT)


def _eval_steps(metrics: Path) -> List[int]:
    if not metrics.is_file():
        return []
    with open(metrics, newline="") as f:
        return [int(r["step"]) for r in csv.DictReader(f)]


def test_cut_off_sweep_resumes_the_interrupted_job_exactly(tmp_path):
    iters, every = 200, 50
    overrides = [
        "model=TransformerLM",
        "seed=1,2",
        f"train.iters={iters}",
        f"train.eval_interval={every}",
        "train.eval_iters=2",
        "logger=none",
        ONE_THREAD,
    ]
    sweep_dir = tmp_path / "cut"
    proc = _popen_sweep(tmp_path, [*overrides, f"hydra.sweep.dir={sweep_dir}"], tmp_path / "cut.log")
    try:
        deadline = time.monotonic() + 240
        second = None
        while proc.poll() is None and time.monotonic() < deadline:
            found = [d for d in sweep_dir.glob("*seed=2*") if d.is_dir()]
            second = found[0] if found else None
            # The first job is done and the second has evaluated and checkpointed past step 0.
            if (
                second is not None
                and every in _eval_steps(second / "metrics.csv")
                and (second / "checkpoints" / "last.pt").is_file()
            ):
                break
            time.sleep(0.02)
        assert proc.poll() is None, (
            "the sweep ended before it could be interrupted:\n" + (tmp_path / "cut.log").read_text()
        )
        time.sleep(0.05)  # most likely between two evaluations; at one is fine too
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    log_text = (tmp_path / "cut.log").read_text()
    assert rc != 0, log_text
    assert "stopped by SIGTERM" in log_text, log_text
    first = job(sweep_dir, "seed=1")
    assert read_summary(first)["status"] == "ok"
    cut = read_summary(second)
    assert cut["status"] == "interrupted", cut
    assert every <= cut["steps"] < iters, cut
    first_files = snapshot([first / "metrics.csv", first / "summary.json"])

    result = run_py(*overrides, f"hydra.sweep.dir={sweep_dir}", cwd=tmp_path, multirun=True)
    assert result.returncode == 0, output(result)
    for path, (content, mtime) in first_files.items():
        assert path.read_bytes() == content and path.stat().st_mtime_ns == mtime, f"{path} was rewritten"
    assert "already finished" in (first / "run.log").read_text()
    second_log = (second / "run.log").read_text()
    assert "resuming" in second_log, second_log
    resumed = read_summary(second)
    assert resumed["status"] == "ok" and resumed["steps"] == iters, resumed
    assert resumed["run_id"] == cut["run_id"]
    assert _eval_steps(second / "metrics.csv") == list(range(0, iters + 1, every))
    table = rows(sweep_dir)
    assert len(table) == 2 and {r["status"] for r in table} == {"ok"}

    # The same job run straight through, in another sweep folder: the same numbers, to the last bit.
    straight_result, straight_dir = sweep(
        tmp_path, *[o if o != "seed=1,2" else "seed=2" for o in overrides], name="straight"
    )
    assert straight_result.returncode == 0, output(straight_result)
    straight_job = straight_dir / second.name
    straight = read_summary(straight_job)
    for key in ("final_train_loss", "final_val_loss", "best_val_loss", "best_step", "steps"):
        assert resumed[key] == straight[key], (key, resumed[key], straight[key])

    def losses(d):
        with open(d / "metrics.csv", newline="") as f:
            return [(r["step"], r["train_loss"], r["val_loss"], r["lr"]) for r in csv.DictReader(f)]

    assert losses(second) == losses(straight_job)


# ------------------------------------------------------------------------------------------ 4. launchers


@pytest.mark.parametrize(
    "launcher",
    [
        ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"],
        ["hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10"],
    ],
    ids=["joblib", "submitit_local"],
)
def test_other_launchers_write_the_same_report(tmp_path, launcher):
    # joblib: no train.threads, so that the launcher's share of the cores is what the jobs get.
    threads = [] if "joblib" in launcher[0] else [ONE_THREAD]
    result, sweep_dir = sweep(tmp_path, "model=BigramLM", "seed=1,2", *QUICK, *threads, *launcher)
    assert result.returncode == 0, output(result)
    table = assert_report(sweep_dir, 2)
    assert {r["status"] for r in table} == {"ok"}
    assert sorted(r["seed"] for r in table) == ["1", "2"]
    for d in job_dirs(sweep_dir):
        assert "model=BigramLM" in d.name
        assert (d / "metrics.csv").is_file() and (d / "checkpoints" / "last.pt").is_file()
        if "joblib" in launcher[0]:  # two parallel jobs share the cores
            assert read_summary(d)["threads"] == max(1, (os.cpu_count() or 1) // 2)


# ----------------------------------------------------------------------------------------- 5. seeds


def test_several_seeds_become_mean_plus_minus_std(seeds):
    first, sweep_dir = seeds["first"], seeds["dir"]
    assert first.returncode == 0, output(first)
    table = rows(sweep_dir)
    assert len(table) == 3
    assert sorted(r["seed"] for r in table) == ["1", "2", "3"]
    assert {r["model"] for r in table} == {"BigramLM"} and {r["status"] for r in table} == {"ok"}
    assert len({r["final_val_loss"] for r in table}) == 3  # the seeds really differ
    cells = markdown_row(sweep_dir, "BigramLM")
    assert "3" in cells  # the Seeds column
    assert sum("±" in c for c in cells) >= 3, cells  # the loss columns at least
    summary_md = seeds["report"]["summary.md"].decode()
    assert summary_md.count("BigramLM") == 1, summary_md  # one row for the three seeds


# ----------------------------------------------------------------------------------------- 6. report CLI


def test_report_cli_rebuilds_the_files_from_a_sweep_folder(tmp_path, all_models):
    result, original = all_models
    assert result.returncode == 0, output(result)
    copy = tmp_path / "copied_back"
    shutil.copytree(original, copy)
    for name in REPORT_FILES:
        (copy / name).unlink()
    cli = subprocess.run(
        [sys.executable, "-m", "drakegpt.report", str(copy)], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert cli.returncode == 0, output(cli)
    assert_report(copy, len(MODELS))
    assert (copy / "comparison.csv").read_text() == (original / "comparison.csv").read_text()
    assert (copy / "summary.md").read_text() == (original / "summary.md").read_text()


def test_report_cli_on_a_folder_without_jobs_fails_with_one_line(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    cli = subprocess.run(
        [sys.executable, "-m", "drakegpt.report", str(empty)], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert cli.returncode != 0, output(cli)
    lines = [line for line in cli.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, cli.stderr
    assert "no job" in lines[0] and str(empty) in lines[0]
    assert "Traceback" not in cli.stdout + cli.stderr


# ----------------------------------------------------------------------------------------------- 7. W&B


def test_wandb_runs_of_a_sweep_name_themselves_share_a_group_and_get_a_comparison_run(tmp_path):
    overrides = [o for o in FAST if not o.startswith("logger=")]
    env = {"WANDB_DATA_DIR": str(tmp_path / "wandb-data"), "WANDB_CACHE_DIR": str(tmp_path / "wandb-cache")}
    result, sweep_dir = sweep(tmp_path, "model=BigramLM", "seed=1,2", "remedy=none,more_dropout", *overrides,
                              "logger=wandb", env=env)
    assert result.returncode == 0, output(result)
    runs = [run for d in job_dirs(sweep_dir) for run in offline_runs(d)]
    assert len(runs) == 4
    assert {run.group for run in runs} == {sweep_dir.name}  # null logger.group: named by the sweep, not a path
    assert len({run.name for run in runs}) == 4  # unique: model, preset, variant, seed
    named = [run.name for run in runs if run.name.startswith("BigramLM-default-remedy=more_dropout")]
    assert sorted(name[-3:] for name in named) == ["-s1", "-s2"]
    for run in runs:
        assert run.job_type == "train" and "BigramLM" in run.tags
        assert run.config["choices"]["remedy"] in ("none", "more_dropout")  # a _global_ group's choice, logged
        assert [a["type"] for a in run.artifacts] == ["model"]  # the published weights travel with the run
    (comparison,) = offline_runs(sweep_dir / "wandb") if (sweep_dir / "wandb").exists() else [None]
    assert comparison is not None and comparison.job_type == "report" and comparison.group == sweep_dir.name
    tables = list((comparison.folder / "files" / "media" / "table").rglob("comparison*.table.json"))
    assert tables, list(comparison.folder.rglob("*"))


def test_two_jobs_in_one_folder_fail_loudly_instead_of_hiding(tmp_path):
    # data.path stays out of folder names (it would nest folders), so sweeping it maps both jobs to one folder.
    for name in ("a.csv", "b.csv"):
        (tmp_path / name).write_text("Artist,Lyric\n" + f"X,{name} la di da dum\n" * 400)
    result, sweep_dir = sweep(tmp_path, *FAST, "model=BigramLM", "data=csv", "data.path=a.csv,b.csv")
    assert result.returncode != 0, output(result)
    statuses = sorted(r["status"] for r in rows(sweep_dir))
    assert statuses == ["failed", "ok"], rows(sweep_dir)
    refused = next(r for r in rows(sweep_dir) if r["status"] == "failed")
    assert refused["job"].endswith("(refused)") and "different config" in refused["error"]


# ----------------------------------------------------------------------------------- 8. variants and experiments


def test_a_value_with_slashes_names_one_job_folder_inside_the_sweep(tmp_path):
    songs = tmp_path / "songs.csv"
    songs.write_text("Artist,Lyric\nJuno Vale,la la la\n")
    result, sweep_dir = sweep(tmp_path, "data=csv", f"data.path={songs}", "data.artist=../../escape", *FAST)
    assert result.returncode != 0, output(result)
    (folder,) = job_dirs(sweep_dir)
    assert folder.parent == sweep_dir and folder.name.startswith("data.artist=..%2F..%2Fescape,"), folder
    assert [r["status"] for r in rows(sweep_dir)] == ["failed"]  # its failure is in the comparison
    assert sorted(p.name for p in tmp_path.iterdir()) == ["registry", "songs.csv", "sweep"]


def test_a_scale_key_sweep_is_two_variants_with_their_own_weights(tmp_path):
    result, sweep_dir = sweep(tmp_path, "model=BigramLM", "scale.batch_size=8,64", *FAST)
    assert result.returncode == 0, output(result)
    table = rows(sweep_dir)
    assert sorted(r["variant"] for r in table) == ["scale.batch_size=64", "scale.batch_size=8"]
    text = (sweep_dir / "summary.md").read_text()
    assert "scale.batch_size=8" in text and "scale.batch_size=64" in text
    published = {read_summary(d)["published"] for d in job_dirs(sweep_dir)}
    assert len(published) == 2 and all(Path(p).is_file() for p in published)


def test_the_ablation_experiment_writes_its_table_and_chart(tmp_path):
    result, sweep_dir = sweep(tmp_path, "experiment=ablation", "train.replicas=2", "train.iters=20",
                              "train.eval_interval=10", "train.eval_iters=1", "logger=none", "train.sample_length=0",
                              ONE_THREAD)
    assert result.returncode == 0, output(result)
    for name in ("ablation.csv", "ablation.md", "ablation.png"):
        assert (sweep_dir / name).is_file(), name
    with open(sweep_dir / "ablation.csv", newline="") as f:
        ablation = list(csv.DictReader(f))
    assert sorted(r["variant"] for r in ablation) == sorted(
        ["", "norm=none", "dropout=false", "residual=false", "projection=false", "feed_forward=linear", "heads=one",
         "final_norm=none"]
    )
    assert all(r["seeds"] == "2" for r in ablation)
    assert len(rows(sweep_dir)) == 16


def test_replicas_in_a_sweep_leave_ordinary_runs(tmp_path):
    result, sweep_dir = sweep(tmp_path, "model=BlocksLM,TransformerLM", "train.replicas=2", *FAST)
    assert result.returncode == 0, output(result)
    table = rows(sweep_dir)
    assert sorted((r["model"], r["seed"]) for r in table) == [
        ("BlocksLM", "1337"), ("BlocksLM", "1338"), ("TransformerLM", "1337"), ("TransformerLM", "1338")]
    assert all(r["job"].split("/")[-1] in ("seed=1337", "seed=1338") for r in table)
    header = next(line for line in (sweep_dir / "summary.md").read_text().splitlines() if line.startswith("|"))
    seeds = [c.strip() for c in header.strip("|").split("|")].index("Seeds")
    assert markdown_row(sweep_dir, "TransformerLM")[seeds] == "2"  # one row, mean ± std


# --------------------------------------------------------------------------------------------- 9. Ctrl-C


@pytest.mark.parametrize("launcher", [[], ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]],
                         ids=["basic", "joblib"])
def test_one_ctrl_c_stops_a_sweep_with_one_line_and_the_finished_jobs_compared(tmp_path, launcher):
    sweep_dir = tmp_path / "stopped"
    overrides = ["model=TransformerLM", "seed=1,2,3", "train.iters=200", "train.eval_interval=50",
                 "train.eval_iters=1", "logger=none", "train.sample_length=0", ONE_THREAD, *launcher,
                 f"hydra.sweep.dir={sweep_dir}"]
    cmd = [sys.executable, str(ROOT / "run.py"), "-m", *overrides]
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not any(len(_eval_steps(m)) >= 2 for m in sweep_dir.glob("*/metrics.csv")):
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the whole process group
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err, err
    assert [line for line in err.splitlines() if line.startswith("sweep stopped")], err
    assert (sweep_dir / "comparison.csv").is_file()
    statuses = [r["status"] for r in rows(sweep_dir)]
    assert "interrupted" in statuses and len(statuses) < 3  # jobs not yet started were not started
    again = run_py(*overrides, cwd=tmp_path, multirun=True)
    assert again.returncode == 0, output(again)
    assert sorted(r["status"] for r in rows(sweep_dir)) == ["ok"] * 3
