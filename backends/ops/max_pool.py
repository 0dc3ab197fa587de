"""Max pooling, forward and backward (torch.nn.MaxPool2d without padding). Kernels: kernels/pooling.cu.

For x (N, C, H, W), a window (kh, kw) and strides (sh, sw), window position k = i kw + j:

    y[n, c, oh, ow] = max over k of x[n, c, oh sh + i, ow sw + j]
    index[n, c, oh, ow] = the first k where that maximum is (the first NaN, where there is one:
                          NaN propagates, as in PyTorch)
    dx[n, c, h, w] = sum over the windows (oh, ow) whose chosen element is (h, w) of dy[n, c, oh, ow]

Windows that overlap (stride < kernel) may choose one element several times: its gradient is
the sum, added in the order of k. The kernel gathers it per input element (no atomics).
Exact: maxima and sums of chosen gradients are computed in the same order everywhere. One
freedom: where +0 and -0 tie for the maximum, y's zero takes the sign np.maximum gives on NumPy
(as the reference's np.max) and the first's on the GPU; they compare equal.
"""

from __future__ import annotations

import numpy as np

from backprop.backends.cupy_backend import BLOCK, MAX_GRID, blocks
from backprop.backends.ops import fused_op
from backprop.backends.ops.image_windows import case_arrays, output_size, window


def pool_views(x, kernel, stride):
    """x's pooling windows as kh kw strided views (N, C, OH, OW), one per position k = i kw + j."""
    out_h = output_size(x.shape[2], kernel[0], stride[0], 0)
    out_w = output_size(x.shape[3], kernel[1], stride[1], 0)
    return [window(x, i, j, stride, out_h, out_w) for i in range(kernel[0]) for j in range(kernel[1])]


def pool_windows(backend, x, kernel, stride):
    """x's pooling windows stacked on a last axis: (N, C, OH, OW, kh kw), position k = i kw + j."""
    return backend.xp.stack(pool_views(x, kernel, stride), axis=-1)


def pool_launch_sizes(shape, kernel, stride) -> tuple:
    """The geometry arguments of the kernels of pooling.cu: n, c, h, w, kh, kw, sh, sw, OH, OW."""
    h, w = shape[2:]
    return (*shape, *kernel, *stride, output_size(h, kernel[0], stride[0], 0), output_size(w, kernel[1], stride[1], 0))


def zero_uncovered(dx, kernel, out_h, out_w):
    """Zeroes the bottom rows and right columns of dx that no window covers, for windows that
    tile dx (stride == kernel)."""
    dx[:, :, kernel[0] * out_h:, :] = 0.0
    dx[:, :, : kernel[0] * out_h, kernel[1] * out_w:] = 0.0


@fused_op
def max_pool_forward(backend, x, kernel, stride, out=None):
    """Returns (y, index): the window maxima and where each is (int64 k); see the module docstring."""
    xp = backend.xp
    stacked = pool_windows(backend, x, kernel, stride)
    index = xp.astype(xp.argmax(stacked, axis=-1), xp.int64)
    return backend._result(xp.max(stacked, axis=-1), out), index


@max_pool_forward.numpy
def _(backend, x, kernel, stride, out=None):
    # A running maximum over the kh kw strided views, no window copy: y_k = maximum(y_k-1, v_k)
    # (np.maximum propagates NaN), and the index moves to k where y strictly grew, so ties keep
    # the first. A NaN makes nothing grow: windows whose maximum is NaN get their first NaN's k
    # afterwards. The index runs in the smallest unsigned type that holds kh kw - 1 (bytes are
    # cheap passes) and becomes int64 once.
    views = pool_views(x, kernel, stride)
    shape = views[0].shape
    if out is None:
        out = np.empty(shape, dtype=x.dtype)
    positions = np.min_scalar_type(len(views) - 1)
    spare, grew, step, index = backend._work(f"max_pool_forward {positions}", shape, lambda s: (
        np.empty(s, backend.dtype), np.empty(s, np.bool_), np.empty(s, positions), np.empty(s, positions)))
    # y_k alternates between out and spare so that the last one lands in out
    best = (out, spare) if len(views) % 2 == 1 else (spare, out)
    np.copyto(best[0], views[0])
    index.fill(0)
    for k in range(1, len(views)):
        previous, current = best[(k - 1) % 2], best[k % 2]
        np.maximum(previous, views[k], out=current)
        np.greater(current, previous, out=grew)
        np.multiply(grew, positions.type(k), out=step)
        np.maximum(index, step, out=index)
    nan = np.isnan(out, out=grew)
    if nan.any():
        first_nan = np.zeros(shape, positions)
        for k in reversed(range(len(views))):
            first_nan[np.isnan(views[k])] = k
        np.copyto(index, first_nan, where=nan)
    return out, index.astype(np.int64)


@max_pool_forward.cupy
def _(backend, x, kernel, stride, out=None):
    sizes = pool_launch_sizes(x.shape, kernel, stride)
    shape = (*x.shape[:2], *sizes[-2:])
    out = backend._out(out, shape)
    index = backend.xp.empty(shape, dtype=backend.xp.int64)
    backend._launch("max_pool_fwd", blocks(out.size, MAX_GRID), BLOCK, x, out, index, *sizes)
    return out, index


