"""The training loop: evaluations, checkpoints, exact resume, early stopping, clean stops, replicas.

Everything random has its own saved state: each replica's training batch stream (its own generator),
dropout (torch's global generator) and the evaluation windows (fixed for the run, stored in the checkpoint).
A run interrupted at any iteration, or during an evaluation, and resumed therefore ends with the same
losses as a straight run. With `train.replicas=K` one model holds K seeds (drakegpt/replicas.py); each
replica keeps its own generators, windows, early stopping and folder.
"""

import logging
import math
import signal
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from drakegpt import checkpoints, registry
from drakegpt.build import build_training, train_step
from drakegpt.checkpoints import RunCheckpoint
from drakegpt.data import build_corpus, gather, random_starts
from drakegpt.errors import UsageError
from drakegpt.evaluation import EvaluationStopped, Windows, bits, evaluate, evaluation_windows
from drakegpt.files import write_or_explain
from drakegpt.identity import RunIdentity, digest
from drakegpt.models.language_model import count_parameters
from drakegpt.replicas import Replica, replica_checkpoint, restore, start_streams
from drakegpt.runtime import check_memory, check_sampling_memory, resolve_device, set_threads
from drakegpt.sampling import sample_text
from drakegpt.schema import RunConfig, model_config
from drakegpt.signals import Interrupted, StopSignals
from drakegpt.tracking import Clock, open_trackers, projection, summary_record

log = logging.getLogger(__name__)


