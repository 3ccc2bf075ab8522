"""drakegpt/checkpoints.py: published weights as safetensors + JSON, loadable without Hydra; every file checked
(checksum, format, what it claims about its model) before a model is built from it."""

import json
import subprocess
import sys

import pytest
import torch

from drakegpt import checkpoints
from drakegpt.checkpoints import load_model
from drakegpt.errors import UsageError
from drakegpt.sampling import sample
from helpers.runs import ROOT


def refused(path, *fragments):
    with pytest.raises(UsageError) as excinfo:
        load_model(path, torch.device("cpu"))
    message = str(excinfo.value)
    assert "\n" not in message, message
    for fragment in fragments:
        assert fragment in message, (fragment, message)


def copy_published(trained, tmp_path):
    stem = tmp_path / "copy"
    for suffix in (".safetensors", ".json"):
        stem.with_suffix(suffix).write_bytes(trained.published.with_suffix(suffix).read_bytes())
    return stem


def test_published_weights_load_in_three_lines_without_hydra_or_pickle(trained):
    """The README's three lines, in a fresh interpreter: no Hydra config is composed, nothing is unpickled."""
    script = "\n".join([
        "from drakegpt import load_pretrained, sample_text",
        f"model, vocab = load_pretrained({str(trained.published)!r})",
        "print(sample_text(model, vocab, '\\n', 200))",
        "from hydra.core.global_hydra import GlobalHydra; assert not GlobalHydra.instance().is_initialized()",
    ])
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    model, vocab, _ = load_model(trained.published, torch.device("cpu"))
    ids = sample(model, vocab.encode("\n"), 200, generator=torch.Generator().manual_seed(0))
    expected = vocab.decode(ids[0].tolist())
    assert result.stdout == expected + "\n"
    meta = json.loads(trained.published.with_suffix(".json").read_text())
    assert meta["format"] == checkpoints.FORMAT and meta["model_class"] == "LanguageModel"
    with open(trained.published, "rb") as f:  # a safetensors file: the length of a JSON header, the header, tensors
        header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
    assert "token_embedding.weight" in header and header["__metadata__"] == {"format": "pt"}


def test_flipped_bytes_inside_a_weight_are_caught_by_the_checksum(trained, tmp_path):
    stem = copy_published(trained, tmp_path)
    raw = bytearray(stem.with_suffix(".safetensors").read_bytes())
    for i in range(len(raw) - 200, len(raw) - 100):  # inside the last tensor's data
        raw[i] ^= 0xFF
    stem.with_suffix(".safetensors").write_bytes(bytes(raw))
    refused(stem.with_suffix(".safetensors"), "is damaged", "checksum")


@pytest.mark.parametrize("change, fragment", [
    (lambda c: c.update(num_layers=-1), "num_layers=-1 is not a positive integer"),
    (lambda c: c.update(embedding_dim="32"), "embedding_dim='32' is not a positive integer"),
    (lambda c: c.update(vocab_size=5), "the vocabulary has 29 characters"),
    (lambda c: c.update(num_heads=3), "the heads do not divide the embedding"),
    (lambda c: c.update(dropout_rate=float("nan")), "dropout_rate=nan is outside"),
    (lambda c: c.update(norm="batchnorm"), "'batchnorm' is not a valid Norm"),
    (lambda c: c.update(embedding_dim=2**20, num_layers=2**10), "parameters"),
    (lambda c: c.update(feed_forward_width=999), "size mismatch"),
])
def test_a_config_that_lies_about_its_model_is_refused(trained, tmp_path, change, fragment):
    stem = copy_published(trained, tmp_path)
    meta = json.loads(stem.with_suffix(".json").read_text())
    change(meta["model_config"])
    stem.with_suffix(".json").write_text(json.dumps(meta))
    refused(stem.with_suffix(".json"), "does not hold a model this version can build", fragment)


def test_a_vocabulary_longer_or_shorter_than_the_model_is_refused(trained, tmp_path):
    stem = copy_published(trained, tmp_path)
    meta = json.loads(stem.with_suffix(".json").read_text())
    for vocab in (meta["vocab"] + "€", meta["vocab"][:-1], meta["vocab"][:-1] + meta["vocab"][0]):
        stem.with_suffix(".json").write_text(json.dumps({**meta, "vocab": vocab}))
        refused(stem, "the vocabulary has")


def test_nan_weights_are_refused(trained, tmp_path):
    from safetensors.torch import load_file, save_file

    stem = copy_published(trained, tmp_path)
    state = load_file(stem.with_suffix(".safetensors"))
    name = next(iter(state))
    state[name] = torch.full_like(state[name], float("nan"))
    save_file(state, stem.with_suffix(".safetensors"))
    meta = json.loads(stem.with_suffix(".json").read_text())
    import hashlib

    meta["weights_sha256"] = hashlib.sha256(stem.with_suffix(".safetensors").read_bytes()).hexdigest()
    stem.with_suffix(".json").write_text(json.dumps(meta))  # a checksum that matches: the values are still wrong
    refused(stem, "NaN or infinite")


def test_damaged_foreign_and_older_files_are_one_line(trained, tmp_path):
    broken = tmp_path / "broken.pt"
    last = trained.run_dir / "checkpoints" / "last.pt"
    broken.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    foreign = [{"weights": torch.zeros(3)}, torch.zeros(3), {"kind": "model", "format": 2, "model_class": "x"}]
    for number, content in enumerate(foreign):
        torch.save(content, tmp_path / f"foreign{number}.pt")
    refused(broken, "not a DrakeGPT checkpoint")
    refused(tmp_path / "foreign0.pt", "not a DrakeGPT")
    refused(tmp_path / "foreign1.pt", "not a DrakeGPT")
    refused(tmp_path / "foreign2.pt", "file format 2", "train the model again")
    stem = copy_published(trained, tmp_path)
    meta = json.loads(stem.with_suffix(".json").read_text())
    stem.with_suffix(".json").write_text(json.dumps({**meta, "format": 2}))
    refused(stem, "file format 2")


def test_a_checkpoints_weights_are_checked_too(trained, tmp_path):
    state = torch.load(trained.run_dir / "checkpoints" / "last.pt", weights_only=True)
    name = next(iter(state["model_state"]))
    state["model_state"][name] = state["model_state"][name] + 1
    torch.save(state, tmp_path / "last.pt")
    refused(tmp_path / "last.pt", "is damaged", "checksum")


@pytest.mark.parametrize("damage", ["zero scale", "nan scale", "wrong shape", "shape as text"])
def test_damaged_packed_files_are_refused_before_sampling(trained, tmp_path, damage):
    from drakegpt.pack import pack

    pack(trained.bitnet, tmp_path / "p.pt")
    raw = torch.load(tmp_path / "p.pt", weights_only=True)
    entry = next(iter(raw["packed"].values()))
    if damage == "zero scale":
        entry["divisors"] = torch.zeros_like(entry["divisors"])
    elif damage == "nan scale":
        entry["divisors"] = torch.full_like(entry["divisors"], float("nan"))
    elif damage == "wrong shape":
        entry["shape"] = entry["shape"] * 2
    else:
        entry["shape"] = "96,32"
    raw["weights_sha256"] = checkpoints.weights_digest(raw["dense_state"], raw["packed"])
    torch.save(raw, tmp_path / "p.pt")
    refused(tmp_path / "p.pt", "does not hold a model this version can build")
