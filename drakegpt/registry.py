"""Published weights: one entry per config, never overwritten by a run with another config.

models/<Model>_<scale>/seed<seed>-<digest>.pt holds the weights (checkpoints.PublishedModel) and a .json
beside it says what they are: model, scale, variant, seed, steps, val loss, the run folder, when. The
digest covers every key that changes a run's numbers (data, seed, switches, preset, iterations, ...), so
a run replaces only the weights of an earlier run of the same config.
"""

import datetime
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import List, Optional

from drakegpt import checkpoints
from drakegpt.errors import UsageError
from drakegpt.files import read_json, write_json

log = logging.getLogger(__name__)


@dataclass
class Entry:
    model: str
    scale: str
    variant: str
    seed: int
    digest: str
    step: int
    val_loss: float
    run_dir: str
    published_at: str
    weights: str = ""  # the .pt file, filled in when read back

    def describe(self) -> str:
        what = f"{self.model} scale={self.scale}" + (f" {self.variant}" if self.variant else "")
        return f"{what} seed={self.seed}, step {self.step}, val loss {self.val_loss:.4f} ({self.weights})"


def entry_path(models_dir: Path, model: str, scale: str, seed: int, digest: str) -> Path:
    return Path(models_dir) / f"{model}_{scale}" / f"seed{seed}-{digest}.pt"


def publish(models_dir: Path, record: checkpoints.PublishedModel, entry: Entry) -> Path:
    """Write the weights, then the entry that points at them: a reader never sees an entry without weights."""
    path = entry_path(models_dir, entry.model, entry.scale, entry.seed, entry.digest)
    checkpoints.save(record, path)
    entry.published_at = datetime.datetime.now().isoformat(timespec="seconds")
    write_json({k: v for k, v in asdict(entry).items() if k != "weights"}, path.with_suffix(".json"))
    return path


def entries(models_dir: Path, model: Optional[str] = None, scale: Optional[str] = None) -> List[Entry]:
    """Every published entry (of one model and scale, if given), newest first."""
    found = []
    for meta in Path(models_dir).glob("*_*/*.json"):
        weights = meta.with_suffix(".pt")
        if not weights.is_file():
            continue
        try:  # an entry damaged by hand is left out: the others are still good
            entry = Entry(**{**read_json(meta), "weights": str(weights)})
        except UsageError as e:
            log.warning("skipped a registry entry: %s", e)
            continue
        except TypeError as e:
            log.warning("skipped a registry entry: %s does not hold an entry (%s); restore it or delete it", meta, e)
            continue
        if (model is None or entry.model == model) and (scale is None or entry.scale == scale):
            found.append(entry)
    return sorted(found, key=lambda e: str(e.published_at), reverse=True)


def choose(models_dir: Path, model: str, scale: str, digest: str, variant: str, seed: Optional[int]) -> Entry:
    """The entry of exactly this config; else the newest of this model, scale and variant, of this seed if there
    is one (`seed` is also the sampling seed: another seed for the same weights must still find them)."""
    here = entries(models_dir, model, scale)
    exact = [e for e in here if e.digest == digest]
    if exact:
        return exact[0]
    matching = [e for e in here if e.variant == variant]
    matching = [e for e in matching if e.seed == seed] or matching
    if matching:
        if len(matching) > 1:
            log.info("%d published models match; using the newest. All of them:\n%s", len(matching),
                     "\n".join(f"  {e.describe()}" for e in matching))
        return matching[0]
    everything = entries(models_dir)
    listed = "; ".join(e.describe() for e in everything[:12]) if everything else "no model has been trained yet"
    wanted = f"{model} at scale={scale}" + (f" with {variant}" if variant else "")
    raise UsageError(
        f"no published {wanted} in {models_dir}. Published: {listed}. Train it with the same overrides, "
        f"or pick one with generate.checkpoint=<.pt file or run folder>"
    )
