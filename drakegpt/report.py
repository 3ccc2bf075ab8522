"""The comparison of a sweep, in tables and figures written into its folder.

comparison.csv and summary.md (a row per job, and per group of seeds), train_loss.png and val_loss.png (the
original's two figures), loss.png (train and val together); when the sweep compares models, models.png (each
model's final val loss) and params.png (loss against parameters); when it compares variants of a model with
its baseline (experiment=ablation, additions, overfitting), ablation.csv, ablation.md and ablation.png: each
variant's difference from the baseline, paired seed by seed, with its 95% interval and a verdict.

Everything comes from the jobs' own files (summary.json, metrics.csv): what a job is (its model preset,
switches, Hydra choices, shape) is recorded there when it runs. Written by a Hydra callback when a sweep ends
(any launcher), or rebuilt from any folder of sweeps, such as one copied back from a cluster, or several
sweeps to compare across them: `python -m drakegpt.report <folder>`.
"""

import logging
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, FrozenSet, List, Optional, Sequence, Tuple

import pandas as pd

from drakegpt import plots
from drakegpt.errors import OneLineParser, UsageError
from drakegpt.files import os_reason, read_json
from drakegpt.models.config import ideas_on
from drakegpt.identity import GROUPS_NOT_IN_VARIANT
from drakegpt.overrides import is_under, key_of
from drakegpt.schema import RUN_INDEPENDENT_KEYS
from drakegpt.statistics import compare, describe, holm

log = logging.getLogger(__name__)

COLUMNS = ["model", "scale", "variant", "seed", "params", "steps", "eval", "final_train_loss", "final_val_loss",
           "final_val_bpc", "best_val_loss", "best_val_bpc", "best_step", "test_loss", "test_bpc", "tokens_per_s",
           "wall_s", "status", "error", "job"]
NUMBERS = ["seed", "params", "steps", "final_train_loss", "final_val_loss", "final_val_bpc", "best_val_loss",
           "best_val_bpc", "best_step", "test_loss", "test_bpc", "tokens_per_s", "wall_s"]
PLOTTED = ("ok", "interrupted")  # a diverged or failed run's curve would drag its seeds' mean
ABLATION_COLUMNS = ["model", "scale", "variant", "baseline", "params", "seeds", "best_val_loss_mean",
                    "best_val_loss_std", "difference", "low", "high", "detectable", "method", "verdict", "p_value",
                    "holds_for_all", "tokens_per_s"]
UNRANKED = 1000  # a job whose summary records no preset: after the ladder


def collect(sweep_dir: Path) -> Tuple[pd.DataFrame, pd.DataFrame]:
    """One row per job (with `rank` and `scale_rank` for ordering, and `config`: what tells distinct jobs apart
    but the seed), and every plotted job's metrics.csv rows tagged with its model, scale, variant and seed."""
    records = _records(sweep_dir)
    variants = _variants([summary for _, _, summary in records])
    jobs, curves = [], []
    for (job, folder, summary), variant in zip(records, variants):
        for key in ("model", "scale", "status", "error"):  # names are text: a damaged summary's 123 or null too
            if summary.get(key) is not None and not isinstance(summary[key], str):
                log.warning("%s/%s: %s=%r is not a name; read as %r", sweep_dir, job, key, summary[key],
                            str(summary[key]))
                summary = {**summary, key: str(summary[key])}
        summary = {**summary, **{k: summary.get(k) or "?" for k in ("model", "scale")}}
        row = {**{c: summary.get(c) for c in COLUMNS}, "variant": variant, "job": job,
               "rank": _rank(summary), "scale_rank": _scale_rank(summary), "config": _config_key(summary)}
        metrics = _metrics(folder) if folder is not None else None
        if metrics is not None and row["status"] == "interrupted":  # an older summary may lack the last losses
            last = metrics.iloc[-1]
            found = {"steps": last.step, "final_train_loss": last.train_loss, "final_val_loss": last.val_loss,
                     "best_val_loss": metrics.val_loss.min()}
            row.update({k: v for k, v in found.items() if row[k] is None})
        if metrics is not None and row["status"] in PLOTTED:
            curves.append(metrics.assign(job=job))
        jobs.append(row)
    table = pd.DataFrame(jobs, columns=[*COLUMNS, "rank", "scale_rank", "config"])
    for column in NUMBERS:
        table[column] = _numbers(table, column, sweep_dir)
    table = _ordered(table).reset_index(drop=True)
    for column in ("params", "steps", "seed", "best_step"):
        table[column] = table[column].round().astype("Int64")
    if not curves:
        return table, pd.DataFrame()
    tags = table[["job", "model", "scale", "variant", "seed", "rank", "scale_rank"]]
    return table, pd.concat(curves, ignore_index=True).merge(tags, on="job")


