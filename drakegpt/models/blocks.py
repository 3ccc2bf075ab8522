"""The three blocks the deep models stack; each adds one idea to the one before it."""

from typing import Optional

import torch
import torch.nn as nn

import torch.nn.functional as F

from drakegpt.models.attention import Attention, LayerCache, make_attention
from drakegpt.models.cpu_attention import fast_dropout


class Block(nn.Module):
    """Multi-head attention, then Linear + ReLU. No residual path: depth makes it harder to train."""

    def __init__(self, embedding_dim: int, num_heads: int, context_length: int, impl: Attention):
        super().__init__()
        self.attention = make_attention(embedding_dim, num_heads, context_length, 0.0, False, impl)
        self.feed_forward = nn.Sequential(nn.Linear(embedding_dim, embedding_dim), nn.ReLU())

    def forward(self, x: torch.Tensor, cache: Optional[LayerCache] = None) -> torch.Tensor:
        return self.feed_forward(self.attention(x, cache))


class FeedForward(nn.Module):
    """Linear up to 4x the width, ReLU, Linear back down, then dropout."""

    def __init__(self, embedding_dim: int, dropout: float = 0.0, cheap_cpu_dropout: bool = True):
        super().__init__()
        self.up = nn.Linear(embedding_dim, 4 * embedding_dim)
        self.down = nn.Linear(4 * embedding_dim, embedding_dim)
        self.p = dropout
        self.dropout = fast_dropout if cheap_cpu_dropout else F.dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.down(torch.relu(self.up(x))), self.p, self.training)


class ResidualBlock(nn.Module):
    """Adds residual connections, a projection after attention and the 4x feed-forward."""

    def __init__(self, embedding_dim: int, num_heads: int, context_length: int, impl: Attention, dropout: float = 0.0):
        super().__init__()
        self.attention = make_attention(embedding_dim, num_heads, context_length, dropout, True, impl)
        self.feed_forward = FeedForward(embedding_dim, dropout, cheap_cpu_dropout=impl is Attention.fast)

    def forward(self, x: torch.Tensor, cache: Optional[LayerCache] = None) -> torch.Tensor:
        x = x + self.attention(x, cache)
        return x + self.feed_forward(x)


class TransformerBlock(ResidualBlock):
    """Adds a LayerNorm before each sub-layer (pre-LN) and dropout inside them."""

    def __init__(self, embedding_dim: int, num_heads: int, context_length: int, impl: Attention, dropout: float):
        super().__init__(embedding_dim, num_heads, context_length, impl, dropout)
        self.norm_attention = nn.LayerNorm(embedding_dim)
        self.norm_feed_forward = nn.LayerNorm(embedding_dim)

    def forward(self, x: torch.Tensor, cache: Optional[LayerCache] = None) -> torch.Tensor:
        x = x + self.attention(self.norm_attention(x), cache)
        return x + self.feed_forward(self.norm_feed_forward(x))
