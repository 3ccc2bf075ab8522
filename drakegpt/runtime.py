"""The one place that decides the device, the numeric precision and the CPU threads."""

import contextlib
from typing import ContextManager, Optional, Tuple

import torch

from drakegpt.schema import Precision
from drakegpt.errors import UsageError
from drakegpt.models.config import ModelConfig


def resolve_device(name: str) -> torch.device:
    """`auto` picks cuda, then mps, then cpu; a named device that is absent is an error, never a fallback."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"device={name} is not a device name; use auto, cpu, cuda, cuda:N or mps") from None
    available = {
        "cpu": device.index in (None, 0),  # one CPU device: cpu:7 is a mistake, not a choice
        "cuda": torch.cuda.is_available() and (device.index or 0) < torch.cuda.device_count(),
        "mps": torch.backends.mps.is_available(),
    }.get(device.type, False)
    if not available:
        raise UsageError(f"device={name} is not available on this machine; use device=auto or device=cpu")
    return device


def cpu_has_native_bf16() -> bool:
    # Without AMX or AVX512-BF16, bf16 matmuls are emulated: measured 170x slower than fp32 on an AVX2 CPU.
    return torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported()


# On a CPU, bf16 pays once the matmuls outweigh the casts around them. Measured on a 2-core AMX Xeon
# (TransformerLM, 256 tokens a step): 38% slower at embedding_dim 32, even at 128, 1.3x faster at 256, and
# 2.2x faster at the large preset's 384.
CPU_BF16_MIN_WIDTH = 128


def resolve_precision(precision: Precision, device: torch.device, embedding_dim: int) -> Precision:
    if precision is not Precision.auto:
        return precision
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return Precision.bf16
    if device.type == "cpu" and cpu_has_native_bf16() and embedding_dim > CPU_BF16_MIN_WIDTH:
        return Precision.bf16
    return Precision.fp32


def autocast(precision: Precision, device: torch.device) -> ContextManager:
    """Matmuls in bf16 with fp32 weights and fp32-sensitive ops (softmax, LayerNorm, loss), or plain fp32."""
    if precision is Precision.bf16:
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def set_threads(threads: Optional[int]) -> None:
    if threads is not None:
        torch.set_num_threads(threads)


def resolve_compile(value, device: torch.device) -> bool:
    """train.compile / generate.compile: auto compiles on CUDA, where the fused kernels pay for compiling."""
    return value is True or (value == "auto" and device.type == "cuda")


MAX_TOKENS_PER_FORWARD = 65536
EVAL_FLOPS_PER_FORWARD = 2e10  # about 0.2-0.5 s of a 2-core CPU: a stop or a progress bar is never far away
# On a CPU a forward is fastest while its widest activation stays in cache. Measured on a 2-core Xeon (exact
# evaluation of Drake's val split): laptop, 3 replicas, 1.53 s at 65,536 tokens a replica, 0.84 s at 3,640;
# default 1.01 s vs 0.59 s; large 4.6 s at 843 tokens vs 3.6 s at 1,365.
CPU_ACTIVATION_FLOATS = 2**21


def tokens_per_forward(model: ModelConfig, replicas: int, device: torch.device) -> int:
    """Evaluation tokens per replica per forward pass, at least one window: on a GPU as many as fit
    EVAL_FLOPS_PER_FORWARD, on a CPU as many as keep the widest activation of all replicas within
    CPU_ACTIVATION_FLOATS."""
    C, L, T, V = model.embedding_dim, model.num_layers, model.context_length, model.vocab_size
    if device.type == "cpu":
        return max(T, CPU_ACTIVATION_FLOATS // (replicas * max(V, C, model.feed_forward_width)))
    flops = 2 * (V * V if not model.attention else L * 12 * C * C + C * V) + 4 * L * T * C
    return max(T, min(MAX_TOKENS_PER_FORWARD, int(EVAL_FLOPS_PER_FORWARD / flops)))


def parameters_estimate(model: ModelConfig) -> int:
    """About the model's parameters per replica (from its shape; the memory check needs no model built)."""
    V, C, T, L = model.vocab_size, model.embedding_dim, model.context_length, model.num_layers
    if not model.attention:
        return V * V
    attention = C * (C + 2 * model.kv_heads * model.head_size) + C * C
    glu = 2 if model.feed_forward.value == "glu" else 1
    feed_forward = (glu + 1) * C * model.feed_forward_width
    return (V + T) * C + L * (attention + feed_forward) + C * V


def memory_estimate(cfg, model: ModelConfig, device: torch.device) -> Tuple[int, int]:
    """Bytes a run needs at most, (on the device, on the host): weights, gradients and optimizer state, what a
    training step keeps for its backward pass, an evaluation chunk's logits, and the evaluation windows."""
    R, B, T = cfg.train.replicas, cfg.scale.batch_size, cfg.scale.context_length
    C, L, H, V = model.embedding_dim, model.num_layers, model.num_heads, model.vocab_size
    tokens = R * B * T
    per_token = (L * (8 * C + 2 * model.feed_forward_width + 2 * H * T) + 3 * V) if model.attention else 3 * V
    training = 4 * (4 * parameters_estimate(model) * R + tokens * per_token)
    evaluation = 4 * 3 * V * R * tokens_per_forward(model, R, device)
    windows = 8 * 2 * cfg.train.eval_iters * B * R if cfg.train.eval.value == "random" else 0
    return training + evaluation, windows


def check_memory(cfg, model: ModelConfig, device: torch.device) -> None:
    """Refuse, in one line with the estimate, a run that cannot fit in memory, before it allocates any of it."""
    on_device, on_host = memory_estimate(cfg, model, device)
    knobs = (
        f"scale.batch_size={cfg.scale.batch_size}, scale.context_length={cfg.scale.context_length}, "
        f"scale.embedding_dim={cfg.scale.embedding_dim}, scale.num_layers={cfg.scale.num_layers}, "
        f"train.eval_iters={cfg.train.eval_iters}, train.replicas={cfg.train.replicas}"
    ) + (f", model.feed_forward_ratio={cfg.model.feed_forward_ratio}" if model.feed_forward_width > model.embedding_dim
         else "")
    ensure_fits(on_device, on_host, device, "this run", knobs)


def check_sampling_memory(model: ModelConfig, num_samples: int, length: int, device: torch.device, knobs: str) -> None:
    """Sampling keeps every sequence (int64), a KV cache per sample, and one window's activations."""
    C, T, L, V = model.embedding_dim, model.context_length, model.num_layers, model.vocab_size
    cache = 2 * L * T * model.kv_heads * model.head_size
    need = num_samples * (8 * length + 4 * (cache + T * (8 * C + 2 * model.feed_forward_width + model.num_heads * T)
                                            + 4 * V))
    ensure_fits(need, 8 * num_samples * length, device, "sampling", knobs)


def ensure_fits(on_device: int, on_host: int, device: torch.device, what: str, knobs: str) -> None:
    import psutil

    host_free = psutil.virtual_memory().available
    if device.type == "cuda":
        device_free = torch.cuda.mem_get_info(device)[0]
    else:
        on_host, device_free = max(on_host, on_device), host_free
    for need, free, where in ((on_host, host_free, "memory"), (on_device, device_free, f"{device} memory")):
        if need > free:
            raise UsageError(
                f"{what} needs about {need / 2**30:,.1f} GiB of {where} and {free / 2**30:,.1f} GiB is free "
                f"({knobs}); lower them"
            )
