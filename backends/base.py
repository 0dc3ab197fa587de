"""The reference backend: the array primitives every op builds on, defined with the Python Array
API standard, and the fused ops found by name.

`Backend` is the definition of what each primitive means. It calls only functions of the Array
API standard on `self.xp` (no NumPy-isms), so it runs unchanged on NumPy, CuPy and
`array-api-strict`. `xp` is a true Array API namespace on every backend: array-api-compat's for
NumPy and CuPy (`array_api(xp)`), so the reference and users' own code call the standard's
functions (`xp.clip(x, min=0.0)`) the same way on both. Faster backends subclass `Backend` and
override primitives with the same signature; a primitive they do not override falls back to
this one.

The primitives (and nothing else: every op built from them lives elsewhere):
- arrays and transfer: `asarray`, `asarray_int`, `owns`, `to_host`, `zeros`, `empty`, `copy`,
  `view`, `reshape`, `take_rows` (row gathers), `to_scalar`;
- linear algebra and reductions: `matmul` (transposes as flags), `sum_rows`, `add_scaled`,
  `sum_all`;
- finiteness: `all_finite`, `step_finite`;
- the activation table's functors (backends/activations.py): `bias_activation_forward`,
  `activation_forward`, `activation_backward`;
- the device: `on_device`.

A *fused op* (a loss with its gradient, a norm layer's passes, an optimizer's update, dropout,
the weight penalty, accuracy's counts) is one module of backends/ops/: its reference, NumPy fast
path and CuPy launch. `backend.<op name>(...)` finds it by name (`ops.serve(Backend)`, at the
end of this file), so this file and the backends' own name none of them.

Conventions shared by every primitive and op:
- Arrays are C-contiguous and of the backend's float dtype unless stated.
- `out=`: when given, the result is written into `out` (same shape and dtype) and `out` is
  returned; otherwise a new array is returned. The standard has no `out=`, so the reference
  computes the result and assigns it (`out[...] = result`); subclasses write in place.
- Ops come in forward/backward pairs. Backward ops take the incoming gradient first (`grad_y`,
  i.e. dL/dy) and return dL/d(input).
- Loss ops return `(loss, grad)`: a 0-d array holding the loss and dL/dpred, computed together
  so nothing is evaluated twice. `reduction` is "mean" or "sum".
- Optimizer ops update `param` and their state buffers in place and return nothing.
"""

from __future__ import annotations

import contextlib
import importlib
import math
import types

import array_api_compat

from backprop.backends import ops
from backprop.backends.activations import get_activation

_NO_SWITCH = contextlib.nullcontext()  # reusable, and shared: it holds no state


def array_api(xp):
    """The Array API namespace of the array library `xp`: array-api-compat's for NumPy and CuPy,
    whose own namespaces differ from the standard (CuPy's `clip(a, a_min, a_max)` has no `min=`,
    nor has NumPy's before 2.1); any other (array-api-strict, array-api-compat's own) as it is."""
    if xp.__name__ in ("numpy", "cupy"):
        return importlib.import_module(f"array_api_compat.{xp.__name__}")
    return xp