def _numbers(table: pd.DataFrame, column: str, sweep_dir: Path) -> pd.Series:
    """A column as numbers; a value that is not one (a damaged summary) is left empty, said once."""
    values = pd.to_numeric(table[column], errors="coerce")
    bad = table[values.isna() & table[column].notna()]
    for row in bad.itertuples():
        log.warning("%s/%s: %s=%r is not a number; left empty", sweep_dir, row.job, column, getattr(row, column))
    return values


def _rank(summary: Dict) -> int:
    """The model's place on the ladder: each preset switches on one more idea than the one before it."""
    preset = summary.get("preset")
    return ideas_on(preset) if isinstance(preset, dict) and preset else UNRANKED


def _scale_rank(summary: Dict) -> float:
    """Smaller presets first: by the width and context their shape records."""
    shape = summary.get("shape")
    if not isinstance(shape, dict):
        return float("inf")
    try:
        return float(shape.get("embedding_dim", 0)) * 1e6 + float(shape.get("context_length", 0))
    except (TypeError, ValueError):
        return float("inf")


def _records(sweep_dir: Path) -> List[Tuple[str, Optional[Path], Dict]]:
    """(job, folder, summary) of every run under the folder, each job once however often its sweep ran: the job
    folder's summary.json or its replicas' (seed=<s>/summary.json), and a refused.json beside them unless
    it is the job's own failure again (a re-run of a job that fails before training finds its summary there)."""
    jobs: Dict[Path, Dict[Path, Dict]] = {}
    for path in sorted(sweep_dir.rglob("summary.json")):
        summary = _readable(path)
        if summary is None:
            continue
        folder = path.parent
        replica = _int_or(summary.get("replicas"), 1) > 1 and folder.name == f"seed={summary.get('seed')}"
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


def _int_or(value, default: int) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


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
    if frame.empty or "step" not in frame:
        return None
    numeric = frame.apply(pd.to_numeric, errors="coerce")
    if (numeric.isna() & frame.notna()).any().any():
        log.warning("%s has cells that are not numbers; they are left out of the curves", path)
    return numeric.dropna(subset=["step"])


def _settings(summary: Dict, without: Sequence[str] = ()) -> FrozenSet[str]:
    """A job's overrides that can change its numbers: the same job whether or not train.threads was given."""
    ignored = ("hydra", *RUN_INDEPENDENT_KEYS, *without)
    overrides = summary.get("overrides") if isinstance(summary.get("overrides"), list) else []
    return frozenset(str(o) for o in overrides if not is_under(key_of(str(o)), ignored))


def _config_key(summary: Dict) -> str:
    """What tells this job from the others but its seed: jobs with equal keys are seeds of one experiment arm."""
    return ",".join(sorted(_settings(summary, ["seed"])))


def label_parts(label: str) -> List[str]:
    """'scale.betas=[0.9,0.95],norm=none' -> ['scale.betas=[0.9,0.95]', 'norm=none']: commas inside brackets stay."""
    return re.split(r",(?![^\[\]{}()]*[\]})])", label) if label else []


def _variants(summaries: List[Dict]) -> List[str]:
    """Each job's variant without the parts that every job shares. A summary's own label (identity.variant_parts)
    comes first; a job that failed before training has none and borrows the label of a job with the same
    overrides but the seed, or else is labelled by its overrides but the presets'."""
    labels = {_settings(s, ["seed"]): s["variant"] for s in summaries if isinstance(s.get("variant"), str)}
    parts = []
    for s in summaries:
        settings = _settings(s, ["seed"])
        overrides = [str(o) for o in s.get("overrides") or [] if str(o) in settings]  # in the order given
        own = ",".join(o.lstrip("+~") for o in overrides if key_of(o) not in GROUPS_NOT_IN_VARIANT)
        label = s["variant"] if isinstance(s.get("variant"), str) else labels.get(settings, own)
        parts.append(label_parts(label))
    shared = set.intersection(*map(set, parts)) if parts else set()
    return [",".join(p for p in job if p not in shared) for job in parts]


