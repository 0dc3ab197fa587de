"""The bar the speed issue sets: a hand-written, preallocated, single-purpose NumPy step.

`python -m backprop bench` times this step beside `fit`'s and PyTorch's, on the same network,
data, dtype and threads, so that what the library costs on top of hand-written code is
measured on the machine at hand, not assumed. It is what someone would write for one network
and nothing else: float32, every array allocated once, the output sigmoid or softmax fused into
its loss's gradient (dL/dz = (p - t) / B), no clamps, no finiteness check, no metrics, no
validation. It is not the library and nothing imports it but the benchmark.

Per step, for Dense layers z = a W + b with activation f:
    forward     z_i = a_{i-1} W_i + b_i,   a_i = f(z_i)
    loss        BCE: -mean(t log p + (1 - t) log(1 - p)),  p = sigmoid(z_L)
                CE:  -mean(log softmax(z_L)[label])
    backward    dz_L = (p - t) / B,  dW_i = a_{i-1}^T dz_i,  db_i = 1^T dz_i,
                dz_{i-1} = (dz_i W_i^T) * f'(z_{i-1})
                (relu: * [a > 0];  sigmoid: * a (1 - a))
    SGD         v = momentum v + g,  w = w - lr v     (PyTorch's SGD, dampening 0)
"""

from __future__ import annotations

import numpy as np


class HandwrittenStep:
    """One training step of a Dense network, written out by hand for speed.

    widths: (inputs, hidden..., outputs); activation: "relu" or "sigmoid" for hidden layers;
    loss: "bce" (a sigmoid output, 0/1 targets of shape (B, 1)) or "cross_entropy" (logits,
    integer labels); batch: rows per step.
    """

    def __init__(self, widths, activation: str, loss: str, batch: int, lr: float = 0.01,
                 momentum: float = 0.9, seed: int = 0):
        if activation not in ("relu", "sigmoid"):
            raise ValueError(f"activation: expected 'relu' or 'sigmoid', got {activation!r}")
        if loss not in ("bce", "cross_entropy"):
            raise ValueError(f"loss: expected 'bce' or 'cross_entropy', got {loss!r}")
        f32 = np.float32
        self.activation, self.loss, self.batch = activation, loss, batch
        shapes = [((a, b), (b,)) for a, b in zip(widths[:-1], widths[1:])]
        total = sum(a * b + b for (a, b), _ in shapes)
        # One flat buffer each for the weights, the gradients and the momentum: the update is
        # four calls whatever the depth. W_i, b_i, dW_i, db_i are views into them.
        self.params = np.empty(total, f32)
        self.grads = np.zeros(total, f32)
        self.velocity = np.zeros(total, f32)
        self.scratch = np.empty(total, f32)
        self.W, self.b, self.dW, self.db = [], [], [], []
        offset = 0
        rng = np.random.default_rng(seed)
        for (a, b), _ in shapes:
            for views, flat, shape in ((self.W, self.params, (a, b)), (self.dW, self.grads, (a, b))):
                views.append(flat[offset:offset + a * b].reshape(shape))
            self.W[-1][...] = rng.standard_normal((a, b)) * np.sqrt(2.0 / a)
            offset += a * b
            self.b.append(self.params[offset:offset + b])
            self.db.append(self.grads[offset:offset + b])
            self.b[-1][...] = 0.0
            offset += b
        self.outputs = [np.empty((batch, b), f32) for (_, b), _ in shapes]  # a_i (z_L for the last)
        self.deltas = [np.empty((batch, b), f32) for (_, b), _ in shapes]   # dL/dz_i
        self.ones = np.ones(batch, f32)
        self.zeros = [np.zeros((batch, b), f32) for (_, b), _ in shapes]
        self.sigmoid_scratch = [np.empty((batch, b), f32) for (_, b), _ in shapes]
        self.rows = np.arange(batch)
        self.row_max = np.empty((batch, 1), f32)
        self.row_sum = np.empty((batch, 1), f32)
        self.class_ones = np.ones((widths[-1], 1), f32)
        self.lr, self.momentum = f32(lr), f32(momentum)
        self.one, self.inv_batch = f32(1.0), f32(1.0 / batch)

    def _sigmoid(self, z, out):
        """1 / (1 + e^-z): four calls (overflows to 0 or 1 at the tails, which a one-network
        script accepts and the library must not)."""
        np.negative(z, out=out)
        np.exp(out, out=out)
        np.add(out, self.one, out=out)
        np.reciprocal(out, out=out)

    def step(self, x, target) -> float:
        """Forward, loss, backward and SGD for one batch (x: (B, inputs) float32); the loss."""
        last = len(self.W) - 1
        a = x
        for i, (W, b, out) in enumerate(zip(self.W, self.b, self.outputs)):
            np.dot(a, W, out=out)
            np.add(out, b, out=out)
            if i < last:
                if self.activation == "relu":
                    np.maximum(out, self.zeros[i], out=out)
                else:
                    self._sigmoid(out, out)
            a = out
        dz = self.deltas[last]
        logits = self.outputs[last]
        if self.loss == "bce":
            p = self.sigmoid_scratch[last]
            self._sigmoid(logits, p)
            log_q = dz
            np.subtract(self.one, p, out=log_q)
            np.log(log_q, out=log_q)
            log_p = np.log(p)
            loss = -float(np.mean(target * log_p + (1 - target) * log_q))
            np.subtract(p, target, out=dz)
        else:
            np.max(logits, axis=1, keepdims=True, out=self.row_max)
            np.subtract(logits, self.row_max, out=dz)
            np.exp(dz, out=dz)
            np.dot(dz, self.class_ones, out=self.row_sum)
            np.divide(dz, self.row_sum, out=dz)  # softmax
            loss = -float(np.mean(np.log(dz[self.rows, target])))
            dz[self.rows, target] -= self.one  # p - onehot(t)
        np.multiply(dz, self.inv_batch, out=dz)
        for i in range(last, -1, -1):
            a_prev = x if i == 0 else self.outputs[i - 1]
            np.dot(a_prev.T, dz, out=self.dW[i])
            np.dot(self.ones, dz, out=self.db[i])
            if i == 0:
                break
            dh = self.deltas[i - 1]
            np.dot(dz, self.W[i].T, out=dh)
            if self.activation == "relu":
                np.multiply(dh, a_prev > 0, out=dh)
            else:
                d = self.sigmoid_scratch[i - 1]
                np.subtract(self.one, a_prev, out=d)
                np.multiply(d, a_prev, out=d)
                np.multiply(dh, d, out=dh)
            dz = dh
        np.multiply(self.velocity, self.momentum, out=self.velocity)
        np.add(self.velocity, self.grads, out=self.velocity)
        np.multiply(self.velocity, self.lr, out=self.scratch)
        np.subtract(self.params, self.scratch, out=self.params)
        return loss
