"""The training loop: fixed evaluation windows, checkpoints, exact resume, early stopping, clean stops.

Everything random has its own saved state: the training batch stream (its own generator), dropout
(torch's global generator) and the evaluation windows (drawn once, stored in the checkpoint). A run
interrupted at any iteration and resumed therefore ends with the same losses as a straight run.
"""

import logging
import math
import secrets
import signal
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import torch
from omegaconf import OmegaConf
from tqdm import tqdm

from drakegpt import checkpoint
from drakegpt.checkpoint import RunDir
from drakegpt.config import RUN_INDEPENDENT_KEYS, RunConfig
from drakegpt.data import Corpus, build_corpus, gather, random_starts
from drakegpt.errors import UsageError
from drakegpt.models import ModelConfig, build_model, count_parameters
from drakegpt.optim import build_optimizer, build_schedule
from drakegpt.runtime import autocast, resolve_device, resolve_precision, set_threads
from drakegpt.tracking import Tracker

log = logging.getLogger(__name__)

EVAL_TOKENS_PER_FORWARD = 65536  # evaluation windows go through the model in chunks of this many tokens


class Interrupted(KeyboardInterrupt):
    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


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


class StopSignals:
    """Turns SIGINT/SIGTERM into a flag checked between iterations, so a stop never tears a step."""

    def __init__(self):
        self.signum: Optional[int] = None
        self._previous = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def _handle(self, signum, frame):
        self.signum = signum

    def __exit__(self, *exc):
        for s, handler in self._previous.items():
            signal.signal(s, handler)


def fingerprint(config: Dict[str, Any]) -> Dict[str, Any]:
    """The part of a resolved config that decides the numbers a run produces."""
    kept = OmegaConf.create(config)
    for key in RUN_INDEPENDENT_KEYS:
        parent, _, leaf = key.rpartition(".")
        node = OmegaConf.select(kept, parent) if parent else kept
        if node is not None and leaf in node:
            node.pop(leaf)
    return OmegaConf.to_container(kept)


