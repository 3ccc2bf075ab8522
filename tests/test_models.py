"""The models: every switch, the presets' sizes and recorded losses, both attention implementations, the CPU
dropout kernels, the KV cache, BitLinear and replicas."""

import json
import math
from dataclasses import replace

import pytest
import torch

from drakegpt.data import CharVocab, load_text
from drakegpt.models import cpu_kernels
from drakegpt.models.attention import CausalSelfAttention, Span
from drakegpt.models.bitnet import BitLinear, load_packed, pack_codes, packed_weights, quantize_weight, unpack_codes
from drakegpt.models.config import Implementation, LinearKind, ModelConfig
from drakegpt.models.cpu_kernels import CausalAttentionWithDropout
from drakegpt.models.language_model import LanguageModel, count_parameters
from drakegpt.sampling import sample
from drakegpt.schema import ladder, model_config
from helpers.runs import ROOT, train_in_process, typed_config

VOCAB = 80  # distinct characters of Drake.csv (checked against the file below)
SEED_MODELS = ["BigramLM", "SingleHeadAttentionLM", "MultiHeadAttentionLM", "BlocksLM", "ResidualBlocksLM",
               "TransformerLM"]
EXPECTED_PARAMS = {
    "default": dict(zip(SEED_MODELS, (6_400, 8_528, 8_528, 17_840, 42_896, 43_344))),
    # 256*384 position + 80*384 token embeddings, 3*384*384 fused qkv, 384*80+80 LM head for the one-layer models
    "large": dict(zip(SEED_MODELS, (6_400, 602_192, 602_192, 3_701_072, 10_790_480, 10_800_464))),
}
REFERENCE = json.loads((ROOT / "tests" / "data" / "reference_losses.json").read_text())
# One switch changed from TransformerLM (or, for attention=false, from the preset that has nothing else on).
SWITCHES = [
    ["model.heads=one"],
    ["model.depth=one"],
    ["model.feed_forward=none"],
    ["model.feed_forward=linear"],
    ["model.activation=gelu"],
    ["model.activation=relu2"],
    ["model.feed_forward=glu", "model.activation=silu"],
    ["model.kv_heads=1"],
    ["model.kv_heads=2"],
    ["model.qk_norm=true"],
    ["model.qk_norm=true", "model.positions=rotary", "model.kv_heads=2"],
    ["model.residual=false"],
    ["model.projection=false"],
    ["model.norm=none"],
    ["model.norm=rmsnorm"],
    ["model.norm_position=post"],
    ["model.final_norm=none"],
    ["model.final_norm=rmsnorm"],
    ["model.dropout=false"],
    ["model.positions=rotary"],
    ["model.tie_embeddings=true"],
    ["model.linear=bitlinear"],
    ["model.linear=binary"],
    ["model.linear=binary", "model.feed_forward=glu", "model.kv_heads=2"],
    ["model.implementation=naive"],
    ["model.cpu_kernels=false"],
    ["model=BigramLM"],
]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny tensors: a second intra-op thread only adds contention on a shared 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def config_of(*overrides: str, vocab_size: int = VOCAB) -> ModelConfig:
    cfg, _ = typed_config(*overrides)
    return model_config(cfg.model, cfg.scale, vocab_size)


def build(*overrides: str, seed: int = 0, replicas: int = 1, vocab_size: int = VOCAB) -> LanguageModel:
    torch.manual_seed(seed)
    return LanguageModel(config_of(*overrides, vocab_size=vocab_size), replicas)


def step(model, optimizer, x, y) -> torch.Tensor:
    """One plain training iteration: each replica's loss."""
    _, loss = model(x, y)
    optimizer.zero_grad()
    loss.sum().backward()
    optimizer.step()
    return loss.detach()


# ------------------------------------------------------------------------------------------- sizes and presets


