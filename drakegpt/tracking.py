"""The run's own files: metrics.csv (a row per evaluation), summary.json and sample.txt, mirrored to a W&B run
(drakegpt/wandb_session.py) when logger.name is wandb; the training clock (tokens per second, evaluation
and first iteration excluded) and the projected time of a run, said once."""

import csv
import io
import logging
import math
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

from drakegpt.files import append_line, atomic_write, os_reason, write_json
from drakegpt.run_dir import METRIC_COLUMNS, RunDir
from drakegpt.schema import LoggerConfig
from drakegpt.wandb_session import RunInfo, WandbRun

__all__ = ["METRIC_COLUMNS", "Clock", "RunInfo", "Tracker", "open_trackers", "projection"]

log = logging.getLogger(__name__)


class Tracker:
    """One run's (or replica's) local files, and its W&B run if there is one."""

    def __init__(self, files: RunDir, logger: LoggerConfig, run: RunInfo, history: List[Dict[str, float]]):
        self.files = files
        # metrics.csv is rebuilt from the checkpoint's record of every evaluation: rows past the checkpoint
        # (the resumed run writes them again) go, and a lost or shortened file comes back.
        text = io.StringIO()
        writer = csv.DictWriter(text, METRIC_COLUMNS)
        writer.writeheader()
        writer.writerows(_csv_row(row) for row in history)
        atomic_write(files.metrics, lambda f: f.write(text.getvalue().encode()))
        self.wandb: Optional[WandbRun] = WandbRun(logger, files.root, run, history) if logger.name == "wandb" else None

    def log_eval(self, row: Dict[str, float]) -> None:
        text = io.StringIO()
        csv.DictWriter(text, METRIC_COLUMNS).writerow(_csv_row(row))
        append_line(self.files.metrics, text.getvalue())
        if self.wandb is not None:
            self.wandb.log_eval(row)

    def log_model(self, path: Path, metadata: Dict[str, Any], best: bool) -> None:
        if self.wandb is not None:
            self.wandb.log_model(path, metadata, best)

    def write_sample(self, text: str) -> None:
        atomic_write(self.files.sample, lambda f: f.write(text.encode()))
        if self.wandb is not None:
            self.wandb.log_sample(text)

    def finish(self, summary: Dict[str, Any], best_effort: bool = False) -> None:
        """Write summary.json and end the W&B run, the second even when the first fails. Best effort (for a run
        that failed already): a write that fails is logged, not raised."""
        try:
            write_json(summary, self.files.summary)
        except OSError as e:
            if not best_effort:
                raise
            log.error("could not write %s: %s", self.files.summary, os_reason(e))
        finally:
            if self.wandb is not None:
                wandb_run, self.wandb = self.wandb, None
                wandb_run.finish(summary)


def open_trackers(replicas, cfg, identity) -> None:
    """Each replica's tracker; its W&B run is named by what differs between a sweep's jobs, grouped by the sweep."""
    run_folder = replicas[0].files.root if len(replicas) == 1 else replicas[0].files.root.parent
    for replica in replicas:
        parts = (cfg.model.name, cfg.scale.name, ",".join(identity.name_parts), f"s{replica.seed}")
        run = RunInfo("-".join(p for p in parts if p), identity.group or run_folder.name, replica.run_id,
                      replica.config, identity.choices, identity.variant_parts)
        replica.tracker = Tracker(replica.files, cfg.logger, run, replica.progress.history)


