"""`python benchmarks/bench.py`: speed and memory of every model × preset on this device.

Every way of training is a set of Hydra overrides on conf/, built by the trainer's own `build_training` and
trained with its `train_step`: the fast way (the defaults) side by side with the original DrakeGPT's way
(naive per-head attention, fp32, a for-loop AdamW; its batches stacked row by row and its evaluation batch
by batch, as the original did), nanoGPT's fp32
model at the large preset and `train.replicas=K` at the default preset. Timed rounds alternate between the
ways, so a slow moment of the machine falls on all of them alike. Writes bench.json and bench.md into --out.
"""

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import hydra
import torch
from omegaconf import OmegaConf
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

from drakegpt.build import build_training, train_step
from drakegpt.data import build_corpus, gather, random_starts
from drakegpt.errors import UsageError
from drakegpt.evaluation import Windows, evaluate
from drakegpt.runtime import resolve_device, set_threads
from drakegpt.sampling import sample
from drakegpt.schema import Precision, group_options, ladder, register_configs, validate

ROOT = Path(__file__).resolve().parent.parent
DRAKE = ROOT.parent / "shared" / "data" / "Drake.csv"
# torch counts its CUDA attention kernels but not the CPU one; counted the same way (the full T×T).
CPU_SDPA_FLOPS = {
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: lambda q, k, v, *_, **__: sdpa_flop_count(q, k, v),
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward: (
        lambda grad, q, k, v, *_, **__: sdpa_backward_flop_count(grad, q, k, v)
    ),
}
# ++ adds optimizer.algorithm.foreach, or sets it where the optimizer's file has it.
ORIGINAL_WAY = ("model.implementation=naive", "model.cpu_kernels=false", "train.precision=fp32",
            "optimizer.algorithm.fused=false", "++optimizer.algorithm.foreach=false")
# train.replicas=K at the default preset: (device, model, K, total tokens/s against one run's); reported only.
TARGETS = [("cpu", "TransformerLM", 4, 2.5), ("cpu", "every other model", 4, 1.5), ("cuda", "every model", 16, 8.0)]

# bench.md's tables: (header, key of a row, format); "Speed-up" is against the original's way, "vs one run" K=1.
COLUMNS = [("Model", "model", "{}"), ("Scale", "scale", "{}"), ("Path", "path", "{}"), ("Precision", "precision", "{}"),
           ("Replicas", "replicas", "{:d}"), ("Train tokens/s", "train_tokens_per_s", "{:,.0f}"),
           ("Speed-up", "speedup", "{:.2f}x"), ("vs one run", "replica_ratio", "{:.2f}x"),
           ("TFLOP/s", "tflops", "{:.3f}"), ("Of peak", "peak_fraction", "{:.1%}"),
           ("Memory (MB)", "memory_mb", "{:,.0f}"), ("Eval tokens/s", "eval_tokens_per_s", "{:,.0f}"),
           ("Gen chars/s, KV cache", "gen_chars_per_s_cache", "{:,.0f}"),
           ("Gen chars/s, no cache", "gen_chars_per_s_no_cache", "{:,.0f}")]
PROJECTION_COLUMNS = [("Experiment", "experiment", "{}"), ("One run at a time", "one", "{:,.0f} s"),
                      ("Faster way", "faster", "{:,.0f} s"), ("Less time", "less", "{:.1f}x")]
TARGET_COLUMNS = [("Target", "target", "{}"), ("Measured", "measured", "{:.2f}x"), ("Met", "met", "{}")]


@dataclass(frozen=True)
class Way:
    """One way of training: overrides on conf/; the reference also keeps the original's batches and evaluation."""

    name: str
    overrides: Tuple[str, ...] = ()
    original_batches: bool = False  # per-row torch.stack batches and batch-by-batch evaluation
    timed_eval: bool = False


REFERENCE = Way("reference (original)", ORIGINAL_WAY, original_batches=True, timed_eval=True)
FAST = Way("fast (default)", timed_eval=True)
NANOGPT = Way("sdpa fp32 (nanoGPT)", ("model.cpu_kernels=false", "train.precision=fp32"))
NANOGPT_BEST = Way("nanoGPT best (compile, bf16)", ("model.cpu_kernels=false", "train.precision=bf16",
                                                     "train.compile=true"))
