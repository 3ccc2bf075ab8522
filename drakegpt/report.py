"""The comparison of a sweep: comparison.csv, summary.md, train_loss.png and val_loss.png in its folder.

Written by a Hydra callback when a sweep ends (any launcher), or rebuilt from any sweep folder, such
as one copied back from a cluster: `python -m drakegpt.report multirun/<sweep>`.
"""

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import List, Tuple

import pandas as pd
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from drakegpt.config import RUN_INDEPENDENT_KEYS
from drakegpt.models import MODELS

log = logging.getLogger(__name__)

COLUMNS = [
    "model",
    "scale",
    "variant",
    "seed",
    "params",
    "steps",
    "final_train_loss",
    "final_val_loss",
    "best_val_loss",
    "tokens_per_s",
    "wall_s",
    "status",
    "error",
    "job",
]
SCALE_ORDER = ["default", "large"]
# Overrides that name the row (model, scale), that seeds average over, or that leave the numbers alone.
NOT_A_VARIANT = ("model", "scale", "seed") + RUN_INDEPENDENT_KEYS


def collect(sweep_dir: Path) -> Tuple[pd.DataFrame, pd.DataFrame]:
    """One row per job, and every job's metrics.csv rows tagged with its model, scale, variant and seed."""
    jobs, curves = [], []
    files = sorted([*sweep_dir.rglob("summary.json"), *sweep_dir.rglob("refused.json")])
    for summary_file in files:
        summary = json.loads(summary_file.read_text())
        job = str(summary_file.parent.relative_to(sweep_dir))
        if summary_file.name == "refused.json":
            jobs.append(
                {
                    **{c: summary.get(c) for c in COLUMNS},
                    "job": f"{job} (refused)",
                    "overrides": summary.get("overrides", []),
                }
            )
            continue
        jobs.append({**{c: summary.get(c) for c in COLUMNS}, "job": job, "overrides": summary.get("overrides", [])})
        metrics = summary_file.parent / "metrics.csv"
        if metrics.is_file():
            frame = pd.read_csv(metrics)
            if not frame.empty:
                curves.append(frame.assign(job=job))
    table = pd.DataFrame(jobs, columns=COLUMNS + ["overrides"])
    table["variant"] = _variants(table["overrides"].tolist())
    table = _ordered(table.drop(columns="overrides")).reset_index(drop=True)
    for column in ("params", "steps", "seed"):
        table[column] = table[column].astype("Int64")
    if not curves:
        return table, pd.DataFrame()
    tags = table[["job", "model", "scale", "variant", "seed"]]
    return table, pd.concat(curves, ignore_index=True).merge(tags, on="job")


def _is_key_under(key: str, prefixes) -> bool:
    return any(key == p or key.startswith(p + ".") for p in prefixes)


def _variants(overrides: List[List[str]]) -> List[str]:
    """What sets a job apart from the others besides model, scale and seed, e.g. 'scale.dropout=0.35'."""
    items = [[o for o in job if not _is_key_under(o.split("=", 1)[0].lstrip("+~"), NOT_A_VARIANT)] for job in overrides]
    shared = set.intersection(*map(set, items)) if items else set()
    return [",".join(o for o in job if o not in shared) for job in items]


def _ordered(frame: pd.DataFrame) -> pd.DataFrame:
    """Scales as the seed lists them, models in the order they grow, then seeds."""
    ranks = frame.assign(
        scale_rank=frame.scale.map({s: i for i, s in enumerate(SCALE_ORDER)}).fillna(len(SCALE_ORDER)),
        model_rank=frame.model.map({m: i for i, m in enumerate(MODELS)}).fillna(len(MODELS)),
    )
    ranks = ranks.sort_values(["scale_rank", "scale", "model_rank", "model", "variant", "seed"], kind="stable")
    return ranks.drop(columns=["scale_rank", "model_rank"])


