"""Every backend op as a named case: inputs drawn from a seed, the op applied, results as NumPy.

One table, used to compare any backend with the reference (`Backend` on NumPy) and to run the
reference on array-api-strict. A case returns a tuple of arrays (or Python scalars).
"""

from __future__ import annotations

import numpy as np

from backprop.backends import ops
from backprop.backends.base import ACTIVATIONS, dropout_key

# Shapes (rows, columns) every case runs on: a single element, odd sizes, a typical batch.
SHAPES = [(1, 1), (3, 4), (17, 33), (64, 10)]

# Ops whose results must match the reference bit for bit (no rounding involved).
EXACT = {"activation_relu", "activation_leaky_relu", "activation_linear", "activation_backward_relu",
         "activation_backward_leaky_relu", "activation_backward_linear", "dropout_forward",
         "dropout_backward", "copy", "take_rows", "count_argmax_matches", "count_threshold_matches",
         "count_label_matches", "reshape"}


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
        return () if shape[0] < case.min_rows else _host(be, case.run(be, a))
    kind, _, detail = name.partition(":")
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
        return _host(be, (z, dw, dx, both))
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
    if kind == "loss":
        op, target = detail.split("/")
        pred = {"bce_loss": a["prob"]}.get(op, a["x"])
        results = []
        for reduction in ("mean", "sum"):
            loss, grad = getattr(be, op)(pred, a[target], reduction)
            results += [loss, grad]
        return _host(be, results)
    if kind == "count_argmax_matches":
        return _host(be, (be.count_argmax_matches(a["x"], a["onehot"]),))
    if kind == "count_label_matches":
        return _host(be, (be.count_label_matches(a["x"], a["labels"]),))
    if kind == "count_threshold_matches":
        return _host(be, (be.count_threshold_matches(a["x"], a["prob"], 0.0, 0.5),))
    if kind == "dropout_forward":
        key = dropout_key(7, 2, seed)
        y, mask = be.dropout_forward(a["x"], 0.3, key)
        return _host(be, (y, mask, be.dropout_backward(a["dy"], mask)))
    if kind == "dropout_backward":
        key = dropout_key(1, 0, seed)
        _, mask = be.dropout_forward(a["x"], 0.5, key)
        return _host(be, (be.dropout_backward(a["dy"], mask, out=be.empty(shape)),))
    if kind == "batchnorm":
        if shape[0] < 2:
            return ()
        y, xhat, mean, var, inv_std = be.batchnorm_forward_train(a["x"], a["gamma"], a["beta"], 1e-5)
        dx, dgamma, dbeta = be.batchnorm_backward(a["dy"], xhat, a["gamma"], inv_std)
        rm, rv = be.copy(a["beta"]), be.copy(a["gamma"])
        be.update_running_stats(rm, rv, mean, var, 0.1, shape[0])
        ye = be.batchnorm_forward_eval(a["x"], a["gamma"], a["beta"], rm, rv, 1e-5)
        dxe, dge, dbe = be.batchnorm_backward_eval(a["dy"], a["x"], a["gamma"], rm, rv, 1e-5)
        return _host(be, (y, xhat, mean, var, inv_std, dx, dgamma, dbeta, rm, rv, ye, dxe, dge, dbe))
    if kind == "layernorm":
        y, xhat, inv_std = be.layernorm_forward(a["x"], a["gamma"], a["beta"], 1e-5)
        dx, dgamma, dbeta = be.layernorm_backward(a["dy"], xhat, a["gamma"], inv_std)
        return _host(be, (y, xhat, inv_std, dx, dgamma, dbeta))
    if kind == "penalty":
        grad = be.copy(a["dy"])
        be.l1_l2_penalty_grad(a["x"], grad, 0.01, 0.02)
        return _host(be, (be.l1_l2_penalty(a["x"], 0.01, 0.02), grad))
    if kind == "sgd":
        momentum, nesterov, wd, first = {"plain": (0.0, False, 0.0, True), "momentum_first": (0.9, False, 0.01, True),
                                         "momentum": (0.9, False, 0.01, False), "nesterov": (0.9, True, 0.0, False)}[detail]
        p, g, buf = be.copy(a["flat"]), a["flat_grad"], be.copy(a["flat_state"])
        be.sgd_step(p, g, buf if momentum else None, 0.1, momentum, 0.0, nesterov, wd, first)
        return _host(be, (p, buf))
    if kind == "adam":
        decoupled = detail == "adamw"
        p, m, v = be.copy(a["flat"]), be.copy(a["flat_grad"]), be.copy(a["flat_state"])
        for step in (1, 2, 3):
            be.adam_step(p, a["flat_grad"], m, v, 1e-2, 0.9, 0.999, 1e-8, 0.05, step, decoupled)
        return _host(be, (p, m, v))
    raise KeyError(name)


