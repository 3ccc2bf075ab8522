"""Structured configs: the types of every key in conf/, registered with Hydra's ConfigStore.

A wrong type (`scale.num_heads=four`) or an unknown key fails when Hydra composes the config;
`validate` then checks the values that types cannot (sizes, ranges, combinations), before any work.
"""

from dataclasses import dataclass, field
from enum import Enum
from typing import List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from drakegpt.errors import UsageError
from drakegpt.models import MODELS, Attention  # the models themselves import nothing of Hydra


class Task(Enum):
    train = "train"
    generate = "generate"


class Schedule(Enum):
    cyclic = "cyclic"
    cosine = "cosine"


class OptimizerImpl(Enum):
    fused = "fused"
    foreach = "foreach"
    for_loop = "for_loop"


class Precision(Enum):
    auto = "auto"
    fp32 = "fp32"
    bf16 = "bf16"


class DataSource(Enum):
    sample = "sample"
    csv = "csv"
    text = "text"
    kaggle = "kaggle"


# Keys that never change the numbers a run produces: a run may be resumed with other values, and a
# sweep's report does not tell jobs apart by them.
RUN_INDEPENDENT_KEYS = (
    "task",
    "device",
    "logger",
    "generate",
    "paths",
    "train.resume",
    "train.threads",
    "train.compile",
)


class WandbMode(Enum):
    online = "online"
    offline = "offline"
    disabled = "disabled"
    shared = "shared"
    dryrun = "dryrun"  # wandb's older names for offline and online, still accepted in WANDB_MODE
    run = "run"


@dataclass
class ModelChoice:
    name: str = MISSING
    attention: Attention = Attention.fast


@dataclass
class ScaleConfig:
    name: str = MISSING
    context_length: int = MISSING
    batch_size: int = MISSING
    base_lr: float = MISSING
    max_lr: float = MISSING
    betas: List[float] = MISSING
    embedding_dim: int = MISSING
    num_heads: int = MISSING
    num_layers: int = MISSING
    dropout: float = MISSING


@dataclass
class OptimizerConfig:
    schedule: Schedule = MISSING
    base_lr: float = MISSING
    max_lr: float = MISSING
    betas: List[float] = MISSING
    weight_decay: float = 0.01
    step_size_up: int = 2500  # cyclic: iterations from base_lr up to max_lr (and as many back down)
    warmup_iters: int = 500  # cosine: linear warm-up to max_lr, then cosine decay to base_lr
    implementation: OptimizerImpl = OptimizerImpl.fused


@dataclass
class DataConfig:
    source: DataSource = MISSING
    path: Optional[str] = None
    artist: Optional[str] = None
    column: str = "Lyric"
    dataset: str = "deepshah16/song-lyrics-dataset"
    cache_dir: str = "~/.cache/drakegpt/kaggle"
    train_fraction: float = 0.9


@dataclass
class LoggerConfig:
    name: str = MISSING
    project: str = "DrakeGPT"
    mode: WandbMode = WandbMode.offline
    entity: Optional[str] = None
    group: Optional[str] = None  # null: the sweep's folder (hydra.sweep.dir), shared by all its jobs


# The values of the train and generate keys live in conf/config.yaml; here are their types.
@dataclass
class TrainConfig:
    iters: int = MISSING
    eval_interval: int = MISSING
    eval_iters: int = MISSING
    precision: Precision = MISSING
    compile: bool = MISSING
    patience: int = MISSING
    resume: bool = MISSING
    threads: Optional[int] = None


@dataclass
class GenerateConfig:
    length: int = MISSING
    prompt: str = MISSING
    temperature: float = MISSING
    top_k: Optional[int] = None
    top_p: Optional[float] = None
    num_samples: int = MISSING
    kv_cache: bool = MISSING
    checkpoint: Optional[str] = None


@dataclass
class PathsConfig:
    models_dir: str = MISSING
    inference_dir: str = MISSING