class Clock:
    """Training time and tokens since the last evaluation, banked into each replica's totals at the next one; the
    first iteration (warm-up, compilation) is never timed."""

    def __init__(self, elapsed_s: float):
        self.started = time.perf_counter() - elapsed_s
        self.since: Optional[float] = None  # when timing restarted; None until an iteration ends
        self.tokens = 0
        self.eval_s = 0.0  # how long the last evaluation took

    def restart(self) -> None:
        self.since, self.tokens = time.perf_counter(), 0

    def count(self, tokens: int) -> None:
        if self.since is None:
            self.restart()  # the first iteration after a start or an evaluation: time from its end
        else:
            self.tokens += tokens

    def bank(self, progresses) -> float:
        """Move the time and tokens counted into each progress' totals; return their rate (per replica)."""
        elapsed = time.perf_counter() - self.started
        seconds = time.perf_counter() - self.since if self.since is not None and self.tokens else 0.0
        for p in progresses:
            p.elapsed_s = elapsed
            if seconds:
                p.train_time_s += seconds
                p.train_tokens += self.tokens
        rate = self.tokens / seconds if seconds else math.nan
        self.since, self.tokens = None, 0
        return rate

    def rate(self, progress) -> float:
        """Tokens per second so far, the banked and the counted."""
        seconds = progress.train_time_s + (time.perf_counter() - self.since if self.since is not None else 0.0)
        return (progress.train_tokens + self.tokens) / seconds if seconds else 0.0

    def step_s(self, tokens_per_step: int) -> Optional[float]:
        """Seconds an iteration takes, once the counted ones have run a while; else None."""
        if self.since is None or not self.tokens or time.perf_counter() - self.since < PROJECT_AFTER_S:
            return None
        return (time.perf_counter() - self.since) * tokens_per_step / self.tokens


PROJECT_AFTER_S = 5.0  # the projected time of a run is said once its iterations have run this long


def summary_record(replica, run: Dict[str, Any], status: str, extra: Dict[str, Any]) -> Dict[str, Any]:
    """summary.json: what the run is (`run`, and the replica's seed, switches, preset and shape), where its
    losses stand, and how it ended."""
    p, config, last = replica.progress, replica.config, replica.progress.last_row
    best = p.best_val_loss if math.isfinite(p.best_val_loss) else None
    return {
        **{k: run[k] for k in ("model", "scale", "variant")}, "seed": replica.seed,
        **{k: run[k] for k in ("params", "vocab_size")}, "steps": p.step, "eval": run["eval"],
        "final_train_loss": last.get("train_loss"), "final_val_loss": last.get("val_loss"),
        "final_val_bpc": last.get("val_bpc"), "best_val_loss": best,
        "best_val_bpc": None if best is None else best / math.log(2), "best_step": p.best_step,
        "saved_step": p.saved_step, "tokens_per_s": p.train_tokens / p.train_time_s if p.train_time_s else None,
        "wall_s": p.elapsed_s, **{k: run[k] for k in ("device", "threads", "precision", "compiled", "replicas")},
        "run_id": replica.run_id, **{k: run[k] for k in ("digest", "overrides", "choices")},
        "switches": config["model"], "preset": config.get("preset", {}),
        "shape": {k: config["scale"][k] for k in ("context_length", "batch_size", "embedding_dim", "num_heads",
                                                   "num_layers")},
        "status": status, **extra,
    }


def projection(iters_left: int, step_s: float, eval_interval: int, eval_s: float, jobs_left: int) -> str:
    """'projected: about 11 h 20 min more for this run (...)' and, in a sweep, the same for the jobs after it."""
    evals_left = -(-iters_left // eval_interval) if iters_left > 0 else 0
    seconds = iters_left * step_s + evals_left * eval_s
    line = (f"projected: about {duration(seconds)} more for this run ({iters_left:,} iterations at "
            f"{step_s * 1000:,.1f} ms, {evals_left} evaluations at {eval_s:,.1f} s); Ctrl-C stops it with a checkpoint")
    if jobs_left:
        line += f"; the {jobs_left} jobs after it in this sweep about {duration(seconds * jobs_left)} more if alike"
    return line


def duration(seconds: float) -> str:
    """'45 s', '12 min', '3 h 05 min'."""
    if not math.isfinite(seconds):
        return "?"
    if seconds < 90:
        return f"{seconds:.0f} s"
    minutes = round(seconds / 60)
    return f"{minutes} min" if minutes < 90 else f"{minutes // 60} h {minutes % 60:02d} min"


def _csv_row(row: Dict[str, float]) -> Dict[str, str]:
    return {"step": row["step"], **{k: _csv_number(row.get(k, math.nan)) for k in METRIC_COLUMNS[1:]}}


def _csv_number(value: float) -> str:
    return "" if value is None or math.isnan(value) else f"{value:.6g}"
