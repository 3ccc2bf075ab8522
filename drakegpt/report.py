"""The comparison of a sweep, in tables and figures written into its folder.

comparison.csv and summary.md (a row per job, and per group of seeds), train_loss.png and val_loss.png (the
seed's two figures), loss.png (train and val together); when the sweep compares variants of a model with its
baseline (experiment=ablation, additions, overfitting), ablation.csv, ablation.md and ablation.png too.

Written by a Hydra callback when a sweep ends (any launcher), or rebuilt from any sweep folder, such
as one copied back from a cluster: `python -m drakegpt.report multirun/<sweep>`.
"""

import argparse
import logging
import re
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, FrozenSet, List, Optional, Sequence, Set, Tuple

import pandas as pd
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from drakegpt import plots
from drakegpt.config import CONF_DIR, RUN_INDEPENDENT_KEYS
from drakegpt.config import MODEL_LADDER as MODELS
from drakegpt.config import SCALE_ORDER
from drakegpt.errors import UsageError
from drakegpt.files import read_json
from drakegpt.identity import is_key_under
from drakegpt.sweep_stop import SweepSignals, sweep_stopped
from drakegpt.tracking import log_sweep_summary

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
# Overrides left out of the variant of a job whose summary has none (it failed before training): the
# columns model and scale, and the presets whose effect its other overrides show.
NOT_A_VARIANT = ("model", "scale", "experiment", "hparams_search")
PLOTTED = ("ok", "interrupted")  # a diverged or failed run's curve would drag its seeds' mean
ABLATION_COLUMNS = [
    "model",
    "scale",
    "variant",
    "baseline",
    "params",
    "seeds",
    "best_val_loss_mean",
    "best_val_loss_std",
    "difference",
    "difference_se",
    "tokens_per_s",
]


def collect(sweep_dir: Path) -> Tuple[pd.DataFrame, pd.DataFrame]:
    """One row per job, and every plotted job's metrics.csv rows tagged with its model, scale, variant and seed."""
    records = _records(sweep_dir)
    variants = _variants([summary for _, _, summary in records])
    jobs, curves = [], []
    for (job, folder, summary), variant in zip(records, variants):
        row = {**{c: summary.get(c) for c in COLUMNS}, "variant": variant, "job": job}
        metrics = _metrics(folder) if folder is not None else None
        if metrics is not None and row["status"] == "interrupted":  # an older summary may lack the last losses
            last = metrics.iloc[-1]
            found = {"steps": last.step, "final_train_loss": last.train_loss, "final_val_loss": last.val_loss,
                     "best_val_loss": metrics.val_loss.min()}
            row.update({k: v for k, v in found.items() if row[k] is None})
        if metrics is not None and row["status"] in PLOTTED:
            curves.append(metrics.assign(job=job))
        jobs.append(row)
    table = _ordered(pd.DataFrame(jobs, columns=COLUMNS)).reset_index(drop=True)
    for column in ("params", "steps", "seed"):
        table[column] = table[column].astype("Int64")
    if not curves:
        return table, pd.DataFrame()
    tags = table[["job", "model", "scale", "variant", "seed"]]
    return table, pd.concat(curves, ignore_index=True).merge(tags, on="job")


def _records(sweep_dir: Path) -> List[Tuple[str, Optional[Path], Dict]]:
    """(job, folder, summary) of every run in the sweep, each job once however often the sweep ran: the job
    folder's summary.json or its replicas' (seed=<s>/summary.json), and a refused.json beside them unless
    it is the job's own failure again (a re-run of a job that fails before training finds its summary there)."""
    jobs: Dict[Path, Dict[Path, Dict]] = {}
    for path in sorted(sweep_dir.rglob("summary.json")):
        summary = _readable(path)
        if summary is None:
            continue
        folder = path.parent
        replica = (summary.get("replicas") or 1) > 1 and folder.name == f"seed={summary.get('seed')}"
        jobs.setdefault(folder.parent if replica else folder, {})[folder] = summary
    records = []
    for job, runs in jobs.items():
        if job in runs and len(runs) > 1:
            # A failure before training writes the job folder's summary, a training run its replicas': the
            # attempt written last is the job's state.
            newest = max(runs, key=lambda folder: (folder / "summary.json").stat().st_mtime_ns)
            kept = [job] if newest == job else [folder for folder in runs if folder != job]
            runs = jobs[job] = {folder: runs[folder] for folder in kept}
        records += [(str(folder.relative_to(sweep_dir)), folder, summary) for folder, summary in runs.items()]
    for path in sorted(sweep_dir.rglob("refused.json")):
        refused = _readable(path)
        if refused is not None and all(_settings(refused) != _settings(s) for s in jobs.get(path.parent, {}).values()):
            records.append((f"{path.parent.relative_to(sweep_dir)} (refused)", None, refused))
    return records


