"""The files that hold weights, one schema each, written and read only here.

- RunCheckpoint: checkpoints/last.pt and best.pt, everything a run needs to continue exactly (torch.save).
- Published weights: `<name>.safetensors` plus `<name>.json` (the model's class and ModelConfig, the
  vocabulary, what run made them): the format the Hugging Face ecosystem shares, loaded without unpickling
  and without Hydra (`load_pretrained`).
- PackedModel: a BitNet model with its quantised weights packed (drakegpt/pack.py).

Every file carries a sha256 of its weights, checked on load, and what it says about its model is checked
before a model is built from it: a damaged file is one line, never a model that samples garbage.
"""

import hashlib
import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Type, TypeVar

import torch
import torch.nn as nn

from drakegpt.data import CharVocab
from drakegpt.errors import UsageError
from drakegpt.files import atomic_write, atomic_write_all, read_json, regular_file
from drakegpt.models.bitnet import load_packed
from drakegpt.models.config import FeedForward, ModelConfig
from drakegpt.models.language_model import MODEL_CLASSES

FORMAT = 3  # 1: a model name and a preset; 2: a ModelConfig, weights pickled; 3: published as safetensors + JSON
MAX_PARAMETERS = 2**32  # a file that claims more is damaged or hostile, not a character model

State = Dict[str, torch.Tensor]


@dataclass
class RunCheckpoint:
    model_class: str
    model_config: Dict[str, Any]
    vocab: str
    model_state: State
    weights_sha256: str
    optimizer_state: Dict[str, Any]
    schedule_state: Dict[str, Any]
    batches_rng: torch.Tensor  # the training batch stream's generator
    torch_rng: torch.Tensor  # torch's global generator: dropout
    cuda_rng: Optional[torch.Tensor]
    eval_windows: Dict[str, Tuple[torch.Tensor, torch.Tensor]]  # split -> the evaluation windows (starts, first)
    progress: Dict[str, Any]  # replicas.Progress as a dict, with every evaluation's row in `history`
    run_id: str
    data_digest: str  # sha256 of the tokens of every split
    run_config: Dict[str, Any]  # the resolved config of the run
    kind: str = "run"
    format: int = FORMAT


@dataclass
class Pretrained:
    """What a published model is: everything sampling needs. `record` is the registry's entry (model, scale,
    variant, seed, step, losses, run folder, when)."""

    model_class: str
    model_config: Dict[str, Any]
    vocab: str
    model_state: State
    record: Dict[str, Any]
    run_config: Dict[str, Any]


@dataclass
class PackedModel:
    model_class: str
    model_config: Dict[str, Any]
    vocab: str
    dense_state: State  # every tensor but the BitLinear weights
    packed: Dict[str, Dict[str, torch.Tensor]]  # BitLinear weight name -> codes (uint8), divisors, shape
    weights_sha256: str
    record: Dict[str, Any]
    run_config: Dict[str, Any]
    kind: str = "packed"
    format: int = FORMAT


T = TypeVar("T", RunCheckpoint, PackedModel)
KINDS: Dict[str, Type] = {"run": RunCheckpoint, "packed": PackedModel}
WEIGHTS_SUFFIX, CONFIG_SUFFIX = ".safetensors", ".json"


