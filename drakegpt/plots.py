"""The report's figures, built as matplotlib Figure objects: no pyplot, so no global state and no backend to pick.

The data sets the order: `rank` is a model's place on the ladder and `scale_rank` a preset's place among the
presets, smaller first. Each loss figure has one panel per preset sharing one y axis, one line per model and
variant (the mean over seeds, a ±std band), and the same style for a line in every panel and every figure.
Figures are sized from what they hold (panels, lines, the longest label) so that nothing is cut or squeezed at
the size the report saves them.
"""

import math
import textwrap
from typing import Any, Dict, List, Optional, Tuple

import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties
from matplotlib.patches import Patch
from matplotlib.text import Annotation
from matplotlib.textpath import TextToPath
from matplotlib.transforms import Bbox

# tab10 and two more: twelve colours that no two lines of a dozen share. No black: that is the baseline's.
COLOURS = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
    "#e377c2", "#7f7f7f", "#bcbd22", "#17becf", "#000080", "#e6ab02",
]  # fmt: skip
LINESTYLES = ["-", "--", "-.", ":"]
MARKERS = ["o", "s", "^", "v", "D", "P", "X", "*", "<", ">", "h", "p"]
# A model's baseline among its variants is what every other line is read against: it stays visible on top.
BASELINE = {"color": "black", "linestyle": "-", "marker": None, "linewidth": 2.8, "zorder": 10}
VERDICT_COLOURS = {"better": "tab:green", "worse": "tab:red", "no effect detected": "tab:grey",
                   "too few seeds": "silver"}  # fmt: skip

PANEL_WIDTH = 6.5  # inches of one loss panel
BARS_WIDTH = 5.5  # inches of an ablation panel's bars, beside the variant labels
LEGEND_ROW = 0.2  # inches of one legend entry at font size "small"
LEGEND_COLUMN_ROWS = 20  # entries past which the legend takes a second column
OUTLIER_DEVIATIONS, OUTLIER_FLOOR = 6, 0.12  # a line this far above the others' median is left above
# Where a point's label may go, in the order tried: (offset in points, horizontal and vertical alignment).
LABEL_PLACES = [((6, 0), "left", "center"), ((-6, 0), "right", "center"), ((4, 5), "left", "bottom"),
                ((4, -5), "left", "top"), ((-4, 5), "right", "bottom"), ((-4, -5), "right", "top")]  # fmt: skip

Line = Tuple[str, str]  # (model, variant)


