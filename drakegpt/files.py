"""Crash-safe writes, and the checks that keep a run from hanging or failing late on a file or folder."""

import errno
import json
import os
import stat
import tempfile
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from drakegpt.errors import UsageError


def atomic_write(path: Path, write: Callable) -> None:
    """Write through `write(file)` into a temporary file, fsync it, then rename it over `path`.

    A crash or `kill -9` at any moment leaves either the old file or the new one, never a torn one.
    """
    atomic_write_all([(Path(path), write)])


def atomic_write_all(items: List[Tuple[Path, Callable]]) -> None:
    """atomic_write for several files, every one written and fsynced before the first rename: a group of
    checkpoints is replaced all at once, but for the instant between the renames."""
    written = []
    try:
        for path, write in items:
            written.append((_write_temporary(Path(path), write), Path(path)))
        for tmp, path in written:
            os.replace(tmp, path)
    except BaseException:
        for tmp, _ in written:
            tmp.unlink(missing_ok=True)
        raise
    for folder in {path.parent for _, path in written}:
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def _write_temporary(path: Path, write: Callable) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    umask = os.umask(0)
    os.umask(umask)
    os.fchmod(fd, 0o666 & ~umask)  # mkstemp's 0600 would hide results from a shared cluster's group
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return Path(tmp)


def append_line(path: Path, text: str) -> None:
    """Append to a file, never through a symbolic link (which could point out of the run's folder)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o666)
    with os.fdopen(fd, "w", newline="", encoding="utf-8") as f:
        f.write(text)


def write_json(obj: Dict[str, Any], path: Path) -> None:
    atomic_write(path, lambda f: f.write((json.dumps(obj, indent=2) + "\n").encode()))


def read_json(path: Path) -> Dict[str, Any]:
    """The object a JSON file holds, {} if there is no file; a damaged file is one line that names it."""
    path = Path(path)
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (ValueError, OSError) as e:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise UsageError(f"{path} cannot be read ({type(e).__name__}: {e}); restore it or delete it") from None
    if not isinstance(data, dict):
        raise UsageError(f"{path} holds a {type(data).__name__}, not a JSON object; restore it or delete it")
    return data


def is_file_name(name: str) -> bool:
    """One path component: names that become file or folder names never reach outside their folder."""
    return bool(name) and Path(name).name == name and name not in (".", "..") and not set(name) & {"\\", "\0"}


def regular_file(path: Path, key: str) -> Path:
    """`path` if it is a regular file: a FIFO, a device or a folder would block or fail mid-read."""
    path = Path(path).expanduser()
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise UsageError(f"{key}={path}: no such file; check the path (relative paths start at the current folder)")
    except OSError as e:
        raise UsageError(f"{key}={path}: cannot be read ({e.strerror}); check the path and its permissions")
    if not stat.S_ISREG(mode):
        kind = "a folder" if stat.S_ISDIR(mode) else "not a regular file (a pipe, socket or device)"
        raise UsageError(f"{key}={path} is {kind}; point {key} at a file")
    return path


def writable_folder(folder: Path, key: str) -> Path:
    """Create `folder` if needed and prove it takes a file, so a bad location fails before training, not after."""
    folder = Path(folder).expanduser()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-"):
            pass
    except OSError as e:
        raise UsageError(f"{key}={folder} is not writable ({os_reason(e)}); choose a folder you can write to")
    return folder


def write_or_explain(write: Callable, argument, target: Path, kept_step: Optional[int]):
    """`write(argument)`, where a filesystem fault becomes one line that says what was kept and how to go on:
    checkpoints/last.pt from `kept_step`, or nothing when None."""
    try:
        return write(argument)
    except (OSError, RuntimeError) as e:  # torch's writer turns a full disk into a RuntimeError
        if not is_write_fault(e):
            raise
        where = getattr(e, "filename", None) or target
        if kept_step is None:
            raise UsageError(f"could not write {where}: {os_reason(e)}; no checkpoint was kept. Free the space "
                             f"or fix the folder, then add train.resume=true hydra.run.dir=... to start it again"
                             ) from None
        raise UsageError(f"could not write {where}: {os_reason(e)}; checkpoints/last.pt from step {kept_step} is "
                         f"kept. Free the space or fix the folder, then add train.resume=true hydra.run.dir=... to "
                         f"continue") from None


def is_write_fault(e: Exception) -> bool:
    """A write that failed on the file system: an OSError, or torch.save's RuntimeError for a full disk or a
    file-size limit (its zip writer words it so)."""
    if isinstance(e, OSError):
        return True
    text = str(e).lower()
    return isinstance(e, RuntimeError) and any(word in text for word in ("write", "file", "space", "disk", "stream"))


def os_reason(e: Exception) -> str:
    """A filesystem error in a few words: 'no space left on device', 'read-only file system', ..."""
    number = getattr(e, "errno", None)
    if number == errno.ENOSPC:
        return "no space left on device"
    if number in (errno.EFBIG,):
        return "the file is larger than this system allows (a file-size limit)"
    if not isinstance(e, OSError):  # torch's writer: a full disk or a file-size limit, in its own words
        return f"the write failed ({str(e).splitlines()[0][:120] if str(e) else type(e).__name__})"
    return (e.strerror or type(e).__name__).lower() if number else str(e)
