"""Structured configs: the types of every key in conf/, registered with Hydra's ConfigStore.

The values live in conf/ (config.yaml and the group files); the dataclasses here give types only, so a
wrong type (`scale.num_heads=four`) or an unknown key fails when Hydra composes the config. `validate`
then checks what types cannot (ranges, finiteness, combinations) before any work. Nothing here imports
torch: composing a config (and so `--help` and tab completion) stays fast.
"""

import hashlib
import math
import os
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf

from drakegpt.errors import UsageError
from drakegpt.files import is_file_name
from drakegpt.models.config import (
    Activation,
    FeedForward,
    Implementation,
    LinearKind,
    ModelConfig,
    Norm,
    NormPosition,
    Positions,
)

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
# The ladder, in the order the models grow: reports and plots list them so.
MODEL_LADDER = (
    "BigramLM",
    "SingleHeadAttentionLM",
    "MultiHeadAttentionLM",
    "BlocksLM",
    "ResidualBlocksLM",
    "TransformerLM",
    "BitNetLM",
)
SCALE_ORDER = ("default", "large")


class Task(Enum):
    train = "train"
    generate = "generate"


class Precision(Enum):
    auto = "auto"
    fp32 = "fp32"
    bf16 = "bf16"


class DataSource(Enum):
    sample = "sample"
    csv = "csv"
    text = "text"
    kaggle = "kaggle"


class WandbMode(Enum):
    online = "online"
    offline = "offline"
    disabled = "disabled"
    shared = "shared"
    dryrun = "dryrun"  # wandb's older names for offline and online, still accepted in WANDB_MODE
    run = "run"


class Heads(Enum):
    one = "one"  # one head as wide as the embedding
    num_heads = "num_heads"  # scale.num_heads heads of embedding_dim / num_heads


class Depth(Enum):
    one = "one"  # one layer
    num_layers = "num_layers"  # scale.num_layers blocks


# Keys that never change the numbers a run produces: a run may be resumed with other values, the report
# does not tell jobs apart by them, and the published-model registry ignores them.
RUN_INDEPENDENT_KEYS = (
    "task",
    "device",
    "logger",
    "generate",
    "paths",
    "train.resume",
    "train.threads",
    "train.compile",
    "train.sample_length",
)


@dataclass
class ModelSwitches:
    """The `model` group: a preset's name and the ideas it has (conf/model/<name>.yaml)."""

    name: str = MISSING
    attention: bool = MISSING
    heads: Heads = MISSING
    depth: Depth = MISSING
    feed_forward: FeedForward = MISSING
    activation: Activation = MISSING
    residual: bool = MISSING
    projection: bool = MISSING
    norm: Norm = MISSING
    norm_position: NormPosition = MISSING
    final_norm: Norm = MISSING
    dropout: bool = MISSING
    positions: Positions = MISSING
    tie_embeddings: bool = MISSING
    linear: LinearKind = MISSING
    implementation: Implementation = MISSING
    cpu_kernels: bool = MISSING


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
    """`algorithm` and `schedule` are `_target_` / `_partial_` nodes built with hydra.utils.instantiate."""

    name: str = MISSING
    base_lr: float = MISSING
    max_lr: float = MISSING
    algorithm: Any = MISSING  # called with the parameters
    schedule: Any = MISSING  # called with the optimizer; stepped once per iteration


@dataclass
class DataConfig:
    source: DataSource = MISSING
    path: Optional[str] = MISSING
    artist: Optional[str] = MISSING
    column: str = MISSING
    dataset: str = MISSING
    cache_dir: str = MISSING
    train_fraction: float = MISSING


@dataclass
class LoggerConfig:
    name: str = MISSING
    project: Optional[str] = MISSING
    mode: WandbMode = MISSING
    entity: Optional[str] = MISSING
    group: Optional[str] = MISSING
    tags: List[str] = MISSING
    init_timeout_s: float = MISSING


@dataclass
class TrainConfig:
    iters: int = MISSING
    eval_interval: int = MISSING
    eval_iters: int = MISSING
    precision: Precision = MISSING
    compile: Any = MISSING  # auto, true or false
    patience: int = MISSING
    resume: bool = MISSING
    threads: Optional[int] = MISSING
    replicas: int = MISSING
    sample_length: int = MISSING


