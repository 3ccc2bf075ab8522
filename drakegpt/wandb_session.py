"""The W&B side of a run: its session (online, offline, or offline after an online start failed), what a run
logs there, and the sweep's comparison run.

W&B never stalls a run nor loses one. Online without an API key, or with a server that does not answer
within logger.init_timeout_s, a run logs offline instead and one warning line says why and how to upload
it later (`wandb sync`); the other runs of the process then go offline at once. Ctrl-C during a stuck
online start ends the process at once. Metrics are named as W&B groups panels: `train/loss`, `val/loss`,
`val/bpc`, `lr`, `tokens_per_s`; the best val loss is a run's summary, and published weights are a model
artifact with the aliases `latest` (and `best` when they are the best the run saw).
"""

import contextlib
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence

from drakegpt.errors import UsageError
from drakegpt.files import read_json, write_json
from drakegpt.schema import LoggerConfig, WandbMode

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

ONLINE_MODES = {WandbMode.online, WandbMode.run, WandbMode.shared}
CURVES = ["val_loss", "train_loss"]  # the sweep summary's charts, one line per job
# metrics.csv column -> W&B metric name (the part before '/' groups the panels)
METRIC_NAMES = {"train_loss": "train/loss", "val_loss": "val/loss", "train_bpc": "train/bpc", "val_bpc": "val/bpc",
                "lr": "lr", "tokens_per_s": "tokens_per_s", "elapsed_s": "elapsed_s", "step": "step"}

_online_failed = False  # set once online W&B could not start in this process: later runs go offline silently


@dataclass
class RunInfo:
    """What names a training run on W&B; the Trainer fills one in per replica."""

    name: str  # unique and readable: model-preset-<what differs in the sweep>-seed, e.g. TransformerLM-default-s1
    group: str  # the sweep's folder name for a sweep job, the run's for a single run
    run_id: str  # kept in the checkpoint: a resumed run continues its W&B run
    config: Dict[str, Any]  # the resolved config
    choices: Dict[str, Optional[str]] = field(default_factory=dict)  # Hydra's group choices, _global_ ones too
    variant: Sequence[str] = ()  # identity.variant_parts: a tag each
    job_type: str = "train"


class WandbRun:
    """One run's (or replica's) W&B run."""

    def __init__(self, logger: LoggerConfig, folder: Path, run: RunInfo, history: List[Dict[str, float]]):
        self.folder, self.run_id, self.step = folder, run.run_id, history[-1]["step"] if history else 0
        self.run = start_run(logger, folder, name=run.name, group=run.group, job_type=run.job_type,
                             tags=run_tags(run, logger.tags), config={**run.config, "choices": dict(run.choices)},
                             id=run.run_id, resume="allow")
        self.run.define_metric("step")
        self.run.define_metric("*", step_metric="step")
        self.run.define_metric("val/loss", step_metric="step", summary="min")
        self.run.define_metric("val/bpc", step_metric="step", summary="min")
        # SLURM's SIGTERM (a requeue, a preemption, scancel) reaches every process of the job, wandb-core too,
        # which then dies with the rows it had not written yet. Log again what no attempt saw to its end.
        seen = _logged_steps(self._logged_file).get(run.run_id, -1)
        for row in history:
            if row["step"] > seen:
                self.log_eval(row)

    def log_eval(self, row: Dict[str, float]) -> None:
        self.step = row["step"]
        self.run.log({METRIC_NAMES.get(k, k): v for k, v in row.items() if not math.isnan(v)})

    def log_model(self, path: Path, metadata: Dict[str, Any], best: bool) -> None:
        """The published weights and their config as a W&B model artifact, aliased `latest` (and `best`).

        The artifact is named after the file (<Model>_<scale>-seed<s>-<digest>: one name per config), so that a
        retrained config adds a version. Offline, wandb keeps a copy until `wandb sync`. A failure costs the
        W&B copy only: the weights are published already.
        """
        import wandb

        path = Path(path)
        try:
            name = wandb.util.make_artifact_name_safe(f"{path.parent.name}-{path.stem}")
            artifact = wandb.Artifact(name, "model", metadata=metadata)
            for file in (path, path.with_suffix(".json")):
                artifact.add_file(str(file))
            self.run.log_artifact(artifact, aliases=["latest", "best"] if best else ["latest"])
        except (OSError, ValueError, wandb.errors.Error) as e:
            log.warning("W&B: the weights %s were not attached to the run (%s); they stay published", path, e)

    def log_sample(self, text: str) -> None:
        """The text sampled at the end of training, as a table: W&B shows a table's text as written."""
        import wandb

        self.run.log({"samples": wandb.Table(columns=["step", "text"], data=[[self.step, text]]), "step": self.step})

    def finish(self, summary: Dict[str, Any]) -> None:
        run, self.run = self.run, None
        try:
            run.summary.update({k: v for k, v in summary.items()
                                if k not in ("error", "best_val_loss", "best_val_bpc") and v is not None})
            run.finish(exit_code=0 if summary["status"] == "ok" else 1)
        except Exception as e:  # wandb-core is gone: a SLURM stop signals every process of the job
            log.warning("W&B: the run did not end cleanly (%s: %s); a resume logs its evaluations again",
                        type(e).__name__, e)
            _end_service()
        else:  # every row up to here is in the run: a resume need not log them again
            with contextlib.suppress(OSError):
                write_json({**_logged_steps(self._logged_file), self.run_id: self.step}, self._logged_file)

    @property
    def _logged_file(self) -> Path:
        return self.folder / "wandb" / "logged_steps.json"