def _ordered(frame: pd.DataFrame) -> pd.DataFrame:
    """Smaller presets first, models in the order they grow, then variants (the baseline first), seeds."""
    return frame.sort_values(["scale_rank", "scale", "rank", "model", "variant", "config", "seed"], kind="stable",
                             na_position="last")


def _arms(table: pd.DataFrame):
    """The rows of each arm of the comparison: one model, preset and variant, and one config but the seed. Distinct
    jobs never pool, even when their labels are alike."""
    return table.groupby(["scale", "model", "variant", "config"], sort=False, dropna=False)


def markdown(table: pd.DataFrame) -> str:
    """A readable table; jobs that differ only by seed become one row of mean ± std."""
    rows = []
    with_variants = (table.variant != "").any()
    for (scale, model, variant, _), group in _arms(table):
        ok = group[group.status == "ok"]
        row = {"Model": model, "Scale": scale, **({"Variant": variant} if with_variants else {}),
               "Params": _int(group.params.dropna().max()), "Seeds": len(group)}
        for name, column in [("Final train loss", "final_train_loss"), ("Final val loss", "final_val_loss"),
                             ("Best val loss", "best_val_loss"), ("Best step", "best_step")]:
            row[name] = _losses(group, column, 0 if column == "best_step" else 3)
        if group.test_loss.notna().any():
            row["Test loss"] = _mean_std(ok.test_loss, 3)
        row["Tokens/s"] = _mean_std(ok.tokens_per_s, 0)
        row["Wall (s)"] = _mean_std(ok.wall_s, 0)
        statuses = group.status.value_counts()
        row["Status"] = ", ".join(f"{s}" if n == len(group) == 1 else f"{n} {s}" for s, n in statuses.items())
        rows.append(row)
    text = _header(table) + (_markdown_table(pd.DataFrame(rows)) if rows else "(no jobs)")
    if (table.status == "interrupted").any():
        text += "\n\nAn interrupted job shows the losses of its last evaluation before the stop."
    failures = table[table.status != "ok"]
    if not failures.empty:
        text += "\n\nFailed jobs:\n\n" + "\n".join(f"- `{r.job}`: {r.status}: {r.error}" for r in failures.itertuples())
    return text + "\n"


def _header(table: pd.DataFrame) -> str:
    """Which split, which step and which evaluation the numbers are."""
    protocols = sorted(set(table["eval"].dropna().astype(str)))
    how = {"exact": "every val character predicted once", "random": "random batches drawn once per run"}
    evaluation = "; ".join(f"{p} ({how.get(p, p)})" for p in protocols) or "as recorded"
    return (
        "Cross-entropy in nats on the val split (bits per character = nats / ln 2; the bpc columns are in "
        f"comparison.csv), evaluation: {evaluation}. Final: the last evaluation's; best: the lowest over the run, "
        "at the best step" + ("; test: the test split, once, on the weights the run published (never used to "
                              "choose)" if table.test_loss.notna().any() else "")
        + ". Mean ± sample std over seeds.\n\n"
    )


def _markdown_table(frame: pd.DataFrame) -> str:
    """`frame` as a markdown table, numbers right-aligned as formatted here (tabulate would make '1.900' '1.9')."""
    align = ["left" if c in ("Model", "Scale", "Variant", "Status", "Verdict") else "right" for c in frame.columns]
    return frame.to_markdown(index=False, disable_numparse=True, colalign=align)


def _losses(group: pd.DataFrame, column: str, digits: int) -> str:
    """Mean ± std over the seeds that finished, then each interrupted seed's last value, marked as such."""
    cells = [_mean_std(group[group.status == "ok"][column], digits)]
    for row in group[(group.status == "interrupted") & group[column].notna()].itertuples():
        at = "" if pd.isna(row.steps) else f" at step {row.steps}"
        cells.append(f"{getattr(row, column):.{digits}f} (interrupted{at})")
    return "; ".join(c for c in cells if c)


def _int(value) -> str:
    return "" if pd.isna(value) else f"{int(value):,}"


def _mean_std(values: pd.Series, digits: int) -> str:
    values = values.dropna().astype(float)
    return _plus_minus(values.mean(), values.std(), digits)


