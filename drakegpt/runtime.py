"""The one place that decides the device, the numeric precision and the CPU threads."""

import contextlib
from typing import ContextManager, Optional

import torch

from drakegpt.config import Precision
from drakegpt.errors import UsageError


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
        "cpu": True,
        "cuda": torch.cuda.is_available() and (device.index or 0) < torch.cuda.device_count(),
        "mps": torch.backends.mps.is_available(),
    }.get(device.type, False)
    if not available:
        raise UsageError(f"device={name} is not available on this machine; use device=auto or device=cpu")
    return device


def cpu_has_native_bf16() -> bool:
    # Without AMX or AVX512-BF16, bf16 matmuls are emulated: measured 170x slower than fp32 on an AVX2 CPU.
    return torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported()


def resolve_precision(precision: Precision, device: torch.device) -> Precision:
    if precision is not Precision.auto:
        return precision
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return Precision.bf16
    if device.type == "cpu" and cpu_has_native_bf16():
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