def _readable(path: Path) -> Optional[Dict]:
    """A job file's contents; a damaged one leaves its job out of the report, said once, and the rest in."""
    try:
        return read_json(path)
    except UsageError as e:
        log.warning("left out of the report: %s", e)
        return None


def _metrics(folder: Path) -> Optional[pd.DataFrame]:
    path = folder / "metrics.csv"
    if not path.is_file() or not path.stat().st_size:
        return None
    try:
        frame = pd.read_csv(path)
    except (ValueError, OSError) as e:  # pandas' ParserError and EmptyDataError are ValueErrors
        log.warning("left out of the curves: %s cannot be read (%s: %s)", path, type(e).__name__, e)
        return None
    return None if frame.empty or "step" not in frame else frame


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def _settings(summary: Dict, without: Sequence[str] = ()) -> FrozenSet[str]:
    """A job's overrides that can change its numbers: the same job whether or not train.threads was given."""
    ignored = ("hydra", *RUN_INDEPENDENT_KEYS, *without)
    return frozenset(o for o in summary.get("overrides", []) if not is_key_under(_key(o), ignored))


def variant_parts(label: str) -> List[str]:
    """'scale.betas=[0.9,0.95],norm=none' -> ['scale.betas=[0.9,0.95]', 'norm=none']: commas inside brackets stay."""
    return re.split(r",(?![^\[\]{}()]*[\]})])", label) if label else []


def _variants(summaries: List[Dict]) -> List[str]:
    """Each job's variant without the parts that every job shares. A summary's own label (identity.variant)
    comes first; a job that failed before training has none and borrows the label of a job with the same
    overrides but the seed, or else is labelled by its overrides."""
    labels = {_settings(s, ["seed"]): s["variant"] for s in summaries if s.get("variant") is not None}
    parts = []
    for s in summaries:
        settings = _settings(s, ["seed"])
        own = ",".join(o.lstrip("+~") for o in s.get("overrides", []) if o in settings and _key(o) not in NOT_A_VARIANT)
        parts.append(variant_parts(s["variant"] if s.get("variant") is not None else labels.get(settings, own)))
    shared = set.intersection(*map(set, parts)) if parts else set()
    return [",".join(p for p in job if p not in shared) for job in parts]


def _ordered(frame: pd.DataFrame) -> pd.DataFrame:
    """Scales as the seed lists them, models in the order they grow, then variants (the baseline first), seeds."""
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
            row[name] = _losses(group, column)
        row["Tokens/s"] = _mean_std(ok.tokens_per_s, 0)
        row["Wall (s)"] = _mean_std(ok.wall_s, 0)
        statuses = group.status.value_counts()
        row["Status"] = ", ".join(f"{s}" if n == len(group) == 1 else f"{n} {s}" for s, n in statuses.items())
        rows.append(row)
    text = _markdown_table(pd.DataFrame(rows)) if rows else "(no jobs)"
    if (table.status == "interrupted").any():
        text += "\n\nAn interrupted job shows the losses of its last evaluation before the stop."
    failures = table[table.status != "ok"]
    if not failures.empty:
        text += "\n\nFailed jobs:\n\n" + "\n".join(f"- `{r.job}`: {r.status}: {r.error}" for r in failures.itertuples())
    return text + "\n"


def _markdown_table(frame: pd.DataFrame) -> str:
    """`frame` as a markdown table, numbers right-aligned as formatted here (tabulate would make '1.900' '1.9')."""
    align = ["left" if c in ("Model", "Scale", "Variant", "Status") else "right" for c in frame.columns]
    return frame.to_markdown(index=False, disable_numparse=True, colalign=align)


