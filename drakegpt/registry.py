"""Published weights: one entry per config, never overwritten by a run with another config.

registry/<Model>_<scale>/seed<seed>-<digest>.safetensors holds a finished run's weights and the .json
beside it what they are (checkpoints.publish_files): model, preset, switches, variant, seed, step, val
loss, the run folder, when. The digest covers every key that changes a run's numbers, so a run replaces
only the weights of an earlier run of the same config.

`task=generate` chooses among the entries of the model it names (class, switches, preset) the most recent;
the overrides it is given narrow the choice (`seed=2`, `train.iters=300`, `data=csv`, ...).

    python -m drakegpt.registry list [--model M] [--scale S] [--seed N] [--before DATE]
    python -m drakegpt.registry remove (filters | --all)
"""

import datetime
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from drakegpt.checkpoints import CONFIG_SUFFIX, WEIGHTS_SUFFIX, Pretrained, publish_files
from drakegpt.errors import OneLineParser, UsageError
from drakegpt.files import read_json
from drakegpt.models.config import ModelConfig

log = logging.getLogger(__name__)
MAX_LISTED = 10  # entries listed under a refusal


@dataclass
class Entry:
    model: str
    scale: str
    variant: str
    seed: int
    step: int
    val_loss: float
    published_at: str
    switches: Dict[str, Any]
    choices: Dict[str, Any]
    run_config: Dict[str, Any]
    weights: Path

    def describe(self) -> str:
        what = f"{self.model} scale={self.scale}" + (f" {self.variant}" if self.variant else "")
        return (f"{what} seed={self.seed}, step {self.step:,}, val loss {self.val_loss:.4f}, "
                f"published {self.published_at.replace('T', ' ')} ({self.weights})")


def publish(registry_dir, config: ModelConfig, vocab: str, state, record: Dict[str, Any],
            run_config: Dict[str, Any]) -> Path:
    """Write the weights and their config; returns the .safetensors file."""
    stem = check_target(registry_dir, record["model"], record["scale"], record["seed"], record["digest"])
    record = {**record, "published_at": datetime.datetime.now().isoformat(timespec="seconds")}
    return publish_files(stem, Pretrained("LanguageModel", config.to_dict(), vocab, state, record, run_config))


def check_folder(registry_dir, model: str, scale: str) -> Path:
    """The model's folder in the registry, refused (before training, too) where it is a link out of it or a file."""
    folder = Path(registry_dir) / f"{model}_{scale}"
    _not_a_link(folder, registry_dir)
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"{folder} is not a folder, where the registry keeps {model}_{scale}'s weights; move it, or "
                         f"choose another paths.registry_dir")
    return folder


def check_target(registry_dir, model: str, scale: str, seed: int, digest: str) -> Path:
    """The stem the run's weights will be published at, refused (before training, too) where a write would
    follow a link or land on a folder."""
    stem = check_folder(registry_dir, model, scale) / f"seed{seed}-{digest}"
    for path in (stem.with_suffix(WEIGHTS_SUFFIX), stem.with_suffix(CONFIG_SUFFIX)):
        _not_a_link(path, registry_dir)
        if path.is_dir():
            raise UsageError(f"{path} is a folder, where the run publishes a file; move it, or choose another "
                             f"paths.registry_dir")
    return stem


def _not_a_link(path: Path, registry_dir) -> None:
    if path.is_symlink():  # weights are published inside the registry, never through a link out of it
        raise UsageError(f"{path} is a symbolic link: weights are published only inside {registry_dir}; remove the "
                         f"link, or choose another paths.registry_dir")


def _entry(meta: Path) -> Entry:
    """The entry of one .json, or ValueError saying what is wrong with it."""
    data = read_json(meta)
    record = data.get("record")
    if not isinstance(record, dict):
        raise ValueError("no record")
    kinds = {"model": str, "scale": str, "variant": str, "seed": int, "step": int, "val_loss": (int, float),
             "published_at": str, "switches": dict, "choices": dict}
    for key, kind in kinds.items():
        if not isinstance(record.get(key), kind) or isinstance(record.get(key), bool):
            raise ValueError(f"its {key} is {record.get(key)!r}")
    run_config = data.get("run_config")
    if not isinstance(run_config, dict):
        raise ValueError("no run config")
    return Entry(**{k: record[k] for k in kinds}, run_config=run_config, weights=meta.with_suffix(WEIGHTS_SUFFIX))


def entries(registry_dir, model: Optional[str] = None, scale: Optional[str] = None) -> List[Entry]:
    """Every published entry (of one model and scale, if given), the most recent first. A damaged entry is left
    out with a warning, whatever is wrong in it: the others are still good."""
    found = []
    for meta in sorted(Path(registry_dir).glob(f"*_*/*{CONFIG_SUFFIX}")):
        if not meta.with_suffix(WEIGHTS_SUFFIX).is_file() or meta.parent.is_symlink():
            continue  # a folder linked in from elsewhere is not the registry's: never listed, never removed
        try:
            entry = _entry(meta)
        except (UsageError, ValueError, TypeError) as e:
            log.warning("skipped a registry entry: %s is damaged (%s); restore it or delete it", meta, e)
            continue
        if (model is None or entry.model == model) and (scale is None or entry.scale == scale):
            found.append(entry)
    return sorted(found, key=lambda e: (e.published_at, e.weights.stat().st_mtime_ns), reverse=True)


