"""What identifies a run: the part of its config that decides its numbers, a digest of that, and its variant.

The fingerprint decides whether a run may be resumed and which published weights a run may replace.
The variant is what a person reads in a W&B run name, a report row and a registry entry: the switches
that differ from the model's preset, then every other override but the seed (e.g. `norm=none`,
`scale.dropout=0.35`, `remedy=lr_decay`).
"""

import hashlib
import json
from enum import Enum
from typing import Any, Dict, List, Sequence

from omegaconf import OmegaConf

from drakegpt.config import RUN_INDEPENDENT_KEYS, preset_switches

# Overrides that name the preset or the seed, or whose effect the switch diff already shows.
NOT_IN_VARIANT = ("model", "scale", "seed", "variant", "experiment", "hparams_search")


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


def digest(config: Dict[str, Any]) -> str:
    """Eight hex digits of the fingerprint: equal configs, equal digests."""
    text = json.dumps(fingerprint(config), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def _text(value: Any) -> str:
    if isinstance(value, Enum):
        value = value.value
    return str(value).lower() if isinstance(value, bool) else str(value)


def switch_diff(model: Dict[str, Any]) -> List[str]:
    """`key=value` for every switch of `model` (a resolved model node) that its preset sets otherwise."""
    preset = preset_switches(model.get("name", ""))
    return [f"{k}={_text(v)}" for k, v in model.items() if k != "name" and k in preset and _text(preset[k]) != _text(v)]


def is_key_under(key: str, prefixes: Sequence[str]) -> bool:
    return any(key == p or key.startswith(p + ".") for p in prefixes)


def variant_parts(config: Dict[str, Any], overrides: Sequence[str]) -> List[str]:
    """The switch diff, then the overrides that are neither a preset, the seed, a model switch nor run-independent."""
    chosen = {}  # the last override of each key wins, as in Hydra
    for override in overrides:
        key = override.split("=", 1)[0].lstrip("+~")
        if key in NOT_IN_VARIANT or is_key_under(key, ("model", "hydra", *RUN_INDEPENDENT_KEYS)):
            continue
        chosen[key] = override.lstrip("+~")
    return switch_diff(config.get("model", {})) + list(chosen.values())


def variant(config: Dict[str, Any], overrides: Sequence[str]) -> str:
    return ",".join(variant_parts(config, overrides))
