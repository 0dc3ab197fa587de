"""The GPU backend: the reference ops on CuPy, matmuls in cuBLAS, everything else in our kernels.

CuPy is imported when a CupyBackend is created, never at import time, so `import backprop` works
without it. Every op computes what `Backend` defines (tests compare them op by op):
- matmul: one cuBLAS GEMM with transpose flags (`cupy.cublas.gemm`); transposes are never copied.
- elementwise work, losses, dropout, batch norm, optimizers: the kernels of backprop.kernels, one
  launch each (a reduction adds one single-block launch that adds the per-block partials).
- reductions are deterministic: fixed-order trees, no atomics.
Arrays must be C-contiguous and of the backend's dtype; the launcher refuses anything else.

Every public op, the reference ops inherited from `Backend` included, runs with the backend's
GPU current (`_on_its_device`): the arrays it makes live there, and its kernels (looked up,
compiled and loaded there too), GEMMs and CuPy operations run there. So `cuda:1` never runs
work on GPU 0, whichever device the caller has current.
"""

from __future__ import annotations

import functools
import math
import types

from backprop.backends.activations import get_activation
from backprop.backends.base import Backend, dropout_threshold
from backprop.backends.device_names import parse_device
from backprop.kernels.loader import KernelLibrary

BLOCK = 256          # threads per block (BP_MAX_BLOCK in the kernels)
MAX_GRID = 4096      # elementwise grids stop here; the grid-stride loop does the rest
PARTIAL_GRID = 1024  # blocks of a reduction, so one block of BLOCK threads adds the partials
TILE = 32            # columns per block in column reductions (BP_TILE)


