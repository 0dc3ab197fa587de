"""The reference backend: every op backprop uses, defined with the Python Array API standard.

`Backend` is the definition of what each op means. It calls only functions of the Array API
standard on `self.xp` (no NumPy-isms), so it runs unchanged on NumPy, CuPy and
`array-api-strict`. Faster backends subclass it and override ops with the same signature; an op
they do not override falls back to this one.

Conventions shared by every op:
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
import math
import types

from backprop.backends import ops
from backprop.backends.activations import ACTIVATIONS, get_activation, sigmoid

# PyTorch clamps the logs of binary cross-entropy at -100 and bounds the gradient's denominator.
BCE_LOG_FLOOR = -100.0
BCE_GRAD_EPS = 1e-12

# Constants of the counter-based hash that draws dropout masks (murmur3's 32-bit finalizer).
HASH_M1 = 0x85EBCA6B
HASH_M2 = 0xC2B2AE35
HASH_GOLDEN = 0x9E3779B9
MASK32 = 0xFFFFFFFF


_NO_SWITCH = contextlib.nullcontext()  # reusable, and shared: it holds no state


def hash32(x: int) -> int:
    """murmur3's fmix32 on a Python int: a bijection of 32-bit words that mixes every bit."""
    x &= MASK32
    x ^= x >> 16
    x = (x * HASH_M1) & MASK32
    x ^= x >> 13
    x = (x * HASH_M2) & MASK32
    x ^= x >> 16
    return x


def dropout_key(seed: int, stream: int, step: int) -> int:
    """The 32-bit key of one dropout draw: mixes the network seed, the layer's stream, the step.

    Computed on the host; every backend then hashes `element_index ^ key`, so the CPU and the
    GPU draw bit-identical masks from the same (seed, stream, step).
    """
    key = hash32(seed ^ HASH_GOLDEN)
    key = hash32(key ^ hash32(stream + HASH_GOLDEN))
    return hash32(key ^ hash32((step * HASH_GOLDEN) & MASK32))


def dropout_threshold(p: float) -> int:
    """Keep an element when its 32-bit hash is >= this threshold: P(drop) = p exactly to 2**-32."""
    return min(int(round(p * 2.0**32)), MASK32)


