"""Sampling lyrics from a trained model: `python run.py task=generate [model=...] [scale=...]`.

A checkpoint carries the weights, the model's shape and the vocabulary, so no training text is needed.
With the KV cache, each new character costs one position's forward pass instead of a whole window's.
Past context_length the window jumps forward by a quarter of the context (never less than one
character), so the model always sees at least three quarters of its context; the uncached path
recomputes exactly the same windows, so both give the same logits and the same text.
"""

import datetime
import logging
from pathlib import Path
from typing import List, Optional, Tuple

import torch
import torch.nn as nn

from drakegpt import checkpoint
from drakegpt.checkpoint import RunDir
from drakegpt.config import Attention, RunConfig
from drakegpt.data import CharVocab
from drakegpt.errors import UsageError
from drakegpt.models import CausalSelfAttention, KVCache, ModelConfig, build_model
from drakegpt.runtime import resolve_device

log = logging.getLogger(__name__)


def filter_logits(logits: torch.Tensor, top_k: Optional[int], top_p: Optional[float]) -> torch.Tensor:
    """Set to -inf every logit outside the k most likely and outside the smallest set whose mass reaches p."""
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = sorted_logits.softmax(dim=-1)
        outside = probs.cumsum(dim=-1) - probs >= top_p  # the mass before a token already reaches p
        logits = logits.masked_fill(outside.gather(-1, order.argsort(dim=-1)), float("-inf"))
    return logits