class Backend:
    """The array primitives, on any Array API namespace `xp` (NumPy's and CuPy's are replaced by
    array-api-compat's: see `array_api`); fused ops by name."""

    name = "reference"
    op_flavor = "reference"  # which implementation of each fused op this backend runs

    def __init__(self, xp, dtype: str = "float32", device: str = "cpu"):
        if dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
        self.xp = xp = array_api(xp)
        self.dtype_name = dtype
        self.dtype = getattr(xp, dtype)
        self.device = device

    def __repr__(self) -> str:
        return f"{type(self).__name__}(device={self.device!r}, dtype={self.dtype_name!r})"

    def _bind_op(self, op):
        """`op`'s implementation for this backend's flavour, bound as a method."""
        return types.MethodType(op.implementation(self.op_flavor), self)

    def on_device(self):
        """A context manager that makes this backend's device the current one, so that every
        array operation inside it (ours, the array library's, a user's layer's) runs there.
        Nothing to switch on the CPU; the GPU backend enters its `cupy.cuda.Device`."""
        return _NO_SWITCH

    # ------------------------------------------------------------------ arrays and transfer

    def asarray(self, host_array):
        """A device array of the backend's float dtype holding the values of `host_array`."""
        return self.xp.asarray(host_array, dtype=self.dtype)

    def asarray_int(self, host_array):
        """A device array of int64 (labels, indices)."""
        return self.xp.asarray(host_array, dtype=self.xp.int64)

    def owns(self, x) -> bool:
        """True when `x` is already an array of this backend's array library."""
        return array_api_compat.is_array_api_obj(x) and array_api_compat.array_namespace(x) is self.xp

    def to_host(self, array):
        """A NumPy array the caller owns, with the values of a device array."""
        import numpy as np

        return np.array(array, copy=True)

    def zeros(self, shape):
        return self.xp.zeros(shape, dtype=self.dtype)

    def empty(self, shape):
        return self.xp.empty(shape, dtype=self.dtype)

    def copy(self, x, out=None):
        """y = x (a new array, or written into `out`)."""
        if out is None:
            return self.xp.asarray(x, copy=True)
        out[...] = x
        return out

    def view(self, flat, offset: int, shape):
        """The elements flat[offset : offset + prod(shape)] seen with `shape`, sharing memory."""
        size = math.prod(shape)
        return self.xp.reshape(flat[offset : offset + size], shape)

    def reshape(self, x, shape):
        """x with another shape of the same size, sharing memory (x is C-contiguous)."""
        return self.xp.reshape(x, shape)

    def take_rows(self, x, indices, out=None):
        """x[indices] along axis 0 (a batch gathered from the whole data set)."""
        return self._result(self.xp.take(x, indices, axis=0), out)

    def to_scalar(self, x) -> float:
        """A Python float from a 0-d array (a host round trip on a GPU: call it rarely)."""
        return float(x)

    # ------------------------------------------------------------------ helpers

    def _result(self, value, out):
        if out is None:
            return value
        out[...] = value
        return out

    # ------------------------------------------------------------------ linear algebra

    def matmul(self, a, b, transpose_a: bool = False, transpose_b: bool = False, out=None):
        """op(a) @ op(b), where op transposes when its flag is set (views, never copies).

        Either may be a stack of matrices (..., rows, cols): then one product per matrix, the
        stacks broadcast against each other as in the Array API's matmul (a convolution's
        W @ cols[n] for every image n of the batch); op transposes each matrix of a stack."""
        xp = self.xp
        if transpose_a:
            a = xp.matrix_transpose(a)
        if transpose_b:
            b = xp.matrix_transpose(b)
        return self._result(xp.matmul(a, b), out)

    def sum_rows(self, x, out=None):
        """Column sums over the batch axis: db = sum_i dz[i, :] (the bias gradient)."""
        return self._result(self.xp.sum(x, axis=0), out)

    def add_scaled(self, x, y, alpha: float, out=None):
        """x + alpha * y."""
        return self._result(x + alpha * y, out)

    def sum_all(self, x):
        """sum of every element, as a 0-d array."""
        return self.xp.sum(x)

    def all_finite(self, x) -> bool:
        """True when no element is NaN or +-inf."""
        return bool(self.xp.all(self.xp.isfinite(x)))

    def step_finite(self, loss, grad) -> bool:
        """True when a training step's loss (0-d) and every gradient element are finite.

        One reduction and one read-back: loss + sum(grad) is finite exactly when all of them
        are, unless the sum itself overflows, which the exact checks then settle.
        """
        if self.all_finite(loss + self.sum_all(grad)):
            return True
        return self.all_finite(loss) and self.all_finite(grad)

    # ------------------------------------------------------------------ activations

    def bias_activation_forward(self, z, bias, activation: str, slope: float = 0.01, out=None):
        """The dense layer's epilogue, one pass: y = act(z + b), b broadcast over rows.

        Returns `(y, pre)`: `pre = z + b` when the activation's backward needs its input
        (`Activation.needs_input`: GELU, SiLU), else None. The activation is looked up by name
        in backprop.backends.activations, which defines its value and derivative.
        """
        act = get_activation(activation)
        pre = z + bias
        y = self._result(act.forward(self.xp, pre, slope), out)
        return y, (pre if act.needs_input else None)

    def activation_forward(self, x, activation: str, slope: float = 0.01, out=None):
        """y = act(x) (no bias)."""
        return self._result(get_activation(activation).forward(self.xp, x, slope), out)

    def activation_backward(self, grad_y, y, pre, activation: str, slope: float = 0.01, out=None):
        """dL/dz = dL/dy * act'(z), one pass: the activation's own `backward`, given the output y
        and, when it needs it, the pre-activation `pre` returned by the forward."""
        return self._result(get_activation(activation).backward(self.xp, grad_y, y, pre, slope), out)


ops.serve(Backend)  # every fused op by name: backend.<op name>(...)