@dataclass
class GenerateConfig:
    length: int = MISSING
    prompt: str = MISSING
    temperature: float = MISSING
    top_k: Optional[int] = MISSING
    top_p: Optional[float] = MISSING
    num_samples: int = MISSING
    kv_cache: bool = MISSING
    compile: Any = MISSING  # auto, true or false
    checkpoint: Optional[str] = MISSING


@dataclass
class PathsConfig:
    models_dir: str = MISSING
    inference_dir: str = MISSING


@dataclass
class RunConfig:
    task: Task = MISSING
    seed: int = MISSING
    device: str = MISSING
    model: ModelSwitches = field(default_factory=ModelSwitches)
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
    if not OmegaConf.has_resolver("multiply"):  # conf/optimizer/sgd_cyclic.yaml scales the preset's rates
        OmegaConf.register_new_resolver("multiply", lambda a, b: a * b)
    if not OmegaConf.has_resolver("job_folder"):  # conf/config.yaml's hydra.sweep.subdir
        OmegaConf.register_new_resolver("job_folder", job_folder)


def job_folder(overrides: str) -> str:
    """A sweep job's folder name from its overrides: one name, never a path (a '/' in a value would nest the
    folder, or with '..' put it outside the sweep), and short enough for the file system."""
    name = overrides.replace("/", "%2F")
    if len(name.encode()) > 200:  # most file systems stop at 255 bytes
        tail = hashlib.sha256(name.encode()).hexdigest()[:8]
        name = name.encode()[:180].decode(errors="ignore") + f"~{tail}"
    return name


def model_config(model: ModelSwitches, scale: ScaleConfig, vocab_size: int) -> ModelConfig:
    """The model's constructor arguments: the preset's switches applied to the scale's shape."""
    return ModelConfig(
        vocab_size=vocab_size,
        context_length=scale.context_length,
        embedding_dim=scale.embedding_dim,
        num_heads=scale.num_heads if model.heads is Heads.num_heads else 1,
        num_layers=scale.num_layers if model.depth is Depth.num_layers else 1,
        dropout=scale.dropout if model.dropout else 0.0,
        attention=model.attention,
        feed_forward=model.feed_forward,
        activation=model.activation,
        residual=model.residual,
        projection=model.projection,
        norm=model.norm,
        norm_position=model.norm_position,
        final_norm=model.final_norm,
        positions=model.positions,
        tie_embeddings=model.tie_embeddings,
        linear=model.linear,
        implementation=model.implementation,
        cpu_kernels=model.cpu_kernels,
    )


def preset_switches(name: str) -> Dict[str, Any]:
    """A model preset's switches as conf/ writes them (config.yaml's defaults, then conf/model/<name>.yaml)."""
    preset = CONF_DIR / "model" / f"{name}.yaml"
    if not preset.is_file():
        return {}
    merged = OmegaConf.merge(OmegaConf.load(CONF_DIR / "config.yaml").model, OmegaConf.load(preset))
    return OmegaConf.to_container(merged)


def _off(value: Any) -> bool:
    return value in (False, "none", "one", Norm.none, FeedForward.none, Heads.one, Depth.one)


