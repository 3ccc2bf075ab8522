"""Sampling: run.py task=generate end to end, the KV cache against recomputation, filters, and bad input."""

import datetime
import re
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from conftest import run_py
from drakegpt import checkpoint
from drakegpt.errors import UsageError
from drakegpt.generate import Sampler, filter_logits, load_model, output_file, sample, window_start
from drakegpt.models import ModelConfig, build_model

# Every process on one thread: tiny models, and a shared 2-core machine where a second thread only contends.
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
NAME = re.compile(r"generation_TransformerLM_(\d{8}_\d{4})(?:_(\d+))?\.txt")


@dataclass
class Trained:
    root: Path
    models: Path
    published: Path
    run_dir: Path


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Trained:
    """A tiny TransformerLM trained once by run.py on the shipped sample."""
    root = tmp_path_factory.mktemp("trained")
    proc = run_py(
        "model=TransformerLM",
        "train.iters=30",
        "train.eval_interval=10",
        "train.eval_iters=2",
        "logger=none",
        cwd=root,
        env=ONE_THREAD,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    published = root / "models" / "TransformerLM_default.pt"
    assert published.is_file()
    (run_dir,) = (root / "outputs").iterdir()
    assert (run_dir / "checkpoints" / "last.pt").is_file()
    return Trained(root, root / "models", published, run_dir)


def expected_text(trained: Trained, seed: int, length: int = 300) -> str:
    """What generation with run.py's defaults (prompt "\\n", temperature 1, KV cache) should print."""
    model, vocab, meta = load_model(trained.published, torch.device("cpu"))
    ids = sample(
        model, vocab.encode("\n")[None], length, meta["context_length"], generator=torch.Generator().manual_seed(seed)
    )
    return vocab.decode(ids[0].tolist())


def one_line_error(proc, *fragments: str) -> str:
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"
    return lines[0]


# ---------------------------------------------------------------------------------------------------------------
# run.py task=generate


def test_same_seed_twice_gives_two_identical_files(run, trained, tmp_path):
    args = ("task=generate", "generate.length=300", f"paths.models_dir={trained.models}")
    earliest = datetime.datetime.now().replace(second=0, microsecond=0)
    first = run(*args, env=ONE_THREAD)
    assert first.returncode == 0 and "Traceback" not in first.stderr, first.stderr
    files = list((tmp_path / "inference").iterdir())
    assert len(files) == 1
    first_file, first_text = files[0], files[0].read_text(encoding="utf-8")
    second = run(*args, env=ONE_THREAD)
    latest = datetime.datetime.now()
    assert second.returncode == 0 and "Traceback" not in second.stderr, second.stderr

    files = sorted((tmp_path / "inference").iterdir())
    assert len(files) == 2 and first_file in files
    assert first_file.read_text(encoding="utf-8") == first_text  # not overwritten
    (second_file,) = [f for f in files if f != first_file]
    m1, m2 = NAME.fullmatch(first_file.name), NAME.fullmatch(second_file.name)
    assert m1 and m2, [f.name for f in files]
    assert m1.group(2) is None  # the first run's file is not numbered
    for m in (m1, m2):
        stamp = datetime.datetime.strptime(m.group(1), "%Y%m%d_%H%M")
        assert earliest <= stamp <= latest
    if m1.group(1) == m2.group(1):  # same minute: the second file is numbered rather than overwriting
        assert m2.group(2) == "2"

    text = second_file.read_text(encoding="utf-8")
    assert text == first_text
    assert len(text) == 1 + 300 and text.startswith("\n")  # the prompt, then 300 characters
    assert text in first.stdout
    assert text == expected_text(trained, seed=1337)


def test_run_folder_checkpoint_and_other_seed(run, trained, tmp_path):
    # the run folder's last checkpoint holds the same weights as the published model ...
    published = load_model(trained.published, torch.device("cpu"))[0].state_dict()
    last = load_model(trained.run_dir / "checkpoints" / "last.pt", torch.device("cpu"))[0].state_dict()
    assert published.keys() == last.keys() and all(torch.equal(published[k], last[k]) for k in published)
    # ... so the text differs from seed 1337's only because of the seed
    proc = run(
        "task=generate", "generate.length=300", f"generate.checkpoint={trained.run_dir}", "seed=7", env=ONE_THREAD
    )
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    (saved,) = (tmp_path / "inference").iterdir()
    assert NAME.fullmatch(saved.name)
    text = saved.read_text(encoding="utf-8")
    assert len(text) == 301
    assert text == expected_text(trained, seed=7)
    assert text != expected_text(trained, seed=1337)


def test_output_file_names(tmp_path):
    now = datetime.datetime(2024, 1, 2, 3, 4, 59)
    path = output_file(tmp_path, "TransformerLM", "default", now)
    assert path == tmp_path / "generation_TransformerLM_20240102_0304.txt"
    path.write_text("first")
    second = output_file(tmp_path, "TransformerLM", "default", now)
    assert second == tmp_path / "generation_TransformerLM_20240102_0304_2.txt"
    second.write_text("second")
    assert output_file(tmp_path, "TransformerLM", "default", now).name == "generation_TransformerLM_20240102_0304_3.txt"
    assert path.read_text() == "first"
    large = output_file(tmp_path, "TransformerLM", "large", now)
    assert large == tmp_path / "generation_TransformerLM_scaled_20240102_0304.txt"
    assert output_file(tmp_path, "BigramLM", "large", now).name == "generation_BigramLM_scaled_20240102_0304.txt"


# ---------------------------------------------------------------------------------------------------------------
# Cached and uncached sampling


def test_window_start_keeps_three_quarters_of_the_context():
    for ctx in (1, 2, 8, 12, 256):
        stride = max(1, ctx // 4)
        for length in range(1, 4 * ctx + 10):
            start = window_start(length, ctx)
            if length <= ctx:
                assert start == 0
            else:
                assert start % stride == 0
                assert ctx - stride < length - start <= ctx, (ctx, length, start)


def _models(trained):
    model, vocab, meta = load_model(trained.published, torch.device("cpu"))
    yield "trained TransformerLM", model, len(vocab), meta["context_length"]
    torch.manual_seed(0)
    for name in ("TransformerLM", "MultiHeadAttentionLM"):
        cfg = ModelConfig(vocab_size=29, context_length=12, embedding_dim=32, num_heads=4, num_layers=2, dropout=0.1)
        yield f"random {name}", build_model(name, cfg).eval(), 29, 12


def test_cached_and_uncached_logits_agree_past_the_window(trained):
    for label, model, vocab_size, ctx in _models(trained):
        model.eval()
        cached, plain = Sampler(model, ctx, kv_cache=True), Sampler(model, ctx, kv_cache=False)
        assert cached.use_cache and not plain.use_cache
        gen = torch.Generator().manual_seed(0)
        seq = torch.randint(vocab_size, (2, 3), generator=gen)
        for step in range(3 * ctx):
            a, b = cached.next_logits(seq), plain.next_logits(seq)
            assert a.shape == (2, vocab_size)
            torch.testing.assert_close(a, b, rtol=0, atol=1e-5, msg=f"{label}, step {step}")
            # and both are the last position's logits of the current window, computed whole
            with torch.no_grad():
                full = model(seq[:, window_start(seq.shape[1], ctx) :])[0][:, -1]
            torch.testing.assert_close(a, full, rtol=0, atol=1e-5)
            seq = torch.cat([seq, torch.multinomial(a.softmax(-1), 1, generator=gen)], dim=1)
        assert seq.shape[1] == 3 + 3 * ctx > 2 * ctx
        assert cached.cache is not None and cached.start > 0


def test_cached_and_uncached_text_agree(trained):
    for label, model, vocab_size, ctx in _models(trained):
        prompt = torch.tensor([[0, 1, 2]])
        runs = [
            sample(
                model, prompt, 3 * ctx + 5, ctx, num_samples=3, kv_cache=kv, generator=torch.Generator().manual_seed(11)
            )
            for kv in (True, False)
        ]
        assert runs[0].shape == (3, 3 + 3 * ctx + 5)
        assert torch.equal(runs[0][:, :3], prompt.repeat(3, 1))
        assert torch.equal(runs[0], runs[1]), label


def test_greedy_and_top_k_one_are_deterministic(trained):
    for label, model, vocab_size, ctx in _models(trained):
        prompt = torch.tensor([[3]])
        n = 2 * ctx + 3
        greedy = sample(model, prompt, n, ctx, temperature=0)
        assert torch.equal(greedy, sample(model, prompt, n, ctx, temperature=0))
        assert torch.equal(greedy, sample(model, prompt, n, ctx, temperature=0, kv_cache=False))
        for seed in (1, 2):
            top1 = sample(
                model, prompt, n, ctx, temperature=1.0, top_k=1, generator=torch.Generator().manual_seed(seed)
            )
            assert torch.equal(top1, greedy), label
            tiny = sample(model, prompt, n, ctx, temperature=1e-30, generator=torch.Generator().manual_seed(seed))
            assert torch.equal(tiny, greedy), label  # the limit of a falling temperature, not inf - inf
        # each greedy step is the argmax of the model's logits for its window
        sampler = Sampler(model, ctx, kv_cache=False)
        for length in range(1, greedy.shape[1]):
            assert greedy[0, length] == sampler.next_logits(greedy[:, :length]).argmax(-1)[0]


# ---------------------------------------------------------------------------------------------------------------
# filter_logits


PROBS = torch.tensor([0.15, 0.5, 0.05, 0.3])  # sorted: 0.5 (1), 0.3 (3), 0.15 (0), 0.05 (2)


def _kept(logits: torch.Tensor) -> set:
    return set(torch.nonzero(torch.isfinite(logits)).flatten().tolist())


@pytest.mark.parametrize(
    "top_p, kept",
    [
        (0.3, {1}),
        (0.45, {1}),
        (0.7, {1, 3}),
        (0.79, {1, 3}),
        (0.85, {0, 1, 3}),
        (0.9, {0, 1, 3}),
        (0.99, {0, 1, 2, 3}),
        (1.0, {0, 1, 2, 3}),
    ],
)
def test_top_p_keeps_smallest_set_reaching_p(top_p, kept):
    logits = PROBS.log()
    filtered = filter_logits(logits, None, top_p)
    assert _kept(filtered) == kept
    assert torch.equal(filtered[list(kept)], logits[list(kept)])  # kept logits are unchanged
    # the same rows in a batch, shifted: filtering is per row and does not depend on the order
    batch = torch.stack([logits + 3.0, logits.roll(1)])
    out = filter_logits(batch, None, top_p)
    assert _kept(out[0]) == kept
    assert _kept(out[1]) == {(i + 1) % 4 for i in kept}


@pytest.mark.parametrize("top_k, kept", [(1, {1}), (2, {1, 3}), (3, {0, 1, 3}), (4, {0, 1, 2, 3}), (10, {0, 1, 2, 3})])
def test_top_k_keeps_k(top_k, kept):
    logits = PROBS.log()
    filtered = filter_logits(logits, top_k, None)
    assert _kept(filtered) == kept
    assert torch.equal(filtered[list(kept)], logits[list(kept)])


def test_top_k_and_top_p_together():
    logits = PROBS.log()
    assert _kept(filter_logits(logits, 3, 0.7)) == {1, 3}
    assert _kept(filter_logits(logits, 1, 0.99)) == {1}
    assert torch.equal(filter_logits(logits, None, None), logits)


# ---------------------------------------------------------------------------------------------------------------
# Bad input: one line on stderr, a non-zero exit, never a traceback


def test_prompt_with_unknown_character(run, trained, tmp_path):
    proc = run("task=generate", f"paths.models_dir={trained.models}", "generate.prompt='yo €'", env=ONE_THREAD)
    one_line_error(proc, "'€'", "generate.prompt")
    assert not (tmp_path / "inference").exists() or not any((tmp_path / "inference").iterdir())


def test_missing_checkpoint_lists_trained_models(run, trained):
    proc = run("task=generate", "model=BlocksLM", f"paths.models_dir={trained.models}", env=ONE_THREAD)
    one_line_error(proc, "BlocksLM", "scale=default", "trained models: TransformerLM_default")


def test_checkpoint_of_another_model(run, trained):
    proc = run("task=generate", f"generate.checkpoint={trained.published}", "model=BigramLM", env=ONE_THREAD)
    one_line_error(proc, "TransformerLM", "model=BigramLM")


def test_corrupted_checkpoint(run, trained, tmp_path):
    broken = tmp_path / "broken.pt"
    data = trained.published.read_bytes()
    broken.write_bytes(data[: len(data) // 2])
    proc = run("task=generate", f"generate.checkpoint={broken}", env=ONE_THREAD)
    one_line_error(proc, str(broken), "not a DrakeGPT checkpoint")


def test_checkpoint_whose_shape_does_not_fit(trained, tmp_path):
    state = checkpoint.load(trained.published)
    assert state["kind"] == "model" and state["model"] == "TransformerLM"
    state["config"]["scale"]["embedding_dim"] = 64
    wrong = tmp_path / "wrong_shape.pt"
    checkpoint.save(state, wrong)
    with pytest.raises(UsageError) as excinfo:
        load_model(wrong, torch.device("cpu"))
    message = str(excinfo.value)
    assert "\n" not in message and "does not fit TransformerLM" in message and str(wrong) in message
    # a file that unpickles but is not a checkpoint
    other = tmp_path / "weights.pt"
    for foreign in ({"weights": torch.zeros(3)}, torch.zeros(3), {"model_state": {}, "vocab": ["a"]}):
        checkpoint.save(foreign, other)
        with pytest.raises(UsageError, match="not a DrakeGPT checkpoint"):
            load_model(other, torch.device("cpu"))


def test_empty_prompt(run, trained):
    proc = run("task=generate", f"paths.models_dir={trained.models}", "generate.prompt=''", env=ONE_THREAD)
    one_line_error(proc, "generate.prompt is empty")
