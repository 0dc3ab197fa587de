"""Channel layout of image batches: rows of channels (N H W, C) and planes (N, C, H, W).
Kernels: kernels/conv.cu.

BatchNorm2D normalizes each channel over rows of channels: `to_channels_last` lays an NCHW batch
(its input, its gradient) out as rows, and `to_channels_first` lays the rows back out as the NCHW
batch the next layer takes (Conv2D lays its per-position bias-gradient sums out as rows too):

    first[n, c, h, w] = rows[(n, h, w), c],    last[(n, h, w), c] = x[n, c, h, w]

Exact: elements are moved, never computed.
"""

from __future__ import annotations

import numpy as np

from backprop.backends.cupy_backend import BLOCK, MAX_GRID, blocks
from backprop.backends.ops import fused_op
from backprop.backends.ops.image_windows import case_arrays


def _contiguous(xp, x, shape):
    """x (any strides) as a C-ordered array of `shape`: flattening a strided view copies it."""
    return xp.reshape(xp.reshape(x, (-1,)), shape)


@fused_op
def to_channels_first(backend, rows, batch_shape, out=None):
    """(N, C, H, W) from rows (N H W, C); `batch_shape` is (N, H, W)."""
    xp = backend.xp
    n, h, w = batch_shape
    c = rows.shape[1]
    planes = xp.permute_dims(xp.reshape(rows, (n, h, w, c)), (0, 3, 1, 2))
    return backend._result(_contiguous(xp, planes, (n, c, h, w)), out)


@to_channels_first.numpy
def _(backend, rows, batch_shape, out=None):
    n, h, w = batch_shape
    c = rows.shape[1]
    if out is None:
        out = np.empty((n, c, h, w), dtype=rows.dtype)
    np.copyto(out, rows.reshape(n, h, w, c).transpose(0, 3, 1, 2))
    return out


@to_channels_first.cupy
def _(backend, rows, batch_shape, out=None):
    n, h, w = batch_shape
    c = rows.shape[1]
    out = backend._out(out, (n, c, h, w))
    backend._launch("to_channels_first", blocks(out.size, MAX_GRID), BLOCK, rows, out, n, c, h * w)
    return out


@fused_op
def to_channels_last(backend, x, out=None):
    """rows (N H W, C) from x (N, C, H, W)."""
    xp = backend.xp
    n, c, h, w = x.shape
    return backend._result(_contiguous(xp, xp.permute_dims(x, (0, 2, 3, 1)), (n * h * w, c)), out)


@to_channels_last.numpy
def _(backend, x, out=None):
    n, c, h, w = x.shape
    if out is None:
        out = np.empty((n * h * w, c), dtype=x.dtype)
    np.copyto(out.reshape(n, h, w, c), x.transpose(0, 2, 3, 1))
    return out


@to_channels_last.cupy
def _(backend, x, out=None):
    n, c, h, w = x.shape
    out = backend._out(out, (n * h * w, c))
    backend._launch("to_channels_last", blocks(out.size, MAX_GRID), BLOCK, x, out, n, c, h * w)
    return out


_CASE_SHAPES = [(2, 3, 4, 5), (1, 1, 1, 1), (3, 5, 1, 7)]


@to_channels_first.case(exact=True)
def _(backend, a):
    results = []
    for n, c, h, w in _CASE_SHAPES:
        rows, = case_arrays(backend, a, (n * h * w, c))
        results += [to_channels_first(backend, rows, (n, h, w)),
                    to_channels_first(backend, rows, (n, h, w), out=backend.empty((n, c, h, w)))]
    return results


@to_channels_last.case(exact=True)
def _(backend, a):
    results = []
    for shape in _CASE_SHAPES:
        x, = case_arrays(backend, a, shape)
        rows = shape[0] * shape[2] * shape[3]
        results += [to_channels_last(backend, x), to_channels_last(backend, x, out=backend.empty((rows, shape[1])))]
    return results
