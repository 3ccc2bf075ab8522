"""Structured configs: the types of every key in conf/, registered with Hydra's ConfigStore.

The values live in conf/ (config.yaml and the group files); the dataclasses here give types only, so a
wrong type (`scale.num_heads=four`) or an unknown key fails when Hydra composes the config. `validate`
then checks what types cannot (ranges, finiteness, combinations) before any work. The model's switches
are declared once, in drakegpt/models/config.py, and taken from there. Nothing here imports torch:
composing a config (and so `--help` and tab completion) stays fast.
"""

import functools
import hashlib
import math
import os
from dataclasses import dataclass, field, fields, make_dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf

from drakegpt.errors import UsageError
from drakegpt.files import is_file_name
from drakegpt.models.config import (
    Activation,
    Depth,
    FeedForward,
    Heads,
    Implementation,
    LinearKind,
    ModelConfig,
    Norm,
    NormPosition,
    Positions,
    Switches,
)


class Task(Enum):
    train = "train"
    generate = "generate"


class Precision(Enum):
    auto = "auto"
    fp32 = "fp32"
    bf16 = "bf16"


class Evaluation(Enum):
    exact = "exact"  # every character of the val split predicted once (the train split: a fixed subset as large)
    random = "random"  # the original DrakeGPT's rule: train.eval_iters random batches per split, drawn once


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


# Keys that never change the numbers a run produces: a run may be resumed with other values, the report
# does not tell jobs apart by them, and the registry ignores them.
RUN_INDEPENDENT_KEYS = (
    "task",
    "device",
    "logger",
    "generate",
    "paths",
    "preset",
    "train.resume",
    "train.threads",
    "train.sample_length",
    "train.log_interval",
    "train.publish",
)

# The `model` group: a preset's name and its switches, every key and type taken from Switches.
ModelPreset = make_dataclass(
    "ModelPreset",
    [("name", str, field(default=MISSING))] + [(f.name, f.type, field(default=f.default)) for f in fields(Switches)],
)


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
    iters: int = MISSING  # how long the preset trains (train.iters follows it)
    cycle_iters: int = MISSING  # the cyclic schedules' half cycle: a quarter of iters, as in the original


@dataclass
class OptimizerConfig:
    """`algorithm` and `schedule` are `_target_` / `_partial_` nodes built with hydra.utils.instantiate."""

    name: str = MISSING
    base_lr: float = MISSING
    max_lr: float = MISSING
    algorithm: Any = MISSING  # called with the model's parameter groups
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
    test_fraction: float = MISSING


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
    eval: Evaluation = MISSING
    eval_iters: int = MISSING
    log_interval: int = MISSING
    precision: Precision = MISSING
    compile: Any = MISSING  # auto, true or false
    patience: int = MISSING
    resume: bool = MISSING
    threads: Optional[int] = MISSING
    replicas: int = MISSING
    sample_length: int = MISSING
    publish: bool = MISSING


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
    registry_dir: str = MISSING
    inference_dir: str = MISSING


