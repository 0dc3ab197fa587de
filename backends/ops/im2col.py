"""im2col and col2im: a convolution as one matrix product per image. Kernels: kernels/conv.cu.

For an input x of shape (N, C, H, W), a kernel (kh, kw), strides (sh, sw) and zero padding
(ph, pw), the output has OH = (H + 2 ph - kh) // sh + 1 rows and OW = (W + 2 pw - kw) // sw + 1
columns. im2col lays every receptive field of image n out as one column of the matrix cols[n]:

    cols[n, (c, i, j), (oh, ow)] = xpad[n, c, oh sh + i, ow sw + j]

(cols of shape (N, C kh kw, OH OW); rows in (c, i, j) order, the order of a PyTorch conv weight's
last three axes; columns in (oh, ow) order), so a convolution is W @ cols[n] for each image, with
W the weight seen as (out, C kh kw), and gives the output (N, out, OH OW): NCHW as it is.
col2im is its adjoint: each input element gathers the entries of every column whose window
covers it,

    dx[n, c, h, w] = sum over (i, j) with h + ph = oh sh + i, w + pw = ow sw + j of dcols[n, (c, i, j), (oh, ow)]

in the order of (i, j) row by row, as the reference adds them (the kernel gathers instead of
scattering: no atomics, and the same sums bit for bit).
"""

from __future__ import annotations

import numpy as np

from backprop.backends.cupy_backend import BLOCK, MAX_GRID, blocks
from backprop.backends.ops import fused_op
from backprop.backends.ops.image_windows import case_arrays, output_size, window


def _geometry(shape, kernel, stride, padding):
    n, c, h, w = shape
    return n, c, h, w, output_size(h, kernel[0], stride[0], padding[0]), output_size(w, kernel[1], stride[1], padding[1])


@fused_op
def im2col(backend, x, kernel, stride, padding, out=None):
    """cols of shape (N, C kh kw, OH OW) from x (N, C, H, W); see the module docstring."""
    xp = backend.xp
    n, c, h, w, out_h, out_w = _geometry(x.shape, kernel, stride, padding)
    ph, pw = padding
    padded = xp.zeros((n, c, h + 2 * ph, w + 2 * pw), dtype=x.dtype)
    padded[:, :, ph : ph + h, pw : pw + w] = x
    windows = [window(padded, i, j, stride, out_h, out_w) for i in range(kernel[0]) for j in range(kernel[1])]
    stacked = xp.stack(windows, axis=2)  # (N, C, kh kw, OH, OW)
    cols = xp.reshape(stacked, (n, c * kernel[0] * kernel[1], out_h * out_w))
    return backend._result(cols, out)


@im2col.numpy
def _(backend, x, kernel, stride, padding, out=None):
    n, c, h, w, out_h, out_w = _geometry(x.shape, kernel, stride, padding)
    kh, kw = kernel
    ph, pw = padding
    if ph or pw:
        padded = backend._work("im2col_padded", (n, c, h + 2 * ph, w + 2 * pw), backend.zeros)
        padded[:, :, ph : ph + h, pw : pw + w] = x  # the border stays zero
    else:
        padded = x
    windows = np.lib.stride_tricks.sliding_window_view(padded, (kh, kw), axis=(2, 3))
    windows = windows[:, :, :: stride[0], :: stride[1]]  # (N, C, OH, OW, kh, kw), a view
    if out is None:
        out = np.empty((n, c * kh * kw, out_h * out_w), dtype=x.dtype)
    # the copy runs along the output's columns (ow), contiguous in out and strided by sw in x
    np.copyto(out.reshape(n, c, kh, kw, out_h, out_w), windows.transpose(0, 1, 4, 5, 2, 3))
    return out


def launch_sizes(shape, kernel, stride, padding) -> tuple:
    """The geometry arguments of the kernels of conv.cu: n, c, h, w, kh, kw, sh, sw, ph, pw, OH, OW."""
    n, c, h, w, out_h, out_w = _geometry(shape, kernel, stride, padding)
    return (n, c, h, w, *kernel, *stride, *padding, out_h, out_w)


