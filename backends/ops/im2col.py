"""im2col and col2im: a convolution as matrix products. Kernels: kernels/conv.cu.

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

Both take `layout`: "image" (the default) is the layout above; "batch" puts the whole batch's
columns side by side in one matrix,

    cols[(c, i, j), (n, oh, ow)] = xpad[n, c, oh sh + i, ow sw + j]

(shape (C kh kw, N OH OW)), so a convolution is one product for the batch: cols.T @ W.T gives
rows (N OH OW, out), the output in rows of channels (ops/channels.py lays them out as NCHW).
The batch layout is the image layout's matrices transposed as blocks: the same entries, moved.
"""

from __future__ import annotations

import numpy as np

from backprop.backends.cupy_backend import BLOCK, MAX_GRID, blocks
from backprop.backends.ops import fused_op
from backprop.backends.ops.image_windows import case_arrays, output_size, window


LAYOUTS = ("image", "batch")


def _geometry(shape, kernel, stride, padding):
    n, c, h, w = shape
    return n, c, h, w, output_size(h, kernel[0], stride[0], padding[0]), output_size(w, kernel[1], stride[1], padding[1])


def cols_shape(shape, kernel, stride, padding, layout: str = "image") -> tuple:
    """The shape of im2col's columns for an input of `shape` (N, C, H, W) in `layout`."""
    n, c, _, _, out_h, out_w = _geometry(shape, kernel, stride, padding)
    taps = c * kernel[0] * kernel[1]
    if layout == "image":
        return (n, taps, out_h * out_w)
    if layout == "batch":
        return (taps, n * out_h * out_w)
    raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")


def _swap_blocks(xp, x, rows: int, cols: int, block: int):
    """x seen as (rows, cols, block) laid out (cols, rows, block), C-ordered (a copy): the
    image layout's (N, C kh kw, OH OW) and the batch layout's (C kh kw, N, OH OW) both ways."""
    moved = xp.permute_dims(xp.reshape(x, (rows, cols, block)), (1, 0, 2))
    return xp.reshape(xp.reshape(moved, (-1,)), (cols, rows * block))


@fused_op
def im2col(backend, x, kernel, stride, padding, out=None, layout: str = "image"):
    """cols from x (N, C, H, W): (N, C kh kw, OH OW) in the image layout, (C kh kw, N OH OW) in
    the batch layout; see the module docstring."""
    xp = backend.xp
    cols_shape(x.shape, kernel, stride, padding, layout)  # checks the layout
    n, c, h, w, out_h, out_w = _geometry(x.shape, kernel, stride, padding)
    ph, pw = padding
    padded = xp.zeros((n, c, h + 2 * ph, w + 2 * pw), dtype=x.dtype)
    padded[:, :, ph : ph + h, pw : pw + w] = x
    windows = [window(padded, i, j, stride, out_h, out_w) for i in range(kernel[0]) for j in range(kernel[1])]
    stacked = xp.stack(windows, axis=2)  # (N, C, kh kw, OH, OW)
    cols = xp.reshape(stacked, (n, c * kernel[0] * kernel[1], out_h * out_w))
    if layout == "batch":
        cols = _swap_blocks(xp, cols, n, c * kernel[0] * kernel[1], out_h * out_w)
    return backend._result(cols, out)


@im2col.numpy
def _(backend, x, kernel, stride, padding, out=None, layout: str = "image"):
    shape = cols_shape(x.shape, kernel, stride, padding, layout)
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
        out = np.empty(shape, dtype=x.dtype)
    # the copy runs along the output's columns (ow), contiguous in out and strided by sw in x
    if layout == "image":
        np.copyto(out.reshape(n, c, kh, kw, out_h, out_w), windows.transpose(0, 1, 4, 5, 2, 3))
    else:
        np.copyto(out.reshape(c, kh, kw, n, out_h, out_w), windows.transpose(1, 4, 5, 0, 2, 3))
    return out


def launch_sizes(shape, kernel, stride, padding) -> tuple:
    """The geometry arguments of the kernels of conv.cu: n, c, h, w, kh, kw, sh, sw, ph, pw, OH, OW."""
    n, c, h, w, out_h, out_w = _geometry(shape, kernel, stride, padding)
    return (n, c, h, w, *kernel, *stride, *padding, out_h, out_w)