@pytest.mark.parametrize("scale", ["default", "large"])
@pytest.mark.parametrize("implementation", ["sdpa", "naive"])
def test_parameter_counts_of_the_seed_presets(scale, implementation):
    for name in SEED_MODELS:
        model = build(f"model={name}", f"scale={scale}", f"model.implementation={implementation}")
        assert count_parameters(model) == EXPECTED_PARAMS[scale][name], name


def test_drake_has_the_vocabulary_the_counts_assume(drake_csv):
    cfg, _ = typed_config("data=csv", f"data.path={drake_csv}")
    assert len(CharVocab.from_text(load_text(cfg.data))) == VOCAB


def test_bitnet_is_transformer_minus_the_biases_of_its_quantised_layers():
    # BitLinear has no bias: TransformerLM's projection (C) and feed-forward (4C + C) biases go, per layer.
    for scale, C, L in (("default", 32, 3), ("large", 384, 6)):
        bitnet = count_parameters(build("model=BitNetLM", f"scale={scale}"))
        assert bitnet == EXPECTED_PARAMS[scale]["TransformerLM"] - L * 6 * C


@pytest.mark.parametrize("case", [c for c in REFERENCE["cases"] if "large" not in c])
def test_presets_give_the_losses_recorded_before_the_switches(case, tmp_path):
    check_reference(case, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("case", [c for c in REFERENCE["cases"] if "large" in c])
def test_large_presets_give_the_losses_recorded_before_the_switches(case, tmp_path):
    check_reference(case, tmp_path)


def check_reference(case: str, tmp_path):
    """Same parameters in the same creation order as the original's classes: a fixed seed gives the same losses."""
    expected = REFERENCE["cases"][case]
    # Recorded with the original's evaluation: train.eval=random keeps it available for exactly this.
    overrides = [*REFERENCE["common"], "train.eval=random", *expected["overrides"], "logger=none",
                 "train.sample_length=0"]
    summary = train_in_process(tmp_path, *overrides)[0]
    assert summary["params"] == expected["params"]
    for key in ("final_train_loss", "final_val_loss", "best_val_loss"):
        assert summary[key] == pytest.approx(expected[key], abs=1e-5), key
    history = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)["progress"]["history"]
    got = [(r["step"], r["train_loss"], r["val_loss"]) for r in history]
    assert [r[0] for r in got] == [r[0] for r in expected["rows"]]
    for row, want in zip(got, expected["rows"]):
        assert row[1:] == pytest.approx(want[1:], abs=1e-5)  # the recorded rows have 6 significant digits


def test_transformer_applies_its_final_layernorm():
    model = build("model=TransformerLM").eval()
    ids = torch.randint(VOCAB, (1, 2, 8))
    with torch.no_grad():
        before = model(ids)[0]
        model.final_norm.weight.mul_(torch.linspace(0.5, 2.0, model.final_norm.weight.numel()))
        assert not torch.allclose(before, model(ids)[0])


# ---------------------------------------------------------------------------------------------- every switch