def _losses(group: pd.DataFrame, column: str) -> str:
    """Mean ± std over the seeds that finished, then each interrupted seed's last loss, marked as such."""
    cells = [_mean_std(group[group.status == "ok"][column], 3)]
    for row in group[(group.status == "interrupted") & group[column].notna()].itertuples():
        at = "" if pd.isna(row.steps) else f" at step {row.steps}"
        cells.append(f"{getattr(row, column):.3f} (interrupted{at})")
    return "; ".join(c for c in cells if c)


def _int(value) -> str:
    return "" if pd.isna(value) else f"{int(value):,}"


def _mean_std(values: pd.Series, digits: int) -> str:
    values = values.dropna().astype(float)
    return _plus_minus(values.mean(), values.std(), digits)


def _plus_minus(value: float, spread: float, digits: int, sign: str = "") -> str:
    """'1.234 ± 0.010'; the value alone without a spread (one seed); '' without a value."""
    if pd.isna(value):
        return ""
    text = f"{value:{sign},.{digits}f}"
    return text if pd.isna(spread) else f"{text} ± {spread:,.{digits}f}"


def ablation_table(table: pd.DataFrame) -> pd.DataFrame:
    """Each variant's best val loss (over the seeds that finished ok) against its model's baseline, for every
    model and preset that the sweep ran in several variants one of which is a baseline: the empty variant,
    or one that only picks config groups' defaults (remedy=none). difference: variant mean − baseline mean;
    difference_se: its standard error, sqrt(s_v²/n_v + s_b²/n_b), NaN with fewer than two seeds on a side.
    Rows of a model and preset are sorted by difference; no rows when the sweep has no such comparison."""
    defaults = _default_choices()
    rows = []
    for (scale, model), group in table.groupby(["scale", "model"], sort=False):
        variants = list(dict.fromkeys(group.variant))
        candidates = [v for v in variants if set(variant_parts(v)) <= defaults]
        if len(variants) < 2 or not candidates:
            continue
        baseline = min(candidates, key=len)
        ok = group[(group.status == "ok") & group.best_val_loss.notna()]
        base = ok[ok.variant == baseline].best_val_loss.astype(float)
        block = []
        for variant in variants:
            runs = ok[ok.variant == variant]
            loss = runs.best_val_loss.astype(float)
            se = float("nan") if variant == baseline else (loss.sem() ** 2 + base.sem() ** 2) ** 0.5
            block.append(
                {
                    "model": model,
                    "scale": scale,
                    "variant": variant,
                    "baseline": variant == baseline,
                    "params": group[group.variant == variant].params.max(),
                    "seeds": len(loss),
                    "best_val_loss_mean": loss.mean(),
                    "best_val_loss_std": loss.std(),
                    "difference": loss.mean() - base.mean(),
                    "difference_se": se,
                    "tokens_per_s": runs.tokens_per_s.astype(float).mean(),
                }
            )
        rows += sorted(block, key=lambda r: (pd.isna(r["difference"]), r["difference"]))
    return pd.DataFrame(rows, columns=ABLATION_COLUMNS)


def _default_choices() -> Set[str]:
    """'group=option' for every config group's default in conf/config.yaml, e.g. 'remedy=none'."""
    defaults = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "config.yaml").defaults)
    return {f"{g}={o}" for entry in defaults if isinstance(entry, dict) for g, o in entry.items() if o is not None}


def ablation_markdown(ablation: pd.DataFrame) -> str:
    lines = [
        "# Variants against their baseline",
        "",
        "Best val loss: mean ± sample std over the seeds that finished ok. Difference: the variant's mean minus the "
        "baseline's (above 0: worse than the baseline), ± its standard error sqrt(s_v²/n_v + s_b²/n_b), where s is "
        "the sample std and n the number of seeds of the variant (v) and the baseline (b); no ± with one seed. "
        "A difference within about two standard errors of 0 is within the spread between seeds.",
    ]
    for (model, scale), rows in ablation.groupby(["model", "scale"], sort=False):
        shown = pd.DataFrame(
            {
                "Variant": [v or "baseline" for v in rows.variant],
                "Params": rows.params.map(_int),
                "Seeds": rows.seeds,
                "Best val loss": [
                    _plus_minus(mean, std, 3) for mean, std in zip(rows.best_val_loss_mean, rows.best_val_loss_std)
                ],
                "Difference": [
                    "0 (baseline)" if b else _plus_minus(d, se, 3, sign="+")
                    for b, d, se in zip(rows.baseline, rows.difference, rows.difference_se)
                ],
                "Tokens/s": ["" if pd.isna(t) else f"{t:,.0f}" for t in rows.tokens_per_s],
            }
        )
        lines += ["", f"## {model}, scale={scale}", "", _markdown_table(shown)]
    return "\n".join(lines) + "\n"


