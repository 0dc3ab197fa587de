"""The speed we aim to match: a hand-written, preallocated, single-purpose NumPy step.

`python -m backprop bench` times this step beside `fit`'s and PyTorch's (and, on the digits,
beside `fit` and scikit-learn), on the same network, data, dtype and threads, so that what the
library costs on top of hand-written code is measured on the machine at hand, not assumed. It
is what someone would write for one network and nothing else: float32, every array allocated
once, the output sigmoid or softmax fused into its loss's gradient (dL/dz = (p - t) / B), no
clamps, no finiteness check, no metrics, no validation. It is not the library and nothing
imports it but the benchmark.

Per step, for Dense layers z = a W + b with activation f:
    forward     z_i = a_{i-1} W_i + b_i,   a_i = f(z_i)
    loss        BCE: -mean(t log p + (1 - t) log(1 - p)),  p = sigmoid(z_L)
                CE:  -mean(log softmax(z_L)[label])
    backward    dz_L = (p - t) / B,  dW_i = a_{i-1}^T dz_i,  db_i = 1^T dz_i,
                dz_{i-1} = (dz_i W_i^T) * f'(z_{i-1})
                (relu: * [a > 0];  sigmoid: * a (1 - a))
    SGD         v = momentum v + g,  w = w - lr v     (PyTorch's SGD, dampening 0)
    Adam        m = b1 m + (1 - b1) g,  v = b2 v + (1 - b2) g^2,
                w = w - lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)   (PyTorch's Adam)
"""

from __future__ import annotations

import math

import numpy as np


class _Rows:
    """The per-batch arrays for batches of `rows` rows (a last, shorter batch gets its own)."""

    def __init__(self, rows: int, widths):
        f32 = np.float32
        outs = widths[1:]
        self.outputs = [np.empty((rows, w), f32) for w in outs]  # a_i (z_L for the last layer)
        self.deltas = [np.empty((rows, w), f32) for w in outs]   # dL/dz_i
        self.scratch = [np.empty((rows, w), f32) for w in outs]
        self.zeros = [np.zeros((rows, w), f32) for w in outs]
        self.ones = np.ones(rows, f32)
        self.index = np.arange(rows)
        self.row_max = np.empty((rows, 1), f32)
        self.row_sum = np.empty((rows, 1), f32)
        self.inv_rows = f32(1.0 / rows)