LADDER = [
    REFERENCE,
    Way("+ batched heads, SDPA", ORIGINAL_WAY[1:], original_batches=True),
    Way("+ cheap CPU attention dropout", ORIGINAL_WAY[2:], original_batches=True),
    Way("+ fused AdamW", ("train.precision=fp32",), original_batches=True),
    Way("+ indexed batches", ("train.precision=fp32",)),
    FAST,  # + train.precision=auto
]
COMPILED = Way("fast + train.compile", ("train.compile=true",))
NO_DROPOUT = Way("fast, dropout 0 (bound)", ("model.dropout=false",))


def replicas(k: int) -> Way:
    return Way(f"fast, {k} replicas", (f"train.replicas={k}",), timed_eval=True) if k > 1 else FAST


def ways_for(model: str, scale: str, args) -> List[Way]:
    transformer = model == "TransformerLM"
    base = [REFERENCE, NANOGPT, FAST] if scale == "large" else [REFERENCE, FAST]
    ways = LADDER if args.ladder and transformer else base
    extra = [(NANOGPT_BEST, args.nanogpt_best and scale == "large" and transformer), (COMPILED, args.compile),
             (NO_DROPOUT, args.dropout_bound and transformer)]
    ks = sorted(set(args.replicas)) if scale == "default" else []
    return ways + [way for way, wanted in extra if wanted] + [replicas(k) for k in ks if k > 1]


def compose(overrides: Sequence[str], hydra_node: bool = False):
    """conf/ with `overrides` as a run would see it, typed and checked (a bad combination is a UsageError);
    `hydra_node`: the untyped config with Hydra's own node (a sweep's parameters)."""
    register_configs()
    unused = Path(tempfile.gettempdir()) / "drakegpt-bench"  # ${hydra:runtime.cwd} only resolves in a real run
    with hydra.initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        paths = [f"paths.registry_dir={unused}", f"paths.inference_dir={unused}"]
        cfg = hydra.compose("config", [*overrides, *paths], return_hydra_config=hydra_node)
    if hydra_node:
        return cfg
    cfg = OmegaConf.to_object(cfg)
    validate(cfg)
    return cfg


def variants(pattern: str) -> List[str]:
    """The variants an experiment's `glob([...], exclude=...)` sweep takes, as Hydra expands it."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    glob = OverridesParser.create().parse_override(f"variant={pattern}").value()
    return glob.filter(group_options("variant")) if hasattr(glob, "filter") else pattern.split(",")


def original_batch(data: torch.Tensor, T: int, B: int, generator: torch.Generator, device):
    """The original's get_batch: one slice per row, then torch.stack; as one replica, (1, B, T)."""
    ix = torch.randint(len(data) - T, (B,), generator=generator)
    x, y = torch.stack([data[i : i + T] for i in ix]), torch.stack([data[i + 1 : i + T + 1] for i in ix])
    return x[None].to(device), y[None].to(device)


def timed_once(fn: Callable[[], object], device, warm: bool = True) -> float:
    """Seconds of one call of fn, after a warm-up call unless warm=False; CUDA's queue drained before and after."""
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    if warm:
        fn()
    sync()
    t = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - t


