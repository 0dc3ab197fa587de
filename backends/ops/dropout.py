"""Inverted dropout, its masks drawn from a counter-based hash so that every backend draws the
same mask from the same (seed, stream, step). Kernels: `dropout_fwd` and `multiply` in
kernels/elementwise.cu (whose `hash32` is the one below)."""

from __future__ import annotations

import math

import numpy as np

from backprop.backends.cupy_backend import BLOCK, MAX_GRID, blocks
from backprop.backends.ops import fused_op

# Constants of the counter-based hash that draws dropout masks (murmur3's 32-bit finalizer).
HASH_M1 = 0x85EBCA6B
HASH_M2 = 0xC2B2AE35
HASH_GOLDEN = 0x9E3779B9
MASK32 = 0xFFFFFFFF


def hash32(x: int) -> int:
    """murmur3's fmix32 on a Python int: a bijection of 32-bit words that mixes every bit."""
    x &= MASK32
    x ^= x >> 16
    x = (x * HASH_M1) & MASK32
    x ^= x >> 13
    x = (x * HASH_M2) & MASK32
    x ^= x >> 16
    return x


def dropout_key(seed: int, stream: int, step: int) -> int:
    """The 32-bit key of one dropout draw: mixes the network seed, the layer's stream, the step.

    Computed on the host; every backend then hashes `element_index ^ key`, so the CPU and the
    GPU draw bit-identical masks from the same (seed, stream, step).
    """
    key = hash32(seed ^ HASH_GOLDEN)
    key = hash32(key ^ hash32(stream + HASH_GOLDEN))
    return hash32(key ^ hash32((step * HASH_GOLDEN) & MASK32))


def dropout_threshold(p: float) -> int:
    """Keep an element when its 32-bit hash is >= this threshold: P(drop) = p exactly to 2**-32."""
    return min(int(round(p * 2.0**32)), MASK32)


@fused_op
def dropout_forward(backend, x, p: float, key: int, out=None):
    """Inverted dropout: y = x * m, m_i = 0 with probability p, else 1 / (1 - p).

    Element i is kept when hash32(i ^ key) >= dropout_threshold(p) (hash32 = murmur3 fmix32,
    i the flat element index modulo 2**32), so the mask depends only on (key, i): every
    backend draws the same mask. Returns `(y, mask)`; backward multiplies by the same mask.
    """
    xp = backend.xp
    n = math.prod(x.shape)
    h = xp.arange(n, dtype=xp.uint64) & MASK32
    h = h ^ key
    h = h ^ (h >> 16)
    h = (h * HASH_M1) & MASK32
    h = h ^ (h >> 13)
    h = (h * HASH_M2) & MASK32
    h = h ^ (h >> 16)
    keep = xp.reshape(h >= dropout_threshold(p), x.shape)
    scale = 1.0 / (1.0 - p)
    mask = xp.where(keep, xp.full(x.shape, scale, dtype=backend.dtype), xp.zeros_like(x))
    return backend._result(x * mask, out), mask


@fused_op
def dropout_backward(backend, grad_y, mask, out=None):
    """dL/dx = dL/dy * m (the mask already holds 0 or 1 / (1 - p))."""
    return backend._result(grad_y * mask, out)


# ---------------------------------------------------------------------- NumPy


def _element_indices(shape) -> np.ndarray:
    """The flat element indices modulo 2**32 as uint32, read-only (made once per shape)."""
    n = math.prod(shape)
    index = np.arange(n, dtype=np.uint32) if n <= 2**32 else (np.arange(n, dtype=np.uint64) & MASK32).astype(np.uint32)
    index.flags.writeable = False
    return index


def _hash_arrays(shape):
    n = math.prod(shape)
    return np.empty(n, np.uint32), np.empty(n, np.uint32), np.empty(n, np.bool_)


@dropout_forward.numpy
def _(backend, x, p: float, key: int, out=None):
    # The reference's hash in uint32 arithmetic, in place: a uint32 product wraps modulo 2**32,
    # which is the reference's "& MASK32"; the mask is the keep flags times 1 / (1 - p) in the
    # dtype (1 * s = s, 0 * s = 0), then y = x * mask as the reference multiplies.
    index = backend._work("dropout_index", x.shape, _element_indices)
    h, shifted, keep = backend._work("dropout_hash", x.shape, _hash_arrays)
    np.bitwise_xor(index, np.uint32(key), out=h)
    for multiplier, shift in ((HASH_M1, 16), (HASH_M2, 13)):
        np.right_shift(h, np.uint32(shift), out=shifted)
        np.bitwise_xor(h, shifted, out=h)
        np.multiply(h, np.uint32(multiplier), out=h)
    np.right_shift(h, np.uint32(16), out=shifted)
    np.bitwise_xor(h, shifted, out=h)
    np.greater_equal(h, np.uint32(dropout_threshold(p)), out=keep)
    mask = np.empty(x.shape, backend.dtype)  # the layer keeps it for backward: not a scratch array
    np.multiply(keep.reshape(x.shape), backend._scalar("dropout scale", 1.0 / (1.0 - p)), out=mask)
    y = np.empty_like(x) if out is None else out
    np.multiply(x, mask, out=y)
    return y, mask


# ---------------------------------------------------------------------- CuPy


@dropout_forward.cupy
def _(backend, x, p: float, key: int, out=None):
    y, mask = backend._out(out, x.shape), backend.empty(x.shape)
    backend._launch("dropout_fwd", blocks(x.size, MAX_GRID), BLOCK, x, y, mask, x.size, key,
                    dropout_threshold(p), 1.0 / (1.0 - p))
    return y, mask


@dropout_backward.cupy
def _(backend, grad_y, mask, out=None):
    out = backend._out(out, grad_y.shape)
    backend._launch("multiply", blocks(grad_y.size, MAX_GRID), BLOCK, grad_y, mask, out, grad_y.size)
    return out


# ---------------------------------------------------------------------- cases: masks are exact


@dropout_forward.case(exact=True)
def _(backend, a):
    y, mask = dropout_forward(backend, a["x"], 0.3, dropout_key(7, 2, a["seed"]))
    return [y, mask, dropout_backward(backend, a["dy"], mask)]


@dropout_backward.case(exact=True)
def _(backend, a):
    _, mask = dropout_forward(backend, a["x"], 0.5, dropout_key(1, 0, a["seed"]))
    return [dropout_backward(backend, a["dy"], mask, out=backend.empty(a["x"].shape))]