@torch.inference_mode()
def evaluate(model, data: torch.Tensor, starts: torch.Tensor, context_length: int, precision, device) -> float:
    """Mean cross-entropy over fixed windows: the mean of eval_iters batch means, in fewer, larger forwards."""
    model.eval()
    total = torch.zeros((), device=device)
    for chunk in starts.split(max(1, EVAL_TOKENS_PER_FORWARD // context_length)):
        x, y = gather(data, chunk.to(device), context_length)
        with autocast(precision, device):
            _, loss = model(x, y)
        total += loss.float() * len(chunk)
    model.train()
    return (total / len(starts)).item()


def publish(path: Path, model, cfg: RunConfig, corpus: Corpus, step: int, val_loss: float, resolved: Dict) -> None:
    """Weights, vocabulary and config (the model's shape): all that sampling needs, without the training text."""
    checkpoint.save(
        {
            "kind": "model",
            "model": cfg.model.name,
            "scale": cfg.scale.name,
            "vocab": corpus.vocab.chars,
            "model_state": model.state_dict(),
            "step": step,
            "val_loss": val_loss,
            "config": resolved,
        },
        path,
    )


class Trainer:
    """One training run in one folder: `cfg` is the typed config, `resolved` the same as plain data."""

    def __init__(
        self,
        cfg: RunConfig,
        resolved: Dict[str, Any],
        run_dir: Path,
        group: Optional[str] = None,
        resume: bool = False,
        overrides: Tuple[str, ...] = (),
    ):
        self.cfg, self.resolved, self.group, self.overrides = cfg, resolved, group, list(overrides)
        self.finished = False  # set once this run's summary.json is written
        self.files = RunDir(run_dir)
        self.resume_from = self._resume_state(resume)

    def _resume_state(self, resume: bool) -> Optional[Dict[str, Any]]:
        if not self.files.holds_run():
            return None
        if not resume:
            raise UsageError(
                f"{self.files.root} already holds a run; add train.resume=true to continue it, "
                f"or choose another hydra.run.dir"
            )
        if not self.files.last.is_file():
            return None  # the earlier attempt failed before its first checkpoint: start again
        state = checkpoint.load(self.files.last)
        if fingerprint(state["config"]) != fingerprint(self.resolved):
            raise UsageError(
                f"{self.files.root} holds a run with a different config; resume with the same overrides, "
                f"or choose another hydra.run.dir"
            )
        return state

    def run(self) -> Dict[str, Any]:
        if self.resume_from is not None and self.files.read_summary().get("status") == "ok":
            log.info("%s already finished; nothing to do", self.files.root)
            return self.files.read_summary()
        self._setup()
        try:
            with StopSignals() as signals:
                self._loop(signals)
            published = self._publish()
        except Interrupted as stop:
            self._finish("interrupted", error=f"stopped by {stop}")
            raise
        except Diverged as diverged:
            kept = (
                f"checkpoints/last.pt from step {self.progress.saved_step} is the last good one"
                if self.files.last.is_file()
                else "no checkpoint was written"
            )
            message = f"{diverged}; {kept}"
            self._finish("diverged", error=message)
            raise UsageError(message) from None
        except BaseException as e:
            self._finish("failed", error=f"{type(e).__name__}: {e}")
            raise
        finally:
            self.bar.close()
        summary = self._finish("ok", stopped_early=self.stopped_early, published=str(published))
        log.info(
            "done: val loss %.4f (best %.4f at step %d), %s tokens/s; weights in %s",
            summary["final_val_loss"],
            summary["best_val_loss"],
            summary["best_step"],
            f"{summary['tokens_per_s'] or 0:,.0f}",
            published,
        )
        return summary

    def _publish(self) -> Path:
        """models/<Model>_<scale>.pt: the final weights, or the best ones when the run stopped early."""
        cfg, progress = self.cfg, self.progress
        if self.stopped_early:
            self.model.load_state_dict(checkpoint.load(self.files.best)["model_state"])
            step, val_loss = progress.best_step, progress.best_val_loss
        else:
            step, val_loss = progress.step, progress.last_row["val_loss"]
        path = Path(cfg.paths.models_dir) / f"{cfg.model.name}_{cfg.scale.name}.pt"
        publish(path, self.model, cfg, self.corpus, step, val_loss, self.resolved)
        return path

    def _setup(self) -> None:
        cfg, state = self.cfg, self.resume_from
        for leftover in self.files.checkpoints.glob(".*.tmp"):  # from a save cut off by kill -9
            leftover.unlink()
        set_threads(cfg.train.threads)
        self.device = device = resolve_device(cfg.device)
        self.precision = resolve_precision(cfg.train.precision, device)
        torch.manual_seed(cfg.seed)
        self.corpus = corpus = build_corpus(cfg.data, cfg.scale.context_length)
        self.model = build_model(
            cfg.model.name, ModelConfig.from_preset(cfg.scale, len(corpus.vocab), cfg.model.attention)
        ).to(device)
        self.optimizer = build_optimizer(self.model, cfg.optimizer)
        self.schedule = build_schedule(self.optimizer, cfg.optimizer, cfg.train.iters)
        self.batches = torch.Generator().manual_seed(cfg.seed)
        windows = torch.Generator().manual_seed(cfg.seed + 1)
        T, B = cfg.scale.context_length, cfg.scale.batch_size
        self.eval_starts = {
            split: random_starts(data, cfg.train.eval_iters * B, T, windows)
            for split, data in (("train", corpus.train), ("val", corpus.val))
        }
        self.progress = Progress()
        self.run_id = secrets.token_hex(4)
        if state is not None:
            if state["vocab"] != corpus.vocab.chars:
                raise UsageError(
                    f"the training text changed since {self.files.last} was written; resume with the same data"
                )
            self.model.load_state_dict(state["model_state"])
            self.optimizer.load_state_dict(state["optimizer_state"])
            self.schedule.load_state_dict(state["schedule_state"])
            self.batches.set_state(state["batches_rng"])
            torch.set_rng_state(state["torch_rng"])
            if device.type == "cuda" and "cuda_rng" in state:
                torch.cuda.set_rng_state(state["cuda_rng"], device)
            self.eval_starts = state["eval_starts"]
            self.progress = Progress(**state["progress"])
            self.run_id = state["run_id"]
            log.info("resuming %s at step %d", self.files.root, self.progress.step)
        self.data = {"train": corpus.train.to(device), "val": corpus.val.to(device)}
        self.step_model = torch.compile(self.model) if cfg.train.compile else self.model
        self.params = count_parameters(self.model)
        self.tracker = Tracker(
            self.files,
            cfg.logger,
            f"{cfg.model.name}-{cfg.scale.name}",
            self.group,
            self.resolved,
            self.run_id,
            resume_step=self.progress.step if state is not None else None,
        )
        log.info(
            "%s-%s: %s parameters, vocabulary %d, %s, %s",
            cfg.model.name,
            cfg.scale.name,
            f"{self.params:,}",
            len(corpus.vocab),
            device,
            self.precision.value,
        )
        self.started = time.perf_counter() - self.progress.elapsed_s
        self.stopped_early = 0 < cfg.train.patience <= self.progress.evals_since_best
        self.timer_start: Optional[float] = None
        self.timed_tokens = 0
        self.bar = tqdm(
            total=cfg.train.iters, initial=self.progress.step, disable=None, dynamic_ncols=True, leave=False
        )

    def _loop(self, signals: StopSignals) -> None:
        cfg, progress = self.cfg, self.progress
        T, B = cfg.scale.context_length, cfg.scale.batch_size
        first_step = progress.step + 1
        while True:
            step = progress.step
            due = step % cfg.train.eval_interval == 0 or step == cfg.train.iters
            if due and progress.evaluated_step != step:
                self._evaluate()
            if step >= cfg.train.iters or self.stopped_early:
                return
            if signals.signum is not None:
                self._bank_timing()
                self._save(last=True, best=False)
                raise Interrupted(signals.signum)

            x, y = gather(self.data["train"], random_starts(self.corpus.train, B, T, self.batches).to(self.device), T)
            with autocast(self.precision, self.device):
                _, loss = self.step_model(x, y)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self.schedule.step()
            progress.step += 1
            if progress.step == first_step:  # the first iteration is warm-up: time from the end of it
                self.timer_start, self.timed_tokens = time.perf_counter(), 0
            else:
                self.timed_tokens += B * T
            if progress.step % 10 == 0 or self.device.type == "cpu":  # .item() waits for a GPU, not a CPU
                value = loss.item()
                if not math.isfinite(value):
                    raise Diverged(progress.step, value)
                if progress.step % 10 == 0:
                    self.bar.set_postfix(loss=f"{value:.3f}", tok_s=f"{self._tokens_per_s():,.0f}")
            self.bar.update(1)

    def _bank_timing(self) -> float:
        """Move the time and tokens since the last evaluation into the totals; return their rate."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.progress.elapsed_s = time.perf_counter() - self.started
        if self.timer_start is None or not self.timed_tokens:
            return math.nan
        seconds = time.perf_counter() - self.timer_start
        self.progress.train_time_s += seconds
        self.progress.train_tokens += self.timed_tokens
        self.timer_start, rate, self.timed_tokens = None, self.timed_tokens / seconds, 0
        return rate

    def _evaluate(self) -> None:
        cfg, progress, step = self.cfg, self.progress, self.progress.step
        rate = self._bank_timing()
        T = cfg.scale.context_length
        losses = {
            s: evaluate(self.model, self.data[s], self.eval_starts[s], T, self.precision, self.device)
            for s in self.data
        }
        for value in losses.values():
            if not math.isfinite(value):
                raise Diverged(step, value)
        progress.elapsed_s = time.perf_counter() - self.started
        progress.last_row = {
            "step": step,
            "train_loss": losses["train"],
            "val_loss": losses["val"],
            "lr": self.schedule.get_last_lr()[0],
            "tokens_per_s": rate,
            "elapsed_s": progress.elapsed_s,
        }
        self.tracker.log_eval(progress.last_row)
        log.info("step %d: train loss %.4f, val loss %.4f", step, losses["train"], losses["val"])
        progress.evaluated_step = step
        improved = losses["val"] < progress.best_val_loss
        if improved:
            progress.best_val_loss, progress.best_step, progress.evals_since_best = losses["val"], step, 0
        else:
            progress.evals_since_best += 1
        self._save(last=True, best=improved)
        self.stopped_early = 0 < cfg.train.patience <= progress.evals_since_best
        if self.stopped_early:
            log.info("val loss has not improved for %d evaluations: stopping early", progress.evals_since_best)
        self.timer_start, self.timed_tokens = time.perf_counter(), 0

    def _save(self, last: bool, best: bool) -> None:
        if last:
            self.progress.saved_step = self.progress.step
        state = {
            "kind": "run",
            "model_state": self.model.state_dict(),
            "optimizer_state": self.optimizer.state_dict(),
            "schedule_state": self.schedule.state_dict(),
            "batches_rng": self.batches.get_state(),
            "torch_rng": torch.get_rng_state(),
            "eval_starts": self.eval_starts,
            "progress": asdict(self.progress),
            "run_id": self.run_id,
            "vocab": self.corpus.vocab.chars,
            "config": self.resolved,
        }
        if self.device.type == "cuda":
            state["cuda_rng"] = torch.cuda.get_rng_state(self.device)
        if last:
            checkpoint.save(state, self.files.last)
        if best:
            checkpoint.save(state, self.files.best)

    def _tokens_per_s(self) -> float:
        tokens = self.progress.train_tokens + self.timed_tokens
        seconds = self.progress.train_time_s + (time.perf_counter() - self.timer_start if self.timer_start else 0.0)
        return tokens / seconds if seconds else 0.0

    def _finish(self, status: str, **extra: Any) -> Dict[str, Any]:
        p, cfg = self.progress, self.cfg
        summary = {
            "model": cfg.model.name,
            "scale": cfg.scale.name,
            "seed": cfg.seed,
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
            "run_id": self.run_id,
            "overrides": self.overrides,
            "status": status,
            **extra,
        }
        self.tracker.finish(summary)
        self.finished = True
        return summary
