"""One layer of the deep models, with every idea of the ladder as a switch of its ModelConfig."""

import torch
import torch.nn as nn
import torch.nn.functional as F

from drakegpt.models.attention import Span, dropout_function, linear_class, make_attention
from drakegpt.models.config import Activation, FeedForward, ModelConfig, NormPosition
from drakegpt.models.layers import make_norm

ACTIVATIONS = {Activation.relu: F.relu, Activation.gelu: F.gelu}


class FeedForwardLayer(nn.Module):
    """Linear + activation as wide as the embedding, or (mlp) up to 4x the width and back down; then dropout."""

    def __init__(self, config: ModelConfig, replicas: int):
        super().__init__()
        C, linear = config.embedding_dim, linear_class(config.linear)
        hidden = 4 * C if config.feed_forward is FeedForward.mlp else C
        self.up = linear(C, hidden, replicas=replicas)
        self.down = linear(hidden, C, replicas=replicas) if config.feed_forward is FeedForward.mlp else None
        self.activation = ACTIVATIONS[config.activation]
        self.dropout, self.dropout_function = config.dropout, dropout_function(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.activation(self.up(x))
        if self.down is not None:
            x = self.down(x)
        return self.dropout_function(x, self.dropout, self.training)


class Block(nn.Module):
    """Attention, then the feed-forward if there is one; each sub-layer with its norm and residual path if switched on.

    BlocksLM: neither norm nor residual. ResidualBlocksLM: x + f(x). TransformerLM: x + f(norm(x)) (pre-LN).
    """

    def __init__(self, config: ModelConfig, replicas: int, layer: int):
        super().__init__()
        C, has_feed_forward = config.embedding_dim, config.feed_forward is not FeedForward.none
        self.attention = make_attention(config, replicas, layer)
        self.feed_forward = FeedForwardLayer(config, replicas) if has_feed_forward else None
        self.norm_attention = make_norm(config.norm, C, replicas)
        self.norm_feed_forward = make_norm(config.norm, C, replicas) if has_feed_forward else None
        self.residual, self.post_norm = config.residual, config.norm_position is NormPosition.post

    def forward(self, x: torch.Tensor, span: Span) -> torch.Tensor:
        x = self.sublayer(x, lambda h: self.attention(h, span), self.norm_attention)
        if self.feed_forward is not None:
            x = self.sublayer(x, self.feed_forward, self.norm_feed_forward)
        return x

    def sublayer(self, x: torch.Tensor, f, norm: nn.Module) -> torch.Tensor:
        if self.post_norm:
            return norm(x + f(x) if self.residual else f(x))
        y = f(norm(x))
        return x + y if self.residual else y
