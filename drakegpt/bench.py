"""`python -m drakegpt.bench`: speed and memory of every model × preset on this device.

The fast path (the defaults) runs side by side with the reference path kept for the purpose: the
seed's way of training (one head at a time with an explicit masked softmax, fp32, a for-loop AdamW,
batches stacked row by row, evaluation batch by batch). At the large preset a plain fp32 model with
batched heads and `scaled_dot_product_attention` (nanoGPT's model) is measured too. Timed rounds
alternate between the paths, so a slow moment of the machine falls on all of them alike.

Writes bench.json and bench.md into --out; `--precision-check N` also trains TransformerLM for N
iterations in fp32 and in bf16 from the same seed and reports both val losses.
"""

import argparse
import json
import platform
import statistics
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Dict, List, Optional

import torch
from omegaconf import OmegaConf
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

from drakegpt.config import Attention, DataConfig, DataSource, OptimizerConfig, OptimizerImpl, Precision, Schedule
from drakegpt.data import build_corpus, gather, random_starts
from drakegpt.generate import sample
from drakegpt.models import MODELS, ModelConfig, build_model
from drakegpt.optim import build_optimizer
from drakegpt.runtime import autocast, resolve_device, resolve_precision, set_threads
from drakegpt.train import evaluate

CONF = Path(__file__).resolve().parent.parent / "conf"
# torch counts its CUDA attention kernels but not the CPU one; counted the same way (the full T×T).
CPU_SDPA_FLOPS = {
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: lambda q, k, v, *_, **__: sdpa_flop_count(q, k, v),
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward: (
        lambda grad, q, k, v, *_, **__: sdpa_backward_flop_count(grad, q, k, v)
    ),
}
DRAKE = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "Drake.csv"


@dataclass(frozen=True)
class Variant:
    """One way of running a training step; `fast` is the project's default."""

    name: str
    attention: Attention
    precision: Precision
    optimizer: OptimizerImpl
    stacked_batches: bool  # the seed's per-row torch.stack instead of one indexing op
    compile: bool = False
    dropout: bool = True  # False: the same model with dropout 0, the bound any dropout implementation can reach


REFERENCE = Variant("reference (seed)", Attention.naive, Precision.fp32, OptimizerImpl.for_loop, True)
FAST = Variant("fast (default)", Attention.fast, Precision.auto, OptimizerImpl.fused, False)
NANOGPT = Variant("sdpa fp32 (nanoGPT)", Attention.sdpa, Precision.fp32, OptimizerImpl.fused, False)
NANOGPT_BEST = Variant("nanoGPT best (compile, bf16)", Attention.sdpa, Precision.bf16, OptimizerImpl.fused, False, True)
LADDER = [
    REFERENCE,
    replace(REFERENCE, name="+ batched heads, SDPA", attention=Attention.sdpa),
    replace(REFERENCE, name="+ cheap CPU attention dropout", attention=Attention.fast),
    replace(FAST, name="+ fused AdamW", precision=Precision.fp32, stacked_batches=True),
    replace(FAST, name="+ indexed batches", precision=Precision.fp32),
    FAST,  # + precision=auto
]
COMPILED = replace(FAST, name="fast + train.compile", compile=True)
NO_DROPOUT = replace(FAST, name="fast, dropout 0 (bound)", dropout=False)


def scale_preset(name: str) -> Dict:
    return OmegaConf.to_container(OmegaConf.load(CONF / "scale" / f"{name}.yaml"))


def stacked_batch(data: torch.Tensor, T: int, B: int, generator: torch.Generator):
    """The seed's get_batch: one slice per row, then torch.stack."""
    ix = torch.randint(len(data) - T, (B,), generator=generator)
    return torch.stack([data[i : i + T] for i in ix]), torch.stack([data[i + 1 : i + T + 1] for i in ix])