class Backend:
    """Reference implementation of every op, on any Array API namespace `xp`."""

    name = "reference"
    op_flavor = "reference"  # which implementation of each fused op this backend runs

    def __init__(self, xp, dtype: str = "float32", device: str = "cpu"):
        if dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
        self.xp = xp
        self.dtype_name = dtype
        self.dtype = getattr(xp, dtype)
        self.device = device

    def __repr__(self) -> str:
        return f"{type(self).__name__}(device={self.device!r}, dtype={self.dtype_name!r})"

    def __getattr__(self, name: str):
        """A fused op (a module of backends/ops/) by name, as a method of this backend:
        `backend.<op name>(...)`. Called only for names the class does not
        define; the bound op is then kept on the instance, so later calls find it directly."""
        op = None if name.startswith("_") else ops.find(name)
        if op is None:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r} "
                                 f"(neither an array primitive nor a fused op of backends/ops)")
        bound = self._bind_op(op)
        self.__dict__[name] = bound
        return bound

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
        namespace = getattr(x, "__array_namespace__", None)
        return namespace is not None and namespace() is self.xp

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

    def _reduce(self, total, count: int, reduction: str):
        if reduction == "mean":
            return total / count
        return total

    def _scale(self, count: int, reduction: str) -> float:
        """d(reduction)/d(element): 1/count for "mean", 1 for "sum"."""
        return 1.0 / count if reduction == "mean" else 1.0

    # ------------------------------------------------------------------ linear algebra

    def matmul(self, a, b, transpose_a: bool = False, transpose_b: bool = False, out=None):
        """op(a) @ op(b), where op transposes when its flag is set (views, never copies)."""
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

    # ------------------------------------------------------------------ losses

    def mse_loss(self, pred, target, reduction: str = "mean"):
        """L = mean (p - t)^2;  dL/dp = 2 (p - t) / N."""
        diff = pred - target
        n = math.prod(pred.shape)
        loss = self._reduce(self.xp.sum(diff * diff), n, reduction)
        return loss, (2.0 * self._scale(n, reduction)) * diff

    def mae_loss(self, pred, target, reduction: str = "mean"):
        """L = mean |p - t|;  dL/dp = sign(p - t) / N  (0 where p == t, as PyTorch)."""
        diff = pred - target
        n = math.prod(pred.shape)
        loss = self._reduce(self.xp.sum(self.xp.abs(diff)), n, reduction)
        return loss, self._scale(n, reduction) * self.xp.sign(diff)

    def bce_loss(self, prob, target, reduction: str = "mean"):
        """Binary cross-entropy on probabilities, PyTorch's clamps:

        L = -mean(t max(log p, -100) + (1 - t) max(log(1 - p), -100))
        dL/dp = (p - t) / max(p (1 - p), 1e-12) / N
        """
        xp = self.xp
        log_p = xp.clip(xp.log(prob), min=BCE_LOG_FLOOR)
        log_q = xp.clip(xp.log1p(-prob), min=BCE_LOG_FLOOR)
        n = math.prod(prob.shape)
        loss = self._reduce(-xp.sum(target * log_p + (1.0 - target) * log_q), n, reduction)
        denom = xp.clip(prob * (1.0 - prob), min=BCE_GRAD_EPS)
        return loss, self._scale(n, reduction) * (prob - target) / denom

    def bce_with_logits_loss(self, logits, target, reduction: str = "mean"):
        """Sigmoid fused into binary cross-entropy, stable for any logit x:

        L = mean(max(x, 0) - x t + log(1 + e^-|x|))
        dL/dx = (sigmoid(x) - t) / N
        """
        xp = self.xp
        x = logits
        per = xp.clip(x, min=0.0) - x * target + xp.log1p(xp.exp(-xp.abs(x)))
        n = math.prod(x.shape)
        loss = self._reduce(xp.sum(per), n, reduction)
        return loss, self._scale(n, reduction) * (sigmoid(self.xp, x) - target)

    def cross_entropy_loss(self, logits, target, reduction: str = "mean"):
        """Softmax fused into cross-entropy over rows; `target` holds one probability row per
        example (one-hot for hard labels). Log-sum-exp keeps every logit finite:

        log softmax(x)_j = x_j - m - log sum_k e^(x_k - m),  m = max_k x_k
        L = mean over rows of -sum_j t_j log softmax(x)_j
        dL/dx_j = (softmax(x)_j sum_k t_k - t_j) / rows

        x_j - m is clamped at the dtype's lowest finite number: logits spanning more than its
        range (+-3e38 in float32) make the difference -inf, and a zero target times -inf is
        NaN; clamped, a class of target 0 adds 0 and the right class's loss stays finite.
        """
        xp = self.xp
        lowest = float(xp.finfo(self.dtype).min)
        shifted = xp.clip(logits - xp.max(logits, axis=1, keepdims=True), min=lowest)
        e = xp.exp(shifted)
        s = xp.sum(e, axis=1, keepdims=True)
        log_softmax = shifted - xp.log(s)
        rows = logits.shape[0]
        loss = self._reduce(-xp.sum(target * log_softmax), rows, reduction)
        t_sum = xp.sum(target, axis=1, keepdims=True)
        grad = self._scale(rows, reduction) * ((e / s) * t_sum - target)
        return loss, grad

    def cross_entropy_labels_loss(self, logits, labels, reduction: str = "mean"):
        """`cross_entropy_loss` with integer class labels (int64, shape (rows,)) instead of
        probability rows: the same loss and gradient as with the one-hot rows of the labels,
        without making them:

        L = mean over rows of -log softmax(x)_label,  dL/dx_j = (softmax(x)_j - [j = label]) / rows
        """
        xp = self.xp
        classes = xp.arange(logits.shape[1], dtype=labels.dtype)
        onehot = xp.astype(xp.reshape(labels, (-1, 1)) == xp.reshape(classes, (1, -1)), self.dtype)
        return self.cross_entropy_loss(logits, onehot, reduction)

    def hinge_loss(self, pred, target, reduction: str = "mean"):
        """Hinge loss with targets in {-1, +1}:

        L = mean max(0, 1 - t p);  dL/dp = -t [1 - t p > 0] / N
        """
        xp = self.xp
        margin = 1.0 - target * pred
        n = math.prod(pred.shape)
        loss = self._reduce(xp.sum(xp.clip(margin, min=0.0)), n, reduction)
        grad = xp.where(margin > 0, -target, xp.zeros_like(target))
        return loss, self._scale(n, reduction) * grad

    # ------------------------------------------------------------------ metrics

    def count_argmax_matches(self, scores, target):
        """How many rows have argmax(scores) == argmax(target), as a 0-d array."""
        xp = self.xp
        hits = xp.argmax(scores, axis=1) == xp.argmax(target, axis=1)
        return xp.sum(xp.astype(hits, self.dtype))

    def count_label_matches(self, scores, labels):
        """How many rows have argmax(scores) == label (int64 labels), as a 0-d array."""
        xp = self.xp
        hits = xp.argmax(scores, axis=1) == labels
        return xp.sum(xp.astype(hits, self.dtype))

    def count_threshold_matches(self, scores, target, score_threshold: float, target_threshold: float):
        """How many elements have (scores > score_threshold) == (target > target_threshold), as a
        0-d array (logits cut at 0 against probability targets cut at 0.5, say). The thresholds
        are compared in the arrays' dtype, as Python floats are (a NumPy float64 threshold would
        otherwise compare a float32 array in float64), on every backend."""
        xp = self.xp
        hits = (scores > float(score_threshold)) == (target > float(target_threshold))
        return xp.sum(xp.astype(hits, self.dtype))

    # ------------------------------------------------------------------ dropout

    def dropout_forward(self, x, p: float, key: int, out=None):
        """Inverted dropout: y = x * m, m_i = 0 with probability p, else 1 / (1 - p).

        Element i is kept when hash32(i ^ key) >= dropout_threshold(p) (hash32 = murmur3 fmix32,
        i the flat element index modulo 2**32), so the mask depends only on (key, i): every
        backend draws the same mask. Returns `(y, mask)`; backward multiplies by the same mask.
        """
        xp = self.xp
        n = math.prod(x.shape)
        h = xp.arange(n, dtype=xp.uint64) & MASK32
        h = h ^ key
        h = h ^ (h >> 16)
        h = (h * HASH_M1) & MASK32
        h = h ^ (h >> 13)
        h = (h * HASH_M2) & MASK32
        h = h ^ (h >> 16)
        keep = xp.reshape(h >= dropout_threshold(p), x.shape)
        scale = 1.0 / (1.0 - p)
        mask = xp.where(keep, xp.full(x.shape, scale, dtype=self.dtype), xp.zeros_like(x))
        return self._result(x * mask, out), mask

    def dropout_backward(self, grad_y, mask, out=None):
        """dL/dx = dL/dy * m (the mask already holds 0 or 1 / (1 - p))."""
        return self._result(grad_y * mask, out)

    # ------------------------------------------------------------------ batch normalization

    def batchnorm_forward_train(self, x, gamma, beta, eps: float):
        """Normalize each feature over the batch:

        mu = mean_i x_i, var = mean_i (x_i - mu)^2 (biased), xhat = (x - mu) / sqrt(var + eps)
        y = gamma xhat + beta
        Returns `(y, xhat, mean, var, inv_std)`; backward needs xhat and inv_std.
        """
        xp = self.xp
        n = x.shape[0]
        mean = xp.sum(x, axis=0) / n
        centered = x - mean
        var = xp.sum(centered * centered, axis=0) / n
        inv_std = 1.0 / xp.sqrt(var + eps)
        xhat = centered * inv_std
        return gamma * xhat + beta, xhat, mean, var, inv_std

    def batchnorm_forward_eval(self, x, gamma, beta, running_mean, running_var, eps: float):
        """y = gamma (x - running_mean) / sqrt(running_var + eps) + beta."""
        inv_std = 1.0 / self.xp.sqrt(running_var + eps)
        return gamma * ((x - running_mean) * inv_std) + beta

    def batchnorm_backward_eval(self, grad_y, x, gamma, running_mean, running_var, eps: float):
        """Gradients of the eval-mode batch norm, whose statistics are constants:

        xhat = (x - running_mean) inv_std, inv_std = 1 / sqrt(running_var + eps)
        dL/dx = dL/dy gamma inv_std,  dL/dgamma = sum_i dL/dy_i xhat_i,  dL/dbeta = sum_i dL/dy_i
        Returns `(grad_x, grad_gamma, grad_beta)`.
        """
        xp = self.xp
        inv_std = 1.0 / xp.sqrt(running_var + eps)
        xhat = (x - running_mean) * inv_std
        return grad_y * (gamma * inv_std), xp.sum(grad_y * xhat, axis=0), xp.sum(grad_y, axis=0)

    def batchnorm_backward(self, grad_y, xhat, gamma, inv_std):
        """Gradients of the training-mode batch norm (n rows):

        dL/dbeta  = sum_i dL/dy_i
        dL/dgamma = sum_i dL/dy_i xhat_i
        dL/dx_i   = gamma inv_std / n (n dL/dy_i - dL/dbeta - xhat_i dL/dgamma)
        Returns `(grad_x, grad_gamma, grad_beta)`.
        """
        xp = self.xp
        n = grad_y.shape[0]
        grad_beta = xp.sum(grad_y, axis=0)
        grad_gamma = xp.sum(grad_y * xhat, axis=0)
        grad_x = (gamma * inv_std / n) * (n * grad_y - grad_beta - xhat * grad_gamma)
        return grad_x, grad_gamma, grad_beta

    def layernorm_forward(self, x, gamma, beta, eps: float):
        """Normalize each row of x (rows, n) over its n values:

        mu = mean_j x_j, var = mean_j (x_j - mu)^2 (biased), inv_std = 1 / sqrt(var + eps)
        xhat = (x - mu) inv_std,  y = gamma xhat + beta
        Returns `(y, xhat, inv_std)` with inv_std of shape (rows, 1); backward needs xhat and inv_std.
        """
        xp = self.xp
        n = x.shape[1]
        mean = xp.sum(x, axis=1, keepdims=True) / n
        centered = x - mean
        var = xp.sum(centered * centered, axis=1, keepdims=True) / n
        inv_std = 1.0 / xp.sqrt(var + eps)
        xhat = centered * inv_std
        return gamma * xhat + beta, xhat, inv_std

    def layernorm_backward(self, grad_y, xhat, gamma, inv_std):
        """Gradients of the layer norm, per row of n values, with g = dL/dy gamma:

        dL/dx = inv_std / n (n g - sum_j g_j - xhat sum_j g_j xhat_j)
        dL/dgamma = sum over rows of dL/dy xhat,  dL/dbeta = sum over rows of dL/dy
        Returns `(grad_x, grad_gamma, grad_beta)`.
        """
        xp = self.xp
        n = grad_y.shape[1]
        g = grad_y * gamma
        sum_g = xp.sum(g, axis=1, keepdims=True)
        sum_g_xhat = xp.sum(g * xhat, axis=1, keepdims=True)
        grad_x = (inv_std / n) * (n * g - sum_g - xhat * sum_g_xhat)
        return grad_x, xp.sum(grad_y * xhat, axis=0), xp.sum(grad_y, axis=0)

    def update_running_stats(self, running_mean, running_var, mean, var, momentum: float, n: int):
        """PyTorch's running statistics, in place: r = (1 - m) r + m batch, with the unbiased
        variance var * n / (n - 1)."""
        running_mean[...] = (1.0 - momentum) * running_mean + momentum * mean
        unbiased = var * (n / (n - 1))
        running_var[...] = (1.0 - momentum) * running_var + momentum * unbiased

    # ------------------------------------------------------------------ penalties

    def l1_l2_penalty(self, w, l1: float, l2: float):
        """l1 sum |w| + l2 sum w^2, as a 0-d array (Keras's definitions)."""
        xp = self.xp
        return l1 * xp.sum(xp.abs(w)) + l2 * xp.sum(w * w)

    def l1_l2_penalty_grad(self, w, grad, l1: float, l2: float):
        """grad += l1 sign(w) + 2 l2 w, in place."""
        grad[...] = grad + l1 * self.xp.sign(w) + (2.0 * l2) * w

    # ------------------------------------------------------------------ optimizers

    def sgd_step(self, param, grad, momentum_buf, lr: float, momentum: float, dampening: float,
                 nesterov: bool, weight_decay: float, first_step: bool):
        """torch.optim.SGD, in place over flat buffers:

        g = grad + wd * param
        b = g on the first step, else momentum * b + (1 - dampening) * g
        g = g + momentum * b if nesterov else b          (when momentum != 0)
        param = param - lr * g
        """
        g = grad + weight_decay * param if weight_decay != 0 else grad
        if momentum != 0:
            if first_step:
                momentum_buf[...] = g
            else:
                momentum_buf[...] = momentum * momentum_buf + (1.0 - dampening) * g
            g = g + momentum * momentum_buf if nesterov else momentum_buf
        param[...] = param - lr * g

    def adam_step(self, param, grad, exp_avg, exp_avg_sq, lr: float, beta1: float, beta2: float,
                  eps: float, weight_decay: float, step: int, decoupled: bool):
        """torch.optim.Adam (decoupled=False) and AdamW (decoupled=True), in place:

        AdamW: param = param * (1 - lr * wd);  Adam: g = grad + wd * param
        m = beta1 m + (1 - beta1) g;  v = beta2 v + (1 - beta2) g^2
        param = param - (lr / (1 - beta1^t)) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
        """
        xp = self.xp
        g = grad
        if weight_decay != 0:
            if decoupled:
                param[...] = param * (1.0 - lr * weight_decay)
            else:
                g = grad + weight_decay * param
        exp_avg[...] = beta1 * exp_avg + (1.0 - beta1) * g
        exp_avg_sq[...] = beta2 * exp_avg_sq + (1.0 - beta2) * (g * g)
        step_size = lr / (1.0 - beta1**step)
        bias_correction2_sqrt = math.sqrt(1.0 - beta2**step)
        denom = xp.sqrt(exp_avg_sq) / bias_correction2_sqrt + eps
        param[...] = param - step_size * (exp_avg / denom)
