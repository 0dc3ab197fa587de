"""The CPU backend: the reference primitives on NumPy, the hot ones overridden to run in place,
and each fused op's NumPy fast path (its module in ops/, `op_flavor = "numpy"`).

Every override computes exactly what `Backend` or the op's reference defines (a test compares
them op by op); only the speed differs. The private helpers below (`_work`, `_const`,
`_scalar`, `_scale_in_place`) are what the fast paths build on. Where time goes (benchmarks/RESULTS.md has the measurements):
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

from backprop.backends.base import Backend

# Activations evaluated in place here; the others run their definition (backends/activations.py).
_IN_PLACE = frozenset(("relu", "sigmoid", "tanh", "linear"))


# NumPy's in-place ufuncs (an output that is also an input) take a slower path on a one-element
# array than writing into another array: the hot paths of a batch of one with one output (the
# sigmoid and its backward, BCE) write every intermediate into an array of its own.

# Up to this many elements, a Python loop over the values beats isfinite(x).all()'s two NumPy
# calls (a single example's input, a tiny network's output).
SMALL = 16


# Up to this many elements (a batch of inputs or outputs), the finiteness check is isfinite into
# a reused mask and a count of it: cheaper there than a dot product under np.errstate, which
# wins on larger arrays (the flat parameter buffer).
BATCH_SIZED = 4096


def _bool_array(shape) -> np.ndarray:
    return np.empty(shape, np.bool_)


def all_finite_small(x) -> bool:
    """True when no element of a small array is NaN or +-inf (see SMALL)."""
    return all(map(math.isfinite, x.flat))


def all_finite_array(x, mask=None) -> bool:
    """True when no element of the array x is NaN or +-inf, by the cheapest check for its size:
    a Python loop up to SMALL values, isfinite up to BATCH_SIZED (into `mask`, a reused boolean
    array of x's shape, when given: then a count, no warning state to set), one dot product
    beyond."""
    if x.size <= SMALL:
        return all_finite_small(x)
    if x.size <= BATCH_SIZED:
        if mask is None:
            return bool(np.isfinite(x).all())
        return np.count_nonzero(np.isfinite(x, out=mask)) == x.size
    return all_finite_large(x)


def all_finite_large(x) -> bool:
    """True when no element of a large float32/float64 array is NaN or +-inf, by x . x: one
    BLAS pass over the values (isfinite(x).all() makes two and a boolean array as large as x's
    elements). The dot is finite exactly when every element is, barring an overflow of the sum
    itself, which the exact check then settles; neither that overflow nor an underflow of tiny
    values is news to the caller, so no floating-point warning or error is raised for them.
    Other dtypes and strided arrays take the exact check."""
    if x.dtype in (np.float32, np.float64) and (x.ndim == 1 or x.flags.c_contiguous):
        flat = x.reshape(-1)
        with np.errstate(all="ignore"):
            if math.isfinite(np.dot(flat, flat)):
                return True
    return bool(np.isfinite(x).all())


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
        # Same-width integer type: relu's backward keeps or zeroes the gradient's bits as integers.
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
        """`value` in the 0-d array kept for `name`, rewritten in place when a new value comes: a
        ufunc takes it faster than a Python float, which NumPy must inspect every call, and the
        result is the same (the float is cast to the dtype either way). One slot per name, so
        changing values (Adam's bias corrections, scheduled learning rates) allocate nothing."""
        scalars = self._thread.scalars
        held = scalars.get(name)
        if held is None:
            held = scalars[name] = [np.empty((), dtype=self.dtype), None]
        if held[1] is not value:  # the same object as last time (an optimizer's lr): already there
            held[0][...] = value
            held[1] = value
        return held[0]

    def _scale_in_place(self, x, scale: float) -> None:
        """x *= scale; a batch of one (scale 1.0, where the product is x exactly) skips the call."""
        if scale != 1.0:
            np.multiply(x, self._scalar("scale", scale), out=x)

    # ------------------------------------------------------------------ arrays and transfer

    # NumPy itself here, not the Array API namespace `xp` (array-api-compat's wrappers of asarray,
    # zeros and empty cost a Python call more, and a public call copies its result every time)

    def asarray(self, host_array):
        return np.ascontiguousarray(host_array, dtype=self.dtype)

    def asarray_int(self, host_array):
        return np.asarray(host_array, dtype=np.int64)

    def zeros(self, shape):
        return np.zeros(shape, self.dtype)

    def empty(self, shape):
        return np.empty(shape, self.dtype)

    def copy(self, x, out=None):
        if out is None:
            return x.copy()
        out[...] = x
        return out

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
        if a.ndim <= 2 and b.ndim <= 2:
            return np.dot(a.T if transpose_a else a, b.T if transpose_b else b, out=out)
        # stacks: np.matmul, one GEMM per matrix (np.dot of a 3-D array is another product)
        return np.matmul(a.mT if transpose_a else a, b.mT if transpose_b else b, out=out)

    def sum_rows(self, x, out=None):
        # ones @ x is one GEMV, faster than x.sum(axis=0) here; the sum's order differs
        # (error <= rows * eps * sum|x|, as for any order). One row is its own sum.
        if x.shape[0] == 1:
            return x[0].copy() if out is None else self.copy(x[0], out)
        return np.dot(self._const(1.0, (x.shape[0],)), x, out=out)

    def sum_all(self, x):
        if x.size == 1:  # a batch of one's loss: the element itself, without a reduction's cost
            return x.reshape(-1)[0]
        return np.add.reduce(x, None)  # axis positional: less overhead than axis=None

    def all_finite(self, x) -> bool:
        if not x.shape:  # a loss value: no reduction needed
            return math.isfinite(x)
        mask = self._work("finite_mask", x.shape, _bool_array) if SMALL < x.size <= BATCH_SIZED else None
        return all_finite_array(x, mask)

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
        block = np.empty((3,) + shape, self.dtype)
        both = block[:2]  # [-|x|, min(x, 0)]: exponentiated in one call
        return both, block[0], block[1], block[2], self._const(-1.0, shape), self._const(0.0, shape), \
            self._const(1.0, shape)

    def _sigmoid_into(self, x, out):
        """out = sigmoid(x), two-sided as the reference: where(x >= 0, 1, e) / (1 + e) with
        e = exp(-|x|). The numerator is exp(min(x, 0)): exp(0) = 1 for x >= 0, and for x < 0
        the same exp(x) as e, bit for bit. Both exponents sit in one (2, ...) array, so five
        calls, all on one dtype (a boolean mask in the arithmetic would cost a mixed-type loop,
        3x slower per call on small arrays here), none writing into its own input (see
        the note on in-place ufuncs at the top of this module)."""
        both, e, numerator, denominator, minus_one, zero, one = self._work("sigmoid", x.shape,
                                                                           self._sigmoid_arrays)
        np.copysign(x, minus_one, out=e)  # -|x| in one call
        np.minimum(x, zero, out=numerator)  # before out (maybe x) is overwritten
        np.exp(both, out=both)
        np.add(e, one, out=denominator)
        return np.divide(numerator, denominator, out=out)

    def _activate_into(self, x, activation: str, out) -> None:
        """out = act(x) in place, for the activations of _IN_PLACE (none needs its input in backward)."""
        if activation == "relu":
            # where(x > 0, x, 0) for every x: fmax takes NaN to 0, but may keep -0.0 (which of
            # two equal zeros it returns differs between its vector loop and its tail); adding
            # +0.0 makes that +0.0 and changes nothing else.
            zero = self._const(0.0, x.shape)
            np.fmax(x, zero, out=out)
            np.add(out, zero, out=out)
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
        if z.shape[0] == 1:  # one row: the bias as a row of the same shape adds faster than broadcast
            bias = bias.reshape(z.shape)
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
        return np.empty(shape, self._int)

    def _sigmoid_backward_arrays(self, shape):
        product, one_minus_y = np.empty((2,) + shape, self.dtype)
        return product, one_minus_y, self._const(1.0, shape)

    def activation_backward(self, grad_y, y, pre, activation: str, slope: float = 0.01, out=None):
        if activation == "relu":
            # where(y > 0, dL/dy, 0) bit for bit (NaN and inf in dL/dy included), in two passes.
            # y must be this backend's relu output: +0 or positive, never NaN. Then y > 0
            # exactly when its bits read as a same-width integer are > 0 (and a -0.0's sign bit
            # would read as negative); that 1 or 0 times the bits of dL/dy keeps or zeroes them.
            dz = np.empty_like(grad_y) if out is None else out
            positive = self._work("relu_backward", y.shape, self._relu_backward_arrays)
            np.greater(y.view(self._int), self._int(0), out=positive)
            np.multiply(grad_y.view(self._int), positive, out=dz.view(self._int))
            return dz
        if activation == "sigmoid":
            # dL/dy * y * (1 - y), multiplied in the reference's order.
            dz = np.empty_like(grad_y) if out is None else out
            product, one_minus_y, one = self._work("sigmoid_backward", y.shape, self._sigmoid_backward_arrays)
            np.multiply(grad_y, y, out=product)
            np.subtract(one, y, out=one_minus_y)
            return np.multiply(product, one_minus_y, out=dz)
        if activation == "tanh":
            dz = np.empty_like(grad_y) if out is None else out
            np.multiply(y, y, out=dz)
            np.subtract(self._const(1.0, y.shape), dz, out=dz)
            return np.multiply(grad_y, dz, out=dz)
        return super().activation_backward(grad_y, y, pre, activation, slope, out)
