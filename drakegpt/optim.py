"""AdamW and its learning-rate schedule, both stepped once per training iteration."""

import math

import torch
from torch.optim.lr_scheduler import CyclicLR, LambdaLR, LRScheduler

from drakegpt.config import OptimizerConfig, OptimizerImpl, Schedule


def build_optimizer(model: torch.nn.Module, cfg: OptimizerConfig) -> torch.optim.AdamW:
    return torch.optim.AdamW(
        model.parameters(),
        lr=cfg.base_lr if cfg.schedule is Schedule.cyclic else cfg.max_lr,
        betas=tuple(cfg.betas),
        weight_decay=cfg.weight_decay,
        fused=cfg.implementation is OptimizerImpl.fused,
        foreach=cfg.implementation is OptimizerImpl.foreach,
    )


class WarmupCosine:
    """Factor on max_lr: linear warm-up from 0, then a half cosine down to base_lr at the last iteration."""

    def __init__(self, warmup_iters: int, total_iters: int, floor: float):
        self.warmup_iters, self.total_iters, self.floor = warmup_iters, total_iters, floor

    def __call__(self, step: int) -> float:
        if step < self.warmup_iters:
            return (step + 1) / self.warmup_iters
        progress = min(1.0, (step - self.warmup_iters) / max(1, self.total_iters - self.warmup_iters))
        return self.floor + (1 - self.floor) * 0.5 * (1 + math.cos(math.pi * progress))


def build_schedule(optimizer: torch.optim.Optimizer, cfg: OptimizerConfig, total_iters: int) -> LRScheduler:
    if cfg.schedule is Schedule.cyclic:
        # The seed's triangular cycle: step_size_up iterations up to max_lr, as many back down.
        return CyclicLR(
            optimizer, cfg.base_lr, cfg.max_lr, step_size_up=cfg.step_size_up, mode="triangular", cycle_momentum=False
        )
    return LambdaLR(optimizer, WarmupCosine(cfg.warmup_iters, total_iters, cfg.base_lr / cfg.max_lr))