@dataclass
class RunConfig:
    task: Task = MISSING
    seed: int = MISSING
    device: str = MISSING
    model: ModelPreset = field(default_factory=ModelPreset)
    preset: ModelPreset = field(default_factory=ModelPreset)  # the model preset as its file has it, for the variant
    scale: ScaleConfig = field(default_factory=ScaleConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    data: DataConfig = field(default_factory=DataConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    optimized_metric: Optional[str] = None  # a summary.json key returned to hyperparameter sweepers


CONF_DIR = Path(__file__).resolve().parent.parent / "conf"


def _with_conf(read):
    """read(config loader) with Hydra initialised on conf/ (or as the running app initialised it)."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    register_configs()
    if GlobalHydra.instance().is_initialized():
        return read(GlobalHydra.instance().config_loader())
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return read(GlobalHydra.instance().config_loader())


def group_options(group: str) -> List[str]:
    """The options of a config group, as Hydra finds them in conf/."""
    return sorted(_with_conf(lambda loader: loader.get_group_options(group)))


def ladder() -> List[str]:
    """conf/model/'s presets in the order the models grow: each switches on one more idea than the one before."""
    return list(_ladder())


@functools.lru_cache(maxsize=1)  # seven composes: once per process
def _ladder() -> Tuple[str, ...]:
    from hydra import compose

    from drakegpt.models.config import ideas_on

    def ideas(name: str) -> int:
        preset = _with_conf(lambda _: compose("config", [f"model={name}"], return_hydra_config=False)).model
        return ideas_on(OmegaConf.to_container(preset, resolve=False, enum_to_str=True))

    return tuple(sorted(group_options("model"), key=lambda name: (ideas(name), name)))


def register_configs() -> None:
    ConfigStore.instance().store(name="run_schema", node=RunConfig)
    if not OmegaConf.has_resolver("multiply"):  # conf/optimizer/sgd_cyclic.yaml scales the preset's rates
        OmegaConf.register_new_resolver("multiply", lambda a, b: a * b)
    if not OmegaConf.has_resolver("job_folder"):  # conf/config.yaml's hydra.sweep.subdir
        OmegaConf.register_new_resolver("job_folder", job_folder)
    if not OmegaConf.has_resolver("pid"):  # conf/config.yaml's hydra.output_subdir: two starts in one second
        OmegaConf.register_new_resolver("pid", os.getpid)


def job_folder(overrides: str) -> str:
    """A sweep job's folder name from its overrides: one name, never a path (a '/' in a value would nest the
    folder, or with '..' put it outside the sweep), and short enough for the file system."""
    name = overrides.replace("/", "%2F")
    if len(name.encode()) > 200:  # most file systems stop at 255 bytes
        tail = hashlib.sha256(name.encode()).hexdigest()[:8]
        name = name.encode()[:180].decode(errors="ignore") + f"~{tail}"
    return name


def feed_forward_width(model, embedding_dim: int) -> int:
    """The feed-forward's hidden width: mlp ratio x C; glu 2/3 of that (the same parameters with three
    matrices), rounded up to a multiple of feed_forward_multiple as LLaMA rounds 8C/3."""
    C, kind = embedding_dim, model.feed_forward
    if kind is FeedForward.none:
        return 0
    if kind is FeedForward.linear:
        return C
    if kind is FeedForward.mlp:
        return round(model.feed_forward_ratio * C)
    hidden, multiple = int(2 * model.feed_forward_ratio * C / 3), model.feed_forward_multiple
    return multiple * -(-hidden // multiple)


def model_config(model, scale: ScaleConfig, vocab_size: int) -> ModelConfig:
    """The model's constructor arguments: the preset's switches applied to the scale's shape."""
    num_heads = scale.num_heads if model.heads is Heads.num_heads else 1
    return ModelConfig(
        **{f.name: getattr(model, f.name) for f in fields(Switches)},
        vocab_size=vocab_size,
        context_length=scale.context_length,
        embedding_dim=scale.embedding_dim,
        num_heads=num_heads,
        num_layers=scale.num_layers if model.depth is Depth.num_layers else 1,
        dropout_rate=scale.dropout if model.dropout else 0.0,
        feed_forward_width=feed_forward_width(model, scale.embedding_dim),
    )


def _shown(value: Any) -> str:
    return value.value if isinstance(value, Enum) else str(value).lower()


def _model_problem(m, scale: ScaleConfig, replicas: int) -> Optional[str]:
    """The first switch combination that makes no sense, as one line, or None."""
    off = Switches()
    if not m.attention:
        for f in fields(Switches):
            value = getattr(m, f.name)
            if f.name in ("attention", "implementation", "cpu_kernels") or value == getattr(off, f.name):
                continue
            return (
                f"model.{f.name}={_shown(value)} needs attention, and model.attention=false is the bigram table "
                f"(no embeddings, no layers); drop model.{f.name} or set model.attention=true"
            )
        return None
    if m.feed_forward is FeedForward.none and m.activation is not Activation.relu:
        return f"model.activation={m.activation.value} has no feed-forward to act in (model.feed_forward=none)"
    if m.norm is Norm.none and m.norm_position is NormPosition.post:
        return "model.norm_position=post needs a norm (model.norm=none); set model.norm or drop norm_position"
    heads = scale.num_heads if m.heads is Heads.num_heads else 1
    if m.kv_heads is not None and not (0 < m.kv_heads <= heads and heads % m.kv_heads == 0):
        return (
            f"model.kv_heads={m.kv_heads} must divide the {heads} query heads (model.heads={m.heads.value}, "
            f"scale.num_heads={scale.num_heads}); choose among the divisors of {heads}, or null for one per query head"
        )
    if m.implementation is Implementation.naive:
        naive_cannot = [("positions", m.positions is Positions.rotary, "rotary"),
                        ("linear", m.linear is not LinearKind.dense, _shown(m.linear)),
                        ("qk_norm", m.qk_norm, "true"),
                        ("kv_heads", m.kv_heads not in (None, heads), str(m.kv_heads))]
        for key, chosen, shown in naive_cannot:
            if chosen:
                return (
                    f"model.{key}={shown} cannot be expressed by model.implementation=naive (the original "
                    f"DrakeGPT's per-head code); use model.implementation=sdpa"
                )
        if replicas > 1:
            return f"train.replicas={replicas} needs model.implementation=sdpa (naive runs one model at a time)"
    if m.positions is Positions.rotary and (scale.embedding_dim // heads) % 2:
        return (
            f"model.positions=rotary needs an even head size, and scale.embedding_dim={scale.embedding_dim} / "
            f"{heads} heads is odd; change scale.num_heads or scale.embedding_dim"
        )
    for key, value, low in (("feed_forward_ratio", m.feed_forward_ratio, 0), ("feed_forward_multiple",
                            m.feed_forward_multiple, 0), ("rotary_base", m.rotary_base, 1)):
        if not value > low:
            return f"model.{key}={value} must be above {low}"
    if m.feed_forward is not FeedForward.none and feed_forward_width(m, scale.embedding_dim) < 1:
        return (f"model.feed_forward_ratio={m.feed_forward_ratio} gives a feed-forward 0 units wide at "
                f"scale.embedding_dim={scale.embedding_dim}; raise it (the presets use 4)")
    return None


INT64 = 2**63  # torch's integers, and its random generators' seeds, are 64-bit


def _bad_number(node: Any, prefix: str = "") -> Optional[str]:
    """The first key under `node` (plain data) whose number is NaN, infinite, or an integer beyond 64 bits."""
    if isinstance(node, dict):
        items = node.items()
    elif isinstance(node, (list, tuple)):
        items = enumerate(node)
    else:
        if isinstance(node, float) and not math.isfinite(node):
            return prefix
        if isinstance(node, int) and not isinstance(node, bool) and not -INT64 <= node < INT64:
            return prefix
        return None
    for key, value in items:
        found = _bad_number(value, f"{prefix}.{key}" if prefix else str(key))
        if found:
            return found
    return None


MAX_REPLICAS = 1024
MAX_NAME_BYTES = 64  # model.name and scale.name end up in folder and file names, with a date and a seed


def validate(cfg: RunConfig, plain: Optional[Dict[str, Any]] = None) -> None:
    """Raise UsageError naming the first bad value and its fix. `plain`: the same config as resolved plain data."""
    scale, train, opt = cfg.scale, cfg.train, cfg.optimizer
    if plain is not None:
        bad = _bad_number(plain)
        if bad:
            value = OmegaConf.select(OmegaConf.create(plain), bad)
            kind = "an integer beyond 64 bits" if isinstance(value, int) else "not a finite number"
            raise UsageError(f"{bad}={value} is {kind}; set {bad} to a real value")
    for key in ("paths.registry_dir", "paths.inference_dir", "data.path", "generate.checkpoint"):
        value = cfg
        for part in key.split("."):
            value = getattr(value, part, None)
        if isinstance(value, str) and not value.strip():
            raise UsageError(f"{key} is empty, which would mean the current folder; name a folder or file, or "
                             f"leave {key} out for its default")
    if not 0 <= cfg.seed <= INT64 - 1 - MAX_REPLICAS - 1:
        raise UsageError(f"seed={cfg.seed} must be between 0 and 2^63 - {MAX_REPLICAS + 2} (seeds are 64-bit, and each "
                         f"replica and evaluation stream takes the next ones); e.g. seed=1337")
    positive = {
        "train.log_interval": train.log_interval,
        "scale.context_length": scale.context_length,
        "scale.batch_size": scale.batch_size,
        "scale.embedding_dim": scale.embedding_dim,
        "scale.num_heads": scale.num_heads,
        "scale.num_layers": scale.num_layers,
        "scale.cycle_iters": scale.cycle_iters,
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
        if not is_file_name(name) or len(name.encode()) > MAX_NAME_BYTES:
            raise UsageError(
                f"{key}={name!r} is not a name of at most {MAX_NAME_BYTES} bytes: it names the run's folder and its "
                f"published weights; use letters, digits, '-' or '_'"
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
    project = cfg.logger.project
    if project is not None and (not project or len(project) > 128 or set(project) & set("/\\#?%:")):
        raise UsageError(f"logger.project={project!r} is not a W&B project name (at most 128 characters, none of "
                         f"/ \\ # ? % :); e.g. logger.project=DrakeGPT")
    if cfg.logger.init_timeout_s <= 0:
        raise UsageError(f"logger.init_timeout_s={cfg.logger.init_timeout_s} must be positive, e.g. 30")
    if train.sample_length < 0:
        raise UsageError(f"train.sample_length={train.sample_length} must be >= 0 (0 samples nothing)")
    if train.threads is not None and not 0 < train.threads <= (os.cpu_count() or 1):
        raise UsageError(
            f"train.threads={train.threads} must be between 1 and this machine's {os.cpu_count()} CPUs, "
            f"or null for torch's default"
        )
    data = cfg.data
    if not (0 < data.train_fraction < 1 and 0 <= data.test_fraction < 1 - data.train_fraction):
        raise UsageError(
            f"data.train_fraction={data.train_fraction} and data.test_fraction={data.test_fraction} must leave a "
            f"validation split: 0 < train_fraction, 0 <= test_fraction, train_fraction + test_fraction < 1"
        )
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