def weights_digest(*states: Any) -> str:
    """sha256 over every tensor (names sorted, nested dicts walked): flipped bytes in a weight change it."""
    h = hashlib.sha256()

    def walk(node, prefix=""):
        if isinstance(node, torch.Tensor):
            h.update(prefix.encode())
            h.update(node.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
        elif isinstance(node, dict):
            for key in sorted(node, key=str):
                walk(node[key], f"{prefix}/{key}")

    for state in states:
        walk(state)
    return h.hexdigest()


def save(record, path: Path) -> None:
    save_all([(record, path)])


def save_all(items) -> None:
    """Several .pt checkpoints (record, path), replaced together: a replica group's files stay at one step."""
    writes = []
    for record, path in items:
        contents = {f.name: getattr(record, f.name) for f in fields(record)}  # shallow: asdict copies tensors
        writes.append((path, lambda f, contents=contents: torch.save(contents, f)))
    atomic_write_all(writes)


def load(path: Path, *expected: Type[T]) -> T:
    """A .pt checkpoint of one of the `expected` kinds, or one line that says what is wrong with the file."""
    path = regular_file(path, "checkpoint")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise UsageError(
            f"{path} is not a DrakeGPT checkpoint, or a damaged one ({type(e).__name__}); point at a file written by "
            f"run.py (a run keeps checkpoints/best.pt beside last.pt)"
        ) from None
    if isinstance(raw, dict) and "kind" in raw:
        _check_format(path, raw.get("format", 1))
    if not isinstance(raw, dict) or raw.get("kind") not in KINDS:
        raise UsageError(f"{path} is not a DrakeGPT checkpoint; point at a file written by run.py")
    kind = KINDS[raw["kind"]]
    if kind not in expected:
        names = " or ".join(k.__name__ for k in expected)
        raise UsageError(f"{path} holds a {kind.__name__}, not a {names}; point at the right file")
    try:
        record = kind(**raw)
    except TypeError:
        raise UsageError(f"{path} is a damaged DrakeGPT checkpoint (fields missing); train again") from None
    weights = (record.model_state,) if kind is RunCheckpoint else (record.dense_state, record.packed)
    if weights_digest(*weights) != record.weights_sha256:
        raise UsageError(f"{path} is damaged: its weights do not match their checksum; restore it or train again")
    return record


def _check_format(path: Path, found: Any) -> None:
    if found != FORMAT:
        raise UsageError(
            f"{path} was written by another DrakeGPT version (file format {found}, this version reads {FORMAT}); "
            f"train the model again with this version"
        )


def publish_files(stem: Path, pretrained: Pretrained) -> Path:
    """stem.safetensors (the weights of one replica, each tied tensor once) and stem.json (what they are, and their
    checksum); the JSON is written last, so a reader never finds a config without its weights."""
    from safetensors.torch import save as safetensors_bytes

    unique, seen = {}, set()
    for name, tensor in pretrained.model_state.items():
        if tensor.data_ptr() not in seen:  # a tied embedding is one tensor under two names
            seen.add(tensor.data_ptr())
            unique[name] = tensor.detach().cpu().contiguous()
    blob = safetensors_bytes(unique, metadata={"format": "pt"})
    config = {
        "format": FORMAT,
        "model_class": pretrained.model_class,
        "model_config": pretrained.model_config,
        "vocab": pretrained.vocab,
        "weights_sha256": hashlib.sha256(blob).hexdigest(),
        "record": pretrained.record,
        "run_config": pretrained.run_config,
    }
    weights, meta = stem.with_suffix(WEIGHTS_SUFFIX), stem.with_suffix(CONFIG_SUFFIX)
    atomic_write(weights, lambda f: f.write(blob))
    atomic_write(meta, lambda f: f.write((json.dumps(config, indent=2) + "\n").encode()))
    return weights


def read_pretrained(path: Path) -> Pretrained:
    """The published model at `path` (its .safetensors, its .json, or the name without a suffix)."""
    from safetensors import SafetensorError
    from safetensors.torch import load as safetensors_load

    path = Path(path).expanduser()
    stem = path.with_suffix("") if path.suffix in (WEIGHTS_SUFFIX, CONFIG_SUFFIX) else path
    meta_path = regular_file(stem.with_suffix(CONFIG_SUFFIX), "the published model's config")
    meta = read_json(meta_path)
    _check_format(meta_path, meta.get("format", 2))
    blob = regular_file(stem.with_suffix(WEIGHTS_SUFFIX), "the published weights").read_bytes()
    if hashlib.sha256(blob).hexdigest() != meta.get("weights_sha256"):
        raise UsageError(f"{stem.with_suffix(WEIGHTS_SUFFIX)} is damaged: its weights do not match the checksum in "
                         f"{meta_path.name}; restore it or train again")
    try:
        state = safetensors_load(blob)
        return Pretrained(meta["model_class"], meta["model_config"], meta["vocab"], state, meta.get("record", {}),
                          meta.get("run_config", {}))
    except (KeyError, TypeError, SafetensorError) as e:
        raise UsageError(f"{meta_path} does not describe a published model ({type(e).__name__}); restore it") from None


def check_model_config(values: Any, vocab: Any) -> ModelConfig:
    """The ModelConfig a file claims, refused with the reason when no model of it could be right."""
    if not isinstance(values, dict) or not isinstance(vocab, str):
        raise ValueError("no model config and vocabulary")
    config = ModelConfig.from_dict(values)
    sizes = ("vocab_size", "context_length", "embedding_dim", "num_heads", "num_layers", "kv_heads",
             "feed_forward_multiple")
    for key in sizes:
        value = getattr(config, key)
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ValueError(f"{key}={value!r} is not a positive integer")
    if not isinstance(config.feed_forward_width, int) or config.feed_forward_width < 0:
        raise ValueError(f"feed_forward_width={config.feed_forward_width!r} is not an integer >= 0")
    if (config.feed_forward is FeedForward.none) != (config.feed_forward_width == 0):
        raise ValueError(f"feed_forward_width={config.feed_forward_width} does not fit "
                         f"feed_forward={config.feed_forward.value}")
    if config.embedding_dim % config.num_heads or config.num_heads % config.kv_heads:
        raise ValueError("the heads do not divide the embedding")
    if not isinstance(config.dropout_rate, (int, float)) or not 0 <= config.dropout_rate < 1:
        raise ValueError(f"dropout_rate={config.dropout_rate!r} is outside [0, 1)")
    if len(vocab) != config.vocab_size or len(set(vocab)) != len(vocab):
        raise ValueError(f"the vocabulary has {len(vocab)} characters ({len(set(vocab))} distinct) for a model of "
                         f"{config.vocab_size}")
    from drakegpt.runtime import parameters_estimate

    if parameters_estimate(config) > MAX_PARAMETERS:
        raise ValueError(f"its shape claims about {parameters_estimate(config):,} parameters")
    return config


def with_aliases(model: nn.Module, state: State) -> State:
    """`state` with every tensor the model holds under two names (a tied embedding) under both, as published
    files keep it once."""
    names: Dict[int, list] = {}
    for name, tensor in model.state_dict(keep_vars=True).items():
        names.setdefault(id(tensor), []).append(name)
    state = dict(state)
    for group in names.values():
        present = [n for n in group if n in state]
        for name in group:
            if present and name not in state:
                state[name] = state[present[0]]
    return state


def build_model(model_class: str, config: ModelConfig, replicas: int = 1) -> nn.Module:
    return MODEL_CLASSES[model_class](config, replicas)


def load_model(path: Path, device: torch.device) -> Tuple[nn.Module, CharVocab, Pretrained]:
    """A model ready to sample from any weights file run.py writes: published, packed, last or best."""
    path = Path(path).expanduser()
    if path.suffix in (".pt", WEIGHTS_SUFFIX, CONFIG_SUFFIX) or path.exists():
        regular_file(path, "the weights file")  # what was named, before the files it implies
    if path.suffix not in (".pt", WEIGHTS_SUFFIX, CONFIG_SUFFIX) and path.is_file():
        raise UsageError(f"{path} is not a DrakeGPT weights file: give a published .safetensors (its .json beside "
                         f"it), a .pt checkpoint or packed file, or a run folder")
    if path.suffix == ".pt":
        record = load(path, PackedModel, RunCheckpoint)
    else:
        record = read_pretrained(path)
    try:
        config = check_model_config(record.model_config, record.vocab)
        model = build_model(record.model_class, config)
        if isinstance(record, PackedModel):
            model.load_replica_states([record.dense_state], strict=False)
            load_packed(model, record.packed)
        else:
            model.load_replica_states([with_aliases(model, record.model_state)])
        tensors = [t for t in model.state_dict().values() if t.is_floating_point()]
        if not all(bool(torch.isfinite(t).all()) for t in tensors):
            raise ValueError("its weights hold NaN or infinite numbers")
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as e:
        reason = str(e).strip().splitlines()[-1].strip() if str(e).strip() else type(e).__name__
        raise UsageError(f"{path} does not hold a model this version can build ({reason[:200]}); train it "
                         f"again") from None
    if isinstance(record, RunCheckpoint):
        progress = record.progress
        last = progress.get("last_row") or {}
        record = Pretrained(record.model_class, record.model_config, record.vocab, record.model_state,
                            {"step": progress["step"], "val_loss": last.get("val_loss")}, record.run_config)
    return model.to(device), CharVocab(record.vocab), record


def load_pretrained(path) -> Tuple[nn.Module, CharVocab]:
    """A published model and its vocabulary, on the CPU, from its .safetensors or .json: no Hydra, no pickle."""
    model, vocab, _ = load_model(Path(path), torch.device("cpu"))
    return model, vocab