def _value(config: Dict[str, Any], key: str) -> Any:
    node: Any = config
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def choose(registry_dir, model: str, scale: str, switches: Dict[str, Any], narrowing: Dict[str, Any],
           choices: Dict[str, Any], seed: Optional[int]) -> Entry:
    """The most recent entry of this model (its class and switches) at this preset whose run had every
    `narrowing` key's value and `choices`' config groups; of `seed` if there is one (`seed` is also the
    sampling seed: another seed for the same weights must still find them)."""
    here = [e for e in entries(registry_dir, model, scale) if _same_switches(e.switches, switches)]
    matching = [e for e in here if all(str(_value(e.run_config, k)) == str(v) for k, v in narrowing.items())
                and all(str(e.choices.get(g)) == str(o) for g, o in choices.items())]
    matching = [e for e in matching if e.seed == seed] or matching
    if matching:
        note = f"the most recent of {len(matching)} matching" if len(matching) > 1 else "the only match"
        log.info("sampling from %s: %s; pick another with generate.checkpoint=<file>, or narrow the choice with "
                 "overrides (seed=..., train.iters=...); list them with python -m drakegpt.registry list",
                 matching[0].describe(), note)
        return matching[0]
    asked = {**choices, **narrowing}
    wanted = f"{model} at scale={scale}" + (f" with {', '.join(f'{k}={v}' for k, v in asked.items())}" if asked else "")
    listed = here if here else entries(registry_dir)
    lines = [f"  {e.describe()}" for e in listed[:MAX_LISTED]]
    if len(listed) > MAX_LISTED:
        lines.append(f"  ... and {len(listed) - MAX_LISTED} more: python -m drakegpt.registry list")
    heading = "nothing is published yet" if not listed else f"published {model} at scale={scale}:" if here else \
        "published:"
    raise UsageError(
        f"no published {wanted} in {registry_dir}; train it first (python run.py model={model} scale={scale} ...), "
        f"or pick weights with generate.checkpoint=<file or run folder>\n" + "\n".join([heading, *lines])
    )


def _same_switches(a: Dict[str, Any], b: Dict[str, Any]) -> bool:
    ignored = ("name", "implementation", "cpu_kernels")  # how the same function is computed, not what it is
    return all(str(a.get(k)) == str(b.get(k)) for k in set(a) | set(b) if k not in ignored)


def matching(registry_dir, model: Optional[str], scale: Optional[str], seed: Optional[int], variant: Optional[str],
             before: Optional[str]) -> List[Entry]:
    return [e for e in entries(registry_dir, model, scale)
            if (seed is None or e.seed == seed) and (variant is None or e.variant == variant)
            and (before is None or e.published_at < before)]


def remove(entry: Entry) -> None:
    """The entry's two files, and its model's folder when nothing else is left in it."""
    for path in (entry.weights.with_suffix(CONFIG_SUFFIX), entry.weights):
        path.unlink(missing_ok=True)
    folder = entry.weights.parent
    if folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = OneLineParser(prog="python -m drakegpt.registry",
                                     description="List or remove published weights.")
    parser.add_argument("action", choices=["list", "remove"])
    parser.add_argument("--dir", type=Path, default=Path("registry"), help="the registry folder (default: registry)")
    parser.add_argument("--model", help="e.g. TransformerLM")
    parser.add_argument("--scale", help="e.g. default")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--variant", help="e.g. norm=none ('' for the presets themselves)")
    parser.add_argument("--before", help="published before this date, e.g. 2026-12-01")
    parser.add_argument("--all", action="store_true", help="remove: every entry")
    args = parser.parse_args(argv)
    if args.before is not None:
        try:
            args.before = datetime.datetime.fromisoformat(args.before).isoformat(timespec="seconds")
        except ValueError:
            print(f"error: --before {args.before} is not a date; write it as 2026-12-01 (or 2026-12-01T18:30)",
                  file=sys.stderr)
            return 2
    if not args.dir.is_dir():
        print(f"error: {args.dir} is not a folder; pass the registry folder with --dir", file=sys.stderr)
        return 2
    filters = (args.model, args.scale, args.seed, args.variant, args.before)
    found = matching(args.dir, *filters)
    if args.action == "remove" and all(f is None for f in filters) and not args.all:
        print("error: remove takes at least one filter (--model, --scale, --seed, --variant, --before), or --all",
              file=sys.stderr)
        return 2
    for entry in found:
        if args.action == "remove":
            remove(entry)
            print(f"removed {entry.describe()}")
        else:
            print(entry.describe())
    if args.action == "list":
        print(f"{len(found)} published" + ("" if all(f is None for f in filters) else " matching"))
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    sys.exit(main())
