"""The training loop: fixed evaluation windows, checkpoints, exact resume, early stopping, clean stops, replicas.

Everything random has its own saved state: each replica's training batch stream (its own generator),
dropout (torch's global generator) and the evaluation windows (drawn once, stored in the checkpoint). A
run interrupted at any iteration and resumed therefore ends with the same losses as a straight run.

`train.replicas=K` trains seeds seed .. seed+K-1 of one config in one model whose every parameter has a
leading replica dimension (models/layers.py): one batched matmul per layer instead of K runs' worth of
small ops. Each replica keeps its own generators, evaluation windows, early stopping and files, and its
folder (`seed=<s>/` inside the run folder) holds exactly what a single run's does.
"""

import logging
import math
import secrets
import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Set

import torch
from omegaconf import OmegaConf
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from drakegpt import checkpoints, registry
from drakegpt.checkpoints import PublishedModel, RunCheckpoint
from drakegpt.config import RunConfig, model_config
from drakegpt.data import CharVocab, build_corpus, gather, random_starts
from drakegpt.errors import UsageError
from drakegpt.files import os_reason
from drakegpt.identity import config_diff, digest, fingerprint, variant_parts
from drakegpt.models.config import ModelConfig
from drakegpt.models.language_model import LanguageModel, count_parameters
from drakegpt.optim import build_optimizer, build_schedule
from drakegpt.run_dir import RunDir
from drakegpt.runtime import (
    autocast,
    check_memory,
    check_sampling_memory,
    resolve_compile,
    resolve_device,
    resolve_precision,
    set_threads,
)
from drakegpt.sampling import sample
from drakegpt.signals import Interrupted, StopSignals
from drakegpt.tracking import RunInfo, Tracker

log = logging.getLogger(__name__)

EVAL_TOKENS_PER_FORWARD = 65536  # evaluation windows go through the model in chunks of this many tokens


class Diverged(Exception):
    def __init__(self, step: int, loss: float):
        super().__init__(
            f"training diverged: the loss became {loss} at step {step}; "
            f"lower optimizer.max_lr (and optimizer.base_lr) and run again"
        )


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


def train_step(model, optimizer, x: torch.Tensor, y: torch.Tensor, precision, device) -> torch.Tensor:
    """One iteration on batches (R, B, T): forward, backward, optimizer step. Returns each replica's loss."""
    with autocast(precision, device):
        _, loss = model(x, y)
    optimizer.zero_grad(set_to_none=True)
    loss.sum().backward()  # replicas are independent: the sum's gradient is each replica's own
    optimizer.step()
    return loss.detach()


