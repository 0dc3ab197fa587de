"""Proof 2: the unchanged .cu files, compiled for the host by g++ with kernels/host_shim.h, compute
what the reference backend computes, within the error bound written beside each kernel, over
launch shapes a GPU would see and under the GPU's arithmetic.

Each entry of CASES is one kernel's check: its arguments by parameter name, and the reference's
value of each output it checks. It runs under every emulation of EMULATIONS (tests/host_kernels.py):
the plain host build over several (grid, block) shapes (grid x block smaller than n, so the
grid-stride loop must come round; n never a multiple of the block; blocks of odd widths and the
largest); the GPU's arithmetic (FMA contraction, libm results moved within CUDA's documented ulps,
float32 flush-to-zero) with blocks and threads run in reverse order, on one representative shape;
and, for the kernels with barriers, ThreadSanitizer on that shape. Shared memory is poisoned
before every block under all of them.
Outputs start as NaN and carry guard cells past their end: an element never written stays NaN and
fails the comparison; an element written past the end changes a guard, whose NaN payload is
unique to its buffer. Inputs carry such NaN guard cells too, so reading past the end poisons a
result.

The bounds are not here: each is read from the `bound[...]` lines beside its kernel (common.cuh
gives their notation) and evaluated on the check's arguments. A bound says how far the kernel's
result may be from the exact value, so it is checked against the reference evaluated in a wider
type (float64 for float32 kernels, x87 long double for float64 ones), allowing 1/64 more for the
bound's higher-order terms and the wider reference's own rounding, plus 2^-126 in float32 for a
subnormal flushed to zero. `exact` outputs must equal the reference in the kernel's own type, bit
for bit. Adding a kernel's check is adding its bound lines and one entry to CASES.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.resources
import math
import re
import types
from typing import Callable

import numpy as np
import pytest

from backprop.backends.activations import ACTIVATIONS as ACTIVATION_TABLE
from backprop.backends.base import Backend
from backprop.backends.ops.dropout import dropout_key, dropout_threshold
from backprop.kernels.loader import PACKAGE, kernel_index, kernel_source, source_names
from host_kernels import PLAIN, Emulation, HostModule, build_all

# (grid, block): the first four have grid x block < n for SHAPE; the last covers it.
LAUNCHES = [(1, 32), (3, 64), (2, 96), (4, 128), (5, 256)]
REPRESENTATIVE = (2, 96)  # grid x block < n, a block neither a power of two nor the largest
SHAPE = (37, 29)          # n = 1073: no block divides it
# Block-per-row kernels run one host thread per CUDA thread, whose barriers cost far more than
# the arithmetic, so they get fewer rows (still more rows than blocks: the row loop comes round).
ROWS = (11, 29)
WIDE = (3, 300)           # rows wider than every block: threads stride along a row
TALL = (300, 3)           # columns longer than every block: thread groups stride along a column
FLAT = (1037,)            # the optimizers' flat parameter buffer
GUARD = 5
POISON = {np.float32: np.uint32(0x7FC0DEAD).view(np.float32),
          np.float64: np.uint64(0x7FF8DEADBEEF0000).view(np.float64)}
SUFFIX = {np.float32: "_f32", np.float64: "_f64"}
DTYPES = [np.float32, np.float64]
UNIT_ROUNDOFF = {np.float32: 2.0**-24, np.float64: 2.0**-53}
FLUSH_FLOOR = {np.float32: 2.0**-126, np.float64: 0.0}
HIGHER_ORDER = 1 + 2.0**-6
# The wider type each kernel's reference is evaluated in.
WIDE_TYPE = {np.float32: np.float64, np.float64: np.longdouble}

# name: (emulation, launch shapes, dtypes). "tsan" runs the barrier kernels only (no other kernel
# has threads running at once), in float32 only (a race does not depend on the dtype).
EMULATIONS = {
    "host": (PLAIN, LAUNCHES, DTYPES),
    "gpu": (Emulation(fma=True, libm_ulps=True, flush_to_zero=True, reverse=True), [REPRESENTATIVE], DTYPES),
    "tsan": (Emulation(thread_sanitizer=True), [REPRESENTATIVE], [np.float32]),
}


# ---------------------------------------------------------------------------- the bound lines

_BOUND_LINE = re.compile(r"^[ \t]*//[ \t]*bound\[([\w ]+)\][ \t]+(\w+)[ \t]*([:=])[ \t]*(.+?)[ \t]*$", re.MULTILINE)


@functools.lru_cache(maxsize=1)
def kernel_bounds() -> dict[str, list[tuple[str, str, str]]]:
    """{kernel (without dtype suffix): [(name, ":" for a bound or "=" for a quantity, expression)]}
    from the bound[...] lines of every .cu and .cuh file, in file order."""
    found: dict[str, list] = {}
    for entry in sorted(importlib.resources.files(PACKAGE).iterdir(), key=lambda e: e.name):
        if entry.name.endswith((".cu", ".cuh")):
            for match in _BOUND_LINE.finditer(entry.read_text(encoding="utf-8")):
                for kernel in match.group(1).split():
                    found.setdefault(kernel, []).append(match.group(2, 3, 4))
    return found


def _rowsum(a):
    return np.sum(a, axis=-1, keepdims=True)


def _rowmax(a):
    return np.max(a, axis=-1, keepdims=True)


def _softmax(a):
    e = np.exp(a - _rowmax(a))
    return e / _rowsum(e)


HELPERS = {"abs": np.abs, "sqrt": np.sqrt, "where": np.where, "total": np.sum, "rowsum": _rowsum,
           "rowmax": _rowmax, "colsum": lambda a: np.sum(a, axis=0), "softmax": _softmax}


def bounds_of(kernel: str, names: dict, results: dict, unit_roundoff: float) -> dict:
    """{output: its bound (an array), or "exact"} for one check: the kernel's bound lines
    evaluated with the check's arguments `names` and the exact outputs `results`."""
    lines = kernel_bounds().get(kernel)
    if not lines:
        raise KeyError(f"{kernel} has no bound[...] lines beside it")
    hidden = set(names) & {*HELPERS, "u", "result"}
    if hidden:
        raise NameError(f"{kernel}: parameters {sorted(hidden)} would hide names the bound lines use")
    scope = {**HELPERS, **names, "u": unit_roundoff}
    bounds = {}
    for name, kind, expression in lines:
        if kind == "=":
            if name in names or name in HELPERS:
                raise NameError(f"bound[{kernel}] {name} = ... would hide an argument or a helper")
            scope[name] = eval(expression, {"__builtins__": {}}, scope)
        elif expression == "exact":
            bounds[name] = "exact"
        else:
            bounds[name] = eval(expression, {"__builtins__": {}}, {**scope, "result": results[name]})
    return bounds