def log_sweep_summary(
    sweep_dir: Path,
    logger: LoggerConfig,
    group: str,
    comparison: "pd.DataFrame",
    ablation: Optional["pd.DataFrame"],
    figures: List[Path],
    curves: "pd.DataFrame",
    tags: Sequence[str] = (),
) -> None:
    """One more run in the sweep's group (job_type report) that shows the comparison on the W&B dashboard:
    the comparison and ablation tables, the figures, and each of CURVES against step, one line per job. `tags`:
    what the jobs are tagged with in common (model, preset, experiment), so that one filter shows both.

    `curves` holds every job's metrics.csv rows with columns job, model, scale, variant, seed, step and
    CURVES. A failure costs the W&B copy only: comparison.csv and the figures are in the sweep's folder.
    """
    if logger.name != "wandb":
        return
    import wandb

    try:
        run = start_run(
            logger,
            Path(sweep_dir),
            name=f"comparison-{group}",
            group=group,
            job_type="report",
            tags=list(dict.fromkeys([*tags, *(t[:64] for t in logger.tags)])),
            config={"sweep_dir": str(sweep_dir), "jobs": len(comparison)},
        )
        try:
            data = {"comparison": _table(comparison)}
            if ablation is not None:
                data["ablation"] = _table(ablation)
            for path in figures:
                data[f"figures/{Path(path).stem}"] = wandb.Image(str(path))
            for metric in CURVES:
                if metric in curves:
                    data[metric] = _line_series(curves, metric)
            run.log(data)
        finally:
            run.finish()
    except (OSError, ValueError, wandb.errors.Error) as e:
        log.warning("W&B: the sweep's comparison was not logged (%s); comparison.csv and the figures are in %s",
                    e, sweep_dir)


def _logged_steps(path: Path) -> Dict[str, int]:
    """Which step each W&B run last saw to its end; a damaged record only means logging some rows again."""
    try:
        return read_json(path)
    except UsageError as e:
        log.warning("W&B: %s", e)
        return {}


def run_tags(run: RunInfo, extra: Sequence[str]) -> List[str]:
    """The model, its preset, each variant part, the experiment if any, then logger.tags; W&B takes 64 characters."""
    scale = run.config.get("scale", {}).get("name")
    experiment = run.choices.get("experiment")
    tags = [
        run.config.get("model", {}).get("name"),
        scale and f"scale={scale}",
        *run.variant,
        experiment and f"experiment={experiment}",
        *extra,
    ]
    return list(dict.fromkeys(t[:64] for t in tags if t))


