"""Every module of the package imports: none is dead or broken (a module nothing imports would rot unseen), and
composing a config needs no torch."""

import importlib
import pkgutil

import pytest

import drakegpt

MODULES = [m.name for m in pkgutil.walk_packages(drakegpt.__path__, "drakegpt.")]


@pytest.mark.parametrize("name", MODULES)
def test_every_module_imports(name):
    importlib.import_module(name)


def test_every_module_is_used_by_the_package_its_entry_points_or_its_tests():
    """A module nobody imports is a dead room: run.py, `python -m` entry points and the benchmark count as users."""
    from helpers.runs import ROOT

    sources = [p.read_text() for p in [*ROOT.joinpath("drakegpt").rglob("*.py"), ROOT / "run.py",
                                       ROOT / "benchmarks" / "bench.py"]]
    entry_points = {"drakegpt.report", "drakegpt.registry", "drakegpt.pack"}  # python -m drakegpt.<name>
    for name in MODULES:
        if name in entry_points or name.endswith("__init__"):
            continue
        short = name.rsplit(".", 1)[1]
        used = any(f"import {short}" in s or f"{name} import" in s or f".{short} import" in s or
                   f"{name}." in s for s in sources)
        assert used, f"{name} is imported by nothing"
