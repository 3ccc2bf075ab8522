"""metrics.csv and summary.json in every run folder, mirrored to Weights & Biases when asked."""

import csv
import io
import logging
import math
from typing import Any, Dict, List, Optional

from drakegpt.checkpoint import RunDir, atomic_write, write_json
from drakegpt.config import LoggerConfig

log = logging.getLogger(__name__)

METRIC_COLUMNS = ["step", "train_loss", "val_loss", "lr", "tokens_per_s", "elapsed_s"]


class Tracker:
    def __init__(
        self,
        files: RunDir,
        logger: LoggerConfig,
        name: str,
        group: Optional[str],
        config: Dict[str, Any],
        run_id: str,
        resume_step: Optional[int],
    ):
        self.files = files
        if resume_step is None:
            self._rewrite_metrics([])
        else:  # rows past the checkpoint were not in its state: drop them, the resumed run writes them again
            self._rewrite_metrics([r for r in self.read_metrics() if int(r["step"]) <= resume_step])
        self.wandb_run = None
        if logger.name == "wandb":
            import wandb

            self.wandb_run = wandb.init(
                project=logger.project,
                entity=logger.entity,
                name=name,
                group=group,
                config=config,
                dir=str(files.root),
                mode=logger.mode.value,
                id=run_id,
                resume="allow",
                settings=wandb.Settings(silent=True),
            )
            self.wandb_run.define_metric("*", step_metric="step")

    def read_metrics(self) -> List[Dict[str, str]]:
        if not self.files.metrics.is_file():
            return []
        with open(self.files.metrics, newline="") as f:
            return list(csv.DictReader(f))

    def _rewrite_metrics(self, rows: List[Dict[str, Any]]) -> None:
        text = io.StringIO()
        writer = csv.DictWriter(text, METRIC_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
        atomic_write(self.files.metrics, lambda f: f.write(text.getvalue().encode()))

    def log_eval(self, row: Dict[str, float]) -> None:
        with open(self.files.metrics, "a", newline="") as f:
            csv.DictWriter(f, METRIC_COLUMNS).writerow(
                {"step": row["step"], **{k: _csv_number(row[k]) for k in METRIC_COLUMNS[1:]}}
            )
        if self.wandb_run is not None:
            self.wandb_run.log({k: v for k, v in row.items() if not math.isnan(v)})

    def finish(self, summary: Dict[str, Any]) -> None:
        write_json(summary, self.files.summary)
        if self.wandb_run is not None:
            self.wandb_run.summary.update({k: v for k, v in summary.items() if k != "error" and v is not None})
            self.wandb_run.finish(exit_code=0 if summary["status"] == "ok" else 1)
            self.wandb_run = None


def _csv_number(value: float) -> str:
    return "" if math.isnan(value) else f"{value:.6g}"