class Setup:
    """The run that conf/ + `overrides` + the way's overrides build (build_training), trained with train_step."""

    def __init__(self, overrides: Sequence[str], way: Way, corpus, device: torch.device):
        self.way, self.device, self.corpus = way, device, corpus
        self.cfg = cfg = compose([*overrides, *way.overrides])
        self.K, self.B, self.T = cfg.train.replicas, cfg.scale.batch_size, cfg.scale.context_length
        self.tokens = self.K * self.B * self.T  # per step, every replica's
        self.training = build_training(cfg, len(corpus.vocab), [cfg.seed + r for r in range(self.K)], device)
        self.model, self.step_model = self.training.model, self.training.step_model
        self.precision = self.training.precision
        self.train, self.val = corpus.train.to(device), corpus.val.to(device)
        self.generator = torch.Generator().manual_seed(cfg.seed)

    def batch(self):
        if self.way.original_batches:
            return original_batch(self.corpus.train, self.T, self.B, self.generator, self.device)
        starts = random_starts(self.train, self.K * self.B, self.T, self.generator).view(self.K, self.B)
        return gather(self.train, starts.to(self.device), self.T)

    def step(self, compiled: bool = True) -> None:
        training = self.training if compiled else replace(self.training, step_model=self.model)
        train_step(training, *self.batch())

    def flops_per_step(self) -> int:
        with FlopCounterMode(display=False, custom_mapping=CPU_SDPA_FLOPS) as counter:
            self.step(compiled=False)
        return counter.get_total_flops()

    def memory_mb(self) -> float:
        """CUDA: peak allocated in a step. CPU: weights, grads and AdamW state plus what autograd saves."""
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self.step()  # the allocator counts as the host queues the kernels: no need to wait for them
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        saved: Dict[int, int] = {}

        def pack(t):
            saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            self.step(compiled=False)
        return (sum(saved.values()) + 4 * sum(p.numel() * p.element_size() for p in self.model.parameters())) / 2**20

    def original_evaluate(self, batches: int) -> None:
        """The original's evaluation: model.eval(), one batch at a time under no_grad, loss.item() each."""
        self.model.eval()
        with torch.no_grad():
            for _ in range(batches):
                self.model(*original_batch(self.corpus.val, self.T, self.B, self.generator, self.device))[1].item()
        self.model.train()

    def eval_tokens_per_s(self, batches: int) -> float:
        if self.way.original_batches:
            return batches * self.tokens / timed_once(lambda: self.original_evaluate(batches), self.device)
        starts = random_starts(self.val, batches * self.tokens // self.T, self.T, torch.Generator().manual_seed(1))
        windows = Windows(starts.view(self.K, -1), torch.zeros_like(starts).view(self.K, -1))
        return batches * self.tokens / timed_once(
            lambda: evaluate(self.model, self.val, windows, self.precision, self.device), self.device)

    def gen_chars_per_s(self, chars: int, kv_cache: bool) -> float:
        generator = torch.Generator(device=self.device).manual_seed(0)
        prompt = torch.zeros(1, 1, dtype=torch.long)
        return chars / timed_once(
            lambda: sample(self.model, prompt, chars, kv_cache=kv_cache, generator=generator), self.device, warm=False)


def build(overrides: Sequence[str], ways: Sequence[Way], corpus, device) -> List[Setup]:
    setups = []
    for way in ways:
        try:
            setups.append(Setup(overrides, way, corpus, device))
        except UsageError as e:  # e.g. BitNetLM has no original's way: naive attention cannot be BitLinear
            print(f"skipped {way.name} for {' '.join(overrides)}: {e}", flush=True)
    return setups


def timed_rounds(setups: List[Setup], min_seconds: float, rounds: int) -> List[float]:
    """Median seconds per step of each setup; rounds alternate between setups."""
    for s in setups:  # warm-up (and compilation)
        for _ in range(3 if s.step_model is not s.model else 1):
            s.step()
    steps = [max(1, int(min_seconds / rounds / max(timed_once(s.step, s.device, warm=False), 1e-6))) for s in setups]
    per_step: List[List[float]] = [[] for _ in setups]
    for _ in range(rounds):
        for s, n, times in zip(setups, steps, per_step):
            times.append(timed_once(lambda: [s.step() for _ in range(n)], s.device, warm=False) / n)
    return [statistics.median(t) for t in per_step]


def matmul_peak(device: torch.device, dtype: torch.dtype, seconds: float) -> float:
    """FLOP/s of a large square matmul, measured now: the ceiling the models are compared to."""
    n = 8192 if device.type == "cuda" else 1536
    a = torch.randn(n, n, device=device, dtype=dtype)
    reps = max(3, int(seconds / timed_once(lambda: a @ a, device)))
    return 2 * n**3 * reps / timed_once(lambda: [a @ a for _ in range(reps)], device, warm=False)


def measure(setups: List[Setup], args, gen_chars: int) -> List[Dict]:
    rows = []
    for s, seconds in zip(setups, timed_rounds(setups, args.seconds, args.rounds)):
        flops, dtype = s.flops_per_step(), torch.bfloat16 if s.precision is Precision.bf16 else torch.float32
        if str(dtype) not in args.peaks:
            args.peaks[str(dtype)] = matmul_peak(s.device, dtype, min(1.0, args.seconds))
        row = dict(model=s.cfg.model.name, scale=s.cfg.scale.name, path=s.way.name, precision=s.precision.value,
                   replicas=s.K, step_ms=seconds * 1e3, train_tokens_per_s=s.tokens / seconds,
                   tflops=flops / seconds / 1e12, peak_fraction=flops / seconds / args.peaks[str(dtype)],
                   memory_mb=s.memory_mb())
        if s.way.timed_eval and args.eval_batches:
            row["eval_tokens_per_s"] = s.eval_tokens_per_s(args.eval_batches)
        if s.way == FAST and s.cfg.model.name == "TransformerLM" and gen_chars:  # untrained: the speed is the same
            row["gen_chars_per_s_cache"] = s.gen_chars_per_s(gen_chars, kv_cache=True)
            row["gen_chars_per_s_no_cache"] = s.gen_chars_per_s(gen_chars, kv_cache=False)
        rows.append(row)
    return rows


def add_ratios(rows: List[Dict]) -> None:
    """speedup: against the original's way of the same model and preset; replica_ratio: against one run (fast)."""
    rate = {(r["model"], r["scale"], r["path"]): r["train_tokens_per_s"] for r in rows}
    scaled = {(r["model"], r["scale"]) for r in rows if r["replicas"] > 1}
    for r in rows:
        reference, one = (rate.get((r["model"], r["scale"], way.name)) for way in (REFERENCE, FAST))
        if reference:
            r["speedup"] = r["train_tokens_per_s"] / reference
        if one and (r["model"], r["scale"]) in scaled and (r["path"] == FAST.name or r["replicas"] > 1):
            r["replica_ratio"] = r["train_tokens_per_s"] / one


def projected_s(row: Dict, train, eval_tokens: int) -> float:
    """Seconds of train.iters steps plus an evaluation of `eval_tokens` (both splits) every train.eval_interval."""
    step_s = row["step_ms"] / 1e3
    return train.iters * step_s + (train.iters // train.eval_interval + 1) * eval_tokens / row["eval_tokens_per_s"]


def projected_sweep(rows: List[Dict], train, eval_tokens: Dict[str, int]) -> Optional[Dict]:
    """The default sweep of every model with a reference and a fast row: the original's way against ours, each
    with its own evaluation (`eval_tokens`: both splits, per way)."""
    by = {(r["model"], r["path"]): r for r in rows if r["scale"] == "default" and "eval_tokens_per_s" in r}
    models = [m for m, path in by if path == REFERENCE.name and (m, FAST.name) in by]
    reference = sum(projected_s(by[m, REFERENCE.name], train, eval_tokens["random"]) for m in models)
    fast = sum(projected_s(by[m, FAST.name], train, eval_tokens["exact"]) for m in models)
    return {"models": len(models), "reference_s": reference, "fast_s": fast} if models else None


def ablation(data: List[str], corpus, device, args, eval_tokens: int) -> Dict:
    """experiment=ablation one run at a time against its seeds as train.replicas, from measured rates."""
    experiment = compose(["experiment=ablation", *data], hydra_node=True)
    names, seeds = variants(str(experiment.hydra.sweeper.params.variant)), experiment.train.replicas
    measured = [v for v in names if args.ablation_variants is None or v in args.ablation_variants]
    if not measured:
        raise UsageError(f"--ablation-variants names none of experiment=ablation's: {', '.join(names)}")
    one_run = Way(FAST.name, ("train.replicas=1",), timed_eval=True)  # the experiment itself sets replicas
    setups = [Setup(["experiment=ablation", f"variant={v}", *data], way, corpus, device)
              for v in measured for way in (one_run, replicas(seeds))]
    rows = measure(setups, args, gen_chars=0)
    for i, row in enumerate(rows):
        row["variant"] = measured[i // 2]
    train, share = setups[0].cfg.train, len(names) / len(measured)  # a variant not timed: the timed ones' mean
    return {"variants": len(names), "seeds": seeds, "measured": measured,
            "one_at_a_time_s": share * sum(seeds * projected_s(r, train, eval_tokens) for r in rows[0::2]),
            "replicas_s": share * sum(projected_s(r, train, eval_tokens) for r in rows[1::2]), "rows": rows}


def precision_check(iters: int, scale: str, data: List[str], corpus, device, eval_batches: int) -> Dict:
    """TransformerLM, same seed and batches, trained in fp32 and in bf16: val loss after `iters`."""
    result = {"iters": iters, "scale": scale}
    for precision in ("fp32", "bf16"):
        s = Setup(["model=TransformerLM", f"scale={scale}", *data], Way(precision, (f"train.precision={precision}",)),
                  corpus, device)
        for _ in range(iters):
            s.step()
        starts = random_starts(s.val, max(1, eval_batches) * s.B, s.T, torch.Generator().manual_seed(1))[None]
        windows = Windows(starts, torch.zeros_like(starts))
        result[f"val_loss_{precision}"] = evaluate(s.model, s.val, windows, Precision.fp32, device).item()
    result["difference"] = abs(result["val_loss_bf16"] - result["val_loss_fp32"])
    return result


def targets(rows: List[Dict], device_type: str) -> List[Dict]:
    """Each target beside its measured ratio; "every ... model" stands for each model not named for its device."""
    ratio = {(r["model"], r["replicas"]): r["replica_ratio"] for r in rows if "replica_ratio" in r}
    found = []
    for device, model, k, target in TARGETS:
        label = f"{device.upper()}, default preset: {{}}, {k} replicas >= {target}x one run"
        if device != device_type:
            found.append({"target": label.format(model), "measured": None, "met": f"not measured: a {device} target"})
            continue
        others = [m for m in dict.fromkeys(r["model"] for r in rows) if (device, m) not in [t[:2] for t in TARGETS]]
        for m in others if "every" in model else [model]:
            measured = ratio.get((m, k))
            met = "not measured" if measured is None else "yes" if measured >= target else "no"
            found.append({"target": label.format(m), "measured": measured, "met": met})
    return found


def table(rows: List[Dict], columns: Sequence[Tuple[str, str, str]]) -> List[str]:
    """A markdown table: one column per (header, row key, format); a missing value is an empty cell."""
    return ["| " + " | ".join(header for header, _, _ in columns) + " |",
            "|" + "".join("---|" if fmt == "{}" else "---:|" for _, _, fmt in columns)] + [
        "| " + " | ".join("" if r.get(key) is None else fmt.format(r[key]) for _, key, fmt in columns) + " |"
        for r in rows]


def markdown(report: Dict) -> str:
    lines = [f"Device: {report['device']}; torch {report['torch']}; threads {report['threads']}.",
             "Measured peak matmul: " + ", ".join(f"{k.split('.')[-1]} {v / 1e12:.2f} TFLOP/s"
                                                  for k, v in report["peaks"].items()),
             "", "## Training, evaluation, generation", "", *table(report["rows"], COLUMNS)]
    sweep, abl, p = report.get("sweep"), report.get("ablation"), report.get("protocol")
    projected = []
    if sweep:
        models = f"{sweep['models']} model{'s' * (sweep['models'] > 1)}"
        projected.append({"experiment": f"default sweep ({models}): the original's way vs fast",
                          "one": sweep["reference_s"], "faster": sweep["fast_s"]})
    if abl:
        projected.append({"one": abl["one_at_a_time_s"], "faster": abl["replicas_s"], "experiment": (
            f"ablation experiment, projected ({abl['variants']} variants × {abl['seeds']} seeds; timed: "
            f"{', '.join(abl['measured'])}): vs train.replicas={abl['seeds']}")})
    if projected:
        lines += ["", f"## Projected wall time (training and evaluation only): {p['iters']:,} iterations and "
                  f"{p['evals']} evaluations a run (the original's: {p['eval_iters']} batches per split; ours: exact, "
                  f"{p['exact_tokens']:,} characters), at the measured rates", "",
                  *table([{**r, "less": r["one"] / r["faster"]} for r in projected], PROJECTION_COLUMNS)]
    if report.get("precision_check"):
        c = report["precision_check"]
        lines += ["", f"bf16 vs fp32 after {c['iters']:,} iterations of TransformerLM ({c['scale']} preset, same "
                  f"seed): val loss {c['val_loss_fp32']:.4f} fp32, {c['val_loss_bf16']:.4f} bf16, difference "
                  f"{c['difference']:.4f} nats."]
    lines += ["", "## Targets (reported, not asserted)", "", *table(report["targets"], TARGET_COLUMNS)]
    return "\n".join(lines) + "\n"


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python benchmarks/bench.py", description=__doc__.splitlines()[0])
    add = parser.add_argument
    presets = ladder()
    add("--models", nargs="+", default=presets, choices=presets)
    add("--scales", nargs="+", default=["default", "large"])
    add("--device", default="auto")
    add("--data", default=str(DRAKE) if DRAKE.is_file() else "sample",
        help="a lyrics CSV, or sample (default: ../shared/data/Drake.csv when present, else sample)")
    add("--seconds", type=float, default=3.0, help="timed seconds per path and model")
    add("--rounds", type=int, default=3)
    add("--eval-batches", type=int, default=20)
    add("--gen-chars", type=int, default=200)
    add("--replicas", nargs="*", type=int, metavar="K", help="default preset: time train.replicas=K too (default: "
        "1 2 4 8, on CUDA 1 2 4 8 16 32)")
    add("--ablation-variants", nargs="*", metavar="VARIANT", help="experiment=ablation's variants to time for its "
        "projection (default: all; none given: no projection)")
    add("--ladder", action="store_true", help="TransformerLM: add each fast path one at a time")
    add("--nanogpt-best", action="store_true", help="also time nanoGPT's best settings (compile, bf16)")
    add("--compile", action="store_true", help="also time the fast path with train.compile=true")
    add("--dropout-bound", action="store_true", help="TransformerLM: also time the fast path with dropout 0")
    add("--precision-check", type=int, default=0, metavar="ITERS", help="train TransformerLM in fp32 and in bf16")
    add("--precision-scale", default="default")
    add("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    add("--out", type=Path, default=Path("bench"), help="folder for bench.json and bench.md")
    args = parser.parse_args(argv)
    set_threads(args.threads)
    device = resolve_device(args.device)
    if args.replicas is None:
        args.replicas = [1, 2, 4, 8, 16, 32] if device.type == "cuda" else [1, 2, 4, 8]
    data = [] if args.data == "sample" else ["data=csv", f"data.path='{Path(args.data).resolve()}'"]
    longest = max(compose([f"scale={s}", *data]).scale.context_length for s in args.scales)
    corpus = build_corpus(compose(data).data, longest)
    args.peaks, rows = {}, []
    for scale in args.scales:
        for model in args.models:
            setups = build([f"model={model}", f"scale={scale}", *data], ways_for(model, scale, args), corpus, device)
            rows += measure(setups, args, args.gen_chars)
            print(f"{model} {scale}: " + ", ".join(f"{r['path']} {r['train_tokens_per_s']:,.0f} tok/s" for r in rows
                                                   if r["model"] == model and r["scale"] == scale), flush=True)
    add_ratios(rows)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else (
        f"{platform.processor() or platform.machine()} CPU ({torch.backends.cpu.get_cpu_capability()})")
    report = {"device": name, "torch": torch.__version__, "threads": torch.get_num_threads(), "peaks": args.peaks,
              "rows": rows, "targets": targets(rows, device.type)}
    if args.eval_batches:
        cfg = compose(data)
        train, B, T = cfg.train, cfg.scale.batch_size, cfg.scale.context_length
        eval_tokens = {"random": 2 * train.eval_iters * B * T, "exact": 2 * len(corpus.val)}
        report["protocol"] = {"iters": train.iters, "evals": train.iters // train.eval_interval + 1,
                              "eval_iters": train.eval_iters, "exact_tokens": eval_tokens["exact"]}
        report["sweep"] = projected_sweep(rows, train, eval_tokens)
        if "default" in args.scales and "TransformerLM" in args.models and args.ablation_variants != []:
            report["ablation"] = ablation(data, corpus, device, args, eval_tokens["exact"])
    if args.precision_check:
        report["precision_check"] = precision_check(
            args.precision_check, args.precision_scale, data, corpus, device, args.eval_batches)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "bench.md").write_text(markdown(report))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