# ---------------------------------------------------------------------------- drawing arguments

class Draw:
    """Guarded, poisoned arrays of one dtype for one check (see the module docstring), and the
    launch shape the check uses."""

    def __init__(self, dtype, shape, launch):
        self.dtype, self.shape = dtype, shape
        self.rows, self.cols, self.n = shape[0], shape[-1], math.prod(shape)
        self.grid, self.block = launch
        self.reference = Backend(np, dtype.__name__)
        self.rng = np.random.default_rng(1234)
        self.buffers = []

    def _guard_value(self, dtype):
        """A NaN whose payload names this buffer (an integer sentinel for index arrays). Unique
        per buffer: a stray write of a value computed from another buffer's guard (NaN
        arithmetic keeps the payload) still changes this guard."""
        tag = len(self.buffers) + 1
        if dtype == np.float32:
            return np.uint32(0x7FC00000 | tag).view(np.float32)
        if dtype == np.float64:
            return np.uint64(0x7FF8000000000000 | tag).view(np.float64)
        return dtype.type(-tag)

    def _guarded(self, values):
        values = np.asarray(values)
        buffer = np.empty(values.size + GUARD, dtype=values.dtype)
        buffer[values.size:] = self._guard_value(values.dtype)
        view = buffer[:values.size].reshape(values.shape)
        view[...] = values
        self.buffers.append((buffer, values.size, buffer[values.size:].copy()))
        return view

    def input(self, values):
        """A guarded copy of `values` in this dtype (also for arrays updated in place)."""
        return self._guarded(np.asarray(values, dtype=self.dtype))

    def indices(self, high: int, size: int):
        return self._guarded(self.rng.integers(0, high, size=size).astype(np.int64))

    def output(self, shape=None):
        """A guarded array (of the check's shape by default), every element poisoned."""
        return self._guarded(np.full(shape or self.shape, POISON[self.dtype], dtype=self.dtype))

    def normal(self, shape=None, scale=2.0, mean=0.0):
        return self.input(self.rng.normal(mean, scale, size=shape or self.shape))

    def uniform(self, low, high, shape=None):
        return self.input(self.rng.uniform(low, high, size=shape or self.shape))

    def binary(self):
        return self.input(self.rng.integers(0, 2, size=self.shape))

    def signs(self):
        return self.input(self.rng.choice([-1.0, 1.0], size=self.shape))

    def onehot(self):
        return self.input(np.eye(self.cols)[self.rng.integers(0, self.cols, size=self.rows)])

    def with_extremes(self):
        """Normal draws with a few values far out, where exp underflows (a subnormal that the GPU
        flushes to zero) and tanh saturates."""
        values = self.rng.normal(0.0, 2.0, size=self.shape)
        values.flat[:6] = [-100.0, 100.0, -60.0, 60.0, -20.0, 20.0]
        return self.input(values)

    def scalar(self, value):
        return self.dtype(value)

    def check_guards(self):
        for buffer, size, guard in self.buffers:
            assert buffer[size:].tobytes() == guard.tobytes(), "a kernel wrote past the end of an array"


class Kernels:
    """Launches one emulation's builds of the kernels of one dtype, arguments by parameter name.
    `module(file)` gives the build of a .cu file."""

    def __init__(self, module: Callable, dtype):
        self.module, self.dtype = module, dtype

    def launch(self, kernel: str, grid: int, block: int, args: dict) -> None:
        name = kernel + SUFFIX[self.dtype]
        source, params = kernel_index()[name]
        self.module(source).function(name)(grid, block, tuple(args[p.name] for p in params))

    def reaches_barrier(self, kernel: str) -> bool:
        """Whether the kernel, launched before, was found to reach __syncthreads."""
        name = kernel + SUFFIX[self.dtype]
        return name in self.module(kernel_index()[name][0]).threaded


# ---------------------------------------------------------------------------- the checks

@dataclasses.dataclass(frozen=True)
class Case:
    """One kernel's check. `args(draw)` gives every argument by parameter name (outputs poisoned,
    from draw.output), and may add the arguments of the kernels `finish` launches. `want(ref,
    arg)` gives the reference's value of each checked output, from the arguments as they were
    before the launch (`arg.name`, in the reference's dtype) on the reference backend `ref`.
    `finish(kernels, draw, args)` launches the kernels (named in `also`) that turn the kernel's
    partial results into a checked value, as the backend does, and returns {name: value}."""

    kernel: str
    args: Callable
    want: Callable
    finish: Callable | None = None
    also: tuple = ()
    shapes: tuple = (SHAPE,)
    label: str = ""

    @property
    def id(self) -> str:
        return f"{self.kernel}-{self.label}" if self.label else self.kernel


