"""The distribution installs `backprop`, `backprop.backends` and `backprop.kernels`, and nothing else."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(out), str(REPO)]
    if all(importlib.util.find_spec(m) is not None for m in ("setuptools", "wheel")):
        command.insert(4, "--no-build-isolation")  # build with the test extra's setuptools: no download
    subprocess.run(command, check=True, capture_output=True, timeout=300)
    (built,) = out.glob("backprop_gpu-*.whl")
    return built


def test_wheel_holds_only_the_backprop_package(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    top = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert top == {"backprop"}, f"the wheel installs more than backprop: {sorted(top)}"
    assert "backprop/backends/base.py" in names and "backprop/kernels/__init__.py" in names
    sources = [n for n in (REPO / "kernels").iterdir() if n.suffix in (".cu", ".cuh", ".h")]
    for source in sources:
        assert f"backprop/kernels/{source.name}" in names, f"{source.name} is not shipped as package data"


def test_a_plain_install_imports_from_site_packages(wheel, tmp_path):
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--quiet", "--target", str(target),
                    str(wheel)], check=True, capture_output=True, timeout=300)
    assert not (target / "backends").exists() and not (target / "kernels").exists()
    probe = ("import backprop, backprop.backends, backprop.kernels, importlib.resources as r; "
             "print(backprop.__file__); "
             "print(sorted(p.name for p in r.files('backprop.kernels').iterdir() if p.name.endswith('.cu')))")
    env = {**os.environ, "PYTHONPATH": str(target)}
    result = subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True, text=True,
                            env=env, cwd=tmp_path, timeout=60)
    first, kernels = result.stdout.splitlines()
    assert first.startswith(str(target))
    shipped = sorted(p.name for p in (REPO / "kernels").glob("*.cu"))
    assert kernels == str(shipped)


def test_the_dev_install_is_editable_and_not_shadowed():
    """Tests import the package from the repo through the editable install, with the
    backends/ and kernels/ mapping in place (the repo root is not on sys.path)."""
    import backprop
    import backprop.backends
    import backprop.kernels

    assert Path(backprop.backends.__file__).resolve().parent == REPO / "backends"
    assert Path(backprop.kernels.__file__).resolve().parent == REPO / "kernels"
    assert str(REPO) not in [str(Path(p).resolve()) for p in sys.path if p]


def test_the_wheel_ships_every_subpackage(wheel):
    """pyproject.toml lists packages explicitly: a new subpackage must be added there, or its
    files are silently left out of the wheel."""
    names = set(zipfile.ZipFile(wheel).namelist())
    for init in (REPO / "backprop").rglob("__init__.py"):
        package = init.parent.relative_to(REPO).as_posix()
        assert f"{package}/__init__.py" in names, f"{package} is missing from the wheel (pyproject packages)"
        for module in init.parent.glob("*.py"):
            assert f"{package}/{module.name}" in names


def test_the_core_never_imports_the_applications():
    """`import backprop` and a whole training run load no module of backprop.apps."""
    probe = ("import sys, numpy as np, backprop as bp; "
             "net = bp.Sequential(bp.Dense(2, 3, activation='relu'), bp.Dense(3, 2), seed=0); "
             "bp.fit(net, np.zeros((8, 2)), np.zeros(8, dtype=int), loss=bp.CrossEntropyLoss(), epochs=1, "
             "progress=False); bp.predict(net, np.zeros((1, 2))); "
             "print(sorted(m for m in sys.modules if m.startswith('backprop.apps')))")
    result = subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True, text=True, timeout=120)
    assert result.stdout.strip() == "[]"


def test_no_module_of_the_package_is_part_of_an_import_cycle():
    """The modules' imports of each other (at module level or inside functions) form no cycle."""
    import ast

    roots = {"backprop": REPO / "backprop", "backprop.backends": REPO / "backends",
             "backprop.kernels": REPO / "kernels"}
    modules = {}
    for prefix, folder in roots.items():
        for path in folder.rglob("*.py"):
            parts = path.relative_to(folder).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join((prefix, *parts))] = path
    edges = {}
    for name, path in modules.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("backprop"):
                for alias in node.names:
                    full = f"{node.module}.{alias.name}"
                    found.add(full if full in modules else node.module)
            elif isinstance(node, ast.Import):
                found.update(a.name for a in node.names if a.name.startswith("backprop"))
        edges[name] = {m for m in found if m in modules and m != name}

    def cycle_from(start):
        stack, seen = [(start, [start])], set()
        while stack:
            node, path = stack.pop()
            for nxt in edges[node]:
                if nxt == start:
                    return path + [start]
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, path + [nxt]))
        return None

    cycles = [c for c in (cycle_from(m) for m in modules) if c]
    assert not cycles, f"import cycle: {' -> '.join(cycles[0])}"
