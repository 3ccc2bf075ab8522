"""`python -m drakegpt.pack <weights>`: a trained BitNet model with its quantised weights packed into bits.

The packed file holds, for every BitLinear, its codes (2 bits each for b1.58's {-1, 0, +1}, 1 bit for
BitNet's {-1, +1}) and its scales; the embeddings, norms and LM head stay as they are.
`python run.py task=generate generate.checkpoint=<packed file>` samples from it and gives the same text as
the latent weights it came from (same seed).
"""

import sys
from pathlib import Path
from typing import List, Optional

import torch

from drakegpt import checkpoints
from drakegpt.checkpoints import PackedModel
from drakegpt.errors import OneLineParser, UsageError
from drakegpt.files import os_reason
from drakegpt.models.bitnet import packed_weights


def pack(source: Path, target: Path) -> dict:
    """Write the packed model; return the sizes in bytes of the quantised layers (fp32 and packed) and files."""
    source, target = Path(source).expanduser(), Path(target).expanduser()
    if source.suffix == ".pt" and source.is_file():
        if isinstance(checkpoints.load(source, checkpoints.RunCheckpoint, PackedModel), PackedModel):
            raise UsageError(f"{source} is packed already; pack the published weights it came from")
    model, _, record = checkpoints.load_model(source, torch.device("cpu"))
    packed = packed_weights(model)
    if not packed:
        raise UsageError(f"{source} has no BitLinear layers to pack; train model=BitNetLM (or model.linear=bitlinear "
                         f"or binary)")
    _check_target(source, target)
    dense = {k: v for k, v in model.replica_state(0).items() if k not in packed}
    record_info = {**record.record, "packed_from": str(source)}
    try:
        checkpoints.save(PackedModel(record.model_class, record.model_config, record.vocab, dense, packed,
                                     checkpoints.weights_digest(dense, packed), record_info, record.run_config), target)
    except OSError as e:
        raise UsageError(f"--out {target} cannot be written ({os_reason(e)}); choose a file in a folder you can "
                         f"write to") from None
    fp32 = sum(int(e["shape"].prod()) * 4 for e in packed.values())
    stored = sum(e["codes"].numel() + e["divisors"].numel() * 4 for e in packed.values())
    return {"quantised_fp32": fp32, "quantised_packed": stored, "file": _size(source), "packed_file": _size(target)}


def _check_target(source: Path, target: Path) -> None:
    """The packed file is a new file: never the source, a folder, a link or anything already there."""
    if target.exists() or target.is_symlink():
        same = target.exists() and source.exists() and target.resolve() == source.resolve()
        what = "is the file being packed" if same else "already exists" if target.is_file() else "is not a new file"
        raise UsageError(f"--out {target} {what}; choose a new file name (nothing is overwritten)")
    if not target.parent.is_dir():
        raise UsageError(f"--out {target}: the folder {target.parent} does not exist; create it or choose another")
    if target.suffix != ".pt":
        raise UsageError(f"--out {target} must end in .pt: task=generate reads a packed file by that suffix")


def _size(path: Path) -> int:
    """The bytes of a weights file: published weights are a .safetensors and its .json."""
    path = Path(path)
    if path.suffix == ".pt":
        return path.stat().st_size
    stem = path.with_suffix("")
    return sum(p.stat().st_size for p in (stem.with_suffix(".safetensors"), stem.with_suffix(".json")) if p.is_file())


def main(argv: Optional[List[str]] = None) -> int:
    parser = OneLineParser(prog="python -m drakegpt.pack", description=__doc__.splitlines()[0])
    parser.add_argument("weights", type=Path,
                        help="published BitNet weights, e.g. registry/BitNetLM_default/seed1337-<digest>.safetensors")
    parser.add_argument("--out", type=Path, help="a new file; default: <weights>.packed.pt beside them")
    args = parser.parse_args(argv)
    try:
        if not args.weights.name:
            raise UsageError(f"{args.weights} is not a weights file; give a published .safetensors file")
        target = args.out or args.weights.with_suffix("").with_suffix(".packed.pt")
        sizes = pack(args.weights, target)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(
        f"wrote {target}: quantised layers {sizes['quantised_fp32']:,} bytes in fp32, {sizes['quantised_packed']:,} "
        f"packed ({sizes['quantised_fp32'] / sizes['quantised_packed']:.1f}x smaller); files {sizes['file']:,} -> "
        f"{sizes['packed_file']:,} bytes"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