def what_was_swept(curves: pd.DataFrame) -> str:
    """What the figures compare, e.g. 'variants of TransformerLM (remedy), mean ± std over 3 seeds'."""
    models = [m for m in MODELS if m in set(curves.model)] + sorted(set(curves.model) - set(MODELS))
    subject = ", ".join(models) if len(models) <= 3 else f"{len(models)} models"
    variants = list(dict.fromkeys(curves.variant))
    keys = dict.fromkeys(_key(part) for v in variants for part in variant_parts(v))
    text = f"variants of {subject} ({', '.join(keys)})" if len(variants) > 1 else subject
    seeds = curves.groupby(["scale", "model", "variant"]).seed.nunique().max()
    return text + (f", mean ± std over {seeds} seeds" if seeds > 1 else "")


def write_figures(sweep_dir: Path, curves: pd.DataFrame, ablation: pd.DataFrame) -> List[Path]:
    """train_loss.png, val_loss.png and loss.png (when any job evaluated), ablation.png (when `ablation` has a
    difference) in sweep_dir; returns the paths written."""
    figures = {}
    if not curves.empty:
        swept = what_was_swept(curves)
        figures["train_loss.png"] = plots.curve_figure(curves, "train_loss", f"train loss — {swept}")
        figures["val_loss.png"] = plots.curve_figure(curves, "val_loss", f"val loss — {swept}")
        figures["loss.png"] = plots.comparison_figure(curves, f"train (dashed) and val (solid) loss — {swept}")
    if ablation.difference.notna().any():
        figures["ablation.png"] = plots.ablation_figure(ablation)
    paths = []
    for name, figure in figures.items():
        figure.savefig(sweep_dir / name, dpi=120)
        paths.append(sweep_dir / name)
    return paths


@dataclass
class Report:
    table: pd.DataFrame  # comparison.csv
    ablation: pd.DataFrame  # ablation.csv; empty without variants of one model
    figures: List[Path]
    curves: pd.DataFrame  # every job's metrics.csv rows, tagged with its model, scale, variant and seed


def write_report(sweep_dir: Path) -> Report:
    sweep_dir = Path(sweep_dir)
    table, curves = collect(sweep_dir)
    table.to_csv(sweep_dir / "comparison.csv", index=False)
    (sweep_dir / "summary.md").write_text(markdown(table))
    ablation = ablation_table(table)
    if not ablation.empty:
        ablation.to_csv(sweep_dir / "ablation.csv", index=False)
        (sweep_dir / "ablation.md").write_text(ablation_markdown(ablation))
    return Report(table, ablation, write_figures(sweep_dir, curves, ablation), curves)


class SweepReport(Callback):
    """Writes the comparison when a sweep ends; the sweep exits non-zero if any job did not finish ok."""

    def __init__(self):
        self.signals: Optional[SweepSignals] = None

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        self.signals = SweepSignals(Path(config.hydra.sweep.dir))

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if self.signals is not None:
            self.signals.restore()
        report = write_report(sweep_dir)
        table = report.table
        group = config.logger.group or str(sweep_dir)
        log_sweep_summary(sweep_dir, config.logger, group, table, None if report.ablation.empty else report.ablation,
                          report.figures, report.curves)
        failed = table[table.status != "ok"]
        log.info("comparison of %d jobs in %s", len(table), sweep_dir)
        stopped = sweep_stopped(sweep_dir)
        if stopped:
            print(
                f"sweep stopped by {stopped}: {len(table) - len(failed)} of its jobs finished, comparison in "
                f"{sweep_dir}; run the same command with hydra.sweep.dir={sweep_dir} to continue",
                file=sys.stderr,
            )
            sys.exit(128 + signal.Signals[stopped].value)
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
    table = write_report(args.sweep_dir).table
    print(f"wrote comparison.csv, summary.md and plots for {len(table)} jobs in {args.sweep_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
