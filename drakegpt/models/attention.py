"""Causal self-attention, three ways to compute the same function, plus the cache used when sampling.

- `fast` (default): all heads at once from one fused QKV projection and `scaled_dot_product_attention`.
  For big dropout-on-the-weights work on a CPU, where PyTorch falls back to a slow T×T math path with a
  slow Bernoulli sampler, it switches to CausalAttentionWithDropout below (~2.6x faster at the large
  preset) and draws dropout masks from 16-bit random integers.
- `sdpa`: batched heads and plain `scaled_dot_product_attention` everywhere (nanoGPT's model).
- `naive`: the seed's code, one Head module per head with its own key/query/value and a masked softmax.
`fast` and `sdpa` share parameters, so their checkpoints are interchangeable.
"""

from typing import List, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from drakegpt.config import Attention

# Crossovers measured on a 2-core CPU: below them PyTorch's own ops are as fast or faster.
_CPU_QUERY_BLOCK = 64
_CPU_CHEAP_MASK_MIN = 2**17  # elements of a tensor to drop out
_CPU_CUSTOM_ATTENTION_MIN = 2**20  # elements of the (B, H, T, T) attention weights


def dropout(x: torch.Tensor, p: float, training: bool, fast: bool) -> torch.Tensor:
    """Inverted dropout. The cheap CPU mask has p rounded to a multiple of 1/65536."""
    if not training or p == 0:
        return x
    if fast and x.device.type == "cpu" and x.numel() >= _CPU_CHEAP_MASK_MIN:
        return x.masked_fill(_drop_mask(x, p), 0.0) * (1.0 / (1.0 - p))
    return F.dropout(x, p, training=True)


def _drop_mask(x: torch.Tensor, p: float) -> torch.Tensor:
    # Four 16-bit lanes per 64-bit draw: ~5x cheaper than bernoulli_ on a CPU.
    n = x.numel()
    words = torch.empty((n + 3) // 4, dtype=torch.int64).random_(-(2**63), 2**63 - 1)
    lanes = words.view(torch.int16)[:n].view(x.shape)
    return lanes < -32768 + round(p * 65536)


def _causal_bias(T: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    key = (T, device, dtype)
    if key not in _CAUSAL_BIAS:
        _CAUSAL_BIAS[key] = torch.full((T, T), float("-inf"), device=device, dtype=dtype).triu(1)
    return _CAUSAL_BIAS[key]


_CAUSAL_BIAS = {}


class CausalAttentionWithDropout(torch.autograd.Function):
    """Causal attention with dropout on the weights, for training on a CPU, in a few large ops.

    PyTorch's CPU kernel for this case builds the full T×T scores, draws the mask with a slow Bernoulli
    sampler and takes ~30 small ops each way. Here each block of 64 queries only meets the keys at or
    before it (the masked upper triangle is skipped), the mask comes from 16-bit random integers, and
    the backward pass is written out from the saved weights and masks. q, k, v: (batch·heads, T, D).
    """

    @staticmethod
    @torch.amp.custom_fwd(device_type="cpu")
    def forward(ctx, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, p: float) -> torch.Tensor:
        T, scale, keep = q.shape[1], q.shape[2] ** -0.5, 1.0 / (1.0 - p)
        bias = _causal_bias(T, q.device, q.dtype)
        outputs, saved = [], []
        for start in range(0, T, _CPU_QUERY_BLOCK):
            end = min(start + _CPU_QUERY_BLOCK, T)
            scores = torch.baddbmm(bias[start:end, :end], q[:, start:end], k[:, :end].transpose(1, 2), alpha=scale)
            weights = scores.softmax(dim=-1)
            drop = _drop_mask(weights, p)
            outputs.append(torch.bmm(weights.masked_fill(drop, 0.0), v[:, :end]).mul_(keep))
            saved += [weights, drop]
        ctx.save_for_backward(q, k, v, *saved)
        ctx.p = p
        return torch.cat(outputs, dim=1)

    @staticmethod
    @torch.amp.custom_bwd(device_type="cpu")
    def backward(ctx, grad_y: torch.Tensor):
        q, k, v, *saved = ctx.saved_tensors
        grad_y = grad_y.contiguous()  # CPU bmm loops over the batch in Python-free but slow steps otherwise
        T, scale, keep = q.shape[1], q.shape[2] ** -0.5, 1.0 / (1.0 - ctx.p)
        grad_q, grad_k, grad_v = [], torch.zeros_like(k), torch.zeros_like(v)
        for i, start in enumerate(range(0, T, _CPU_QUERY_BLOCK)):
            end = min(start + _CPU_QUERY_BLOCK, T)
            weights, drop, g = saved[2 * i], saved[2 * i + 1], grad_y[:, start:end]
            grad_v[:, :end].baddbmm_(weights.masked_fill(drop, 0.0).transpose(1, 2), g, alpha=keep)
            grad_weights = torch.bmm(g, v[:, :end].transpose(1, 2)).masked_fill_(drop, 0.0)
            grad_scores = torch.ops.aten._softmax_backward_data(grad_weights, weights, -1, weights.dtype)
            grad_q.append(torch.bmm(grad_scores, k[:, :end]).mul_(scale * keep))
            grad_k[:, :end].baddbmm_(grad_scores.transpose(1, 2), q[:, start:end], alpha=scale * keep)
        return torch.cat(grad_q, dim=1), grad_k, grad_v, None


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
        if p > 0 and self.fast and x.device.type == "cpu" and B * H * T * T >= _CPU_CUSTOM_ATTENTION_MIN:
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
            y = dropout(self.proj(y), self.dropout, self.training, self.fast)
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