class HandwrittenStep:
    """One training step of a Dense network, written out by hand for speed.

    widths: (inputs, hidden..., outputs); activation: "relu" or "sigmoid" for hidden layers;
    loss: "bce" (a sigmoid output, 0/1 targets of shape (B, 1)) or "cross_entropy" (logits,
    integer labels); batch: rows per step; optimizer: "sgd" (with momentum) or "adam".
    """

    def __init__(self, widths, activation: str, loss: str, batch: int, lr: float = 0.01,
                 momentum: float = 0.9, optimizer: str = "sgd", seed: int = 0):
        if activation not in ("relu", "sigmoid"):
            raise ValueError(f"activation: expected 'relu' or 'sigmoid', got {activation!r}")
        if loss not in ("bce", "cross_entropy"):
            raise ValueError(f"loss: expected 'bce' or 'cross_entropy', got {loss!r}")
        if optimizer not in ("sgd", "adam"):
            raise ValueError(f"optimizer: expected 'sgd' or 'adam', got {optimizer!r}")
        f32 = np.float32
        self.widths, self.activation, self.loss, self.optimizer = tuple(widths), activation, loss, optimizer
        shapes = list(zip(widths[:-1], widths[1:]))
        total = sum(a * b + b for a, b in shapes)
        # One flat buffer each for the weights, the gradients and the optimizer's state: the
        # update is a few calls whatever the depth. W_i, b_i, dW_i, db_i are views into them.
        self.params = np.empty(total, f32)
        self.grads = np.zeros(total, f32)
        self.state = [np.zeros(total, f32) for _ in range(1 if optimizer == "sgd" else 2)]
        self.scratch = np.empty(total, f32)
        self.W, self.b, self.dW, self.db = [], [], [], []
        offset = 0
        rng = np.random.default_rng(seed)
        for a, b in shapes:
            self.W.append(self.params[offset:offset + a * b].reshape(a, b))
            self.dW.append(self.grads[offset:offset + a * b].reshape(a, b))
            self.W[-1][...] = rng.standard_normal((a, b)) * np.sqrt(2.0 / a)
            offset += a * b
            self.b.append(self.params[offset:offset + b])
            self.db.append(self.grads[offset:offset + b])
            self.b[-1][...] = 0.0
            offset += b
        self._rows = {batch: _Rows(batch, widths)}
        self.class_ones = np.ones((widths[-1], 1), f32)
        self.lr, self.momentum = f32(lr), f32(momentum)
        self.beta1, self.beta2, self.eps = 0.9, 0.999, f32(1e-8)
        self.steps = 0
        self.one = f32(1.0)

    def _sigmoid(self, z, out):
        """1 / (1 + e^-z): four calls (overflows to 0 or 1 at the tails, which a one-network
        script accepts and the library must not)."""
        np.negative(z, out=out)
        np.exp(out, out=out)
        np.add(out, self.one, out=out)
        np.reciprocal(out, out=out)

    def _forward(self, x, ws: _Rows):
        """The last layer's pre-activation z_L (a workspace); every a_i kept in ws.outputs."""
        last = len(self.W) - 1
        a = x
        for i, (W, b, out) in enumerate(zip(self.W, self.b, ws.outputs)):
            np.dot(a, W, out=out)
            np.add(out, b, out=out)
            if i < last:
                if self.activation == "relu":
                    np.maximum(out, ws.zeros[i], out=out)
                else:
                    self._sigmoid(out, out)
            a = out
        return a

    def predict(self, x):
        """The last layer's outputs (logits, or pre-sigmoid scores for BCE) for x, a new array."""
        x = np.ascontiguousarray(x, np.float32)
        return self._forward(x, self._workspace(x.shape[0])).copy()

    def _workspace(self, rows: int) -> _Rows:
        ws = self._rows.get(rows)
        if ws is None:
            ws = self._rows[rows] = _Rows(rows, self.widths)
        return ws

    def step(self, x, target) -> float:
        """Forward, loss, backward and the update for one batch (x: (B, inputs) float32); the loss."""
        ws = self._workspace(x.shape[0])
        last = len(self.W) - 1
        logits = self._forward(x, ws)
        dz = ws.deltas[last]
        if self.loss == "bce":
            p = ws.scratch[last]
            self._sigmoid(logits, p)
            log_q = dz
            np.subtract(self.one, p, out=log_q)
            np.log(log_q, out=log_q)
            log_p = np.log(p)
            loss = -float(np.mean(target * log_p + (1 - target) * log_q))
            np.subtract(p, target, out=dz)
        else:
            np.max(logits, axis=1, keepdims=True, out=ws.row_max)
            np.subtract(logits, ws.row_max, out=dz)
            np.exp(dz, out=dz)
            np.dot(dz, self.class_ones, out=ws.row_sum)
            np.divide(dz, ws.row_sum, out=dz)  # softmax
            loss = -float(np.mean(np.log(dz[ws.index, target])))
            dz[ws.index, target] -= self.one  # p - onehot(t)
        np.multiply(dz, ws.inv_rows, out=dz)
        for i in range(last, -1, -1):
            a_prev = x if i == 0 else ws.outputs[i - 1]
            np.dot(a_prev.T, dz, out=self.dW[i])
            np.dot(ws.ones, dz, out=self.db[i])
            if i == 0:
                break
            dh = ws.deltas[i - 1]
            np.dot(dz, self.W[i].T, out=dh)
            if self.activation == "relu":
                np.multiply(dh, a_prev > 0, out=dh)
            else:
                d = ws.scratch[i - 1]
                np.subtract(self.one, a_prev, out=d)
                np.multiply(d, a_prev, out=d)
                np.multiply(dh, d, out=dh)
            dz = dh
        self.steps += 1
        if self.optimizer == "sgd":
            self._sgd()
        else:
            self._adam()
        return loss

    def _sgd(self):
        velocity, scratch = self.state[0], self.scratch
        np.multiply(velocity, self.momentum, out=velocity)
        np.add(velocity, self.grads, out=velocity)
        np.multiply(velocity, self.lr, out=scratch)
        np.subtract(self.params, scratch, out=self.params)

    def _adam(self):
        (m, v), g, scratch, f32 = self.state, self.grads, self.scratch, np.float32
        b1, b2, t = self.beta1, self.beta2, self.steps
        np.multiply(m, f32(b1), out=m)
        np.multiply(g, f32(1 - b1), out=scratch)
        np.add(m, scratch, out=m)
        np.multiply(v, f32(b2), out=v)
        np.multiply(g, g, out=scratch)
        np.multiply(scratch, f32(1 - b2), out=scratch)
        np.add(v, scratch, out=v)
        np.sqrt(v, out=scratch)
        np.divide(scratch, f32(math.sqrt(1 - b2**t)), out=scratch)
        np.add(scratch, self.eps, out=scratch)
        np.divide(m, scratch, out=scratch)
        np.multiply(scratch, f32(float(self.lr) / (1 - b1**t)), out=scratch)
        np.subtract(self.params, scratch, out=self.params)
