"""The six models: sizes, gradients, the three attention implementations, the CPU dropout path, the KV cache."""

import functools
from dataclasses import replace

import pytest
import torch
from omegaconf import OmegaConf

from conftest import ROOT
from drakegpt.config import Attention, DataConfig, DataSource
from drakegpt.data import CharVocab, load_text
from drakegpt.models import MODELS, KVCache, ModelConfig, build_model, count_parameters
from drakegpt.models import attention
from drakegpt.models import cpu_attention
from drakegpt.models.cpu_attention import CausalAttentionWithDropout

VOCAB = 80  # distinct characters of Drake.csv (checked against the file below)
NAMES = list(MODELS)
ATTENTION_MODELS = [n for n in NAMES if n != "BigramLM"]

EXPECTED_PARAMS = {
    "default": {
        "BigramLM": 6_400,
        "SingleHeadAttentionLM": 8_528,
        "MultiHeadAttentionLM": 8_528,
        "BlocksLM": 17_840,
        "ResidualBlocksLM": 42_896,
        "TransformerLM": 43_344,
    },
    "large": {
        "BigramLM": 6_400,
        # 256*384 position + 80*384 token embeddings, 3*384*384 fused qkv, 384*80+80 LM head
        "SingleHeadAttentionLM": 602_192,
        "MultiHeadAttentionLM": 602_192,
        "BlocksLM": 3_701_072,
        "ResidualBlocksLM": 10_790_480,
        "TransformerLM": 10_800_464,
    },
}


@functools.lru_cache(maxsize=None)
def preset(scale: str):
    return OmegaConf.load(ROOT / "conf" / "scale" / f"{scale}.yaml")


def model_config(scale: str, vocab_size: int = VOCAB, impl: Attention = Attention.fast) -> ModelConfig:
    return ModelConfig.from_preset(preset(scale), vocab_size, impl)


def drake_vocab_size(path: str) -> int:
    return len(CharVocab.from_text(load_text(DataConfig(source=DataSource.csv, path=path))))


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny tensors: a second intra-op thread only adds contention on a shared 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ---------------------------------------------------------------------------------------------------------------
# Sizes


@pytest.mark.parametrize("impl", list(Attention), ids=lambda a: a.value)
@pytest.mark.parametrize("scale", ["default", "large"])
def test_parameter_counts_on_drake_vocabulary(drake_csv, scale, impl):
    vocab_size = drake_vocab_size(str(drake_csv))
    assert vocab_size == VOCAB
    counts = {}
    with torch.device("meta"):  # the real modules, without spending time on initialising 10M weights
        for name in NAMES:
            counts[name] = count_parameters(build_model(name, model_config(scale, vocab_size, impl)))
    assert counts == EXPECTED_PARAMS[scale]


# ---------------------------------------------------------------------------------------------------------------
# Forward and backward


def _forward_backward(name: str, cfg: ModelConfig, T: int):
    torch.manual_seed(0)
    model = build_model(name, cfg)
    model.train()
    idx = torch.randint(cfg.vocab_size, (2, T))
    targets = torch.randint(cfg.vocab_size, (2, T))
    logits, loss = model(idx, targets)
    assert logits.shape == (2, T, cfg.vocab_size)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    params = dict(model.named_parameters())
    if name == "BigramLM":
        assert list(params) == ["logits_table.weight"]
    for pname, p in params.items():
        assert p.grad is not None, f"{name}: {pname} got no gradient"
        assert torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, f"{name}: {pname} got an all-zero gradient"
    # logits without targets: no loss
    logits2, none = model.eval()(idx)
    assert none is None and logits2.shape == (2, T, cfg.vocab_size)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("scale", ["default", "large"])
def test_forward_backward_fast(name, scale):
    cfg = model_config(scale)
    _forward_backward(name, cfg, T=min(cfg.context_length, 12))


@pytest.mark.parametrize("impl", [Attention.sdpa, Attention.naive], ids=lambda a: a.value)
@pytest.mark.parametrize("name", ATTENTION_MODELS)
def test_forward_backward_other_attention(name, impl):
    cfg = model_config("default", impl=impl)
    _forward_backward(name, cfg, T=cfg.context_length)


def test_transformer_uses_final_layernorm():
    torch.manual_seed(0)
    model = build_model("TransformerLM", model_config("default")).eval()
    assert isinstance(model.final_norm, torch.nn.LayerNorm)
    idx = torch.randint(VOCAB, (2, 8))
    with torch.no_grad():
        before = model(idx)[0]
        model.final_norm.weight.mul_(torch.linspace(0.5, 2.0, model.final_norm.weight.numel()))
        after = model(idx)[0]
    assert not torch.allclose(before, after)


# ---------------------------------------------------------------------------------------------------------------
# fast == sdpa == naive


