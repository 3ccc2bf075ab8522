"""What identifies a run: the part of its config that decides its numbers, a digest of that, and its variant.

The fingerprint decides whether a run may be resumed; the digest (of the fingerprint and of what `auto`
resolved to: device, precision, compile) which published weights a run may replace. The variant is what a
person reads in a W&B run name, a report row and a registry entry, as `key=value` parts:

1. the switches that differ from the model's preset (the config's `preset` node records the preset as its
   file has it), e.g. `norm=none`;
2. the config groups chosen otherwise than their default, where that is not already a column or part 1:
   `optimizer=muon`, `remedy=lr_decay`, `data=csv`;
3. every other override that can change the numbers, e.g. `scale.dropout=0.35`, `train.iters=300`.
"""

import hashlib
import json
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Dict, List, Optional, Sequence

from omegaconf import OmegaConf

from drakegpt.models.config import switch_names
from drakegpt.overrides import GROUPS, is_under, key_of
from drakegpt.schema import RUN_INDEPENDENT_KEYS

# Groups shown by a column (model, scale), by the switch diff (variant) or not at all (presets of presets).
GROUPS_NOT_IN_VARIANT = ("model", "scale", "variant", "logger", "debug", "experiment", "hparams_search")


@dataclass
class RunIdentity:
    """What the task knows of the run beyond its config: its variant, Hydra's choices, the W&B group."""

    variant_parts: List[str] = field(default_factory=list)
    name_parts: List[str] = field(default_factory=list)  # what differs between the jobs of a sweep
    choices: Dict[str, Optional[str]] = field(default_factory=dict)
    overrides: List[str] = field(default_factory=list)
    group: Optional[str] = None
    jobs_left: int = 0  # in the sweep, after this one


def fingerprint(config: Dict[str, Any]) -> Dict[str, Any]:
    """The resolved config without the keys that never change a run's numbers."""
    kept = OmegaConf.create(config)
    for key in RUN_INDEPENDENT_KEYS:
        parent, _, leaf = key.rpartition(".")
        node = OmegaConf.select(kept, parent) if parent else kept
        if node is not None and leaf in node:
            node.pop(leaf)
    return OmegaConf.to_container(kept)


def config_diff(old: Dict[str, Any], new: Dict[str, Any], limit: int = 3) -> str:
    """The first `limit` keys whose values differ between two configs' fingerprints, as `key: old -> new`."""
    a, b = _flat(fingerprint(old)), _flat(fingerprint(new))
    changed = [f"{k}: {_text(a.get(k, '(none)'))} -> {_text(b.get(k, '(none)'))}"
               for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
    return "; ".join(changed[:limit]) + (f"; and {len(changed) - limit} more" if len(changed) > limit else "")


def _flat(tree: Any, prefix: str = "") -> Dict[str, Any]:
    if not (isinstance(tree, dict) and tree):
        return {prefix: tree}
    flat = {}
    for key, value in tree.items():
        flat.update(_flat(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def digest(config: Dict[str, Any], resolved: Optional[Dict[str, str]] = None) -> str:
    """Eight hex digits of the fingerprint and of what `auto` resolved to: equal digests, equal numbers."""
    text = json.dumps([fingerprint(config), resolved or {}], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def _text(value: Any) -> str:
    if isinstance(value, Enum):
        value = value.value
    return str(value).lower() if isinstance(value, bool) else str(value)


def switch_diff(config: Dict[str, Any]) -> List[str]:
    """`key=value` for every switch of the config's model that its preset (config["preset"]) sets otherwise."""
    model, preset = config.get("model", {}), config.get("preset") or {}
    return [f"{k}={_text(model[k])}" for k in switch_names()
            if k in model and k in preset and _text(preset[k]) != _text(model[k])]


def choice_diff(choices: Dict[str, Optional[str]], defaults: Dict[str, Optional[str]]) -> List[str]:
    """`group=option` for every config group chosen otherwise than its default (part 2 above)."""
    return [f"{g}={o}" for g, o in choices.items()
            if g in GROUPS and g not in GROUPS_NOT_IN_VARIANT and o != defaults.get(g)]


def variant_parts(config: Dict[str, Any], overrides: Sequence[str], choices: Dict[str, Optional[str]],
                  defaults: Dict[str, Optional[str]]) -> List[str]:
    """Parts 1, 2 and 3 above, in that order."""
    chosen = {}  # the last override of each key wins, as in Hydra
    for override in overrides:
        key = key_of(override)
        if key in GROUPS or key == "seed" or is_under(key, ("model", "hydra", *RUN_INDEPENDENT_KEYS)):
            continue
        chosen[key] = override.lstrip("+~")
    return switch_diff(config) + choice_diff(choices, defaults) + list(chosen.values())
