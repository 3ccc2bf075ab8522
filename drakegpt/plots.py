"""The report's figures, built as matplotlib Figure objects: no pyplot, so no global state and no backend to pick.

Every loss figure has one panel per preset sharing one y axis, one line per model and variant (the mean over
seeds, a ±std band), and the same colour and line style for a line in every panel and every figure.
"""

import textwrap
from typing import Any, Dict, List, Optional, Tuple

import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from drakegpt.config import MODEL_LADDER, SCALE_ORDER

# tab10 and two more: twelve colours that no two lines of a dozen share.
COLOURS = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
    "#e377c2", "#7f7f7f", "#bcbd22", "#17becf", "#000000", "#e6ab02",
]  # fmt: skip
LINESTYLES = ["-", "--", "-.", ":"]
MARKERS = ["o", "s", "^", "v", "D", "P", "X", "*", "<", ">", "h", "p"]

Line = Tuple[str, str]  # (model, variant)


def line_styles(n: int) -> List[Dict[str, Any]]:
    """n different (colour, line style, marker) sets; lines next to each other differ in colour and in style."""
    styles = []
    for i in range(n):
        # Past a dozen the colours come round again, each time with another line style than before.
        style = LINESTYLES[(i + i // len(COLOURS)) % len(LINESTYLES)]
        styles.append({"color": COLOURS[i % len(COLOURS)], "linestyle": style, "marker": MARKERS[i % len(MARKERS)]})
    return styles


def curve_figure(curves: pd.DataFrame, column: str, title: str) -> Figure:
    """`column` (train_loss or val_loss) against iteration."""
    fig, panels = _panels(curves, title)
    styles, bands = _styles(curves), []
    for ax, here in panels:
        for (model, variant), style in styles.items():
            band = _band(here[(here.model == model) & (here.variant == variant)], column)
            if band is not None:
                _draw(ax, band, style["color"], style["linestyle"], style["label"])
                bands.append(band)
    return _finish(fig, [ax for ax, _ in panels], bands)


def comparison_figure(curves: pd.DataFrame, title: str) -> Figure:
    """Train (dashed) and val (solid) loss of every line; here the line style says which split, the colour and
    the marker say which line."""
    fig, panels = _panels(curves, title)
    styles, bands = _styles(curves), []
    for ax, here in panels:
        for (model, variant), style in styles.items():
            rows = here[(here.model == model) & (here.variant == variant)]
            for column, linestyle, label in (("train_loss", "--", None), ("val_loss", "-", style["label"])):
                band = _band(rows, column)
                if band is not None:
                    _draw(ax, band, style["color"], linestyle, label, style["marker"])
                    bands.append(band)
    return _finish(fig, [ax for ax, _ in panels], bands)


def ablation_figure(ablation: pd.DataFrame) -> Figure:
    """Each variant's best val loss minus its baseline's, with the difference's standard error as error bars;
    one panel per model and preset, variants in the table's order (lowest loss on top)."""
    groups = [(key, rows[rows.difference.notna()]) for key, rows in ablation.groupby(["model", "scale"], sort=False)]
    groups = [(key, rows) for key, rows in groups if not rows.empty]
    height = sum(0.35 * len(rows) + 1.2 for _, rows in groups)
    fig = Figure(figsize=(8, max(height, 2.5)), layout="constrained")
    axes = fig.subplots(len(groups), 1, squeeze=False)[:, 0]
    for ax, ((model, scale), rows) in zip(axes, groups):
        errors = rows.difference_se.fillna(0) if rows.difference_se.notna().any() else None
        colours = [
            "grey" if base else "tab:red" if d > 0 else "tab:green" for base, d in zip(rows.baseline, rows.difference)
        ]
        ax.barh(range(len(rows)), rows.difference, xerr=errors, color=colours, capsize=3)
        ax.set_yticks(range(len(rows)), labels=[v or "baseline" for v in rows.variant])
        ax.invert_yaxis()
        ax.axvline(0, color="black", linewidth=0.8)
        base = rows[rows.baseline].best_val_loss_mean.iloc[0]
        ax.set_title(f"{model}, scale={scale}: best val loss against the baseline's {base:.3f}")
        spread = "error bars: ±1 standard error" if errors is not None else "one seed: no error bars"
        ax.set_xlabel(f"variant − baseline (nats), below 0 is better; {spread}")
        ax.grid(axis="x", alpha=0.3)
    return fig


def _panels(curves: pd.DataFrame, title: str) -> Tuple[Figure, List[Tuple[Axes, pd.DataFrame]]]:
    """A figure with one panel per preset (in SCALE_ORDER), sharing the y axis, and each panel's rows."""
    present = set(curves.scale)
    scales = [s for s in SCALE_ORDER if s in present] + sorted(present - set(SCALE_ORDER))
    fig = Figure(figsize=(6.5 * len(scales) + 2.5, 4.8), layout="constrained")  # 2.5 inches for the legend
    axes = fig.subplots(1, len(scales), sharey=True, squeeze=False)[0]
    fig.suptitle(textwrap.fill(title, 60 * len(scales)))
    for ax, scale in zip(axes, scales):
        ax.set_title(f"scale={scale}")
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("cross-entropy (nats)")
    return fig, [(ax, curves[curves.scale == scale]) for ax, scale in zip(axes, scales)]


def _styles(curves: pd.DataFrame) -> Dict[Line, Dict[str, Any]]:
    """Each line's style and legend label, models in ladder order, then variants (the baseline, '', first)."""
    rank = {m: i for i, m in enumerate(MODEL_LADDER)}
    lines = sorted(set(zip(curves.model, curves.variant)), key=lambda k: (rank.get(k[0], len(rank)), k[0], k[1]))
    several_models = len({m for m, _ in lines}) > 1
    several_variants = len({v for _, v in lines}) > 1
    styles = {}
    for (model, variant), style in zip(lines, line_styles(len(lines))):
        if several_models:
            label = f"{model} {variant}".strip()
        else:
            label = (variant or "baseline") if several_variants else model
        styles[(model, variant)] = {**style, "label": label}
    return styles


def _band(rows: pd.DataFrame, column: str) -> Optional[pd.DataFrame]:
    """Mean and std over seeds at each evaluated step (std 0 for one seed), or None without values."""
    values = rows.dropna(subset=[column]).groupby("step")[column]
    if not len(values):
        return None
    return pd.DataFrame({"mean": values.mean(), "std": values.std().fillna(0)})


def _draw(
    ax: Axes, band: pd.DataFrame, color: str, linestyle: str, label: Optional[str], marker: Optional[str] = None
) -> None:
    if len(band) == 1:
        marker = marker or "o"  # one evaluation is a point, which a line alone would not draw
    ax.plot(band.index, band["mean"], color=color, linestyle=linestyle, marker=marker, markersize=4,
            markevery=max(1, len(band) // 6), label=label)
    ax.fill_between(band.index, band["mean"] - band["std"], band["mean"] + band["std"], color=color, alpha=0.15)


def y_limits(bands: List[pd.DataFrame]) -> Tuple[float, float]:
    """The y range of the bands from the first evaluation after step 0: the untrained model's 4.4-5 nats
    would squash the differences that matter. Runs evaluated at step 0 alone keep their point in range."""
    frame = pd.concat(bands)
    trained = frame[frame.index > 0]
    frame = trained if not trained.empty else frame
    low, high = (frame["mean"] - frame["std"]).min(), (frame["mean"] + frame["std"]).max()
    pad = 0.05 * (high - low) or 0.05
    return low - pad, high + pad


def _finish(fig: Figure, axes: List[Axes], bands: List[pd.DataFrame]) -> Figure:
    if bands:
        axes[0].set_ylim(*y_limits(bands))  # the panels share the y axis
    # One legend beside the panels, covering no curve: a line has the same style in every panel it is in.
    labelled = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            labelled.setdefault(label, handle)
    if labelled:
        fig.legend(labelled.values(), labelled.keys(), loc="outside right center", fontsize="small")
    return fig
