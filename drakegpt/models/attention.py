"""Causal self-attention, two ways to compute the same function, and the cache used when sampling.

- `sdpa`: all heads at once from one fused QKV projection and `scaled_dot_product_attention`; with
  cpu_kernels, big dropout work on a CPU takes the cheaper path in cpu_kernels.py.
- `naive`: the original DrakeGPT's code, one Head module per head with its own key/query/value and a masked softmax.
"""

from dataclasses import dataclass
from typing import Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from drakegpt.models.bitnet import make_linear
from drakegpt.models.config import Implementation, ModelConfig, Norm
from drakegpt.models.cpu_kernels import (
    CausalAttentionWithDropout,
    SmallCausalAttention,
    cheap_dropout,
    use_cpu_attention,
    use_small_attention,
)
from drakegpt.models.layers import Linear, make_norm


class KVCache:
    """Keys and values of every layer for up to `capacity` positions, preallocated: (layers, batch, kv_heads, ...).

    The shapes never change, so one sampling step can be compiled or captured in a CUDA graph: new
    positions are written in place and each query attends to the slots at or before its position.
    """

    def __init__(self, num_layers: int, batch: int, kv_heads: int, capacity: int, head_size: int, device, dtype):
        shape = (num_layers, batch, kv_heads, capacity, head_size)
        self.keys = torch.zeros(shape, device=device, dtype=dtype)
        self.values = torch.zeros(shape, device=device, dtype=dtype)
        self.length = torch.zeros((), dtype=torch.long, device=device)  # positions filled so far
        self.slots = torch.arange(capacity, device=device)

    def reset(self) -> None:
        self.length.zero_()

    def write(self, layer: int, positions: torch.Tensor, k: torch.Tensor, v: torch.Tensor):
        """Store k, v (batch, kv_heads, T, D) at `positions`; return all slots and the (T, capacity) causal mask."""
        keys, values = self.keys[layer], self.values[layer]
        keys.index_copy_(2, positions, k)
        values.index_copy_(2, positions, v)
        return keys, values, self.slots <= positions[:, None]


@dataclass
class Span:
    """The positions one forward pass covers: (T,) indices, their rotary angles, and the cache if sampling."""

    positions: torch.Tensor
    rotary: Optional[Tuple[torch.Tensor, torch.Tensor]] = None
    cache: Optional[KVCache] = None


