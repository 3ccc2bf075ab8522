"""Command-line overrides, read in one place: their keys and values, and keys that no config has.

Hydra refuses `train.iter=5` in a few lines whose hint suggests `+train.iter=5`, which it then accepts and
ignores: a typo that silently trains the default. `unknown_key` names the closest known key instead.
"""

import difflib
from dataclasses import fields, is_dataclass
from typing import Any, Dict, Iterable, List, Optional, Sequence, Set, get_args, get_origin

# Config groups: `group=option` chooses a file. Their names are keys too.
GROUPS = ("model", "scale", "optimizer", "data", "logger", "remedy", "variant", "debug", "experiment",
          "hparams_search")


def key_of(override: str) -> str:
    """'+train.iters=5' -> 'train.iters'; '~model.norm' -> 'model.norm'."""
    return override.split("=", 1)[0].lstrip("+~")


def value_of(override: str) -> Optional[str]:
    return override.split("=", 1)[1] if "=" in override else None


def as_dict(overrides: Iterable[str]) -> Dict[str, Optional[str]]:
    """key -> value; the last override of a key wins, as in Hydra."""
    return {key_of(o): value_of(o) for o in overrides}


def is_under(key: str, prefixes: Sequence[str]) -> bool:
    return any(key == p or key.startswith(p + ".") for p in prefixes)


def _known_keys(schema: Any, prefix: str = "") -> Set[str]:
    """Every key of a dataclass schema, and `prefix.*` for the free-form nodes (typed Any)."""
    keys = set()
    for f in fields(schema):
        key = f"{prefix}{f.name}"
        keys.add(key)
        kind = f.type
        if get_origin(kind) is not None:  # Optional[X], List[X]
            kind = next((a for a in get_args(kind) if a is not type(None)), kind)
        if is_dataclass(kind):
            keys |= _known_keys(kind, key + ".")
        elif kind is Any:
            keys.add(key + ".*")
    return keys


def unknown_key(overrides: Sequence[str], schema: Any) -> Optional[str]:
    """One line naming the first override whose key no config has, and the closest key that exists; else None.

    Hydra's own keys (hydra.*, hydra/launcher=...) and the arguments of a `_target_` node (optimizer.algorithm.*,
    optimizer.schedule.*: checked when the object is built) are left to them."""
    known = _known_keys(schema) | set(GROUPS)
    free = [k[:-2] for k in known if k.endswith(".*")]
    for override in overrides:
        if override.startswith("-") or ("=" not in override and not override.startswith("~")):
            continue  # a flag of run.py or Hydra's, not an override
        key = key_of(override).split("@", 1)[0]
        if key in known or key.startswith("hydra") or "/" in key or is_under(key, free):
            continue
        close = difflib.get_close_matches(key, sorted(k for k in known if not k.endswith(".*")), n=1, cutoff=0.6)
        hint = f"did you mean {close[0]}?" if close else "see `python run.py --cfg job` for every key"
        return f"{key} is not a key of this config ({override}); {hint}"
    return None


def sweep_keys(overrides: Sequence[str]) -> List[str]:
    """The keys an override list sweeps over (a comma list, glob, range, choice, interval)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides([o for o in overrides if "=" in o])
    swept = {o.get_key_element().lstrip("+~"): o.is_sweep_override() for o in parsed}  # a later override wins
    return [key for key, sweeps in swept.items() if sweeps]