def to_naive(state: dict, naive_model: torch.nn.Module) -> dict:
    """The fused-qkv state dict rewritten for per-head query/key/value modules."""
    out = {}
    for key, value in state.items():
        if not key.endswith("qkv.weight"):
            out[key] = value
            continue
        prefix = key[: -len("qkv.weight")]
        heads = naive_model.get_submodule(prefix.rstrip(".")).heads
        C = value.shape[1]
        H = len(heads)
        D = C // H
        for h in range(H):
            for part, offset in (("query", 0), ("key", C), ("value", 2 * C)):
                out[f"{prefix}heads.{h}.{part}.weight"] = value[offset + h * D : offset + (h + 1) * D].clone()
    return out


@pytest.mark.parametrize("name", ATTENTION_MODELS)
def test_attention_implementations_agree(name):
    cfg = model_config("default")
    torch.manual_seed(1)
    fast = build_model(name, cfg).double().eval()
    sdpa = build_model(name, replace(cfg, attention=Attention.sdpa)).double().eval()
    naive = build_model(name, replace(cfg, attention=Attention.naive)).double().eval()
    sdpa.load_state_dict(fast.state_dict())
    naive.load_state_dict(to_naive(fast.state_dict(), naive))
    idx = torch.randint(VOCAB, (3, cfg.context_length))
    with torch.no_grad():
        y_fast, y_sdpa, y_naive = (m(idx)[0] for m in (fast, sdpa, naive))
        y_short = fast(idx[:, :5])[0], naive(idx[:, :5])[0]
    assert y_fast.dtype == torch.float64
    torch.testing.assert_close(y_sdpa, y_fast, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(y_naive, y_fast, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(y_short[1], y_short[0], rtol=1e-10, atol=1e-10)
    # A wrong head layout (keys and queries swapped) would not agree: the comparison has teeth.
    if name != "SingleHeadAttentionLM":
        state = to_naive(fast.state_dict(), naive)
        for key in [k for k in state if k.endswith("heads.0.query.weight")]:
            state[key], state[key.replace("query", "key")] = state[key.replace("query", "key")], state[key]
        naive.load_state_dict(state)
        with torch.no_grad():
            assert not torch.allclose(naive(idx)[0], y_fast)


# ---------------------------------------------------------------------------------------------------------------
# The CPU path for dropout on the attention weights


def reference_attention(q, k, v, p):
    """Plain autograd causal attention whose dropout mask is drawn like the fast path draws it."""
    BH, T, D = q.shape
    scores = (q @ k.transpose(1, 2)) * D**-0.5
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    weights = scores.masked_fill(~causal, float("-inf")).softmax(dim=-1)
    drop = torch.zeros(BH, T, T, dtype=torch.bool)
    for start in range(0, T, cpu_attention._QUERY_BLOCK):
        end = min(start + cpu_attention._QUERY_BLOCK, T)
        drop[:, start:end, :end] = cpu_attention.drop_mask(torch.empty(BH, end - start, end, dtype=q.dtype), p)
    return (weights.masked_fill(drop, 0.0) / (1.0 - p)) @ v


@pytest.mark.parametrize("T", [8, 200])
def test_cpu_dropout_attention_matches_reference(T):
    p = 0.3
    gen = torch.Generator().manual_seed(T)
    BH, D = 6, 16
    q, k, v, grad_y = (torch.randn(BH, T, D, dtype=torch.float64, generator=gen) for _ in range(4))
    inputs = [t.clone().requires_grad_() for t in (q, k, v)]
    ref_inputs = [t.clone().requires_grad_() for t in (q, k, v)]

    torch.manual_seed(123)
    y = CausalAttentionWithDropout.apply(*inputs, p)
    torch.manual_seed(123)
    y_ref = reference_attention(*ref_inputs, p)

    assert y.shape == (BH, T, D) and y.dtype == torch.float64
    torch.testing.assert_close(y, y_ref, rtol=1e-10, atol=1e-10)
    y.backward(grad_y)
    y_ref.backward(grad_y)
    for name, a, b in zip("qkv", inputs, ref_inputs):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-9, atol=1e-10, msg=f"grad of {name}")
    # Dropout did something: without it the output differs.
    with torch.no_grad():
        assert not torch.allclose(y, CausalAttentionWithDropout.apply(q, k, v, 0.0))


def test_cpu_dropout_attention_keeps_one_minus_p():
    """With q = k = 0 the weights are 1/(i+1) on the causal prefix; v = I reads each weight back."""
    p, BH, T = 0.3, 4, 256
    q = k = torch.zeros(BH, T, T, dtype=torch.float64)
    v = torch.eye(T, dtype=torch.float64).expand(BH, T, T).contiguous()
    torch.manual_seed(0)
    y = CausalAttentionWithDropout.apply(q, k, v, p)
    kept = y * (1 - p) * torch.arange(1, T + 1, dtype=torch.float64)[:, None]
    causal = torch.ones(T, T, dtype=torch.bool).tril().expand(BH, T, T)
    assert kept[~causal].abs().max() == 0  # nothing leaks from the future
    values = kept[causal]
    # every weight is either dropped (0) or kept and scaled by exactly 1/(1-p)
    assert torch.minimum(values.abs(), (values - 1).abs()).max() < 1e-9
    fraction = values.round().mean().item()
    assert abs(fraction - (1 - p)) < 0.01, fraction


def test_cpu_dropout_attention_gradcheck_without_dropout():
    gen = torch.Generator().manual_seed(0)
    T = cpu_attention._QUERY_BLOCK + 6  # two query blocks
    q, k, v = (torch.randn(2, T, 3, dtype=torch.float64, generator=gen, requires_grad=True) for _ in range(3))
    assert torch.autograd.gradcheck(lambda q, k, v: CausalAttentionWithDropout.apply(q, k, v, 0.0), (q, k, v))


def test_fast_module_takes_cpu_path_and_matches_reference():
    """CausalSelfAttention (fast, training, big enough) goes through the custom path with the same numbers."""
    B, H, C, T = 2, 4, 32, 512  # B*H*T*T = 2**21 >= _CUSTOM_ATTENTION_MIN
    assert B * H * T * T >= cpu_attention._CUSTOM_ATTENTION_MIN
    torch.manual_seed(0)
    layer = attention.CausalSelfAttention(C, H, dropout=0.2, projection=False, impl=Attention.fast).double().train()
    x = torch.randn(B, T, C, dtype=torch.float64)
    torch.manual_seed(5)
    y = layer(x)
    q, k, v = layer.qkv(x).view(B, T, 3, H, C // H).permute(2, 0, 3, 1, 4).reshape(3, B * H, T, C // H)
    torch.manual_seed(5)
    y_ref = reference_attention(q, k, v, 0.2).view(B, H, T, C // H).transpose(1, 2).reshape(B, T, C)
    torch.testing.assert_close(y, y_ref, rtol=1e-10, atol=1e-10)


# ---------------------------------------------------------------------------------------------------------------
# cpu_attention.fast_dropout


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_cheap_cpu_dropout_mask(p):
    x = torch.ones(2 * cpu_attention._CHEAP_MASK_MIN)
    assert x.numel() >= cpu_attention._CHEAP_MASK_MIN
    torch.manual_seed(0)
    y = cpu_attention.fast_dropout(x, p, training=True)
    dropped = y == 0
    assert abs(dropped.float().mean().item() - p) <= 0.005
    torch.testing.assert_close(y[~dropped], torch.full_like(y[~dropped], 1.0 / (1.0 - p)))
    # a second call draws a different mask
    assert not torch.equal(cpu_attention.fast_dropout(x, p, training=True) == 0, dropped)


def test_dropout_is_identity_when_not_training():
    x = torch.randn(cpu_attention._CHEAP_MASK_MIN)
    assert torch.equal(cpu_attention.fast_dropout(x, 0.5, training=False), x)
    assert torch.equal(cpu_attention.fast_dropout(x, 0.0, training=True), x)


# ---------------------------------------------------------------------------------------------------------------
# KV cache


@pytest.mark.parametrize("name", ["MultiHeadAttentionLM", "TransformerLM"])
def test_kv_cache_matches_full_forward(name):
    cfg = model_config("default")
    torch.manual_seed(2)
    model = build_model(name, cfg).eval()
    idx = torch.randint(VOCAB, (2, cfg.context_length))
    num_layers = sum(isinstance(m, attention.CausalSelfAttention) for m in model.modules())
    assert num_layers == (cfg.num_layers if name == "TransformerLM" else 1)
    with torch.no_grad():
        full = model(idx)[0]
        cache = KVCache(num_layers)
        steps = [model(idx[:, t : t + 1], cache=cache)[0][:, -1] for t in range(cfg.context_length)]
    assert cache.length == cfg.context_length
    torch.testing.assert_close(steps[-1], full[:, -1], rtol=0, atol=1e-5)
    for t, logits in enumerate(steps):
        torch.testing.assert_close(logits, full[:, t], rtol=0, atol=1e-5)
    # A prompt fed whole, then one token at a time, gives the same logits too.
    with torch.no_grad():
        cache = KVCache(num_layers)
        model(idx[:, :5], cache=cache)
        last = [model(idx[:, t : t + 1], cache=cache)[0][:, -1] for t in range(5, cfg.context_length)]
    torch.testing.assert_close(last[-1], full[:, -1], rtol=0, atol=1e-5)