def _plus_minus(value: float, spread: float, digits: int) -> str:
    """'1.234 ± 0.010'; the value alone without a spread (one seed); '' without a value."""
    if pd.isna(value):
        return ""
    text = f"{value:,.{digits}f}"
    return text if pd.isna(spread) else f"{text} ± {spread:,.{digits}f}"


def ablation_table(table: pd.DataFrame) -> pd.DataFrame:
    """Each variant's best val loss against its model's baseline (the arm with no variant), for every model and
    preset the sweep ran in several variants: the difference paired seed by seed over the seeds both share
    (Welch's unpaired interval where they share none), its 95% interval from the t distribution, the smallest
    difference the run could have called an effect, and the verdict that interval gives. Rows of a model and
    preset are sorted by difference; no rows when the sweep has no such comparison."""
    rows = []
    ok = table[(table.status == "ok") & table.best_val_loss.notna()]
    for (scale, model), group in table.groupby(["scale", "model"], sort=False):
        arms = list(dict.fromkeys(zip(group.variant, group.config)))
        baselines = [arm for arm in arms if arm[0] == ""]
        if len(arms) < 2 or len(baselines) != 1:
            continue
        here = ok[(ok.scale == scale) & (ok.model == model)]
        base = here[(here.variant == "") & (here.config == baselines[0][1])]
        base_losses = dict(zip(base.seed.astype(int), base.best_val_loss.astype(float)))
        block = []
        for variant, config in arms:
            runs = here[(here.variant == variant) & (here.config == config)]
            losses = dict(zip(runs.seed.astype(int), runs.best_val_loss.astype(float)))
            is_base = (variant, config) == baselines[0]
            d = compare(losses, base_losses)
            block.append({
                "model": model, "scale": scale, "variant": variant, "baseline": is_base,
                "params": group[(group.variant == variant) & (group.config == config)].params.max(),
                "seeds": len(losses), "best_val_loss_mean": runs.best_val_loss.astype(float).mean(),
                "best_val_loss_std": runs.best_val_loss.astype(float).std(),
                **({"difference": 0.0} if is_base else {"difference": d.mean, "low": d.low, "high": d.high,
                                                         "detectable": d.detectable, "method": d.method,
                                                         "verdict": d.verdict, "p_value": d.p_value}),
                "tokens_per_s": runs.tokens_per_s.astype(float).mean(),
            })
        variants = [row for row in block if not row["baseline"]]
        for row, holds in zip(variants, holm([row["p_value"] for row in variants])):
            row["holds_for_all"] = holds and row["verdict"] in ("better", "worse")
        rows += sorted(block, key=lambda r: (not r["baseline"], pd.isna(r["difference"]), r["difference"]))
    return pd.DataFrame(rows, columns=ABLATION_COLUMNS)


def ablation_markdown(ablation: pd.DataFrame) -> str:
    lines = [
        "# Variants against their baseline",
        "",
        "Best val loss (nats): mean ± sample std over the seeds that finished ok. Difference: the variant's minus the "
        "baseline's (below 0: better), over the seeds both ran, paired seed by seed (each seed's variant against the "
        "same seed's baseline: same initial draws, batches and evaluation), with its 95% interval from the t "
        "distribution (n − 1 degrees of freedom; Welch's unpaired interval where no two seeds are shared). Verdict: "
        "better or worse when the interval excludes 0, else no effect detected; detectable: half the interval's "
        "width, the smallest difference this run could have told from 0. p: the paired t test's two-sided p-value. "
        "Holds for all: the verdict still holds when the table's variants of that model and preset are read at once "
        "(Holm's correction at 5%: read alone, each verdict has a 5% chance of being wrong, a table of seven about "
        "a 30% chance of holding one wrong verdict).",
    ]
    for (model, scale), rows in ablation.groupby(["model", "scale"], sort=False):
        shown = pd.DataFrame({
            "Variant": [v or "baseline" for v in rows.variant],
            "Params": rows.params.map(_int),
            "Seeds": rows.seeds,
            "Best val loss": [_plus_minus(m, s, 3) for m, s in zip(rows.best_val_loss_mean, rows.best_val_loss_std)],
            "Difference [95% interval]": ["0 (baseline)" if r.baseline else _interval(r) for r in rows.itertuples()],
            "Verdict": ["" if r.baseline else r.verdict for r in rows.itertuples()],
            "Detectable": ["" if r.baseline or pd.isna(r.detectable) else f"±{r.detectable:.3f}"
                           for r in rows.itertuples()],
            "p": ["" if r.baseline else _p_value(r.p_value) for r in rows.itertuples()],
            "Holds for all": ["" if r.baseline or r.verdict not in ("better", "worse") else
                              "yes" if bool(r.holds_for_all) else "no" for r in rows.itertuples()],
            "Tokens/s": ["" if pd.isna(t) else f"{t:,.0f}" for t in rows.tokens_per_s],
        })
        lines += ["", f"## {model}, scale={scale}", "", _markdown_table(shown)]
    return "\n".join(lines) + "\n"


