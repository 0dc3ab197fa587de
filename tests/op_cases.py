"""Every backend op as a named case: inputs drawn from a seed, the op applied, results as NumPy.

One table, used to compare any backend with the reference (`Backend` on NumPy) and to run the
reference on array-api-strict. A case returns a tuple of arrays (or Python scalars). The array
primitives' cases are written here; each fused op's come from its module in backends/ops/
(`@op.case()`), run on the same inputs.
"""

from __future__ import annotations

import numpy as np

from backprop.backends import ops
from backprop.backends.activations import ACTIVATIONS

# Shapes (rows, columns) every case runs on: a single element, odd sizes, a typical batch.
SHAPES = [(1, 1), (3, 4), (17, 33), (64, 10)]

# Primitives whose results must match the reference bit for bit (no rounding involved); a fused
# op's case says so itself (`exact=True`), added below.
EXACT = {"activation_relu", "activation_leaky_relu", "activation_linear", "activation_backward_relu",
         "activation_backward_leaky_relu", "activation_backward_linear", "copy", "take_rows", "reshape"}


def _inputs(seed: int, shape):
    rng = np.random.default_rng(seed)
    rows, cols = shape
    return {
        "x": rng.normal(0.0, 2.0, size=shape),
        "dy": rng.normal(size=shape),
        "b": rng.normal(size=(cols,)),
        "w": rng.normal(size=(cols, cols + 2)),
        "t01": rng.integers(0, 2, size=shape).astype(np.float64),
        "tpm": rng.choice([-1.0, 1.0], size=shape),
        "prob": rng.uniform(0.01, 0.99, size=shape),
        "onehot": np.eye(cols)[rng.integers(0, cols, size=rows)],
        "pos": rng.uniform(0.1, 2.0, size=shape),
        "gamma": rng.uniform(0.5, 1.5, size=(cols,)),
        "beta": rng.normal(size=(cols,)),
        "flat": rng.normal(size=(rows * cols + 5,)),
        "flat_grad": rng.normal(size=(rows * cols + 5,)),
        "flat_state": rng.uniform(0.0, 1.0, size=(rows * cols + 5,)),
        "index": rng.integers(0, rows, size=rows + 3),
        "labels": rng.integers(0, cols, size=rows),
    }


def _host(backend, values):
    out = []
    for v in values:
        if v is None:
            out.append(None)
        elif isinstance(v, (int, float)):
            out.append(np.asarray(v))
        else:
            out.append(np.asarray(backend.to_host(v)))  # the backend's own way home (a device array's too)
    return tuple(out)


