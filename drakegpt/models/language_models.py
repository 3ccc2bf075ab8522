"""The six character-level language models, from a bigram table to a full transformer.

Every model maps token ids (B, T) to next-character logits (B, T, V) and, given targets, the mean
cross-entropy in nats. Each class is the previous one plus one idea.
"""

from dataclasses import dataclass
from typing import Mapping, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from drakegpt.models.attention import Attention, KVCache, make_attention
from drakegpt.models.blocks import Block, ResidualBlock, TransformerBlock

Output = Tuple[torch.Tensor, Optional[torch.Tensor]]


@dataclass
class ModelConfig:
    vocab_size: int
    context_length: int = 8
    embedding_dim: int = 32
    num_heads: int = 4
    num_layers: int = 3
    dropout: float = 0.1
    attention: Attention = Attention.fast

    @classmethod
    def from_preset(cls, preset, vocab_size: int, attention: Attention = Attention.fast) -> "ModelConfig":
        """From a scale preset: a mapping or an object with the five shape fields (extra fields are ignored)."""
        get = preset.__getitem__ if isinstance(preset, Mapping) else preset.__getattribute__
        shape = {k: get(k) for k in ("context_length", "embedding_dim", "num_heads", "num_layers", "dropout")}
        return cls(vocab_size=vocab_size, attention=attention, **shape)


def _loss(logits: torch.Tensor, targets: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    if targets is None:
        return None
    return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())


class BigramLM(nn.Module):
    """Each character's logits for the next one are a row of a V×V table: no context at all."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.logits_table = nn.Embedding(config.vocab_size, config.vocab_size)

    def forward(self, idx: torch.Tensor, targets=None, cache: Optional[KVCache] = None) -> Output:
        logits = self.logits_table(idx)
        return logits, _loss(logits, targets)


class CharLM(nn.Module):
    """Token + position embeddings shared by the attention models; subclasses add the body and LM head."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.token_embedding = nn.Embedding(config.vocab_size, config.embedding_dim)
        self.position_embedding = nn.Embedding(config.context_length, config.embedding_dim)

    def embed(self, idx: torch.Tensor, cache: Optional[KVCache]) -> torch.Tensor:
        start = cache.length if cache is not None else 0
        positions = torch.arange(start, start + idx.shape[1], device=idx.device)
        if cache is not None:
            cache.length += idx.shape[1]
        return self.token_embedding(idx) + self.position_embedding(positions)


class SingleHeadAttentionLM(CharLM):
    """One causal attention head as wide as the embedding, then a linear LM head."""

    def __init__(self, config: ModelConfig, num_heads: int = 1):
        super().__init__(config)
        C = config.embedding_dim
        self.attention = make_attention(C, num_heads, config.context_length, 0.0, False, config.attention)
        self.lm_head = nn.Linear(C, config.vocab_size)

    def forward(self, idx: torch.Tensor, targets=None, cache: Optional[KVCache] = None) -> Output:
        x = self.embed(idx, cache)
        x = self.attention(x, cache.layers[0] if cache is not None else None)
        logits = self.lm_head(x)
        return logits, _loss(logits, targets)


class MultiHeadAttentionLM(SingleHeadAttentionLM):
    """The same width split into num_heads heads that attend independently, then concatenated."""

    def __init__(self, config: ModelConfig):
        super().__init__(config, num_heads=config.num_heads)


class BlocksLM(CharLM):
    """num_layers blocks of multi-head attention followed by Linear + ReLU."""

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        self.blocks = nn.ModuleList(self.make_block(config) for _ in range(config.num_layers))
        self.final_norm: nn.Module = nn.Identity()
        self.lm_head = nn.Linear(config.embedding_dim, config.vocab_size)

    def make_block(self, c: ModelConfig) -> nn.Module:
        return Block(c.embedding_dim, c.num_heads, c.context_length, c.attention)

    def forward(self, idx: torch.Tensor, targets=None, cache: Optional[KVCache] = None) -> Output:
        x = self.embed(idx, cache)
        for i, block in enumerate(self.blocks):
            x = block(x, cache.layers[i] if cache is not None else None)
        logits = self.lm_head(self.final_norm(x))
        return logits, _loss(logits, targets)


class ResidualBlocksLM(BlocksLM):
    """Residual connections around attention (now with an output projection) and a 4x feed-forward."""

    def make_block(self, c: ModelConfig) -> nn.Module:
        return ResidualBlock(c.embedding_dim, c.num_heads, c.context_length, c.attention)


class TransformerLM(ResidualBlocksLM):
    """Pre-LayerNorm blocks with dropout, and a final LayerNorm before the LM head."""

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        self.final_norm = nn.LayerNorm(config.embedding_dim)

    def make_block(self, c: ModelConfig) -> nn.Module:
        return TransformerBlock(c.embedding_dim, c.num_heads, c.context_length, c.attention, c.dropout)


MODELS = {
    cls.__name__: cls
    for cls in (BigramLM, SingleHeadAttentionLM, MultiHeadAttentionLM, BlocksLM, ResidualBlocksLM, TransformerLM)
}


def build_model(name: str, config: ModelConfig) -> nn.Module:
    return MODELS[name](config)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
