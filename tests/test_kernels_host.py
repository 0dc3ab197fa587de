"""Proof 2: the unchanged .cu files, compiled for the host by g++ with kernels/host_shim.h, compute
what the reference backend computes, over launch shapes a GPU would see.

Every kernel runs over several (grid, block) shapes: grid x block smaller than n (the grid-stride
loop must come round), n never a multiple of the block, blocks of odd widths and the largest.
Outputs start as NaN and carry guard cells past their end: an element never written stays NaN and
fails the comparison; an element written past the end changes a guard, whose NaN payload is
unique to its buffer. Inputs carry such NaN guard cells too, so reading past the end poisons a
result.

Bounds, per kernel, against `Backend` (the reference) on NumPy: |got - want| <= ulps * ulp(want)
+ floor, with floor = k * eps * max|want| (sums in another order, cancellation) plus, in float32,
2^-126 (the GPU flushes subnormals to zero). The host build has no fused multiply-add and uses
glibc's libm; the bounds also cover CUDA's (expf, logf, tanhf within 2 ulp; FMA).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from backprop.backends.base import Backend, dropout_key, dropout_threshold
from backprop.kernels.loader import kernel_index, kernel_source, source_names
from host_kernels import HostModule, build_all

# (grid, block): the first four have grid x block < n for SHAPE; the last covers it.
LAUNCHES = [(1, 32), (3, 64), (2, 96), (4, 128), (5, 256)]
SHAPE = (37, 29)          # n = 1073: no block divides it
# Block-per-row kernels run one host thread per CUDA thread, whose barriers cost far more than
# the arithmetic, so they get fewer rows (still more rows than blocks: the row loop comes round).
ROWS = (11, 29)
WIDE = (3, 300)           # rows wider than every block: threads stride along a row
GUARD = 5
POISON = {np.float32: np.uint32(0x7FC0DEAD).view(np.float32),
          np.float64: np.uint64(0x7FF8DEADBEEF0000).view(np.float64)}
SUFFIX = {np.float32: "_f32", np.float64: "_f64"}
DTYPES = [np.float32, np.float64]
FTZ_FLOOR = {np.float32: 2.0**-126, np.float64: 0.0}

# kernel family -> (ulps, k): see the module docstring. (0, 0) means bit for bit.
BOUNDS = {
    "exact": (0, 0),            # relu, leaky_relu, linear, dropout, take_rows, products, counts
    "rounded": (1, 0),          # one rounding away from the reference (FMA contraction)
    "sigmoid": (4, 1),          # exp, a division, a select
    "tanh": (4, 1),
    "gelu": (8, 4),             # tanh of a cubic; the backward has five terms
    "softmax": (8, 4),          # exp, a row sum in another order, a division
    "loss_grad": (8, 4),
    "sum": (4, 64),             # sums in another order: error grows with log n
    "batchnorm": (16, 64),      # two-pass statistics, then a normalisation
    "optimizer": (4, 4),        # sqrt and a division (Adam), a few FMAs
}


@pytest.fixture(scope="module")
def modules():
    """{.cu file: HostModule}, built two at a time."""
    sources = {name: kernel_source(name) for name in source_names()}
    build_all(sources.values())
    return {name: HostModule(code) for name, code in sources.items()}


class Runner:
    """Launches kernels of one dtype with guarded, poisoned buffers and checks the guards."""

    def __init__(self, modules, dtype):
        self.modules, self.dtype, self.buffers = modules, dtype, []
        self.rng = np.random.default_rng(1234)

    def launch(self, kernel, grid, block, *args):
        name = kernel + SUFFIX[self.dtype]
        self.modules[kernel_index()[name][0]].function(name)(grid, block, args)

    def scalar(self, value):
        return self.dtype(value)

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

    def input_int(self, values):
        return self._guarded(np.asarray(values, dtype=np.int64))

    def output(self, shape):
        """A guarded array of `shape`, every element poisoned."""
        return self._guarded(np.full(shape, POISON[self.dtype], dtype=self.dtype))

    def normal(self, shape, scale=2.0):
        return self.input(self.rng.normal(0.0, scale, size=shape))

    def check_guards(self):
        for buffer, size, guard in self.buffers:
            assert buffer[size:].tobytes() == guard.tobytes(), "a kernel wrote past the end of an array"


def assert_close(got, want, dtype, family, label=""):
    ulps, k = BOUNDS[family]
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    assert got.shape == want.shape, label
    assert np.isfinite(got).all(), f"{label}: unwritten (NaN-poisoned) or non-finite elements"
    if ulps == 0 and k == 0:
        np.testing.assert_array_equal(got, want, err_msg=label)
        return
    spacing = np.spacing(np.abs(want).astype(dtype)).astype(np.float64)
    scale = float(np.abs(want).max()) if want.size else 0.0
    bound = ulps * spacing + k * np.finfo(dtype).eps * scale + FTZ_FLOOR[dtype]
    excess = np.abs(got - want) - bound
    worst = np.unravel_index(np.argmax(excess), excess.shape) if excess.ndim else ()
    assert (excess <= 0).all(), (
        f"{label}: |got - want| = {abs(got - want)[worst]:.3g} at {worst} exceeds {family}'s bound "
        f"({ulps} ulp + {k} eps max|want|): got {got[worst]!r}, want {want[worst]!r}")


def launch_ids(launch):
    return f"g{launch[0]}xb{launch[1]}"


ELEMENTWISE = {"sigmoid": "sigmoid", "tanh": "tanh", "relu": "exact", "leaky_relu": "rounded", "gelu": "gelu"}
BACKWARD_FAMILY = {"sigmoid": "rounded", "tanh": "rounded", "relu": "exact", "leaky_relu": "rounded", "gelu": "gelu"}


@pytest.mark.parametrize("launch", LAUNCHES, ids=launch_ids)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("activation", [*ELEMENTWISE, "linear"])
def test_activation_forward_and_backward(modules, activation, dtype, launch):
    run, ref = Runner(modules, dtype), Backend(np, dtype.__name__)
    rows, cols = SHAPE
    z, bias, dy = run.normal(SHAPE), run.normal((cols,)), run.normal(SHAPE, 1.0)
    slope = run.scalar(0.02)
    y, pre = run.output(SHAPE), run.output(SHAPE)
    if activation == "gelu":
        run.launch("bias_gelu_fwd", *launch, z, bias, y, pre, rows, cols, slope)
    else:
        run.launch(f"bias_{activation}_fwd", *launch, z, bias, y, rows, cols, slope)
    want_y, want_pre = ref.bias_activation_forward(z, bias, activation, 0.02)
    family = ELEMENTWISE.get(activation, "rounded")
    assert_close(y, want_y, dtype, family, "bias + activation")
    if activation == "gelu":
        assert_close(pre, want_pre, dtype, "rounded", "z + b")
    if activation != "linear":
        plain = run.output(SHAPE)
        run.launch(f"{activation}_fwd", *launch, z, plain, rows * cols, slope)
        assert_close(plain, ref.activation_forward(z, activation, 0.02), dtype, family, "activation")
        saved = z if activation == "gelu" else run.input(want_y)
        dz = run.output(SHAPE)
        run.launch(f"{activation}_bwd", *launch, dy, saved, dz, rows * cols, slope)
        want_dz = ref.activation_backward(dy, want_y, z, activation, 0.02)
        assert_close(dz, want_dz, dtype, BACKWARD_FAMILY[activation], "backward")
    run.check_guards()


@pytest.mark.parametrize("shape", [ROWS, WIDE], ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("launch", LAUNCHES, ids=launch_ids)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
def test_softmax_rows(modules, dtype, launch, shape):
    run, ref = Runner(modules, dtype), Backend(np, dtype.__name__)
    rows, cols = shape
    z, bias, dy = run.normal(shape, 3.0), run.normal((cols,)), run.normal(shape, 1.0)
    y_bias, y, dz = run.output(shape), run.output(shape), run.output(shape)
    run.launch("bias_softmax_fwd", *launch, z, bias, y_bias, rows, cols)
    run.launch("softmax_fwd", *launch, z, y, rows, cols)
    want_y = ref.activation_forward(z, "softmax")
    assert_close(y_bias, ref.bias_activation_forward(z, bias, "softmax")[0], dtype, "softmax", "bias + softmax")
    assert_close(y, want_y, dtype, "softmax", "softmax")
    y_in = run.input(want_y)
    run.launch("softmax_bwd", *launch, dy, y_in, dz, rows, cols)
    assert_close(dz, ref.activation_backward(dy, y_in, None, "softmax"), dtype, "softmax", "softmax backward")
    run.check_guards()


def _finalize(run, partials, count, block, sign, divisor):
    out = run.output((1,))
    run.launch("finalize_sum", 1, block, partials, out, count, run.scalar(sign), run.scalar(divisor))
    return out[0]


LOSSES = {  # kernel: (reference op, prediction draw, target draw, grad_scale factor, sign)
    "mse_loss": ("mse_loss", "normal", "normal", 2.0, 1.0),
    "mae_loss": ("mae_loss", "normal", "normal", 1.0, 1.0),
    "bce_loss": ("bce_loss", "prob", "binary", 1.0, -1.0),
    "bce_logits_loss": ("bce_with_logits_loss", "normal", "binary", 1.0, 1.0),
    "hinge_loss": ("hinge_loss", "normal", "sign", 1.0, 1.0),
    "cross_entropy_loss": ("cross_entropy_loss", "normal", "onehot", 1.0, -1.0),
}


def _draw(run, kind, shape):
    rng = run.rng
    if kind == "normal":
        return run.normal(shape)
    if kind == "prob":
        return run.input(rng.uniform(0.001, 0.999, size=shape))
    if kind == "binary":
        return run.input(rng.integers(0, 2, size=shape))
    if kind == "sign":
        return run.input(rng.choice([-1.0, 1.0], size=shape))
    return run.input(np.eye(shape[1])[rng.integers(0, shape[1], size=shape[0])])


@pytest.mark.parametrize("launch", LAUNCHES, ids=launch_ids)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("loss", LOSSES)
def test_loss_with_gradient(modules, loss, reduction, dtype, launch):
    run, ref = Runner(modules, dtype), Backend(np, dtype.__name__)
    op, pred_kind, target_kind, factor, sign = LOSSES[loss]
    if loss == "cross_entropy_loss":
        shape = WIDE if launch[1] == 32 else ROWS
    else:
        shape = SHAPE
    pred, target = _draw(run, pred_kind, shape), _draw(run, target_kind, shape)
    rows, cols = shape
    count = rows if loss == "cross_entropy_loss" else rows * cols
    grid, block = launch
    grad, partials = run.output(shape), run.output((grid,))
    scale = run.scalar(factor * (1.0 / count if reduction == "mean" else 1.0))
    if loss == "cross_entropy_loss":
        run.launch(loss, grid, block, pred, target, grad, partials, rows, cols, scale)
    else:
        run.launch(loss, grid, block, pred, target, grad, partials, rows * cols, scale)
    value = _finalize(run, partials, grid, block, sign, count if reduction == "mean" else 1)
    want_loss, want_grad = getattr(ref, op)(pred, target, reduction)
    assert_close(value, want_loss, dtype, "sum", "loss")
    assert_close(grad, want_grad, dtype, "exact" if loss in ("mae_loss", "hinge_loss") else "loss_grad", "gradient")
    run.check_guards()


@pytest.mark.parametrize("launch", LAUNCHES, ids=launch_ids)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
def test_reductions(modules, dtype, launch):
    run, ref = Runner(modules, dtype), Backend(np, dtype.__name__)
    rows, cols = SHAPE
    n = rows * cols
    grid, block = launch
    x, t = run.normal(SHAPE), _draw(run, "onehot", SHAPE)

    def total(kernel, *inputs, count=n, extra=()):
        partials = run.output((grid,))
        run.launch(kernel, grid, block, *inputs, partials, count, *extra)
        return _finalize(run, partials, grid, block, 1.0, 1.0)

    assert_close(total("sum_partials", x), ref.sum_all(x), dtype, "sum", "sum_all")
    probs = _draw(run, "prob", SHAPE)
    matches = total("threshold_match_partials", x, probs, extra=(run.scalar(0.0), run.scalar(0.5)))
    assert_close(matches, ref.count_threshold_matches(x, probs, 0.0, 0.5), dtype, "exact", "threshold matches")
    tied = run.input(np.round(np.asarray(x)))  # ties: argmax must pick the first maximum
    hits = total("argmax_match_partials", tied, t, count=rows, extra=(cols,))
    assert_close(hits, ref.count_argmax_matches(tied, t), dtype, "exact", "argmax matches")
    bad = np.asarray(x).copy()
    bad[3, 4], bad[-1, -1], bad[20, 0] = np.nan, np.inf, -np.inf
    assert total("nonfinite_partials", run.input(bad)) == 3
    assert total("nonfinite_partials", x) == 0

    partials, penalty = run.output((2 * grid,)), run.output((1,))
    run.launch("penalty_partials", grid, block, x, partials, n)
    run.launch("penalty_finalize", 1, block, partials, penalty, grid, run.scalar(0.01), run.scalar(0.02))
    assert_close(penalty[0], ref.l1_l2_penalty(x, 0.01, 0.02), dtype, "sum", "l1/l2 penalty")

    for shape in (SHAPE, (300, 3), (2, 70)):
        m = run.normal(shape)
        sums = run.output((shape[1],))
        run.launch("column_sums", grid, block, m, sums, *shape)
        assert_close(sums, ref.sum_rows(m), dtype, "sum", f"column sums {shape}")
    run.check_guards()


@pytest.mark.parametrize("launch", LAUNCHES, ids=launch_ids)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
def test_elementwise_ops(modules, dtype, launch):
    run, ref = Runner(modules, dtype), Backend(np, dtype.__name__)
    rows, cols = SHAPE
    n = rows * cols
    x, y = run.normal(SHAPE), run.normal(SHAPE)
    out = run.output(SHAPE)
    run.launch("add_scaled", *launch, x, y, out, n, run.scalar(-0.3))
    assert_close(out, ref.add_scaled(x, y, -0.3), dtype, "rounded", "add_scaled")
    product = run.output(SHAPE)
    run.launch("multiply", *launch, x, y, product, n)
    assert_close(product, ref.dropout_backward(x, y), dtype, "exact", "multiply")

    for p, step in ((0.3, 0), (0.5, 7), (0.9, 2)):
        key = dropout_key(11, 3, step)
        kept, mask = run.output(SHAPE), run.output(SHAPE)
        run.launch("dropout_fwd", *launch, x, kept, mask, n, np.uint32(key), np.uint32(dropout_threshold(p)),
                   run.scalar(1.0 / (1.0 - p)))
        want_y, want_mask = ref.dropout_forward(x, p, key)
        assert_close(mask, want_mask, dtype, "exact", f"dropout mask p={p}")
        assert_close(kept, want_y, dtype, "exact", f"dropout output p={p}")

    grad = run.input(np.asarray(y))
    want = np.asarray(y).copy()
    ref.l1_l2_penalty_grad(x, want, 0.01, 0.02)
    run.launch("l1_l2_grad", *launch, x, grad, n, run.scalar(0.01), run.scalar(2.0 * 0.02))
    assert_close(grad, want, dtype, "rounded", "l1/l2 gradient")

    index = run.input_int(np.random.default_rng(5).integers(0, rows, size=50))
    gathered = run.output((50, cols))
    run.launch("take_rows", *launch, x, index, gathered, 50, cols)
    assert_close(gathered, ref.take_rows(x, index), dtype, "exact", "take_rows")
    run.check_guards()


@pytest.mark.parametrize("launch", LAUNCHES, ids=launch_ids)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
def test_batchnorm(modules, dtype, launch):
    run, ref = Runner(modules, dtype), Backend(np, dtype.__name__)
    for shape in (SHAPE, (300, 3)):
        rows, cols = shape
        x = run.input(run.rng.normal(1.5, 2.0, size=shape))
        gamma, beta, dy = run.input(run.rng.uniform(0.5, 1.5, cols)), run.normal((cols,)), run.normal(shape)
        y, xhat = run.output(shape), run.output(shape)
        mean, var, inv_std = run.output((cols,)), run.output((cols,)), run.output((cols,))
        eps = run.scalar(1e-5)
        run.launch("batchnorm_fwd_train", *launch, x, gamma, beta, y, xhat, mean, var, inv_std, rows, cols, eps)
        want = ref.batchnorm_forward_train(x, gamma, beta, 1e-5)
        for label, got, w in zip(("y", "xhat", "mean", "var", "inv_std"), (y, xhat, mean, var, inv_std), want):
            assert_close(got, w, dtype, "batchnorm", f"batchnorm {label} {shape}")
        xhat_in, inv_in = run.input(want[1]), run.input(want[4])
        dx, dgamma, dbeta = run.output(shape), run.output((cols,)), run.output((cols,))
        run.launch("batchnorm_bwd", *launch, dy, xhat_in, gamma, inv_in, dx, dgamma, dbeta, rows, cols)
        for label, got, w in zip(("dx", "dgamma", "dbeta"), (dx, dgamma, dbeta),
                                 ref.batchnorm_backward(dy, xhat_in, gamma, inv_in)):
            assert_close(got, w, dtype, "batchnorm", f"batchnorm backward {label} {shape}")

        running_mean, running_var = run.normal((cols,), 0.5), run.input(run.rng.uniform(0.5, 2.0, cols))
        want_mean, want_var = np.asarray(running_mean).copy(), np.asarray(running_var).copy()
        ref.update_running_stats(want_mean, want_var, want[2], want[3], 0.1, rows)
        mean_in, var_in = run.input(want[2]), run.input(want[3])
        run.launch("running_stats", *launch, running_mean, running_var, mean_in, var_in, cols,
                   run.scalar(0.1), run.scalar(1.0 - 0.1), run.scalar(rows / (rows - 1)))
        assert_close(running_mean, want_mean, dtype, "rounded", "running mean")
        assert_close(running_var, want_var, dtype, "rounded", "running var")
        y_eval = run.output(shape)
        run.launch("batchnorm_fwd_eval", *launch, x, gamma, beta, running_mean, running_var, y_eval, rows, cols, eps)
        want_eval = ref.batchnorm_forward_eval(x, gamma, beta, running_mean, running_var, 1e-5)
        assert_close(y_eval, want_eval, dtype, "optimizer", "batchnorm eval")
    run.check_guards()


SGD_SETTINGS = {  # name: (momentum, dampening, nesterov, weight_decay)
    "plain": (0.0, 0.0, False, 0.0), "decay": (0.0, 0.0, False, 0.01), "momentum": (0.9, 0.1, False, 0.01),
    "nesterov": (0.9, 0.0, True, 0.0),
}


@pytest.mark.parametrize("launch", LAUNCHES, ids=launch_ids)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("setting", SGD_SETTINGS)
def test_sgd_steps(modules, setting, dtype, launch):
    run, ref = Runner(modules, dtype), Backend(np, dtype.__name__)
    momentum, dampening, nesterov, wd = SGD_SETTINGS[setting]
    n = 1000 + 37
    param, buf = run.normal((n,), 1.0), run.output((n,)) if momentum else None
    want_param, want_buf = np.asarray(param).copy(), np.zeros(n, dtype=dtype)
    for step in (1, 2, 3):
        grad = run.normal((n,), 1.0)
        ref.sgd_step(want_param, grad, want_buf if momentum else None, 0.1, momentum, dampening, nesterov,
                     wd, step == 1)
        s = run.scalar
        if momentum:
            run.launch("sgd_momentum", *launch, param, grad, buf, n, s(0.1), s(momentum), s(1.0 - dampening),
                       s(wd), np.int32(nesterov), np.int32(step == 1))
        else:
            run.launch("sgd", *launch, param, grad, n, s(0.1), s(wd))
        assert_close(param, want_param, dtype, "rounded" if step == 1 else "optimizer", f"param, step {step}")
        if momentum:
            assert_close(buf, want_buf, dtype, "optimizer", f"momentum buffer, step {step}")
    run.check_guards()


@pytest.mark.parametrize("launch", LAUNCHES, ids=launch_ids)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("decoupled", [False, True], ids=["adam", "adamw"])
def test_adam_steps(modules, decoupled, dtype, launch):
    run, ref = Runner(modules, dtype), Backend(np, dtype.__name__)
    n = 1000 + 37
    lr, beta1, beta2, eps, wd = 1e-2, 0.9, 0.999, 1e-8, 0.05
    param, m, v = run.normal((n,), 1.0), run.input(np.zeros(n)), run.input(np.zeros(n))
    want = [np.asarray(a).copy() for a in (param, m, v)]
    s = run.scalar
    for step in (1, 2, 3):
        grad = run.normal((n,), 1.0)
        ref.adam_step(*want[:1], grad, *want[1:], lr, beta1, beta2, eps, wd, step, decoupled)
        corrections = (s(lr / (1.0 - beta1**step)), s(math.sqrt(1.0 - beta2**step)))
        moments = (s(beta1), s(1.0 - beta1), s(beta2), s(1.0 - beta2), s(eps))
        if decoupled:
            run.launch("adamw", *launch, param, grad, m, v, n, s(1.0 - lr * wd), *moments, *corrections)
        else:
            run.launch("adam", *launch, param, grad, m, v, n, *moments, s(wd), *corrections)
        for label, got, w in zip(("param", "exp_avg", "exp_avg_sq"), (param, m, v), want):
            assert_close(got, w, dtype, "optimizer", f"{label}, step {step}")
    run.check_guards()


def test_a_mistyped_scalar_is_refused(modules):
    """A Python int where the kernel declares `int` would reach a GPU as long long; a double where
    it declares float, as double. Either is refused before the launch."""
    run = Runner(modules, np.float32)
    x, out = run.normal((10,)), run.output((10,))
    with pytest.raises(TypeError, match="long long"):
        run.launch("add_scaled", 1, 32, x, x, out, np.int32(10), np.float32(1.0))
    with pytest.raises(TypeError, match="double"):
        run.launch("add_scaled", 1, 32, x, x, out, 10, 1.0)
    with pytest.raises(TypeError, match="float64 would be read as float"):
        run.launch("add_scaled", 1, 32, x, x, np.zeros(10), 10, np.float32(1.0))
