"""A run's replicas (train.replicas=K: seeds seed .. seed+K-1 in one model) and whether, and how, it continues.

Each replica has its own folder (`seed=<s>/` inside the run folder; a single run is the folder itself),
resolved config, generators and checkpoints. `plan_replicas` refuses, in one line, a folder that holds
another run or a different config; `restore` puts every replica back where its checkpoint left it, whatever
mix of running, finished, stopped-early and diverged replicas a stopped group holds.
"""

import logging
import math
import secrets
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Set

import torch
from omegaconf import OmegaConf

from drakegpt import checkpoints
from drakegpt.checkpoints import RunCheckpoint
from drakegpt.errors import UsageError
from drakegpt.evaluation import Windows
from drakegpt.identity import config_diff, fingerprint
from drakegpt.run_dir import RunDir

log = logging.getLogger(__name__)


@dataclass
class Progress:
    step: int = 0
    evaluated_step: int = -1
    best_val_loss: float = math.inf
    best_step: int = -1
    evals_since_best: int = 0
    train_tokens: int = 0
    train_time_s: float = 0.0
    elapsed_s: float = 0.0
    saved_step: int = -1  # the step of checkpoints/last.pt
    last_row: Dict[str, float] = field(default_factory=dict)  # the latest evaluation, as in metrics.csv
    history: List[Dict[str, float]] = field(default_factory=list)  # every evaluation: metrics.csv is rebuilt from it
    state: str = "training"  # training | stopped_early | diverged | finished

    def record(self, row: Dict[str, float]) -> bool:
        """An evaluation's row (as in metrics.csv) into the history; whether its val loss is the best so far."""
        self.last_row, self.evaluated_step = row, row["step"]
        self.history.append(row)
        if row["val_loss"] < self.best_val_loss:
            self.best_val_loss, self.best_step, self.evals_since_best = row["val_loss"], row["step"], 0
            return True
        self.evals_since_best += 1
        return False


@dataclass
class Replica:
    """One seed of the run: its folder, resolved config and random streams, and where it stands."""

    seed: int
    files: RunDir
    config: Dict[str, Any]  # the resolved config with this replica's seed
    checkpoint: Optional[RunCheckpoint]  # to resume from
    run_id: str = ""
    digest: str = ""  # what the registry files its weights under (drakegpt/identity.py)
    batches: Optional[torch.Generator] = None
    windows: Dict[str, Windows] = field(default_factory=dict)  # its evaluation windows, per split
    progress: Progress = field(default_factory=Progress)
    tracker: Any = None
    summary: Dict[str, Any] = field(default_factory=dict)

    @property
    def active(self) -> bool:
        return self.progress.state == "training"


def plan_replicas(cfg, resolved: Dict[str, Any], run_dir: Path, resume: bool) -> List[Replica]:
    """Each replica's folder and config, with its checkpoint when the run continues. Refuses, in one line,
    a folder that holds another run, a different config, or a run that cannot be continued as asked."""
    K = cfg.train.replicas
    seeds = [cfg.seed + r for r in range(K)]
    RunDir(run_dir).check_outputs(fresh=not resume)
    held, wanted = runs_held(run_dir), {"."} if K == 1 else {f"seed={s}" for s in seeds}
    if held and held != wanted:  # one folder, one run: a group of replicas is one run, and so is a single run
        raise UsageError(
            f"{run_dir} holds {_describe(held)}, and seed={cfg.seed} train.replicas={K} asks for "
            f"{_describe(wanted)}; continue it with the seed and train.replicas it started with (and "
            f"train.resume=true), or choose another hydra.run.dir"
        )
    replicas = []
    for seed in seeds:
        config = OmegaConf.to_container(OmegaConf.merge(resolved, {"seed": seed}))
        files = RunDir(run_dir if K == 1 else run_dir / f"seed={seed}")
        if K > 1:
            files.check_outputs(fresh=not resume)
        replicas.append(Replica(seed, files, config, _checkpoint_to_resume(files, config, resume)))
    if any(r.checkpoint for r in replicas) and not all(r.checkpoint for r in replicas):
        missing = ", ".join(r.files.root.name for r in replicas if not r.checkpoint)
        raise UsageError(
            f"{run_dir} holds a group of replicas with {missing} missing (deleted or never saved): the group cannot "
            f"continue without every replica; restore the folder, or choose another hydra.run.dir to start over"
        )
    return replicas