def window_start(length: int, context_length: int) -> int:
    """First position the model sees when predicting position `length`: jumps by a quarter context."""
    if length <= context_length:
        return 0
    stride = max(1, context_length // 4)
    return -(-(length - context_length) // stride) * stride


class Sampler:
    """Next-character logits for growing sequences, with or without a KV cache; both see the same windows."""

    def __init__(self, model: nn.Module, context_length: int, kv_cache: bool):
        self.model, self.context_length = model, context_length
        self.num_layers = sum(isinstance(m, CausalSelfAttention) for m in model.modules())
        self.use_cache = kv_cache and self.num_layers > 0
        self.cache: Optional[KVCache] = None
        self.start = 0

    @torch.inference_mode()
    def next_logits(self, seq: torch.Tensor) -> torch.Tensor:
        start = window_start(seq.shape[1], self.context_length)
        if not self.use_cache:
            return self.model(seq[:, start:])[0][:, -1].float()
        if self.cache is None or start != self.start:  # first call, or the window jumped: refill
            self.cache, self.start = KVCache(self.num_layers), start
            return self.model(seq[:, start:], cache=self.cache)[0][:, -1].float()
        return self.model(seq[:, -1:], cache=self.cache)[0][:, -1].float()


@torch.inference_mode()
def sample(
    model: nn.Module,
    prompt: torch.Tensor,
    length: int,
    context_length: int,
    temperature: float = 1.0,
    top_k: Optional[int] = None,
    top_p: Optional[float] = None,
    num_samples: int = 1,
    kv_cache: bool = True,
    generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    """(num_samples, len(prompt) + length) token ids: the prompt followed by `length` sampled characters."""
    model.eval()
    seq = prompt.to(next(model.parameters()).device).repeat(num_samples, 1)
    sampler = Sampler(model, context_length, kv_cache)
    for _ in range(length):
        logits = sampler.next_logits(seq)
        if temperature == 0:
            nxt = logits.argmax(dim=-1, keepdim=True)
        else:
            # Shifted so the top logit is 0: a tiny temperature then tends to greedy instead of inf - inf.
            logits = (logits - logits.max(dim=-1, keepdim=True).values) / temperature
            logits = filter_logits(logits, top_k, top_p)
            nxt = torch.multinomial(logits.softmax(dim=-1), 1, generator=generator)
        seq = torch.cat([seq, nxt], dim=1)
    return seq


def checkpoint_path(cfg: RunConfig) -> Path:
    if cfg.generate.checkpoint:
        path = Path(cfg.generate.checkpoint).expanduser()
        if not path.is_dir():
            return path
        run = RunDir(path)  # a run folder: the weights it published (the best ones if it stopped early)
        return run.best if run.read_summary().get("stopped_early") else run.last
    path = Path(cfg.paths.models_dir) / f"{cfg.model.name}_{cfg.scale.name}.pt"
    if not path.is_file():
        trained = sorted(p.stem for p in Path(cfg.paths.models_dir).glob("*.pt"))
        have = f"trained models: {', '.join(trained)}" if trained else "no model has been trained yet"
        raise UsageError(
            f"no trained {cfg.model.name} at scale={cfg.scale.name} ({path}); {have}. "
            f"Train it with: python run.py model={cfg.model.name} scale={cfg.scale.name}"
        )
    return path


def load_model(path: Path, device: torch.device) -> Tuple[nn.Module, CharVocab, dict]:
    """A model ready to sample from any checkpoint run.py writes (published, last or best)."""
    state = checkpoint.load(path)
    if not isinstance(state, dict) or not {"model_state", "vocab", "config"} <= state.keys():
        raise UsageError(
            f"{path} is not a DrakeGPT checkpoint; point generate.checkpoint at a .pt file written by run.py"
        )
    config = state["config"]
    name, scale = config["model"]["name"], config["scale"]["name"]
    # fast and sdpa share their weights and only fast has the KV cache; naive weights need naive heads.
    attention = Attention.naive if config["model"]["attention"] == "naive" else Attention.fast
    try:
        shape = ModelConfig.from_preset(config["scale"], len(state["vocab"]), attention)
        model = build_model(name, shape)
        model.load_state_dict(state["model_state"])
    except (KeyError, TypeError, RuntimeError) as e:
        reason = str(e).strip().splitlines()[-1].strip() if str(e).strip() else type(e).__name__
        raise UsageError(
            f"{path} does not fit {name} at scale={scale} ({reason}); pick the checkpoint it was trained as"
        ) from None
    return (
        model.to(device),
        CharVocab(state["vocab"]),
        {"model": name, "scale": scale, "context_length": shape.context_length},
    )


def output_file(inference_dir: Path, model: str, scale: str, now: datetime.datetime) -> Path:
    """inference/generation_<Model>[_scaled]_<YYYYMMDD_HHMM>.txt, numbered rather than overwritten."""
    stem = f"generation_{model}{'_scaled' if scale == 'large' else ''}_{now:%Y%m%d_%H%M}"
    path, n = inference_dir / f"{stem}.txt", 1
    while path.exists():
        n += 1
        path = inference_dir / f"{stem}_{n}.txt"
    return path


def generate_task(cfg: RunConfig, requested: dict) -> str:
    """Sample, print and save; `requested` holds the model/scale the user named on the command line."""
    device = resolve_device(cfg.device)
    path = checkpoint_path(cfg)
    model, vocab, meta = load_model(path, device)
    for key in ("model", "scale"):
        if requested.get(key) not in (None, meta[key]):
            raise UsageError(
                f"{path} holds {meta['model']} at scale={meta['scale']}, not {key}={requested[key]}; "
                f"drop {key}= or choose a matching checkpoint"
            )
    gen = cfg.generate
    unknown = vocab.unknown(gen.prompt)
    if unknown:
        raise UsageError(
            f"generate.prompt has characters the model never saw: {' '.join(repr(c) for c in unknown)}; "
            f"remove them (the vocabulary is {vocab.chars!r})"
        )
    generator = torch.Generator(device=device).manual_seed(cfg.seed)
    ids = sample(
        model,
        vocab.encode(gen.prompt)[None],
        gen.length,
        meta["context_length"],
        gen.temperature,
        gen.top_k,
        gen.top_p,
        gen.num_samples,
        gen.kv_cache,
        generator,
    )
    samples: List[str] = [vocab.decode(row.tolist()) for row in ids]
    text = (
        samples[0] if len(samples) == 1 else "".join(f"=== sample {i + 1} ===\n{s}\n\n" for i, s in enumerate(samples))
    )
    target = output_file(Path(cfg.paths.inference_dir), meta["model"], meta["scale"], datetime.datetime.now())
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target, "x", encoding="utf-8") as f:
        f.write(text)
    print(text)
    log.info("%s characters from %s saved to %s", f"{gen.length * gen.num_samples:,}", path, target)
    return text
