"""BitLinear as in BitNet b1.58 ("The Era of 1-bit LLMs", Ma et al., 2024), and its packed 2-bit form.

Training keeps full-precision latent weights. The forward pass normalises the input (RMSNorm without
parameters), quantises it to 8 bits per token (absmax), ternarises the weights to {-1, 0, +1} times one
absmean scale per matrix, and multiplies. Gradients pass straight through both roundings. Like the
paper's layer it has no bias. A packed model keeps only the ternary codes (2 bits each) and the scales;
its forward pass divides the same codes by the same scale, so it gives the latent model's logits exactly.
"""

from typing import Dict, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from drakegpt.models.layers import Linear, replicated_linear

ACTIVATION_LEVELS = 127  # 8-bit signed activations: [-128, 127]
EPSILON = 1e-5


def quantize_activations(x: torch.Tensor) -> torch.Tensor:
    scale = ACTIVATION_LEVELS / x.abs().amax(dim=-1, keepdim=True).clamp(min=EPSILON)
    return (x * scale).round().clamp(-ACTIVATION_LEVELS - 1, ACTIVATION_LEVELS) / scale


def ternarize(weight: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Codes in {-1, 0, +1} (same dtype as the weight) and 1 / absmean per replica matrix, shaped (R, 1, 1)."""
    scale = 1.0 / weight.abs().mean(dim=(1, 2), keepdim=True).clamp(min=EPSILON)
    return (weight * scale).round().clamp(-1, 1), scale


class BitLinear(Linear):
    def __init__(self, in_features: int, out_features: int, bias: bool = False, replicas: int = 1):
        super().__init__(in_features, out_features, bias=False, replicas=replicas)
        self.register_buffer("packed_scale", None)  # set when loaded from a packed file: weight holds codes

    def quantized_weight(self) -> torch.Tensor:
        if self.packed_scale is not None:
            return self.weight / self.packed_scale
        codes, scale = ternarize(self.weight)
        return codes / scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.rms_norm(x, (x.shape[-1],))
        x_q, w_q = quantize_activations(x), self.quantized_weight()
        if self.training:  # straight-through: the forward sees the quantised values, the gradient skips rounding
            x_q = x + (x_q - x).detach()
            w_q = self.weight + (w_q - self.weight).detach()
        return replicated_linear(x_q, w_q, None)


def pack_codes(codes: torch.Tensor) -> torch.Tensor:
    """Ternary codes {-1, 0, 1} -> uint8, four 2-bit codes per byte."""
    flat = (codes.flatten().to(torch.int64) + 1).to(torch.uint8)
    flat = F.pad(flat, (0, -len(flat) % 4)).view(-1, 4)
    return flat[:, 0] | flat[:, 1] << 2 | flat[:, 2] << 4 | flat[:, 3] << 6


def unpack_codes(packed: torch.Tensor, numel: int) -> torch.Tensor:
    """The inverse of pack_codes: float codes in {-1, 0, 1}."""
    fields = torch.stack([(packed >> shift) & 3 for shift in (0, 2, 4, 6)], dim=1).flatten()[:numel]
    return fields.to(torch.float32) - 1


def packed_weights(model: nn.Module) -> Dict[str, Dict[str, torch.Tensor]]:
    """Every BitLinear's ternary codes, four to a byte, and its scale: all the quantised layers need."""
    packed = {}
    for name, module in model.named_modules():
        if isinstance(module, BitLinear):
            codes, scale = ternarize(module.weight.detach())
            packed[f"{name}.weight"] = {
                "codes": pack_codes(codes),
                "scale": scale,
                "shape": torch.tensor(module.weight.shape),
            }
    return packed


def load_packed(model: nn.Module, packed: Dict[str, Dict[str, torch.Tensor]]) -> None:
    """Put packed codes and scales into `model`'s BitLinears: the inverse of packed_weights."""
    for name, module in model.named_modules():
        if isinstance(module, BitLinear):
            entry = packed[f"{name}.weight"]
            shape = torch.Size(entry["shape"].tolist())
            with torch.no_grad():
                module.weight.copy_(unpack_codes(entry["codes"], shape.numel()).view(shape))
            module.packed_scale = entry["scale"].to(module.weight.dtype)