@im2col.cupy
def _(backend, x, kernel, stride, padding, out=None, layout: str = "image"):
    shape = cols_shape(x.shape, kernel, stride, padding, layout)
    sizes = launch_sizes(x.shape, kernel, stride, padding)
    image = cols_shape(x.shape, kernel, stride, padding)
    cols = backend._out(out, shape) if layout == "image" else backend.empty(image)
    backend._launch("im2col", blocks(cols.size, MAX_GRID), BLOCK, x, cols, *sizes)
    if layout == "image":
        return cols
    # the batch layout: the image layout's columns moved block by block (one copy)
    out = backend._out(out, shape)
    out.reshape(image[1], image[0], image[2])[...] = cols.transpose(1, 0, 2)
    return out


@fused_op
def col2im(backend, cols, input_shape, kernel, stride, padding, out=None, layout: str = "image"):
    """dx of shape `input_shape` (N, C, H, W) from dcols in `layout` (as im2col's): its adjoint."""
    xp = backend.xp
    cols_shape(input_shape, kernel, stride, padding, layout)  # checks the layout
    n, c, h, w, out_h, out_w = _geometry(input_shape, kernel, stride, padding)
    kh, kw = kernel
    ph, pw = padding
    if layout == "batch":
        cols = _swap_blocks(xp, cols, c * kh * kw, n, out_h * out_w)
    parts = xp.reshape(cols, (n, c, kh * kw, out_h, out_w))
    padded = xp.zeros((n, c, h + 2 * ph, w + 2 * pw), dtype=cols.dtype)
    for i in range(kh):
        for j in range(kw):
            rows = slice(i, i + stride[0] * (out_h - 1) + 1, stride[0])
            columns = slice(j, j + stride[1] * (out_w - 1) + 1, stride[1])
            padded[:, :, rows, columns] = padded[:, :, rows, columns] + parts[:, :, i * kw + j, :, :]
    return backend._result(padded[:, :, ph : ph + h, pw : pw + w], out)


@col2im.numpy
def _(backend, cols, input_shape, kernel, stride, padding, out=None, layout: str = "image"):
    cols_shape(input_shape, kernel, stride, padding, layout)  # checks the layout
    n, c, h, w, out_h, out_w = _geometry(input_shape, kernel, stride, padding)
    kh, kw = kernel
    sh, sw = stride
    ph, pw = padding
    if out is None:
        out = np.empty(input_shape, dtype=cols.dtype)
    # The sums run on a padded image laid out (H, W, N, C) for the image layout, (H, W, C, N)
    # for the batch layout (its columns' order): each add then loops over the N C planes of one
    # window position at a time (long inner loops), not over a window's short rows; the adds and
    # their order are the reference's.
    if layout == "image":
        padded = backend._work("col2im_padded", (h + 2 * ph, w + 2 * pw, n, c))
        parts = cols.reshape(n, c, kh, kw, out_h, out_w).transpose(4, 5, 0, 1, 2, 3)  # (OH, OW, N, C, kh, kw)
        planes = (2, 3, 0, 1)
    else:
        padded = backend._work("col2im_padded_batch", (h + 2 * ph, w + 2 * pw, c, n))
        parts = cols.reshape(c, kh, kw, n, out_h, out_w).transpose(4, 5, 0, 3, 1, 2)  # (OH, OW, C, N, kh, kw)
        planes = (3, 2, 0, 1)
    padded.fill(0.0)
    for i in range(kh):
        for j in range(kw):
            target = padded[i : i + sh * (out_h - 1) + 1 : sh, j : j + sw * (out_w - 1) + 1 : sw]
            np.add(target, parts[..., i, j], out=target)
    np.copyto(out, padded[ph : ph + h, pw : pw + w].transpose(*planes))
    return out


@col2im.cupy
def _(backend, cols, input_shape, kernel, stride, padding, out=None, layout: str = "image"):
    shape = cols_shape(input_shape, kernel, stride, padding, layout)
    if layout == "batch":  # moved block by block into the image layout the kernel reads (one copy)
        image = cols_shape(input_shape, kernel, stride, padding)
        moved = backend.empty(image)
        moved[...] = cols.reshape(shape[0], image[0], image[2]).transpose(1, 0, 2)
        cols = moved
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
        for layout in LAYOUTS:
            results.append(im2col(backend, x, kernel, stride, padding, layout=layout))
            results.append(im2col(backend, x, kernel, stride, padding, layout=layout,
                                  out=backend.empty(cols_shape(shape, kernel, stride, padding, layout))))
    return results


@col2im.case()
def _(backend, a):
    results = []
    for shape, kernel, stride, padding in CASE_GEOMETRIES:
        for layout in LAYOUTS:
            cols, = case_arrays(backend, a, cols_shape(shape, kernel, stride, padding, layout))
            results.append(col2im(backend, cols, shape, kernel, stride, padding, layout=layout))
            results.append(col2im(backend, cols, shape, kernel, stride, padding, layout=layout,
                                  out=backend.empty(shape)))
    return results
