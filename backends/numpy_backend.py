"""The CPU backend: the reference ops on NumPy, with hot ops overridden to run in place.

Every override computes exactly what `Backend` defines (a test compares them op by op); only
the speed differs. Where time goes (benchmarks/RESULTS.md has the measurements):
- Small networks are bound by the number of NumPy calls (each costs about a microsecond), so each op here is
  the fewest ufunc calls that evaluate the reference's formula in the reference's order, writing
  into `out=` or a reused scratch array instead of allocating temporaries.
- Large networks are bound by GEMM: transposes go to BLAS as views (a flag, never a copy) and
  elementwise work is a few streaming passes.
- Measured idioms: a ufunc against a preallocated constant array is faster than against a
  Python scalar that NumPy must convert every call; `ones @ dz` beats `dz.sum(axis=0)`;
  selecting by a mask with arithmetic or bit operations beats `where`/`copyto(where=)` (those
  branch per element).
Ops that no benchmark touches keep the reference.
"""

from __future__ import annotations

import math
import threading

import numpy as np

from backprop.backends.base import BCE_GRAD_EPS, BCE_LOG_FLOOR, Backend

# Activations evaluated in place here; the others run their definition (backends/activations.py).
_IN_PLACE = frozenset(("relu", "sigmoid", "tanh", "linear"))


# Up to this many elements, a Python loop over the values beats isfinite(x).all()'s two NumPy
# calls (a single example's input, a tiny network's output).
SMALL = 16


def all_finite_small(x) -> bool:
    """True when no element of a small array is NaN or +-inf (see SMALL)."""
    return all(map(math.isfinite, x.flat))


class _Recent(dict):
    """A cache that forgets its oldest entries beyond `entries` of them or `size` bytes, so
    that batches of ever new shapes cost bounded memory. Lookups are plain dict lookups (the
    hot path); only an insertion may evict. The entries a training loop reuses every step are
    far fewer than the bound; and the byte bound is at least four times the largest entry, so a
    step whose few arrays are large (an optimizer's scratch over millions of parameters) keeps
    them instead of making them again every step."""

    def __init__(self, entries: int = 64, size: int = 64 * 2**20):
        super().__init__()
        self.entries, self.size, self.held = entries, size, 0

    def put(self, key, value):
        self[key] = value
        nbytes = _nbytes(value)
        self.held += nbytes
        self.size = max(self.size, 4 * nbytes)
        while len(self) > self.entries or (self.held > self.size and len(self) > 1):
            oldest = next(iter(self))
            self.held -= _nbytes(self.pop(oldest))
        return value


def _nbytes(value) -> int:
    return sum(_nbytes(v) for v in value) if isinstance(value, tuple) else value.nbytes


class _PerThread(threading.local):
    """One thread's scratch arrays, constants and scalar slots. Every CPU network of a dtype
    shares one backend, and two of them may train at once in two threads: each thread writes
    its own intermediates. (threading.local runs __init__ once in each thread that looks, and
    the thread's arrays are freed when it ends.)"""

    def __init__(self):
        self.scratch = _Recent()
        self.constants = _Recent()
        self.scalars: dict = {}


