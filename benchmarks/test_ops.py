"""Each backend op at the sizes of the small and large configs: matmul forward/backward, every
activation forward/backward, every loss, every optimizer update, the per-step finiteness check,
dropout; and fit's once-per-call check of the data."""

from __future__ import annotations

import numpy as np
import pytest

from backprop.backends import ACTIVATIONS, get_backend
from conftest import device_array

# (batch, in, out): the first layer of the small and of the large config.
SIZES = {"small": (32, 64, 32), "large": (512, 784, 1024)}
LOSSES = ["mse_loss", "mae_loss", "bce_loss", "bce_with_logits_loss", "cross_entropy_loss", "hinge_loss"]


@pytest.fixture(params=list(SIZES))
def size(request):
    return SIZES[request.param]


def test_matmul_forward(backend, measure, size):
    rows, n_in, n_out = size
    rng = np.random.default_rng(0)
    x, w = device_array(backend, rng, (rows, n_in)), device_array(backend, rng, (n_in, n_out))
    z = backend.empty((rows, n_out))
    measure(backend, lambda: backend.matmul(x, w, out=z))


def test_matmul_backward(backend, measure, size):
    """dW = x.T @ dz and dx = dz @ W.T, transposes passed as flags."""
    rows, n_in, n_out = size
    rng = np.random.default_rng(0)
    x, w = device_array(backend, rng, (rows, n_in)), device_array(backend, rng, (n_in, n_out))
    dz = device_array(backend, rng, (rows, n_out))
    dw, dx = backend.empty((n_in, n_out)), backend.empty((rows, n_in))

    def backward():
        backend.matmul(x, dz, transpose_a=True, out=dw)
        backend.matmul(dz, w, transpose_b=True, out=dx)

    measure(backend, backward)


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_bias_activation_forward(backend, measure, size, activation):
    rows, _, n_out = size
    rng = np.random.default_rng(0)
    z, b = device_array(backend, rng, (rows, n_out)), device_array(backend, rng, (n_out,))
    y = backend.empty((rows, n_out))
    measure(backend, lambda: backend.bias_activation_forward(z, b, activation, out=y))


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_activation_backward(backend, measure, size, activation):
    rows, _, n_out = size
    rng = np.random.default_rng(0)
    pre, grad_y = device_array(backend, rng, (rows, n_out)), device_array(backend, rng, (rows, n_out))
    y = backend.activation_forward(pre, activation)
    dz = backend.empty((rows, n_out))
    measure(backend, lambda: backend.activation_backward(grad_y, y, pre, activation, out=dz))


@pytest.mark.parametrize("loss", LOSSES)
def test_loss_and_gradient(backend, measure, loss):
    rows, classes = 512, 10
    rng = np.random.default_rng(0)
    if loss == "bce_loss":
        pred = device_array(backend, rng, (rows, classes), 0.01, 0.99)
    else:
        pred = device_array(backend, rng, (rows, classes))
    if loss == "cross_entropy_loss":
        target = backend.asarray(np.eye(classes)[rng.integers(0, classes, rows)])
    elif loss == "hinge_loss":
        target = backend.asarray(rng.choice([-1.0, 1.0], size=(rows, classes)))
    else:
        target = backend.asarray(rng.integers(0, 2, size=(rows, classes)))
    op = getattr(backend, loss)
    measure(backend, lambda: op(pred, target))


# The parameter count of the large config: 784*1024 + 1024 + 1024*1024 + 1024 + 1024*10 + 10.
PARAMS = 1_863_690


@pytest.mark.parametrize("nesterov", [False, True], ids=["momentum", "nesterov"])
def test_sgd_update(backend, measure, nesterov):
    rng = np.random.default_rng(0)
    param, grad = device_array(backend, rng, (PARAMS,)), device_array(backend, rng, (PARAMS,))
    buf = backend.zeros((PARAMS,))
    backend.sgd_step(param, grad, buf, 0.01, 0.9, 0.0, nesterov, 0.0, True)
    measure(backend, lambda: backend.sgd_step(param, grad, buf, 0.01, 0.9, 0.0, nesterov, 0.0, False))


@pytest.mark.parametrize("decoupled", [False, True], ids=["adam", "adamw"])
def test_adam_update(backend, measure, decoupled):
    rng = np.random.default_rng(0)
    param, grad = device_array(backend, rng, (PARAMS,)), device_array(backend, rng, (PARAMS,))
    m, v = backend.zeros((PARAMS,)), backend.zeros((PARAMS,))
    measure(backend, lambda: backend.adam_step(param, grad, m, v, 1e-3, 0.9, 0.999, 1e-8, 0.01, 10, decoupled))


def test_step_finite(backend, measure):
    """fit's per-step check of the loss and the whole flat gradient (the large config's size)."""
    rng = np.random.default_rng(0)
    grad, loss = device_array(backend, rng, (PARAMS,)), backend.asarray(np.asarray(0.25))
    measure(backend, lambda: backend.step_finite(loss, grad))


def test_dropout_forward(backend, measure, size):
    """The mask's hash and y = x * mask, on a hidden layer's activations (p = 0.3)."""
    rows, _, n_out = size
    rng = np.random.default_rng(0)
    x, y = device_array(backend, rng, (rows, n_out)), backend.empty((rows, n_out))
    measure(backend, lambda: backend.dropout_forward(x, 0.3, 12345, out=y))


def test_data_check(measure):
    """fit's once-per-call finiteness check of X on the host: bench's medium data, 25,600 x 784 float32."""
    from backprop.boundary import check_finite

    x = np.random.default_rng(0).standard_normal((25_600, 784), dtype=np.float32)
    measure(get_backend("cpu", "float32"), lambda: check_finite(x, "X"))
