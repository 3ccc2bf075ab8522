"""What a training run is built of, from its config: the model's replicas, the optimizer, the schedule, the
precision and the compiled step. The trainer and the benchmark build their runs here, and nowhere else."""

from dataclasses import dataclass
from typing import Sequence

import torch

from drakegpt.models.config import ModelConfig
from drakegpt.models.language_model import LanguageModel
from drakegpt.optim import build_optimizer, build_schedule, parameter_groups
from drakegpt.runtime import autocast, resolve_compile, resolve_precision
from drakegpt.schema import Precision, RunConfig, model_config


@dataclass
class Training:
    config: ModelConfig
    model: LanguageModel
    step_model: torch.nn.Module  # the model, compiled where train.compile says so
    optimizer: torch.optim.Optimizer
    schedule: torch.optim.lr_scheduler.LRScheduler
    precision: Precision
    compiled: bool
    device: torch.device


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


def build_training(cfg: RunConfig, vocab_size: int, seeds: Sequence[int], device: torch.device) -> Training:
    config = model_config(cfg.model, cfg.scale, vocab_size)
    model = build_replicas(config, seeds, device)
    optimizer = build_optimizer(parameter_groups(model), cfg.optimizer)
    schedule = build_schedule(optimizer, cfg.optimizer)
    compiled = resolve_compile(cfg.train.compile, device)
    precision = resolve_precision(cfg.train.precision, device, cfg.scale.embedding_dim)
    return Training(config, model, torch.compile(model) if compiled else model, optimizer, schedule, precision,
                    compiled, device)


def train_step(training: Training, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """One iteration on batches (R, B, T): forward, backward, optimizer step. Returns each replica's loss."""
    with autocast(training.precision, training.device):
        _, loss = training.step_model(x, y)
    training.optimizer.zero_grad(set_to_none=True)
    loss.sum().backward()  # replicas are independent: the sum's gradient is each replica's own
    training.optimizer.step()
    return loss.detach()
