"""drakegpt/generate.py: `python run.py task=generate` end to end, what it picks, what it writes, and bad input."""

import datetime
import os
import re
from pathlib import Path

import pytest
import torch

from drakegpt.checkpoints import load_model
from drakegpt.generate import output_file, save_new
from drakegpt.sampling import sample
from helpers.runs import one_line_error, read_summary

ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
NAME = re.compile(r"generation_(\w+?)_(\d{8}_\d{4})(?:_(\d+))?\.txt")
TRAIN = ["train.iters=30", "train.eval_interval=10", "train.eval_iters=2", "logger=none", "train.sample_length=0",
         "train.threads=1"]


def expected_text(path: Path, seed: int, length: int = 300) -> str:
    """What generation with run.py's defaults (prompt "\\n", temperature 1, KV cache) should print."""
    model, vocab, _ = load_model(path, torch.device("cpu"))
    ids = sample(model, vocab.encode("\n")[None], length, generator=torch.Generator().manual_seed(seed))
    return vocab.decode(ids[0].tolist())


# ------------------------------------------------------------------------------------------ task=generate


@pytest.mark.slow
def test_sampling_what_you_just_trained_finds_it_whatever_its_training_settings(run, tmp_path):
    """`python run.py train.iters=...` then `python run.py task=generate`: iterations, rates and evaluation do not
    change what a model is; the generation takes the most recent weights of that model and says which."""
    trained = run("train.iters=40", "train.eval_interval=20", "logger=none", "train.sample_length=0",
                  "optimizer.max_lr=0.004", f"hydra.run.dir={tmp_path / 'run'}")
    assert trained.returncode == 0, trained.stderr
    published = read_summary(tmp_path / "run")["published"]
    proc = run("task=generate", "generate.length=50", env=ONE_THREAD)
    assert proc.returncode == 0, proc.stderr
    (line,) = [line for line in proc.stdout.splitlines() if "sampling from" in line]
    assert "sampling from TransformerLM scale=default train.iters=40," in line and "seed=1337, step 40," in line
    assert published in line and "the only match" in line
    (saved,) = (tmp_path / "inference").iterdir()
    assert saved.read_text(encoding="utf-8") == expected_text(Path(published), seed=1337, length=50)
    other = run("task=generate", "model=BlocksLM", env=ONE_THREAD)  # another model: refused, with the listing
    assert other.returncode == 2 and published in other.stderr


@pytest.mark.slow
def test_same_seed_twice_gives_two_identical_files(run, trained, tmp_path):
    args = ("task=generate", "generate.length=300", *TRAIN, f"paths.registry_dir={trained.registry}")
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


# ---------------------------------------------------------------------------- bad input: one line, no hang


@pytest.mark.slow
def test_prompt_with_an_unknown_character_as_the_readme_writes_it(run, trained, tmp_path):
    proc = run("task=generate", *TRAIN, f"paths.registry_dir={trained.registry}", """generate.prompt='"yo €"'""",
               env=ONE_THREAD)
    one_line_error(proc, "'€'", "generate.prompt")
    assert not (tmp_path / "inference").exists() or not any((tmp_path / "inference").iterdir())


@pytest.mark.slow
def test_a_missing_model_lists_what_is_published(run, trained):
    proc = run("task=generate", "model=BlocksLM", f"paths.registry_dir={trained.registry}", env=ONE_THREAD)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    first, heading, *listed = proc.stderr.strip().splitlines()
    assert "no published BlocksLM at scale=default" in first and heading == "published:"
    assert any("TransformerLM scale=default" in line for line in listed)


@pytest.mark.slow
def test_a_checkpoint_of_another_model(run, trained):
    proc = run("task=generate", f"generate.checkpoint={trained.published}", "model=BigramLM", env=ONE_THREAD)
    one_line_error(proc, "TransformerLM", "model=BigramLM")


@pytest.mark.slow
def test_a_pipe_as_the_checkpoint_is_refused_at_once_instead_of_blocking(run, tmp_path):
    os.mkfifo(tmp_path / "pipe.pt")  # opening it for reading would wait for a writer forever
    proc = run("task=generate", f"generate.checkpoint={tmp_path / 'pipe.pt'}", env=ONE_THREAD, timeout=60)
    one_line_error(proc, "not a regular file")


@pytest.mark.slow
def test_an_inference_dir_that_cannot_be_written_fails_before_sampling(run, trained, tmp_path):
    (tmp_path / "afile").write_text("x")
    proc = run("task=generate", *TRAIN, f"paths.registry_dir={trained.registry}",
               f"paths.inference_dir={tmp_path / 'afile' / 'inference'}", env=ONE_THREAD)
    one_line_error(proc, "paths.inference_dir=", "not writable")
    assert (tmp_path / "afile").read_text() == "x"


@pytest.mark.slow
def test_sampling_more_than_memory_holds_is_refused_with_the_estimate(run, trained):
    proc = run("task=generate", *TRAIN, f"paths.registry_dir={trained.registry}", "generate.num_samples=1000000000",
               env=ONE_THREAD)
    one_line_error(proc, "sampling needs about", "GiB", "generate.num_samples=1000000000")


@pytest.mark.slow
def test_empty_prompt(run, trained):
    one_line_error(run("task=generate", f"paths.registry_dir={trained.registry}", "generate.prompt=''", env=ONE_THREAD),
                   "generate.prompt is empty")
