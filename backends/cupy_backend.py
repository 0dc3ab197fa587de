"""The GPU backend: the reference primitives on CuPy, matmuls in cuBLAS, everything else in our
kernels.

CuPy is imported when a CupyBackend is created, never at import time, so `import backprop` works
without it. `xp` is array-api-compat's namespace for CuPy. Every primitive and op computes what
its reference defines (tests compare them op by op):
- matmul: one cuBLAS GEMM with transpose flags (`cupy.cublas.gemm`); transposes are never copied.
- elementwise work and the fused ops (each op's CuPy launch, in its module of ops/,
  `op_flavor = "cupy"`): the kernels of backprop.kernels, one launch each (a reduction adds one
  single-block launch that adds the per-block partials). The launch plumbing they share lives
  here: `_launch`, `_partial_sum`, `_elementwise_loss`, `_row_loss`, and the grid shapes
  (`blocks`, `row_blocks`, `tiles`, `row_block`).
- reductions are deterministic: fixed-order trees, no atomics.
Arrays must be C-contiguous and of the backend's dtype; the launcher refuses anything else.

Every public primitive and fused op, the reference ones inherited from `Backend` included, runs
with the backend's
GPU current (`_on_its_device`): the arrays it makes live there, and its kernels (looked up,
compiled and loaded there too), GEMMs and CuPy operations run there. So `cuda:1` never runs
work on GPU 0, whichever device the caller has current.
"""

from __future__ import annotations

import functools
import types

from backprop.backends.activations import get_activation
from backprop.backends.base import Backend
from backprop.backends.device_names import parse_device
from backprop.backends.ops.reduction import reduction_scale
from backprop.kernels.loader import KernelLibrary

BLOCK = 256          # threads per block (BP_MAX_BLOCK in the kernels)
MAX_GRID = 4096      # elementwise grids stop here; the grid-stride loop does the rest
PARTIAL_GRID = 1024  # blocks of a reduction, so one block of BLOCK threads adds the partials
TILE = 32            # columns per block in column reductions (BP_TILE)


