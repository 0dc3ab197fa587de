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
