"""Python environments with one GPU extra each, for the checks that cannot run in the test
environment itself: cupy-cuda12x (which the test extra installs) and cupy-cuda13x cannot be
installed together.

`environment("cuda13")` is a virtual environment holding exactly the requirements of
`backprop-gpu[cuda13]` (backprop's own dependencies and the extra's), read from this
installation's metadata, so it follows pyproject.toml. It
is built once per requirement list (about 800 MB of wheels, most of it cuBLAS and NCCL; tens of
seconds) and kept under ~/.cache/backprop-tests/ for the next run. backprop itself is made
importable there by `linked_layout` (benchmarks/first_gpu_run.py): the installed layout as
symbolic links to this checkout.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

from backprop.backends.devices import DISTRIBUTION, extra_requirements

CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "backprop-tests"
BUILD_TIMEOUT_S = 600


def own_requirements() -> list[str]:
    """backprop's own dependencies, those of no extra ("numpy>=1.24", ...): `import backprop` needs them."""
    return [r for r in importlib.metadata.requires(DISTRIBUTION) or [] if ";" not in r]


def environment(extra: str) -> Path:
    """The Python executable of an environment holding `backprop-gpu[extra]`'s requirements."""
    requirements = own_requirements() + extra_requirements(extra)
    key = hashlib.sha256("\n".join([sys.version, *requirements]).encode()).hexdigest()[:16]
    home = CACHE / f"{extra}-{key}"
    python = home / "bin" / "python"
    if python.exists():
        return python
    building = CACHE / f"{extra}-{key}.building-{os.getpid()}"
    shutil.rmtree(building, ignore_errors=True)
    venv.EnvBuilder(with_pip=False).create(building)
    # pip from this environment installs into that one: no pip of its own to bootstrap
    done = subprocess.run([sys.executable, "-m", "pip", "--python", str(building / "bin" / "python"), "install",
                           "--quiet", "--disable-pip-version-check", *requirements],
                          capture_output=True, text=True, timeout=BUILD_TIMEOUT_S)
    if done.returncode != 0:
        shutil.rmtree(building, ignore_errors=True)
        raise RuntimeError(f"installing {requirements} failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
    try:  # only `python` is used, which works from the moved directory (console scripts would not)
        building.rename(home)
    except OSError:  # another test run finished the same environment first
        shutil.rmtree(building, ignore_errors=True)
    return python