@im2col.cupy
def _(backend, x, kernel, stride, padding, out=None):
    sizes = launch_sizes(x.shape, kernel, stride, padding)
    n, c, _, _, kh, kw, *_, out_h, out_w = sizes
    out = backend._out(out, (n, c * kh * kw, out_h * out_w))
    backend._launch("im2col", blocks(out.size, MAX_GRID), BLOCK, x, out, *sizes)
    return out


@fused_op
def col2im(backend, cols, input_shape, kernel, stride, padding, out=None):
    """dx of shape `input_shape` (N, C, H, W) from dcols (N, C kh kw, OH OW): im2col's adjoint."""
    xp = backend.xp
    n, c, h, w, out_h, out_w = _geometry(input_shape, kernel, stride, padding)
    kh, kw = kernel
    ph, pw = padding
    parts = xp.reshape(cols, (n, c, kh * kw, out_h, out_w))
    padded = xp.zeros((n, c, h + 2 * ph, w + 2 * pw), dtype=cols.dtype)
    for i in range(kh):
        for j in range(kw):
            rows = slice(i, i + stride[0] * (out_h - 1) + 1, stride[0])
            columns = slice(j, j + stride[1] * (out_w - 1) + 1, stride[1])
            padded[:, :, rows, columns] = padded[:, :, rows, columns] + parts[:, :, i * kw + j, :, :]
    return backend._result(padded[:, :, ph : ph + h, pw : pw + w], out)


@col2im.numpy
def _(backend, cols, input_shape, kernel, stride, padding, out=None):
    n, c, h, w, out_h, out_w = _geometry(input_shape, kernel, stride, padding)
    kh, kw = kernel
    sh, sw = stride
    ph, pw = padding
    if out is None:
        out = np.empty(input_shape, dtype=cols.dtype)
    # The sums run on a padded image laid out (H, W, N, C): each add then loops over the N C
    # planes of one window position at a time (long inner loops), not over a window's short
    # rows; the adds and their order are the reference's.
    padded = backend._work("col2im_padded", (h + 2 * ph, w + 2 * pw, n, c))
    padded.fill(0.0)
    parts = cols.reshape(n, c, kh, kw, out_h, out_w).transpose(4, 5, 0, 1, 2, 3)  # (OH, OW, N, C, kh, kw)
    for i in range(kh):
        for j in range(kw):
            target = padded[i : i + sh * (out_h - 1) + 1 : sh, j : j + sw * (out_w - 1) + 1 : sw]
            np.add(target, parts[..., i, j], out=target)
    np.copyto(out, padded[ph : ph + h, pw : pw + w].transpose(2, 3, 0, 1))
    return out


@col2im.cupy
def _(backend, cols, input_shape, kernel, stride, padding, out=None):
    out = backend._out(out, tuple(input_shape))
    backend._launch("col2im", blocks(out.size, MAX_GRID), BLOCK, cols, out,
                    *launch_sizes(input_shape, kernel, stride, padding))
    return out


# (batch, channels, height, width), kernel, stride, padding: square and not, strided, padded,
# kernels of 1, 3 and 5, and an output of a single position.
CASE_GEOMETRIES = [((2, 3, 7, 6), (3, 3), (1, 1), (1, 1)), ((1, 2, 5, 8), (2, 3), (2, 1), (0, 1)),
                   ((3, 1, 4, 4), (1, 1), (1, 1), (0, 0)), ((2, 2, 9, 7), (5, 5), (2, 2), (2, 2)),
                   ((1, 2, 3, 3), (3, 3), (1, 1), (0, 0))]


@im2col.case()
def _(backend, a):
    results = []
    for shape, kernel, stride, padding in CASE_GEOMETRIES:
        x, = case_arrays(backend, a, shape)
        results.append(im2col(backend, x, kernel, stride, padding))
        results.append(im2col(backend, x, kernel, stride, padding, out=backend.empty(results[-1].shape)))
    return results


@col2im.case()
def _(backend, a):
    results = []
    for shape, kernel, stride, padding in CASE_GEOMETRIES:
        n, c, h, w, out_h, out_w = _geometry(shape, kernel, stride, padding)
        cols, = case_arrays(backend, a, (n, c * kernel[0] * kernel[1], out_h * out_w))
        results.append(col2im(backend, cols, shape, kernel, stride, padding))
        results.append(col2im(backend, cols, shape, kernel, stride, padding, out=backend.empty(shape)))
    return results
