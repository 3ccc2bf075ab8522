"""`python -m drakegpt.pack <weights.pt>`: a trained BitNetLM with its ternary weights packed four to a byte.

The packed file holds, for every BitLinear, its codes in {-1, 0, +1} at 2 bits each and its scale; the
embeddings, norms and LM head stay as they are. `python run.py task=generate generate.checkpoint=<packed>`
samples from it and gives the same text as the latent weights it came from (same seed).
"""

import argparse
import sys
from pathlib import Path
from typing import List, Optional

import torch

from drakegpt import checkpoints
from drakegpt.checkpoints import PackedModel
from drakegpt.errors import UsageError
from drakegpt.models.bitnet import packed_weights


def pack(source: Path, target: Path) -> dict:
    """Write the packed model; return the sizes in bytes of the quantised layers (fp32 and packed) and files."""
    model, _, record = checkpoints.load_model(source, torch.device("cpu"))
    packed = packed_weights(model)
    if not packed:
        raise UsageError(f"{source} has no BitLinear layers to pack; train model=BitNetLM (or model.linear=bitlinear)")
    dense = {k: v for k, v in model.replica_state(0).items() if k not in packed}
    checkpoints.save(
        PackedModel(record.model_class, record.model_config, record.vocab, dense, packed, record.step,
                    record.val_loss, record.run_config),
        target,
    )
    fp32 = sum(int(e["shape"].prod()) * 4 for e in packed.values())
    stored = sum(e["codes"].numel() + e["scale"].numel() * 4 for e in packed.values())
    return {"quantised_fp32": fp32, "quantised_packed": stored, "file": source.stat().st_size,
            "packed_file": target.stat().st_size}


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m drakegpt.pack", description=__doc__.splitlines()[0])
    parser.add_argument("weights", type=Path, help="a published BitNetLM, e.g. models/BitNetLM_default/seed1-<id>.pt")
    parser.add_argument("--out", type=Path, help="default: <weights>.packed.pt beside it")
    args = parser.parse_args(argv)
    target = args.out or args.weights.with_suffix(".packed.pt")
    try:
        sizes = pack(args.weights, target)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(
        f"wrote {target}: quantised layers {sizes['quantised_fp32']:,} bytes in fp32, {sizes['quantised_packed']:,} "
        f"packed ({sizes['quantised_fp32'] / sizes['quantised_packed']:.1f}x smaller); file {sizes['file']:,} -> "
        f"{sizes['packed_file']:,} bytes"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
