"""DrakeGPT: a character-level GPT grown one idea at a time, and the harness that trains and compares it.

    from drakegpt import load_pretrained, sample_text
    model, vocab = load_pretrained("registry/TransformerLM_default/seed1337-<digest>.safetensors")
    print(sample_text(model, vocab, "\n", 200))
"""

import importlib

# Imported on first use: composing a config (run.py --help, --cfg) must not pay for torch.
_LAZY = {"load_pretrained": "drakegpt.checkpoints", "sample_text": "drakegpt.sampling"}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'drakegpt' has no attribute {name!r}")
