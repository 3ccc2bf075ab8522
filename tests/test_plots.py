"""The report's figures, from small hand-made tables: what is drawn, in which order and style, and that nothing
is cut at the size the report saves them."""

import io
import math

import pandas as pd
import pytest
from matplotlib.colors import to_rgba
from matplotlib.container import BarContainer, ErrorbarContainer
from matplotlib.text import Text

from drakegpt import plots

LONG = "norm=rmsnorm,final_norm=rmsnorm,optimizer=muon,scale.dropout=0.35"
VARIANTS = ["", "norm=none", "norm=rmsnorm", "final_norm=none", "feed_forward=linear", "heads=one", "dropout=false",
            "residual=false", "position=rotary", "activation=gelu", "tied_embeddings=true", "bitlinear=true",
            "projection=false", "optimizer=muon", "lr=0.003", "scale.dropout=0.35", LONG]  # fmt: skip
# (model, rank, params): ranks against the alphabet, so that an order by name would show.
LADDER = [("ZetaLM", 0, 6400), ("BigramLM", 1, 8528), ("AlphaLM", 2, 43344)]


def curves(lines, scales=(("default", 0),), seeds=(1, 2)):
    """Loss curves for (model, rank, variant) lines: 4.6 at step 0, then down to a line's own level."""
    rows = []
    for scale, scale_rank in scales:
        for i, (model, rank, variant) in enumerate(lines):
            for seed in seeds:
                for step, loss in ((0, 4.6), (100, 2.5 + i / 100 + seed / 50), (200, 2.0 + i / 100 + seed / 50)):
                    rows.append({"job": f"{model},{variant},{seed}", "model": model, "scale": scale, "variant": variant,
                                 "seed": seed, "step": step, "train_loss": loss - 0.1, "val_loss": loss, "rank": rank,
                                 "scale_rank": scale_rank})  # fmt: skip
    return pd.DataFrame(rows)


def jobs(losses, scales=(("default", 0),)):
    """One table row per job: losses[model] holds its seeds' final val losses; the large preset adds 0.5 nats."""
    rows = []
    for scale, scale_rank in scales:
        for model, rank, params in LADDER:
            for seed, loss in enumerate(losses[model], start=1):
                rows.append({"model": model, "scale": scale, "variant": "", "seed": seed, "status": "ok",
                             "params": params * (1 + scale_rank), "final_val_loss": loss - scale_rank / 2,
                             "best_val_loss": loss, "rank": rank, "scale_rank": scale_rank})  # fmt: skip
    # Neither a variant nor a failed run is one of the models' own results.
    rows.append({**rows[0], "variant": "norm=none", "final_val_loss": 9.0})
    rows.append({**rows[0], "status": "failed", "final_val_loss": 9.0})
    return pd.DataFrame(rows)


def ablation(variants):
    """An ablation table of one model and preset: (variant, difference, low, high, verdict) per variant."""
    rows = [{"model": "TransformerLM", "scale": "default", "variant": "", "baseline": True, "seeds": 3,
             "best_val_loss_mean": 1.862, "difference": 0.0, "low": math.nan, "high": math.nan, "verdict": ""}]
    for variant, difference, low, high, verdict in variants:
        rows.append({"model": "TransformerLM", "scale": "default", "variant": variant, "baseline": False, "seeds": 3,
                     "best_val_loss_mean": 1.862 + difference, "difference": difference, "low": low, "high": high,
                     "verdict": verdict})  # fmt: skip
    return pd.DataFrame(rows)


def texts_cut(fig):
    """The texts drawn at least partly outside the figure once it is saved as the report saves it."""
    fig.set_dpi(120)  # measured at the dpi it is drawn with, as it was laid out
    fig.savefig(io.BytesIO(), dpi=120)
    ticks, drawn = set(), []
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            low, high = sorted(axis.get_view_interval())
            for tick in axis.get_major_ticks() + axis.get_minor_ticks():
                ticks.add(tick.label1)
                drawn += [tick.label1] if low <= tick.get_loc() <= high else []  # out of view: not drawn
    drawn += [t for t in fig.findobj(Text) if t not in ticks]
    inside = fig.bbox.padded(1)  # a pixel of rounding
    boxes = [(t.get_text(), t.get_window_extent()) for t in drawn if t.get_visible() and t.get_text().strip()]
    return [text for text, box in boxes if not inside.contains(box.x0, box.y0) or not inside.contains(box.x1, box.y1)]


def test_a_baseline_among_16_variants_is_the_thick_black_line_on_top():
    fig = plots.curve_figure(curves([("TransformerLM", 5, v) for v in VARIANTS]), "val_loss", "val loss")
    (ax,) = fig.axes
    lines = ax.get_lines()
    (baseline,) = [line for line in lines if line.get_label() == "baseline"]
    others = [line for line in lines if line is not baseline]
    assert len(others) == 16 and to_rgba(baseline.get_color()) == to_rgba("black")
    assert baseline.get_linewidth() > max(line.get_linewidth() for line in others)
    assert baseline.get_zorder() > max(line.get_zorder() for line in others)
    assert not any(to_rgba(line.get_color()) == to_rgba("black") for line in others)
    assert len({(line.get_color(), line.get_linestyle()) for line in others}) == 16
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == ["baseline"] + sorted(VARIANTS[1:])
    assert texts_cut(fig) == []


