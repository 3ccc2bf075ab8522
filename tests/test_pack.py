"""drakegpt/pack.py: packed BitNet files sample what their latent weights sample; the packed file is always new."""

import pytest
import torch

from drakegpt import checkpoints
from drakegpt.checkpoints import load_model
from drakegpt.pack import main as pack_main
from drakegpt.sampling import sample
from helpers.runs import train_in_process


def text(path, seed: int, length: int = 200) -> str:
    model, vocab, _ = load_model(path, torch.device("cpu"))
    return vocab.decode(sample(model, vocab.encode("\n")[None], length,
                               generator=torch.Generator().manual_seed(seed))[0].tolist())


def test_a_packed_bitnet_samples_the_same_text_as_its_latent_weights(trained, tmp_path, capsys):
    packed = tmp_path / "bitnet.packed.pt"
    assert pack_main([str(trained.bitnet), "--out", str(packed)]) == 0
    assert "x smaller" in capsys.readouterr().out
    record = checkpoints.load(packed, checkpoints.PackedModel)
    for entry in record.packed.values():
        assert entry["codes"].dtype == torch.uint8 and entry["codes"].numel() * 4 >= int(entry["shape"].prod())
    model, _, _ = load_model(packed, torch.device("cpu"))
    codes = [m.weight for m in model.modules() if getattr(m, "packed_divisors", None) is not None]
    assert codes and all(set(w.unique().tolist()) == {-1.0, 0.0, 1.0} for w in codes)
    for seed in (1, 2):
        assert text(packed, seed) == text(trained.bitnet, seed)


def test_the_original_bitnet_packs_one_bit_a_weight(tmp_path):
    summary = train_in_process(tmp_path, "model=BitNetLM", "model.linear=binary", "train.iters=10",
                               "train.eval_interval=10", "logger=none", "train.sample_length=0", "train.threads=1")[0]
    packed = tmp_path / "binary.packed.pt"
    assert pack_main([summary["published"], "--out", str(packed)]) == 0
    record = checkpoints.load(packed, checkpoints.PackedModel)
    for entry in record.packed.values():
        assert entry["codes"].numel() == -(-int(entry["shape"].prod()) // 8)  # eight weights a byte
    model, _, _ = load_model(packed, torch.device("cpu"))
    assert all(set(m.weight.unique().tolist()) == {-1.0, 1.0} for m in model.modules()
               if getattr(m, "packed_divisors", None) is not None)
    assert text(packed, 3) == text(summary["published"], 3)


def test_the_packed_file_is_always_a_new_file(trained, tmp_path, capsys):
    source = trained.bitnet
    before = source.read_bytes()
    assert pack_main([str(source), "--out", str(source)]) == 2  # never over the weights it packs
    assert "is the file being packed" in capsys.readouterr().err and source.read_bytes() == before
    (tmp_path / "taken.pt").write_text("mine")
    assert pack_main([str(source), "--out", str(tmp_path / "taken.pt")]) == 2
    assert (tmp_path / "taken.pt").read_text() == "mine" and "already exists" in capsys.readouterr().err
    assert pack_main([str(source), "--out", str(tmp_path)]) == 2  # a folder
    assert "is not a new file" in capsys.readouterr().err
    assert pack_main([str(source), "--out", str(tmp_path / "no" / "such" / "x.pt")]) == 2
    assert "does not exist" in capsys.readouterr().err
    packed = tmp_path / "once.pt"
    assert pack_main([str(source), "--out", str(packed)]) == 0
    assert pack_main([str(packed), "--out", str(tmp_path / "twice.pt")]) == 2  # packed already: refused
    assert "is packed already" in capsys.readouterr().err and not (tmp_path / "twice.pt").exists()
    assert pack_main([str(trained.published), "--out", str(tmp_path / "dense.pt")]) == 2  # no BitLinear to pack
    capsys.readouterr()
    for out in ("x.safetensors", "x"):  # a name task=generate would not read as a packed file
        assert pack_main([str(source), "--out", str(tmp_path / out)]) == 2 and not (tmp_path / out).exists()
        assert "must end in .pt" in capsys.readouterr().err


@pytest.mark.parametrize("weights", [".", "/", ""])
def test_a_weights_argument_without_a_file_name_is_one_line(weights, capsys):
    assert pack_main([weights]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("error: ") and "is not a weights file" in line


def test_a_wrong_argument_is_one_line_not_a_usage_block(capsys):
    with pytest.raises(SystemExit) as exited:
        pack_main([])
    (line,) = capsys.readouterr().err.splitlines()
    assert exited.value.code == 2 and line.startswith("error: ") and "--help" in line


def test_a_place_that_cannot_be_written_is_one_line(trained, capsys):
    """/proc takes no new files, not even root's: the packed file cannot be written there."""
    assert pack_main([str(trained.bitnet), "--out", "/proc/drakegpt-packed.pt"]) == 2
    assert "cannot be written" in capsys.readouterr().err
