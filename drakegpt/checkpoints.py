"""The files that hold weights, one schema each, written and read only here.

- RunCheckpoint: checkpoints/last.pt and best.pt, everything a run needs to continue exactly.
- PublishedModel: what a finished run publishes to the registry, everything sampling needs.
- PackedModel: a BitNetLM with its ternary weights packed four to a byte (drakegpt/pack.py).

Each file stores the model's class name and its ModelConfig (every constructor argument), so a model is
rebuilt from the file alone. Only plain data is unpickled (torch.load with weights_only).
"""

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Type, TypeVar

import torch
import torch.nn as nn

from drakegpt.data import CharVocab
from drakegpt.errors import UsageError
from drakegpt.files import atomic_write_all, regular_file
from drakegpt.models.bitnet import load_packed
from drakegpt.models.language_model import MODEL_CLASSES

FORMAT = 2  # 1: before the ablation switches (a model name and a scale preset instead of a ModelConfig)

State = Dict[str, torch.Tensor]


@dataclass
class RunCheckpoint:
    model_class: str
    model_config: Dict[str, Any]
    vocab: str
    model_state: State
    optimizer_state: Dict[str, Any]
    schedule_state: Dict[str, Any]
    batches_rng: torch.Tensor  # the training batch stream's generator
    torch_rng: torch.Tensor  # torch's global generator: dropout
    cuda_rng: Optional[torch.Tensor]
    eval_starts: Dict[str, torch.Tensor]  # the fixed evaluation windows
    progress: Dict[str, Any]  # train.Progress as a dict, with every evaluation's row in `history`
    run_id: str
    data_digest: str  # sha256 of the training and validation tokens
    run_config: Dict[str, Any]  # the resolved config of the run
    kind: str = "run"
    format: int = FORMAT


@dataclass
class PublishedModel:
    model_class: str
    model_config: Dict[str, Any]
    vocab: str
    model_state: State
    step: int
    val_loss: float
    run_config: Dict[str, Any]
    kind: str = "model"
    format: int = FORMAT


@dataclass
class PackedModel:
    model_class: str
    model_config: Dict[str, Any]
    vocab: str
    dense_state: State  # every tensor but the BitLinear weights
    packed: Dict[str, Dict[str, torch.Tensor]]  # BitLinear weight name -> codes (uint8), scale, shape
    step: int
    val_loss: float
    run_config: Dict[str, Any]
    kind: str = "packed"
    format: int = FORMAT


T = TypeVar("T", RunCheckpoint, PublishedModel, PackedModel)
KINDS: Dict[str, Type] = {"run": RunCheckpoint, "model": PublishedModel, "packed": PackedModel}


def save(record, path: Path) -> None:
    save_all([(record, path)])


def save_all(items) -> None:
    """Several checkpoints (record, path), replaced together: a replica group's files stay at one step."""
    writes = []
    for record, path in items:
        contents = {f.name: getattr(record, f.name) for f in fields(record)}  # shallow: asdict copies tensors
        writes.append((path, lambda f, contents=contents: torch.save(contents, f)))
    atomic_write_all(writes)


def load(path: Path, *expected: Type[T]) -> T:
    """A checkpoint of one of the `expected` kinds, or one line that says what is wrong with the file."""
    path = regular_file(path, "checkpoint")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise UsageError(
            f"{path} is not a DrakeGPT checkpoint ({type(e).__name__}); point at a .pt file written by run.py"
        ) from None
    if not isinstance(raw, dict) or raw.get("kind") not in KINDS:
        raise UsageError(f"{path} is not a DrakeGPT checkpoint; point at a .pt file written by run.py")
    if raw.get("format") != FORMAT:
        raise UsageError(
            f"{path} was written by an earlier DrakeGPT (file format {raw.get('format', 1)}, now {FORMAT}); "
            f"train the model again with this version"
        )
    kind = KINDS[raw["kind"]]
    if kind not in expected:
        names = " or ".join(k.__name__ for k in expected)
        raise UsageError(f"{path} holds a {kind.__name__}, not a {names}; point at the right file")
    try:
        return kind(**raw)
    except TypeError:
        raise UsageError(f"{path} is a damaged DrakeGPT checkpoint (fields missing); train again") from None


def build_model(model_class: str, model_config: Dict[str, Any], replicas: int = 1) -> nn.Module:
    cls = MODEL_CLASSES[model_class]
    return cls(cls.config_class.from_dict(model_config), replicas)


def load_model(path: Path, device: torch.device) -> Tuple[nn.Module, CharVocab, PublishedModel]:
    """A model ready to sample from any weights file run.py writes: published, packed, last or best."""
    record = load(path, PublishedModel, PackedModel, RunCheckpoint)
    try:
        model = build_model(record.model_class, record.model_config)
        if isinstance(record, PackedModel):
            model.load_replica_states([record.dense_state], strict=False)
            load_packed(model, record.packed)
        else:
            model.load_replica_states([record.model_state])
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        reason = str(e).strip().splitlines()[-1].strip() if str(e).strip() else type(e).__name__
        raise UsageError(f"{path} does not hold a model this version can build ({reason}); train it again") from None
    if isinstance(record, RunCheckpoint):
        progress = record.progress
        record = PublishedModel(
            record.model_class,
            record.model_config,
            record.vocab,
            record.model_state,
            progress["step"],
            (progress.get("last_row") or {}).get("val_loss", float("nan")),
            record.run_config,
        )
    return model.to(device), CharVocab(record.vocab), record
