"""What a model is made of: its shape and the ideas it has. Plain data: no torch, no Hydra."""

from dataclasses import dataclass, fields
from enum import Enum
from typing import Any, Dict


class FeedForward(Enum):
    none = "none"
    linear = "linear"  # Linear + activation, as wide as the embedding (BlocksLM)
    mlp = "mlp"  # Linear up to 4x the width, activation, Linear back down (ResidualBlocksLM on)


class Activation(Enum):
    relu = "relu"
    gelu = "gelu"


class Norm(Enum):
    none = "none"
    layernorm = "layernorm"
    rmsnorm = "rmsnorm"


class NormPosition(Enum):
    pre = "pre"  # x + f(norm(x))
    post = "post"  # norm(x + f(x))


class Positions(Enum):
    learned = "learned"  # a trained embedding per position, added to the token embedding
    rotary = "rotary"  # queries and keys rotated by their position (RoPE); no position parameters


class LinearKind(Enum):
    dense = "dense"
    bitlinear = "bitlinear"  # BitNet b1.58: ternary weights, 8-bit activations


class Implementation(Enum):
    sdpa = "sdpa"  # all heads at once through scaled_dot_product_attention
    naive = "naive"  # the seed's code: one Head module per head with an explicit masked softmax


@dataclass(frozen=True)
class ModelConfig:
    """Every constructor argument of LanguageModel; a published model stores it and is rebuilt from it alone."""

    vocab_size: int
    context_length: int
    embedding_dim: int
    num_heads: int
    num_layers: int
    dropout: float  # the rate at every dropout site; 0 turns dropout off
    attention: bool  # False: the bigram table, no embeddings and no layers
    feed_forward: FeedForward
    activation: Activation
    residual: bool
    projection: bool  # a Linear after attention
    norm: Norm  # before (pre) or after (post) each sub-layer
    norm_position: NormPosition
    final_norm: Norm  # before the LM head
    positions: Positions
    tie_embeddings: bool  # the LM head reuses the token embedding's weights
    linear: LinearKind  # of every attention and feed-forward Linear; embeddings and LM head stay dense
    implementation: Implementation
    cpu_kernels: bool  # cheaper dropout on a CPU (cpu_kernels.py); the naive implementation keeps torch's

    @property
    def head_size(self) -> int:
        return self.embedding_dim // self.num_heads

    def to_dict(self) -> Dict[str, Any]:
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def from_dict(cls, values: Dict[str, Any]) -> "ModelConfig":
        """The inverse of to_dict; a missing or unknown key raises TypeError, a bad choice ValueError."""
        kinds = {f.name: f.type for f in fields(cls)}
        unknown = set(values) - set(kinds)
        if unknown:
            raise TypeError(f"unknown model config keys: {', '.join(sorted(unknown))}")
        return cls(**{k: kinds[k](v) if isinstance(kinds[k], type) and issubclass(kinds[k], Enum) else v
                      for k, v in values.items()})


def _plain(value: Any) -> Any:
    return value.value if isinstance(value, Enum) else value