def run_case(backend, name: str, seed: int, shape):
    """Run case `name` on `backend`; returns a tuple of NumPy arrays (None kept as None)."""
    d = _inputs(seed, shape)
    a = {k: (backend.asarray_int(v) if k in ("index", "labels") else backend.asarray(v)) for k, v in d.items()}
    be = backend
    case = ops.CASES.get(name)
    if case is not None:  # a fused op's own case, from its module
        a["seed"] = seed  # a plain int: what a case draws from besides the arrays (dropout's key)
        return () if shape[0] < case.min_rows else _host(be, case.run(be, a))
    kind = name
    if kind.startswith("bias_activation_"):
        act = kind[len("bias_activation_"):]
        y, pre = be.bias_activation_forward(a["x"], a["b"], act, 0.02)
        y2, _ = be.bias_activation_forward(a["x"], a["b"], act, 0.02, out=be.empty(shape))
        return _host(be, (y, pre, y2))
    if kind.startswith("activation_backward_"):
        act = kind[len("activation_backward_"):]
        pre = a["x"]
        y = be.activation_forward(pre, act, 0.02)
        g = be.activation_backward(a["dy"], y, pre, act, 0.02)
        g2 = be.activation_backward(a["dy"], y, pre, act, 0.02, out=be.empty(shape))
        return _host(be, (g, g2))
    if kind.startswith("activation_"):
        act = kind[len("activation_"):]
        return _host(be, (be.activation_forward(a["x"], act, 0.02),
                          be.activation_forward(a["x"], act, 0.02, out=be.empty(shape))))
    if kind == "matmul":
        rows, cols = shape
        x, w, dy = a["x"], a["w"], a["dy"]
        z = be.matmul(x, w)
        dz = be.asarray(np.ones((rows, cols + 2)) * 0.5)
        dw = be.matmul(x, dz, transpose_a=True)
        dx = be.matmul(dz, w, transpose_b=True, out=be.empty(shape))
        both = be.matmul(w, dy, transpose_a=True, transpose_b=True)
        # stacks: a matrix against a stack (w^T x[n], a convolution's product per image, into
        # `out`), and a stack against a stack (x[n] . dy[n] as 1x1 products)
        per_row = be.matmul(w, be.reshape(x, (rows, cols, 1)), transpose_a=True, out=be.empty((rows, cols + 2, 1)))
        dots = be.matmul(be.reshape(x, (rows, 1, cols)), be.reshape(dy, (rows, 1, cols)), transpose_b=True)
        return _host(be, (z, dw, dx, both, per_row, dots))
    if kind == "sum_rows":
        return _host(be, (be.sum_rows(a["x"]), be.sum_rows(a["dy"], out=be.empty((shape[1],)))))
    if kind == "add_scaled":
        return _host(be, (be.add_scaled(a["x"], a["dy"], -0.3),))
    if kind == "copy":
        return _host(be, (be.copy(a["x"]), be.copy(a["x"], out=be.empty(shape))))
    if kind == "take_rows":
        idx = a["index"]
        return _host(be, (be.take_rows(a["x"], idx), be.take_rows(a["x"], idx, out=be.empty((idx.shape[0], shape[1]))),
                          be.take_rows(a["labels"], idx)))
    if kind == "reshape":
        rows, cols = shape
        flat = be.reshape(a["x"], (rows * cols,))
        return _host(be, (flat, be.reshape(flat, (cols, rows)), be.reshape(a["x"], (rows, 1, cols))))
    if kind == "all_finite":
        bad = d["x"].copy()
        bad.flat[-1] = np.nan
        return (np.asarray(be.all_finite(a["x"])), np.asarray(be.all_finite(be.asarray(bad))))
    if kind == "step_finite":
        zero, grad = be.asarray(np.asarray(0.5)), a["flat_grad"]
        bad = d["flat_grad"].copy()
        bad[-1] = np.inf
        huge = be.asarray(np.full(8, np.finfo(be.dtype_name).max / 2))  # finite, but its sum overflows
        with np.errstate(over="ignore"):  # that overflow is the point, and fit runs under this errstate
            results = (be.step_finite(zero, grad), be.step_finite(zero, be.asarray(bad)),
                       be.step_finite(be.asarray(np.asarray(np.nan)), grad), be.step_finite(zero, huge))
        assert results == (True, False, False, True), results
        return tuple(np.asarray(v) for v in results)
    raise KeyError(name)


ops.load_all()
OP_CASES = sorted(ops.CASES)  # every fused op's cases, from its module in backends/ops/
EXACT |= {name for name in OP_CASES if ops.CASES[name].exact}

BUILTIN_ACTIVATIONS = sorted(name for name, act in ACTIVATIONS.items() if act.builtin)
CASES = (
    [f"bias_activation_{a}" for a in BUILTIN_ACTIVATIONS]
    + [f"activation_{a}" for a in BUILTIN_ACTIVATIONS]
    + [f"activation_backward_{a}" for a in BUILTIN_ACTIVATIONS]
    + ["matmul", "sum_rows", "add_scaled", "copy", "take_rows", "all_finite", "step_finite", "reshape"]
    + OP_CASES
)
# Primitives every case uses to move data, so no case of their own: the transfers, and the
# device switch.
TRANSFER_HELPERS = {"asarray", "asarray_int", "to_host", "owns", "zeros", "empty", "view", "to_scalar", "sum_all",
                    "on_device"}
