"""The GPU extras install every library the backend loads (CuPy, NVRTC, cuBLAS, NCCL), and
detection names what did not load with the pip command that installs it.

Where the ~800 MB of cuBLAS and NCCL wheels are installed: the test extra takes the cuda12 extra
whole, so the test environment itself proves cuda12 (and a CUDA 12 GPU machine that installs the
test extra finds every library the gpu tests load). cupy-cuda13x cannot share that environment,
so the cuda13 extra goes into one of its own (tests/cuda_envs.py), built once and cached, which
the NVRTC 13 compile checks use too. Both load their libraries without a GPU.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from backprop.backends import devices
from backprop.backends.devices import extra_requirements
from cuda_envs import environment

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from first_gpu_run import linked_layout  # noqa: E402

# What each extra must pin: CUDA 12's NVIDIA wheels carry -cu12; CUDA 13's carry no suffix (their
# -cu13 names are empty stubs), except NCCL's.
EXTRAS = {
    "cuda12": {"cupy-cuda12x", "nvidia-cuda-nvrtc-cu12", "nvidia-cuda-runtime-cu12", "nvidia-cublas-cu12",
               "nvidia-nccl-cu12"},
    "cuda13": {"cupy-cuda13x", "nvidia-cuda-nvrtc", "nvidia-cuda-runtime", "nvidia-cublas", "nvidia-nccl-cu13"},
}

# Run by each extra's Python: which CuPy, and whether each library loads (as devices.py loads them).
LIBRARY_CHECK = """
import importlib.metadata, json, sys
import cupy
from cupy import cublas
from cupy.cuda import nccl, nvrtc
sys.path.insert(0, sys.argv[1])
from backprop.backends.devices import cuda_status, installed_cupy_major
print(json.dumps({"cupy": cupy.__version__, "cupy_major": installed_cupy_major(), "nvrtc": nvrtc.getVersion(),
                  "nccl": bool(nccl.available), "status": cuda_status()}))
"""


def test_each_extra_pins_every_library_the_backend_loads():
    for extra, names in EXTRAS.items():
        pinned = dict(spec.split("==") for spec in extra_requirements(extra))
        assert set(pinned) == names, extra
    assert "backprop-gpu[cuda12]" in extra_requirements("test")


def _libraries_load(result: dict, major: int) -> None:
    assert result["cupy_major"] == major and result["nvrtc"][0] == major and result["nccl"]
    count, reason = result["status"]
    if count == 0:  # no GPU here: the driver may be missing, no library may be
        assert "NVRTC" not in reason and "cuBLAS" not in reason and "CuPy" not in reason, reason


def test_under_the_test_extra_every_library_loads_without_a_gpu(tmp_path):
    """cuda12: `from cupy import cublas` and NCCL load here, in the test environment."""
    done = subprocess.run([sys.executable, "-c", LIBRARY_CHECK,
                           str(linked_layout(tmp_path))], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    _libraries_load(json.loads(done.stdout), 12)


def test_under_the_cuda13_extra_every_library_loads_without_a_gpu(tmp_path):
    done = subprocess.run([str(environment("cuda13")), "-c", LIBRARY_CHECK, str(linked_layout(tmp_path))],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    _libraries_load(json.loads(done.stdout), 13)


@pytest.mark.parametrize("cupy_major, driver, extra", [(12, None, "cuda12"), (13, None, "cuda13"),
                                                       (None, 12080, "cuda12"), (None, 13000, "cuda13")])
def test_the_install_hint_fits_the_installed_cupy_or_else_the_driver(monkeypatch, cupy_major, driver, extra):
    monkeypatch.setattr(devices, "installed_cupy_major", lambda: cupy_major)
    monkeypatch.setattr(devices, "driver_cuda_version", lambda: driver)
    wheels = {"cuda12": {"cublas": "nvidia-cublas-cu12==", "nvrtc": "nvidia-cuda-nvrtc-cu12==",
                         "nccl": "nvidia-nccl-cu12=="},
              "cuda13": {"cublas": "nvidia-cublas==", "nvrtc": "nvidia-cuda-nvrtc==", "nccl": "nvidia-nccl-cu13=="}}
    for library, wheel in wheels[extra].items():
        hint = devices.install_hint(library)
        assert f'pip install "backprop-gpu[{extra}]"' in hint and f'pip install "{wheel}' in hint, hint


def test_without_cupy_or_driver_the_hint_names_both_extras(monkeypatch):
    monkeypatch.setattr(devices, "installed_cupy_major", lambda: None)
    monkeypatch.setattr(devices, "driver_cuda_version", lambda: None)
    hint = devices.install_hint("cublas")
    assert 'pip install "backprop-gpu[cuda12]"' in hint and 'pip install "backprop-gpu[cuda13]"' in hint
