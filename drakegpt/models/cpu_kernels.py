"""CPU kernels for training with dropout: cheap dropout masks and causal attention in large ops.

On a CPU, PyTorch's `scaled_dot_product_attention` with dropout falls back to a T×T math path (~30 small
ops each way) and draws masks with a slow Bernoulli sampler. Measured on a 2-core CPU at the large preset,
what is here trains TransformerLM 1.5x faster than that, with the same dropout semantics (p is rounded to
a multiple of 1/65536). Below the measured crossovers PyTorch's own ops are as fast or faster.
"""

import torch
import torch.nn.functional as F

_QUERY_BLOCK = 64
_CHEAP_MASK_MIN = 2**17  # elements of a tensor to drop out
_CUSTOM_ATTENTION_MIN = 2**20  # elements of the (B, H, T, T) attention weights
_SMALL_CONTEXT = 32  # up to this many positions, SmallCausalAttention beats the fused kernel's per-head cost
_SMALL_CONTEXT_DROPOUT = 64  # with dropout over replicas too: PyTorch's attention dropout is a T×T math path
_CAUSAL_MASKS = {}


def use_cpu_attention(device: torch.device, weights_numel: int) -> bool:
    return device.type == "cpu" and weights_numel >= _CUSTOM_ATTENTION_MIN


def use_small_attention(device: torch.device, T: int, p: float, replicas: int) -> bool:
    """Short contexts on a CPU; with dropout only for replicas, whose masks differ from a single run's anyway.
    Measured on a 2-core CPU at T=64 (3 replicas of 4 layers, C=64): 88 ms a step against 99 with dropout,
    66 against 61 without."""
    if device.type != "cpu":
        return False
    return T <= _SMALL_CONTEXT and (p == 0 or replicas > 1) or T <= _SMALL_CONTEXT_DROPOUT and p > 0 and replicas > 1


def cheap_dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Inverted dropout; large CPU tensors, and every replicated one (dim 0 > 1), get the cheap mask."""
    if not training or p == 0:
        return x
    if x.device.type == "cpu" and x.numel() >= _CHEAP_MASK_MIN:
        return x.masked_fill(drop_mask(x, p), 0.0) * (1.0 / (1.0 - p))
    if x.device.type == "cpu" and x.shape[0] > 1:
        return x * keep_scale(x, p)
    return F.dropout(x, p, training=True)


def drop_mask(x: torch.Tensor, p: float) -> torch.Tensor:
    """True where x is dropped."""
    return _random_lanes(x) < _threshold(p)


def keep_scale(x: torch.Tensor, p: float) -> torch.Tensor:
    """drop_mask as a multiplier of x's dtype, 0 or 1 / (1 - p): multiplying costs a tenth of masked_fill."""
    lanes = _random_lanes(x).float()  # every int16 is exact in float32, not in bf16
    return lanes.sub_(_threshold(p) - 1).clamp_(0.0, 1.0).to(x.dtype).mul_(1.0 / (1.0 - p))


