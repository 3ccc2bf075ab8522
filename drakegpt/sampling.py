"""Sampling characters from a model: moving windows, the KV cache, temperature, top-k and top-p.

With the cache, each new character costs one position's forward pass instead of a whole window's.
Past context_length the window jumps forward by a quarter of the context (never less than one
character), so the model always sees at least three quarters of its context; the uncached path
recomputes exactly the same windows, so both give the same logits and the same text.
"""

import logging
from typing import Callable, Iterator, Optional

import torch
import torch.nn as nn

from drakegpt.data import CharVocab

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
    """Next-character logits for growing sequences, with or without the model's KV cache; both see the same windows.

    `compile`: the one-character step through torch.compile with CUDA graphs (mode reduce-overhead): the
    cache's shapes never change, so one step is one graph replay instead of dozens of kernel launches.
    """

    def __init__(self, model: nn.Module, context_length: int, batch: int, kv_cache: bool, compile: bool = False):
        self.model, self.context_length = model, context_length
        self.cache = model.new_cache(batch) if kv_cache else None
        self.start: Optional[int] = None
        self.step = self._step
        if compile and self.cache is not None:
            for tensor in (self.cache.keys, self.cache.values, self.cache.length):
                torch._dynamo.mark_static_address(tensor)
            self.step = torch.compile(self._step, mode="reduce-overhead", fullgraph=True)

    def _step(self, last: torch.Tensor) -> torch.Tensor:
        return self.model(last[None], cache=self.cache)[0][0, :, -1].float()

    @torch.inference_mode()
    def next_logits(self, seq: torch.Tensor) -> torch.Tensor:
        start = window_start(seq.shape[1], self.context_length)
        if self.cache is None:
            return self.model(seq[None, :, start:])[0][0, :, -1].float()
        if start != self.start:  # first call, or the window jumped: refill the cache with the new window
            self.cache.reset()
            self.start = start
            return self.model(seq[None, :, start:], cache=self.cache)[0][0, :, -1].float()
        return self.step(seq[:, -1:])


def sample_steps(
    model: nn.Module,
    prompt: torch.Tensor,
    length: int,
    temperature: float = 1.0,
    top_k: Optional[int] = None,
    top_p: Optional[float] = None,
    num_samples: int = 1,
    kv_cache: bool = True,
    generator: Optional[torch.Generator] = None,
    compile: bool = False,
) -> Iterator[torch.Tensor]:
    """The growing (num_samples, len(prompt) + i) token ids, one more character at each step: a caller can show
    progress, or stop and keep what is there."""
    model.eval()
    seq = prompt.to(next(model.parameters()).device).repeat(num_samples, 1)
    sampler = Sampler(model, model.config.context_length, num_samples, kv_cache, compile)
    for _ in range(length):
        with torch.inference_mode():
            logits = sampler.next_logits(seq)
            if temperature == 0:
                nxt = logits.argmax(dim=-1, keepdim=True)
            else:
                # Shifted so the top logit is 0, in float64: any temperature > 0 then gives finite probabilities
                # (a tiny one tends to greedy), where float32 would overflow to inf - inf.
                scaled = (logits - logits.max(dim=-1, keepdim=True).values).double() / temperature
                scaled = filter_logits(scaled, top_k, top_p)
                nxt = torch.multinomial(scaled.softmax(dim=-1), 1, generator=generator)
            seq = torch.cat([seq, nxt], dim=1)
        yield seq


def sample(model: nn.Module, prompt: torch.Tensor, length: int, temperature: float = 1.0, top_k: Optional[int] = None,
           top_p: Optional[float] = None, num_samples: int = 1, kv_cache: bool = True,
           generator: Optional[torch.Generator] = None, compile: bool = False) -> torch.Tensor:
    """(num_samples, len(prompt) + length) token ids: the prompt followed by `length` sampled characters."""
    seq = prompt.repeat(num_samples, 1)
    steps = sample_steps(model, prompt, length, temperature, top_k, top_p, num_samples, kv_cache, generator, compile)
    for seq in steps:
        pass
    return seq


def sample_text(model: nn.Module, vocab: CharVocab, prompt: str, length: int, temperature: float = 1.0,
                top_k: Optional[int] = None, top_p: Optional[float] = None, seed: int = 0,
                fallback_prompt: Optional[str] = None,
                should_stop: Callable[[], bool] = lambda: False) -> Optional[str]:
    """`prompt` and `length` characters after it (after `fallback_prompt`, by default the vocabulary's first
    character, where the vocabulary lacks a character of the prompt); None when should_stop() turned true first."""
    fallback_prompt = fallback_prompt or vocab.chars[0]
    if vocab.unknown(prompt):
        log.info("generate.prompt has characters this corpus lacks (%s): the sample starts from %r instead",
                 " ".join(repr(c) for c in vocab.unknown(prompt)), fallback_prompt)
        prompt = fallback_prompt
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    seq = None
    for seq in sample_steps(model, vocab.encode(prompt), length, temperature, top_k, top_p, generator=generator):
        if should_stop():
            return None
    return vocab.decode(seq[0].tolist()) if seq is not None else prompt