def total_of_partials(checked: str) -> Callable:
    """A `finish` that adds the kernel's partials with finalize_sum (its `sign` and `divisor`
    among the case's arguments) and checks the result as `checked`."""
    def finish(kernels, draw, args):
        out = draw.output((1,))
        kernels.launch("finalize_sum", 1, draw.block, {**args, "out": out, "count": draw.grid})
        return {checked: out[0]}
    return finish


def summed(d, sign=1.0, divisor=1.0) -> dict:
    """finalize_sum's arguments besides the partials: the sign and the divisor it applies."""
    return {"sign": d.scalar(sign), "divisor": d.scalar(divisor)}


# Activations with elementwise kernels (bias_<name>_fwd, <name>_fwd, <name>_bwd): the built-ins of
# the library's table but softmax (a row operation, with kernels of its own).
ACTIVATIONS = tuple(name for name, act in ACTIVATION_TABLE.items() if act.builtin and not act.rowwise)
SLOPE = 0.02


def activation_cases(activation: str) -> list[Case]:
    """bias + activation forward, and (but for linear) the plain forward and the backward. An
    activation whose backward needs its input also writes and reads the pre-activation."""
    needs_input = ACTIVATION_TABLE[activation].needs_input

    def with_bias(d):
        outputs = {"y": d.output(), **({"pre": d.output()} if needs_input else {})}
        return {"z": d.with_extremes(), "bias": d.normal((d.cols,)), **outputs, "rows": d.rows,
                "cols": d.cols, "slope": d.scalar(SLOPE)}

    def want_with_bias(ref, arg):
        y, pre = ref.bias_activation_forward(arg.z, arg.bias, activation, SLOPE)
        return {"y": y, **({"pre": pre} if needs_input else {})}

    cases = [Case(f"bias_{activation}_fwd", with_bias, want_with_bias)]
    if activation == "linear":
        return cases
    saved = "pre" if needs_input else "y"

    def backward(d):
        z = d.with_extremes()
        value = z if needs_input else d.input(d.reference.activation_forward(z, activation, SLOPE))
        return {"dy": d.normal(scale=1.0), saved: value, "dz": d.output(), "n": d.n, "slope": d.scalar(SLOPE)}

    def want_backward(ref, arg):
        y, pre = (None, arg.pre) if needs_input else (arg.y, None)
        return {"dz": ref.activation_backward(arg.dy, y, pre, activation, SLOPE)}

    return cases + [
        Case(f"{activation}_fwd",
             lambda d: {"x": d.with_extremes(), "y": d.output(), "n": d.n, "slope": d.scalar(SLOPE)},
             lambda ref, arg: {"y": ref.activation_forward(arg.x, activation, SLOPE)}),
        Case(f"{activation}_bwd", backward, want_backward),
    ]


SOFTMAX_CASES = [
    Case("bias_softmax_fwd",
         lambda d: {"z": d.normal(scale=3.0), "bias": d.normal((d.cols,)), "y": d.output(), "rows": d.rows,
                    "cols": d.cols},
         lambda ref, arg: {"y": ref.bias_activation_forward(arg.z, arg.bias, "softmax")[0]},
         shapes=(ROWS, WIDE)),
    Case("softmax_fwd",
         lambda d: {"x": d.normal(scale=3.0), "y": d.output(), "rows": d.rows, "cols": d.cols},
         lambda ref, arg: {"y": ref.activation_forward(arg.x, "softmax")},
         shapes=(ROWS, WIDE)),
    Case("softmax_bwd",
         lambda d: {"dy": d.normal(scale=1.0), "y": d.input(d.reference.activation_forward(d.normal(scale=3.0), "softmax")),
                    "dz": d.output(), "rows": d.rows, "cols": d.cols},
         lambda ref, arg: {"dz": ref.activation_backward(arg.dy, arg.y, None, "softmax")},
         shapes=(ROWS, WIDE)),
]

# kernel: (reference op, prediction parameter, prediction draw, target draw, grad_scale factor,
# sign finalize_sum applies)
LOSSES = {
    "mse_loss": ("mse_loss", "pred", Draw.normal, Draw.normal, 2.0, 1.0),
    "mae_loss": ("mae_loss", "pred", Draw.normal, Draw.normal, 1.0, 1.0),
    "bce_loss": ("bce_loss", "prob", lambda d: d.uniform(0.001, 0.999), Draw.binary, 1.0, -1.0),
    "bce_logits_loss": ("bce_with_logits_loss", "logits", Draw.normal, Draw.binary, 1.0, 1.0),
    "hinge_loss": ("hinge_loss", "pred", Draw.normal, Draw.signs, 1.0, 1.0),
    "cross_entropy_loss": ("cross_entropy_loss", "logits", Draw.normal, Draw.onehot, 1.0, -1.0),
}


def loss_case(kernel: str, reduction: str) -> Case:
    op, pred, draw_pred, draw_target, factor, sign = LOSSES[kernel]
    rows_kernel = kernel == "cross_entropy_loss"

    def args(d):
        count = d.rows if rows_kernel else d.n
        divisor = count if reduction == "mean" else 1
        sizes = {"rows": d.rows, "cols": d.cols} if rows_kernel else {"n": d.n}
        return {pred: draw_pred(d), "target": draw_target(d), "grad": d.output(), "partials": d.output((d.grid,)),
                **sizes, "grad_scale": d.scalar(factor / divisor), **summed(d, sign, divisor)}

    def want(ref, arg):
        loss, grad = getattr(ref, op)(getattr(arg, pred), arg.target, reduction)
        return {"loss": loss, "grad": grad}

    return Case(kernel, args, want, total_of_partials("loss"), ("finalize_sum",),
                (ROWS, WIDE) if rows_kernel else (SHAPE,), reduction)