def _random_lanes(x: torch.Tensor) -> torch.Tensor:
    """Uniform int16 of x's shape. Four 16-bit lanes per 64-bit draw: ~5x cheaper than bernoulli_ on a CPU."""
    n = x.numel()
    words = torch.empty((n + 3) // 4, dtype=torch.int64).random_(-(2**63), 2**63 - 1)
    return words.view(torch.int16)[:n].view(x.shape)


def _threshold(p: float) -> int:
    return -32768 + round(p * 65536)


def _causal_mask(T: int, device: torch.device, dtype: torch.dtype, kind: str) -> torch.Tensor:
    """(T, T), cached: "bias" is -inf above the diagonal and 0 elsewhere, "ones" is 1 on and below it, 0 above."""
    key = (T, device, dtype, kind)
    if key not in _CAUSAL_MASKS:
        ones = torch.ones((T, T), device=device, dtype=dtype)
        _CAUSAL_MASKS[key] = ones.tril() if kind == "ones" else torch.full_like(ones, float("-inf")).triu(1)
    return _CAUSAL_MASKS[key]


class CausalAttentionWithDropout(torch.autograd.Function):
    """Causal attention with dropout on the weights, for training on a CPU, in a few large ops.

    Each block of 64 queries only meets the keys at or before it (the masked upper triangle is skipped),
    the mask comes from drop_mask, and the backward pass is written out from the saved weights and masks.
    q, k, v: (batch·heads, T, D), contiguous.
    """

    @staticmethod
    @torch.amp.custom_fwd(device_type="cpu")
    def forward(ctx, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, p: float) -> torch.Tensor:
        T, scale, keep = q.shape[1], q.shape[2] ** -0.5, 1.0 / (1.0 - p)
        bias = _causal_mask(T, q.device, q.dtype, "bias")
        outputs, saved = [], []
        for start in range(0, T, _QUERY_BLOCK):
            end = min(start + _QUERY_BLOCK, T)
            scores = torch.baddbmm(bias[start:end, :end], q[:, start:end], k[:, :end].transpose(1, 2), alpha=scale)
            weights = scores.softmax(dim=-1)
            drop = drop_mask(weights, p)
            outputs.append(torch.bmm(weights.masked_fill(drop, 0.0), v[:, :end]).mul_(keep))
            saved += [weights, drop]
        ctx.save_for_backward(q, k, v, *saved)
        ctx.p = p
        return torch.cat(outputs, dim=1)

    @staticmethod
    @torch.amp.custom_bwd(device_type="cpu")
    def backward(ctx, grad_y: torch.Tensor):
        q, k, v, *saved = ctx.saved_tensors
        grad_y = grad_y.contiguous()  # CPU bmm on a strided batch falls back to one small matmul per item
        T, scale, keep = q.shape[1], q.shape[2] ** -0.5, 1.0 / (1.0 - ctx.p)
        grad_q, grad_k, grad_v = [], torch.zeros_like(k), torch.zeros_like(v)
        for i, start in enumerate(range(0, T, _QUERY_BLOCK)):
            end = min(start + _QUERY_BLOCK, T)
            weights, drop, g = saved[2 * i], saved[2 * i + 1], grad_y[:, start:end]
            grad_v[:, :end].baddbmm_(weights.masked_fill(drop, 0.0).transpose(1, 2), g, alpha=keep)
            grad_weights = torch.bmm(g, v[:, :end].transpose(1, 2)).masked_fill_(drop, 0.0)
            grad_scores = torch.ops.aten._softmax_backward_data(grad_weights, weights, -1, weights.dtype)
            grad_q.append(torch.bmm(grad_scores, k[:, :end]).mul_(scale * keep))
            grad_k[:, :end].baddbmm_(grad_scores.transpose(1, 2), q[:, start:end], alpha=scale * keep)
        return torch.cat(grad_q, dim=1), grad_k, grad_v, None


class SmallCausalAttention(torch.autograd.Function):
    """Causal attention for short contexts in a few batched ops, with dropout on the weights (cheap masks).

    PyTorch's softmax costs ~16 ns an element on rows of 8 (a fifth of that written out here), and its
    fused attention ~1 µs per head: both dominate when many heads, or replicas, each hold a short context.
    Dropout multiplies by keep_scale's mask, which the backward pass reuses.
    q, k, v: (batch·heads, T, D), contiguous.
    """

    @staticmethod
    @torch.amp.custom_fwd(device_type="cpu")
    def forward(ctx, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, p: float) -> torch.Tensor:
        T, scale = q.shape[1], q.shape[2] ** -0.5
        scores = torch.add(_causal_mask(T, q.device, q.dtype, "bias"), torch.bmm(q, k.transpose(1, 2)), alpha=scale)
        # exp is ~10x slower on -inf or below -87 (float32's smallest normal result): clamp, then zero the future
        weights = (scores - scores.amax(dim=-1, keepdim=True)).clamp_min_(-87.0).exp_()
        weights = weights.mul_(_causal_mask(T, q.device, q.dtype, "ones"))
        weights = weights.div_(weights.sum(dim=-1, keepdim=True))
        keep = keep_scale(weights, p) if p > 0 else None
        kept = weights if keep is None else weights * keep
        ctx.save_for_backward(q, k, v, weights, kept, *([] if keep is None else [keep]))
        ctx.p, ctx.scale = p, scale
        return torch.bmm(kept, v)

    @staticmethod
    @torch.amp.custom_bwd(device_type="cpu")
    def backward(ctx, grad_y: torch.Tensor):
        q, k, v, weights, kept, *keep = ctx.saved_tensors
        grad_y = grad_y.contiguous()
        grad_v = torch.bmm(kept.transpose(1, 2), grad_y)
        grad_weights = torch.bmm(grad_y, v.transpose(1, 2))
        if keep:
            grad_weights = grad_weights.mul_(keep[0])
        grad_scores = weights * (grad_weights - (grad_weights * weights).sum(dim=-1, keepdim=True))
        grad_q = torch.bmm(grad_scores, k).mul_(ctx.scale)
        grad_k = torch.bmm(grad_scores.transpose(1, 2), q).mul_(ctx.scale)
        return grad_q, grad_k, grad_v, None
