"""drakegpt/runtime.py: the device, precision and compile policy, the evaluation chunk, the memory checks."""

import dataclasses
from unittest import mock

import pytest
import torch

from drakegpt import runtime
from drakegpt.errors import UsageError
from drakegpt.schema import Precision, model_config
from helpers.runs import typed_config

CPU = torch.device("cpu")


def test_precision_auto_takes_bf16_on_a_cpu_only_where_it_pays():
    assert runtime.resolve_precision(Precision.fp32, CPU, 384) is Precision.fp32
    assert runtime.resolve_precision(Precision.bf16, CPU, 32) is Precision.bf16
    with mock.patch.object(runtime, "cpu_has_native_bf16", return_value=True):
        assert runtime.resolve_precision(Precision.auto, CPU, 384) is Precision.bf16
        assert runtime.resolve_precision(Precision.auto, CPU, 32) is Precision.fp32  # the casts would cost more
    with mock.patch.object(runtime, "cpu_has_native_bf16", return_value=False):
        assert runtime.resolve_precision(Precision.auto, CPU, 384) is Precision.fp32  # emulated bf16: ~170x slower


def test_compile_auto_compiles_on_cuda_only():
    assert runtime.resolve_compile("auto", torch.device("cuda")) is True
    assert runtime.resolve_compile("auto", CPU) is False
    assert runtime.resolve_compile(True, CPU) is True and runtime.resolve_compile(False, torch.device("cuda")) is False


def test_device_names():
    assert runtime.resolve_device("cpu") == CPU
    with pytest.raises(UsageError, match="not a device name"):
        runtime.resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(UsageError, match="not available"):
            runtime.resolve_device("cuda")


def test_an_evaluation_chunk_fits_the_device():
    default, large = (model_config(c.model, c.scale, 80) for c in (typed_config()[0], typed_config("scale=large")[0]))
    gpu = torch.device("cuda")
    assert runtime.tokens_per_forward(default, 1, gpu) == runtime.MAX_TOKENS_PER_FORWARD  # a tiny model: the cap
    assert large.context_length <= runtime.tokens_per_forward(large, 1, gpu) < 4096  # a fraction of a second
    for config in (default, large):  # on a CPU: the widest activation of every replica within the cache budget
        for replicas in (1, 3, 5):
            tokens = runtime.tokens_per_forward(config, replicas, CPU)
            assert tokens * replicas * config.feed_forward_width <= runtime.CPU_ACTIVATION_FLOATS
            assert (tokens + 1) * replicas * config.feed_forward_width > runtime.CPU_ACTIVATION_FLOATS
    wide = dataclasses.replace(large, context_length=4096)
    assert runtime.tokens_per_forward(wide, 5, CPU) == 4096  # never less than one window


def test_the_memory_estimate_follows_the_feed_forward_width():
    cfg, _ = typed_config("scale=large")
    mlp = model_config(cfg.model, cfg.scale, 80)
    cfg_wide, _ = typed_config("scale=large", "model.feed_forward_ratio=8")
    wide = model_config(cfg_wide.model, cfg_wide.scale, 80)
    assert wide.feed_forward_width == 2 * mlp.feed_forward_width
    assert runtime.memory_estimate(cfg_wide, wide, CPU)[0] > runtime.memory_estimate(cfg, mlp, CPU)[0]
    assert runtime.parameters_estimate(wide) - runtime.parameters_estimate(mlp) == 6 * 2 * 384 * 4 * 384
