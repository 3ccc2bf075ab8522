"""`python run.py task=generate [model=...] [scale=...]`: sample lyrics from published weights, print and save them.

The weights come from generate.checkpoint (a .pt file or a run folder) or from the registry in
paths.models_dir: the entry of exactly this config, else the newest of this model, preset and variant.
"""

import datetime
import logging
from pathlib import Path
from typing import Any, Callable, Dict, List, Sequence

import torch

from drakegpt import registry
from drakegpt.checkpoints import load_model
from drakegpt.config import RunConfig
from drakegpt.errors import UsageError
from drakegpt.files import writable_folder
from drakegpt.identity import digest, variant
from drakegpt.run_dir import RunDir
from drakegpt.runtime import check_sampling_memory, resolve_compile, resolve_device
from drakegpt.sampling import sample

log = logging.getLogger(__name__)


def weights_path(cfg: RunConfig, resolved: Dict[str, Any], overrides: Sequence[str]) -> Path:
    if cfg.generate.checkpoint:
        path = Path(cfg.generate.checkpoint).expanduser()
        if not path.is_dir():
            return path
        run = RunDir(path)  # a run folder: the weights it published (the best ones if it stopped early)
        published = run.read_summary().get("published")
        if published and Path(published).is_file():
            return Path(published)
        return run.best if run.read_summary().get("stopped_early") else run.last
    seed = cfg.seed if any(o.split("=", 1)[0] == "seed" for o in overrides) else None
    entry = registry.choose(
        Path(cfg.paths.models_dir), cfg.model.name, cfg.scale.name, digest(resolved), variant(resolved, overrides), seed
    )
    log.info("sampling from %s", entry.describe())
    return Path(entry.weights)


def output_file(inference_dir: Path, model: str, scale: str, now: datetime.datetime) -> Path:
    """inference/generation_<Model>[_scaled]_<YYYYMMDD_HHMM>.txt, numbered rather than overwritten."""
    stem = f"generation_{model}{'_scaled' if scale == 'large' else ''}_{now:%Y%m%d_%H%M}"
    path, n = inference_dir / f"{stem}.txt", 1
    while path.exists():
        n += 1
        path = inference_dir / f"{stem}_{n}.txt"
    return path


def save_new(text: str, free_path: Callable[[], Path]) -> Path:
    """Write text into a new file: a generation that takes the same name a moment earlier keeps its file."""
    while True:
        path = free_path()
        try:
            with open(path, "x", encoding="utf-8") as f:
                f.write(text)
            return path
        except FileExistsError:
            continue


def generate_task(cfg: RunConfig, resolved: Dict[str, Any], overrides: Sequence[str]) -> str:
    """Sample, print and save."""
    device = resolve_device(cfg.device)
    inference_dir = writable_folder(Path(cfg.paths.inference_dir), "paths.inference_dir")
    path = weights_path(cfg, resolved, overrides)
    model, vocab, record = load_model(path, device)
    gen = cfg.generate
    check_sampling_memory(model.config, gen.num_samples, len(gen.prompt) + gen.length, device,
                          f"generate.num_samples={gen.num_samples}, generate.length={gen.length}")
    trained = record.run_config.get("model", {}).get("name", "?"), record.run_config.get("scale", {}).get("name", "?")
    named = dict(o.split("=", 1) for o in overrides if o.split("=", 1)[0] in ("model", "scale"))
    for key, value in zip(("model", "scale"), trained):
        if named.get(key) not in (None, value):
            raise UsageError(
                f"{path} holds {trained[0]} at scale={trained[1]}, not {key}={named[key]}; "
                f"drop {key}= or choose a matching checkpoint"
            )
    gen = cfg.generate
    unknown = vocab.unknown(gen.prompt)
    if unknown:
        raise UsageError(
            f"generate.prompt has characters the model never saw: {' '.join(repr(c) for c in unknown)}; "
            f"remove them (the vocabulary is {vocab.chars!r})"
        )
    generator = torch.Generator(device=device).manual_seed(cfg.seed)
    ids = sample(
        model,
        vocab.encode(gen.prompt)[None],
        gen.length,
        gen.temperature,
        gen.top_k,
        gen.top_p,
        gen.num_samples,
        gen.kv_cache,
        generator,
        compile=resolve_compile(gen.compile, device),
    )
    samples: List[str] = [vocab.decode(row.tolist()) for row in ids]
    text = (
        samples[0] if len(samples) == 1 else "".join(f"=== sample {i + 1} ===\n{s}\n\n" for i, s in enumerate(samples))
    )
    target = save_new(text, lambda: output_file(inference_dir, trained[0], trained[1], datetime.datetime.now()))
    print(text)
    log.info("%s characters from %s saved to %s", f"{gen.length * gen.num_samples:,}", path, target)
    return text
