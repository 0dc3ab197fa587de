"""Choosing a backend from `device=`, and finding out, once and safely, whether a GPU is usable."""

from __future__ import annotations

import functools
import warnings

from backprop.backends.device_names import parse_device

INSTALL_HINT = 'install the GPU extra: pip install "backprop-gpu[cuda12]"'


class DeviceUnavailableError(RuntimeError):
    """A device was asked for by name but cannot be used here; the message says why and how to fix it."""


@functools.lru_cache(maxsize=1)
def cuda_status() -> tuple[int, str]:
    """(number of usable GPUs, why not when 0). Never raises; cached for the process.

    Three things must hold: CuPy imports, a CUDA driver answers with at least one device, and
    NVRTC (which compiles our kernels) loads.
    """
    try:
        import cupy
    except Exception as exc:  # ImportError, or a broken CUDA install raising at import
        return 0, f"CuPy is not installed or failed to import ({exc.__class__.__name__}: {exc}); {INSTALL_HINT}"
    try:
        count = int(cupy.cuda.runtime.getDeviceCount())
    except Exception as exc:
        return 0, (f"no CUDA driver or device answered ({exc.__class__.__name__}: {exc}); "
                   "check `nvidia-smi` and the NVIDIA driver")
    if count == 0:
        return 0, "the CUDA driver reports no GPU; check `nvidia-smi`"
    try:
        cupy.cuda.nvrtc.getVersion()
    except Exception as exc:
        return 0, (f"NVRTC, which compiles backprop's kernels, did not load ({exc.__class__.__name__}: "
                   f"{exc}); {INSTALL_HINT}")
    return count, ""


def available_devices() -> list[str]:
    """Devices usable in this process: "cpu" always, then "cuda:0", "cuda:1", ... if usable."""
    count, _ = cuda_status()
    return ["cpu"] + [f"cuda:{i}" for i in range(count)]


@functools.lru_cache(maxsize=1)
def _warn_auto_fallback(reason: str) -> None:
    warnings.warn(f"device='auto' is using the CPU: {reason}", RuntimeWarning, stacklevel=4)


def resolve_device(device) -> str:
    """The canonical device string ("cpu" or "cuda:N") for a user's `device=`.

    "auto" picks cuda:0 when usable, else the CPU (warning once per process). A named GPU that
    cannot be used raises DeviceUnavailableError saying why.
    """
    kind, index = parse_device(device)
    if kind == "cpu":
        return "cpu"
    count, reason = cuda_status()
    if kind == "auto":
        if count:
            return "cuda:0"
        _warn_auto_fallback(reason)
        return "cpu"
    if count == 0:
        raise DeviceUnavailableError(f"device {device!r} is not available: {reason}")
    if index >= count:
        raise DeviceUnavailableError(
            f"device {device!r} is not available: this machine has {count} GPU(s), cuda:0 to cuda:{count - 1}")
    return f"cuda:{index}"


_BACKENDS: dict = {}


def get_backend(device="cpu", dtype: str = "float32"):
    """The backend for (device, dtype), created once and shared."""
    if dtype not in ("float32", "float64"):
        raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
    canonical = resolve_device(device)
    key = (canonical, dtype)
    if key not in _BACKENDS:
        if canonical == "cpu":
            from backprop.backends.numpy_backend import NumpyBackend

            _BACKENDS[key] = NumpyBackend(dtype=dtype)
        else:
            from backprop.backends.cupy_backend import CupyBackend

            _BACKENDS[key] = CupyBackend(dtype=dtype, device=canonical)
    return _BACKENDS[key]
