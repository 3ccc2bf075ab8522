"""Plain nn.Modules built from a ModelConfig: nothing here knows about Hydra, files or W&B.

config.py (the ideas, torch-free) · layers.py (replicated Linear, Embedding, norms) · bitnet.py (BitLinear)
· attention.py (the two attention implementations, the KV cache) · blocks.py · language_model.py.
"""