class Setup:
    """A model, its optimizer and one training step, built the way `path` says."""

    def __init__(self, model_name: str, scale: Dict, path: Variant, data: torch.Tensor, vocab: int, device):
        scale = scale if path.dropout else {**scale, "dropout": 0.0}
        self.path, self.device, self.scale = path, device, scale
        self.T, self.B = scale["context_length"], scale["batch_size"]
        self.precision = resolve_precision(path.precision, device)
        torch.manual_seed(0)
        self.model = build_model(model_name, ModelConfig.from_preset(scale, vocab, path.attention)).to(device)
        opt = OptimizerConfig(
            schedule=Schedule.cyclic,
            base_lr=scale["base_lr"],
            max_lr=scale["max_lr"],
            betas=scale["betas"],
            implementation=path.optimizer,
        )
        self.optimizer = build_optimizer(self.model, opt)
        self.step_model = torch.compile(self.model) if path.compile else self.model
        self.cpu_data, self.data = data, data.to(device)
        self.generator = torch.Generator().manual_seed(0)

    def batch(self):
        if self.path.stacked_batches:
            x, y = stacked_batch(self.cpu_data, self.T, self.B, self.generator)
            return x.to(self.device), y.to(self.device)
        return gather(self.data, random_starts(self.data, self.B, self.T, self.generator).to(self.device), self.T)

    def step(self) -> None:
        x, y = self.batch()
        with autocast(self.precision, self.device):
            _, loss = self.step_model(x, y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()

    def flops_per_step(self) -> int:
        x, y = self.batch()
        with FlopCounterMode(display=False, custom_mapping=CPU_SDPA_FLOPS) as counter:
            with autocast(self.precision, self.device):
                _, loss = self.model(x, y)
            loss.backward()
        self.optimizer.zero_grad(set_to_none=True)
        return counter.get_total_flops()

    def memory_mb(self) -> float:
        """CUDA: peak allocated in a step. CPU: weights, grads and AdamW state plus what autograd saves."""
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self.step()
            sync(self.device)
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        seen: Dict[int, int] = {}

        def pack(t):
            seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t

        x, y = self.batch()
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            with autocast(self.precision, self.device):
                _, loss = self.model(x, y)
        loss.backward()
        self.optimizer.zero_grad(set_to_none=True)
        state = sum(p.numel() * p.element_size() for p in self.model.parameters()) * 4
        return (sum(seen.values()) + state) / 2**20


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_rounds(setups: List[Setup], min_seconds: float, rounds: int) -> List[float]:
    """Median seconds per step of each setup; rounds alternate between setups."""
    for s in setups:  # warm-up (and compilation)
        for _ in range(3 if s.path.compile else 1):
            s.step()
        sync(s.device)
    per_step = [[] for _ in setups]
    steps = []
    for s in setups:  # choose each setup's steps per round so that a round lasts ~min_seconds/rounds
        t = time.perf_counter()
        s.step()
        sync(s.device)
        steps.append(max(1, int(min_seconds / rounds / max(time.perf_counter() - t, 1e-6))))
    for _ in range(rounds):
        for i, s in enumerate(setups):
            t = time.perf_counter()
            for _ in range(steps[i]):
                s.step()
            sync(s.device)
            per_step[i].append((time.perf_counter() - t) / steps[i])
    return [statistics.median(p) for p in per_step]


def matmul_peak(device: torch.device, dtype: torch.dtype) -> float:
    """FLOP/s of a large square matmul, measured now: the ceiling the models are compared to."""
    n = 8192 if device.type == "cuda" else 1536
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    sync(device)
    reps, t = 0, time.perf_counter()
    while time.perf_counter() - t < 1.0 or reps < 3:
        a @ b
        sync(device)
        reps += 1
    return 2 * n**3 * reps / (time.perf_counter() - t)


def seed_style_eval(setup: Setup, batches: int) -> None:
    """The seed's evaluation: model.eval(), one batch at a time under no_grad, loss.item() each."""
    setup.model.eval()
    with torch.no_grad():
        for _ in range(batches):
            x, y = stacked_batch(setup.cpu_data, setup.T, setup.B, setup.generator)
            _, loss = setup.model(x.to(setup.device), y.to(setup.device))
            loss.item()
    setup.model.train()


def timed_once(fn: Callable[[], object], device, warm: bool = True) -> float:
    if warm:
        fn()
    sync(device)
    t = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t


def bench_model(model_name: str, scale_name: str, paths: List[Variant], data, vocab, device, args) -> List[Dict]:
    scale = scale_preset(scale_name)
    setups = [Setup(model_name, scale, p, data, vocab, device) for p in paths]
    seconds = timed_rounds(setups, args.seconds, args.rounds)
    tokens = scale["batch_size"] * scale["context_length"]
    rows = []
    for setup, s in zip(setups, seconds):
        flops = setup.flops_per_step()
        dtype = torch.bfloat16 if setup.precision is Precision.bf16 else torch.float32
        peak = args.peaks.setdefault(str(dtype), matmul_peak(device, dtype))
        rows.append(
            {
                "model": model_name,
                "scale": scale_name,
                "path": setup.path.name,
                "precision": setup.precision.value,
                "step_ms": s * 1e3,
                "train_tokens_per_s": tokens / s,
                "tflops": flops / s / 1e12,
                "peak_fraction": flops / s / peak,
                "memory_mb": setup.memory_mb(),
            }
        )
    # Evaluation of eval_batches batches, the seed's way (reference row) and ours (fast row).
    reference, fast = setups[0], next(s for s in setups if s.path == FAST)
    fast_row = rows[setups.index(fast)]
    n = args.eval_batches
    starts = random_starts(fast.data, n * fast.B, fast.T, torch.Generator().manual_seed(1))
    fast_row["eval_tokens_per_s"] = (
        n * tokens / timed_once(lambda: evaluate(fast.model, fast.data, starts, fast.T, fast.precision, device), device)
    )
    rows[0]["eval_tokens_per_s"] = n * tokens / timed_once(lambda: seed_style_eval(reference, n), device)
    # TransformerLM's generation speed (untrained weights: the speed does not depend on them).
    if model_name == "TransformerLM" and args.gen_chars:
        for cache in (True, False):
            generator = torch.Generator(device=device).manual_seed(0)
            seconds = timed_once(
                lambda cache=cache, generator=generator: sample(
                    fast.model,
                    torch.zeros(1, 1, dtype=torch.long),
                    args.gen_chars,
                    fast.T,
                    kv_cache=cache,
                    generator=generator,
                ),
                device,
                warm=False,
            )
            fast_row[f"gen_chars_per_s_{'cache' if cache else 'no_cache'}"] = args.gen_chars / seconds
    return rows


def precision_check(iters: int, scale_name: str, data, vocab, device, eval_batches: int) -> Dict:
    """TransformerLM, same seed and batches, trained in fp32 and in bf16: val loss after `iters`."""
    scale = scale_preset(scale_name)
    result = {"iters": iters, "scale": scale_name}
    for precision in (Precision.fp32, Precision.bf16):
        setup = Setup("TransformerLM", scale, replace(FAST, precision=precision), data, vocab, device)
        n_val = len(data) // 10
        train, val = setup.data[:-n_val], setup.data[-n_val:]
        setup.cpu_data, setup.data = data[:-n_val], train
        for _ in range(iters):
            setup.step()
        starts = random_starts(val, eval_batches * setup.B, setup.T, torch.Generator().manual_seed(1))
        result[f"val_loss_{precision.value}"] = evaluate(setup.model, val, starts, setup.T, Precision.fp32, device)
    result["difference"] = abs(result["val_loss_bf16"] - result["val_loss_fp32"])
    return result


def markdown(report: Dict) -> str:
    lines = [
        f"Device: {report['device']}; torch {report['torch']}; threads {report['threads']}.",
        "Measured peak matmul: "
        + ", ".join(f"{k.split('.')[-1]} {v / 1e12:.2f} TFLOP/s" for k, v in report["peaks"].items()),
        "",
        "| Model | Scale | Path | Precision | Train tokens/s | Speed-up | TFLOP/s | % of peak | Memory (MB) "
        "| Eval tokens/s | Gen chars/s cache / no cache |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    baseline = {}
    for r in report["rows"]:
        key = (r["model"], r["scale"])
        baseline.setdefault(key, r["train_tokens_per_s"])
        gen = ""
        if "gen_chars_per_s_cache" in r:
            gen = f"{r['gen_chars_per_s_cache']:,.0f} / {r['gen_chars_per_s_no_cache']:,.0f}"
        ev = f"{r['eval_tokens_per_s']:,.0f}" if "eval_tokens_per_s" in r else ""
        lines.append(
            f"| {r['model']} | {r['scale']} | {r['path']} | {r['precision']} | {r['train_tokens_per_s']:,.0f} | "
            f"{r['train_tokens_per_s'] / baseline[key]:.2f}x | {r['tflops']:.3f} | {100 * r['peak_fraction']:.1f} | "
            f"{r['memory_mb']:,.0f} | {ev} | {gen} |"
        )
    if report.get("sweep"):
        s = report["sweep"]
        lines += [
            "",
            f"Default sweep projected from these rates (6 models, {s['iters']:,} iterations, "
            f"{s['evals']} evaluations of {s['eval_iters']} batches per split): reference {s['reference_s']:,.0f} s, "
            f"fast {s['fast_s']:,.0f} s, {s['reference_s'] / s['fast_s']:.1f}x less time.",
        ]
    if report.get("precision_check"):
        p = report["precision_check"]
        lines += [
            "",
            f"bf16 vs fp32 after {p['iters']:,} iterations of TransformerLM ({p['scale']} preset, same seed): "
            f"val loss {p['val_loss_fp32']:.4f} fp32, {p['val_loss_bf16']:.4f} bf16, "
            f"difference {p['difference']:.4f} nats.",
        ]
    return "\n".join(lines) + "\n"


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m drakegpt.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--scales", nargs="+", default=["default", "large"])
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--data",
        type=Path,
        default=DRAKE if DRAKE.is_file() else None,
        help="a lyrics CSV (default: ../shared/data/Drake.csv when present, else the sample corpus)",
    )
    parser.add_argument("--seconds", type=float, default=3.0, help="timed seconds per path and model")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--eval-batches", type=int, default=20)
    parser.add_argument("--gen-chars", type=int, default=200)
    parser.add_argument("--ladder", action="store_true", help="TransformerLM: add each fast path one at a time")
    parser.add_argument("--nanogpt-best", action="store_true", help="also time nanoGPT's best settings (compile, bf16)")
    parser.add_argument("--compile", action="store_true", help="also time the fast path with train.compile=true")
    parser.add_argument(
        "--dropout-bound", action="store_true", help="TransformerLM: also time the fast path with dropout 0"
    )
    parser.add_argument("--precision-check", type=int, default=0, metavar="ITERS")
    parser.add_argument("--precision-scale", default="default")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--out", type=Path, default=Path("bench"), help="folder for bench.json and bench.md")
    args = parser.parse_args(argv)
    set_threads(args.threads)
    device = resolve_device(args.device)
    source = (
        DataConfig(source=DataSource.csv, path=str(args.data)) if args.data else DataConfig(source=DataSource.sample)
    )
    corpus = build_corpus(source, 256)
    data, vocab = torch.cat([corpus.train, corpus.val]), len(corpus.vocab)
    args.peaks = {}
    rows = []
    for scale in args.scales:
        for model in args.models:
            if args.ladder and model == "TransformerLM":
                paths = LADDER
            else:
                paths = [REFERENCE, NANOGPT, FAST] if scale == "large" else [REFERENCE, FAST]
            if args.nanogpt_best and scale == "large" and model == "TransformerLM":
                paths = paths + [NANOGPT_BEST]
            if args.compile:
                paths = paths + [COMPILED]
            if args.dropout_bound and model == "TransformerLM":
                paths = paths + [NO_DROPOUT]
            rows += bench_model(model, scale, paths, data, vocab, device, args)
            print(
                f"{model} {scale}: "
                + ", ".join(
                    f"{r['path']} {r['train_tokens_per_s']:,.0f} tok/s"
                    for r in rows
                    if r["model"] == model and r["scale"] == scale
                ),
                flush=True,
            )
    report = {
        "device": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"{platform.processor() or platform.machine()} CPU ({torch.backends.cpu.get_cpu_capability()})",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "peaks": args.peaks,
        "rows": rows,
    }
    if "default" in args.scales and len(args.models) == len(MODELS):
        report["sweep"] = projected_sweep(rows)
    if args.precision_check:
        report["precision_check"] = precision_check(
            args.precision_check, args.precision_scale, data, vocab, device, args.eval_batches
        )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "bench.md").write_text(markdown(report))
    print(markdown(report))
    return 0


def projected_sweep(rows: List[Dict], iters: int = 10000, interval: int = 500, eval_iters: int = 200) -> Dict:
    """Seconds for the seed's protocol from measured step and evaluation rates."""
    evals = iters // interval + 1
    total = {"reference_s": 0.0, "fast_s": 0.0}
    for r in rows:
        if r["scale"] != "default" or "eval_tokens_per_s" not in r:
            continue
        tokens = r["train_tokens_per_s"] * r["step_ms"] / 1e3
        eval_s = 2 * eval_iters * tokens / r["eval_tokens_per_s"]
        key = "reference_s" if r["path"] == REFERENCE.name else "fast_s"
        total[key] += iters * r["step_ms"] / 1e3 + evals * eval_s
    return {**total, "iters": iters, "evals": evals, "eval_iters": eval_iters}


if __name__ == "__main__":
    sys.exit(main())