def line_styles(n: int) -> List[Dict[str, Any]]:
    """n different (colour, line style, marker) sets; lines next to each other differ in colour and in style."""
    styles = []
    for i in range(n):
        # Past a dozen the colours come round again, each time with another line style than before.
        style = LINESTYLES[(i + i // len(COLOURS)) % len(LINESTYLES)]
        marker = MARKERS[(i + i // len(COLOURS)) % len(MARKERS)]  # so the comparison's lines differ past a dozen too
        styles.append({"color": COLOURS[i % len(COLOURS)], "linestyle": style, "marker": marker, "linewidth": 1.3,
                       "zorder": 2})  # fmt: skip
    return styles


# ------------------------------------------------------------------------------------------------ loss curves


def curve_figure(curves: pd.DataFrame, column: str, title: str) -> Figure:
    """`column` (train_loss or val_loss) against iteration."""
    return _loss_figure(curves, title, [(column, None)])


def comparison_figure(curves: pd.DataFrame, title: str) -> Figure:
    """Train (dashed) and val (solid) loss of every line; here the line style says which split, the colour and
    the marker say which line."""
    return _loss_figure(curves, title, [("train_loss", "--"), ("val_loss", "-")])


def _loss_figure(curves: pd.DataFrame, title: str, splits: List[Tuple[str, Optional[str]]]) -> Figure:
    """One band per line, split and preset. A split's line style (None: the line's own) replaces the line's, and
    markers then tell the lines apart; only the last split's lines carry a legend label."""
    styles = _styles(curves)
    labels = [style["label"] for style in styles.values()]
    fig, panels = _panels(curves, title, labels)
    bands, drawn = [], []
    for ax, here in panels:
        # The baseline comes last, so it is drawn on top where zorder ties (its band with the others' bands).
        for (model, variant), style in sorted(styles.items(), key=lambda item: item[1]["zorder"]):
            rows = here[(here.model == model) & (here.variant == variant)]
            for column, split_style in splits:
                band = _band(rows, column)
                if band is None:
                    continue
                look = {**style, "linestyle": split_style or style["linestyle"],
                        "marker": style["marker"] if split_style else None}  # fmt: skip
                _draw(ax, band, look, style["label"] if column == splits[-1][0] else None)
                bands.append(band)
                drawn.append((ax, band, style["label"]))
    axes = [ax for ax, _ in panels]
    if bands:
        low, high = y_limits(bands)
        axes[0].set_ylim(low, high)  # the panels share the y axis
        _say_what_is_off_the_top(drawn, high)
    _legend(fig, axes, labels)
    return fig


def _styles(curves: pd.DataFrame) -> Dict[Line, Dict[str, Any]]:
    """Each line's style and legend label in legend order: models by rank, then variants (the baseline, '', first)."""
    lines = [(m, v) for _, m, v in sorted(set(zip(curves["rank"], curves.model, curves.variant)))]
    models = list(dict.fromkeys(m for m, _ in lines))
    varied = {m for m in models if sum(line[0] == m for line in lines) > 1}
    baselines = [(m, v) for m, v in lines if v == "" and m in varied]
    others = [line for line in lines if line not in baselines]
    styles = {**dict(zip(others, line_styles(len(others)))), **{line: BASELINE for line in baselines}}
    labelled = {}
    for model, variant in lines:
        name = (variant or "baseline") if model in varied else ""
        label = f"{model} {name}".strip() if len(models) > 1 else name or model
        labelled[(model, variant)] = {**styles[(model, variant)], "label": label}
    return labelled


def _panels(curves: pd.DataFrame, title: str, labels: List[str]) -> Tuple[Figure, List[Tuple[Axes, pd.DataFrame]]]:
    """A figure with one panel per preset, sharing the y axis, and each panel's rows; room beside them for a
    legend of `labels`."""
    scales = list(dict.fromkeys(s for _, s in sorted(set(zip(curves.scale_rank, curves.scale)))))
    columns = 1 if len(labels) <= LEGEND_COLUMN_ROWS else 2
    legend_width = columns * (max(_inches(label, "small") for label in labels) + 0.9)  # + handle and padding
    height = max(4.8, LEGEND_ROW * math.ceil(len(labels) / columns) + 1.4)
    fig = Figure(figsize=(PANEL_WIDTH * len(scales) + legend_width, height), layout="constrained")
    axes = fig.subplots(1, len(scales), sharey=True, squeeze=False)[0]
    fig.suptitle(_wrap(title, PANEL_WIDTH * len(scales) + legend_width - 0.5, "large"))
    for ax, scale in zip(axes, scales):
        ax.set_title(f"scale={scale}")
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("cross-entropy (nats)")
    return fig, [(ax, curves[curves.scale == scale]) for ax, scale in zip(axes, scales)]


def _band(rows: pd.DataFrame, column: str) -> Optional[pd.DataFrame]:
    """Mean and std over seeds at each evaluated step (std 0 for one seed), or None without values."""
    values = rows.dropna(subset=[column]).groupby("step")[column]
    if not len(values):
        return None
    return pd.DataFrame({"mean": values.mean(), "std": values.std().fillna(0)})


def _draw(ax: Axes, band: pd.DataFrame, style: Dict[str, Any], label: Optional[str]) -> None:
    marker = style["marker"] or ("o" if len(band) == 1 else None)  # one evaluation is a point, which a line won't draw
    ax.plot(band.index, band["mean"], color=style["color"], linestyle=style["linestyle"], marker=marker, markersize=4,
            markevery=max(1, len(band) // 6), linewidth=style["linewidth"], zorder=style["zorder"], label=label)
    ax.fill_between(band.index, band["mean"] - band["std"], band["mean"] + band["std"], color=style["color"],
                    alpha=0.15, linewidth=0)  # fmt: skip


def y_limits(bands: List[pd.DataFrame]) -> Tuple[float, float]:
    """The y range of the bands from the first evaluation after step 0: the untrained model's 4.4-5 nats
    would squash the differences that matter. Runs evaluated at step 0 alone keep their point in range. A line
    that ends far above the rest (six median deviations, and at least 0.12 nats, over their median: a variant
    that does not train) is left above the range, so that the others stay readable."""
    finals = pd.Series([band["mean"].iloc[-1] for band in bands])
    deviation = max((finals - finals.median()).abs().median(), OUTLIER_FLOOR / OUTLIER_DEVIATIONS)
    kept = [band for band, final in zip(bands, finals)
            if final <= finals.median() + OUTLIER_DEVIATIONS * deviation] or bands
    frame = pd.concat(kept)
    trained = frame[frame.index > 0]
    frame = trained if not trained.empty else frame
    low, high = (frame["mean"] - frame["std"]).min(), (frame["mean"] + frame["std"]).max()
    pad = 0.05 * (high - low) or 0.05
    return low - pad, high + pad


def _say_what_is_off_the_top(drawn: List[Tuple[Axes, pd.DataFrame, str]], high: float) -> None:
    """Name, in each panel, the lines that end above the range, with where they end."""
    for ax in dict.fromkeys(a for a, _, _ in drawn):
        above = [f"{label} (ends at {band['mean'].iloc[-1]:.2f})" for a, band, label in drawn
                 if a is ax and band["mean"].iloc[-1] > high]
        if above:
            ax.text(0.98, 0.97, "ends above the range: " + ", ".join(dict.fromkeys(above)), transform=ax.transAxes,
                    ha="right", va="top", fontsize="small", bbox={"facecolor": "white", "alpha": 0.8, "linewidth": 0})


def _legend(fig: Figure, axes: List[Axes], labels: List[str]) -> None:
    """One legend beside the panels, covering no curve, in `labels` order: a line looks the same in every panel."""
    handles = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, handle)
    shown = [label for label in labels if label in handles]
    if shown:
        fig.legend([handles[label] for label in shown], shown, loc="outside right center", fontsize="small",
                   ncols=1 if len(shown) <= LEGEND_COLUMN_ROWS else 2)  # fmt: skip


# ------------------------------------------------------------------------------------------------ ablation


def ablation_figure(ablation: pd.DataFrame) -> Figure:
    """Each variant's best val loss minus its baseline's with its 95% interval, coloured by verdict; one panel per
    model and preset, variants in the table's order."""
    groups = [(key, rows) for key, rows in ablation.groupby(["model", "scale"], sort=False) if (~rows.baseline).any()]
    labels = {key: [_break_at_commas(v) for v in rows[~rows.baseline].variant] for key, rows in groups}
    width = max(_inches(name, "medium") for names in labels.values() for name in names) + BARS_WIDTH
    heights = [len(names) * (0.15 * max(name.count("\n") + 1 for name in names) + 0.12) for names in labels.values()]
    fig = Figure(figsize=(width, sum(heights) + 1.1 * len(groups) + 1.0), layout="constrained")
    axes = fig.subplots(len(groups), 1, squeeze=False, height_ratios=[h + 1.1 for h in heights])[:, 0]
    for ax, ((model, scale), rows) in zip(axes, groups):
        _ablation_panel(ax, rows, labels[(model, scale)])
        # A title is centred over its panel, not over the figure, so it must fit the panel's width.
        ax.set_title(_wrap(_ablation_title(model, scale, rows), BARS_WIDTH - 0.6, "large"))
    fig.supxlabel(_wrap("variant − baseline, best val loss (nats); below 0 is better; error bars: 95% interval over "
                        "paired seeds", width - 0.3, "medium"), fontsize="medium")  # fmt: skip
    verdicts = set(ablation[~ablation.baseline].verdict)
    patches = [Patch(color=colour, label=v) for v, colour in VERDICT_COLOURS.items() if v in verdicts]
    fig.legend(handles=patches, loc="outside upper center", ncols=len(patches), fontsize="small")
    return fig


def _ablation_panel(ax: Axes, rows: pd.DataFrame, labels: List[str]) -> None:
    """One bar per variant, top to bottom; error bars only where there is an interval."""
    variants = rows[~rows.baseline]
    positions = pd.Series(range(len(variants)), index=variants.index)
    colours = [VERDICT_COLOURS.get(v, "tab:grey") for v in variants.verdict]
    ax.barh(positions, variants.difference, color=colours, height=0.6)
    interval = variants.low.notna() & variants.high.notna()
    if interval.any():
        shown = variants[interval]
        ax.errorbar(shown.difference, positions[interval], fmt="none", ecolor="black", capsize=3, linewidth=1,
                    xerr=[shown.difference - shown.low, shown.high - shown.difference])  # fmt: skip
    # Each bar's value beyond its error bar: a long bar (no residuals) otherwise leaves the small ones unreadable.
    for position, row in zip(positions, variants.itertuples()):
        ends = [e for e in (row.difference, row.low, row.high) if pd.notna(e)]
        if not ends:
            continue
        right = row.difference >= 0
        ax.annotate(f"{row.difference:+.3f}", (max(ends) if right else min(ends), position), va="center",
                    xytext=(4 if right else -4, 0), textcoords="offset points", ha="left" if right else "right",
                    fontsize="small")
    ax.margins(x=0.15)
    ax.set_yticks(positions, labels=labels)
    ax.set_ylim(len(variants) - 0.5, -0.5)  # the first variant on top
    ax.axvline(0, color="black", linewidth=0.8)
    ax.grid(axis="x", alpha=0.3)


def _ablation_title(model: str, scale: str, rows: pd.DataFrame) -> str:
    base = rows[rows.baseline]
    seeds = f" ({base.seeds.iloc[0]} seeds)" if base.seeds.iloc[0] > 1 else ""
    return f"{model}, scale={scale}: baseline best val loss {base.best_val_loss_mean.iloc[0]:.3f}{seeds}"


def _break_at_commas(variant: str, width: int = 40) -> str:
    """A long variant label on several lines, each ending at one of its commas."""
    return textwrap.fill(variant.replace(",", ", "), width, break_long_words=False).replace(", ", ",")


# ------------------------------------------------------------------------------------------------ models


def models_figure(table: pd.DataFrame) -> Figure:
    """Each model's final val loss (mean over seeds, ±std error bars) as bars in ladder order, one panel per preset,
    the y axis zoomed to where the models differ."""
    summary = _per_model(table)
    scales = list(summary.groupby(["scale_rank", "scale"], sort=True))
    ladder = summary.sort_values(["rank", "model"]).model.unique()
    colours = {model: COLOURS[i % len(COLOURS)] for i, model in enumerate(ladder)}
    panel_width = 0.75 * summary.groupby("scale").size().max() + 1.2
    fig = Figure(figsize=(panel_width * len(scales) + 0.8, 5.2), layout="constrained")
    axes = fig.subplots(1, len(scales), sharey=True, squeeze=False)[0]
    for ax, ((_, scale), rows) in zip(axes, scales):
        _bars(ax, rows, [colours[m] for m in rows.model])
        ax.set_title(f"scale={scale}")
    low = (summary["mean"] - summary["std"].fillna(0)).min()
    high = (summary["mean"] + summary["std"].fillna(0)).max()
    span = high - low or 0.1
    axes[0].set_ylim(low - 0.15 * span, high + 0.15 * span)  # the top margin holds the values written over the bars
    axes[0].set_ylabel("final val loss (nats)")
    fig.suptitle(_wrap(f"final val loss per model: mean over {_seeds(summary)}, error bars ±1 sample std",
                       panel_width * len(scales), "large"))  # fmt: skip
    return fig


def _bars(ax: Axes, rows: pd.DataFrame, colours: List[str]) -> None:
    """One bar per model with its ±std error bar (none for one seed) and its value written above."""
    positions = list(range(len(rows)))
    ax.bar(positions, rows["mean"], color=colours, width=0.7)
    spread = rows["std"].notna()
    if spread.any():
        ax.errorbar([p for p, s in zip(positions, spread) if s], rows["mean"][spread], yerr=rows["std"][spread],
                    fmt="none", ecolor="black", capsize=3, linewidth=1)  # fmt: skip
    for position, mean, std in zip(positions, rows["mean"], rows["std"].fillna(0)):
        ax.annotate(f"{mean:.3f}", (position, mean + std), xytext=(0, 2), textcoords="offset points", ha="center",
                    va="bottom", fontsize="small")  # fmt: skip
    ax.set_xticks(positions, labels=rows.model, rotation=35, ha="right", rotation_mode="anchor")
    ax.grid(axis="y", alpha=0.3)


def params_figure(table: pd.DataFrame) -> Figure:
    """Final val loss (mean over seeds, ±std error bars) against parameters, one line per preset joining its models
    in ladder order, each point labelled with its model."""
    summary = _per_model(table)
    fig = Figure(figsize=(8, 5.5), layout="constrained")
    ax = fig.subplots()
    for colour, ((_, scale), rows) in zip(COLOURS, summary.groupby(["scale_rank", "scale"], sort=True)):
        ax.errorbar(rows.params, rows["mean"], yerr=rows["std"], fmt="-o", color=colour, capsize=3, markersize=5,
                    label=f"scale={scale}")  # fmt: skip
    ax.set_xscale("log")
    ax.margins(x=0.12, y=0.1)  # room for the labels of the outermost points
    ax.set_xlabel("parameters (log scale)")
    ax.set_ylabel("final val loss (nats)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="best", fontsize="small")
    ax.set_title(_wrap(f"final val loss against parameters: mean over {_seeds(summary)}, error bars ±1 sample std",
                       fig.get_figwidth() - 0.5, "large"))  # fmt: skip
    fig.draw_without_rendering()  # lays the figure out: the labels below are placed where the points now are
    _label_points(ax, summary)
    return fig


def _label_points(ax: Axes, summary: pd.DataFrame) -> None:
    """Each point's model name, placed so that it covers no other label, no point and not the legend."""
    points = [ax.transData.transform(xy) for xy in zip(summary.params, summary["mean"])]
    taken = [Bbox.from_extents(x - 4, y - 4, x + 4, y + 4) for x, y in points]
    taken.append(ax.get_legend().get_window_extent())
    for xy, model in zip(zip(summary.params, summary["mean"]), summary.model):
        label = _place(ax, model.removesuffix("LM") or model, xy, taken)
        taken.append(label.get_window_extent())


def _place(ax: Axes, text: str, xy: Tuple[float, float], taken: List[Bbox]) -> Annotation:
    """`text` at the first of a few places around `xy` that overlaps nothing in `taken` and stays inside the
    panel; at the first place when none does."""
    panel = ax.get_window_extent()
    for offset, ha, va in LABEL_PLACES:
        label = ax.annotate(text, xy, xytext=offset, textcoords="offset points", ha=ha, va=va, fontsize="small")
        box = label.get_window_extent()
        inside = panel.contains(box.x0, box.y0) and panel.contains(box.x1, box.y1)
        if inside and not any(box.overlaps(other) for other in taken):
            return label
        label.remove()
    offset, ha, va = LABEL_PLACES[0]
    return ax.annotate(text, xy, xytext=offset, textcoords="offset points", ha=ha, va=va, fontsize="small")


# ------------------------------------------------------------------------------------------------ helpers


def _per_model(table: pd.DataFrame) -> pd.DataFrame:
    """Mean, sample std (NaN for one seed), seeds and parameters of each model's baseline runs that finished, per
    preset, ordered by preset then ladder rank."""
    runs = table[(table.variant == "") & (table.status == "ok") & table.final_val_loss.notna()]
    summary = runs.groupby(["scale_rank", "scale", "rank", "model"], sort=True).agg(
        params=("params", "max"), mean=("final_val_loss", "mean"), std=("final_val_loss", "std"),
        seeds=("final_val_loss", "size"))  # fmt: skip
    return summary.reset_index()


def _seeds(summary: pd.DataFrame) -> str:
    """'3 seeds', or '1-3 seeds' where models ran different numbers."""
    low, high = summary.seeds.min(), summary.seeds.max()
    return f"{low} seeds" if low == high else f"{low}-{high} seeds"


def _inches(text: str, size: Any) -> float:
    """How wide `text`'s longest line is drawn at font size `size` (points or a name such as 'small')."""
    font, measure = FontProperties(size=size), TextToPath().get_text_width_height_descent
    return max(measure(line, font, ismath=False)[0] for line in text.split("\n")) / 72


def _wrap(text: str, inches: float, size: Any) -> str:
    """`text` broken into lines no wider than `inches` at font size `size`."""
    per_character = _inches(text, size) / max(len(text), 1)
    return textwrap.fill(text, max(int(inches / per_character), 20))