def huber_case(reduction: str) -> Case:
    delta = 1.5  # |pred - target| of normal draws falls on both sides of it

    def args(d):
        divisor = d.n if reduction == "mean" else 1
        return {"pred": d.normal(), "target": d.normal(), "grad": d.output(), "partials": d.output((d.grid,)),
                "n": d.n, "grad_scale": d.scalar(1.0 / divisor), "delta": d.scalar(delta), **summed(d, 1.0, divisor)}

    def want(ref, arg):
        loss, grad = ref.huber_loss(arg.pred, arg.target, delta, reduction)
        return {"loss": loss, "grad": grad}

    return Case("huber_loss", args, want, total_of_partials("loss"), ("finalize_sum",), label=reduction)


def labels_cross_entropy_case(reduction: str) -> Case:
    def args(d):
        divisor = d.rows if reduction == "mean" else 1
        return {"logits": d.normal(), "labels": d.indices(d.cols, d.rows), "grad": d.output(),
                "partials": d.output((d.grid,)), "rows": d.rows, "cols": d.cols,
                "grad_scale": d.scalar(1.0 / divisor), **summed(d, -1.0, divisor)}

    def want(ref, arg):
        loss, grad = ref.cross_entropy_labels_loss(arg.logits, arg.labels, reduction)
        return {"loss": loss, "grad": grad}

    return Case("cross_entropy_labels_loss", args, want, total_of_partials("loss"), ("finalize_sum",),
                (ROWS, WIDE), reduction)


def penalty_finish(kernels, draw, args):
    out = draw.output((1,))
    kernels.launch("penalty_finalize", 1, draw.block, {**args, "out": out, "count": draw.grid})
    return {"penalty": out[0]}


def nonfinite_input(d, count: int):
    values = d.rng.normal(0.0, 2.0, size=d.shape)
    values.flat[[7, 100, d.n - 1][:count]] = [np.nan, np.inf, -np.inf][:count]
    return d.input(values)


REDUCTION_CASES = [
    Case("sum_partials",
         lambda d: {"x": d.normal(), "partials": d.output((d.grid,)), "n": d.n, **summed(d)},
         lambda ref, arg: {"sum": ref.sum_all(arg.x)}, total_of_partials("sum"), ("finalize_sum",)),
    Case("threshold_match_partials",
         lambda d: {"scores": d.normal(), "target": d.uniform(0.001, 0.999), "partials": d.output((d.grid,)),
                    "n": d.n, "score_threshold": d.scalar(0.0), "target_threshold": d.scalar(0.5), **summed(d)},
         lambda ref, arg: {"count": ref.count_threshold_matches(arg.scores, arg.target, 0.0, 0.5)},
         total_of_partials("count"), ("finalize_sum",)),
    Case("argmax_label_match_partials",  # rounded scores tie: argmax must pick the first maximum
         lambda d: {"scores": d.input(np.round(d.rng.normal(0.0, 2.0, d.shape))), "labels": d.indices(d.cols, d.rows),
                    "partials": d.output((d.grid,)), "rows": d.rows, "cols": d.cols, **summed(d)},
         lambda ref, arg: {"count": ref.count_label_matches(arg.scores, arg.labels)},
         total_of_partials("count"), ("finalize_sum",)),
    Case("argmax_match_partials",  # rounded scores tie: argmax must pick the first maximum
         lambda d: {"scores": d.input(np.round(d.rng.normal(0.0, 2.0, d.shape))), "target": d.onehot(),
                    "partials": d.output((d.grid,)), "rows": d.rows, "cols": d.cols, **summed(d)},
         lambda ref, arg: {"count": ref.count_argmax_matches(arg.scores, arg.target)},
         total_of_partials("count"), ("finalize_sum",)),
    *[Case("nonfinite_partials",
           lambda d, count=count: {"x": nonfinite_input(d, count), "partials": d.output((d.grid,)), "n": d.n,
                                   **summed(d)},
           lambda ref, arg: {"count": ref.xp.sum(~ref.xp.isfinite(arg.x))},
           total_of_partials("count"), ("finalize_sum",), label=f"{count}-nonfinite")
      for count in (0, 3)],
    Case("penalty_partials",
         lambda d: {"w": d.normal(), "partials": d.output((2 * d.grid,)), "n": d.n, "l1": d.scalar(0.01),
                    "l2": d.scalar(0.02)},
         lambda ref, arg: {"penalty": ref.l1_l2_penalty(arg.w, 0.01, 0.02)}, penalty_finish, ("penalty_finalize",)),
    Case("column_sums",
         lambda d: {"x": d.normal(), "out": d.output((d.cols,)), "rows": d.rows, "cols": d.cols},
         lambda ref, arg: {"out": ref.sum_rows(arg.x)}, shapes=(SHAPE, TALL, (2, 70))),
]


def dropout_case(p: float, step: int) -> Case:
    key = dropout_key(11, 3, step)

    def want(ref, arg):
        y, mask = ref.dropout_forward(arg.x, p, key)
        return {"y": y, "mask": mask}

    return Case("dropout_fwd",
                lambda d: {"x": d.normal(), "y": d.output(), "mask": d.output(), "n": d.n, "key": np.uint32(key),
                           "threshold": np.uint32(dropout_threshold(p)), "scale": d.scalar(1.0 / (1.0 - p))},
                want, label=f"p{p}")


def l1_l2_gradient(ref, arg):
    grad = ref.copy(arg.grad)
    ref.l1_l2_penalty_grad(arg.w, grad, 0.01, 0.02)
    return {"grad": grad}


