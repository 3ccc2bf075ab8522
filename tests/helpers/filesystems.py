"""Real file systems that fill up or turn read-only, for the fault tests (root only; elsewhere they skip, and
under CI, where the tests run as root, they fail instead)."""

import os
import subprocess
from contextlib import contextmanager
from pathlib import Path

from helpers.runs import skip_or_fail


def mount(*args: str) -> bool:
    return os.geteuid() == 0 and subprocess.run(["mount", *args], capture_output=True).returncode == 0


@contextmanager
def small_filesystem(path: Path, size: str):
    """A real tmpfs of `size` at `path`."""
    path.mkdir(parents=True, exist_ok=True)
    if not mount("-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)):
        skip_or_fail("mounting a tmpfs needs root and mount rights")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-R", "-l", str(path)], capture_output=True)


@contextmanager
def read_only(path: Path):
    """`path` bind-mounted read-only over itself: even root cannot write there."""
    if not (mount("--bind", str(path), str(path)) and mount("-o", "remount,ro,bind", str(path))):
        skip_or_fail("a read-only bind mount needs root and mount rights")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)
