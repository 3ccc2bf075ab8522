"""benchmarks/bench.py runs end to end and reports what it says it does; its ways are built as named.

No timing is asserted: only that every row, column and section is there and well-formed.
"""

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest
import torch

from drakegpt.data import build_corpus
from drakegpt.errors import UsageError
from drakegpt.models.attention import CausalSelfAttention, NaiveCausalSelfAttention
from drakegpt.runtime import resolve_precision

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("benchmarks_bench", ROOT / "benchmarks" / "bench.py")
bench = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = bench  # dataclasses look their module up while the file runs
_spec.loader.exec_module(bench)

CPU = torch.device("cpu")
TINY = ["--seconds", "0.2", "--rounds", "1", "--gen-chars", "5", "--eval-batches", "1", "--data", "sample"]


@pytest.fixture(scope="module")
def corpus():
    return build_corpus(bench.compose([]).data, 8)


def setup(corpus, model, way, *overrides):
    return bench.Setup([f"model={model}", *overrides], way, corpus, CPU)


@pytest.mark.slow
def test_bench_writes_every_row_column_and_section(tmp_path):
    out = tmp_path / "bench"
    argv = TINY + ["--models", "BigramLM", "TransformerLM", "BitNetLM", "--scales", "default", "--replicas", "1", "2"]
    argv += ["--dropout-bound", "--precision-check", "2", "--ablation-variants", "baseline", "no_mlp"]
    argv += ["--out", str(out)]
    assert bench.main(argv) == 0

    report = json.loads((out / "bench.json").read_text())
    ref, fast, two = bench.REFERENCE.name, bench.FAST.name, bench.replicas(2).name
    assert [(r["model"], r["path"], r["replicas"]) for r in report["rows"]] == [
        ("BigramLM", ref, 1), ("BigramLM", fast, 1), ("BigramLM", two, 2),
        ("TransformerLM", ref, 1), ("TransformerLM", fast, 1), ("TransformerLM", bench.NO_DROPOUT.name, 1),
        ("TransformerLM", two, 2),
        ("BitNetLM", fast, 1), ("BitNetLM", two, 2),  # no original's way: naive attention cannot be BitLinear
    ]
    for r in report["rows"]:
        assert r["scale"] == "default" and r["precision"] in ("fp32", "bf16")
        for key in ("step_ms", "train_tokens_per_s", "tflops", "peak_fraction", "memory_mb"):
            assert math.isfinite(r[key]) and r[key] >= 0, (r["path"], key)
        timed_eval = r["path"] in (ref, fast, two)
        assert ("eval_tokens_per_s" in r) == timed_eval and (not timed_eval or r["eval_tokens_per_s"] > 0)
        assert ("gen_chars_per_s_cache" in r) == ("gen_chars_per_s_no_cache" in r) == (
            r["model"] == "TransformerLM" and r["path"] == fast)
        assert ("speedup" in r) == (r["model"] != "BitNetLM")
        assert ("replica_ratio" in r) == (r["path"] in (fast, two))
        assert r.get("replica_ratio", 1.0) == 1.0 or r["replicas"] == 2
    assert report["rows"][3]["speedup"] == 1.0 and report["peaks"]["torch.float32"] > 0
    protocol = report["protocol"]
    assert [protocol[k] for k in ("iters", "evals", "eval_iters")] == [10000, 21, 200]
    assert protocol["exact_tokens"] > 0 and protocol["exact_tokens"] % 2 == 0  # val once, and a train subset as large
    assert report["sweep"]["models"] == 2 and report["sweep"]["reference_s"] > 0 and report["sweep"]["fast_s"] > 0
    ablation = report["ablation"]
    assert (ablation["variants"], ablation["seeds"], ablation["measured"]) == (8, 3, ["baseline", "no_mlp"])
    assert [(r["variant"], r["replicas"]) for r in ablation["rows"]] == [
        ("baseline", 1), ("baseline", 3), ("no_mlp", 1), ("no_mlp", 3)]
    assert ablation["one_at_a_time_s"] > 0 and ablation["replicas_s"] > 0
    check = report["precision_check"]
    assert check["difference"] == abs(check["val_loss_bf16"] - check["val_loss_fp32"]) and math.isfinite(
        check["difference"])
    assert [(t["target"].split(": ")[1], t["met"]) for t in report["targets"]] == [
        ("TransformerLM, 4 replicas >= 2.5x one run", "not measured"),  # --replicas 1 2: no K=4
        ("BigramLM, 4 replicas >= 1.5x one run", "not measured"),
        ("BitNetLM, 4 replicas >= 1.5x one run", "not measured"),
        ("every model, 16 replicas >= 8.0x one run", "not measured: a cuda target"),
    ]

    md = (out / "bench.md").read_text()
    header = ("| Model | Scale | Path | Precision | Replicas | Train tokens/s | Speed-up | vs one run | TFLOP/s "
              "| Of peak | Memory (MB) | Eval tokens/s | Gen chars/s, KV cache | Gen chars/s, no cache |")
    assert header in md
    for section in ("## Training, evaluation, generation", "## Targets (reported, not asserted)",
                    "## Projected wall time (training and evaluation only): 10,000 iterations and 21 evaluations",
                    "bf16 vs fp32 after 2 iterations"):
        assert section in md
    table = [line for line in md.splitlines() if line.startswith("| ") and line.count("|") == header.count("|")]
    assert len(table) == 1 + len(report["rows"])
    assert "| TransformerLM | default | reference (original) | fp32 | 1 |" in md and "| 1.00x |" in md
    assert "| default sweep (2 models): the original's way vs fast |" in md
    assert "| ablation experiment, projected (8 variants × 3 seeds; timed: baseline, no_mlp)" in md
    assert "| CPU, default preset: TransformerLM, 4 replicas >= 2.5x one run |  | not measured |" in md