ELEMENTWISE_CASES = [
    Case("add_scaled",
         lambda d: {"x": d.normal(), "y": d.normal(), "out": d.output(), "n": d.n, "alpha": d.scalar(-0.3)},
         lambda ref, arg: {"out": ref.add_scaled(arg.x, arg.y, -0.3)}),
    Case("multiply",
         lambda d: {"a": d.normal(), "b": d.normal(), "out": d.output(), "n": d.n},
         lambda ref, arg: {"out": ref.dropout_backward(arg.a, arg.b)}),
    *[dropout_case(p, step) for p, step in ((0.3, 0), (0.5, 7), (0.9, 2))],
    Case("l1_l2_grad",
         lambda d: {"w": d.normal(), "grad": d.normal(), "n": d.n, "l1": d.scalar(0.01), "two_l2": d.scalar(2 * 0.02)},
         l1_l2_gradient),
    Case("take_rows",
         lambda d: {"x": d.normal(), "index": d.indices(d.rows, 50), "out": d.output((50, d.cols)), "out_rows": 50,
                    "cols": d.cols},
         lambda ref, arg: {"out": ref.take_rows(arg.x, arg.index)}),
]

BN_EPS, BN_MOMENTUM = 1e-5, 0.1


def normalized(d):
    """(xhat, inv_std) of a batch norm forward pass, as backward receives them."""
    x = d.rng.normal(1.5, 2.0, size=d.shape).astype(d.dtype)
    _, xhat, _, _, inv_std = d.reference.batchnorm_forward_train(x, d.rng.uniform(0.5, 1.5, d.cols).astype(d.dtype),
                                                                  np.zeros(d.cols, d.dtype), BN_EPS)
    return d.input(xhat), d.input(inv_std)


def running_stats(ref, arg):
    mean, var = ref.copy(arg.running_mean), ref.copy(arg.running_var)
    ref.update_running_stats(mean, var, arg.mean, arg.var, BN_MOMENTUM, arg.rows)
    return {"running_mean": mean, "running_var": var}


BATCHNORM_CASES = [
    Case("batchnorm_fwd_train",
         lambda d: {"x": d.normal(mean=1.5), "gamma": d.uniform(0.5, 1.5, (d.cols,)), "beta": d.normal((d.cols,)),
                    "y": d.output(), "xhat": d.output(), "mean": d.output((d.cols,)), "var": d.output((d.cols,)),
                    "inv_std": d.output((d.cols,)), "rows": d.rows, "cols": d.cols, "eps": d.scalar(BN_EPS)},
         lambda ref, arg: dict(zip(("y", "xhat", "mean", "var", "inv_std"),
                                   ref.batchnorm_forward_train(arg.x, arg.gamma, arg.beta, BN_EPS))),
         shapes=(SHAPE, TALL)),
    Case("batchnorm_bwd",
         lambda d: dict(zip(("xhat", "inv_std"), normalized(d)), dy=d.normal(), gamma=d.uniform(0.5, 1.5, (d.cols,)),
                        grad_x=d.output(), grad_gamma=d.output((d.cols,)), grad_beta=d.output((d.cols,)),
                        rows=d.rows, cols=d.cols),
         lambda ref, arg: dict(zip(("grad_x", "grad_gamma", "grad_beta"),
                                   ref.batchnorm_backward(arg.dy, arg.xhat, arg.gamma, arg.inv_std))),
         shapes=(SHAPE, TALL)),
    Case("batchnorm_fwd_eval",
         lambda d: {"x": d.normal(mean=1.5), "gamma": d.uniform(0.5, 1.5, (d.cols,)), "beta": d.normal((d.cols,)),
                    "running_mean": d.normal((d.cols,), 0.5), "running_var": d.uniform(0.5, 2.0, (d.cols,)),
                    "y": d.output(), "rows": d.rows, "cols": d.cols, "eps": d.scalar(BN_EPS)},
         lambda ref, arg: {"y": ref.batchnorm_forward_eval(arg.x, arg.gamma, arg.beta, arg.running_mean,
                                                           arg.running_var, BN_EPS)},
         shapes=(SHAPE, TALL)),
    Case("running_stats",
         lambda d: {"running_mean": d.normal((d.cols,), 0.5), "running_var": d.uniform(0.5, 2.0, (d.cols,)),
                    "mean": d.normal((d.cols,), 0.5), "var": d.uniform(0.5, 4.0, (d.cols,)), "cols": d.cols,
                    "momentum": d.scalar(BN_MOMENTUM), "keep": d.scalar(1.0 - BN_MOMENTUM),
                    "unbias": d.scalar(d.rows / (d.rows - 1)), "rows": d.rows},
         running_stats, shapes=(SHAPE, TALL)),
]

LN_EPS = 1e-5


def layernorm_inputs(d):
    """(xhat, inv_std) of a layer norm forward pass, as backward receives them."""
    x = d.rng.normal(1.5, 2.0, size=d.shape).astype(d.dtype)
    _, xhat, inv_std = d.reference.layernorm_forward(x, np.ones(d.cols, d.dtype), np.zeros(d.cols, d.dtype), LN_EPS)
    return d.input(xhat), d.input(inv_std)


LAYERNORM_CASES = [
    Case("layernorm_fwd",
         lambda d: {"x": d.normal(mean=1.5), "gamma": d.uniform(0.5, 1.5, (d.cols,)), "beta": d.normal((d.cols,)),
                    "y": d.output(), "xhat": d.output(), "inv_std": d.output((d.rows, 1)), "rows": d.rows,
                    "cols": d.cols, "eps": d.scalar(LN_EPS)},
         lambda ref, arg: dict(zip(("y", "xhat", "inv_std"), ref.layernorm_forward(arg.x, arg.gamma, arg.beta, LN_EPS))),
         shapes=(ROWS, WIDE)),
    Case("layernorm_bwd",
         lambda d: dict(zip(("xhat", "inv_std"), layernorm_inputs(d)), dy=d.normal(),
                        gamma=d.uniform(0.5, 1.5, (d.cols,)), grad_x=d.output(), rows=d.rows, cols=d.cols),
         lambda ref, arg: {"grad_x": ref.layernorm_backward(arg.dy, arg.xhat, arg.gamma, arg.inv_std)[0]},
         shapes=(ROWS, WIDE)),
    Case("layernorm_param_grads",
         lambda d: {"dy": d.normal(), "xhat": layernorm_inputs(d)[0], "grad_gamma": d.output((d.cols,)),
                    "grad_beta": d.output((d.cols,)), "rows": d.rows, "cols": d.cols},
         lambda ref, arg: dict(zip(("grad_gamma", "grad_beta"),
                                   ref.layernorm_backward(arg.dy, arg.xhat, np.ones(arg.dy.shape[1]),
                                                          np.ones((arg.dy.shape[0], 1)))[1:])),
         shapes=(SHAPE, TALL)),
]

