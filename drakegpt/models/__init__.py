"""Plain nn.Modules built from a ModelConfig: nothing here knows about Hydra, files or W&B."""

from drakegpt.models.attention import Attention, CausalSelfAttention, KVCache
from drakegpt.models.language_models import MODELS, ModelConfig, build_model, count_parameters

__all__ = ["MODELS", "Attention", "CausalSelfAttention", "KVCache", "ModelConfig", "build_model", "count_parameters"]