def _blocks(n: int, cap: int) -> int:
    """Blocks of BLOCK threads covering n elements, at least 1, at most `cap`."""
    return max(1, min(cap, -(-n // BLOCK)))


def _row_blocks(rows: int, cap: int) -> int:
    """Blocks for a block-per-row kernel: one per row, at least 1 (the kernel then skips rows it
    does not have), at most `cap` (the grid-stride loop does the rest)."""
    return max(1, min(cap, rows))


def _tiles(cols: int) -> int:
    """Blocks for a column reduction: one per TILE columns, at least 1, at most PARTIAL_GRID."""
    return max(1, min(PARTIAL_GRID, -(-cols // TILE)))


def _row_block(cols: int) -> int:
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
    """Wraps every public op of `Backend` in `cls`, its own and the inherited ones alike."""
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
        grid = _blocks(n, PARTIAL_GRID)
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
        self._launch("take_rows", _blocks(rows * cols, MAX_GRID), BLOCK, x, indices, out, rows, cols)
        return out

    # ------------------------------------------------------------------ linear algebra

    def matmul(self, a, b, transpose_a: bool = False, transpose_b: bool = False, out=None):
        rows = a.shape[1] if transpose_a else a.shape[0]
        cols = b.shape[0] if transpose_b else b.shape[1]
        out = self._out(out, (rows, cols))
        self._cublas.gemm("T" if transpose_a else "N", "T" if transpose_b else "N", a, b, out=out)
        return out

    def sum_rows(self, x, out=None):
        rows, cols = x.shape
        out = self._out(out, (cols,))
        self._launch("column_sums", _tiles(cols), BLOCK, x, out, rows, cols)
        return out

    def add_scaled(self, x, y, alpha: float, out=None):
        out = self._out(out, x.shape)
        self._launch("add_scaled", _blocks(x.size, MAX_GRID), BLOCK, x, y, out, x.size, alpha)
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
            self._launch(f"bias_{act.name}_fwd", _row_blocks(rows, MAX_GRID), _row_block(cols), z, bias, y, rows,
                         cols)
            return y, None
        grid = _blocks(z.size, MAX_GRID)
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
            self._launch(f"{act.name}_{op}", _row_blocks(rows, MAX_GRID), _row_block(cols), *inputs, result, rows,
                         cols)
        else:
            self._launch(f"{act.name}_{op}", _blocks(first.size, MAX_GRID), BLOCK, *inputs, result, first.size, slope)
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

    # ------------------------------------------------------------------ losses

    def _elementwise_loss(self, kernel: str, pred, target, reduction: str, factor: float, sign: float,
                          extra: tuple = ()):
        """(loss, grad) of an elementwise loss kernel: grad = factor * d(reduction) * term';
        `extra` are the loss's own parameters (Huber's delta)."""
        n = pred.size
        grid = _blocks(n, PARTIAL_GRID)
        grad, partials = self.empty(pred.shape), self.empty((grid,))
        self._launch(kernel, grid, BLOCK, pred, target, grad, partials, n, factor * self._scale(n, reduction), *extra)
        return self._total(partials, grid, sign, n if reduction == "mean" else 1), grad

    def mse_loss(self, pred, target, reduction: str = "mean"):
        return self._elementwise_loss("mse_loss", pred, target, reduction, 2.0, 1.0)

    def mae_loss(self, pred, target, reduction: str = "mean"):
        return self._elementwise_loss("mae_loss", pred, target, reduction, 1.0, 1.0)

    def bce_loss(self, prob, target, reduction: str = "mean"):
        return self._elementwise_loss("bce_loss", prob, target, reduction, 1.0, -1.0)

    def bce_with_logits_loss(self, logits, target, reduction: str = "mean"):
        return self._elementwise_loss("bce_logits_loss", logits, target, reduction, 1.0, 1.0)

    def hinge_loss(self, pred, target, reduction: str = "mean"):
        return self._elementwise_loss("hinge_loss", pred, target, reduction, 1.0, 1.0)

    def _row_loss(self, kernel: str, logits, target, reduction: str):
        """(loss, grad) of a block-per-row loss kernel (cross-entropy, its target as probability
        rows or labels)."""
        rows, cols = logits.shape
        grid = _row_blocks(rows, PARTIAL_GRID)
        grad, partials = self.empty(logits.shape), self.empty((grid,))
        self._launch(kernel, grid, _row_block(cols), logits, target, grad, partials, rows, cols,
                     self._scale(rows, reduction))
        return self._total(partials, grid, -1.0, rows if reduction == "mean" else 1), grad

    def cross_entropy_loss(self, logits, target, reduction: str = "mean"):
        return self._row_loss("cross_entropy_loss", logits, target, reduction)

    def cross_entropy_labels_loss(self, logits, labels, reduction: str = "mean"):
        return self._row_loss("cross_entropy_labels_loss", logits, labels, reduction)

    # ------------------------------------------------------------------ metrics

    def count_argmax_matches(self, scores, target):
        rows, cols = scores.shape
        return self._partial_sum("argmax_match_partials", rows, (scores, target), (cols,))

    def count_label_matches(self, scores, labels):
        rows, cols = scores.shape
        return self._partial_sum("argmax_label_match_partials", rows, (scores, labels), (cols,))

    def count_threshold_matches(self, scores, target, score_threshold: float, target_threshold: float):
        return self._partial_sum("threshold_match_partials", scores.size, (scores, target),
                                 (score_threshold, target_threshold))

    # ------------------------------------------------------------------ dropout

    def dropout_forward(self, x, p: float, key: int, out=None):
        y, mask = self._out(out, x.shape), self.empty(x.shape)
        self._launch("dropout_fwd", _blocks(x.size, MAX_GRID), BLOCK, x, y, mask, x.size, key,
                     dropout_threshold(p), 1.0 / (1.0 - p))
        return y, mask

    def dropout_backward(self, grad_y, mask, out=None):
        out = self._out(out, grad_y.shape)
        self._launch("multiply", _blocks(grad_y.size, MAX_GRID), BLOCK, grad_y, mask, out, grad_y.size)
        return out

    # ------------------------------------------------------------------ batch normalization

    def batchnorm_forward_train(self, x, gamma, beta, eps: float):
        rows, cols = x.shape
        y, xhat = self.empty(x.shape), self.empty(x.shape)
        mean, var, inv_std = self.empty((cols,)), self.empty((cols,)), self.empty((cols,))
        self._launch("batchnorm_fwd_train", _tiles(cols), BLOCK,
                     x, gamma, beta, y, xhat, mean, var, inv_std, rows, cols, eps)
        return y, xhat, mean, var, inv_std

    def batchnorm_forward_eval(self, x, gamma, beta, running_mean, running_var, eps: float):
        rows, cols = x.shape
        y = self.empty(x.shape)
        self._launch("batchnorm_fwd_eval", _blocks(x.size, MAX_GRID), BLOCK, x, gamma, beta, running_mean,
                     running_var, y, rows, cols, eps)
        return y

    def batchnorm_backward(self, grad_y, xhat, gamma, inv_std):
        rows, cols = grad_y.shape
        grad_x, grad_gamma, grad_beta = self.empty(grad_y.shape), self.empty((cols,)), self.empty((cols,))
        self._launch("batchnorm_bwd", _tiles(cols), BLOCK,
                     grad_y, xhat, gamma, inv_std, grad_x, grad_gamma, grad_beta, rows, cols)
        return grad_x, grad_gamma, grad_beta

    def layernorm_forward(self, x, gamma, beta, eps: float):
        rows, cols = x.shape
        y, xhat, inv_std = self.empty(x.shape), self.empty(x.shape), self.empty((rows, 1))
        self._launch("layernorm_fwd", _row_blocks(rows, MAX_GRID), _row_block(cols), x, gamma, beta, y, xhat, inv_std,
                     rows, cols, eps)
        return y, xhat, inv_std

    def layernorm_backward(self, grad_y, xhat, gamma, inv_std):
        rows, cols = grad_y.shape
        grad_x, grad_gamma, grad_beta = self.empty(grad_y.shape), self.empty((cols,)), self.empty((cols,))
        self._launch("layernorm_bwd", _row_blocks(rows, MAX_GRID), _row_block(cols), grad_y, xhat, gamma, inv_std,
                     grad_x, rows, cols)
        self._launch("layernorm_param_grads", _tiles(cols), BLOCK, grad_y, xhat, grad_gamma, grad_beta, rows, cols)
        return grad_x, grad_gamma, grad_beta

    def update_running_stats(self, running_mean, running_var, mean, var, momentum: float, n: int):
        cols = running_mean.size
        self._launch("running_stats", _blocks(cols, MAX_GRID), BLOCK, running_mean, running_var, mean, var,
                     cols, momentum, 1.0 - momentum, n / (n - 1))

    # ------------------------------------------------------------------ penalties

    def l1_l2_penalty(self, w, l1: float, l2: float):
        grid = _blocks(w.size, PARTIAL_GRID)
        partials, out = self.empty((2 * grid,)), self.empty(())
        self._launch("penalty_partials", grid, BLOCK, w, partials, w.size)
        self._launch("penalty_finalize", 1, BLOCK, partials, out, grid, l1, l2)
        return out

    def l1_l2_penalty_grad(self, w, grad, l1: float, l2: float):
        self._launch("l1_l2_grad", _blocks(w.size, MAX_GRID), BLOCK, w, grad, w.size, l1, 2.0 * l2)

    # ------------------------------------------------------------------ optimizers

    def sgd_step(self, param, grad, momentum_buf, lr: float, momentum: float, dampening: float,
                 nesterov: bool, weight_decay: float, first_step: bool):
        grid = _blocks(param.size, MAX_GRID)
        if momentum == 0:
            self._launch("sgd", grid, BLOCK, param, grad, param.size, lr, weight_decay)
            return
        self._launch("sgd_momentum", grid, BLOCK, param, grad, momentum_buf, param.size, lr, momentum,
                     1.0 - dampening, weight_decay, int(nesterov), int(first_step))

    def adam_step(self, param, grad, exp_avg, exp_avg_sq, lr: float, beta1: float, beta2: float,
                  eps: float, weight_decay: float, step: int, decoupled: bool):
        moments = (beta1, 1.0 - beta1, beta2, 1.0 - beta2, eps)
        corrections = (lr / (1.0 - beta1**step), math.sqrt(1.0 - beta2**step))
        grid = _blocks(param.size, MAX_GRID)
        if decoupled:
            decay = 1.0 - lr * weight_decay if weight_decay != 0 else 1.0
            self._launch("adamw", grid, BLOCK, param, grad, exp_avg, exp_avg_sq, param.size, decay, *moments,
                         *corrections)
        else:
            self._launch("adam", grid, BLOCK, param, grad, exp_avg, exp_avg_sq, param.size, *moments,
                         weight_decay, *corrections)
