"""DrakeGPT: a character-level GPT grown step by step, trained and compared with Hydra sweeps."""

__version__ = "0.1.0"
