"""Every activation, defined once: its value, its derivative, what backward reads, its default init.

An `Activation` is the whole definition of one activation function. Its `forward` and `backward`
are written with functions of the Python Array API standard on `xp`, so they are the reference
(`Backend` evaluates them as they are), they run unchanged on NumPy, CuPy and `array-api-strict`,
and an activation a user registers works on every backend without a kernel. Faster backends may
evaluate a built-in another way (NumPy in place, CUDA in a fused kernel); tests hold them to
these definitions.

    forward(xp, x, slope) -> y
    backward(xp, grad_y, y, x, slope) -> dL/dx = dL/dy * f'(x)

`x` reaches `backward` only when `needs_input` is set (GELU, SiLU: their derivative cannot be
written in terms of y alone); otherwise it is None and the derivative is written in terms of the
output y, which the layer keeps anyway. `slope` is leaky_relu's negative slope; the others
ignore it. `rowwise` marks softmax, which normalizes each row instead of acting elementwise.

Adding a built-in is one entry below (and, for the GPU, its kernels in kernels/activations.cu);
users call `register_activation` with the same fields.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Callable

# sqrt(2 / pi) and the cubic coefficient of the tanh form of GELU (PyTorch's approximate="tanh").
GELU_K = math.sqrt(2.0 / math.pi)
GELU_C = 0.044715
GELU_CLIP = 100.0  # |x| beyond which tanh(k (x + c x^3)) is +-1 exactly in float32 and float64
# |u| beyond which tanh u rounds to +-1 in each dtype: 1 - tanh u = 2 e^-2u / (1 + e^-2u) falls
# below half an ulp of 1 (2^-25 in float32, 2^-54 in float64) at u = 9.01 and 19.06.
GELU_SATURATION = {"float32": 9.0, "float64": 19.1}

@dataclass(frozen=True)
class Activation:
    """One activation: name, value, derivative, what backward reads, and the default init."""

    name: str
    forward: Callable
    backward: Callable
    needs_input: bool = False
    init: str = "glorot_uniform"
    rowwise: bool = False
    builtin: bool = False  # defined here, with CUDA kernels; users' activations run through xp

    def __repr__(self) -> str:
        return f"Activation({self.name!r})"


def sigmoid(xp, x):
    """Two-sided sigmoid, never overflows: where(x >= 0, 1, e) / (1 + e) with e = e^-|x|
    (1 / (1 + e^-x) for x >= 0, e^x / (1 + e^x) below)."""
    e = xp.exp(-xp.abs(x))
    return xp.where(x >= 0, xp.ones_like(e), e) / (1.0 + e)


def _linear_forward(xp, x, slope):
    return x


def _linear_backward(xp, grad_y, y, x, slope):
    """dL/dx = dL/dy."""
    return grad_y


def _sigmoid_forward(xp, x, slope):
    return sigmoid(xp, x)


def _sigmoid_backward(xp, grad_y, y, x, slope):
    """dL/dx = dL/dy * y * (1 - y)."""
    return grad_y * y * (1.0 - y)


def _tanh_forward(xp, x, slope):
    return xp.tanh(x)


def _tanh_backward(xp, grad_y, y, x, slope):
    """dL/dx = dL/dy * (1 - y^2)."""
    return grad_y * (1.0 - y * y)


def _relu_forward(xp, x, slope):
    return xp.where(x > 0, x, xp.zeros_like(x))


def _relu_backward(xp, grad_y, y, x, slope):
    """dL/dx = dL/dy * [y > 0]."""
    return xp.where(y > 0, grad_y, xp.zeros_like(grad_y))


def _leaky_relu_forward(xp, x, slope):
    return xp.where(x > 0, x, slope * x)


def _leaky_relu_backward(xp, grad_y, y, x, slope):
    """dL/dx = dL/dy * (1 if y > 0 else slope)   (slope >= 0, so y > 0 exactly when x > 0)."""
    return xp.where(y > 0, grad_y, slope * grad_y)


def _gelu_tanh(xp, u):
    """tanh u, set to sign(u) where |u| > GELU_SATURATION of u's dtype: there tanh u rounds to
    +-1, which a libm may miss by its few ulps (CUDA's tanhf by 2); 1 - tanh^2 u is then exactly
    0 and not a few ulps, which GELU's derivative multiplies by about x^3."""
    limit = GELU_SATURATION["float32" if u.dtype == xp.float32 else "float64"]
    return xp.where(xp.abs(u) > limit, xp.sign(u), xp.tanh(u))


def _gelu_forward(xp, x, slope):
    """y = x/2 (1 + tanh u), u = k (x + c x^3): the tanh form (PyTorch's approximate="tanh"),
    with tanh saturated where it rounds to +-1 (_gelu_tanh)."""
    inner = GELU_K * (x + GELU_C * x * x * x)
    return 0.5 * x * (1.0 + _gelu_tanh(xp, inner))


def _gelu_backward(xp, grad_y, y, x, slope):
    """dL/dx = dL/dy * (0.5 (1 + tanh u) + 0.5 x (1 - tanh^2 u) k (1 + 3 c x^2)), tanh saturated
    where it rounds to +-1 (_gelu_tanh), so that the second term is exactly 0 there.

    u and its derivative are taken at x clipped to [-GELU_CLIP, GELU_CLIP]: beyond it tanh u is
    +-1 exactly in float32 and float64, so 1 - tanh^2 u is 0 and nothing changes, while x^2 at
    |x| >= 2e19 would overflow float32 and make the second term 0 * inf = NaN."""
    xc = xp.clip(x, min=-GELU_CLIP, max=GELU_CLIP)
    t = _gelu_tanh(xp, GELU_K * (xc + GELU_C * xc * xc * xc))
    dt = GELU_K * (1.0 + 3.0 * GELU_C * xc * xc)
    return grad_y * (0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * dt)


def _softmax_forward(xp, x, slope):
    """y_j = e^(x_j - m) / sum_k e^(x_k - m) over each row, m = the row's max."""
    shifted = x - xp.max(x, axis=1, keepdims=True)
    e = xp.exp(shifted)
    return e / xp.sum(e, axis=1, keepdims=True)


def _softmax_backward(xp, grad_y, y, x, slope):
    """dL/dx_i = y_i (dL/dy_i - sum_j dL/dy_j y_j), per row."""
    dot = xp.sum(grad_y * y, axis=1, keepdims=True)
    return y * (grad_y - dot)


def _softplus_forward(xp, x, slope):
    """y = log(1 + e^x), as max(x, 0) + log1p(e^-|x|): exact for every x, never overflows.
    (PyTorch's Softplus switches to y = x above x = 20; the two differ by log1p(e^-20) ~ 2e-9.)"""
    return xp.where(x > 0, x, xp.zeros_like(x)) + xp.log1p(xp.exp(-xp.abs(x)))


def _softplus_backward(xp, grad_y, y, x, slope):
    """dL/dx = dL/dy * sigmoid(x) = dL/dy * (1 - e^-y), written with expm1 so that small y
    (very negative x) keeps its relative accuracy: sigmoid(x) = -expm1(-y)."""
    return grad_y * -xp.expm1(-y)


def _silu_forward(xp, x, slope):
    """y = x sigmoid(x) (SiLU, also called swish)."""
    return x * sigmoid(xp, x)


def _silu_backward(xp, grad_y, y, x, slope):
    """dL/dx = dL/dy * s (1 + x (1 - s)), s = sigmoid(x)."""
    s = sigmoid(xp, x)
    return grad_y * (s * (1.0 + x * (1.0 - s)))


def _elu_forward(xp, x, slope):
    """y = x for x > 0, e^x - 1 below (ELU with alpha = 1, as PyTorch's and Keras's default)."""
    return xp.where(x > 0, x, xp.expm1(xp.where(x > 0, xp.zeros_like(x), x)))


def _elu_backward(xp, grad_y, y, x, slope):
    """dL/dx = dL/dy * (1 if y > 0 else y + 1): below 0, d(e^x - 1)/dx = e^x = y + 1."""
    return xp.where(y > 0, grad_y, grad_y * (y + 1.0))


ACTIVATIONS: dict[str, Activation] = {}


def register_activation(name: str, forward: Callable, backward: Callable, *, needs_input: bool = False,
                        init: str = "glorot_uniform", rowwise: bool = False) -> Activation:
    """Make `name` an activation every backend and `Dense(..., activation=name)` can use.

    `forward(xp, x, slope) -> y` and `backward(xp, grad_y, y, x, slope) -> dL/dx` are written with
    Array API functions on `xp` (NumPy on the CPU, CuPy on a GPU: no kernel needed). `slope` is
    the using layer's `Dense(..., slope=)` (0.01 unless given), passed to every activation, a
    user's too: one that takes a parameter may read it, the others ignore it. `x` reaches
    `backward` only with `needs_input=True`; `rowwise=True` marks one that normalizes each row
    (as softmax) instead of acting elementwise; both flags are True or False. `init` is the
    default weight initialization of a Dense layer using it.

    `name` is lowercase ASCII letters, digits and underscores, in dot-joined parts, at most 100
    characters (`backprop.checks.check_name`: the rule layers' names follow, lowercase because
    `Dense(activation=...)` looks names up in any case). Checkpoints record the name, so a
    process loading one must register the activation first. Registering a name again replaces
    a user's own definition; the built-ins cannot be replaced.
    """
    from backprop.checks import check_bool, check_name
    from backprop.initializers import check_init

    check_name("name", name, lowercase=True)  # looked up case-insensitively: Dense(activation="SoftSign")
    if name in ACTIVATIONS and ACTIVATIONS[name].builtin:
        raise ValueError(f"{name!r} is a built-in activation and cannot be replaced; choose another name")
    for label, function in (("forward", forward), ("backward", backward)):
        if not callable(function):
            raise TypeError(f"{label} must be a function, got {type(function).__name__}")
    check_init(init)
    activation = Activation(name, _returns_checked(name, "forward", forward),
                            _returns_checked(name, "backward", backward), check_bool("needs_input", needs_input),
                            init, check_bool("rowwise", rowwise))
    ACTIVATIONS[name] = activation
    return activation


def _returns_checked(name: str, which: str, function: Callable) -> Callable:
    """A user's `forward(xp, x, ...)` or `backward(xp, grad_y, ...)` whose result is checked where
    it enters our code: an array of the same library, shape and dtype as its first array argument
    (one row returned for a batch would otherwise be broadcast, every prediction the first's)."""

    @functools.wraps(function)
    def checked(xp, first, *rest):
        value = function(xp, first, *rest)
        wanted = f"an array of shape {tuple(first.shape)} and dtype {first.dtype}, like its input"
        if not isinstance(value, type(first)):
            raise TypeError(f"activation {name!r}: {which} returned {type(value).__name__}, expected {wanted}")
        if value.dtype != first.dtype:
            raise TypeError(f"activation {name!r}: {which} returned dtype {value.dtype}, expected {wanted}")
        if value.shape != first.shape:
            raise ValueError(f"activation {name!r}: {which} returned shape {tuple(value.shape)}, expected {wanted}")
        return value

    return checked


def get_activation(name) -> Activation:
    """The activation called `name` (None means "linear"); ValueError naming the known ones."""
    if name is None:
        name = "linear"
    if isinstance(name, str) and name.lower() in ACTIVATIONS:
        return ACTIVATIONS[name.lower()]
    if not isinstance(name, str):
        raise ValueError(f"activation must be None or one of {sorted(ACTIVATIONS)}, got {name!r}")
    from backprop.checks import NotRegisteredError

    raise NotRegisteredError(f"activation {name!r} is not registered in this process (known: {sorted(ACTIVATIONS)}); "
                             "register your own with bp.register_activation (before bp.load, for a checkpoint)")


def _builtin(name, forward, backward, **fields) -> None:
    ACTIVATIONS[name] = Activation(name, forward, backward, builtin=True, **fields)


_builtin("linear", _linear_forward, _linear_backward)
_builtin("sigmoid", _sigmoid_forward, _sigmoid_backward)
_builtin("tanh", _tanh_forward, _tanh_backward)
_builtin("relu", _relu_forward, _relu_backward, init="he_normal")
_builtin("leaky_relu", _leaky_relu_forward, _leaky_relu_backward, init="he_normal")
_builtin("gelu", _gelu_forward, _gelu_backward, needs_input=True, init="he_normal")
_builtin("softmax", _softmax_forward, _softmax_backward, rowwise=True)
_builtin("softplus", _softplus_forward, _softplus_backward, init="he_normal")
_builtin("silu", _silu_forward, _silu_backward, needs_input=True, init="he_normal")
_builtin("elu", _elu_forward, _elu_backward, init="he_normal")