def rotary_angles(head_size: int, context_length: int, base: float) -> Tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of position × frequency, (context_length, head_size / 2), as in RoFormer."""
    frequencies = base ** -(torch.arange(0, head_size, 2, dtype=torch.float32) / head_size)
    angles = torch.outer(torch.arange(context_length, dtype=torch.float32), frequencies)
    return angles.cos(), angles.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate each pair (x[i], x[i + D/2]) of x (..., T, D) by its position's angle."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


def dropout_function(config: ModelConfig):
    sdpa = config.implementation is Implementation.sdpa
    return cheap_dropout if config.cpu_kernels and sdpa else F.dropout


class CausalSelfAttention(nn.Module):
    """All heads at once: one fused QKV matmul, then scaled_dot_product_attention (or its CPU stand-in).

    With kv_heads < num_heads (grouped-query attention; 1 is multi-query) each group of query heads shares
    one key and value head: fewer parameters, and a KV cache that many times smaller.
    """

    def __init__(self, config: ModelConfig, replicas: int, layer: int):
        super().__init__()
        C, H, KV, D = config.embedding_dim, config.num_heads, config.kv_heads, config.head_size
        self.num_heads, self.kv_heads, self.layer = H, KV, layer
        self.dropout, self.cpu_kernels = config.dropout_rate, config.cpu_kernels
        self.dropout_function = dropout_function(config)
        # Rows [0, C) are the queries (head h at rows h*D..(h+1)*D), then KV key heads, then KV value heads.
        self.qkv = make_linear(config.linear, C, C + 2 * KV * D, bias=False, replicas=replicas,
                               splits=(C, KV * D, KV * D))
        self.proj = make_linear(config.linear, C, C, bias=True, replicas=replicas) if config.projection else None
        self.q_norm = make_norm(Norm.rmsnorm, D, replicas) if config.qk_norm else None
        self.k_norm = make_norm(Norm.rmsnorm, D, replicas) if config.qk_norm else None

    def forward(self, x: torch.Tensor, span: Span) -> torch.Tensor:
        R, B, T, C = x.shape
        H, KV, D = self.num_heads, self.kv_heads, C // self.num_heads
        p = self.dropout if self.training else 0.0
        q, k, v = self.qkv(x).view(R * B, T, H + 2 * KV, D).transpose(1, 2).split([H, KV, KV], dim=1)  # (R·B, h, T, D)
        if self.q_norm is not None:
            q = self.q_norm(q.view(R, B, H, T, D)).view(R * B, H, T, D)
            k = self.k_norm(k.reshape(R, B, KV, T, D)).view(R * B, KV, T, D)
        if span.rotary is not None:
            q, k = apply_rotary(q, *span.rotary), apply_rotary(k, *span.rotary)
        mask = None
        if span.cache is not None:
            k, v, mask = span.cache.write(self.layer, span.positions, k, v)
        if KV < H:  # each key and value head serves H / KV query heads
            k, v = k.repeat_interleave(H // KV, dim=1), v.repeat_interleave(H // KV, dim=1)
        if self.cpu_kernels and mask is None and use_small_attention(x.device, T, p, R):
            y = SmallCausalAttention.apply(*flat_heads(q, k, v), p).view(R * B, H, T, D)
        elif p > 0 and self.cpu_kernels and use_cpu_attention(x.device, R * B * H * T * T):
            y = CausalAttentionWithDropout.apply(*flat_heads(q, k, v), p).view(R * B, H, T, D)
        elif mask is not None:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        else:
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=T > 1)
        y = y.transpose(1, 2).reshape(R, B, T, C)
        if self.proj is not None:
            y = self.dropout_function(self.proj(y), self.dropout, self.training)
        return y


def flat_heads(*tensors: torch.Tensor):
    """(R·B, H, T, D) -> (R·B·H, T, D), contiguous, as the CPU kernels take them."""
    return [t.reshape(-1, *t.shape[-2:]) for t in tensors]


class Head(nn.Module):
    """The original DrakeGPT's attention head: its own key, query and value, an explicit causal mask and softmax."""

    def __init__(self, embedding_dim: int, head_size: int, context_length: int, dropout: float):
        super().__init__()
        self.key = Linear(embedding_dim, head_size, bias=False)
        self.query = Linear(embedding_dim, head_size, bias=False)
        self.value = Linear(embedding_dim, head_size, bias=False)
        self.register_buffer("tril", torch.tril(torch.ones(context_length, context_length)), persistent=False)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        T = x.shape[-2]
        k, q = self.key(x), self.query(x)
        weights = q @ k.transpose(-2, -1) * k.shape[-1] ** -0.5
        weights = weights.masked_fill(self.tril[:T, :T] == 0, float("-inf"))
        weights = self.dropout(F.softmax(weights, dim=-1))
        return weights @ self.value(x)


class NaiveCausalSelfAttention(nn.Module):
    """The original DrakeGPT's multi-head attention: a Python loop over Head modules, then concatenation; one
    replica only."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        C = config.embedding_dim
        self.heads = nn.ModuleList(
            Head(C, config.head_size, config.context_length, config.dropout_rate) for _ in range(config.num_heads)
        )
        self.proj = Linear(C, C) if config.projection else None
        self.dropout = nn.Dropout(config.dropout_rate)

    def forward(self, x: torch.Tensor, span: Span) -> torch.Tensor:
        y = torch.cat([head(x) for head in self.heads], dim=-1)
        return self.dropout(self.proj(y)) if self.proj is not None else y


def make_attention(config: ModelConfig, replicas: int, layer: int) -> nn.Module:
    if config.implementation is Implementation.naive:
        return NaiveCausalSelfAttention(config)
    return CausalSelfAttention(config, replicas, layer)