class Trainer:
    """One training run, of one replica or several, built from `plan_replicas`' list; `run()` trains it."""

    def __init__(self, cfg: RunConfig, replicas: List[Replica], identity: Optional[RunIdentity] = None,
                 stop_file: Optional[Path] = None):
        self.cfg, self.replicas, self.identity = cfg, replicas, identity or RunIdentity()
        self.stop_file = stop_file  # a sweep's stop mark: its jobs on other machines stop at their next evaluation
        self.variant = ",".join(self.identity.variant_parts)
        set_threads(cfg.train.threads)
        self.device = resolve_device(cfg.device)
        self.corpus = build_corpus(cfg.data, cfg.scale.context_length)
        self.data_digest = self.corpus.digest()
        planned = model_config(cfg.model, cfg.scale, len(self.corpus.vocab))  # checked before anything is allocated
        check_memory(cfg, planned, self.device)
        check_sampling_memory(planned, 1, cfg.train.sample_length, self.device,  # the sample at the end
                              f"train.sample_length={cfg.train.sample_length}")
        self.training = training = build_training(cfg, len(self.corpus.vocab), [r.seed for r in replicas], self.device)
        self.model, self.model_config = training.model, training.config
        self.resolved = {"device": self.device.type, "precision": training.precision.value,
                         "compile": str(training.compiled)}
        for replica in replicas:
            replica.digest = digest(replica.config, self.resolved)
            if cfg.train.publish:
                registry.check_target(cfg.paths.registry_dir, cfg.model.name, cfg.scale.name, replica.seed,
                                      replica.digest)
        self.data = {split: tokens.to(self.device) for split, tokens in self.corpus.splits.items()}
        self.eval_interval = min(cfg.train.eval_interval, cfg.train.iters)
        if self.eval_interval < cfg.train.eval_interval:
            log.info("train.eval_interval=%d is longer than the run: evaluating every %d iterations",
                     cfg.train.eval_interval, self.eval_interval)
        windows = evaluation_windows(self.corpus, cfg.train.eval, [r.seed for r in replicas], cfg.scale.context_length,
                                     cfg.scale.batch_size, cfg.train.eval_iters)
        start_streams(replicas, windows)
        if any(r.checkpoint is not None for r in replicas):
            restore(training, replicas, self.data_digest)
        self.params = count_parameters(self.model)
        self.signals: Optional[StopSignals] = None
        name = cfg.model.name + (f" ({self.variant})" if self.variant else "")
        log.info("%s at scale=%s: %s parameters, vocabulary %d, %s, %s, evaluation %s%s", name, cfg.scale.name,
                 f"{self.params:,}", len(self.corpus.vocab), self.device, training.precision.value,
                 cfg.train.eval.value,
                 f", {len(replicas)} replicas" if len(replicas) > 1 else "")
        open_trackers(replicas, cfg, self.identity)
        self.step = max(r.progress.step for r in replicas if r.active) if any(r.active for r in replicas) else 0
        self.clock = Clock(replicas[0].progress.elapsed_s)
        self.projected = False


    def run(self) -> List[Dict[str, Any]]:
        """Train to the end; each replica's summary. Raises Interrupted on a stop, UsageError when a run diverged."""
        try:
            with StopSignals() as self.signals, logging_redirect_tqdm():
                self._loop()
                for replica in self.replicas:
                    if replica.progress.state in ("training", "stopped_early"):  # stopped early before a resume too
                        self._complete(replica)
        except Interrupted as stop:
            self._finish_all("interrupted", error=f"stopped by {stop}")
            raise
        except KeyboardInterrupt:  # a second Ctrl-C: out at once; checkpoints/last.pt is the last evaluation's
            self._finish_all("interrupted", error="stopped at once by a second Ctrl-C")
            raise
        except BaseException as e:
            self._finish_all("failed", error=f"{type(e).__name__}: {e}")
            raise
        diverged = [r for r in self.replicas if r.progress.state == "diverged"]
        if diverged:
            raise UsageError("; ".join(r.summary["error"] for r in diverged))
        return [r.summary for r in self.replicas]

    def _loop(self) -> None:
        cfg, signals = self.cfg, self.signals
        T, B = cfg.scale.context_length, cfg.scale.batch_size
        with tqdm(total=cfg.train.iters, initial=self.step, disable=None, dynamic_ncols=True, leave=False) as bar:
            while True:
                due = self.step % self.eval_interval == 0 or self.step == cfg.train.iters
                if due and any(r.active and r.progress.evaluated_step != self.step for r in self.replicas):
                    self._evaluate()
                    if self.stop_file is not None and self.stop_file.exists() and self.step < cfg.train.iters:
                        raise Interrupted(signal.SIGINT, by_sweep=True)
                if self.step >= cfg.train.iters or not any(r.active for r in self.replicas):
                    return
                if signals.signum is not None:
                    self._stop()
                starts = torch.stack([random_starts(self.corpus.train, B, T, r.batches) for r in self.replicas])
                x, y = gather(self.data["train"], starts.to(self.device), T)
                losses = train_step(self.training, x, y)
                self.training.schedule.step()
                self.step += 1
                for replica in self.replicas:
                    replica.progress.step = self.step if replica.active else replica.progress.step
                self.clock.count(B * T)
                if self.step % cfg.train.log_interval == 0 or self.device.type == "cpu":  # .tolist() waits for a GPU
                    values = losses.tolist()
                    for replica, value in zip(self.replicas, values):
                        if replica.active and not math.isfinite(value):
                            self._diverge(replica, value)
                    if self.step % cfg.train.log_interval == 0:
                        bar.set_postfix(loss=f"{values[0]:.3f}",
                                        tok_s=f"{self.clock.rate(self.replicas[0].progress):,.0f}")
                    self._project()
                bar.update(1)

    def _stop(self) -> None:
        """Save every running replica at this step (its evaluation, if one was due, comes on resume) and stop."""
        self._bank()
        self._save([r for r in self.replicas if r.active], best=False)
        raise self.signals.interrupted()

    def _project(self) -> None:
        """Once the iterations have run a while: the projected time of the run, and of the sweep, in one line."""
        tokens = self.cfg.scale.batch_size * self.cfg.scale.context_length
        step_s = None if self.projected else self.clock.step_s(tokens)
        if step_s is not None:
            self.projected = True
            log.info(projection(self.cfg.train.iters - self.step, step_s, self.eval_interval, self.clock.eval_s,
                                self.identity.jobs_left))

    def _bank(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return self.clock.bank([r.progress for r in self.replicas if r.active])

    def _losses(self, split: str, label: str) -> List[float]:
        windows = Windows(torch.cat([r.windows[split].starts for r in self.replicas]),
                          torch.cat([r.windows[split].first_counted for r in self.replicas]))
        stop = lambda: self.signals is not None and self.signals.signum is not None  # noqa: E731
        losses = evaluate(self.model, self.data[split], windows, self.training.precision, self.device, stop, label)
        return losses.tolist()

    def _evaluate(self) -> None:
        cfg, step = self.cfg, self.step
        rate = self._bank()
        started = time.perf_counter()
        try:
            losses = {split: self._losses(split, f"evaluating {split} at step {step}") for split in ("train", "val")}
        except EvaluationStopped:
            self._stop()
        self.clock.eval_s = time.perf_counter() - started
        improved, evaluated = [], []
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
            evaluated.append(replica)
            if p.record({"step": step, "train_loss": train_loss, "val_loss": val_loss, "train_bpc": bits(train_loss),
                         "val_bpc": bits(val_loss), "lr": self.training.schedule.get_last_lr()[0],
                         "tokens_per_s": rate, "elapsed_s": p.elapsed_s}):
                improved.append(replica)
        first = next((r for r in self.replicas if r.active), None)
        if first is not None:
            row = first.progress.last_row
            log.info("step %d: train loss %.4f, val loss %.4f nats (%.3f bits/char)%s", step, row["train_loss"],
                     row["val_loss"], row["val_bpc"], f" (seed {first.seed})" if len(self.replicas) > 1 else "")
        stopping = [r for r in self.replicas if r.active and 0 < cfg.train.patience <= r.progress.evals_since_best]
        for replica in stopping:
            log.info("seed %d: val loss has not improved for %d evaluations: stopping early", replica.seed,
                     replica.progress.evals_since_best)
            replica.progress.state = "stopped_early"
        self._save([r for r in self.replicas if r.active or r in stopping], best=False)
        if improved:
            self._save(improved, best=True)
        for replica in evaluated:  # after the checkpoint: a row in metrics.csv means a checkpoint holds that step
            self._write(replica.tracker.log_eval, replica.progress.last_row, replica)
        for replica in stopping:
            self._complete(replica)
        self.clock.restart()

    def _diverge(self, replica: Replica, value: float) -> None:
        replica.progress.state = "diverged"
        kept = (f"checkpoints/last.pt from step {replica.progress.saved_step} is the last good one"
                if replica.files.last.is_file() else "no checkpoint was written")
        error = (f"training diverged: the loss became {value} at step {self.step}; lower optimizer.max_lr (and "
                 f"optimizer.base_lr) and run again; {kept}")
        self._finish(replica, "diverged", error=error)


    def _write(self, write, argument, replica: Replica, target: Optional[Path] = None):
        kept = replica.progress.saved_step if replica.files.last.is_file() else None
        return write_or_explain(write, argument, target or replica.files.root, kept)

    def _save(self, replicas: List[Replica], best: bool) -> None:
        if not replicas:
            return
        if not best:
            for replica in replicas:
                replica.progress.saved_step = self.step
        items = [(replica_checkpoint(self.training, r, self.replicas.index(r), len(self.replicas),
                                     self.corpus.vocab.chars, self.data_digest), r.files.best if best else r.files.last)
                 for r in replicas]
        self._write(checkpoints.save_all, items, replicas[0], target=items[0][1])

    def _complete(self, replica: Replica) -> None:
        """Publish the replica's weights (the best ones if it stopped early), test them when there is a test
        split, sample from them, write its summary."""
        p, index = replica.progress, self.replicas.index(replica)
        stopped_early = p.state == "stopped_early"
        if stopped_early:
            state = checkpoints.load(replica.files.best, RunCheckpoint).model_state
            step, val_loss = p.best_step, p.best_val_loss
        else:
            state = self.model.replica_state(index)
            step, val_loss = p.step, p.last_row["val_loss"]
        p.state = "finished"
        extra = {"stopped_early": stopped_early, **self._test(state, step)}
        if self.cfg.train.publish:
            record = {"model": self.cfg.model.name, "scale": self.cfg.scale.name, "variant": self.variant,
                      "seed": replica.seed, "digest": replica.digest, "step": step,
                      "val_loss": val_loss, "val_bpc": bits(val_loss), "run_dir": str(replica.files.root),
                      "switches": replica.config["model"], "choices": self.identity.choices}
            published = self._write(lambda r: registry.publish(self.cfg.paths.registry_dir, self.model_config,
                                                               self.corpus.vocab.chars, state, r, replica.config),
                                    record, replica)
            replica.tracker.log_model(published, record, best=stopped_early or p.best_step == p.step)
            extra["published"] = str(published)
        extra["sample"] = self._sample(state, replica)
        summary = self._finish(replica, "ok", **extra)
        log.info("done: val loss %.4f (best %.4f at step %d), %s tokens/s%s", summary["final_val_loss"],
                 summary["best_val_loss"], summary["best_step"], f"{summary['tokens_per_s'] or 0:,.0f}",
                 f"; weights in {extra['published']}" if "published" in extra else "")

    def _single(self, state):
        model = type(self.model)(self.model_config).to(self.device)
        model.load_replica_states([state])
        return model

    def _test(self, state, step: int) -> Dict[str, Any]:
        """The test split's loss of the weights the run keeps: measured once, at the end, never used to choose."""
        if "test" not in self.data:
            return {}
        windows = self.replicas[0].windows["test"]
        loss = evaluate(self._single(state), self.data["test"], windows, self.training.precision, self.device).item()
        log.info("test loss %.4f nats (%.3f bits/char) at step %d", loss, bits(loss), step)
        return {"test_loss": loss, "test_bpc": bits(loss), "test_step": step}

    def _sample(self, state, replica: Replica) -> str:
        """train.sample_length characters with the generate.* settings; a stop here skips the sample, not the run."""
        length, gen = self.cfg.train.sample_length, self.cfg.generate
        if not length:
            return ""
        text = sample_text(self._single(state), self.corpus.vocab, gen.prompt, length, gen.temperature, gen.top_k,
                           gen.top_p, replica.seed, self.corpus.vocab.decode(self.corpus.train[:1].tolist()),
                           should_stop=lambda: self.signals is not None and self.signals.signum is not None)
        if text is None:
            log.info("stopped during the sample after training: the run is complete, the sample skipped")
            return ""
        self._write(lambda t: replica.tracker.write_sample(t), text, replica)
        log.info("a sample of %d characters:\n%s", length, text)
        return text

    def _finish_all(self, status: str, **extra: Any) -> None:
        for replica in self.replicas:
            if not replica.summary:
                self._finish(replica, status, **extra)

    def _finish(self, replica: Replica, status: str, **extra: Any) -> Dict[str, Any]:
        cfg = self.cfg
        run = {"model": cfg.model.name, "scale": cfg.scale.name, "variant": self.variant, "params": self.params,
               "vocab_size": len(self.corpus.vocab), "eval": cfg.train.eval.value, "device": str(self.device),
               "threads": torch.get_num_threads(), "precision": self.training.precision.value,
               "compiled": self.training.compiled, "replicas": len(self.replicas),
               "digest": replica.digest, "overrides": self.identity.overrides,
               "choices": self.identity.choices}
        replica.summary = summary_record(replica, run, status, extra)
        if status == "ok":  # a finished run without its summary is a failure, said in one line
            self._write(replica.tracker.finish, replica.summary, replica)
        else:  # the run failed already: a full or read-only folder on the way out is logged, not raised
            replica.tracker.finish(replica.summary, best_effort=True)
        return replica.summary
