"""`python run.py task=generate [model=...] [scale=...]`: sample lyrics from published weights, print and save them.

The weights come from generate.checkpoint (published weights, a packed file, a checkpoint or a run folder)
or from the registry: the most recent published weights of the model the config names (its preset and
switches, at its scale), narrowed by the other overrides given (registry.choose).
"""

import datetime
import logging
from pathlib import Path
from typing import Any, Callable, Dict, List, Sequence

import torch
from tqdm import tqdm

from drakegpt import registry
from drakegpt.checkpoints import load_model
from drakegpt.errors import UsageError
from drakegpt.files import os_reason, writable_folder
from drakegpt.overrides import GROUPS, as_dict, is_under
from drakegpt.run_dir import RunDir
from drakegpt.runtime import check_sampling_memory, resolve_compile, resolve_device
from drakegpt.sampling import sample_steps
from drakegpt.schema import RunConfig

log = logging.getLogger(__name__)
# Overrides that say which model to sample, or how, rather than which run made it.
NOT_NARROWING = ("model", "scale", "variant", "seed", "preset", "hydra", "generate", "paths", "task", "device",
                 "logger", "debug")


def weights_path(cfg: RunConfig, resolved: Dict[str, Any], overrides: Sequence[str]) -> Path:
    if cfg.generate.checkpoint:
        path = Path(cfg.generate.checkpoint).expanduser()
        return _in_run_folder(path) if path.is_dir() else path
    given = {k: v for k, v in as_dict(overrides).items() if not is_under(k, NOT_NARROWING)}
    narrowing = {k: _select(resolved, k) for k in given if k not in GROUPS}
    choices = {k: v for k, v in given.items() if k in GROUPS}  # optimizer=muon, data=csv, remedy=lr_decay
    seed = cfg.seed if "seed" in as_dict(overrides) else None
    entry = registry.choose(Path(cfg.paths.registry_dir), cfg.model.name, cfg.scale.name, resolved["model"],
                            narrowing, choices, seed)
    return entry.weights


def _select(config: Dict[str, Any], key: str) -> Any:
    node: Any = config
    for part in key.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def _in_run_folder(path: Path) -> Path:
    """The weights a run folder published (the best ones if it stopped early), or its checkpoint; a replica
    group's folder names its replicas."""
    run = RunDir(path)
    if not run.holds_run():
        seeds = sorted(p.name for p in path.glob("seed=*") if RunDir(p).holds_run())
        if seeds:  # a value with '=' must be quoted for Hydra: the hint is pasted as it is printed
            raise UsageError(f"{path} holds a group of replicas ({', '.join(seeds)}); pick one with "
                             f"'generate.checkpoint=\"{path / seeds[0]}\"'")
        raise UsageError(f"{path} holds no run (no summary.json, no checkpoints); point generate.checkpoint at a run "
                         f"folder or a weights file")
    summary = run.read_summary()
    published = summary.get("published")
    if published is not None and not isinstance(published, str):
        raise UsageError(f"{run.summary} cannot be read (its 'published' is {published!r}, not a path); restore it "
                         f"or delete it")
    if published and Path(published).is_file():
        return Path(published)
    chosen = run.best if summary.get("stopped_early") else run.last
    if not chosen.is_file():
        raise UsageError(f"{path} has neither published weights nor {chosen.relative_to(path)}; train it again")
    return chosen


def output_file(inference_dir: Path, model: str, scale: str, now: datetime.datetime) -> Path:
    """inference/generation_<Model>[_scaled]_<YYYYMMDD_HHMM>.txt, numbered rather than overwritten."""
    stem = f"generation_{model}{'_scaled' if scale == 'large' else ''}_{now:%Y%m%d_%H%M}"
    path, n = inference_dir / f"{stem}.txt", 1
    while path.exists() or path.is_symlink():
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
    named = {k: v for k, v in as_dict(overrides).items() if k in ("model", "scale")}
    for key, value in zip(("model", "scale"), trained):
        if named.get(key) not in (None, value):
            raise UsageError(f"{path} holds {trained[0]} at scale={trained[1]}, not {key}={named[key]}; "
                             f"drop {key}= or choose a matching checkpoint")
    unknown = vocab.unknown(gen.prompt)
    if unknown and "generate.prompt" not in as_dict(overrides):  # the default prompt: a text without newlines
        log.info("the vocabulary has no %r: sampling from its first character %r instead", gen.prompt, vocab.chars[0])
        gen.prompt, unknown = vocab.chars[0], []
    if unknown:
        raise UsageError(
            f"generate.prompt has characters the model never saw: {' '.join(repr(c) for c in unknown)}; "
            f"remove them (the vocabulary is {vocab.chars!r})"
        )
    generator = torch.Generator(device=device).manual_seed(cfg.seed)
    steps = sample_steps(model, vocab.encode(gen.prompt), gen.length, gen.temperature, gen.top_k, gen.top_p,
                         gen.num_samples, gen.kv_cache, generator, compile=resolve_compile(gen.compile, device))
    ids = vocab.encode(gen.prompt)[None].repeat(gen.num_samples, 1)
    for ids in tqdm(steps, total=gen.length, desc="sampling", unit="char", disable=None if gen.length > 2000 else True,
                    leave=False, dynamic_ncols=True):
        pass
    samples: List[str] = [vocab.decode(row.tolist()) for row in ids]
    text = (samples[0] if len(samples) == 1
            else "".join(f"=== sample {i + 1} ===\n{s}\n\n" for i, s in enumerate(samples)))
    print(text, flush=True)  # before saving: a folder lost meanwhile costs the file, not the text
    try:
        target = save_new(text, lambda: output_file(inference_dir, trained[0], trained[1], datetime.datetime.now()))
    except OSError as e:
        raise UsageError(f"could not save the text (printed above) into {inference_dir}: {os_reason(e)}; check "
                         f"paths.inference_dir") from None
    log.info("%s characters from %s saved to %s", f"{gen.length * gen.num_samples:,}", path, target)
    return text
