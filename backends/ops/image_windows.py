"""What the image ops share: output sizes, strided windows, and their cases' arrays.

A sliding window of a kernel (kh, kw) with strides (sh, sw) over an input of height H and width
W, zero-padded by (ph, pw), has OH = (H + 2 ph - kh) // sh + 1 by OW = (W + 2 pw - kw) // sw + 1
positions.
"""

from __future__ import annotations

import numpy as np


def output_size(size: int, kernel: int, stride: int, padding: int) -> int:
    """Output positions along one axis: (size + 2 padding - kernel) // stride + 1."""
    return (size + 2 * padding - kernel) // stride + 1


def window(array, i, j, stride, out_h, out_w):
    """array[:, :, i + oh sh, j + ow sw] for every (oh, ow): a strided view."""
    return array[:, :, i : i + stride[0] * (out_h - 1) + 1 : stride[0], j : j + stride[1] * (out_w - 1) + 1 : stride[1]]


def case_arrays(backend, a, *shapes):
    """Arrays of `shapes` for an op case (normal values), drawn from a seed fixed by the case's
    input `a["x"]`, so every backend of one case gets the same values."""
    first = backend.to_host(a["x"]).ravel()
    rng = np.random.default_rng([*a["x"].shape, int(abs(float(first[0])) * 1e6)])
    return [backend.asarray(rng.normal(size=shape)) for shape in shapes]