def blocks(n: int, cap: int) -> int:
    """Blocks of BLOCK threads covering n elements, at least 1, at most `cap`."""
    return max(1, min(cap, -(-n // BLOCK)))


def row_blocks(rows: int, cap: int) -> int:
    """Blocks for a block-per-row kernel: one per row, at least 1 (the kernel then skips rows it
    does not have), at most `cap` (the grid-stride loop does the rest)."""
    return max(1, min(cap, rows))


def tiles(cols: int) -> int:
    """Blocks for a column reduction: one per TILE columns, at least 1, at most PARTIAL_GRID."""
    return max(1, min(PARTIAL_GRID, -(-cols // TILE)))


def row_block(cols: int) -> int:
    """Threads per row for a block-per-row kernel: the next power of two >= cols, in [32, BLOCK]."""
    return min(BLOCK, max(32, 1 << max(0, cols - 1).bit_length()))


def _on_its_device(op):
    """`op` run with the backend's GPU current (entered only when another one is, so nested ops
    and a caller already inside `on_device()` pay one device query)."""

    @functools.wraps(op)
    def on_its_device(self, *args, **kwargs):
        if self._is_current():
            return op(self, *args, **kwargs)
        with self._gpu:
            return op(self, *args, **kwargs)

    return on_its_device


def _every_op_on_its_device(cls):
    """Wraps every public primitive of `Backend` in `cls`, its own and the inherited ones alike
    (fused ops are wrapped as they are bound: `_bind_op`)."""
    for name, member in vars(Backend).items():
        if callable(member) and not name.startswith("_") and name != "on_device":
            setattr(cls, name, _on_its_device(getattr(cls, name)))
    return cls


@_every_op_on_its_device
class CupyBackend(Backend):
    """`Backend` on an NVIDIA GPU through CuPy and backprop's CUDA kernels."""

    name = "cupy"
    op_flavor = "cupy"

    def __init__(self, dtype: str = "float32", device: str = "cuda:0"):
        import cupy
        from cupy import cublas  # a submodule CuPy does not import by itself

        kind, index = parse_device(device)
        if kind != "cuda":
            raise ValueError(f"CupyBackend needs a device 'cuda:N', got {device!r}")
        super().__init__(cupy, dtype=dtype, device=f"cuda:{index}")
        self._cupy = cupy
        self._cublas = cublas
        self._runtime, self._index = cupy.cuda.runtime, index
        self._gpu = cupy.cuda.Device(index)
        self._kernels = KernelLibrary(cupy, index)
        self._suffix = "_f32" if dtype == "float32" else "_f64"

    # ------------------------------------------------------------------ plumbing

    def on_device(self):
        return self._gpu

    def _bind_op(self, op):
        """A fused op runs with this backend's GPU current, as every primitive does."""
        return types.MethodType(_on_its_device(op.implementation(self.op_flavor)), self)

    def _is_current(self) -> bool:
        return self._runtime.getDevice() == self._index

    def _launch(self, kernel: str, grid: int, block: int, *args) -> None:
        self._kernels(kernel + self._suffix)(grid, block, *args)

    def _out(self, out, shape):
        return self.empty(shape) if out is None else out

    def _total(self, partials, count: int, sign: float = 1.0, divisor: float = 1.0):
        """A 0-d array: sign * (sum of the `count` partials) / divisor, added in a fixed order."""
        out = self.empty(())
        self._launch("finalize_sum", 1, BLOCK, partials, out, count, sign, divisor)
        return out

    def _partial_sum(self, kernel: str, n: int, inputs: tuple, extra: tuple = ()):
        """Runs a partial-sum kernel (inputs..., partials, n, extra...) over n items; its 0-d total."""
        grid = blocks(n, PARTIAL_GRID)
        partials = self.empty((grid,))
        self._launch(kernel, grid, BLOCK, *inputs, partials, n, *extra)
        return self._total(partials, grid)

    # ------------------------------------------------------------------ arrays and transfer

    def _contiguous(self, array):
        # CuPy's ascontiguousarray makes a 0-d array 1-d: only strided arrays go through it
        return array if array.flags.c_contiguous else self._cupy.ascontiguousarray(array)

    def asarray(self, host_array):
        return self._contiguous(self._cupy.asarray(host_array, dtype=self.dtype))

    def asarray_int(self, host_array):
        return self._contiguous(self._cupy.asarray(host_array, dtype=self._cupy.int64))

    def owns(self, x) -> bool:
        return isinstance(x, self._cupy.ndarray)

    def to_host(self, array):
        return array.get()

    def zeros(self, shape):
        return self._cupy.zeros(shape, dtype=self.dtype)

    def empty(self, shape):
        return self._cupy.empty(shape, dtype=self.dtype)

    def copy(self, x, out=None):
        if out is None:
            return x.copy()
        out[...] = x
        return out

    def take_rows(self, x, indices, out=None):
        if x.ndim != 2 or x.dtype != self.dtype:  # labels (1-D int64): the reference's take
            return super().take_rows(x, indices, out)
        rows, cols = indices.shape[0], x.shape[1]
        out = self._out(out, (rows, cols))
        self._launch("take_rows", blocks(rows * cols, MAX_GRID), BLOCK, x, indices, out, rows, cols)
        return out

    # ------------------------------------------------------------------ linear algebra

    def matmul(self, a, b, transpose_a: bool = False, transpose_b: bool = False, out=None):
        if a.ndim > 2 or b.ndim > 2:  # stacks: CuPy's matmul, a strided batched GEMM
            product = self._cupy.matmul(a.swapaxes(-1, -2) if transpose_a else a,
                                        b.swapaxes(-1, -2) if transpose_b else b, out=out)
            return product if out is None else out
        rows = a.shape[1] if transpose_a else a.shape[0]
        cols = b.shape[0] if transpose_b else b.shape[1]
        out = self._out(out, (rows, cols))
        self._cublas.gemm("T" if transpose_a else "N", "T" if transpose_b else "N", a, b, out=out)
        return out

    def sum_rows(self, x, out=None):
        rows, cols = x.shape
        out = self._out(out, (cols,))
        self._launch("column_sums", tiles(cols), BLOCK, x, out, rows, cols)
        return out

    def add_scaled(self, x, y, alpha: float, out=None):
        out = self._out(out, x.shape)
        self._launch("add_scaled", blocks(x.size, MAX_GRID), BLOCK, x, y, out, x.size, alpha)
        return out

    def sum_all(self, x):
        return self._partial_sum("sum_partials", x.size, (x,))

    def all_finite(self, x) -> bool:
        return self.to_scalar(self._partial_sum("nonfinite_partials", x.size, (x,))) == 0

    # ------------------------------------------------------------------ activations

    def bias_activation_forward(self, z, bias, activation: str, slope: float = 0.01, out=None):
        act = get_activation(activation)
        if not act.builtin:  # a user's activation: its definition, on CuPy
            return super().bias_activation_forward(z, bias, activation, slope, out)
        rows, cols = z.shape
        y = self._out(out, z.shape)
        if act.rowwise:
            self._launch(f"bias_{act.name}_fwd", row_blocks(rows, MAX_GRID), row_block(cols), z, bias, y, rows,
                         cols)
            return y, None
        grid = blocks(z.size, MAX_GRID)
        if act.needs_input:
            pre = self.empty(z.shape)
            self._launch(f"bias_{act.name}_fwd", grid, BLOCK, z, bias, y, pre, rows, cols, slope)
            return y, pre
        self._launch(f"bias_{act.name}_fwd", grid, BLOCK, z, bias, y, rows, cols, slope)
        return y, None

    def _activation_pass(self, op: str, act, inputs: tuple, slope: float, out):
        """Launches `{act.name}_{op}` over `inputs` (the first gives the shape) into `out`: a row-wise
        activation one block per row, the others elementwise. "linear" is the identity: the first
        input itself, or a copy of it in `out`."""
        first = inputs[0]
        if act.name == "linear":
            return first if out is None else self.copy(first, out)
        result = self._out(out, first.shape)
        if act.rowwise:
            rows, cols = first.shape
            self._launch(f"{act.name}_{op}", row_blocks(rows, MAX_GRID), row_block(cols), *inputs, result, rows,
                         cols)
        else:
            self._launch(f"{act.name}_{op}", blocks(first.size, MAX_GRID), BLOCK, *inputs, result, first.size, slope)
        return result

    def activation_forward(self, x, activation: str, slope: float = 0.01, out=None):
        act = get_activation(activation)
        if not act.builtin:
            return super().activation_forward(x, activation, slope, out)
        return self._activation_pass("fwd", act, (x,), slope, out)

    def activation_backward(self, grad_y, y, pre, activation: str, slope: float = 0.01, out=None):
        act = get_activation(activation)
        if not act.builtin:
            return super().activation_backward(grad_y, y, pre, activation, slope, out)
        # the kernel reads what the derivative is written in: the pre-activation or the output
        return self._activation_pass("bwd", act, (grad_y, pre if act.needs_input else y), slope, out)

    # ------------------------------------------------------------------ launch helpers of the loss ops

    def _elementwise_loss(self, kernel: str, pred, target, reduction: str, factor: float, sign: float,
                          extra: tuple = ()):
        """(loss, grad) of an elementwise loss kernel: grad = factor * d(reduction) * term';
        `extra` are the loss's own parameters (Huber's delta)."""
        n = pred.size
        grid = blocks(n, PARTIAL_GRID)
        grad, partials = self.empty(pred.shape), self.empty((grid,))
        self._launch(kernel, grid, BLOCK, pred, target, grad, partials, n, factor * reduction_scale(n, reduction), *extra)
        return self._total(partials, grid, sign, n if reduction == "mean" else 1), grad

    def _row_loss(self, kernel: str, logits, target, reduction: str):
        """(loss, grad) of a block-per-row loss kernel (cross-entropy, its target as probability
        rows or labels)."""
        rows, cols = logits.shape
        grid = row_blocks(rows, PARTIAL_GRID)
        grad, partials = self.empty(logits.shape), self.empty((grid,))
        self._launch(kernel, grid, row_block(cols), logits, target, grad, partials, rows, cols,
                     reduction_scale(rows, reduction))
        return self._total(partials, grid, -1.0, rows if reduction == "mean" else 1), grad