def _model_problem(m: ModelSwitches, scale: ScaleConfig, replicas: int) -> Optional[str]:
    """The first switch combination that makes no sense, as one line, or None."""
    if not m.attention:
        for key in ("heads", "depth", "feed_forward", "residual", "projection", "norm", "final_norm", "dropout",
                    "tie_embeddings"):
            if not _off(getattr(m, key)):
                value = getattr(m, key)
                shown = value.value if isinstance(value, Enum) else str(value).lower()
                return (
                    f"model.{key}={shown} needs attention, and model.attention=false is the bigram table "
                    f"(no embeddings, no layers); drop model.{key} or set model.attention=true"
                )
        if m.positions is Positions.rotary:
            return "model.positions=rotary needs attention (model.attention=false); use model.positions=learned"
        if m.linear is LinearKind.bitlinear:
            return "model.linear=bitlinear needs attention layers to quantise (model.attention=false); use dense"
        return None
    if m.feed_forward is FeedForward.none and m.activation is not Activation.relu:
        return f"model.activation={m.activation.value} has no feed-forward to act in (model.feed_forward=none)"
    if m.norm is Norm.none and m.norm_position is NormPosition.post:
        return "model.norm_position=post needs a norm (model.norm=none); set model.norm or drop norm_position"
    if m.implementation is Implementation.naive:
        for key, value in (("positions", Positions.rotary), ("linear", LinearKind.bitlinear)):
            if getattr(m, key) is value:
                return (
                    f"model.{key}={value.value} cannot be expressed by model.implementation=naive (the seed's "
                    f"per-head code); use model.implementation=sdpa"
                )
        if replicas > 1:
            return f"train.replicas={replicas} needs model.implementation=sdpa (naive runs one model at a time)"
    heads = scale.num_heads if m.heads is Heads.num_heads else 1
    if m.positions is Positions.rotary and (scale.embedding_dim // heads) % 2:
        return (
            f"model.positions=rotary needs an even head size, and scale.embedding_dim={scale.embedding_dim} / "
            f"{heads} heads is odd; change scale.num_heads or scale.embedding_dim"
        )
    return None


def _non_finite(node: Any, prefix: str = "") -> Optional[str]:
    """The first key under `node` (plain data) whose number is NaN or infinite."""
    if isinstance(node, dict):
        items = node.items()
    elif isinstance(node, (list, tuple)):
        items = enumerate(node)
    else:
        if isinstance(node, float) and not math.isfinite(node):
            return prefix
        return None
    for key, value in items:
        found = _non_finite(value, f"{prefix}.{key}" if prefix else str(key))
        if found:
            return found
    return None


MAX_REPLICAS = 1024


def validate(cfg: RunConfig, plain: Optional[Dict[str, Any]] = None) -> None:
    """Raise UsageError naming the first bad value and its fix. `plain`: the same config as resolved plain data."""
    scale, train, opt = cfg.scale, cfg.train, cfg.optimizer
    if plain is not None:
        bad = _non_finite(plain)
        if bad:
            value = OmegaConf.select(OmegaConf.create(plain), bad)
            raise UsageError(f"{bad}={value} is not a finite number; set {bad} to a real value")
    positive = {
        "scale.context_length": scale.context_length,
        "scale.batch_size": scale.batch_size,
        "scale.embedding_dim": scale.embedding_dim,
        "scale.num_heads": scale.num_heads,
        "scale.num_layers": scale.num_layers,
        "train.iters": train.iters,
        "train.eval_interval": train.eval_interval,
        "train.eval_iters": train.eval_iters,
        "train.replicas": train.replicas,
        "optimizer.base_lr": opt.base_lr,
        "optimizer.max_lr": opt.max_lr,
    }
    for key, value in positive.items():
        if value <= 0:
            raise UsageError(f"{key}={value} must be positive; set {key} to a value above 0")
    for key, name in (("model.name", cfg.model.name), ("scale.name", scale.name)):
        if not is_file_name(name):
            raise UsageError(
                f"{key}={name!r} is not a name: it names the run's folder and its published weights; use letters, "
                f"digits, '-' or '_'"
            )
    if train.replicas > MAX_REPLICAS:
        raise UsageError(
            f"train.replicas={train.replicas} is above {MAX_REPLICAS}: each replica is a run of its own (folder, "
            f"checkpoints, W&B run); use fewer, or sweep seed= for more"
        )
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
    if len(scale.betas) != 2 or not all(0 <= b < 1 for b in scale.betas):
        raise UsageError(f"scale.betas={list(scale.betas)} must be two numbers in [0, 1), e.g. [0.9,0.95]")
    for key, value in (("train.compile", train.compile), ("generate.compile", cfg.generate.compile)):
        if value not in (True, False, "auto"):
            raise UsageError(f"{key}={value} is not one of auto, true, false")
    if train.patience < 0:
        raise UsageError(f"train.patience={train.patience} must be >= 0 (0 turns early stopping off)")
    if cfg.logger.init_timeout_s <= 0:
        raise UsageError(f"logger.init_timeout_s={cfg.logger.init_timeout_s} must be positive, e.g. 30")
    if train.sample_length < 0:
        raise UsageError(f"train.sample_length={train.sample_length} must be >= 0 (0 samples nothing)")
    if train.threads is not None and not 0 < train.threads <= (os.cpu_count() or 1):
        raise UsageError(
            f"train.threads={train.threads} must be between 1 and this machine's {os.cpu_count()} CPUs, "
            f"or null for torch's default"
        )
    if not 0 < cfg.data.train_fraction < 1:
        raise UsageError(f"data.train_fraction={cfg.data.train_fraction} must be in (0, 1), e.g. 0.9")
    problem = _model_problem(cfg.model, scale, train.replicas)
    if problem:
        raise UsageError(problem)
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