def test_the_comparison_keeps_the_baseline_on_top_for_both_splits():
    fig = plots.comparison_figure(curves([("TransformerLM", 5, v) for v in VARIANTS]), "train and val loss")
    lines = fig.axes[0].get_lines()
    thick = [line for line in lines if line.get_linewidth() == max(line.get_linewidth() for line in lines)]
    assert [line.get_linestyle() for line in thick] == ["--", "-"]  # train, val
    assert all(to_rgba(line.get_color()) == to_rgba("black") for line in thick)
    # Past a dozen lines the colours come round again; the markers then tell the lines apart.
    assert len({(line.get_color(), line.get_marker()) for line in lines if line not in thick}) == 16


def test_lines_follow_the_ladder_and_panels_the_presets():
    lines = [(model, rank, "") for model, rank, _ in LADDER]
    fig = plots.curve_figure(curves(lines, scales=(("large", 1), ("small", 0))), "val_loss", "val loss")
    assert [ax.get_title() for ax in fig.axes] == ["scale=small", "scale=large"]  # by scale_rank, not by name
    assert [line.get_label() for line in fig.axes[0].get_lines()] == ["ZetaLM", "BigramLM", "AlphaLM"]
    assert len({line.get_linewidth() for line in fig.axes[0].get_lines()}) == 1  # no variants: no baseline stands out
    assert fig.axes[0].get_shared_y_axes().joined(fig.axes[0], fig.axes[1])


def test_a_model_with_variants_among_others_labels_its_baseline():
    lines = [("BigramLM", 1, ""), ("TransformerLM", 5, ""), ("TransformerLM", 5, "norm=none")]
    fig = plots.curve_figure(curves(lines), "val_loss", "val loss")
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["BigramLM", "TransformerLM baseline",
                                                                   "TransformerLM norm=none"]  # fmt: skip


def test_y_limits_leave_out_the_untrained_model():
    ax = plots.curve_figure(curves([("TransformerLM", 5, "")]), "val_loss", "val loss").axes[0]
    low, high = ax.get_ylim()
    assert low < 2.02 and 2.54 < high < 4.0  # seeds' means 2.03 and 2.53 in, step 0's 4.6 out
    (line,) = ax.get_lines()
    assert list(line.get_ydata()) == pytest.approx([4.6, 2.53, 2.03])


def test_a_variant_that_does_not_train_is_named_above_the_range_not_squashing_the_rest():
    variants = ["", "norm=none", "heads=one", "residual=false"]
    table = curves([("TransformerLM", 5, v) for v in variants])
    table.loc[(table["variant"] == "residual=false") & (table["step"] > 0), "val_loss"] += 1.0
    ax = plots.curve_figure(table, "val_loss", "val loss").axes[0]
    low, high = ax.get_ylim()
    assert 2.06 < high < 2.9  # the three training lines (2.03-2.06) in; residual=false (3.06) out
    (note,) = [t.get_text() for t in ax.texts]
    assert note == "ends above the range: residual=false (ends at 3.06)"
    # Two bad lines among four are not outliers: the range shows them all.
    table.loc[(table["variant"] == "heads=one") & (table["step"] > 0), "val_loss"] += 1.0
    ax = plots.curve_figure(table, "val_loss", "val loss").axes[0]
    assert ax.get_ylim()[1] > 3.06 and not ax.texts


def test_ablation_bars_show_differences_intervals_and_verdicts():
    table = ablation([("norm=rmsnorm", -0.05, -0.08, -0.03, "better"), ("position=rotary", 0.01, -0.02, 0.03,
                      "no effect detected"), ("heads=one", 0.02, math.nan, math.nan, "too few seeds"),
                      ("norm=none", 0.13, 0.09, 0.18, "worse")])  # fmt: skip
    fig = plots.ablation_figure(table)
    (ax,) = fig.axes
    assert [t.get_text() for t in ax.get_yticklabels()] == ["norm=rmsnorm", "position=rotary", "heads=one", "norm=none"]
    (bars,) = [c for c in ax.containers if isinstance(c, BarContainer)]
    assert [p.get_width() for p in bars] == pytest.approx([-0.05, 0.01, 0.02, 0.13])
    colours = [to_rgba(c) for c in ("tab:green", "tab:grey", "silver", "tab:red")]
    assert [p.get_facecolor() for p in bars] == colours
    (errors,) = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
    segments = errors.lines[2][0].get_segments()  # heads=one has no interval, so no error bar
    assert [s[0][1] for s in segments] == [0, 1, 3]  # the bars' positions
    differences = [-0.05, 0.01, 0.13]
    extents = [extent for d, s in zip(differences, segments) for extent in (d - s[0][0], s[1][0] - d)]
    assert extents == pytest.approx([0.03, 0.02, 0.03, 0.02, 0.04, 0.05])  # (difference − low, high − difference)
    assert "1.862" in ax.get_title()
    assert "below 0 is better" in fig.get_supxlabel()
    # each value written beyond its bar's interval: right of a worse one, left of a better one
    labels = {t.get_text(): (t.xy, t.get_horizontalalignment()) for t in ax.texts}
    assert labels == {"-0.050": ((-0.08, 0), "right"), "+0.010": ((0.03, 1), "left"), "+0.020": ((0.02, 2), "left"),
                      "+0.130": ((0.18, 3), "left")}