@pytest.mark.parametrize("overrides", SWITCHES + [[f"model={m}"] for m in ladder()], ids=" ".join)
def test_each_switch_builds_trains_and_samples_the_same_with_and_without_the_cache(overrides):
    model = build(*overrides, vocab_size=12)
    c = model.config
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    ids = torch.randint(12, (1, 4, c.context_length + 1), generator=torch.Generator().manual_seed(0))
    losses = [step(model, optimizer, ids[..., :-1], ids[..., 1:]) for _ in range(4)]
    assert all(torch.isfinite(loss).all() for loss in losses)
    assert losses[-1].item() < losses[0].item()  # it learns something
    model.eval()
    cache = model.new_cache(4)
    if c.implementation is Implementation.naive or not c.attention:
        assert cache is None
    else:
        with torch.no_grad():
            full = model(ids[..., :-1])[0][0]
            stepwise = torch.stack([model(ids[..., t:t + 1], cache=cache)[0][0, :, 0]
                                    for t in range(c.context_length)], dim=1)
        atol = 5e-3 if c.linear is not LinearKind.dense else 1e-5  # 8-bit rounding boundaries: see test_sampling
        torch.testing.assert_close(stepwise, full, rtol=0, atol=atol)
    texts = [sample(model, ids[0, :1, :3], 30, kv_cache=kv, generator=torch.Generator().manual_seed(1))
             for kv in (True, False)]
    assert torch.equal(texts[0], texts[1])


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["model=BigramLM", "model.positions=rotary"], "model.positions=rotary needs attention"),
        (["model=BigramLM", "model.norm=layernorm"], "model.norm=layernorm needs attention"),
        (["model=BigramLM", "model.tie_embeddings=true"], "model.tie_embeddings=true needs attention"),
        (["model=BigramLM", "model.linear=bitlinear"], "model.linear=bitlinear needs attention"),
        (["model=MultiHeadAttentionLM", "model.activation=gelu"], "has no feed-forward"),
        (["model=BlocksLM", "model.norm_position=post"], "model.norm_position=post needs a norm"),
        (["model.implementation=naive", "model.positions=rotary"], "cannot be expressed by model.implementation=naive"),
        (["model.implementation=naive", "model.linear=bitlinear"], "cannot be expressed by model.implementation=naive"),
        (["model.implementation=naive", "model.kv_heads=2"], "cannot be expressed by model.implementation=naive"),
        (["model.implementation=naive", "model.qk_norm=true"], "cannot be expressed by model.implementation=naive"),
        (["model.kv_heads=3"], "model.kv_heads=3 must divide the 4 query heads"),
        (["model.kv_heads=0"], "model.kv_heads=0 must divide"),
        (["model.heads=one", "model.kv_heads=2"], "must divide the 1 query heads"),
        (["model=BigramLM", "model.qk_norm=true"], "model.qk_norm=true needs attention"),
        (["model=BigramLM", "model.kv_heads=1"], "model.kv_heads=1 needs attention"),
        (["model.feed_forward_ratio=0"], "model.feed_forward_ratio=0.0 must be above 0"),
        (["model.implementation=naive", "train.replicas=2"], "needs model.implementation=sdpa"),
        (["model.positions=rotary", "scale.embedding_dim=36", "scale.num_heads=4"], "needs an even head size"),
    ],
)
def test_combinations_that_make_no_sense_are_refused_in_one_line(overrides, message):
    from drakegpt.schema import validate
    from drakegpt.errors import UsageError

    cfg, resolved = typed_config(*overrides)
    with pytest.raises(UsageError) as refused:
        validate(cfg, resolved)
    assert message in str(refused.value) and "\n" not in str(refused.value)


# ------------------------------------------------------------------------------------- sdpa == naive


def to_naive(state: dict, naive: LanguageModel) -> dict:
    """The fused-qkv state dict rewritten for per-head query/key/value modules."""
    out = {}
    for key, value in state.items():
        if not key.endswith("qkv.weight"):
            out[key] = value
            continue
        prefix = key[: -len("qkv.weight")]
        heads = naive.get_submodule(prefix.rstrip(".")).heads
        C, H = value.shape[-1], len(heads)
        D = C // H
        for h in range(H):
            for part, offset in (("query", 0), ("key", C), ("value", 2 * C)):
                out[f"{prefix}heads.{h}.{part}.weight"] = value[:, offset + h * D: offset + (h + 1) * D].clone()
    return out