@dataclass
class RunConfig:
    task: Task = MISSING
    seed: int = MISSING
    device: str = MISSING
    model: ModelChoice = field(default_factory=ModelChoice)
    scale: ScaleConfig = field(default_factory=ScaleConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    data: DataConfig = field(default_factory=DataConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    optimized_metric: Optional[str] = None  # a summary.json key returned to hyperparameter sweepers


def register_configs() -> None:
    ConfigStore.instance().store(name="run_schema", node=RunConfig)


def validate(cfg: RunConfig) -> None:
    """Raise UsageError naming the first bad value and its fix."""
    scale, train, opt = cfg.scale, cfg.train, cfg.optimizer
    if cfg.model.name not in MODELS:
        raise UsageError(f"model={cfg.model.name} is not a model; choose one of {', '.join(MODELS)}")
    positive = {
        "scale.context_length": scale.context_length,
        "scale.batch_size": scale.batch_size,
        "scale.embedding_dim": scale.embedding_dim,
        "scale.num_heads": scale.num_heads,
        "scale.num_layers": scale.num_layers,
        "train.iters": train.iters,
        "train.eval_interval": train.eval_interval,
        "train.eval_iters": train.eval_iters,
        "optimizer.base_lr": opt.base_lr,
        "optimizer.max_lr": opt.max_lr,
        "optimizer.step_size_up": opt.step_size_up,
    }
    for key, value in positive.items():
        if value <= 0:
            raise UsageError(f"{key}={value} must be positive; set {key} to a value above 0")
    if scale.embedding_dim % scale.num_heads:
        raise UsageError(
            f"scale.embedding_dim={scale.embedding_dim} is not divisible by scale.num_heads={scale.num_heads}; "
            f"choose num_heads among the divisors of {scale.embedding_dim}"
        )
    if not 0 <= scale.dropout < 1:
        raise UsageError(f"scale.dropout={scale.dropout} is outside [0, 1); set scale.dropout to e.g. 0.1")
    if opt.max_lr < opt.base_lr:
        raise UsageError(
            f"optimizer.max_lr={opt.max_lr} is below optimizer.base_lr={opt.base_lr}; set max_lr >= base_lr"
        )
    if len(opt.betas) != 2 or not all(0 <= b < 1 for b in opt.betas):
        raise UsageError(f"optimizer.betas={list(opt.betas)} must be two numbers in [0, 1), e.g. [0.9,0.95]")
    if opt.weight_decay < 0 or opt.warmup_iters < 0:
        raise UsageError("optimizer.weight_decay and optimizer.warmup_iters must be >= 0")
    if opt.schedule is Schedule.cosine and opt.warmup_iters >= train.iters:
        raise UsageError(
            f"optimizer.warmup_iters={opt.warmup_iters} is not shorter than train.iters={train.iters}; "
            f"the cosine decay would never start: lower optimizer.warmup_iters"
        )
    if train.eval_interval > train.iters:
        raise UsageError(
            f"train.eval_interval={train.eval_interval} is larger than train.iters={train.iters}; "
            f"lower train.eval_interval or raise train.iters"
        )
    if train.patience < 0:
        raise UsageError(f"train.patience={train.patience} must be >= 0 (0 turns early stopping off)")
    if train.threads is not None and train.threads <= 0:
        raise UsageError(f"train.threads={train.threads} must be positive, or null for torch's default")
    if not 0 < cfg.data.train_fraction < 1:
        raise UsageError(f"data.train_fraction={cfg.data.train_fraction} must be in (0, 1), e.g. 0.9")
    gen = cfg.generate
    if not gen.prompt:
        raise UsageError("generate.prompt is empty; give it at least one character (the default is a newline)")
    if gen.length < 0 or gen.num_samples <= 0:
        raise UsageError("generate.length must be >= 0 and generate.num_samples positive")
    if gen.temperature < 0:
        raise UsageError(f"generate.temperature={gen.temperature} must be >= 0 (0 is greedy)")
    if gen.top_k is not None and gen.top_k <= 0:
        raise UsageError(f"generate.top_k={gen.top_k} must be positive, or null to keep every character")
    if gen.top_p is not None and not 0 < gen.top_p <= 1:
        raise UsageError(f"generate.top_p={gen.top_p} must be in (0, 1], or null")
