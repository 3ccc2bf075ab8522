"""Read an offline W&B run back: wandb ships no reader for its run-<id>.wandb files, so this is one.

The file is a 7-byte header (':W&B', version), then a LevelDB-style log of 32 KiB blocks: chunks with a
7-byte header (crc, length, type: 1 full, 2 first, 3 middle, 4 last) hold protobuf Records.
"""

import json
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List

BLOCK = 32768


def records(path: Path) -> Iterator[Any]:
    """Every wandb_internal_pb2.Record of a .wandb file, in order."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a .wandb file"
    pos, pending = 7, b""
    while pos + 7 <= len(data):
        left = BLOCK - pos % BLOCK
        if left < 7:  # a block's tail too short for a chunk header is padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if length == 0 and kind == 0:  # zero padding to the block's end
            pos += left
            continue
        chunk, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):  # a full record, or the last chunk of one
            record = pb.Record()
            record.ParseFromString(pending)
            yield record


@dataclass
class OfflineRun:
    folder: Path  # .../wandb/offline-run-<date>-<id>
    id: str = ""
    name: str = ""
    group: str = ""
    job_type: str = ""
    tags: List[str] = field(default_factory=list)
    config: Dict[str, Any] = field(default_factory=dict)
    history: List[Dict[str, Any]] = field(default_factory=list)
    summary: Dict[str, Any] = field(default_factory=dict)
    artifacts: List[Dict[str, Any]] = field(default_factory=list)  # name, type, aliases, files, metadata
    exit_code: Any = None  # None until the run finished

    def media(self, kind: str) -> List[Path]:
        """The run's media files of one kind: 'table' (*.table.json) or 'images' (*.png)."""
        return sorted((self.folder / "files" / "media" / kind).glob("*"))


def _set(tree: Dict[str, Any], item) -> None:
    keys = list(item.nested_key) or [item.key]
    for key in keys[:-1]:
        tree = tree.setdefault(key, {})
    tree[keys[-1]] = json.loads(item.value_json)


def read_run(folder: Path, wait_s: float = 10.0) -> OfflineRun:
    """The run in one offline-run-* folder. wandb-core may write the file after run.finish() returns:
    wait up to wait_s for the record of the run's end."""
    deadline = time.monotonic() + wait_s
    while True:
        run = _parse(Path(folder))
        if run.exit_code is not None or time.monotonic() > deadline:
            return run
        time.sleep(0.05)


def _parse(folder: Path) -> OfflineRun:
    (path,) = folder.glob("run-*.wandb")
    run = OfflineRun(folder)
    for record in records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            r = record.run
            run.id, run.name, run.group, run.job_type = r.run_id, r.display_name, r.run_group, r.job_type
            run.tags = list(r.tags)
            for item in r.config.update:
                _set(run.config, item)
        elif kind == "config":
            for item in record.config.update:
                _set(run.config, item)
        elif kind == "history":
            row: Dict[str, Any] = {}
            for item in record.history.item:
                _set(row, item)
            run.history.append(row)
        elif kind == "summary":
            for item in record.summary.update:
                _set(run.summary, item)
        elif kind == "artifact":
            a = record.artifact
            run.artifacts.append(
                {
                    "name": a.name,
                    "type": a.type,
                    "aliases": list(a.aliases),
                    "files": [entry.path for entry in a.manifest.contents],
                    "metadata": json.loads(a.metadata) if a.metadata else {},
                }
            )
        elif kind == "exit":
            run.exit_code = record.exit.exit_code
    return run


def offline_runs(root: Path) -> List[OfflineRun]:
    """Every offline run under root (e.g. a run folder: its wandb/offline-run-*), by path."""
    return [read_run(folder) for folder in sorted(Path(root).rglob("offline-run-*")) if folder.is_dir()]
