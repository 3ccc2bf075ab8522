"""One layer of the deep models, with every idea of the ladder as a switch of its ModelConfig.

The feed-forward kinds are sibling classes picked by name (litgpt's way), each as wide as
`config.feed_forward_width` says: nothing else needs to know the ratio.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

from drakegpt.models.attention import Span, dropout_function, make_attention
from drakegpt.models.bitnet import make_linear
from drakegpt.models.config import Activation, FeedForward, ModelConfig, NormPosition
from drakegpt.models.layers import make_norm

ACTIVATIONS = {
    Activation.relu: F.relu,
    Activation.gelu: F.gelu,
    Activation.silu: F.silu,
    Activation.relu2: lambda x: F.relu(x).square(),
}


class LinearActivation(nn.Module):
    """BlocksLM's feed-forward: one Linear as wide as the embedding, then the activation."""

    def __init__(self, config: ModelConfig, replicas: int):
        super().__init__()
        C = config.embedding_dim
        self.up = make_linear(config.linear, C, config.feed_forward_width, replicas=replicas)
        self.activation = ACTIVATIONS[config.activation]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(self.up(x))


class MLP(nn.Module):
    """Up to feed_forward_width, the activation, back down to the embedding width."""

    def __init__(self, config: ModelConfig, replicas: int):
        super().__init__()
        C, hidden = config.embedding_dim, config.feed_forward_width
        self.up = make_linear(config.linear, C, hidden, replicas=replicas)
        self.down = make_linear(config.linear, hidden, C, replicas=replicas)
        self.activation = ACTIVATIONS[config.activation]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(self.activation(self.up(x)))


class GLU(nn.Module):
    """down(activation(gate(x)) * up(x)): gate and up are one matmul. With SiLU this is LLaMA's SwiGLU."""

    def __init__(self, config: ModelConfig, replicas: int):
        super().__init__()
        C, hidden = config.embedding_dim, config.feed_forward_width
        self.gate_up = make_linear(config.linear, C, 2 * hidden, replicas=replicas, splits=(hidden, hidden))
        self.down = make_linear(config.linear, hidden, C, replicas=replicas)
        self.activation = ACTIVATIONS[config.activation]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        return self.down(self.activation(gate) * up)


FEED_FORWARDS = {FeedForward.linear: LinearActivation, FeedForward.mlp: MLP, FeedForward.glu: GLU}


class FeedForwardLayer(nn.Module):
    """The feed-forward of config.feed_forward's kind, then dropout."""

    def __init__(self, config: ModelConfig, replicas: int):
        super().__init__()
        self.net = FEED_FORWARDS[config.feed_forward](config, replicas)
        self.dropout, self.dropout_function = config.dropout_rate, dropout_function(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout_function(self.net(x), self.dropout, self.training)


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
