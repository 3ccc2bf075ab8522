"""The shipped benchmark runs end to end and reports what it says it does (no timing is asserted)."""

import json

import torch

from drakegpt.bench import FAST, NANOGPT, NO_DROPOUT, REFERENCE, Setup, main, scale_preset
from drakegpt.models.attention import NaiveCausalSelfAttention

PATHS = (REFERENCE, NANOGPT)


def test_bench_writes_every_row_and_column(tmp_path):
    out = tmp_path / "bench"
    argv = ["--models", "BigramLM", "TransformerLM", "--scales", "default", "--seconds", "0.2", "--rounds", "1"]
    argv += ["--eval-batches", "2", "--gen-chars", "5", "--dropout-bound", "--precision-check", "3", "--out", str(out)]
    assert main(argv) == 0

    report = json.loads((out / "bench.json").read_text())
    paths = [(r["model"], r["path"]) for r in report["rows"]]
    assert paths == [
        ("BigramLM", REFERENCE.name),
        ("BigramLM", FAST.name),
        ("TransformerLM", REFERENCE.name),
        ("TransformerLM", FAST.name),
        ("TransformerLM", NO_DROPOUT.name),
    ]
    for row in report["rows"]:
        assert row["train_tokens_per_s"] > 0 and row["memory_mb"] > 0
        assert 0 < row["peak_fraction"] < 1 or row["model"] == "BigramLM"  # a table lookup has no matmul
    transformer_fast = report["rows"][3]
    assert transformer_fast["eval_tokens_per_s"] > 0 and report["rows"][2]["eval_tokens_per_s"] > 0
    assert transformer_fast["gen_chars_per_s_cache"] > 0 and transformer_fast["gen_chars_per_s_no_cache"] > 0
    assert report["peaks"]["torch.float32"] > 0
    check = report["precision_check"]
    assert check["difference"] == abs(check["val_loss_bf16"] - check["val_loss_fp32"]) < 0.02

    table = (out / "bench.md").read_text()
    assert table.count("| TransformerLM | default |") == 3
    assert f"| TransformerLM | default | {REFERENCE.name} | fp32 |" in table and "| 1.00x |" in table


def test_cpu_attention_flops_are_counted():
    # Without dropout CPU SDPA runs a fused kernel that torch does not count. Counted, it is the seed's matmuls
    # plus the attention scores that the fused backward computes again.
    data, scale = torch.randint(0, 20, (5000,)), scale_preset("default")
    flops = [Setup("MultiHeadAttentionLM", scale, p, data, 20, torch.device("cpu")).flops_per_step() for p in PATHS]
    B, T, C = scale["batch_size"], scale["context_length"], scale["embedding_dim"]
    assert flops[1] - flops[0] == 2 * B * T * T * C


def test_bench_paths_are_built_as_named():
    data, scale = torch.randint(0, 20, (5000,)), scale_preset("default")
    cpu = torch.device("cpu")
    reference = Setup("TransformerLM", scale, REFERENCE, data, 20, cpu)
    assert any(isinstance(m, NaiveCausalSelfAttention) for m in reference.model.modules())
    assert not reference.optimizer.defaults["fused"] and not reference.optimizer.defaults["foreach"]
    assert Setup("TransformerLM", scale, FAST, data, 20, cpu).optimizer.defaults["fused"]

    def two_losses(path):
        setup = Setup("TransformerLM", scale, path, data, 20, cpu)
        x, y = setup.batch()
        return [setup.model(x, y)[1].item() for _ in range(2)]

    first, second = two_losses(FAST)
    assert first != second  # dropout draws a new mask each pass
    first, second = two_losses(NO_DROPOUT)
    assert first == second
