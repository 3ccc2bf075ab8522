"""The optimizer and its learning-rate schedule, built from conf/optimizer/*.yaml with hydra.utils.instantiate.

`optimizer.algorithm` is a partial that takes the parameters, `optimizer.schedule` one that takes the
optimizer; both are stepped once per training iteration. A new optimizer is a new YAML file.
"""

import logging
import math
from typing import Iterable

import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from torch.optim.lr_scheduler import LambdaLR, LRScheduler

from drakegpt.config import OptimizerConfig
from drakegpt.errors import UsageError

log = logging.getLogger(__name__)


def build_optimizer(parameters: Iterable[torch.nn.Parameter], cfg: OptimizerConfig) -> torch.optim.Optimizer:
    return _call("optimizer.algorithm", cfg.algorithm, list(parameters))


def build_schedule(optimizer: torch.optim.Optimizer, cfg: OptimizerConfig) -> LRScheduler:
    return _call("optimizer.schedule", cfg.schedule, optimizer)


def check(cfg: OptimizerConfig) -> None:
    """Build both on a stand-in parameter, so that a bad value fails in one line before any real work."""
    build_schedule(build_optimizer([torch.nn.Parameter(torch.zeros(1))], cfg), cfg)


def _call(key: str, node, argument):
    try:
        return instantiate(node, _convert_="all")(argument)
    except InstantiationException as e:
        cause = e.__cause__ or e
        raise UsageError(f"{key} ({node.get('_target_')}): {_first_line(cause)}; fix the value in {key}") from None
    except (ValueError, TypeError) as e:
        raise UsageError(f"{key} ({node.get('_target_')}): {_first_line(e)}; fix the value in {key}") from None


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[-1].strip()


def warmup_cosine(
    optimizer: torch.optim.Optimizer, warmup_iters: int, total_iters: int, base_lr: float, max_lr: float
) -> LambdaLR:
    """Linear warm-up to max_lr (the optimizer's lr), then a half cosine down to base_lr at the last iteration.

    A warm-up longer than half the run is shortened to half of it, so that a short run still decays.
    """
    warmup = min(warmup_iters, total_iters // 2)
    if warmup < warmup_iters:
        log.info("optimizer warm-up shortened from %d to %d iterations: half of train.iters", warmup_iters, warmup)
    floor = base_lr / max_lr

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total_iters - warmup))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    return LambdaLR(optimizer, factor)
