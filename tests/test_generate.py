"""Sampling: the registry, run.py task=generate end to end, the KV cache against recomputation, filters,
temperatures, packed BitNet files, and bad input."""

import datetime
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from conftest import QUICK, train_in_process
from drakegpt import checkpoints, registry
from drakegpt.checkpoints import load_model
from drakegpt.errors import UsageError
from drakegpt.generate import output_file, save_new
from drakegpt.models.language_model import LanguageModel
from drakegpt.sampling import Sampler, filter_logits, sample, window_start
from test_models import config_of

ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
NAME = re.compile(r"generation_(\w+?)_(\d{8}_\d{4})(?:_(\d+))?\.txt")
TRAIN = [*QUICK, "train.iters=30"]


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
    """A tiny TransformerLM and a tiny BitNetLM, trained once with the real Trainer on the shipped sample."""
    root = tmp_path_factory.mktemp("trained")
    summary = train_in_process(root, *TRAIN)[0]
    train_in_process(root / "bitnet", *TRAIN, "model=BitNetLM", f"paths.models_dir={root / 'models'}")
    return Trained(root, root / "models", Path(summary["published"]), root / "run")


def expected_text(path: Path, seed: int, length: int = 300) -> str:
    """What generation with run.py's defaults (prompt "\\n", temperature 1, KV cache) should print."""
    model, vocab, _ = load_model(path, torch.device("cpu"))
    ids = sample(model, vocab.encode("\n")[None], length, generator=torch.Generator().manual_seed(seed))
    return vocab.decode(ids[0].tolist())


def one_line_error(proc, *fragments: str) -> str:
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"
    return lines[0]


# --------------------------------------------------------------------------------------------------- registry


def test_published_weights_are_never_overwritten_by_another_config(tmp_path):
    runs = {"seed1": ["seed=1"], "seed2": ["seed=2"], "iters": ["seed=1", "train.iters=10"],
            "variant": ["seed=1", "model.norm=none"], "scale": ["seed=1", "scale.num_heads=2"]}
    published = {}
    for name, overrides in runs.items():
        summary = train_in_process(tmp_path / name, *QUICK, *overrides, f"paths.models_dir={tmp_path / 'models'}")[0]
        published[name] = (Path(summary["published"]), Path(summary["published"]).read_bytes())
    assert len({path for path, _ in published.values()}) == len(runs)  # one entry per config
    for path, content in published.values():
        assert path.read_bytes() == content  # none replaced by a later run
    entries = registry.entries(tmp_path / "models", "TransformerLM", "default")
    quick = "train.iters=20,train.eval_interval=10,train.eval_iters=2"
    assert {e.variant for e in entries} == {quick, "train.iters=10,train.eval_interval=10,train.eval_iters=2",
                                            f"norm=none,{quick}", f"{quick},scale.num_heads=2"}
    # a rerun of the same config replaces its own entry, and only that
    again = train_in_process(tmp_path / "again", *QUICK, "seed=2", f"paths.models_dir={tmp_path / 'models'}")[0]
    assert Path(again["published"]) == published["seed2"][0]
    assert len(registry.entries(tmp_path / "models")) == len(runs)


def test_the_registry_picks_the_exact_config_else_the_newest_of_the_variant_else_lists(trained):
    entries = registry.entries(trained.models)
    transformer = next(e for e in entries if e.model == "TransformerLM")
    assert registry.choose(trained.models, "TransformerLM", "default", transformer.digest, "x", None) == transformer
    assert registry.choose(trained.models, "TransformerLM", "default", "00000000", transformer.variant, None).weights \
        == transformer.weights
    # seed= is the sampling seed too: other seeds sample from the same weights when no run of theirs exists
    other_seed = registry.choose(trained.models, "TransformerLM", "default", "00000000", transformer.variant, 7)
    assert other_seed == transformer
    with pytest.raises(UsageError) as missing:
        registry.choose(trained.models, "BlocksLM", "default", "00000000", "", None)
    message = str(missing.value)
    assert "no published BlocksLM at scale=default" in message and "TransformerLM scale=default" in message
    assert "BitNetLM" in message and "\n" not in message