def runs_held(run_dir: Path) -> Set[str]:
    """Where this folder holds runs: "." for a single run, seed=<s> for each replica of a group."""
    folders = [run_dir, *sorted(run_dir.glob("seed=*"))]
    return {str(f.relative_to(run_dir)) for f in folders if f.is_dir() and RunDir(f).holds_run()}


def _describe(folders: Set[str]) -> str:
    seeds = sorted(folders - {"."}, key=lambda f: int(f[5:]) if f[5:].lstrip("-").isdigit() else 0)
    parts = (["a single run"] if "." in folders else []) + ([f"replicas {', '.join(seeds)}"] if seeds else [])
    return " and ".join(parts)


def _checkpoint_to_resume(files: RunDir, config: Dict[str, Any], resume: bool) -> Optional[RunCheckpoint]:
    if not files.holds_run():
        return None
    if not resume:
        raise UsageError(
            f"{files.root} already holds a run; add train.resume=true to continue it, or choose another hydra.run.dir"
        )
    if not files.last.is_file():
        if files.best.is_file():
            raise UsageError(
                f"{files.last} is missing but {files.best.name} is there: to continue from the best weights, "
                f"cp {files.best} {files.last} and resume again; to start over, choose another hydra.run.dir"
            )
        if files.evaluations_recorded():  # every evaluation saved a checkpoint: they were there
            raise UsageError(
                f"{files.last} is missing, but the run saved checkpoints there (its metrics.csv records evaluations): "
                f"restore {files.checkpoints} to continue, or choose another hydra.run.dir to start over"
            )
        return None  # the earlier attempt failed before its first checkpoint: start again
    state = checkpoints.load(files.last, RunCheckpoint)
    if fingerprint(state.run_config) != fingerprint(config):
        raise UsageError(
            f"{files.root} holds a run with a different config ({config_diff(state.run_config, config)}); resume "
            f"with the same overrides, or choose another hydra.run.dir"
        )
    return state


def check_resumable(replicas: List[Replica], data_digest: str) -> Replica:
    """The replica whose checkpoint leads the group (a running one: its step, schedule and dropout stream are the
    group's). Refuses other training text, and running replicas whose checkpoints a stop cut at different steps.
    A replica that diverged stays so (its summary says it; its checkpoint is its last good step)."""
    for replica in replicas:
        if _summary_status(replica) == "diverged":
            replica.checkpoint.progress["state"] = "diverged"
    for replica in replicas:
        if replica.checkpoint.data_digest != data_digest:
            raise UsageError(
                f"the training text changed since {replica.files.last} was written (same file name or "
                f"characters, other content); resume with the same data, or choose another hydra.run.dir"
            )
    running = [r for r in replicas if r.checkpoint.progress.get("state", "training") == "training"]
    steps = {r.files.root.name: r.checkpoint.progress["step"] for r in running}
    if len(set(steps.values())) > 1:
        raise UsageError(f"the running replicas' checkpoints are at different steps ({steps}): a kill cut their "
                         f"save; choose another hydra.run.dir to start over")
    return (running or replicas)[0]


def _summary_status(replica: Replica) -> Optional[str]:
    try:
        return replica.files.read_summary().get("status")
    except UsageError:
        return None


def start_streams(replicas: List[Replica], windows: Dict[str, Windows]) -> None:
    """Each replica its run id, batch generator and row of the run's evaluation windows (a resume restores them)."""
    for i, replica in enumerate(replicas):
        replica.run_id = secrets.token_hex(4)
        replica.batches = torch.Generator().manual_seed(replica.seed)
        replica.windows = {split: Windows(w.starts[i:i + 1], w.first_counted[i:i + 1]) for split, w in windows.items()}