@fused_op
def max_pool_backward(backend, grad_y, index, input_shape, kernel, stride, out=None):
    """dx of `input_shape` from dy and the forward's index; see the module docstring."""
    xp = backend.xp
    _, _, out_h, out_w = grad_y.shape
    dx = xp.zeros(input_shape, dtype=grad_y.dtype)
    zero = xp.zeros_like(grad_y)
    for i in range(kernel[0]):
        for j in range(kernel[1]):
            rows = slice(i, i + stride[0] * (out_h - 1) + 1, stride[0])
            columns = slice(j, j + stride[1] * (out_w - 1) + 1, stride[1])
            dx[:, :, rows, columns] = dx[:, :, rows, columns] + xp.where(index == i * kernel[1] + j, grad_y, zero)
    return backend._result(dx, out)


@max_pool_backward.numpy
def _(backend, grad_y, index, input_shape, kernel, stride, out=None):
    # Each position k's term where(index == k, dy, 0), selected with bit operations (a mask of
    # all ones or zeros: no branch per element, and a non-finite dy that is not chosen adds
    # nothing). Windows that do not overlap (stride >= kernel) give each element at most one
    # term: it is written straight into its strided view of dx, and only what no window
    # covers is zeroed. Overlapping windows add their terms in the order of k.
    _, _, out_h, out_w = grad_y.shape
    if out is None:
        out = np.empty(input_shape, dtype=grad_y.dtype)
    bits = np.dtype(f"i{grad_y.itemsize}")
    chosen, mask, term = backend._work("max_pool_backward", grad_y.shape, lambda s: (
        np.empty(s, np.bool_), np.empty(s, bits), np.empty(s, bits)))
    overlapping = stride[0] < kernel[0] or stride[1] < kernel[1]
    if tuple(stride) == tuple(kernel):
        zero_uncovered(out, kernel, out_h, out_w)
    else:
        out.fill(0.0)
    for i in range(kernel[0]):
        for j in range(kernel[1]):
            np.equal(index, i * kernel[1] + j, out=chosen)
            np.negative(chosen.view(np.int8), out=mask)
            target = window(out, i, j, stride, out_h, out_w)
            if overlapping:
                np.bitwise_and(grad_y.view(bits), mask, out=term)
                np.add(target, term.view(grad_y.dtype), out=target)
            else:
                np.bitwise_and(grad_y.view(bits), mask, out=target.view(bits))
    return out


@max_pool_backward.cupy
def _(backend, grad_y, index, input_shape, kernel, stride, out=None):
    out = backend._out(out, tuple(input_shape))
    backend._launch("max_pool_bwd", blocks(out.size, MAX_GRID), BLOCK, grad_y, index, out,
                    *pool_launch_sizes(input_shape, kernel, stride))
    return out


# (batch, channels, height, width), kernel, stride: the usual 2x2, overlapping windows (stride <
# kernel) in both directions or in one, one window, a 1x1 kernel, windows that tile the input
# but for a border no window covers, and windows with gaps between them (stride > kernel).
CASE_GEOMETRIES = [((2, 3, 6, 8), (2, 2), (2, 2)), ((1, 2, 7, 5), (3, 2), (2, 1)), ((3, 1, 5, 5), (3, 3), (1, 1)),
                   ((1, 1, 4, 3), (4, 3), (4, 3)), ((2, 2, 3, 4), (1, 1), (1, 1)), ((2, 3, 7, 9), (2, 2), (2, 2)),
                   ((1, 2, 8, 9), (2, 2), (3, 3)), ((2, 1, 6, 7), (3, 2), (3, 1))]


def case_images(backend, a, shape):
    """An op case's image batch with ties (values on a grid of halves, zeros of both signs) and,
    where it is large enough, NaNs: one alone, and two neighbours (often in one window)."""
    x, = case_arrays(backend, a, shape)
    host = np.round(backend.to_host(x) * 2.0) / 2.0
    if host.size > 20:
        host.flat[7] = np.nan
    if host.size > 40:
        host.flat[20:22] = np.nan
    return backend.asarray(host)


@max_pool_forward.case(exact=True)
def _(backend, a):
    results = []
    for shape, kernel, stride in CASE_GEOMETRIES:
        x = case_images(backend, a, shape)
        y, index = max_pool_forward(backend, x, kernel, stride)
        y2, _ = max_pool_forward(backend, x, kernel, stride, out=backend.empty(y.shape))
        results += [y, index, y2]
    return results


@max_pool_backward.case(exact=True)
def _(backend, a):
    results = []
    for shape, kernel, stride in CASE_GEOMETRIES:
        _, index = max_pool_forward(backend, case_images(backend, a, shape), kernel, stride)
        grad_y = case_images(backend, a, index.shape)  # NaNs too: one not chosen adds nothing
        results += [max_pool_backward(backend, grad_y, index, shape, kernel, stride),
                    max_pool_backward(backend, grad_y, index, shape, kernel, stride, out=backend.empty(shape))]
    return results