class NumpyBackend(Backend):
    """`Backend` on NumPy, tuned for speed."""

    name = "numpy"
    op_flavor = "numpy"

    def __init__(self, dtype: str = "float32", device: str = "cpu"):
        super().__init__(np, dtype=dtype, device=device)
        # Same-width integer type: relu's backward selects by AND-ing the bits with a mask.
        self._int = np.int32 if dtype == "float32" else np.int64
        self._thread = _PerThread()

    # ------------------------------------------------------------------ private helpers

    def _work(self, op: str, shape, make=None):
        """The arrays `op` reuses for inputs of `shape`, made once by `make(shape)` (one empty
        array of the dtype when `make` is None) and then found in one lookup: a tiny network's
        step is bound by per-call costs like these. Valid only until the op that asked returns."""
        key = (op, shape)
        scratch = self._thread.scratch
        arrays = scratch.get(key)
        if arrays is None:
            arrays = scratch.put(key, np.empty(shape, self.dtype) if make is None else make(shape))
        return arrays

    def _const(self, value: float, shape):
        """A read-only array of `value`: ufuncs run faster against it than against a scalar."""
        key = (value, shape)
        constants = self._thread.constants
        array = constants.get(key)
        if array is None:
            array = np.full(shape, value, dtype=self.dtype)
            array.flags.writeable = False
            constants.put(key, array)
        return array

    def _scalar(self, name: str, value: float):
        """`value` in the 0-d array kept for `name`, rewritten in place: a ufunc takes it faster
        than a Python float, which NumPy must inspect every call, and the result is the same
        (the float is cast to the dtype either way). One slot per name, so changing
        values (Adam's bias corrections, scheduled learning rates) allocate nothing."""
        scalars = self._thread.scalars
        slot = scalars.get(name)
        if slot is None:
            slot = scalars[name] = np.empty((), dtype=self.dtype)
        slot[...] = value
        return slot

    def _scale_in_place(self, x, scale: float) -> None:
        """x *= scale; a batch of one (scale 1.0, where the product is x exactly) skips the call."""
        if scale != 1.0:
            np.multiply(x, self._scalar("scale", scale), out=x)

    # ------------------------------------------------------------------ arrays and transfer

    def asarray(self, host_array):
        return np.ascontiguousarray(host_array, dtype=self.dtype)

    def owns(self, x) -> bool:
        return isinstance(x, np.ndarray)

    def to_host(self, array):
        return np.array(array, copy=True)

    def view(self, flat, offset: int, shape):
        size = int(np.prod(shape, dtype=np.int64))
        return flat[offset : offset + size].reshape(shape)

    def take_rows(self, x, indices, out=None):
        return np.take(x, indices, axis=0, out=out)

    def to_scalar(self, x) -> float:
        return float(x)

    # ------------------------------------------------------------------ linear algebra

    def matmul(self, a, b, transpose_a: bool = False, transpose_b: bool = False, out=None):
        # .T is a view: BLAS reads it with a transpose flag, no copy is made. np.dot calls the
        # same sgemm/gemv as np.matmul (bit-identical results) with less overhead a call.
        return np.dot(a.T if transpose_a else a, b.T if transpose_b else b, out=out)

    def sum_rows(self, x, out=None):
        # ones @ x is one GEMV, faster than x.sum(axis=0) here; the sum's order differs
        # (error <= rows * eps * sum|x|, as for any order).
        return np.dot(self._const(1.0, (x.shape[0],)), x, out=out)

    def sum_all(self, x):
        return np.add.reduce(x, None)  # axis positional: less overhead than axis=None

    def all_finite(self, x) -> bool:
        if not x.shape:  # a loss value: no reduction needed
            return math.isfinite(x)
        if x.size <= SMALL:
            return all_finite_small(x)
        # x . x (one BLAS pass, cheaper than isfinite's two) is finite exactly when every
        # element is, barring an overflow of the sum itself, which the exact check then
        # settles; that overflow is no news to the caller: no warning for it.
        if x.ndim == 1:
            with np.errstate(over="ignore"):
                if math.isfinite(np.dot(x, x)):
                    return True
        return bool(np.isfinite(x).all())

    def step_finite(self, loss, grad) -> bool:
        # No device to wait for: the two exact checks cost less than summing the gradient. fit
        # calls this under np.errstate: the dot below needs no errstate of its own.
        if not self.all_finite(loss):
            return False
        if math.isfinite(np.dot(grad, grad)):
            return True
        return bool(np.isfinite(grad).all())

    # ------------------------------------------------------------------ activations

    def _sigmoid_arrays(self, shape):
        both = np.empty((2,) + shape, self.dtype)  # [-|x|, min(x, 0)]: exponentiated in one call
        return both, both[0], both[1], self._const(-1.0, shape), self._const(0.0, shape), self._const(1.0, shape)

    def _sigmoid_into(self, x, out):
        """out = sigmoid(x), two-sided as the reference: where(x >= 0, 1, e) / (1 + e) with
        e = exp(-|x|). The numerator is exp(min(x, 0)): exp(0) = 1 for x >= 0, and for x < 0
        the same exp(x) as e, bit for bit. Both exponents sit in one (2, ...) array, so five
        calls, all on one dtype (a boolean mask in the arithmetic would cost a mixed-type loop,
        3x slower per call on small arrays here)."""
        both, e, numerator, minus_one, zero, one = self._work("sigmoid", x.shape, self._sigmoid_arrays)
        np.copysign(x, minus_one, out=e)  # -|x| in one call
        np.minimum(x, zero, out=numerator)  # before out (maybe x) is overwritten
        np.exp(both, out=both)
        np.add(e, one, out=out)
        return np.divide(numerator, out, out=out)

    def _activate_into(self, x, activation: str, out) -> None:
        """out = act(x) in place, for the activations of _IN_PLACE (none needs its input in backward)."""
        if activation == "relu":
            # fmax(x, 0) is where(x > 0, x, 0) for every x: NaN -> 0 and -0.0 -> +0.0 alike.
            np.fmax(x, self._const(0.0, x.shape), out=out)
        elif activation == "sigmoid":
            self._sigmoid_into(x, out)
        elif activation == "tanh":
            np.tanh(x, out=out)
        elif out is not x:  # linear
            np.copyto(out, x)

    def bias_activation_forward(self, z, bias, activation: str, slope: float = 0.01, out=None):
        if activation not in _IN_PLACE:  # the definition itself, which also returns `pre` if needed
            return super().bias_activation_forward(z, bias, activation, slope, out)
        y = np.empty_like(z) if out is None else out
        np.add(z, bias, out=y)
        self._activate_into(y, activation, y)
        return y, None

    def activation_forward(self, x, activation: str, slope: float = 0.01, out=None):
        if activation not in _IN_PLACE:
            return super().activation_forward(x, activation, slope, out)
        y = np.empty_like(x) if out is None else out
        self._activate_into(x, activation, y)
        return y

    def _relu_backward_arrays(self, shape):
        return np.empty(shape, np.bool_), np.empty(shape, self._int), self._const(0.0, shape)

    def _sigmoid_backward_arrays(self, shape):
        return np.empty(shape, self.dtype), self._const(1.0, shape)

    def activation_backward(self, grad_y, y, pre, activation: str, slope: float = 0.01, out=None):
        if activation == "relu":
            # where(y > 0, dL/dy, 0) bit for bit (NaN and inf included): AND the bits of dL/dy
            # with a mask of all ones (y > 0) or all zeros, made from the boolean mask as -1/0.
            dz = np.empty_like(grad_y) if out is None else out
            positive, bits, zero = self._work("relu_backward", y.shape, self._relu_backward_arrays)
            np.greater(y, zero, out=positive)
            np.negative(positive.view(np.int8), out=bits)
            np.bitwise_and(grad_y.view(self._int), bits, out=dz.view(self._int))
            return dz
        if activation == "sigmoid":
            # dL/dy * y * (1 - y), multiplied in the reference's order.
            dz = np.empty_like(grad_y) if out is None else out
            product, one = self._work("sigmoid_backward", y.shape, self._sigmoid_backward_arrays)
            np.multiply(grad_y, y, out=product)
            np.subtract(one, y, out=dz)
            return np.multiply(product, dz, out=dz)
        if activation == "tanh":
            dz = np.empty_like(grad_y) if out is None else out
            np.multiply(y, y, out=dz)
            np.subtract(self._const(1.0, y.shape), dz, out=dz)
            return np.multiply(grad_y, dz, out=dz)
        return super().activation_backward(grad_y, y, pre, activation, slope, out)

    # ------------------------------------------------------------------ losses

    def _cross_entropy_arrays(self, shape):
        rows, classes = shape
        row_max = np.empty((rows, 1), self.dtype)
        lowest = self._const(float(np.finfo(self.dtype).min), shape)
        return (np.empty(shape, self.dtype), row_max, row_max.reshape(rows), np.empty((rows, 1), self.dtype),
                self._const(1.0, (classes, 1)), lowest)

    def _log_softmax(self, logits):
        """(log softmax(x), e = exp(x - m), sum_k e_k, log of that sum) of each row, as the
        reference computes them: x - m clamped at the lowest finite number, e summed by a GEMV
        (faster than add.reduce(axis=1)). All but e are scratch arrays."""
        shifted, row_max, row_max_flat, row_sum, ones, lowest = self._work(
            "cross_entropy", logits.shape, self._cross_entropy_arrays)
        # into a 1-D view, arguments positional: keepdims=/out= keywords cost more than the max
        np.maximum.reduce(logits, 1, None, row_max_flat)
        np.subtract(logits, row_max, out=shifted)
        np.maximum(shifted, lowest, out=shifted)
        e = np.exp(shifted)  # becomes the caller's gradient in place
        np.dot(e, ones, out=row_sum)
        np.log(row_sum, out=row_max)
        np.subtract(shifted, row_max, out=shifted)
        return shifted, e, row_sum, ones

    def cross_entropy_loss(self, logits, target, reduction: str = "mean"):
        rows = logits.shape[0]
        log_softmax, grad, row_sum, ones = self._log_softmax(logits)
        np.multiply(target, log_softmax, out=log_softmax)
        loss = self._reduce(-np.add.reduce(log_softmax, None), rows, reduction)
        np.divide(grad, row_sum, out=grad)  # softmax
        np.dot(target, ones, out=row_sum)  # sum_k t_k
        np.multiply(grad, row_sum, out=grad)
        np.subtract(grad, target, out=grad)
        self._scale_in_place(grad, self._scale(rows, reduction))
        return loss, grad

    def _label_arrays(self, shape):
        rows, classes = shape
        return np.arange(0, rows * classes, classes), np.empty(rows, np.int64), self._const(1.0, (rows,))

    def cross_entropy_labels_loss(self, logits, labels, reduction: str = "mean"):
        # The one-hot path's numbers without the one-hot rows: the loss picks each row's
        # log softmax at its label; the gradient is softmax with 1 taken off at the label (the
        # reference's softmax * 1 - 1 there, the same single rounding). Plain indexing of the
        # flat arrays: cheaper than np.take/np.put's wrappers here.
        rows = logits.shape[0]
        log_softmax, grad, row_sum, _ = self._log_softmax(logits)
        row_starts, flat_index, one = self._work("cross_entropy_labels", logits.shape, self._label_arrays)
        np.add(row_starts, labels, out=flat_index)
        loss = self._reduce(-np.add.reduce(log_softmax.reshape(-1)[flat_index], None), rows, reduction)
        np.divide(grad, row_sum, out=grad)  # softmax
        flat_grad = grad.reshape(-1)
        at_labels = flat_grad[flat_index]
        np.subtract(at_labels, one, out=at_labels)
        flat_grad[flat_index] = at_labels
        self._scale_in_place(grad, self._scale(rows, reduction))
        return loss, grad

    def _bce_arrays(self, shape):
        logs = np.empty((2,) + shape, self.dtype)  # [log p, log(1 - p)]: clamped in one call
        return (logs, logs[0], logs[1], np.empty(shape, self.dtype), self._const(BCE_LOG_FLOOR, (2,) + shape),
                self._const(1.0, shape), self._const(BCE_GRAD_EPS, shape))

    def bce_loss(self, prob, target, reduction: str = "mean"):
        n = prob.size
        logs, log_p, log_q, q, floor, one, grad_eps = self._work("bce", prob.shape, self._bce_arrays)
        np.log(prob, out=log_p)
        np.negative(prob, out=log_q)
        np.log1p(log_q, out=log_q)
        np.maximum(logs, floor, out=logs)  # clip(min=) with NaN kept, as clip does
        np.multiply(target, log_p, out=log_p)
        np.subtract(one, target, out=q)
        np.multiply(q, log_q, out=log_q)
        np.add(log_p, log_q, out=log_p)
        loss = self._reduce(-np.add.reduce(log_p, None), n, reduction)
        # dL/dp = scale (p - t) / max(p (1 - p), 1e-12), in the reference's order
        np.subtract(one, prob, out=q)
        np.multiply(prob, q, out=q)
        np.maximum(q, grad_eps, out=q)
        grad = np.subtract(prob, target)
        self._scale_in_place(grad, self._scale(n, reduction))
        np.divide(grad, q, out=grad)
        return loss, grad

    # ------------------------------------------------------------------ metrics

    def count_argmax_matches(self, scores, target):
        # methods, not np.argmax: its Python wrapper costs more than the argmax of a batch
        hits = scores.argmax(axis=1) == target.argmax(axis=1)
        return self.dtype(np.count_nonzero(hits))

    def count_label_matches(self, scores, labels):
        return self.dtype(np.count_nonzero(scores.argmax(axis=1) == labels))

    def count_threshold_matches(self, scores, target, score_threshold: float, target_threshold: float):
        # Operators against 0-d thresholds of the backend's dtype: half the cost of
        # np.greater(..., out=) on bool outputs here. The reference compares against Python
        # floats, which NumPy casts to the array's dtype too (NEP 50): the same comparisons.
        hits = ((scores > self._scalar("score_threshold", score_threshold))
                == (target > self._scalar("target_threshold", target_threshold)))
        return self.dtype(np.count_nonzero(hits))

    # ------------------------------------------------------------------ optimizers

    def sgd_step(self, param, grad, momentum_buf, lr: float, momentum: float, dampening: float,
                 nesterov: bool, weight_decay: float, first_step: bool):
        scratch = self._work("sgd_scratch", param.shape)
        g = grad
        if weight_decay != 0:
            g = self._work("sgd_g", param.shape)
            np.multiply(param, self._scalar("weight_decay", weight_decay), out=g)
            np.add(grad, g, out=g)
        if momentum != 0:
            if first_step:
                np.copyto(momentum_buf, g)
            else:
                np.multiply(momentum_buf, self._scalar("momentum", momentum), out=momentum_buf)
                if dampening != 0:
                    np.multiply(g, self._scalar("1 - dampening", 1.0 - dampening), out=scratch)
                    np.add(momentum_buf, scratch, out=momentum_buf)
                else:  # (1 - 0) * g is g exactly: no multiply
                    np.add(momentum_buf, g, out=momentum_buf)
            if nesterov:
                np.multiply(momentum_buf, self._scalar("momentum", momentum), out=scratch)
                g = np.add(g, scratch, out=scratch)
            else:
                g = momentum_buf
        np.multiply(g, self._scalar("lr", lr), out=scratch)
        np.subtract(param, scratch, out=param)

    def adam_step(self, param, grad, exp_avg, exp_avg_sq, lr: float, beta1: float, beta2: float,
                  eps: float, weight_decay: float, step: int, decoupled: bool):
        scratch = self._work("adam_scratch", param.shape)
        g = grad
        if weight_decay != 0:
            if decoupled:
                np.multiply(param, self._scalar("1 - lr wd", 1.0 - lr * weight_decay), out=param)
            else:
                g = self._work("adam_g", param.shape)
                np.multiply(param, self._scalar("weight_decay", weight_decay), out=g)
                np.add(grad, g, out=g)
        np.multiply(exp_avg, self._scalar("beta1", beta1), out=exp_avg)
        np.multiply(g, self._scalar("1 - beta1", 1.0 - beta1), out=scratch)
        np.add(exp_avg, scratch, out=exp_avg)
        np.multiply(exp_avg_sq, self._scalar("beta2", beta2), out=exp_avg_sq)
        np.multiply(g, g, out=scratch)
        np.multiply(scratch, self._scalar("1 - beta2", 1.0 - beta2), out=scratch)
        np.add(exp_avg_sq, scratch, out=exp_avg_sq)
        step_size = lr / (1.0 - beta1**step)
        bias_correction2_sqrt = math.sqrt(1.0 - beta2**step)
        np.sqrt(exp_avg_sq, out=scratch)
        np.divide(scratch, self._scalar("bias_correction2_sqrt", bias_correction2_sqrt), out=scratch)
        np.add(scratch, self._scalar("eps", eps), out=scratch)  # denom
        np.divide(exp_avg, scratch, out=scratch)
        np.multiply(scratch, self._scalar("step_size", step_size), out=scratch)
        np.subtract(param, scratch, out=param)