@torch.inference_mode()
def evaluate(model, data: torch.Tensor, starts: torch.Tensor, context_length: int, precision, device) -> torch.Tensor:
    """Each replica's mean cross-entropy over its fixed windows `starts` (R, n), in chunks of large forwards."""
    model.eval()
    total = torch.zeros(starts.shape[0], device=device)
    for chunk in starts.split(max(1, EVAL_TOKENS_PER_FORWARD // context_length), dim=1):
        x, y = gather(data, chunk.to(device), context_length)
        with autocast(precision, device):
            _, loss = model(x, y)
        total += loss.float() * chunk.shape[1]
    model.train()
    return total / starts.shape[1]


def build_replicas(config: ModelConfig, seeds: Sequence[int], device: torch.device) -> LanguageModel:
    """One replica per seed, each initialised as its own single run would be (its seed, nn.Linear's draws)."""
    if len(seeds) == 1:
        torch.manual_seed(seeds[0])
        return LanguageModel(config).to(device)
    model = LanguageModel(config, replicas=len(seeds))
    states = []
    for seed in seeds:
        torch.manual_seed(seed)
        states.append(LanguageModel(config).replica_state(0))
    model.load_replica_states(states)
    torch.manual_seed(seeds[0])  # dropout's stream, shared by the replicas
    return model.to(device)


@dataclass
class Replica:
    """One seed of the run: its folder, resolved config and random streams, and where it stands."""

    seed: int
    files: RunDir
    config: Dict[str, Any]  # the resolved config with this replica's seed
    checkpoint: Optional[RunCheckpoint]  # to resume from
    run_id: str = ""
    batches: Optional[torch.Generator] = None
    eval_starts: Optional[Dict[str, torch.Tensor]] = None
    progress: Progress = field(default_factory=Progress)
    tracker: Optional[Tracker] = None
    summary: Dict[str, Any] = field(default_factory=dict)

    @property
    def active(self) -> bool:
        return self.progress.state == "training"


def plan_replicas(cfg: RunConfig, resolved: Dict[str, Any], run_dir: Path, resume: bool) -> List[Replica]:
    """Each replica's folder and config, with its checkpoint when the run continues. Refuses, in one line,
    a folder that holds another run, a different config, or a run that cannot be continued as asked."""
    K = cfg.train.replicas
    seeds = [cfg.seed + r for r in range(K)]
    held, wanted = _runs_held(run_dir), {"."} if K == 1 else {f"seed={s}" for s in seeds}
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
        replicas.append(Replica(seed, files, config, _checkpoint_to_resume(files, config, resume)))
    return replicas


def _runs_held(run_dir: Path) -> Set[str]:
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
        return None  # the earlier attempt failed before its first checkpoint: start again
    state = checkpoints.load(files.last, RunCheckpoint)
    if fingerprint(state.run_config) != fingerprint(config):
        raise UsageError(
            f"{files.root} holds a run with a different config ({config_diff(state.run_config, config)}); resume "
            f"with the same overrides, or choose another hydra.run.dir"
        )
    return state


class Trainer:
    """One training run, of one replica or several, built from `plan_replicas`' list; `run()` trains it."""

    def __init__(
        self,
        cfg: RunConfig,
        replicas: List[Replica],
        group: Optional[str] = None,
        overrides: Sequence[str] = (),
        choices: Optional[Dict[str, Optional[str]]] = None,
        stop_file: Optional[Path] = None,
    ):
        self.cfg, self.replicas, self.overrides = cfg, replicas, list(overrides)
        self.stop_file = stop_file  # a sweep's stop mark: its jobs on other machines stop at their next evaluation
        self.variant_parts = variant_parts(replicas[0].config, overrides)
        self.variant = ",".join(self.variant_parts)
        set_threads(cfg.train.threads)
        self.device = resolve_device(cfg.device)
        self.precision = resolve_precision(cfg.train.precision, self.device, cfg.scale.embedding_dim)
        self.corpus = build_corpus(cfg.data, cfg.scale.context_length)
        self.data_digest = self.corpus.digest()
        self.model_config = model_config(cfg.model, cfg.scale, len(self.corpus.vocab))
        check_memory(cfg, self.model_config, self.device)
        # the sample after training too, not a finished run's last step
        check_sampling_memory(self.model_config, 1, cfg.train.sample_length, self.device,
                              f"train.sample_length={cfg.train.sample_length}")
        self.model = build_replicas(self.model_config, [r.seed for r in self.replicas], self.device)
        self.optimizer = build_optimizer(self.model.parameters(), cfg.optimizer)
        self.schedule = build_schedule(self.optimizer, cfg.optimizer)
        self.data = {"train": self.corpus.train.to(self.device), "val": self.corpus.val.to(self.device)}
        self.eval_interval = min(cfg.train.eval_interval, cfg.train.iters)
        if self.eval_interval < cfg.train.eval_interval:
            log.info("train.eval_interval=%d is longer than the run: evaluating every %d iterations",
                     cfg.train.eval_interval, self.eval_interval)
        for replica in self.replicas:
            self._prepare(replica)
        if any(r.checkpoint is not None for r in self.replicas):
            self._restore()
        self.params = count_parameters(self.model)
        self.step_model = torch.compile(self.model) if resolve_compile(cfg.train.compile, self.device) else self.model
        name = cfg.model.name + (f" ({self.variant})" if self.variant else "")
        log.info("%s at scale=%s: %s parameters, vocabulary %d, %s, %s%s", name, cfg.scale.name, f"{self.params:,}",
                 len(self.corpus.vocab), self.device, self.precision.value,
                 f", {len(self.replicas)} replicas" if len(self.replicas) > 1 else "")
        run_folder = self.replicas[0].files.root if len(self.replicas) == 1 else self.replicas[0].files.root.parent
        for replica in self.replicas:
            run = RunInfo(self._wandb_name(replica), group or str(run_folder), replica.run_id, replica.config,
                          dict(choices or {}), self.variant_parts)
            replica.tracker = Tracker(replica.files, cfg.logger, run, replica.progress.history)
        self.step = self.replicas[0].progress.step
        self.started = time.perf_counter() - self.replicas[0].progress.elapsed_s
        self.timer_start: Optional[float] = None
        self.timed_tokens = 0

    # ----------------------------------------------------------------------------------------- setup

    def _prepare(self, replica: Replica) -> None:
        cfg = self.cfg
        replica.run_id = secrets.token_hex(4)
        replica.batches = torch.Generator().manual_seed(replica.seed)
        windows = torch.Generator().manual_seed(replica.seed + 1)
        T, B = cfg.scale.context_length, cfg.scale.batch_size
        replica.eval_starts = {
            split: random_starts(data, cfg.train.eval_iters * B, T, windows)
            for split, data in (("train", self.corpus.train), ("val", self.corpus.val))
        }

    def _restore(self) -> None:
        """Continue from every replica's last.pt: weights, optimizer, schedule, generators, windows, progress."""
        states = [r.checkpoint for r in self.replicas]
        if any(s is None for s in states):
            missing = [str(r.files.root) for r in self.replicas if r.checkpoint is None]
            raise UsageError(f"some replicas have no checkpoint to continue from ({', '.join(missing)}); "
                             f"choose another hydra.run.dir to start over")
        for replica, state in zip(self.replicas, states):
            if state.data_digest != self.data_digest:
                raise UsageError(
                    f"the training text changed since {replica.files.last} was written (same file name or "
                    f"characters, other content); resume with the same data, or choose another hydra.run.dir"
                )
        steps = {r.files.root.name: s.progress["step"] for r, s in zip(self.replicas, states)
                 if s.progress.get("state", "training") == "training"}
        if len(set(steps.values())) > 1:
            raise UsageError(f"the replicas' checkpoints are at different steps ({steps}): a stop cut their save; "
                             f"choose another hydra.run.dir to start over")
        self.model.load_replica_states([s.model_state for s in states])
        self.optimizer.load_state_dict(stack_optimizer_states([s.optimizer_state for s in states]))
        self.schedule.load_state_dict(states[0].schedule_state)
        torch.set_rng_state(states[0].torch_rng)
        if self.device.type == "cuda" and states[0].cuda_rng is not None:
            torch.cuda.set_rng_state(states[0].cuda_rng, self.device)
        for replica, state in zip(self.replicas, states):
            replica.batches.set_state(state.batches_rng)
            replica.eval_starts = state.eval_starts
            replica.progress = Progress(**state.progress)
            replica.run_id = state.run_id
            replica.checkpoint = None  # restored: its copy of the weights need not stay in memory
        log.info("resuming %s at step %d", self.replicas[0].files.root, self.replicas[0].progress.step)

    def _wandb_name(self, replica: Replica) -> str:
        return "-".join(p for p in (self.cfg.model.name, self.cfg.scale.name, self.variant, f"s{replica.seed}") if p)

    # ------------------------------------------------------------------------------------------ loop

    def run(self) -> List[Dict[str, Any]]:
        """Train to the end; each replica's summary. Raises Interrupted on a stop, UsageError when a run diverged."""
        try:
            with StopSignals() as signals, logging_redirect_tqdm():
                self._loop(signals)
            for replica in self.replicas:
                if replica.active:
                    self._complete(replica)
        except Interrupted as stop:
            self._finish_all("interrupted", error=f"stopped by {stop}")
            raise
        except BaseException as e:
            self._finish_all("failed", error=f"{type(e).__name__}: {e}")
            raise
        diverged = [r for r in self.replicas if r.progress.state == "diverged"]
        if diverged:
            raise UsageError("; ".join(r.summary["error"] for r in diverged))
        return [r.summary for r in self.replicas]

    def _loop(self, signals: StopSignals) -> None:
        cfg = self.cfg
        T, B = cfg.scale.context_length, cfg.scale.batch_size
        first_step = self.step + 1
        with tqdm(total=cfg.train.iters, initial=self.step, disable=None, dynamic_ncols=True, leave=False) as bar:
            while True:
                due = self.step % self.eval_interval == 0 or self.step == cfg.train.iters
                if due and self.replicas[0].progress.evaluated_step != self.step:
                    self._evaluate()
                    if self.stop_file is not None and self.stop_file.exists() and self.step < cfg.train.iters:
                        raise Interrupted(signal.SIGINT, by_sweep=True)
                if self.step >= cfg.train.iters or not any(r.active for r in self.replicas):
                    return
                if signals.signum is not None:
                    self._bank_timing()
                    self._save([r for r in self.replicas if r.active], best=False)
                    raise signals.interrupted()

                starts = torch.stack([random_starts(self.corpus.train, B, T, r.batches) for r in self.replicas])
                x, y = gather(self.data["train"], starts.to(self.device), T)
                losses = train_step(self.step_model, self.optimizer, x, y, self.precision, self.device)
                self.schedule.step()
                self.step += 1
                for replica in self.replicas:
                    replica.progress.step = self.step
                if self.step == first_step:  # the first iteration is warm-up: time from the end of it
                    self.timer_start, self.timed_tokens = time.perf_counter(), 0
                else:
                    self.timed_tokens += B * T
                if self.step % 10 == 0 or self.device.type == "cpu":  # .tolist() waits for a GPU, not a CPU
                    values = losses.tolist()
                    for replica, value in zip(self.replicas, values):
                        if replica.active and not math.isfinite(value):
                            self._diverge(replica, value)
                    if self.step % 10 == 0:
                        bar.set_postfix(loss=f"{values[0]:.3f}", tok_s=f"{self._tokens_per_s():,.0f}")
                bar.update(1)

    def _bank_timing(self) -> float:
        """Move the time and tokens since the last evaluation into the totals; return their rate (per replica)."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        elapsed = time.perf_counter() - self.started
        rate, seconds = math.nan, 0.0
        if self.timer_start is not None and self.timed_tokens:
            seconds = time.perf_counter() - self.timer_start
            rate = self.timed_tokens / seconds
        for replica in self.replicas:
            p = replica.progress
            if replica.active:
                p.elapsed_s = elapsed
                if seconds:
                    p.train_time_s += seconds
                    p.train_tokens += self.timed_tokens
        self.timer_start, self.timed_tokens = None, 0
        return rate

    def _evaluate(self) -> None:
        cfg, step = self.cfg, self.step
        rate = self._bank_timing()
        T = cfg.scale.context_length
        losses = {
            split: evaluate(
                self.model, self.data[split], torch.stack([r.eval_starts[split] for r in self.replicas]), T,
                self.precision, self.device,
            ).tolist()
            for split in self.data
        }
        improved = []
        for i, replica in enumerate(self.replicas):
            p = replica.progress
            if not replica.active:
                continue
            train_loss, val_loss = losses["train"][i], losses["val"][i]
            for value in (train_loss, val_loss):
                if not math.isfinite(value):
                    self._diverge(replica, value)
            if not replica.active:
                continue
            p.last_row = {
                "step": step,
                "train_loss": train_loss,
                "val_loss": val_loss,
                "lr": self.schedule.get_last_lr()[0],
                "tokens_per_s": rate,
                "elapsed_s": p.elapsed_s,
            }
            p.history.append(p.last_row)
            p.evaluated_step = step
            self._write(replica.tracker.log_eval, p.last_row, replica)
            if val_loss < p.best_val_loss:
                p.best_val_loss, p.best_step, p.evals_since_best = val_loss, step, 0
                improved.append(replica)
            else:
                p.evals_since_best += 1
        first = next((r for r in self.replicas if r.active), None)
        if first is not None:
            log.info("step %d: train loss %.4f, val loss %.4f%s", step, first.progress.last_row["train_loss"],
                     first.progress.last_row["val_loss"], f" (seed {first.seed})" if len(self.replicas) > 1 else "")
        active = [r for r in self.replicas if r.active]
        self._save(active, best=False)
        if improved:
            self._save(improved, best=True)
        for replica in active:
            if 0 < cfg.train.patience <= replica.progress.evals_since_best:
                log.info("seed %d: val loss has not improved for %d evaluations: stopping early", replica.seed,
                         replica.progress.evals_since_best)
                replica.progress.state = "stopped_early"
                self._complete(replica)
        self.timer_start, self.timed_tokens = time.perf_counter(), 0

    def _diverge(self, replica: Replica, value: float) -> None:
        replica.progress.state = "diverged"
        kept = (
            f"checkpoints/last.pt from step {replica.progress.saved_step} is the last good one"
            if replica.files.last.is_file()
            else "no checkpoint was written"
        )
        self._finish(replica, "diverged", error=f"{Diverged(self.step, value)}; {kept}")

    # ---------------------------------------------------------------------------------------- files

    def _write(self, write, argument, replica: Replica):
        """A filesystem fault becomes one line that says what was kept; the status says failed."""
        try:
            return write(argument)
        except OSError as e:
            kept = f"checkpoints/last.pt from step {replica.progress.saved_step}" if replica.files.last.is_file() else (
                "nothing")
            raise UsageError(
                f"could not write {getattr(e, 'filename', None) or replica.files.root}: {os_reason(e)}; {kept} is "
                f"kept. Free the space or fix the folder, then add train.resume=true hydra.run.dir=... to continue"
            ) from None

    def _checkpoint(self, replica: Replica, index: int) -> RunCheckpoint:
        return RunCheckpoint(
            model_class=type(self.model).__name__,
            model_config=self.model_config.to_dict(),
            vocab=self.corpus.vocab.chars,
            model_state=self.model.replica_state(index),
            optimizer_state=slice_optimizer_state(self.optimizer.state_dict(), index, len(self.replicas)),
            schedule_state=self.schedule.state_dict(),
            batches_rng=replica.batches.get_state(),
            torch_rng=torch.get_rng_state(),
            cuda_rng=torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None,
            eval_starts=replica.eval_starts,
            progress=asdict(replica.progress),
            run_id=replica.run_id,
            data_digest=self.data_digest,
            run_config=replica.config,
        )

    def _save(self, replicas: List[Replica], best: bool) -> None:
        if not replicas:
            return
        if not best:
            for replica in replicas:
                replica.progress.saved_step = self.step
        items = [(self._checkpoint(r, self.replicas.index(r)), r.files.best if best else r.files.last)
                 for r in replicas]
        self._write(checkpoints.save_all, items, replicas[0])

    def _complete(self, replica: Replica) -> None:
        """Publish the replica's weights (the best ones if it stopped early), sample from them, write its summary."""
        p, index = replica.progress, self.replicas.index(replica)
        stopped_early = p.state == "stopped_early"
        if stopped_early:
            state = checkpoints.load(replica.files.best, RunCheckpoint).model_state
            step, val_loss = p.best_step, p.best_val_loss
        else:
            state = self.model.replica_state(index)
            step, val_loss = p.step, p.last_row["val_loss"]
        record = PublishedModel(type(self.model).__name__, self.model_config.to_dict(), self.corpus.vocab.chars,
                                state, step, val_loss, replica.config)
        entry = registry.Entry(self.cfg.model.name, self.cfg.scale.name, self.variant, replica.seed,
                               digest(replica.config), step, val_loss, str(replica.files.root), "")
        published = self._write(lambda e: registry.publish(self.cfg.paths.models_dir, record, e), entry, replica)
        replica.tracker.log_model(published, {k: v for k, v in vars(entry).items() if k != "weights"})
        text = self._sample(state, replica.seed)
        if text:
            self._write(lambda t: (replica.files.root / "sample.txt").write_text(t, encoding="utf-8"), text, replica)
            replica.tracker.log_sample(text)
        p.state = "finished"
        summary = self._finish(replica, "ok", stopped_early=stopped_early, published=str(published), sample=text)
        log.info("done: val loss %.4f (best %.4f at step %d), %s tokens/s; weights in %s", summary["final_val_loss"],
                 summary["best_val_loss"], summary["best_step"], f"{summary['tokens_per_s'] or 0:,.0f}", published)

    def _sample(self, state, seed: int) -> str:
        length = self.cfg.train.sample_length
        if not length:
            return ""
        model = LanguageModel(self.model_config).to(self.device)
        model.load_replica_states([state])
        vocab = CharVocab(self.corpus.vocab.chars)
        generator = torch.Generator(device=self.device).manual_seed(seed)
        ids = sample(model, vocab.encode("\n")[None], length, generator=generator)
        text = vocab.decode(ids[0].tolist())
        log.info("a sample of %d characters:\n%s", length, text)
        return text

    def _tokens_per_s(self) -> float:
        p = self.replicas[0].progress
        tokens = p.train_tokens + self.timed_tokens
        seconds = p.train_time_s + (time.perf_counter() - self.timer_start if self.timer_start else 0.0)
        return tokens / seconds if seconds else 0.0

    def _finish_all(self, status: str, **extra: Any) -> None:
        for replica in self.replicas:
            if not replica.summary:
                self._finish(replica, status, **extra)

    def _finish(self, replica: Replica, status: str, **extra: Any) -> Dict[str, Any]:
        p, cfg = replica.progress, self.cfg
        summary = {
            "model": cfg.model.name,
            "scale": cfg.scale.name,
            "variant": self.variant,
            "seed": replica.seed,
            "params": self.params,
            "vocab_size": len(self.corpus.vocab),
            "steps": p.step,
            "final_train_loss": p.last_row.get("train_loss"),
            "final_val_loss": p.last_row.get("val_loss"),
            "best_val_loss": p.best_val_loss if math.isfinite(p.best_val_loss) else None,
            "best_step": p.best_step,
            "tokens_per_s": p.train_tokens / p.train_time_s if p.train_time_s else None,
            "wall_s": p.elapsed_s,
            "device": str(self.device),
            "threads": torch.get_num_threads(),
            "precision": self.precision.value,
            "replicas": len(self.replicas),
            "run_id": replica.run_id,
            "digest": digest(replica.config),
            "overrides": self.overrides,
            "status": status,
            **extra,
        }
        replica.summary = summary
        try:
            replica.tracker.finish(summary)
        except OSError as e:  # a full or read-only folder: the summary cannot be written, the line says why
            log.error("could not write %s: %s", replica.files.summary, os_reason(e))
        return summary


def finished_summaries(replicas: List[Replica]) -> Optional[List[Dict[str, Any]]]:
    """The summaries of a run whose every replica already finished, or None."""
    summaries = [r.files.read_summary() for r in replicas]
    if summaries and all(s.get("status") == "ok" for s in summaries):
        return summaries
    return None


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


def stack_optimizer_states(states: List[Dict[str, Any]]) -> Dict[str, Any]:
    """The inverse of slice_optimizer_state over every replica."""
    def stack(values):
        first = values[0]
        return torch.stack(values) if isinstance(first, torch.Tensor) and first.dim() > 0 else first

    merged = {}
    for key in states[0]["state"]:
        merged[key] = {name: stack([s["state"][key][name] for s in states]) for name in states[0]["state"][key]}
    return {"state": merged, "param_groups": states[0]["param_groups"]}
