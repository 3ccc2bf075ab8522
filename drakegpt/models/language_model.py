"""The character-level language model: every ladder step, from the bigram table to the full transformer.

Which step it is depends only on its ModelConfig (conf/model/<Name>.yaml lists each step's ideas). It
maps token ids (R, B, T) to next-character logits (R, B, T, V) and, given targets, each replica's mean
cross-entropy in nats, (R,). A single run is one replica (R = 1).
"""

from typing import Dict, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from drakegpt.models.attention import KVCache, Span, rotary_angles
from drakegpt.models.blocks import Block
from drakegpt.models.config import Implementation, ModelConfig, Positions
from drakegpt.models.layers import Embedding, Linear, make_norm

Output = Tuple[torch.Tensor, Optional[torch.Tensor]]


class LanguageModel(nn.Module):
    config_class = ModelConfig

    def __init__(self, config: ModelConfig, replicas: int = 1):
        super().__init__()
        self.config, self.replicas = config, replicas
        V, C, T = config.vocab_size, config.embedding_dim, config.context_length
        if not config.attention:  # BigramLM: each character's next-character logits are a row of a V×V table
            self.logits_table = Embedding(V, V, replicas)
            return
        self.token_embedding = Embedding(V, C, replicas)
        if config.positions is Positions.learned:
            self.position_embedding = Embedding(T, C, replicas)
        else:
            cos, sin = rotary_angles(config.head_size, T, config.rotary_base)
            self.register_buffer("rotary_cos", cos, persistent=False)
            self.register_buffer("rotary_sin", sin, persistent=False)
        self.blocks = nn.ModuleList(Block(config, replicas, layer) for layer in range(config.num_layers))
        self.lm_head = Linear(C, V, replicas=replicas)
        self.final_norm = make_norm(config.final_norm, C, replicas)
        if config.tie_embeddings:  # one matrix at the LM head's scale: N(0, 1) logits would start near 21 nats
            self.token_embedding.weight = self.lm_head.weight

    def forward(self, ids: torch.Tensor, targets: Optional[torch.Tensor] = None, cache: Optional[KVCache] = None):
        if not self.config.attention:
            logits = self.logits_table(ids)
            return logits, cross_entropy(logits, targets)
        R, _, T = ids.shape
        start = cache.length if cache is not None else 0
        positions = start + torch.arange(T, device=ids.device)
        x = self.token_embedding(ids)  # (R, B, T, C)
        rotary = None
        if self.config.positions is Positions.learned:
            x = x + self.position_embedding(positions.expand(R, T)).unsqueeze(1)
        else:
            rotary = self.rotary_cos[positions], self.rotary_sin[positions]
        span = Span(positions, rotary, cache)
        for block in self.blocks:
            x = block(x, span)
        if cache is not None:
            cache.length += T
        logits = self.lm_head(self.final_norm(x))
        return logits, cross_entropy(logits, targets)

    def new_cache(self, batch: int) -> Optional[KVCache]:
        """An empty KV cache for sampling `batch` sequences, or None where the model has no use for one."""
        c = self.config
        if not c.attention or c.implementation is Implementation.naive:
            return None
        weight = self.token_embedding.weight
        return KVCache(
            c.num_layers, self.replicas * batch, c.kv_heads, c.context_length, c.head_size, weight.device, weight.dtype
        )

    def replica_state(self, replica: int) -> Dict[str, torch.Tensor]:
        """One replica's weights, shaped as a single run's (the replica dimension dropped)."""
        # A view would save its whole storage, every replica's: copy unless there is only one.
        return {name: t[replica].clone() if self.replicas > 1 else t[replica] for name, t in self.state_dict().items()}

    def load_replica_states(self, states, strict: bool = True) -> None:
        """The inverse of replica_state for every replica at once: states[r] becomes replica r."""
        self.load_state_dict({name: torch.stack([s[name] for s in states]) for name in states[0]}, strict=strict)


def cross_entropy(logits: torch.Tensor, targets: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    if targets is None:
        return None
    R = logits.shape[0]
    losses = F.cross_entropy(logits.flatten(0, -2).float(), targets.flatten(), reduction="none")
    return losses.view(R, -1).mean(dim=1)


def count_parameters(model: nn.Module) -> int:
    """Per replica: what one single run's model has."""
    return sum(p.numel() for p in model.parameters()) // getattr(model, "replicas", 1)


MODEL_CLASSES = {cls.__name__: cls for cls in (LanguageModel,)}