def test_a_damaged_registry_entry_is_skipped_and_the_others_still_found(trained, tmp_path, caplog):
    models = tmp_path / "models"
    shutil.copytree(trained.models, models)
    good = registry.entries(models)
    folder = Path(good[0].weights).parent
    damaged = {"seed9-00000000": "{broken", "seed8-11111111": '{"model": "TransformerLM"}', "seed7-22222222": "[]"}
    for name, text in damaged.items():
        (folder / f"{name}.json").write_text(text)
        (folder / f"{name}.pt").write_bytes(b"")
    assert registry.entries(models) == good
    assert all(f"{name}.json" in caplog.text for name in damaged)


# ------------------------------------------------------------------------------------------ task=generate


@pytest.mark.slow
def test_same_seed_twice_gives_two_identical_files(run, trained, tmp_path):
    args = ("task=generate", "generate.length=300", *TRAIN, f"paths.models_dir={trained.models}")
    earliest = datetime.datetime.now().replace(second=0, microsecond=0)
    first = run(*args, env=ONE_THREAD)
    assert first.returncode == 0 and "Traceback" not in first.stderr, first.stderr
    (first_file,) = (tmp_path / "inference").iterdir()
    first_text = first_file.read_text(encoding="utf-8")
    second = run(*args, env=ONE_THREAD)
    latest = datetime.datetime.now()
    assert second.returncode == 0, second.stderr
    files = sorted((tmp_path / "inference").iterdir())
    (second_file,) = [f for f in files if f != first_file]
    assert first_file.read_text(encoding="utf-8") == first_text  # not overwritten
    m1, m2 = NAME.fullmatch(first_file.name), NAME.fullmatch(second_file.name)
    assert m1 and m2 and m1.group(1) == "TransformerLM" and m1.group(3) is None
    for m in (m1, m2):
        assert earliest <= datetime.datetime.strptime(m.group(2), "%Y%m%d_%H%M") <= latest
    if m1.group(2) == m2.group(2):
        assert m2.group(3) == "2"  # same minute: numbered rather than overwritten
    text = second_file.read_text(encoding="utf-8")
    assert text == first_text and len(text) == 301 and text in first.stdout
    assert text == expected_text(trained.published, seed=1337)
    assert not (tmp_path / "outputs").exists() or not any((tmp_path / "outputs").iterdir())  # no run folder left


@pytest.mark.slow
def test_a_run_folder_and_another_seed(run, trained, tmp_path):
    proc = run("task=generate", "generate.length=300", f"generate.checkpoint={trained.run_dir}", "seed=7",
               env=ONE_THREAD)
    assert proc.returncode == 0, proc.stderr
    (saved,) = (tmp_path / "inference").iterdir()
    assert saved.read_text(encoding="utf-8") == expected_text(trained.published, seed=7)
    assert saved.read_text(encoding="utf-8") != expected_text(trained.published, seed=1337)


def test_output_file_names(tmp_path):
    now = datetime.datetime(2024, 1, 2, 3, 4, 59)
    path = output_file(tmp_path, "TransformerLM", "default", now)
    assert path == tmp_path / "generation_TransformerLM_20240102_0304.txt"
    path.write_text("first")
    assert output_file(tmp_path, "TransformerLM", "default", now).name == "generation_TransformerLM_20240102_0304_2.txt"
    assert output_file(tmp_path, "BigramLM", "large", now).name == "generation_BigramLM_scaled_20240102_0304.txt"


def test_a_name_taken_a_moment_earlier_keeps_its_file(tmp_path):
    now = datetime.datetime(2024, 1, 2, 3, 4, 59)
    taken = output_file(tmp_path, "TransformerLM", "default", now)
    paths = iter([taken, None])  # another generation writes `taken` between the choice and the write

    def free_path():
        path = next(paths)
        if path is None:
            return output_file(tmp_path, "TransformerLM", "default", now)
        path.write_text("the other generation")
        return path

    written = save_new("ours", free_path)
    assert taken.read_text() == "the other generation"
    assert written.name == "generation_TransformerLM_20240102_0304_2.txt" and written.read_text() == "ours"


# ------------------------------------------------------------------------------------------------ BitNet