def _interval(row) -> str:
    from drakegpt.statistics import Difference

    return describe(Difference(row.difference, row.low, row.high, row.detectable, row.method, row.seeds, float("nan"),
                               row.verdict, row.p_value))


def _p_value(p: float) -> str:
    return "" if pd.isna(p) else "<0.001" if p < 0.001 else f"{p:.3f}"


def what_was_swept(curves: pd.DataFrame) -> str:
    """What the figures compare, e.g. 'variants of TransformerLM (remedy), mean ± std over 3 seeds'."""
    models = list(curves.sort_values(["rank", "model"]).model.drop_duplicates())
    subject = ", ".join(models) if len(models) <= 3 else f"{len(models)} models"
    variants = list(dict.fromkeys(curves.variant))
    keys = dict.fromkeys(key_of(part) for v in variants for part in label_parts(v))
    text = f"variants of {subject} ({', '.join(keys)})" if len(variants) > 1 else subject
    seeds = curves.groupby(["scale", "model", "variant"]).seed.nunique().max()
    return text + (f", mean ± std over {seeds} seeds" if seeds > 1 else "")


def write_figures(sweep_dir: Path, table: pd.DataFrame, curves: pd.DataFrame, ablation: pd.DataFrame) -> List[Path]:
    """The figures that fit what the sweep compares, in sweep_dir; returns the paths written."""
    figures = {}
    if not curves.empty:
        swept = what_was_swept(curves)
        figures["train_loss.png"] = plots.curve_figure(curves, "train_loss", f"train loss — {swept}")
        figures["val_loss.png"] = plots.curve_figure(curves, "val_loss", f"val loss — {swept}")
        figures["loss.png"] = plots.comparison_figure(curves, f"train (dashed) and val (solid) loss — {swept}")
    presets = table[(table.variant == "") & (table.status == "ok")]
    if presets.model.nunique() > 1:
        figures["models.png"] = plots.models_figure(table)
        figures["params.png"] = plots.params_figure(table)
    if ablation.difference.notna().any() and (~ablation.baseline).any():
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
    """Every table and figure, into sweep_dir; a folder that cannot be written is one line."""
    sweep_dir = Path(sweep_dir)
    table, curves = collect(sweep_dir)
    ablation = ablation_table(table)
    try:
        table.drop(columns=["rank", "scale_rank", "config"]).to_csv(sweep_dir / "comparison.csv", index=False)
        (sweep_dir / "summary.md").write_text(markdown(table))
        if not ablation.empty:
            ablation.to_csv(sweep_dir / "ablation.csv", index=False)
            (sweep_dir / "ablation.md").write_text(ablation_markdown(ablation))
        figures = write_figures(sweep_dir, table, curves, ablation)
    except OSError as e:
        raise UsageError(f"cannot write the report into {sweep_dir} ({os_reason(e)}); copy the folder somewhere "
                         f"writable and run python -m drakegpt.report on the copy") from None
    return Report(table, ablation, figures, curves)


def main(argv: List[str] = None) -> int:
    parser = OneLineParser(prog="python -m drakegpt.report", description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", type=Path, help="a sweep folder (multirun/<date>), or a folder of several")
    args = parser.parse_args(argv)
    if not args.sweep_dir.is_dir():
        print(f"error: {args.sweep_dir} is not a folder; pass a sweep folder such as multirun/<date>", file=sys.stderr)
        return 2
    if not any(args.sweep_dir.rglob("summary.json")):
        print(f"error: no job folders (with a summary.json) under {args.sweep_dir}; pass a sweep folder",
              file=sys.stderr)
        return 2
    try:
        table = write_report(args.sweep_dir).table
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote comparison.csv, summary.md and the figures for {len(table)} jobs in {args.sweep_dir}")
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    sys.exit(main())
