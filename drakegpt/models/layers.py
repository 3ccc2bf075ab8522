"""nn.Linear, nn.Embedding and the norms with a leading replica dimension.

Every parameter is (replicas, ...): one model object trains several seeds of one config at once, each
replica a slice, with one batched matmul where a single run has one matmul. A single run is one replica,
initialised with exactly nn.Linear's and nn.Embedding's random draws, so a fixed seed gives their numbers.
Activations are (replicas, batch, time, channels).
"""

import math
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from drakegpt.models.config import Norm


def replicated_linear(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
    """x (R, ..., in) @ weight (R, out, in)ᵀ + bias (R, out)."""
    R = weight.shape[0]
    if R == 1:  # the plain matmul: squeeze and unsqueeze are views, so this costs what nn.Linear costs
        return F.linear(x, weight.squeeze(0), None if bias is None else bias.squeeze(0))
    flat = x.reshape(R, -1, x.shape[-1])
    if bias is None:
        y = torch.bmm(flat, weight.mT)
    else:
        y = torch.baddbmm(bias.unsqueeze(1), flat, weight.mT)
    return y.view(*x.shape[:-1], weight.shape[1])


class Linear(nn.Module):
    def __init__(self, in_features: int, out_features: int, bias: bool = True, replicas: int = 1):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(replicas, out_features, in_features))
        self.bias = nn.Parameter(torch.empty(replicas, out_features)) if bias else None
        with torch.no_grad():
            for r in range(replicas):  # nn.Linear.reset_parameters, slice by slice
                nn.init.kaiming_uniform_(self.weight[r], a=math.sqrt(5))
                if self.bias is not None:
                    bound = 1 / math.sqrt(in_features)
                    nn.init.uniform_(self.bias[r], -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return replicated_linear(x, self.weight, self.bias)


class Embedding(nn.Module):
    def __init__(self, num_embeddings: int, embedding_dim: int, replicas: int = 1):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(replicas, num_embeddings, embedding_dim))
        with torch.no_grad():
            for r in range(replicas):
                nn.init.normal_(self.weight[r])

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """ids (R, ...) -> (R, ..., dim): each replica looks up its own table."""
        R, num = self.weight.shape[:2]
        if R == 1:
            return F.embedding(ids, self.weight.squeeze(0))
        offsets = torch.arange(R, device=ids.device).view(R, *[1] * (ids.dim() - 1)) * num
        return F.embedding(ids + offsets, self.weight.flatten(0, 1))


class ReplicatedNorm(nn.Module):
    """LayerNorm or RMSNorm over the last dimension, with a scale (and, for LayerNorm, a shift) per replica."""

    def __init__(self, kind: Norm, dim: int, replicas: int = 1):
        super().__init__()
        self.kind = kind
        self.weight = nn.Parameter(torch.ones(replicas, dim))
        self.bias = nn.Parameter(torch.zeros(replicas, dim)) if kind is Norm.layernorm else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        R, C = self.weight.shape
        if R == 1:  # the fused kernels take the affine parameters directly
            weight = self.weight.squeeze(0)
            if self.kind is Norm.layernorm:
                return F.layer_norm(x, (C,), weight, self.bias.squeeze(0))
            return F.rms_norm(x, (C,), weight)
        shape = (R, *[1] * (x.dim() - 2), C)
        if self.kind is Norm.layernorm:
            return torch.addcmul(self.bias.view(shape), F.layer_norm(x, (C,)), self.weight.view(shape))
        return F.rms_norm(x, (C,)) * self.weight.view(shape)


def make_norm(kind: Norm, dim: int, replicas: int) -> nn.Module:
    return nn.Identity() if kind is Norm.none else ReplicatedNorm(kind, dim, replicas)
