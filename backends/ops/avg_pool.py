"""Average pooling, forward and backward (torch.nn.AvgPool2d without padding). Kernels:
kernels/pooling.cu.

For x (N, C, H, W), a window (kh, kw) of K = kh kw elements, strides (sh, sw), k = i kw + j:

    y[n, c, oh, ow] = (sum over k, in order, of x[n, c, oh sh + i, ow sw + j]) / K
    dx[n, c, h, w] = sum over the windows (oh, ow) covering (h, w), in the order of k, of dy[n, c, oh, ow] / K

The kernels add in the same order (backward gathers per input element, no atomics), so the
results agree to the rounding of the division (FMA contraction aside).
"""

from __future__ import annotations

import numpy as np

from backprop.backends.cupy_backend import BLOCK, MAX_GRID, blocks
from backprop.backends.ops import fused_op
from backprop.backends.ops.image_windows import case_arrays, output_size, window
from backprop.backends.ops.max_pool import CASE_GEOMETRIES, pool_launch_sizes, pool_views, zero_uncovered


@fused_op
def avg_pool_forward(backend, x, kernel, stride, out=None):
    """y, the window means; see the module docstring."""
    out_h = output_size(x.shape[2], kernel[0], stride[0], 0)
    out_w = output_size(x.shape[3], kernel[1], stride[1], 0)
    total = window(x, 0, 0, stride, out_h, out_w)
    for k in range(1, kernel[0] * kernel[1]):
        total = total + window(x, k // kernel[1], k % kernel[1], stride, out_h, out_w)
    return backend._result(total / (kernel[0] * kernel[1]), out)


@avg_pool_forward.numpy
def _(backend, x, kernel, stride, out=None):
    views = pool_views(x, kernel, stride)
    if out is None:
        out = np.empty(views[0].shape, dtype=x.dtype)
    # the first sum reads two views in one pass (a pass over strided views costs per row)
    if len(views) == 1:
        np.copyto(out, views[0])
    else:
        np.add(views[0], views[1], out=out)
    for view in views[2:]:
        np.add(out, view, out=out)
    np.divide(out, backend._scalar("pool size", len(views)), out=out)
    return out


@avg_pool_forward.cupy
def _(backend, x, kernel, stride, out=None):
    sizes = pool_launch_sizes(x.shape, kernel, stride)
    out = backend._out(out, (*x.shape[:2], *sizes[-2:]))
    backend._launch("avg_pool_fwd", blocks(out.size, MAX_GRID), BLOCK, x, out, *sizes)
    return out


@fused_op
def avg_pool_backward(backend, grad_y, input_shape, kernel, stride, out=None):
    """dx of `input_shape` from dy; see the module docstring."""
    xp = backend.xp
    _, _, out_h, out_w = grad_y.shape
    share = grad_y / (kernel[0] * kernel[1])
    dx = xp.zeros(input_shape, dtype=grad_y.dtype)
    for i in range(kernel[0]):
        for j in range(kernel[1]):
            rows = slice(i, i + stride[0] * (out_h - 1) + 1, stride[0])
            columns = slice(j, j + stride[1] * (out_w - 1) + 1, stride[1])
            dx[:, :, rows, columns] = dx[:, :, rows, columns] + share
    return backend._result(dx, out)


@avg_pool_backward.numpy
def _(backend, grad_y, input_shape, kernel, stride, out=None):
    # Windows that tile dx (stride == kernel) give each element one share, written straight
    # into its strided view; otherwise shares are added in the order of k.
    _, _, out_h, out_w = grad_y.shape
    if out is None:
        out = np.empty(input_shape, dtype=grad_y.dtype)
    size = backend._scalar("pool size", kernel[0] * kernel[1])
    tiled = tuple(stride) == tuple(kernel)
    if tiled:
        zero_uncovered(out, kernel, out_h, out_w)
    else:
        out.fill(0.0)
        share = np.divide(grad_y, size, out=backend._work("avg_pool_share", grad_y.shape))
    for i in range(kernel[0]):
        for j in range(kernel[1]):
            target = window(out, i, j, stride, out_h, out_w)
            if tiled:
                np.divide(grad_y, size, out=target)
            else:
                np.add(target, share, out=target)
    return out


@avg_pool_backward.cupy
def _(backend, grad_y, input_shape, kernel, stride, out=None):
    out = backend._out(out, tuple(input_shape))
    backend._launch("avg_pool_bwd", blocks(out.size, MAX_GRID), BLOCK, grad_y, out,
                    *pool_launch_sizes(input_shape, kernel, stride))
    return out


@avg_pool_forward.case()
def _(backend, a):
    results = []
    for shape, kernel, stride in CASE_GEOMETRIES:
        x, = case_arrays(backend, a, shape)
        y = avg_pool_forward(backend, x, kernel, stride)
        results += [y, avg_pool_forward(backend, x, kernel, stride, out=backend.empty(y.shape))]
    return results


@avg_pool_backward.case()
def _(backend, a):
    results = []
    for shape, kernel, stride in CASE_GEOMETRIES:
        out_h = output_size(shape[2], kernel[0], stride[0], 0)
        out_w = output_size(shape[3], kernel[1], stride[1], 0)
        grad_y, = case_arrays(backend, a, (shape[0], shape[1], out_h, out_w))
        results += [avg_pool_backward(backend, grad_y, shape, kernel, stride),
                    avg_pool_backward(backend, grad_y, shape, kernel, stride, out=backend.empty(shape))]
    return results