def restore(training, replicas: List[Replica], data_digest: str) -> None:
    """Continue from every replica's last.pt: weights, optimizer, schedule, generators, windows, progress."""
    try:
        lead = check_resumable(replicas, data_digest)
        states = [r.checkpoint for r in replicas]
        training.model.load_replica_states([s.model_state for s in states])
        training.optimizer.load_state_dict(
            stack_optimizer_states([s.optimizer_state for s in states], replicas.index(lead)))
        training.schedule.load_state_dict(lead.checkpoint.schedule_state)
        torch.set_rng_state(lead.checkpoint.torch_rng)
        if training.device.type == "cuda" and lead.checkpoint.cuda_rng is not None:
            torch.cuda.set_rng_state(lead.checkpoint.cuda_rng, training.device)
        for replica in replicas:
            _restore_progress(replica, replicas[0].windows)
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as e:
        raise UsageError(f"{replicas[0].files.last} is a damaged checkpoint ({type(e).__name__}: "
                         f"{str(e).splitlines()[0][:120] if str(e) else ''}); restore it, or choose another "
                         f"hydra.run.dir to start over") from None
    log.info("resuming %s at step %d", replicas[0].files.root, lead.progress.step)


def _restore_progress(replica: Replica, splits) -> None:
    """The replica where its checkpoint left it; ValueError (or KeyError, TypeError) where the checkpoint is damaged."""
    state = replica.checkpoint
    replica.batches.set_state(state.batches_rng)
    replica.windows = {split: Windows(*state.eval_windows[split]) for split in splits}
    replica.progress = Progress(**state.progress)
    counters = (replica.progress.step, replica.progress.evaluated_step, replica.progress.best_step)
    if not all(isinstance(n, int) and not isinstance(n, bool) for n in counters) or replica.progress.step < 0:
        raise ValueError(f"its progress counts {counters}")
    replica.run_id = state.run_id
    if replica.progress.state == "diverged":  # its summary stands: the group's result reports it again
        replica.summary = replica.files.read_summary()
    replica.checkpoint = None  # restored: its copy of the weights need not stay in memory


def replica_checkpoint(training, replica: Replica, index: int, replicas: int, vocab: str,
                       data_digest: str) -> RunCheckpoint:
    """Everything replica `index` of the run needs to continue exactly, as one checkpoint."""
    state = training.model.replica_state(index)
    device = training.device
    return RunCheckpoint(
        model_class=type(training.model).__name__, model_config=training.config.to_dict(), vocab=vocab,
        model_state=state, weights_sha256=checkpoints.weights_digest(state),
        optimizer_state=slice_optimizer_state(training.optimizer.state_dict(), index, replicas),
        schedule_state=training.schedule.state_dict(), batches_rng=replica.batches.get_state(),
        torch_rng=torch.get_rng_state(),
        cuda_rng=torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
        eval_windows={s: (w.starts, w.first_counted) for s, w in replica.windows.items()},
        progress=asdict(replica.progress), run_id=replica.run_id, data_digest=data_digest, run_config=replica.config,
    )


def slice_optimizer_state(state: Dict[str, Any], index: int, replicas: int) -> Dict[str, Any]:
    """One replica's optimizer state: every per-parameter tensor with a leading replica dimension, sliced."""
    def pick(value):
        if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] == replicas:
            return value[index].clone() if replicas > 1 else value[index]
        return value

    return {
        "state": {k: {name: pick(v) for name, v in s.items()} for k, s in state["state"].items()},
        "param_groups": state["param_groups"],
    }


def stack_optimizer_states(states: List[Dict[str, Any]], lead: int) -> Dict[str, Any]:
    """The inverse of slice_optimizer_state over every replica; what all replicas share (a step count) is taken
    from replica `lead`."""
    def stack(values):
        first = values[lead]
        return torch.stack(values) if isinstance(first, torch.Tensor) and first.dim() > 0 else first

    merged = {}
    for key in states[lead]["state"]:
        merged[key] = {name: stack([s["state"][key][name] for s in states]) for name in states[lead]["state"][key]}
    return {"state": merged, "param_groups": states[lead]["param_groups"]}


def finished_summaries(replicas: List[Replica]) -> Optional[List[Dict[str, Any]]]:
    """The summaries of a run whose every replica already finished, or None."""
    summaries = [r.files.read_summary() for r in replicas]
    if summaries and all(s.get("status") == "ok" for s in summaries):
        return summaries
    return None