def markdown(table: pd.DataFrame) -> str:
    """A readable table; jobs that differ only by seed become one row of mean ± std."""
    rows = []
    with_variants = (table.variant != "").any()
    for (scale, model, variant), group in table.groupby(["scale", "model", "variant"], sort=False, dropna=False):
        ok = group[group.status == "ok"]
        row = {
            "Model": model,
            "Scale": scale,
            **({"Variant": variant} if with_variants else {}),
            "Params": _int(group.params.dropna().max()),
            "Seeds": len(group),
        }
        for name, column in [
            ("Final train loss", "final_train_loss"),
            ("Final val loss", "final_val_loss"),
            ("Best val loss", "best_val_loss"),
        ]:
            row[name] = _mean_std(ok[column], 3)
        row["Tokens/s"] = _mean_std(ok.tokens_per_s, 0)
        row["Wall (s)"] = _mean_std(ok.wall_s, 0)
        statuses = group.status.value_counts()
        row["Status"] = ", ".join(f"{s}" if n == len(group) == 1 else f"{n} {s}" for s, n in statuses.items())
        rows.append(row)
    text = pd.DataFrame(rows).to_markdown(index=False) if rows else "(no jobs)"
    failures = table[table.status != "ok"]
    if not failures.empty:
        text += "\n\nFailed jobs:\n\n" + "\n".join(f"- `{r.job}`: {r.status}: {r.error}" for r in failures.itertuples())
    return text + "\n"


def _int(value) -> str:
    return "" if pd.isna(value) else f"{int(value):,}"


def _mean_std(values: pd.Series, digits: int) -> str:
    values = values.dropna().astype(float)
    if values.empty:
        return ""
    if len(values) == 1:
        return f"{values.iloc[0]:,.{digits}f}"
    return f"{values.mean():,.{digits}f} ± {values.std():,.{digits}f}"


def plot(curves: pd.DataFrame, column: str, title: str, path: Path) -> None:
    """Loss against iteration, one line per model and variant (mean ± std over seeds), one panel per preset."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scales = [s for s in SCALE_ORDER if s in set(curves.scale)] + sorted(set(curves.scale) - set(SCALE_ORDER))
    fig, axes = plt.subplots(1, len(scales), figsize=(6.5 * len(scales), 4.5), squeeze=False)
    for ax, scale in zip(axes[0], scales):
        here = curves[curves.scale == scale]
        lines = here[["model", "variant"]].drop_duplicates()
        lines = lines.assign(rank=lines.model.map({m: i for i, m in enumerate(MODELS)})).sort_values(
            ["rank", "variant"]
        )
        for model, variant in zip(lines.model, lines.variant):
            by_step = here[(here.model == model) & (here.variant == variant)].groupby("step")[column]
            mean, std = by_step.mean(), by_step.std().fillna(0)
            ax.plot(mean.index, mean.values, label=f"{model} {variant}".strip())
            ax.fill_between(mean.index, mean - std, mean + std, alpha=0.2)
        ax.set_title(f"{title} — scale={scale}")
        ax.set_xlabel("iteration")
        ax.set_ylabel("cross-entropy (nats)")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(sweep_dir: Path) -> pd.DataFrame:
    sweep_dir = Path(sweep_dir)
    table, curves = collect(sweep_dir)
    table.to_csv(sweep_dir / "comparison.csv", index=False)
    (sweep_dir / "summary.md").write_text(markdown(table))
    if not curves.empty:
        plot(curves, "train_loss", "Train loss", sweep_dir / "train_loss.png")
        plot(curves, "val_loss", "Val loss", sweep_dir / "val_loss.png")
    return table


class SweepReport(Callback):
    """Writes the comparison when a sweep ends; the sweep exits non-zero if any job did not finish ok."""

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        table = write_report(sweep_dir)
        failed = table[table.status != "ok"]
        log.info("comparison of %d jobs in %s", len(table), sweep_dir)
        if not failed.empty:
            print(
                f"{len(failed)} of {len(table)} jobs did not finish ok; see {sweep_dir / 'summary.md'}", file=sys.stderr
            )
            sys.exit(1)


def main(argv: List[str] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m drakegpt.report", description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", type=Path, help="a sweep folder, e.g. multirun/2026-01-01_12-00-00")
    args = parser.parse_args(argv)
    if not args.sweep_dir.is_dir():
        print(f"error: {args.sweep_dir} is not a folder; pass a sweep folder such as multirun/<date>", file=sys.stderr)
        return 2
    if not any(args.sweep_dir.rglob("summary.json")):
        print(
            f"error: no job folders (with a summary.json) under {args.sweep_dir}; pass a sweep folder", file=sys.stderr
        )
        return 2
    table = write_report(args.sweep_dir)
    print(f"wrote comparison.csv, summary.md and plots for {len(table)} jobs in {args.sweep_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
