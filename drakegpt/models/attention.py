"""Causal self-attention, three ways to compute the same function, plus the cache used when sampling.

- `fast` (default): all heads at once from one fused QKV projection and `scaled_dot_product_attention`;
  for big dropout work on a CPU it takes the cheaper path in cpu_attention.py.
- `sdpa`: batched heads and plain `scaled_dot_product_attention` everywhere (nanoGPT's model).
- `naive`: the seed's code, one Head module per head with its own key/query/value and a masked softmax.
`fast` and `sdpa` share parameters, so their checkpoints are interchangeable.
"""

from enum import Enum
from typing import List, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from drakegpt.models.cpu_attention import CausalAttentionWithDropout, fast_dropout, use_cpu_attention


class Attention(Enum):
    fast = "fast"
    sdpa = "sdpa"
    naive = "naive"


class LayerCache:
    """Keys and values of every position seen so far in one attention layer."""

    def __init__(self):
        self.k: Optional[torch.Tensor] = None
        self.v: Optional[torch.Tensor] = None

    def extend(self, k: torch.Tensor, v: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        if self.k is not None:
            k, v = torch.cat([self.k, k], dim=-2), torch.cat([self.v, v], dim=-2)
        self.k, self.v = k, v
        return k, v


class KVCache:
    """One LayerCache per attention layer and the number of positions already fed in."""

    def __init__(self, num_layers: int):
        self.layers: List[LayerCache] = [LayerCache() for _ in range(num_layers)]
        self.length = 0


class CausalSelfAttention(nn.Module):
    """All heads at once: one fused QKV matmul, then scaled_dot_product_attention (or its CPU stand-in)."""

    def __init__(
        self,
        embedding_dim: int,
        num_heads: int,
        dropout: float = 0.0,
        projection: bool = False,
        impl: Attention = Attention.fast,
    ):
        super().__init__()
        self.num_heads = num_heads
        self.head_size = embedding_dim // num_heads
        self.dropout = dropout
        self.fast = impl is Attention.fast
        # q, k and v of every head in one matmul: rows [0, C) are the queries, head h at rows h*D..(h+1)*D.
        self.qkv = nn.Linear(embedding_dim, 3 * embedding_dim, bias=False)
        self.proj = nn.Linear(embedding_dim, embedding_dim) if projection else None

    def forward(self, x: torch.Tensor, cache: Optional[LayerCache] = None) -> torch.Tensor:
        B, T, C = x.shape
        H, D = self.num_heads, self.head_size
        p = self.dropout if self.training else 0.0
        if p > 0 and self.fast and use_cpu_attention(x.device, B * H * T * T):
            q, k, v = self.qkv(x).view(B, T, 3, H, D).permute(2, 0, 3, 1, 4).reshape(3, B * H, T, D)
            y = CausalAttentionWithDropout.apply(q, k, v, p).view(B, H, T, D)
        else:
            q, k, v = self.qkv(x).view(B, T, 3, H, D).permute(2, 0, 3, 1, 4)
            if cache is not None:
                k, v = cache.extend(k, v)
            # New queries are the last T positions; only a prompt fed whole needs the causal mask.
            causal = T > 1
            if causal and k.shape[-2] != T:
                raise ValueError("feed a cache one position at a time after the prompt")
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=causal)
        y = y.transpose(1, 2).reshape(B, T, C)
        if self.proj is not None:
            y = self.proj(y)
            y = fast_dropout(y, self.dropout, self.training) if self.fast else F.dropout(y, self.dropout, self.training)
        return y


class Head(nn.Module):
    """The seed's attention head: its own key, query and value, an explicit causal mask and softmax."""

    def __init__(self, embedding_dim: int, head_size: int, context_length: int, dropout: float):
        super().__init__()
        self.key = nn.Linear(embedding_dim, head_size, bias=False)
        self.query = nn.Linear(embedding_dim, head_size, bias=False)
        self.value = nn.Linear(embedding_dim, head_size, bias=False)
        self.register_buffer("tril", torch.tril(torch.ones(context_length, context_length)), persistent=False)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        T = x.shape[1]
        k, q = self.key(x), self.query(x)
        weights = q @ k.transpose(-2, -1) * k.shape[-1] ** -0.5
        weights = weights.masked_fill(self.tril[:T, :T] == 0, float("-inf"))
        weights = self.dropout(F.softmax(weights, dim=-1))
        return weights @ self.value(x)


class NaiveCausalSelfAttention(nn.Module):
    """The seed's multi-head attention: a Python loop over Head modules, then concatenation."""

    def __init__(self, embedding_dim: int, num_heads: int, context_length: int, dropout: float, projection: bool):
        super().__init__()
        head_size = embedding_dim // num_heads
        self.heads = nn.ModuleList(Head(embedding_dim, head_size, context_length, dropout) for _ in range(num_heads))
        self.proj = nn.Linear(embedding_dim, embedding_dim) if projection else None
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, cache: Optional[LayerCache] = None) -> torch.Tensor:
        if cache is not None:
            raise ValueError("the naive attention path has no KV cache")
        y = torch.cat([head(x) for head in self.heads], dim=-1)
        return self.dropout(self.proj(y)) if self.proj is not None else y


def make_attention(
    embedding_dim: int, num_heads: int, context_length: int, dropout: float, projection: bool, impl: Attention
) -> nn.Module:
    if impl is Attention.naive:
        return NaiveCausalSelfAttention(embedding_dim, num_heads, context_length, dropout, projection)
    return CausalSelfAttention(embedding_dim, num_heads, dropout, projection, impl)
