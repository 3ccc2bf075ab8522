"""BitLinear: 1.58-bit (BitNet b1.58, Ma et al. 2024) and 1-bit (BitNet, Wang et al. 2023) weights, and packed forms.

Training keeps full-precision latent weights. The forward pass normalises the input (RMSNorm without
parameters), quantises it to 8 bits per token (absmax), quantises the weights, and multiplies. Gradients
pass straight through both roundings. Like the papers' layers it has no bias.

- ternary (b1.58): round(W / mean|W|) clipped to {-1, 0, +1}, times mean|W|;
- binary (BitNet): sign(W - mean W) in {-1, +1}, times mean|W|.

The scale is kept per projection (`splits`): the fused q, k, v matrix has one per projection, as BitNet's
LLaMA-style models with separate q_proj, k_proj, v_proj have. A packed model keeps only the codes (2 bits
each for ternary, 1 for binary) and the scales; its forward pass divides the same codes by the same
stored numbers, so it gives the latent model's logits exactly.
"""

from typing import Dict, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from drakegpt.models.config import LinearKind
from drakegpt.models.layers import Linear, replicated_linear

ACTIVATION_LEVELS = 127  # 8-bit signed activations: [-128, 127]
EPSILON = 1e-5
BITS = {LinearKind.bitlinear: 2, LinearKind.binary: 1}  # stored bits per weight


def quantize_activations(x: torch.Tensor) -> torch.Tensor:
    scale = ACTIVATION_LEVELS / x.abs().amax(dim=-1, keepdim=True).clamp(min=EPSILON)
    return (x * scale).round().clamp(-ACTIVATION_LEVELS - 1, ACTIVATION_LEVELS) / scale


def quantize_weight(weight: torch.Tensor, splits: Sequence[int], kind: LinearKind) -> Tuple[torch.Tensor, torch.Tensor]:
    """Codes (the weight's dtype) and 1 / mean|W| per replica and projection, (R, len(splits)): W_q = codes / that."""
    codes, divisors = [], []
    for part in weight.split(list(splits), dim=1):
        divisor = 1.0 / part.abs().mean(dim=(1, 2), keepdim=True).clamp(min=EPSILON)
        if kind is LinearKind.binary:
            codes.append(torch.where(part > part.mean(dim=(1, 2), keepdim=True), 1.0, -1.0).to(part.dtype))
        else:
            codes.append((part * divisor).round().clamp(-1, 1))
        divisors.append(divisor.view(-1, 1))
    return torch.cat(codes, dim=1), torch.cat(divisors, dim=1)


def per_row(divisors: torch.Tensor, splits: Sequence[int]) -> torch.Tensor:
    """(R, len(splits)) -> (R, out, 1): each projection's number repeated over its rows."""
    return divisors.repeat_interleave(torch.tensor(list(splits), device=divisors.device), dim=1).unsqueeze(-1)


class BitLinear(Linear):
    def __init__(self, in_features: int, out_features: int, kind: LinearKind, replicas: int = 1,
                 splits: Optional[Sequence[int]] = None):
        super().__init__(in_features, out_features, bias=False, replicas=replicas)
        self.kind = kind
        self.splits = tuple(splits or (out_features,))
        self.register_buffer("packed_divisors", None)  # set when loaded from a packed file: weight holds codes

    def quantized_weight(self) -> torch.Tensor:
        if self.packed_divisors is not None:
            return self.weight / per_row(self.packed_divisors, self.splits)
        codes, divisors = quantize_weight(self.weight, self.splits, self.kind)
        return codes / per_row(divisors, self.splits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.rms_norm(x, (x.shape[-1],))
        x_q, w_q = quantize_activations(x), self.quantized_weight()
        if self.training:  # straight-through: the forward sees the quantised values, the gradient skips rounding
            x_q = x + (x_q - x).detach()
            w_q = self.weight + (w_q - self.weight).detach()
        return replicated_linear(x_q, w_q, None)


def make_linear(kind: LinearKind, in_features: int, out_features: int, bias: bool = True, replicas: int = 1,
                splits: Optional[Sequence[int]] = None) -> nn.Module:
    """A dense Linear, or a BitLinear of `kind` (no bias; one scale per entry of `splits`)."""
    if kind is LinearKind.dense:
        return Linear(in_features, out_features, bias=bias, replicas=replicas)
    return BitLinear(in_features, out_features, kind, replicas=replicas, splits=splits)


def pack_codes(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Codes in {-1, 0, 1} (2 bits) or {-1, 1} (1 bit) -> uint8, 8 // bits codes per byte."""
    per_byte = 8 // bits
    fields = ((codes.flatten().to(torch.int64) + 1) // (2 if bits == 1 else 1)).to(torch.uint8)
    fields = F.pad(fields, (0, -len(fields) % per_byte)).view(-1, per_byte)
    packed = torch.zeros(len(fields), dtype=torch.uint8)
    for i in range(per_byte):
        packed |= fields[:, i] << (bits * i)
    return packed


def unpack_codes(packed: torch.Tensor, numel: int, bits: int) -> torch.Tensor:
    """The inverse of pack_codes: float codes."""
    mask = (1 << bits) - 1
    fields = torch.stack([(packed >> (bits * i)) & mask for i in range(8 // bits)], dim=1).flatten()[:numel]
    return fields.to(torch.float32) * (2 if bits == 1 else 1) - 1


def packed_weights(model: nn.Module) -> Dict[str, Dict[str, torch.Tensor]]:
    """Every BitLinear's codes, packed, and its divisors: all the quantised layers need."""
    packed = {}
    for name, module in model.named_modules():
        if isinstance(module, BitLinear):
            codes, divisors = quantize_weight(module.weight.detach(), module.splits, module.kind)
            packed[f"{name}.weight"] = {
                "codes": pack_codes(codes, BITS[module.kind]),
                "divisors": divisors,
                "shape": torch.tensor(module.weight.shape),
            }
    return packed


def load_packed(model: nn.Module, packed: Dict[str, Dict[str, torch.Tensor]]) -> None:
    """Put packed codes and divisors into `model`'s BitLinears: the inverse of packed_weights. Raises ValueError
    when an entry does not fit the layer (a damaged or foreign file)."""
    for name, module in model.named_modules():
        if not isinstance(module, BitLinear):
            continue
        entry = packed.get(f"{name}.weight")
        if not isinstance(entry, dict) or not all(isinstance(entry.get(k), torch.Tensor)
                                                  for k in ("codes", "divisors", "shape")):
            raise ValueError(f"no packed weights for {name}")
        shape, divisors = tuple(entry["shape"].tolist()), entry["divisors"]
        numel = module.weight.numel()
        bits = BITS[module.kind]
        fits = (shape == tuple(module.weight.shape) and entry["codes"].dtype == torch.uint8
                and entry["codes"].numel() == -(-numel * bits // 8)
                and tuple(divisors.shape) == (shape[0], len(module.splits)))
        if not fits:
            raise ValueError(f"the packed weights of {name} do not fit the layer {tuple(module.weight.shape)}")
        if not bool(torch.isfinite(divisors).all()) or not bool((divisors > 0).all()):
            raise ValueError(f"the scales of {name} are not positive finite numbers")
        with torch.no_grad():
            module.weight.copy_(unpack_codes(entry["codes"], numel, bits).view(shape))
        module.packed_divisors = divisors.to(module.weight.dtype)
