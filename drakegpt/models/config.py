"""What a model is made of: the ideas it has (Switches) and its shape (ModelConfig). Plain data: no torch, no Hydra.

Every switch is declared once, here, with its "off" value: conf/model/<Name>.yaml lists the ideas a preset
switches on, the structured config (drakegpt/schema.py) takes its keys and types from this class, and a
published model stores the whole ModelConfig.
"""

from dataclasses import dataclass, fields
from enum import Enum
from typing import Any, Dict, Optional


class Heads(Enum):
    one = "one"  # one head as wide as the embedding
    num_heads = "num_heads"  # scale.num_heads heads of embedding_dim / num_heads


class Depth(Enum):
    one = "one"  # one layer
    num_layers = "num_layers"  # scale.num_layers blocks


class FeedForward(Enum):
    none = "none"
    linear = "linear"  # Linear + activation, as wide as the embedding (BlocksLM)
    mlp = "mlp"  # Linear up to feed_forward_ratio x the width, activation, Linear back down (ResidualBlocksLM on)
    glu = "glu"  # activation(gate) * up, then down (Shazeer 2020); with activation=silu it is LLaMA's SwiGLU


class Activation(Enum):
    relu = "relu"
    gelu = "gelu"
    silu = "silu"
    relu2 = "relu2"  # ReLU squared (Primer)


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
    bitlinear = "bitlinear"  # BitNet b1.58: ternary weights {-1, 0, 1}, 8-bit activations
    binary = "binary"  # BitNet (Wang et al. 2023): binary weights {-1, 1}, 8-bit activations


class Implementation(Enum):
    sdpa = "sdpa"  # all heads at once through scaled_dot_product_attention
    naive = "naive"  # the original DrakeGPT's code: one Head module per head with an explicit masked softmax


@dataclass(kw_only=True)
class Switches:
    """The ideas of the ladder, each off by default; a preset is the list of those it switches on."""

    attention: bool = False  # False: the bigram table (no embeddings, no layers)
    heads: Heads = Heads.one
    kv_heads: Optional[int] = None  # heads of keys and values (grouped-query attention); None: one per query head
    depth: Depth = Depth.one
    feed_forward: FeedForward = FeedForward.none
    feed_forward_ratio: float = 4.0  # mlp: hidden width / embedding width; glu: 2/3 of it, as LLaMA
    feed_forward_multiple: int = 8  # glu: the hidden width rounded up to a multiple of this, as LLaMA
    activation: Activation = Activation.relu
    residual: bool = False
    projection: bool = False  # a Linear after attention
    norm: Norm = Norm.none  # in every block
    norm_position: NormPosition = NormPosition.pre
    final_norm: Norm = Norm.none  # before the LM head
    qk_norm: bool = False  # RMSNorm of each head's queries and keys before their dot product (OLMo 2, Gemma 3)
    dropout: bool = False  # on attention weights, the projection and the feed-forward, at scale.dropout
    positions: Positions = Positions.learned
    rotary_base: float = 10000.0
    tie_embeddings: bool = False  # the LM head reuses the token embedding
    linear: LinearKind = LinearKind.dense  # of every attention and feed-forward Linear; embeddings and head stay dense
    implementation: Implementation = Implementation.sdpa
    cpu_kernels: bool = True  # cheaper dropout and short-context attention on a CPU (cpu_kernels.py); sdpa only


@dataclass(kw_only=True)
class ModelConfig(Switches):
    """Every constructor argument of LanguageModel: the switches applied to a shape. A published model stores it
    and is rebuilt from it alone."""

    vocab_size: int
    context_length: int
    embedding_dim: int
    num_heads: int  # 1 where heads=one
    num_layers: int  # 1 where depth=one
    dropout_rate: float  # at every dropout site; 0 where dropout is off
    feed_forward_width: int  # the hidden width of the feed-forward (0 without one)

    def __post_init__(self):
        if self.kv_heads is None:
            self.kv_heads = self.num_heads

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


def switch_names() -> tuple:
    return tuple(f.name for f in fields(Switches))


def ideas_on(switches: Dict[str, Any]) -> int:
    """How many switches differ from their off value: the ladder's presets each add one idea, so this orders them."""
    off = Switches()
    return sum(1 for f in fields(Switches)
               if _plain(switches.get(f.name, getattr(off, f.name))) != _plain(getattr(off, f.name)))


def _plain(value: Any) -> Any:
    return value.value if isinstance(value, Enum) else value