def test_an_ablation_without_intervals_has_no_error_bars():
    (ax,) = plots.ablation_figure(ablation([("norm=none", 0.1, math.nan, math.nan, "too few seeds")])).axes
    assert not [c for c in ax.containers if isinstance(c, ErrorbarContainer)]


def test_long_labels_and_titles_are_not_cut():
    table = ablation([(LONG, -0.05, -0.08, -0.03, "better"), ("norm=none", 0.13, 0.09, 0.18, "worse")])
    table["model"] = "AVeryLongModelNameThatMakesTheTitleLongerThanThePanelIsWideLM"
    fig = plots.ablation_figure(table)
    assert LONG.replace(",", "") in fig.axes[0].get_yticklabels()[0].get_text().replace(",", "").replace("\n", "")
    assert texts_cut(fig) == []
    title = "val loss — variants of TransformerLM (" + ", ".join(v.split("=")[0] for v in VARIANTS[1:]) + ")" * 3
    fig = plots.comparison_figure(curves([("TransformerLM", 5, v) for v in VARIANTS]), title)
    assert texts_cut(fig) == []
    assert fig.axes[0].get_position().width * fig.get_figwidth() > 5  # the long legend entry did not squeeze the panel


def test_models_are_bars_of_their_mean_in_ladder_order():
    losses = {"ZetaLM": [2.40, 2.42, 2.44], "BigramLM": [2.30, 2.32, 2.31], "AlphaLM": [1.90, 1.86, 1.88]}
    fig = plots.models_figure(jobs(losses, scales=(("large", 1), ("small", 0))))
    small, large = fig.axes
    assert (small.get_title(), large.get_title()) == ("scale=small", "scale=large")
    for ax, shift in ((small, 0.0), (large, 0.5)):
        assert [t.get_text() for t in ax.get_xticklabels()] == ["ZetaLM", "BigramLM", "AlphaLM"]
        (bars,) = [c for c in ax.containers if isinstance(c, BarContainer)]
        means = [sum(v) / 3 - shift for v in losses.values()]
        assert [p.get_height() for p in bars] == pytest.approx(means)
        values = sorted(t.get_text() for t in ax.texts)
        assert values == sorted(f"{m:.3f}" for m in means)
    (errors,) = [c for c in small.containers if isinstance(c, ErrorbarContainer)]
    spread = [(s[1][1] - s[0][1]) / 2 for s in errors.lines[2][0].get_segments()]
    assert spread == pytest.approx([pd.Series(v).std() for v in losses.values()])
    low, high = small.get_ylim()
    assert 1.0 < low < 1.36 and 2.44 < high < 3.0  # zoomed to where the models differ, not from 0
    assert texts_cut(fig) == []


def test_one_seed_gives_bars_without_error_bars():
    fig = plots.models_figure(jobs({"ZetaLM": [2.4], "BigramLM": [2.3], "AlphaLM": [1.9]}))
    assert not [c for c in fig.axes[0].containers if isinstance(c, ErrorbarContainer)]
    assert [p.get_height() for p in fig.axes[0].patches] == pytest.approx([2.4, 2.3, 1.9])


def test_params_figure_puts_each_model_at_its_parameters():
    losses = {"ZetaLM": [2.40, 2.42], "BigramLM": [2.30, 2.31], "AlphaLM": [1.90, 1.86]}
    fig = plots.params_figure(jobs(losses, scales=(("default", 0), ("large", 1))))
    (ax,) = fig.axes
    assert ax.get_xscale() == "log"
    # The joined points of each preset, in ladder order.
    default, large = [c.lines[0] for c in ax.containers if isinstance(c, ErrorbarContainer)]
    assert list(default.get_xdata()) == [6400, 8528, 43344]
    assert list(large.get_xdata()) == [12800, 17056, 86688]
    assert list(default.get_ydata()) == pytest.approx([2.41, 2.305, 1.88])
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["scale=default", "scale=large"]
    assert sorted(t.get_text() for t in ax.texts) == sorted(["Zeta", "Bigram", "Alpha"] * 2)
    assert texts_cut(fig) == []


def test_labels_of_points_that_coincide_do_not_overlap():
    small = jobs({"ZetaLM": [2.40, 2.42], "BigramLM": [2.30, 2.31], "AlphaLM": [1.90, 1.86]})
    fig = plots.params_figure(pd.concat([small, small.assign(scale="large", scale_rank=1)]))  # the same points twice
    boxes = [t.get_window_extent() for t in fig.axes[0].texts]
    assert len(boxes) == 6
    assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])

