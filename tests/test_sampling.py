"""drakegpt/sampling.py: moving windows, the KV cache against recomputation, temperature, top-k and top-p."""


import pytest
import torch

from drakegpt.checkpoints import load_model
from drakegpt.models.language_model import LanguageModel
from drakegpt.sampling import Sampler, filter_logits, sample, sample_text, window_start
from test_models import config_of


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_window_start_keeps_three_quarters_of_the_context():
    for ctx in (1, 2, 8, 12, 256):
        stride = max(1, ctx // 4)
        for length in range(1, 4 * ctx + 10):
            start = window_start(length, ctx)
            if length <= ctx:
                assert start == 0
            else:
                assert start % stride == 0 and ctx - stride < length - start <= ctx, (ctx, length, start)


def _models(trained):
    model, vocab, _ = load_model(trained.published, torch.device("cpu"))
    yield "trained TransformerLM", model, len(vocab)
    for name in ("TransformerLM", "MultiHeadAttentionLM", "BitNetLM"):
        torch.manual_seed(0)
        config = config_of(f"model={name}", "scale.context_length=12", "scale.num_layers=2", vocab_size=29)
        yield f"random {name}", LanguageModel(config).eval(), 29
    torch.manual_seed(0)
    yield "rotary", LanguageModel(config_of("model.positions=rotary", "scale.context_length=12", vocab_size=29)), 29
    torch.manual_seed(0)
    yield "grouped-query", LanguageModel(config_of("model.kv_heads=1", "scale.context_length=12", vocab_size=29)), 29


def test_cached_and_uncached_logits_agree_past_the_window(trained):
    for label, model, vocab_size in _models(trained):
        model.eval()
        ctx = model.config.context_length
        cached, plain = Sampler(model, ctx, 2, kv_cache=True), Sampler(model, ctx, 2, kv_cache=False)
        assert cached.cache is not None and plain.cache is None
        gen = torch.Generator().manual_seed(0)
        seq = torch.randint(vocab_size, (2, 3), generator=gen)
        # BitLinear rounds activations to 8 bits: a float difference of 1e-7 between the two attention
        # computations can land on a rounding boundary and move a logit by ~1e-3 (measured: 2 steps in 240).
        atol = 5e-3 if "BitNet" in label else 1e-5
        for step in range(3 * ctx):
            a, b = cached.next_logits(seq), plain.next_logits(seq)
            torch.testing.assert_close(a, b, rtol=0, atol=atol, msg=f"{label}, step {step}")
            seq = torch.cat([seq, torch.multinomial(a.softmax(-1), 1, generator=gen)], dim=1)
        assert cached.start > 0  # the window did move


def test_cached_and_uncached_text_agree(trained):
    for label, model, _ in _models(trained):
        ctx = model.config.context_length
        prompt = torch.tensor([[0, 1, 2]])
        runs = [sample(model, prompt, 3 * ctx + 5, num_samples=3, kv_cache=kv,
                       generator=torch.Generator().manual_seed(11)) for kv in (True, False)]
        assert runs[0].shape == (3, 3 + 3 * ctx + 5) and torch.equal(runs[0][:, :3], prompt.repeat(3, 1))
        assert torch.equal(runs[0], runs[1]), label


@pytest.mark.slow
def test_the_compiled_sampling_step_gives_the_same_text(trained):
    """generate.compile (CUDA graphs on a GPU) checked on the CPU: torch.compile of the static-cache step."""
    model, _, _ = load_model(trained.published, torch.device("cpu"))
    prompt = torch.tensor([[0, 1, 2]])
    runs = [sample(model, prompt, 40, generator=torch.Generator().manual_seed(3), compile=c) for c in (False, True)]
    assert torch.equal(runs[0], runs[1])


def test_greedy_top_k_one_and_any_tiny_temperature_agree(trained):
    for label, model, _ in _models(trained):
        ctx = model.config.context_length
        prompt, n = torch.tensor([[3]]), 2 * ctx + 3
        greedy = sample(model, prompt, n, temperature=0)
        assert torch.equal(greedy, sample(model, prompt, n, temperature=0, kv_cache=False))
        for temperature, top_k in ((1.0, 1), (1e-30, None), (1e-300, None), (5e-324, None)):
            other = sample(model, prompt, n, temperature=temperature, top_k=top_k,
                           generator=torch.Generator().manual_seed(1))
            assert torch.equal(other, greedy), (label, temperature)


def test_a_huge_temperature_samples_every_character_evenly(trained):
    model, vocab, _ = load_model(trained.published, torch.device("cpu"))
    ids = sample(model, torch.tensor([[0]]), 1500, temperature=1e30, kv_cache=False,
                 generator=torch.Generator().manual_seed(0))
    counts = torch.bincount(ids[0, 1:], minlength=len(vocab)).float()
    assert counts.min() > 0.3 * counts.mean()  # flat: every character turns up, nothing dominates, nothing is NaN


PROBS = torch.tensor([0.15, 0.5, 0.05, 0.3])  # sorted: 0.5 (1), 0.3 (3), 0.15 (0), 0.05 (2)


def _kept(logits: torch.Tensor) -> set:
    return set(torch.nonzero(torch.isfinite(logits)).flatten().tolist())


@pytest.mark.parametrize("top_p, kept", [(0.3, {1}), (0.45, {1}), (0.7, {1, 3}), (0.79, {1, 3}), (0.85, {0, 1, 3}),
                                         (0.99, {0, 1, 2, 3}), (1.0, {0, 1, 2, 3})])
def test_top_p_keeps_smallest_set_reaching_p(top_p, kept):
    logits = PROBS.log()
    filtered = filter_logits(logits, None, top_p)
    assert _kept(filtered) == kept and torch.equal(filtered[list(kept)], logits[list(kept)])
    out = filter_logits(torch.stack([logits + 3.0, logits.roll(1)]), None, top_p)  # per row, order-independent
    assert _kept(out[0]) == kept and _kept(out[1]) == {(i + 1) % 4 for i in kept}


@pytest.mark.parametrize("top_k, kept", [(1, {1}), (2, {1, 3}), (3, {0, 1, 3}), (10, {0, 1, 2, 3})])
def test_top_k_keeps_k(top_k, kept):
    assert _kept(filter_logits(PROBS.log(), top_k, None)) == kept
    assert _kept(filter_logits(PROBS.log(), 3, 0.7)) == {1, 3}


class BigramTable(torch.nn.Module):
    """A model whose next-character logits are a hand-set table: the sampler's own code is not the oracle."""

    def __init__(self, logits: torch.Tensor):
        super().__init__()
        self.table = torch.nn.Parameter(logits)
        self.config = config_of("model=BigramLM", vocab_size=len(logits))

    def forward(self, ids, targets=None, cache=None):
        return self.table[ids], None

    def new_cache(self, batch):
        return None


@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.0])
def test_samples_follow_softmax_of_the_logits_over_the_temperature(temperature):
    """Each character's frequency against softmax(logits / T), within 4.5 standard errors of n draws."""
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]] * 4)
    expected = torch.softmax(logits[0] / temperature, dim=0)
    n = 20000
    ids = sample(BigramTable(logits), torch.tensor([0]), n, temperature=temperature, kv_cache=False,
                 generator=torch.Generator().manual_seed(0))
    counts = torch.bincount(ids[0, 1:], minlength=4).double()
    tolerance = 4.5 * torch.sqrt(expected * (1 - expected) / n)  # a miss by chance: about 1 in 150,000 per test
    assert torch.all((counts / n - expected).abs() < tolerance), (counts / n, expected)
    twice = torch.softmax(logits[0] / (2 * temperature), dim=0)  # the test has teeth: 2T would fail it
    assert not torch.all((counts / n - twice).abs() < tolerance)


def test_the_sample_after_training_starts_elsewhere_when_the_corpus_lacks_the_prompts_characters():
    from drakegpt.data import CharVocab

    vocab = CharVocab("abc")  # no newline in this corpus
    model = LanguageModel(config_of(vocab_size=3)).eval()
    text = sample_text(model, vocab, "\n", 20, 1.0, None, None, seed=0, fallback_prompt="b")
    assert text.startswith("b") and len(text) == 21 and set(text) <= set("abc")
    assert sample_text(model, vocab, "a", 20, 1.0, None, None, 0, "b", should_stop=lambda: True) is None
