"""Devices for the commands: which one to run on (`pick_device`), and `python -m backprop devices`."""

from __future__ import annotations

from backprop.backends import available_devices, cuda_status, parse_device


def pick_device(requested: str) -> tuple[str, str]:
    """(device to use, note for the user). "auto" without a usable GPU becomes "cpu" with a short
    note (instead of the library's one-time warning): a user who asked for no GPU needs no
    driver diagnosis; `python -m backprop devices` gives it, and the fix, to whoever wants one."""
    kind, _ = parse_device(requested)
    if kind == "auto":
        count, _ = cuda_status()
        return ("cuda:0", "") if count else ("cpu", "no usable GPU: `python -m backprop devices` says why")
    return requested, ""


def list_devices(args) -> int:
    """The devices usable here, one per line; when no GPU is, why not and how to fix it."""
    count, reason = cuda_status()
    for device in available_devices():
        print(f"{device:8}  {_device_name(device)}")
    if not count:
        print(f"no GPU: {reason}")
    return 0


def _device_name(device: str) -> str:
    if device == "cpu":
        import platform

        return f"CPU ({platform.processor() or platform.machine()}), NumPy"
    try:
        import cupy

        index = int(device.split(":")[1])
        props = cupy.cuda.runtime.getDeviceProperties(index)
        name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
        return f"{name}, {props['totalGlobalMem'] / 2**30:.0f} GiB, CuPy {cupy.__version__}"
    except Exception as exc:  # a name is a nicety: never fail the listing over it
        return f"(name unavailable: {exc.__class__.__name__})"