def test_targets_put_each_ratio_beside_its_target():
    rows = [{"model": m, "scale": "default", "replicas": k, "replica_ratio": ratio}
            for m, k, ratio in (("TransformerLM", 4, 2.6), ("BigramLM", 4, 1.2), ("BlocksLM", 2, 1.9))]
    found = {t["target"]: (t["measured"], t["met"]) for t in bench.targets(rows, "cpu")}
    assert found == {
        "CPU, default preset: TransformerLM, 4 replicas >= 2.5x one run": (2.6, "yes"),
        "CPU, default preset: BigramLM, 4 replicas >= 1.5x one run": (1.2, "no"),
        "CPU, default preset: BlocksLM, 4 replicas >= 1.5x one run": (None, "not measured"),
        "CUDA, default preset: every model, 16 replicas >= 8.0x one run": (None, "not measured: a cuda target"),
    }
    on_gpu = bench.targets([{**r, "replicas": 16} for r in rows], "cuda")
    assert [(t["measured"], t["met"]) for t in on_gpu][-3:] == [(2.6, "no"), (1.2, "no"), (1.9, "no")]


@pytest.mark.slow
def test_ways_are_built_as_named(corpus):
    reference = setup(corpus, "TransformerLM", bench.REFERENCE)
    assert any(isinstance(m, NaiveCausalSelfAttention) for m in reference.model.modules())
    assert not reference.training.optimizer.defaults["fused"] and not reference.training.optimizer.defaults["foreach"]
    assert reference.precision.value == "fp32" and not reference.model.config.cpu_kernels
    x, y = reference.batch()  # the original's batches: B slices of the text, as one replica
    assert x.shape == (1, reference.B, reference.T) and torch.equal(x[..., 1:], y[..., :-1])

    fast = setup(corpus, "TransformerLM", bench.FAST)
    assert not any(isinstance(m, NaiveCausalSelfAttention) for m in fast.model.modules())
    assert any(isinstance(m, CausalSelfAttention) for m in fast.model.modules())
    assert fast.training.optimizer.defaults["fused"] and fast.model.config.cpu_kernels
    assert fast.precision == resolve_precision(bench.compose([]).train.precision, CPU, 32)
    assert fast.step_model is fast.model

    nanogpt = setup(corpus, "TransformerLM", bench.NANOGPT, "scale=large")
    assert (nanogpt.T, nanogpt.precision.value, nanogpt.model.config.cpu_kernels) == (256, "fp32", False)
    assert nanogpt.training.optimizer.defaults["fused"]

    def switches(s):
        fused = bool(s.training.optimizer.defaults["fused"])
        return (s.model.config.implementation.value, s.model.config.cpu_kernels, fused,
                s.way.original_batches, s.precision.value)

    auto = fast.precision.value
    assert [switches(setup(corpus, "TransformerLM", way)) for way in bench.LADDER] == [
        ("naive", False, False, True, "fp32"),
        ("sdpa", False, False, True, "fp32"),  # + batched heads, SDPA
        ("sdpa", True, False, True, "fp32"),  # + cheap CPU attention dropout
        ("sdpa", True, True, True, "fp32"),  # + fused AdamW
        ("sdpa", True, True, False, "fp32"),  # + indexed batches
        ("sdpa", True, True, False, auto),  # + precision=auto
    ]

    four = setup(corpus, "TransformerLM", bench.replicas(4))
    assert four.K == four.model.replicas == 4 and all(p.shape[0] == 4 for p in four.model.parameters())
    assert four.batch()[0].shape == (4, four.B, four.T) and four.tokens == 4 * four.B * four.T
    assert bench.replicas(1) is bench.FAST
    assert setup(corpus, "TransformerLM", bench.COMPILED).cfg.train.compile is True
    with pytest.raises(UsageError, match="naive"):  # skipped by the benchmark
        setup(corpus, "BitNetLM", bench.REFERENCE)

    def two_losses(way):
        s = setup(corpus, "TransformerLM", way)
        x, y = s.batch()
        return [s.model(x, y)[1].item() for _ in range(2)]

    first, second = two_losses(bench.FAST)
    assert first != second  # dropout draws a new mask each pass
    first, second = two_losses(bench.NO_DROPOUT)
    assert first == second


def test_cpu_sdpa_flops_are_counted(corpus, monkeypatch):
    # Without dropout CPU SDPA runs a fused kernel that torch does not count. Counted, it is the original's matmuls
    # plus the attention scores that the fused backward computes again.
    flops = [setup(corpus, "MultiHeadAttentionLM", way).flops_per_step() for way in (bench.REFERENCE, bench.NANOGPT)]
    s = setup(corpus, "MultiHeadAttentionLM", bench.NANOGPT)
    assert flops[1] - flops[0] == 2 * s.B * s.T * s.T * s.model.config.embedding_dim
    monkeypatch.setattr(bench, "CPU_SDPA_FLOPS", {})
    assert s.flops_per_step() < flops[1]
