"""Device strings: "cpu", "auto", "cuda" and "cuda:N", parsed without touching any GPU."""

from __future__ import annotations

import re

_CUDA_DEVICE = re.compile(r"^cuda(?::(\d+))?$")


def parse_device(device) -> tuple[str, int]:
    """("cpu", 0), ("cuda", N) or ("auto", 0) from a device string; ValueError for anything else."""
    if not isinstance(device, str):
        raise TypeError(f"device must be a string such as 'cpu', 'cuda', 'cuda:1' or 'auto', "
                        f"got {type(device).__name__} {device!r}")
    name = device.strip().lower()
    if name in ("cpu", "auto"):
        return name, 0
    match = _CUDA_DEVICE.match(name)
    if match:
        return "cuda", int(match.group(1) or 0)
    raise ValueError(f"device must be 'cpu', 'cuda', 'cuda:N' or 'auto', got {device!r}")
