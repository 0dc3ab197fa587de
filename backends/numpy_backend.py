"""The CPU backend: the reference ops on NumPy, with hot ops overridden to run in place.

Every override computes exactly what `Backend` defines (a test compares them op by op); only
the speed differs: results go straight into `out=` buffers, transposes are passed to BLAS as
views, and no temporary is allocated where a ufunc can write into its destination.
"""

from __future__ import annotations

import numpy as np

from backprop.backends.base import Backend


class NumpyBackend(Backend):
    """`Backend` on NumPy, tuned for speed."""

    name = "numpy"

    def __init__(self, dtype: str = "float32", device: str = "cpu"):
        super().__init__(np, dtype=dtype, device=device)

    def asarray(self, host_array):
        return np.ascontiguousarray(host_array, dtype=self.dtype)

    def to_host(self, array):
        return np.array(array, copy=True)

    def view(self, flat, offset: int, shape):
        size = int(np.prod(shape, dtype=np.int64))
        return flat[offset : offset + size].reshape(shape)

    def matmul(self, a, b, transpose_a: bool = False, transpose_b: bool = False, out=None):
        # .T is a view: BLAS reads it with a transpose flag, no copy is made.
        return np.matmul(a.T if transpose_a else a, b.T if transpose_b else b, out=out)

    def sum_rows(self, x, out=None):
        return np.sum(x, axis=0, out=out)

    def all_finite(self, x) -> bool:
        # sum is one fast pass; it is finite exactly when no element is NaN or inf
        # (barring an overflow of the sum itself, which the slow path then settles).
        total = np.sum(x)
        if np.isfinite(total):
            return True
        return bool(np.isfinite(x).all())
