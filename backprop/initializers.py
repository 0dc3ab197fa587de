"""Initial parameter values, drawn on the host from the network's seeded NumPy generator.

Drawn in float64 on the host, then copied into the network's buffer, so the same seed gives the
same weights on every device and dtype. For a weight of shape (fan_in, fan_out):

    he_normal       N(0, 2 / fan_in)                    (ReLU family)
    he_uniform      U(-sqrt(6 / fan_in), +sqrt(6 / fan_in))
    glorot_normal   N(0, 2 / (fan_in + fan_out))        (sigmoid, tanh, linear)
    glorot_uniform  U(-sqrt(6 / (fan_in + fan_out)), +sqrt(6 / (fan_in + fan_out)))
    zeros, ones     constants (biases, normalization scales and shifts); they draw nothing

An initializer may also be a function `init(rng, shape) -> array of that shape`.
"""

from __future__ import annotations

import math

import numpy as np

INITS = ("he_normal", "he_uniform", "glorot_normal", "glorot_uniform", "zeros", "ones")


def check_init(init, name: str = "init"):
    """`init` if it is one of INITS or a function; ValueError/TypeError otherwise."""
    if callable(init):
        return init
    if not isinstance(init, str) or init not in INITS:
        raise ValueError(f"{name} must be one of {INITS} or a function (rng, shape) -> array, got {init!r}")
    return init


def initial_values(init, rng: np.random.Generator, shape: tuple[int, ...], fan_in: int | None,
                   fan_out: int | None) -> np.ndarray:
    """The initial values of a parameter of `shape` (float64, on the host)."""
    if callable(init):
        values = np.asarray(init(rng, shape), dtype=np.float64)
        if values.shape != tuple(shape):
            raise ValueError(f"the init function returned shape {values.shape}, expected {tuple(shape)}")
        return values
    if init == "zeros":
        return np.zeros(shape)
    if init == "ones":
        return np.ones(shape)
    if fan_in is None or fan_out is None:
        raise ValueError(f"init {init!r} needs fan_in and fan_out for a parameter of shape {shape}")
    if init == "he_normal":
        return rng.normal(0.0, math.sqrt(2.0 / fan_in), size=shape)
    if init == "he_uniform":
        limit = math.sqrt(6.0 / fan_in)
        return rng.uniform(-limit, limit, size=shape)
    if init == "glorot_normal":
        return rng.normal(0.0, math.sqrt(2.0 / (fan_in + fan_out)), size=shape)
    limit = math.sqrt(6.0 / (fan_in + fan_out))  # glorot_uniform
    return rng.uniform(-limit, limit, size=shape)