# Image batches (n, c, h, w) with a kernel, strides and padding: a padded 3x3, a strided
# non-square kernel over a non-square image, a 1x1. Element counts below and above what the
# launches cover in one pass.
CONV_GEOMETRIES = {"3x3-pad": ((3, 2, 9, 7), (3, 3), (1, 1), (1, 1)), "5x2-strided": ((2, 3, 8, 11), (5, 2), (2, 3), (2, 0)),
                   "1x1": ((2, 5, 6, 7), (1, 1), (1, 1), (0, 0))}
# Pooling (no padding): the usual 2x2 leaving a border, overlapping windows, one window per plane.
POOL_GEOMETRIES = {"2x2": ((3, 2, 9, 7), (2, 2), (2, 2)), "3x2-overlapping": ((2, 3, 8, 11), (3, 2), (1, 2)),
                   "whole": ((1, 2, 5, 5), (5, 5), (5, 5))}


def _window_sizes(shape, kernel, stride, padding=(0, 0)) -> dict:
    """The geometry arguments every image kernel takes."""
    n, c, h, w = shape
    out_h, out_w = ((size + 2 * pad - k) // st + 1 for size, k, st, pad in zip((h, w), kernel, stride, padding))
    return {"n": n, "c": c, "h": h, "w": w, "kh": kernel[0], "kw": kernel[1], "sh": stride[0], "sw": stride[1],
            "out_h": out_h, "out_w": out_w}


def conv_cases(label: str) -> list[Case]:
    shape, kernel, stride, padding = CONV_GEOMETRIES[label]
    sizes = {**_window_sizes(shape, kernel, stride, padding), "ph": padding[0], "pw": padding[1]}
    cols_shape = (shape[0], shape[1] * kernel[0] * kernel[1], sizes["out_h"] * sizes["out_w"])
    planes = (shape[0], shape[1], shape[2] * shape[3])
    return [
        Case("im2col", lambda d: {"x": d.normal(shape), "cols": d.output(cols_shape), **sizes},
             lambda ref, arg: {"cols": ref.im2col(arg.x, kernel, stride, padding)}, label=label),
        Case("col2im", lambda d: {"cols": d.normal(cols_shape), "dx": d.output(shape), **sizes},
             lambda ref, arg: {"dx": ref.col2im(arg.cols, shape, kernel, stride, padding)}, label=label),
        Case("to_channels_first",
             lambda d: {"rows": d.normal((shape[0] * planes[2], shape[1])), "planes": d.output(shape),
                        "n": shape[0], "c": shape[1], "pixels": planes[2]},
             lambda ref, arg: {"planes": ref.to_channels_first(arg.rows, (shape[0], shape[2], shape[3]))},
             label=label),
        Case("to_channels_last",
             lambda d: {"planes": d.normal(shape), "rows": d.output((shape[0] * planes[2], shape[1])),
                        "n": shape[0], "c": shape[1], "pixels": planes[2]},
             lambda ref, arg: {"rows": ref.to_channels_last(arg.planes)}, label=label),
    ]


def pool_cases(label: str) -> list[Case]:
    shape, kernel, stride = POOL_GEOMETRIES[label]
    sizes = _window_sizes(shape, kernel, stride)
    out_shape = (shape[0], shape[1], sizes["out_h"], sizes["out_w"])

    def ties(d):
        """Values on a grid of halves: windows hold ties, which go to the first maximum."""
        return d.input(np.round(d.rng.normal(0.0, 2.0, size=shape) * 2.0) / 2.0)

    def chosen(d):
        x = np.round(d.rng.normal(0.0, 2.0, size=shape) * 2.0) / 2.0
        return d._guarded(d.reference.max_pool_forward(x.astype(d.dtype), kernel, stride)[1])

    def max_forward(ref, arg):
        y, index = ref.max_pool_forward(arg.x, kernel, stride)
        return {"y": y, "index": index}

    return [
        Case("max_pool_fwd",
             lambda d: {"x": ties(d), "y": d.output(out_shape), "index": d._guarded(np.full(out_shape, -7)), **sizes},
             max_forward, label=label),
        Case("max_pool_bwd",
             lambda d: {"dy": d.normal(out_shape), "index": chosen(d), "dx": d.output(shape), **sizes},
             lambda ref, arg: {"dx": ref.max_pool_backward(arg.dy, arg.index, shape, kernel, stride)}, label=label),
        Case("avg_pool_fwd", lambda d: {"x": d.normal(shape), "y": d.output(out_shape), **sizes},
             lambda ref, arg: {"y": ref.avg_pool_forward(arg.x, kernel, stride)}, label=label),
        Case("avg_pool_bwd", lambda d: {"dy": d.normal(out_shape), "dx": d.output(shape), **sizes},
             lambda ref, arg: {"dx": ref.avg_pool_backward(arg.dy, shape, kernel, stride)}, label=label),
    ]


IMAGE_CASES = [*[case for label in CONV_GEOMETRIES for case in conv_cases(label)],
               *[case for label in POOL_GEOMETRIES for case in pool_cases(label)]]

LR = 0.1


def sgd_case(label: str, momentum: float, dampening: float, nesterov: bool, weight_decay: float,
             first_step: bool) -> Case:
    def args(d):
        common = {"param": d.normal(scale=1.0), "grad": d.normal(scale=1.0), "n": d.n, "lr": d.scalar(LR),
                  "weight_decay": d.scalar(weight_decay)}
        if not momentum:
            return common
        buf = d.output() if first_step else d.normal(scale=1.0)  # the first step must not read it
        return {**common, "buf": buf, "momentum": d.scalar(momentum), "one_minus_dampening": d.scalar(1.0 - dampening),
                "nesterov": np.int32(nesterov), "first_step": np.int32(first_step)}

    def want(ref, arg):
        param = ref.copy(arg.param)
        buf = ref.copy(arg.buf) if momentum else None
        ref.sgd_step(param, arg.grad, buf, LR, momentum, dampening, nesterov, weight_decay, first_step)
        return {"param": param, **({"buf": buf} if momentum else {})}

    return Case("sgd_momentum" if momentum else "sgd", args, want, shapes=(FLAT,), label=label)


ADAM = {"lr": 1e-2, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.05}


def adam_case(decoupled: bool, step: int) -> Case:
    lr, beta1, beta2, eps, wd = ADAM.values()

    def args(d):
        fresh = step == 1
        s = d.scalar
        return {"param": d.normal(scale=1.0), "grad": d.normal(scale=1.0),
                "exp_avg": d.input(np.zeros(d.n)) if fresh else d.normal(scale=0.1),
                "exp_avg_sq": d.input(np.zeros(d.n)) if fresh else d.uniform(0.0, 0.02), "n": d.n,
                "decay": s(1.0 - lr * wd), "beta1": s(beta1), "one_minus_beta1": s(1.0 - beta1), "beta2": s(beta2),
                "one_minus_beta2": s(1.0 - beta2), "eps": s(eps), "weight_decay": s(wd),
                "step_size": s(lr / (1.0 - beta1**step)), "bias_correction2_sqrt": s(math.sqrt(1.0 - beta2**step))}

    def want(ref, arg):
        state = [ref.copy(a) for a in (arg.param, arg.exp_avg, arg.exp_avg_sq)]
        ref.adam_step(state[0], arg.grad, *state[1:], lr, beta1, beta2, eps, wd, step, decoupled)
        return dict(zip(("param", "exp_avg", "exp_avg_sq"), state))

    return Case("adamw" if decoupled else "adam", args, want, shapes=(FLAT,), label=f"step{step}")


OPTIMIZER_CASES = [
    sgd_case("plain", 0.0, 0.0, False, 0.0, True),
    sgd_case("decay", 0.0, 0.0, False, 0.01, True),
    sgd_case("first-step", 0.9, 0.1, False, 0.01, True),
    sgd_case("later-step", 0.9, 0.1, False, 0.01, False),
    sgd_case("nesterov", 0.9, 0.0, True, 0.0, False),
    adam_case(False, 1),
    adam_case(False, 3),
    adam_case(True, 3),
]

CASES = [
    *[case for activation in ACTIVATIONS for case in activation_cases(activation)],
    *SOFTMAX_CASES,
    *[loss_case(kernel, reduction) for kernel in LOSSES for reduction in ("mean", "sum")],
    *[huber_case(reduction) for reduction in ("mean", "sum")],
    *[labels_cross_entropy_case(reduction) for reduction in ("mean", "sum")],
    *REDUCTION_CASES,
    *ELEMENTWISE_CASES,
    *BATCHNORM_CASES,
    *LAYERNORM_CASES,
    *OPTIMIZER_CASES,
    *IMAGE_CASES,
]


# ---------------------------------------------------------------------------- running them

class LongDoubleReference(Backend):
    """The reference on NumPy in x87 extended precision (a 64-bit significand), for checking
    float64 kernels against values 11 bits more accurate than theirs."""

    def __init__(self):
        super().__init__(np, "float64")
        self.dtype = np.longdouble


def wide_reference(dtype) -> Backend:
    if dtype == np.float32:
        return Backend(np, "float64")
    if np.finfo(np.longdouble).nmant < 63:
        pytest.skip("this platform's long double is no wider than double")
    return LongDoubleReference()


def _as(value, dtype):
    """An argument as the reference (or a bound) sees it: float arrays and scalars in `dtype`."""
    if isinstance(value, np.ndarray) and value.dtype.kind == "f":
        return value.astype(dtype)
    if isinstance(value, (np.floating, float)):
        return dtype(value)
    if isinstance(value, np.ndarray):
        return value.copy()
    return int(value)


@pytest.fixture(scope="module")
def builds():
    """builds(emulation name)(.cu file) -> its HostModule, built when a test first needs it (all
    files at once, two at a time, but under ThreadSanitizer, which only some files need)."""
    sources = {name: kernel_source(name) for name in source_names()}
    built: dict = {}

    def get(name: str) -> Callable:
        emulation = EMULATIONS[name][0]
        reason = emulation.unavailable()
        if reason:
            pytest.skip(reason)
        if not emulation.thread_sanitizer and name not in built:
            build_all(sources.values(), emulation)
            built[name] = True

        def module(file: str) -> HostModule:
            if (name, file) not in built:
                built[name, file] = HostModule(sources[file], emulation)
            return built[name, file]

        return module

    return get


def _shape_id(shape) -> str:
    return "x".join(map(str, shape))


MATRIX = [
    pytest.param(name, case, shape, dtype, launch,
                 id=f"{name}-{case.id}-{_shape_id(shape)}-{dtype.__name__}-g{launch[0]}xb{launch[1]}")
    for name, (_, launches, dtypes) in EMULATIONS.items()
    for case in CASES for shape in case.shapes for dtype in dtypes for launch in launches
]


def assert_within(label: str, got, exact, bound, dtype) -> None:
    """|got - exact| <= bound (to first order: 1/64 more), plus float32's flush floor."""
    got = np.asarray(got).astype(exact.dtype)
    allowed = np.broadcast_to(np.asarray(bound, dtype=exact.dtype) * HIGHER_ORDER + FLUSH_FLOOR[dtype], exact.shape)
    assert np.isfinite(allowed).all(), f"{label}: the bound is not finite"
    error = np.abs(got - exact)
    worst = tuple(int(i) for i in np.unravel_index(np.argmax(error - allowed), exact.shape))
    assert (error <= allowed).all(), (
        f"{label}: |got - exact| = {float(error[worst]):.3g} at {worst} exceeds its bound "
        f"{float(allowed[worst]):.3g}: got {float(got[worst])!r}, exact {float(exact[worst])!r}")


@pytest.mark.parametrize("emulation, case, shape, dtype, launch", MATRIX)
def test_kernel_within_its_bound(builds, emulation, case, shape, dtype, launch):
    if EMULATIONS[emulation][0].thread_sanitizer:
        plain = Kernels(builds("host"), dtype)
        plain.launch(case.kernel, *launch, case.args(Draw(dtype, shape, launch)))
        if not plain.reaches_barrier(case.kernel):
            pytest.skip("no barrier: no two threads of this kernel run at once")
    draw = Draw(dtype, shape, launch)
    args = case.args(draw)
    before = {name: value.copy() if isinstance(value, np.ndarray) else value for name, value in args.items()}
    kernels = Kernels(builds(emulation), dtype)
    kernels.launch(case.kernel, *launch, args)
    got = dict(args)
    if case.finish:
        got.update(case.finish(kernels, draw, args))

    wide = WIDE_TYPE[dtype]
    wide_args = {name: _as(value, wide) for name, value in before.items()}
    exact = {name: np.asarray(value, dtype=wide)
             for name, value in case.want(wide_reference(dtype), types.SimpleNamespace(**wide_args)).items()}
    same_type = case.want(draw.reference, types.SimpleNamespace(**{k: _as(v, dtype) for k, v in before.items()}))
    bounds = bounds_of(case.kernel, wide_args, exact, UNIT_ROUNDOFF[dtype])
    assert set(bounds) == set(exact), f"{case.kernel}: bounds for {sorted(bounds)}, checks of {sorted(exact)}"
    for name, bound in bounds.items():
        label = f"{case.id} {name}"
        assert np.isfinite(got[name]).all(), f"{label}: unwritten (NaN-poisoned) or non-finite elements"
        if isinstance(bound, str):
            np.testing.assert_array_equal(got[name], np.asarray(same_type[name]), err_msg=label)
        else:
            assert_within(label, got[name], exact[name], bound, dtype)
    draw.check_guards()


def test_every_kernel_is_checked():
    """Each kernel of the package is the subject of a case or launched by one, and has bounds."""
    checked = {case.kernel for case in CASES} | {kernel for case in CASES for kernel in case.also}
    kernels = {re.sub(r"_f(32|64)$", "", name) for name in kernel_index()}
    assert kernels == checked, f"unchecked: {sorted(kernels - checked)}; unknown: {sorted(checked - kernels)}"
    unbounded = {case.kernel for case in CASES} - set(kernel_bounds())
    assert not unbounded, f"no bound[...] lines beside {sorted(unbounded)}"


def test_a_mistyped_scalar_is_refused():
    """A Python int where the kernel declares `int` would reach a GPU as long long; a double where
    it declares float, as double. Either is refused before the launch."""
    module = HostModule(kernel_source("elementwise.cu"))
    x, out = np.zeros(10, dtype=np.float32), np.zeros(10, dtype=np.float32)
    add_scaled = module.function("add_scaled_f32")
    with pytest.raises(TypeError, match="long long"):
        add_scaled(1, 32, (x, x, out, np.int32(10), np.float32(1.0)))
    with pytest.raises(TypeError, match="double"):
        add_scaled(1, 32, (x, x, out, 10, 1.0))
    with pytest.raises(TypeError, match="float64 would be read as float"):
        add_scaled(1, 32, (x, x, np.zeros(10), 10, np.float32(1.0)))


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=lambda d: d.__name__)
def test_edge_numerics_on_the_host_build(builds, dtype):
    """As the reference (tests/test_extreme.py): cross-entropy on logits spanning the float32
    range with the right class is a loss of 0 (the clamped x - max); GELU's backward at
    |x| >= 2e19 is 1 far right and 0 far left (tanh's argument at the clipped x)."""
    kernels = Kernels(builds("host"), dtype)
    big = float(np.finfo(np.float32).max) * 0.9
    logits = np.array([[big, -big, 0.0], [-big, big, -big]], dtype=dtype)
    grad, partials, out = np.full_like(logits, np.nan), np.full(2, np.nan, dtype), np.full(1, np.nan, dtype)
    with np.errstate(over="ignore"):
        kernels.launch("cross_entropy_labels_loss", 2, 32, {"logits": logits, "labels": np.array([0, 1]), "grad": grad,
                                                             "partials": partials, "rows": 2, "cols": 3,
                                                             "grad_scale": dtype(0.5)})
    kernels.launch("finalize_sum", 1, 32, {"partials": partials, "out": out, "count": 2, "sign": dtype(-1.0),
                                          "divisor": dtype(2.0)})
    assert out[0] == 0.0 and np.all(grad == 0.0)
    x = np.array([2e19, -2e19, 3e38, -3e38], dtype=dtype)
    dz = np.full_like(x, np.nan)
    kernels.launch("gelu_bwd", 1, 32, {"dy": np.ones_like(x), "pre": x, "dz": dz, "n": 4, "slope": dtype(0.0)})
    assert dz.tolist() == [1.0, 0.0, 1.0, 0.0]
