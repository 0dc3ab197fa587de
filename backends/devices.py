"""Choosing a backend from `device=`, and finding out, once and safely, whether a GPU is usable."""

from __future__ import annotations

import ctypes
import functools
import importlib.metadata
import sys
import warnings

from backprop.backends.device_names import parse_device

DISTRIBUTION = "backprop-gpu"
# The GPU extra for each CUDA major version, and the oldest driver that runs it.
EXTRAS = {12: ("cuda12", 525), 13: ("cuda13", 580)}
INSTALL_HINT = "install the GPU extra for your driver: " + " or ".join(
    f'pip install "{DISTRIBUTION}[{extra}]" (CUDA {major}, driver >= {driver})'
    for major, (extra, driver) in EXTRAS.items())
# What each CUDA library does for us; each name is also a part of its wheel's name.
LIBRARIES = {
    "nvrtc": "NVRTC, which compiles backprop's kernels",
    "cublas": "cuBLAS, which runs the matmuls",
    "nccl": "NCCL, which data-parallel training on GPUs uses",
}


class DeviceUnavailableError(RuntimeError):
    """A device was asked for by name but cannot be used here; the message says why and how to fix it."""


def _describe(exc: Exception) -> str:
    """An exception as one line: its type and its message (CUDA's span several lines)."""
    return f"{exc.__class__.__name__}: {' '.join(str(exc).split())}"


def installed_cupy_major() -> int | None:
    """The CUDA major version of the installed CuPy wheel (cupy-cuda12x: 12), or None."""
    for major in EXTRAS:
        try:
            importlib.metadata.distribution(f"cupy-cuda{major}x")
        except importlib.metadata.PackageNotFoundError:
            continue
        return major
    return None


def driver_cuda_version() -> int | None:
    """The CUDA version the NVIDIA driver supports (13000 for 13.0), read from libcuda without
    creating a context; None without a driver."""
    try:
        libcuda = ctypes.CDLL("libcuda.so.1")
        version = ctypes.c_int(0)
        if libcuda.cuDriverGetVersion(ctypes.byref(version)) != 0:
            return None
    except (OSError, AttributeError):
        return None
    return version.value


def _cuda_major() -> int | None:
    """The CUDA major version to install for: the installed CuPy's, else the newest the driver runs."""
    major = installed_cupy_major()
    if major is None:
        driver = driver_cuda_version()
        fitting = [m for m in EXTRAS if driver is not None and driver >= m * 1000]
        major = max(fitting) if fitting else None
    return major


def extra_requirements(extra: str) -> list[str]:
    """The requirements the extra `extra` adds ("nvidia-cublas==13.4.1.3", ...), from the installed
    distribution's metadata; empty when it is not installed."""
    try:
        requirements = importlib.metadata.requires(DISTRIBUTION) or []
    except importlib.metadata.PackageNotFoundError:
        return []
    found = []
    for requirement in requirements:
        spec, _, marker = requirement.partition(";")
        if f'extra == "{extra}"' in marker:
            found.append(spec.strip())
    return found


def install_hint(library: str | None = None) -> str:
    """The pip command that installs what is missing: the GPU extra that fits the installed CuPy
    (or else the driver), and for one library ("nvrtc", "cublas", "nccl") also its pinned wheel."""
    major = _cuda_major()
    if major is None:
        return INSTALL_HINT
    extra = EXTRAS[major][0]
    hint = f'install the GPU extra: pip install "{DISTRIBUTION}[{extra}]"'
    pinned = [spec for spec in extra_requirements(extra) if library and library in spec.split("==")[0]]
    return f'{hint} (or only the library: pip install "{pinned[0]}")' if pinned else hint


def _load_nvrtc(cupy) -> None:
    cupy.cuda.nvrtc.getVersion()


def _load_cublas(cupy) -> None:
    from cupy import cublas  # noqa: F401  (a submodule CuPy does not import; importing it loads cuBLAS)


def _library_problems(cupy) -> list[str]:
    """Why each CUDA library the backend loads did not load (NVRTC, cuBLAS); empty when all did."""
    problems = []
    for library, load in (("nvrtc", _load_nvrtc), ("cublas", _load_cublas)):
        try:
            load(cupy)
        except Exception as exc:
            problems.append(f"{LIBRARIES[library]} did not load ({_describe(exc)}); "
                            f"{install_hint(library)}")
    return problems


def _driver_mismatch() -> str:
    """"; what to do" when the installed CuPy needs a newer driver than this one, else ""."""
    major, driver = installed_cupy_major(), driver_cuda_version()
    if major is None or driver is None or driver >= major * 1000:
        return ""
    mismatch = (f"; CuPy for CUDA {major} needs a driver >= {EXTRAS[major][1]}, this one runs CUDA "
                f"{driver // 1000}.{driver % 1000 // 10}")
    older = [m for m in EXTRAS if driver >= m * 1000]
    if older:
        mismatch += f': pip uninstall cupy-cuda{major}x, then pip install "{DISTRIBUTION}[{EXTRAS[max(older)][0]}]"'
    return mismatch


def _driver_problem(cupy) -> tuple[int, str]:
    """(GPUs the driver reports, why none when 0)."""
    try:
        count = int(cupy.cuda.runtime.getDeviceCount())
    except Exception as exc:
        return 0, (f"no CUDA driver or device answered ({_describe(exc)}); check `nvidia-smi` and the NVIDIA "
                   f"driver{_driver_mismatch()}")
    if count == 0:
        return 0, "the CUDA driver reports no GPU; check `nvidia-smi`"
    return count, ""


@functools.lru_cache(maxsize=1)
def cuda_status() -> tuple[int, str]:
    """(number of usable GPUs, why not when 0). Never raises; cached for the process.

    Everything the backend loads must load: CuPy, NVRTC (which compiles our kernels), cuBLAS
    (the matmuls), and a CUDA driver must answer with at least one device. Every problem found
    is in the reason, each with what fixes it.
    """
    try:
        import cupy
    except Exception as exc:  # ImportError, or a broken CUDA install raising at import
        return 0, f"CuPy is not installed or failed to import ({_describe(exc)}); {install_hint()}"
    problems = _library_problems(cupy)
    count, driver = _driver_problem(cupy)
    if driver:
        problems.insert(0, driver)
    if problems:
        return 0, "; ".join(problems)
    return count, ""


def available_devices() -> list[str]:
    """Devices usable in this process: "cpu" always, then "cuda:0", "cuda:1", ... if usable."""
    count, _ = cuda_status()
    return ["cpu"] + [f"cuda:{i}" for i in range(count)]


@functools.lru_cache(maxsize=1)
def _warn_auto_fallback(reason: str) -> None:
    warnings.warn(f"device='auto' is using the CPU: {reason}", RuntimeWarning, stacklevel=_callers_level())


def _callers_level() -> int:
    """The `stacklevel` that points a warning at the first frame outside backprop: the user's
    line that asked for the device, however deep inside the library it was resolved."""
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_globals.get("__name__", "").partition(".")[0] == "backprop":
        frame, level = frame.f_back, level + 1
    return level


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
