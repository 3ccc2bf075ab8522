"""Evaluation: the loss of a model on a split, in nats and in bits per character.

- `exact` (the default): the val split (and the test split) cut into windows of the context length, each
  character after the first predicted exactly once (a last, shorter stretch by a window that ends at the
  split's end, counting only its new characters). Deterministic: the same weights give the same loss. The
  train split is monitored on a fixed subset of as many windows, spread evenly over it.
- `random`: the original DrakeGPT's rule, train.eval_iters random batches per split, drawn once per run
  from the seed (so every evaluation of a run uses the same windows).

Windows go through the model in chunks of runtime.tokens_per_forward: on a CPU small enough to stay in
cache, and everywhere small enough that a stop or the progress bar is never more than a fraction of a
second away.
"""

import math
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from tqdm import tqdm

from drakegpt.data import Corpus, gather, random_starts
from drakegpt.runtime import autocast, tokens_per_forward
from drakegpt.schema import Evaluation

NATS_PER_BIT = math.log(2)


def bits(nats: float) -> float:
    """Cross-entropy in bits per character."""
    return nats / NATS_PER_BIT


@dataclass
class Windows:
    """Where one split's evaluation windows start, (R, n), and from which position of each window its targets
    count, (R, n): 0 counts all of them."""

    starts: torch.Tensor
    first_counted: torch.Tensor


def exact_windows(length: int, context_length: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Starts and first counted positions so that targets 1 .. length-1 are each predicted once."""
    T, targets = context_length, length - 1
    starts = torch.arange(0, targets - T + 1, T)
    first = torch.zeros(len(starts), dtype=torch.long)
    covered = len(starts) * T
    if covered < targets:  # the rest: a window ending at the split's end, counting only what is new
        starts = torch.cat([starts, torch.tensor([targets - T])])
        first = torch.cat([first, torch.tensor([T - (targets - covered)])])
    return starts, first


def spread_windows(length: int, context_length: int, n: int) -> torch.Tensor:
    """n window starts spread evenly over a split (a fixed subset to monitor the train loss on)."""
    last = length - 1 - context_length
    return torch.linspace(0, last, n).round().long() if n > 1 else torch.zeros(1, dtype=torch.long)


def evaluation_windows(corpus: Corpus, protocol: Evaluation, seeds, context_length: int, batch_size: int,
                       eval_iters: int) -> Dict[str, Windows]:
    """Each split's windows for replicas of `seeds`: exact windows are the same for all, random ones per seed."""
    T, R = context_length, len(seeds)
    if protocol is Evaluation.random:
        streams = [torch.Generator().manual_seed(seed + 1) for seed in seeds]
        windows = {}
        for split in ("train", "val"):  # drawn in this order, as the original's evaluation did
            data = getattr(corpus, split)
            starts = torch.stack([random_starts(data, eval_iters * batch_size, T, g) for g in streams])
            windows[split] = Windows(starts, torch.zeros_like(starts))
        return windows
    windows = {}
    for split, data in corpus.splits.items():
        if split == "train":
            continue
        starts, first = exact_windows(len(data), T)
        windows[split] = Windows(starts.expand(R, -1), first.expand(R, -1))
    n = windows["val"].starts.shape[1]
    train = spread_windows(len(corpus.train), T, n).expand(R, -1)
    windows["train"] = Windows(train, torch.zeros_like(train))
    return {split: windows[split] for split in ("train", "val", "test") if split in windows}


class EvaluationStopped(Exception):
    """A stop signal came during an evaluation: it was abandoned, nothing is lost but its partial sums."""


@torch.inference_mode()
def evaluate(model, data: torch.Tensor, windows: Windows, precision, device,
             should_stop: Callable[[], bool] = lambda: False, label: Optional[str] = None) -> torch.Tensor:
    """Each replica's mean cross-entropy (nats) over its windows' counted targets, (R,)."""
    T = model.config.context_length
    chunk = max(1, tokens_per_forward(model.config, windows.starts.shape[0], device) // T)
    pieces = list(zip(windows.starts.split(chunk, dim=1), windows.first_counted.split(chunk, dim=1)))
    total = torch.zeros(windows.starts.shape[0], device=device, dtype=torch.float64)
    counted = torch.zeros_like(total)
    positions = torch.arange(T, device=device)
    was_training = model.training
    model.eval()
    try:
        for starts, first in tqdm(pieces, desc=label, disable=None if label and len(pieces) > 4 else True,
                                  leave=False, dynamic_ncols=True):
            if should_stop():
                raise EvaluationStopped()
            x, y = gather(data, starts.to(device), T)
            with autocast(precision, device):
                logits, _ = model(x)
            losses = F.cross_entropy(logits.flatten(0, -2).float(), y.flatten(), reduction="none").view(y.shape)
            keep = positions >= first.to(device)[..., None]  # (R, n, T)
            total += (losses * keep).sum(dim=(1, 2), dtype=torch.float64)
            counted += keep.sum(dim=(1, 2))
    finally:
        model.train(was_training)
    return (total / counted).float()