def start_run(logger: LoggerConfig, folder: Path, **init: Any):
    """wandb.init in logger.mode, quiet and bounded; an online run that cannot start logs offline instead."""
    import wandb

    global _online_failed
    wandb.setup(wandb.Settings(silent=True))  # process-wide: the login's own lines only heed these settings
    folder.mkdir(parents=True, exist_ok=True)  # wandb warns about git when its dir is missing
    settings = wandb.Settings(silent=True, console="off", init_timeout=logger.init_timeout_s, reinit="create_new")
    init = dict(project=logger.project, entity=logger.entity, dir=str(folder), settings=settings, **init)
    mode = WandbMode(logger.mode)
    if mode not in ONLINE_MODES:
        return _init(mode.value, init)
    if _online_failed:
        return _init("offline", init)
    # wandb reports its own errors to its server: with the server unreachable that delays the exit by ~20 s.
    os.environ.setdefault("WANDB_ERROR_REPORTING", "false")
    host = _host()
    problem = _credentials_problem(host)
    if problem is None:
        try:
            return _init(mode.value, init)
        except wandb.errors.Error as e:
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            problem = f"{host} did not start the run ({reason}); check the network, WANDB_BASE_URL and the API key"
            wandb.teardown()  # wandb-core keeps the failed run's id: a fresh one logs it offline under the same id
    _online_failed = True
    run = _init("offline", init)
    log.warning("W&B: %s. Logging offline: upload later with `wandb sync %s`", problem, Path(run.settings.sync_dir))
    return run


def _init(mode: str, init: Dict[str, Any]):
    import wandb

    try:
        return wandb.init(mode=mode, **init)
    except KeyboardInterrupt:
        _end_service()
        raise


def _end_service() -> None:
    """Ctrl-C during a stuck online start: wandb-core would hold the process's exit until its own timeout,
    so end it now. Only runs that have not started yet lose anything (wandb 0.31's internals)."""
    import wandb
    from wandb.sdk import wandb_setup

    with contextlib.suppress(Exception):
        process = wandb_setup.singleton()._connection._proc._process
        process.kill()
        process.wait()
    with contextlib.suppress(Exception):  # its goodbye to the ended service fails: there is nothing left to wait for
        wandb.teardown()


def _host() -> str:
    from wandb.sdk import wandb_setup

    return wandb_setup.singleton().settings.base_url  # WANDB_BASE_URL or the settings files, else W&B's cloud


def _credentials_problem(host: str) -> Optional[str]:
    """None when wandb.init's login finds credentials (environment, ~/.netrc, settings), else what to do.

    The same lookup as wandb.init's own, without its interactive prompt (which waits for ever on a
    terminal) and without the network.
    """
    import wandb
    from wandb.sdk.lib import wbauth

    try:
        found = wbauth.authenticate_session(host=host, source="drakegpt", prompt=False, update_session=False)
    except wandb.errors.AuthenticationError as e:
        return f"the API key for {host} is malformed ({e}); run `wandb login --relogin`"
    return None if found else f"no API key for {host}; run `wandb login` or set WANDB_API_KEY"


def _table(frame: "pd.DataFrame"):
    import wandb

    return wandb.Table(dataframe=frame.astype(object).where(frame.notna(), None))  # NaN and <NA> as empty cells


def _line_series(curves: "pd.DataFrame", metric: str):
    import wandb

    lines = [(job, rows.dropna(subset=[metric])) for job, rows in curves.groupby("job", sort=False)]
    return wandb.plot.line_series(
        xs=[rows.step.tolist() for _, rows in lines],
        ys=[rows[metric].tolist() for _, rows in lines],
        keys=[str(job) for job, _ in lines],
        title=f"{metric} by job",
        xname="step",
    )