def test_a_packed_bitnet_samples_the_same_text_as_its_latent_weights(trained, tmp_path):
    from drakegpt.pack import main as pack_main

    (latent,) = (trained.models / "BitNetLM_default").glob("*[0-9a-f].pt")
    packed = tmp_path / "bitnet.packed.pt"
    assert pack_main([str(latent), "--out", str(packed)]) == 0
    record = checkpoints.load(packed, checkpoints.PackedModel)
    for entry in record.packed.values():
        codes = entry["codes"]
        assert codes.dtype == torch.uint8 and codes.numel() * 4 >= int(entry["shape"].prod())
    model, _, _ = load_model(packed, torch.device("cpu"))
    for module in model.modules():
        if hasattr(module, "packed_scale"):
            assert set(module.weight.unique().tolist()) <= {-1.0, 0.0, 1.0}
    for seed in (1, 2):
        assert expected_text(packed, seed) == expected_text(latent, seed)
    assert pack_main([str(trained.published), "--out", str(tmp_path / "no.pt")]) == 2  # no BitLinear to pack


# ------------------------------------------------------------------------------------ cached and uncached


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


# ---------------------------------------------------------------------------- bad input: one line, no hang


@pytest.mark.slow
def test_prompt_with_an_unknown_character_as_the_readme_writes_it(run, trained, tmp_path):
    proc = run("task=generate", *TRAIN, f"paths.models_dir={trained.models}", """generate.prompt='"yo €"'""",
               env=ONE_THREAD)
    one_line_error(proc, "'€'", "generate.prompt")
    assert not (tmp_path / "inference").exists() or not any((tmp_path / "inference").iterdir())


@pytest.mark.slow
def test_a_missing_model_lists_what_is_published(run, trained):
    proc = run("task=generate", "model=BlocksLM", f"paths.models_dir={trained.models}", env=ONE_THREAD)
    one_line_error(proc, "no published BlocksLM at scale=default", "TransformerLM scale=default")


@pytest.mark.slow
def test_a_checkpoint_of_another_model(run, trained):
    proc = run("task=generate", f"generate.checkpoint={trained.published}", "model=BigramLM", env=ONE_THREAD)
    one_line_error(proc, "TransformerLM", "model=BigramLM")


def test_damaged_foreign_and_old_checkpoints(trained, tmp_path):
    broken = tmp_path / "broken.pt"
    data = trained.published.read_bytes()
    broken.write_bytes(data[: len(data) // 2])
    foreign = [{"weights": torch.zeros(3)}, torch.zeros(3), {"kind": "model", "format": 1, "model": "BigramLM"}]
    for number, content in enumerate(foreign):
        torch.save(content, tmp_path / f"foreign{number}.pt")
    cases = [(broken, "not a DrakeGPT checkpoint"), (tmp_path / "foreign0.pt", "not a DrakeGPT"),
             (tmp_path / "foreign1.pt", "not a DrakeGPT"), (tmp_path / "foreign2.pt", "earlier DrakeGPT")]
    for path, expected in cases:
        with pytest.raises(UsageError) as refused:
            load_model(path, torch.device("cpu"))
        assert expected in str(refused.value) and "\n" not in str(refused.value)


@pytest.mark.slow
def test_a_pipe_as_the_checkpoint_is_refused_at_once_instead_of_blocking(run, tmp_path):
    os.mkfifo(tmp_path / "pipe.pt")  # opening it for reading would wait for a writer forever
    proc = run("task=generate", f"generate.checkpoint={tmp_path / 'pipe.pt'}", env=ONE_THREAD, timeout=60)
    one_line_error(proc, "not a regular file")


@pytest.mark.slow
def test_an_inference_dir_that_cannot_be_written_fails_before_sampling(run, trained, tmp_path):
    (tmp_path / "afile").write_text("x")
    proc = run("task=generate", *TRAIN, f"paths.models_dir={trained.models}",
               f"paths.inference_dir={tmp_path / 'afile' / 'inference'}", env=ONE_THREAD)
    one_line_error(proc, "paths.inference_dir=", "not writable")
    assert (tmp_path / "afile").read_text() == "x"


@pytest.mark.slow
def test_sampling_more_than_memory_holds_is_refused_with_the_estimate(run, trained):
    proc = run("task=generate", *TRAIN, f"paths.models_dir={trained.models}", "generate.num_samples=1000000000",
               env=ONE_THREAD)
    one_line_error(proc, "sampling needs about", "GiB", "generate.num_samples=1000000000")


@pytest.mark.slow
def test_empty_prompt(run, trained):
    one_line_error(run("task=generate", f"paths.models_dir={trained.models}", "generate.prompt=''", env=ONE_THREAD),
                   "generate.prompt is empty")