@pytest.mark.parametrize("name", SEED_MODELS[1:])
def test_attention_implementations_agree(name):
    sdpa = build(f"model={name}").double().eval()
    naive = build(f"model={name}", "model.implementation=naive").double().eval()
    naive.load_state_dict(to_naive(sdpa.state_dict(), naive))
    ids = torch.randint(VOCAB, (1, 3, 8))
    with torch.no_grad():
        torch.testing.assert_close(naive(ids)[0], sdpa(ids)[0], rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(naive(ids[..., :5])[0], sdpa(ids[..., :5])[0], rtol=1e-10, atol=1e-10)
    if name != "SingleHeadAttentionLM":  # a wrong head layout would not agree: the comparison has teeth
        state = to_naive(sdpa.state_dict(), naive)
        for key in [k for k in state if k.endswith("heads.0.query.weight")]:
            state[key], state[key.replace("query", "key")] = state[key.replace("query", "key")], state[key]
        naive.load_state_dict(state)
        with torch.no_grad():
            assert not torch.allclose(naive(ids)[0], sdpa(ids)[0])


# -------------------------------------------------------------------- the CPU kernels for dropout


def reference_attention(q, k, v, p):
    """Plain autograd causal attention whose dropout mask is drawn like the CPU kernel draws it."""
    BH, T, D = q.shape
    scores = (q @ k.transpose(1, 2)) * D**-0.5
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    weights = scores.masked_fill(~causal, float("-inf")).softmax(dim=-1)
    drop = torch.zeros(BH, T, T, dtype=torch.bool)
    for start in range(0, T, cpu_kernels._QUERY_BLOCK):
        end = min(start + cpu_kernels._QUERY_BLOCK, T)
        drop[:, start:end, :end] = cpu_kernels.drop_mask(torch.empty(BH, end - start, end, dtype=q.dtype), p)
    return (weights.masked_fill(drop, 0.0) / (1.0 - p)) @ v


@pytest.mark.parametrize("T", [8, 200])
def test_cpu_dropout_attention_matches_reference(T):
    p = 0.3
    gen = torch.Generator().manual_seed(T)
    q, k, v, grad_y = (torch.randn(6, T, 16, dtype=torch.float64, generator=gen) for _ in range(4))
    inputs = [t.clone().requires_grad_() for t in (q, k, v)]
    ref_inputs = [t.clone().requires_grad_() for t in (q, k, v)]
    torch.manual_seed(123)
    y = CausalAttentionWithDropout.apply(*inputs, p)
    torch.manual_seed(123)
    y_ref = reference_attention(*ref_inputs, p)
    torch.testing.assert_close(y, y_ref, rtol=1e-10, atol=1e-10)
    y.backward(grad_y)
    y_ref.backward(grad_y)
    for name, a, b in zip("qkv", inputs, ref_inputs):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-9, atol=1e-10, msg=f"grad of {name}")
    with torch.no_grad():  # dropout did something
        assert not torch.allclose(y, CausalAttentionWithDropout.apply(q, k, v, 0.0))


@pytest.mark.parametrize("p", [0.0, 0.3])
def test_small_context_attention_matches_reference(p):
    gen = torch.Generator().manual_seed(1)
    q, k, v, grad_y = (torch.randn(12, 8, 4, dtype=torch.float64, generator=gen) for _ in range(4))
    inputs = [t.clone().requires_grad_() for t in (q, k, v)]
    ref_inputs = [t.clone().requires_grad_() for t in (q, k, v)]
    torch.manual_seed(3)
    y = cpu_kernels.SmallCausalAttention.apply(*inputs, p)
    torch.manual_seed(3)
    y_ref = reference_attention(*ref_inputs, p)  # one query block: the same mask draws
    torch.testing.assert_close(y, y_ref, rtol=1e-10, atol=1e-10)
    y.backward(grad_y)
    y_ref.backward(grad_y)
    for name, a, b in zip("qkv", inputs, ref_inputs):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-9, atol=1e-10, msg=f"grad of {name}")
    if p == 0:
        torch.testing.assert_close(y, torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True))
        assert torch.autograd.gradcheck(lambda a, b, c: cpu_kernels.SmallCausalAttention.apply(a, b, c, 0.0),
                                        tuple(t.clone().requires_grad_() for t in (q, k, v)))


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
    assert torch.minimum(values.abs(), (values - 1).abs()).max() < 1e-9  # dropped, or kept and scaled by 1/(1-p)
    assert abs(values.round().mean().item() - (1 - p)) < 0.01


