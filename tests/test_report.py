"""The sweep report from hand-written sweep folders: summary.json and metrics.csv as training leaves them.

No training: the report only reads files, so every case here is a small folder built in tmp_path.
"""

import functools
import json
import math
import os
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import matplotlib
import pandas as pd
import pytest

from drakegpt import plots, report
from drakegpt.schema import ladder
from helpers.runs import typed_config

matplotlib.use("Agg")

STEP_0 = (4.6, 4.7)  # the untrained model's train and val loss


@functools.lru_cache(maxsize=None)
def preset(model: str) -> dict:
    """A model preset's switches as training records them ({} for a name conf/model/ does not have)."""
    return typed_config(f"model={model}")[1]["model"] if model in ladder() else {}


PARAMS = {"BigramLM": 841, "SingleHeadAttentionLM": 5517}
SHAPES = {"default": {"context_length": 8, "embedding_dim": 32}, "large": {"context_length": 256, "embedding_dim": 384}}


def write_job(
    sweep: Path,
    folder: str,
    *,
    model: str = "TransformerLM",
    scale: str = "default",
    seed: int = 1,
    overrides: Sequence[str] = (),
    variant: Optional[str] = "",
    val: float = 2.0,
    status: str = "ok",
    steps: int = 200,
    replicas: int = 1,
    final: bool = True,
) -> Path:
    """A run folder: metrics.csv evaluated at 0, steps/2 and steps (val loss falling to `val`, train 0.1
    below it) and the summary.json that training writes; variant=None writes a summary without a label (as
    before the label existed), final=False one without the last losses."""
    root = sweep / folder
    root.mkdir(parents=True, exist_ok=True)
    rows = [(0, *STEP_0), (steps // 2, val + 0.5, val + 0.6), (steps, val - 0.1, val)]
    pd.DataFrame(
        [{"step": s, "train_loss": t, "val_loss": v, "lr": 1e-3, "tokens_per_s": 5000.0, "elapsed_s": s / 10}
         for s, t, v in rows]
    ).to_csv(root / "metrics.csv", index=False)
    summary = {
        "model": model, "scale": scale, "variant": variant, "seed": seed, "params": PARAMS.get(model, 43344),
        "vocab_size": 29, "preset": preset(model), "shape": SHAPES[scale], "eval": "exact",
        "steps": steps, "final_train_loss": val - 0.1 if final else None, "final_val_loss": val if final else None,
        "best_val_loss": val if final else None, "best_step": steps, "tokens_per_s": 5000.0, "wall_s": 12.0,
        "device": "cpu", "threads": 1, "precision": "fp32", "replicas": replicas, "run_id": "0123abcd",
        "digest": "89abcdef", "overrides": [f"model={model}", f"seed={seed}", *overrides], "status": status,
        "stopped_early": False, "published": "", "sample": "",
    }  # fmt: skip
    if variant is None:
        del summary["variant"]
    if status != "ok":
        summary["error"] = f"{status} on purpose"
    (root / "summary.json").write_text(json.dumps(summary))
    return root


def failure(model: str, seed: int, overrides: Sequence[str], error: str) -> Dict:
    """The summary of a job that failed before training."""
    return {"model": model, "scale": "default", "seed": seed, "overrides": [f"model={model}", f"seed={seed}",
            *overrides], "status": "failed", "error": error}  # fmt: skip


def markdown_rows(text: str) -> List[List[str]]:
    """The cells of the body rows of the (one) markdown table in `text`."""
    lines = [line for line in text.splitlines() if line.startswith("|")]
    return [[c.strip() for c in line.strip("|").split("|")] for line in lines[2:]]


def ablation_sweep(sweep: Path, seeds=(1, 2, 3)) -> Dict[str, List[float]]:
    """experiment=ablation as it leaves its folder: the baseline and two variants, best val loss per seed."""
    losses = {
        ("baseline", ""): [1.80, 1.82, 1.84],
        ("no_norm", "norm=none"): [1.90, 1.95, 2.00],
        ("no_mlp", "feed_forward=linear"): [1.70, 1.75, 1.80],
    }
    for (name, label), values in losses.items():
        for seed, val in zip(seeds, values):
            write_job(sweep, f"experiment=ablation,seed={seed},variant={name}", seed=seed, variant=label, val=val,
                      overrides=["experiment=ablation", f"variant={name}", "train.threads=1"])
    return {label: values[: len(seeds)] for (_, label), values in losses.items()}


# ------------------------------------------------------------------------------------- variants and counting


@pytest.mark.parametrize("labelled", [True, False], ids=["stored-label", "summary-without-label"])
def test_a_scale_override_sweep_gives_a_row_per_value(tmp_path, labelled):
    for batch_size in (8, 64):
        for seed in (1, 2):
            label = f"scale.batch_size={batch_size},train.iters=200" if labelled else None
            write_job(tmp_path, f"model=BigramLM,scale.batch_size={batch_size},seed={seed}", model="BigramLM",
                      seed=seed, variant=label, val=2.0 + batch_size / 1000 + seed / 100,
                      overrides=[f"scale.batch_size={batch_size}", "train.iters=200", "train.threads=1"])
    table, _ = report.collect(tmp_path)
    assert sorted(set(table.variant)) == ["scale.batch_size=64", "scale.batch_size=8"]  # train.iters is shared
    rows = markdown_rows(report.markdown(table))
    assert [(r[0], r[2], r[4]) for r in rows] == [
        ("BigramLM", "scale.batch_size=64", "2"), ("BigramLM", "scale.batch_size=8", "2")
    ]  # fmt: skip


def test_a_refused_job_counts_once_after_the_sweep_ran_again(tmp_path):
    # A job that fails before training, run twice: the second run finds its own summary and files refused.json.
    bad = failure("MultiHeadAttentionLM", 1, ["scale.num_heads=3"], "scale.embedding_dim=32 is not divisible")
    bad_dir = tmp_path / "model=MultiHeadAttentionLM,scale.num_heads=3"
    bad_dir.mkdir()
    (bad_dir / "summary.json").write_text(json.dumps(bad))
    (bad_dir / "refused.json").write_text(json.dumps({**bad, "overrides": [*bad["overrides"], "train.resume=true"]}))
    # Two jobs mapped to one folder (data.path stays out of folder names): the second one is really refused.
    shared = write_job(tmp_path, "data=csv,model=BigramLM", model="BigramLM", variant="data=csv,data.path=a.csv",
                       overrides=["data=csv", "data.path=a.csv"])
    refused = failure("BigramLM", 1, ["data=csv", "data.path=b.csv"], "holds a run with a different config")
    (shared / "refused.json").write_text(json.dumps(refused))

    table, _ = report.collect(tmp_path)
    assert sorted(table.job) == [
        "data=csv,model=BigramLM", "data=csv,model=BigramLM (refused)", "model=MultiHeadAttentionLM,scale.num_heads=3"
    ]  # fmt: skip
    assert sorted(table.status) == ["failed", "failed", "ok"]
    variants = table.set_index("job").variant
    assert variants["data=csv,model=BigramLM"] == "data=csv,data.path=a.csv"
    assert variants["data=csv,model=BigramLM (refused)"] == "data=csv,data.path=b.csv"  # from its overrides
    failed_lines = [line for line in report.markdown(table).splitlines() if line.startswith("- `")]
    assert len(failed_lines) == 2 and sum("scale.num_heads=3" in line for line in failed_lines) == 1


def test_an_interrupted_job_shows_its_last_losses_marked(tmp_path):
    write_job(tmp_path, "model=TransformerLM", val=2.31, status="interrupted", steps=3000)
    # An older summary without the last losses: they come from the last row of metrics.csv.
    write_job(tmp_path, "model=ResidualBlocksLM", model="ResidualBlocksLM", val=2.05, status="interrupted",
              steps=1000, final=False)
    write_job(tmp_path, "model=BlocksLM", model="BlocksLM", val=9.0, status="diverged")
    failed = tmp_path / "model=BigramLM"
    failed.mkdir()
    (failed / "summary.json").write_text(json.dumps(failure("BigramLM", 1, [], "no such file")))

    table, curves = report.collect(tmp_path)
    text = report.markdown(table)
    cells = {r[0]: r for r in markdown_rows(text)}
    # Model, Scale, Params, Seeds, Final train loss, Final val loss, Best val loss, Tokens/s, Wall (s), Status
    assert cells["TransformerLM"][4:7] == [
        "2.210 (interrupted at step 3000)", "2.310 (interrupted at step 3000)", "2.310 (interrupted at step 3000)"
    ]  # fmt: skip
    assert cells["ResidualBlocksLM"][5] == "2.050 (interrupted at step 1000)"
    assert table.set_index("model").final_val_loss["ResidualBlocksLM"] == pytest.approx(2.05)
    assert cells["BlocksLM"][5] == "" and cells["BigramLM"][5] == ""  # failures show no loss, as before
    assert "- `model=BigramLM`: failed: no such file" in text
    assert "- `model=BlocksLM`: diverged: diverged on purpose" in text
    # Interrupted runs are plotted; a diverged one would drag its seeds' mean.
    assert set(curves.model) == {"TransformerLM", "ResidualBlocksLM"}


def test_replica_folders_are_rows_and_the_newest_attempt_stands(tmp_path):
    job = "model=TransformerLM,train.replicas=3"
    stale = tmp_path / job / "summary.json"  # an earlier attempt that failed before training
    stale.parent.mkdir()
    stale.write_text(json.dumps(failure("TransformerLM", 1, ["train.replicas=3"], "out of memory")))
    for seed in (1, 2, 3):
        write_job(tmp_path / job, f"seed={seed}", seed=seed, replicas=3, val=1.9 + seed / 100,
                  overrides=["train.replicas=3"])
    os.utime(stale, ns=(1, 1))

    table, curves = report.collect(tmp_path)
    assert list(table.job) == [f"{job}/seed=1", f"{job}/seed=2", f"{job}/seed=3"]
    assert list(table.seed) == [1, 2, 3] and set(table.status) == {"ok"}
    assert sorted(set(curves.job)) == list(table.job)
    (row,) = markdown_rows(report.markdown(table))
    assert row[3] == "3" and row[5] == "1.920 ± 0.010"

    os.utime(stale)  # now the failure is the job's latest attempt
    table, _ = report.collect(tmp_path)
    assert list(table.job) == [job] and list(table.status) == ["failed"]


# ----------------------------------------------------------------------------------------------- ablation


T_975_2 = 4.302652729749462  # the t distribution's 97.5% quantile with 2 degrees of freedom: 3 paired seeds


def test_ablation_files_pair_each_variant_with_the_baseline_seed_by_seed(tmp_path):
    losses = ablation_sweep(tmp_path)
    report.write_report(tmp_path)

    ablation = pd.read_csv(tmp_path / "ablation.csv").fillna({"variant": "", "verdict": ""})
    assert list(ablation.variant) == ["", "feed_forward=linear", "norm=none"]  # the baseline, then by difference
    for row in ablation.itertuples():
        values = pd.Series(losses[row.variant])
        assert row.seeds == 3 and row.params == 43344 and row.tokens_per_s == 5000
        assert row.best_val_loss_mean == pytest.approx(values.mean())
        assert row.best_val_loss_std == pytest.approx(values.std())
    # norm=none: per seed +0.10, +0.13, +0.16 -> mean 0.13, sd 0.03, half-width t * 0.03 / sqrt(3) = 0.07452
    norm = ablation[ablation.variant == "norm=none"].iloc[0]
    half = T_975_2 * 0.03 / math.sqrt(3)
    assert (norm.difference, norm.low, norm.high) == pytest.approx((0.13, 0.13 - half, 0.13 + half))
    assert norm.detectable == pytest.approx(half) and norm.method == "paired" and norm.verdict == "worse"
    # feed_forward=linear: -0.10, -0.07, -0.04 -> mean -0.07, the same half-width: the interval holds 0
    linear = ablation[ablation.variant == "feed_forward=linear"].iloc[0]
    assert (linear.low, linear.high) == pytest.approx((-0.07 - half, -0.07 + half))
    assert linear.verdict == "no effect detected"
    # p-values with 2 dof: 1 − t / sqrt(2 + t²); norm=none t = 0.13 / (0.03 / sqrt(3)) = 7.5056, linear t = 4.0415.
    assert norm.p_value == pytest.approx(0.017292, abs=1e-5) and linear.p_value == pytest.approx(0.056120, abs=1e-5)
    # Holm over the two: 0.0173 <= 0.05 / 2 holds; 0.0561 > 0.05 does not (nor was it decided alone).
    assert norm.holds_for_all and not linear.holds_for_all

    text = (tmp_path / "ablation.md").read_text()
    assert "paired seed by seed" in text and "t distribution" in text
    rows = {r[0]: r for r in markdown_rows(text)}
    assert rows["norm=none"][3:9] == ["1.950 ± 0.050", "+0.130 [+0.055, +0.205]", "worse", "±0.075", "0.017", "yes"]
    assert rows["feed_forward=linear"][4:9] == ["-0.070 [-0.145, +0.005]", "no effect detected", "±0.075", "0.056", ""]
    assert rows["baseline"][4] == "0 (baseline)"
    assert (tmp_path / "ablation.png").read_bytes()[:4] == b"\x89PNG"


def test_seeds_not_shared_with_the_baseline_are_compared_unpaired_by_welch(tmp_path):
    for seed, val in ((1, 1.80), (2, 1.82), (3, 1.84)):
        write_job(tmp_path, f"seed={seed}", seed=seed, val=val, overrides=["experiment=ablation"])
    for seed, val in ((4, 1.90), (5, 1.96)):
        write_job(tmp_path, f"seed={seed},variant=no_norm", seed=seed, val=val, variant="norm=none",
                  overrides=["experiment=ablation", "variant=no_norm"])
    ablation = report.ablation_table(report.collect(tmp_path)[0])
    norm = ablation[ablation.variant == "norm=none"].iloc[0]
    assert norm.method == "welch" and norm.difference == pytest.approx(1.93 - 1.82)


def test_an_ablation_with_one_seed_has_no_interval(tmp_path):
    ablation_sweep(tmp_path, seeds=(1,))
    table, _ = report.collect(tmp_path)
    ablation = report.ablation_table(table)
    assert list(ablation.seeds) == [1, 1, 1] and ablation.low.isna().all()
    assert set(ablation[~ablation.baseline].verdict) == {"too few seeds"}
    rows = {r[0]: r for r in markdown_rows(report.ablation_markdown(ablation))}
    assert rows["norm=none"][3:6] == ["1.900", "+0.100", "too few seeds"]


def test_distinct_jobs_are_never_pooled_however_alike_their_labels(tmp_path):
    """experiment=ablation model=BigramLM once gave seven variants the same empty label: 21 'seeds' in one row."""
    for variant in ("baseline", "no_norm", "no_dropout"):
        for seed in (1, 2):
            write_job(tmp_path, f"seed={seed},variant={variant}", model="BigramLM", seed=seed, variant="",
                      overrides=["experiment=ablation", f"variant={variant}"])
    table, _ = report.collect(tmp_path)
    rows = markdown_rows(report.markdown(table))
    assert len(rows) == 3 and all(r[3] == "2" for r in rows)  # three arms of two seeds each


def test_write_figures_returns_the_figures_it_wrote(tmp_path):
    ablation_sweep(tmp_path)
    table, curves = report.collect(tmp_path)
    written = report.write_figures(tmp_path, table, curves, report.ablation_table(table))
    assert [p.name for p in written] == ["train_loss.png", "val_loss.png", "loss.png", "ablation.png"]
    assert all(p.parent == tmp_path and p.read_bytes()[:4] == b"\x89PNG" for p in written)


def test_a_comparison_of_models_adds_their_bar_chart_and_loss_against_parameters(tmp_path):
    for i, model in enumerate(("BigramLM", "SingleHeadAttentionLM", "TransformerLM")):
        for seed in (1, 2):
            write_job(tmp_path, f"model={model},seed={seed}", model=model, seed=seed, val=2.4 - i / 10 + seed / 100)
    written = {p.name for p in report.write_report(tmp_path).figures}
    assert {"models.png", "params.png"} <= written
    table, _ = report.collect(tmp_path)
    assert list(dict.fromkeys(table.model)) == ["BigramLM", "SingleHeadAttentionLM", "TransformerLM"]  # the ladder


# ------------------------------------------------------------------------------------------------ figures


def test_the_overfitting_figure_draws_its_baseline_on_top(tmp_path):
    remedies = ["none", "early_stopping", "lr_decay", "more_dropout", "all"]
    shared = ["experiment=overfitting", "data=csv", "data.path=a.csv", "logger=none"]
    for i, remedy in enumerate(remedies):  # the default remedy is no part of a label: its job is the baseline
        write_job(tmp_path, f"experiment=overfitting,remedy={remedy}", scale="large", val=1.5 - i / 100,
                  variant="" if remedy == "none" else f"remedy={remedy}", overrides=[f"remedy={remedy}", *shared])
    table, curves = report.collect(tmp_path)
    fig = plots.curve_figure(curves, "val_loss", "val loss")
    lines = {line.get_label(): line for line in fig.axes[0].get_lines()}
    assert sorted(lines) == sorted(["baseline", *(f"remedy={r}" for r in remedies[1:])])
    assert lines["baseline"].get_zorder() == max(line.get_zorder() for line in lines.values())
    assert report.what_was_swept(curves) == "variants of TransformerLM (remedy)"
    ablation = report.ablation_table(table)
    assert ablation[ablation.baseline].variant.tolist() == [""]


def test_a_dozen_lines_have_distinct_colours_and_line_styles(tmp_path):
    lines = [(m, "") for m in ("BigramLM", "SingleHeadAttentionLM", "MultiHeadAttentionLM", "BlocksLM",
                               "ResidualBlocksLM", "TransformerLM", "BitNetLM")]  # fmt: skip
    lines += [("TransformerLM", v) for v in ("norm=none", "heads=one", "dropout=false", "residual=false", "b=1")]
    for i, (model, variant) in enumerate(lines):
        write_job(tmp_path, f"job{i}", model=model, variant=variant, val=2.0 + i / 50)
    _, curves = report.collect(tmp_path)
    drawn = plots.curve_figure(curves, "val_loss", "val loss").axes[0].get_lines()
    assert len(drawn) == 12
    assert len({line.get_color() for line in drawn}) == 12
    style = {line.get_label(): (line.get_color(), line.get_linestyle()) for line in drawn}
    assert "TransformerLM norm=none" in style
    assert style["ResidualBlocksLM"][0] != style["TransformerLM baseline"][0]
    for a, b in zip(drawn, drawn[1:]):  # neighbours in the legend differ in line style too
        assert a.get_linestyle() != b.get_linestyle()
    many = plots.line_styles(48)
    assert len({(s["color"], s["linestyle"]) for s in many}) == 48


def test_loss_comparison_has_dashed_train_solid_val_and_one_y_axis_for_the_presets(tmp_path):
    for scale, val in (("default", 2.0), ("large", 1.4)):
        for model in ("ResidualBlocksLM", "TransformerLM"):
            write_job(tmp_path, f"model={model},scale={scale}", model=model, scale=scale, val=val)
    _, curves = report.collect(tmp_path)
    fig = plots.comparison_figure(curves, "train (dashed) and val (solid) loss")
    default, large = fig.axes
    assert default.get_title() == "scale=default" and large.get_title() == "scale=large"
    assert default.get_shared_y_axes().joined(default, large)
    for ax in (default, large):
        lines = ax.get_lines()
        assert [line.get_linestyle() for line in lines] == ["--", "-", "--", "-"]
        assert lines[0].get_color() == lines[1].get_color() != lines[2].get_color() == lines[3].get_color()
    low, high = default.get_ylim()
    assert low < 1.3 and 2.0 < high  # both presets' curves fit the one range


def test_y_limits_leave_out_the_untrained_model(tmp_path):
    write_job(tmp_path, "seed=1", seed=1, val=2.0)
    write_job(tmp_path, "seed=2", seed=2, val=2.2)
    _, curves = report.collect(tmp_path)
    ax = plots.curve_figure(curves, "val_loss", "val loss").axes[0]
    low, high = ax.get_ylim()
    assert low < 2.0 and 2.8 < high < STEP_0[1]  # step 0's 4.7 would squash the rest
    (line,) = ax.get_lines()  # the mean of the two seeds
    assert list(line.get_ydata()) == pytest.approx([4.7, 2.7, 2.1])


def test_a_run_evaluated_only_at_step_0_is_drawn_in_range(tmp_path):
    root = write_job(tmp_path, "model=BigramLM", model="BigramLM")
    pd.read_csv(root / "metrics.csv").head(1).to_csv(root / "metrics.csv", index=False)
    _, curves = report.collect(tmp_path)
    ax = plots.curve_figure(curves, "val_loss", "val loss").axes[0]
    low, high = ax.get_ylim()
    assert low < STEP_0[1] < high
    assert ax.get_lines()[0].get_marker() == "o"  # a point, not an invisible one-point line


# ---------------------------------------------------------------------------------------------- the CLI


def test_report_cli_writes_the_comparison_and_no_ablation_without_variants(tmp_path):
    for model in ("BigramLM", "TransformerLM"):
        write_job(tmp_path, f"model={model}", model=model)
    assert report.main([str(tmp_path)]) == 0
    assert report.ablation_table(report.collect(tmp_path)[0]).empty
    written = {p.name for p in tmp_path.iterdir() if p.is_file()}
    assert written == {"comparison.csv", "summary.md", "train_loss.png", "val_loss.png", "loss.png", "models.png",
                       "params.png"}


@pytest.mark.parametrize("kind", ["file", "empty folder"])
def test_report_cli_refuses_what_is_not_a_sweep_folder_in_one_line(tmp_path, capsys, kind):
    target = tmp_path / "target"
    target.write_text("") if kind == "file" else target.mkdir()
    assert report.main([str(target)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and str(target) in lines[0]


@pytest.mark.parametrize("damage", ["summary.json", "summary list", "metrics.csv"])
def test_a_damaged_job_file_leaves_that_job_out_and_the_rest_in(tmp_path, caplog, damage):
    for model in ("BigramLM", "TransformerLM"):
        write_job(tmp_path, f"model={model}", model=model)
    damaged = tmp_path / "model=TransformerLM"
    if damage == "summary.json":
        (damaged / "summary.json").write_text('{"model": "Transf')
    elif damage == "summary list":
        (damaged / "summary.json").write_text("[1, 2]")
    else:
        (damaged / "metrics.csv").write_bytes(b"\xff\xfe\x00garbage\n\x00\x01,\n")
    assert report.main([str(tmp_path)]) == 0
    table, curves = report.collect(tmp_path)
    if damage == "metrics.csv":  # the job's row stands on its summary; only its curve is missing
        assert sorted(table.model) == ["BigramLM", "TransformerLM"]
        assert set(curves.model) == {"BigramLM"}
    else:
        assert list(table.model) == ["BigramLM"]
    assert str(damaged) in caplog.text and (tmp_path / "summary.md").is_file()


@pytest.mark.parametrize("field, value", [("seed", "one"), ("params", [1]), ("best_val_loss", "low")])
def test_a_summary_value_that_is_not_a_number_is_left_empty_with_a_warning(tmp_path, caplog, field, value):
    for seed in (1, 2):
        root = write_job(tmp_path, f"seed={seed}", seed=seed)
    summary = json.loads((root / "summary.json").read_text())
    (root / "summary.json").write_text(json.dumps({**summary, field: value}))
    assert report.main([str(tmp_path)]) == 0
    table, _ = report.collect(tmp_path)
    assert len(table) == 2 and table[field].isna().sum() == 1
    assert f"{field}={value!r} is not a number" in caplog.text


def test_a_metrics_cell_that_is_not_a_number_leaves_the_rest_of_the_curve(tmp_path, caplog):
    root = write_job(tmp_path, "seed=1")
    text = (root / "metrics.csv").read_text().splitlines()
    text[2] = text[2].replace(text[2].split(",")[2], "oops")
    (root / "metrics.csv").write_text("\n".join(text) + "\n")
    _, curves = report.collect(tmp_path)
    assert curves.val_loss.isna().sum() == 1 and len(curves) == 3 and "not numbers" in caplog.text


def test_a_sweep_folder_that_cannot_be_written_is_one_line(tmp_path, capsys):
    from helpers.filesystems import read_only

    write_job(tmp_path / "sweep", "seed=1")
    with read_only(tmp_path / "sweep"):
        assert report.main([str(tmp_path / "sweep")]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: cannot write the report into") and "read-only file system" in line


@pytest.mark.parametrize("field, value", [("model", 123), ("scale", None)])
def test_a_name_that_is_not_text_is_read_as_text_with_a_warning(tmp_path, caplog, field, value):
    for seed in (1, 2):
        root = write_job(tmp_path, f"seed={seed}", seed=seed)
    summary = json.loads((root / "summary.json").read_text())
    (root / "summary.json").write_text(json.dumps({**summary, field: value}))
    assert report.main([str(tmp_path)]) == 0
    assert len(report.collect(tmp_path)[0]) == 2