ops.load_all()
OP_CASES = sorted(ops.CASES)  # every fused op's cases, from its module in backends/ops/
EXACT |= {name for name in OP_CASES if ops.CASES[name].exact}

BUILTIN_ACTIVATIONS = sorted(name for name, act in ACTIVATIONS.items() if act.builtin)
CASES = (
    [f"bias_activation_{a}" for a in BUILTIN_ACTIVATIONS]
    + [f"activation_{a}" for a in BUILTIN_ACTIVATIONS]
    + [f"activation_backward_{a}" for a in BUILTIN_ACTIVATIONS]
    + ["matmul", "sum_rows", "add_scaled", "copy", "take_rows", "all_finite", "step_finite",
       "loss:mse_loss/dy", "loss:mae_loss/dy", "loss:bce_loss/t01", "loss:bce_with_logits_loss/t01",
       "loss:cross_entropy_loss/onehot", "loss:cross_entropy_labels_loss/labels", "loss:hinge_loss/tpm",
       "count_argmax_matches", "count_label_matches", "count_threshold_matches",
       "dropout_forward", "dropout_backward", "batchnorm", "layernorm", "penalty", "reshape", "sgd:plain", "sgd:momentum_first", "sgd:momentum", "sgd:nesterov",
       "adam:adam", "adam:adamw"]
    + OP_CASES
)

# Which case exercises each reference op. A new op in Backend without an entry here fails
# test_every_reference_op_is_covered_by_a_case; the transfer helpers are exercised by every case.
COVERS = {
    "bias_activation_forward": "bias_activation_", "activation_forward": "activation_",
    "activation_backward": "activation_backward_", "matmul": "matmul", "sum_rows": "sum_rows",
    "add_scaled": "add_scaled", "copy": "copy", "take_rows": "take_rows", "all_finite": "all_finite", "step_finite": "step_finite",
    "mse_loss": "loss:mse_loss", "mae_loss": "loss:mae_loss", "bce_loss": "loss:bce_loss",
    "bce_with_logits_loss": "loss:bce_with_logits_loss", "cross_entropy_loss": "loss:cross_entropy_loss",
    "hinge_loss": "loss:hinge_loss", "count_argmax_matches": "count_argmax_matches",
    "cross_entropy_labels_loss": "loss:cross_entropy_labels_loss",
    "count_label_matches": "count_label_matches", "layernorm_forward": "layernorm",
    "layernorm_backward": "layernorm", "reshape": "reshape",
    "count_threshold_matches": "count_threshold_matches", "dropout_forward": "dropout_forward",
    "dropout_backward": "dropout_backward", "batchnorm_forward_train": "batchnorm",
    "batchnorm_forward_eval": "batchnorm", "batchnorm_backward": "batchnorm", "batchnorm_backward_eval": "batchnorm",
    "update_running_stats": "batchnorm", "l1_l2_penalty": "penalty", "l1_l2_penalty_grad": "penalty",
    "sgd_step": "sgd:", "adam_step": "adam:",
}
TRANSFER_HELPERS = {"asarray", "asarray_int", "to_host", "owns", "zeros", "empty", "view", "to_scalar", "sum_all",
                    "on_device"}