def test_cpu_dropout_attention_gradcheck_without_dropout():
    gen = torch.Generator().manual_seed(0)
    T = cpu_kernels._QUERY_BLOCK + 6  # two query blocks
    q, k, v = (torch.randn(2, T, 3, dtype=torch.float64, generator=gen, requires_grad=True) for _ in range(3))
    assert torch.autograd.gradcheck(lambda q, k, v: CausalAttentionWithDropout.apply(q, k, v, 0.0), (q, k, v))


def test_attention_layer_takes_the_cpu_path_and_matches_reference():
    B, H, C, T = 2, 4, 32, 512  # B*H*T*T = 2**21 >= the kernel's threshold
    assert B * H * T * T >= cpu_kernels._CUSTOM_ATTENTION_MIN
    config = replace(config_of(), embedding_dim=C, num_heads=H, kv_heads=H, context_length=T, dropout_rate=0.2,
                     projection=False)
    torch.manual_seed(0)
    layer = CausalSelfAttention(config, replicas=1, layer=0).double().train()
    x = torch.randn(1, B, T, C, dtype=torch.float64)
    torch.manual_seed(5)
    y = layer(x, Span(torch.arange(T)))
    q, k, v = layer.qkv(x).view(B, T, 3, H, C // H).permute(2, 0, 3, 1, 4).reshape(3, B * H, T, C // H)
    torch.manual_seed(5)
    y_ref = reference_attention(q, k, v, 0.2).view(B, H, T, C // H).transpose(1, 2).reshape(1, B, T, C)
    torch.testing.assert_close(y, y_ref, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("shape", [(2 * cpu_kernels._CHEAP_MASK_MIN,), (4, 32, 8, 32)], ids=["large", "replicas"])
@pytest.mark.parametrize("p", [0.1, 0.5])
def test_cheap_cpu_dropout_mask(p, shape):
    x = torch.ones(shape)
    torch.manual_seed(0)
    y = cpu_kernels.cheap_dropout(x, p, training=True)
    dropped = y == 0
    assert abs(dropped.float().mean().item() - p) <= 0.005
    torch.testing.assert_close(y[~dropped], torch.full_like(y[~dropped], 1.0 / (1.0 - p)))
    assert not torch.equal(cpu_kernels.cheap_dropout(x, p, training=True) == 0, dropped)  # a new mask each call


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_keep_scale_is_drop_mask_as_a_multiplier(dtype):
    x = torch.empty(4, 7, 9, dtype=dtype)  # 252 elements: not a whole number of 64-bit draws of four lanes
    torch.manual_seed(4)
    drop = cpu_kernels.drop_mask(x, 0.3)
    torch.manual_seed(4)
    keep = cpu_kernels.keep_scale(x, 0.3)
    assert keep.dtype == dtype and torch.equal(keep == 0, drop)
    assert torch.equal(keep[~drop], torch.full_like(keep[~drop], 1 / 0.7))


def test_dropout_is_identity_when_not_training():
    x = torch.randn(cpu_kernels._CHEAP_MASK_MIN)
    assert torch.equal(cpu_kernels.cheap_dropout(x, 0.5, training=False), x)
    assert torch.equal(cpu_kernels.cheap_dropout(x, 0.0, training=True), x)


# ----------------------------------------------------------------------------------------------- KV cache


@pytest.mark.parametrize("name", ["MultiHeadAttentionLM", "TransformerLM"])
def test_kv_cache_prompt_then_one_at_a_time_matches_the_full_forward(name):
    model = build(f"model={name}").eval()
    T = model.config.context_length
    ids = torch.randint(VOCAB, (1, 2, T))
    with torch.no_grad():
        full = model(ids)[0]
        cache = model.new_cache(2)
        model(ids[..., :5], cache=cache)
        last = [model(ids[..., t:t + 1], cache=cache)[0][:, :, -1] for t in range(5, T)]
    assert int(cache.length) == T
    assert cache.keys.shape[3] == T  # preallocated for the whole context: the shapes never change
    for t, logits in zip(range(5, T), last):
        torch.testing.assert_close(logits, full[:, :, t], rtol=0, atol=1e-5)


# -------------------------------------------------------------------------------------------------- BitNet


def quantized_by_hand(weight: torch.Tensor, kind: LinearKind) -> torch.Tensor:
    """The papers' weight quantisers, written out for one matrix (an oracle apart from bitnet.py)."""
    scale = weight.abs().mean()
    if kind is LinearKind.binary:  # BitNet: sign(W - mean W), -1 where W - mean W <= 0, times mean |W|
        return torch.where(weight - weight.mean() > 0, 1.0, -1.0) * scale
    return (weight / scale).round().clamp(-1, 1) * scale  # b1.58: round(W / mean |W|) in {-1, 0, 1}, times it


@pytest.mark.parametrize("kind", [LinearKind.bitlinear, LinearKind.binary])
def test_bitlinear_quantises_weights_as_the_papers_do_with_8_bit_activations(kind):
    torch.manual_seed(0)
    layer = BitLinear(16, 8, kind)
    codes, _ = quantize_weight(layer.weight, layer.splits, kind)
    levels = {-1.0, 0.0, 1.0} if kind is LinearKind.bitlinear else {-1.0, 1.0}
    assert set(codes.unique().tolist()) == levels
    x = torch.randn(1, 3, 16)
    y = layer.eval()(x)
    normed = torch.nn.functional.rms_norm(x, (16,))
    step = normed.abs().amax(-1, keepdim=True) / 127
    x_q = (normed / step).round() * step  # 8-bit levels of each token
    torch.testing.assert_close(y, x_q @ quantized_by_hand(layer.weight[0].detach(), kind).T, rtol=1e-5, atol=1e-5)
    layer.train()
    layer(x).sum().backward()  # straight-through: the latent weights get a gradient
    assert layer.weight.grad is not None and layer.weight.grad.abs().sum() > 0


def test_q_k_and_v_keep_a_scale_each_as_bitnets_separate_projections():
    model = build("model=BitNetLM")
    qkv = model.blocks[0].attention.qkv
    C = model.config.embedding_dim
    with torch.no_grad():
        qkv.weight[:, C:2 * C] *= 10  # the keys' weights ten times larger: a shared scale would zero the rest
    w = qkv.weight[0].detach()
    expected = torch.cat([quantized_by_hand(part, LinearKind.bitlinear) for part in w.split(C, dim=0)])
    torch.testing.assert_close(qkv.quantized_weight()[0], expected)
    assert (qkv.quantized_weight()[0, :C] != 0).float().mean() > 0.5  # the queries were not rounded away


@pytest.mark.parametrize("bits, values", [(2, (-1, 0, 1)), (1, (-1, 1))])
def test_packed_codes_round_trip(bits, values):
    codes = torch.tensor(values)[torch.randint(len(values), (5, 7))].float()
    packed = pack_codes(codes, bits)
    assert packed.dtype == torch.uint8 and packed.numel() == math.ceil(35 * bits / 8)  # 8 // bits codes a byte
    assert torch.equal(unpack_codes(packed, codes.numel(), bits).view(5, 7), codes)


@pytest.mark.parametrize("overrides", [["model=BitNetLM"], ["model=BitNetLM", "model.linear=binary",
                                                            "model.feed_forward=glu", "model.kv_heads=2"]])
def test_a_packed_model_computes_the_latent_models_logits_exactly(overrides):
    latent = build(*overrides).eval()
    packed = build(*overrides, seed=1).eval()
    packed.load_replica_states([{k: v for k, v in latent.replica_state(0).items() if not k.endswith("qkv.weight")
                                 and "feed_forward" not in k and "proj" not in k}], strict=False)
    load_packed(packed, packed_weights(latent))
    ids = torch.randint(VOCAB, (1, 2, 8))
    with torch.no_grad():
        assert torch.equal(packed(ids)[0], latent(ids)[0])


def test_packed_weights_are_at_most_an_eighth_of_the_fp32_ones():
    model = build("model=BitNetLM", "scale=large")
    packed = packed_weights(model)
    bitlinears = [m for m in model.modules() if isinstance(m, BitLinear)]
    assert len(packed) == len(bitlinears) == 6 * 4  # qkv, projection, up, down in each of 6 layers
    fp32 = sum(m.weight.numel() * 4 for m in bitlinears)
    stored = sum(e["codes"].numel() + e["divisors"].numel() * 4 + e["shape"].numel() * 8 for e in packed.values())
    assert stored * 8 <= fp32


# ------------------------------------------------------------------------------------------------ replicas


@pytest.mark.parametrize("name", ["model=BlocksLM", "model=TransformerLM", "model.kv_heads=2", "model.qk_norm=true",
                                  "model.feed_forward=glu", "model.linear=binary", "model.activation=relu2",
                                  "model.tie_embeddings=true"])
def test_replicas_compute_what_their_single_runs_compute(name):
    seeds = [3, 4, 5]
    singles = [build(name, "model.dropout=false", seed=s) for s in seeds]
    group = build(name, "model.dropout=false", replicas=3)
    group.load_replica_states([m.replica_state(0) for m in singles])
    ids = torch.randint(VOCAB, (3, 4, 9), generator=torch.Generator().manual_seed(0))
    single_losses = [m(ids[r:r + 1, :, :-1], ids[r:r + 1, :, 1:])[1] for r, m in enumerate(singles)]
    group_losses = group(ids[..., :-1], ids[..., 1:])[1]
    torch.testing.assert_close(group_losses, torch.cat(single_losses), rtol=1e-6, atol=1e-6)
    torch.cat(single_losses).sum().backward()
    group_losses.sum().backward()
    for r, single in enumerate(singles):
        grads = {n: p.grad for n, p in single.named_parameters()}
        for n, p in group.named_parameters():
            torch.testing.assert_close(p.grad[r], grads[n][0], rtol=1e-5, atol=1e-6, msg=n)
    assert count_parameters(group) == count_parameters(singles[0])


def test_replica_runs_match_single_runs_without_dropout(tmp_path):
    common = ["model=BlocksLM", "train.iters=30", "train.eval_interval=10", "train.eval_iters=2", "logger=none",
              "train.precision=fp32", "train.sample_length=0"]
    group = train_in_process(tmp_path / "group", *common, "seed=7", "train.replicas=2")
    for seed, replica in zip((7, 8), group):
        single = train_in_process(tmp_path / f"single{seed}", *common, f"seed={seed}")[0]
        assert replica["seed"] == seed
        assert replica["final_val_loss"] == pytest.approx(single["final_val_loss"], abs=1e-4)
        assert replica["params"] == single["params"]
    assert (tmp_path / "group" / "run" / "seed=8" / "checkpoints" / "last.pt").is_file()


@pytest.mark.slow
def test_bitnet_trains_at_the_large_preset(tmp_path):
    """A few iterations at the large preset on a CPU (its real training needs a GPU), with a smaller batch."""
    summary = train_in_process(tmp_path, "model=BitNetLM", "scale=large", "scale.batch_size=2", "train.iters=3",
                               "train.eval_interval=3", "train.eval_iters=1", "logger=none", "train.sample_length=20",
                               "train.threads=1")[0]
    transformer = count_parameters(build("model=TransformerLM", "scale=large", vocab_size=summary["vocab_size"]))
    assert summary["status"] == "ok" and summary["params"] == transformer - 6 * 6 * 384
    history = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)["progress"]["history"]
    assert summary["final_val_loss"] < history[0]["val_loss"] and len(summary["sample"]) == 20 + 1


# ---------------------------------------------------------------------------------------- the new ideas


def test_tied_embeddings_start_near_the_uniform_loss():
    """Tied to the LM head's scale, the untrained model predicts almost uniformly (N(0, 1) rows started near 21)."""
    ids = torch.randint(VOCAB, (1, 16, 9), generator=torch.Generator().manual_seed(0))
    for seed in range(3):
        model = build("model=TransformerLM", "model.tie_embeddings=true", seed=seed).eval()
        with torch.no_grad():
            loss = model(ids[..., :-1], ids[..., 1:])[1].item()
        assert abs(loss - math.log(VOCAB)) < 0.5, loss
    assert model.lm_head.weight is model.token_embedding.weight


def test_grouped_query_attention_shares_key_and_value_heads():
    full, grouped, single = (build(f"model.kv_heads={kv}") for kv in (4, 2, 1))
    C, D, L = 32, 8, 3
    assert count_parameters(full) - count_parameters(grouped) == L * 2 * 2 * D * C  # two fewer k and v heads
    assert count_parameters(full) - count_parameters(single) == L * 2 * 3 * D * C
    assert full.new_cache(2).keys.shape[2] == 4 and single.new_cache(2).keys.shape[2] == 1  # the cache shrinks
    # Keys and values of kv head 0 copied to every head: MHA then computes what MQA computes.
    state = single.state_dict()
    expanded = dict(state)
    for key, w in state.items():
        if key.endswith("qkv.weight"):
            q, k, v = w.split([C, D, D], dim=1)
            expanded[key] = torch.cat([q, k.repeat(1, 4, 1), v.repeat(1, 4, 1)], dim=1)
    full.load_state_dict(expanded)
    ids = torch.randint(VOCAB, (1, 2, 8))
    with torch.no_grad():
        torch.testing.assert_close(full.eval()(ids)[0], single.eval()(ids)[0])


def test_qk_norm_normalises_each_heads_queries_and_keys():
    plain, normed = build(), build("model.qk_norm=true")
    assert count_parameters(normed) - count_parameters(plain) == 3 * 2 * 8  # a scale per head dimension, q and k
    normed.load_state_dict(plain.state_dict(), strict=False)
    ids = torch.randint(VOCAB, (1, 2, 8))
    with torch.no_grad():
        assert not torch.allclose(normed.eval()(ids)[0], plain.eval()(ids)[0])
        attention = normed.blocks[0].attention
        q = torch.randn(1, 2, 4, 8, 8) * 5
        torch.testing.assert_close(attention.q_norm(q).pow(2).mean(-1), torch.ones(1, 2, 4, 8), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("activation, expected", [("relu2", lambda x: torch.relu(x) ** 2),
                                                  ("silu", torch.nn.functional.silu)])
def test_feed_forward_activations(activation, expected):
    from drakegpt.models.blocks import ACTIVATIONS
    from drakegpt.models.config import Activation

    x = torch.linspace(-3, 3, 13)
    torch.testing.assert_close(ACTIVATIONS[Activation(activation)](x), expected(x))


def test_swiglu_is_a_gated_feed_forward_with_about_the_mlps_parameters():
    mlp, glu = build(), build("model.feed_forward=glu", "model.activation=silu")
    assert abs(count_parameters(glu) - count_parameters(mlp)) / count_parameters(mlp) < 0.03
    net = glu.blocks[0].feed_forward.net
    x = torch.randn(1, 2, 3, 32)
    gate, up = (x @ w.T + b for w, b in zip(net.gate_up.weight[0].chunk(2), net.gate_up.bias[0].chunk(2)))
    expected = (torch.nn.functional.silu(gate) * up) @ net.down.weight[0].T + net.down.bias[0]
    torch.testing.assert_close(net(x), expected)
