"""Extreme numbers: logits of +-3e4, sigmoid inputs of +-1e4, probabilities of exactly 0 and 1,
in float32 and float64 on every available backend and on the reference (the definition every
backend follows). Losses and gradients stay finite and equal
their closed forms (worked out in float64 by hand), and every activation stays finite and
agrees with the float64 reference.
"""

from __future__ import annotations

import numpy as np
import pytest

import backprop as bp
from backprop.backends import Backend

DEVICES = [pytest.param(device, dtype, id=f"{device}-{dtype}", marks=[pytest.mark.gpu] if device != "cpu" else [])
           for device in bp.available_devices() for dtype in ("float32", "float64")]
REFERENCE = Backend(np, "float64")


@pytest.fixture(params=["reference-float32", "reference-float64"] + [pytest.param(p.id, marks=p.marks) for p in DEVICES])
def backend(request):
    device, dtype = request.param.rsplit("-", 1)
    return Backend(np, dtype) if device == "reference" else bp.get_backend(device, dtype)


def close(backend, actual, expected):
    """Finite, and equal to `expected` to the backend dtype's precision."""
    actual = np.asarray(backend.to_host(actual), dtype=np.float64)
    assert np.isfinite(actual).all()
    rtol = 1e-6 if backend.dtype_name == "float32" else 1e-13
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol)


def test_cross_entropy_of_logits_3e4(backend):
    logits = np.array([[3e4, -3e4, 0.0], [3e4, -3e4, 0.0], [-3e4, 3e4, 3e4]])
    target = np.eye(3)[[0, 1, 0]]
    for reduction, scale in (("mean", 1 / 3), ("sum", 1.0)):
        loss, grad = backend.cross_entropy_loss(backend.asarray(logits), backend.asarray(target), reduction)
        # -log softmax(x)_label = logsumexp(x) - x_label; softmax is one-hot at the maximum (or
        # splits evenly between two equal maxima)
        row_losses = [0.0, 6e4, 6e4 + np.log(2)]
        softmax = np.array([[1, 0, 0], [1, 0, 0], [0, 0.5, 0.5]])
        close(backend, loss, scale * sum(row_losses))
        close(backend, grad, scale * (softmax - target))


@pytest.mark.filterwarnings("ignore:overflow encountered")  # x_j - max overflows: the point of the test
@pytest.mark.parametrize("labels", [False, True], ids=["one-hot", "labels"])
def test_cross_entropy_of_logits_3e38_with_the_right_class_is_finite(backend, labels):
    """Logits spanning the whole float32 range: x_j - max overflows to -inf for the small ones,
    and a target of 0 times -inf would be NaN. The right class's loss is 0, its gradient 0."""
    big = float(np.finfo(np.float32).max) * 0.9
    logits = np.array([[big, -big, 0.0], [-big, big, -big]])
    picks = [0, 1]
    on_device = backend.asarray(logits)
    if labels:
        loss, grad = backend.cross_entropy_labels_loss(on_device, backend.asarray_int(np.array(picks)), "mean")
    else:
        loss, grad = backend.cross_entropy_loss(on_device, backend.asarray(np.eye(3)[picks]), "mean")
    close(backend, loss, 0.0)
    close(backend, grad, np.zeros((2, 3)))


@pytest.mark.filterwarnings("ignore:overflow encountered")  # x^3 overflows in tanh's argument: by design
def test_gelu_backward_at_2e19_is_finite(backend):
    """x^2 overflows float32 at |x| >= 2e19 (the derivative of tanh's argument): with tanh at
    +-1 the term it multiplies is 0, and 0 * inf would be NaN. GELU' is 1 far right, 0 far left."""
    x = np.array([[2e19, -2e19, 3e38, -3e38]])
    y, pre = backend.bias_activation_forward(backend.asarray(x), backend.asarray(np.zeros(4)), "gelu")
    grad = backend.activation_backward(backend.asarray(np.ones((1, 4))), y, pre, "gelu")
    close(backend, grad, [[1.0, 0.0, 1.0, 0.0]])
    close(backend, y, [[2e19, 0.0, 3e38, 0.0]])


def test_bce_with_logits_of_3e4(backend):
    x = np.array([[3e4], [3e4], [-3e4], [-3e4], [0.0]])
    t = np.array([[1.0], [0.0], [1.0], [0.0], [1.0]])
    loss, grad = backend.bce_with_logits_loss(backend.asarray(x), backend.asarray(t), "sum")
    # max(x, 0) - x t + log(1 + e^-|x|): 0, 3e4, 3e4, 0, log 2;  dL/dx = sigmoid(x) - t
    close(backend, loss, 6e4 + np.log(2))
    close(backend, grad, [[0.0], [1.0], [-1.0], [0.0], [-0.5]])


@pytest.mark.filterwarnings("ignore:divide by zero")  # log(0) = -inf, then clamped: by design
def test_bce_of_probabilities_exactly_0_and_1(backend):
    p = np.array([[0.0], [1.0], [0.0], [1.0]])
    t = np.array([[0.0], [1.0], [1.0], [0.0]])
    loss, grad = backend.bce_loss(backend.asarray(p), backend.asarray(t), "mean")
    # PyTorch's clamps: each log >= -100, the gradient's denominator p (1 - p) >= 1e-12
    close(backend, loss, (0 + 0 + 100 + 100) / 4)
    close(backend, grad, np.array([[0.0], [0.0], [-1e12], [1e12]]) / 4)


@pytest.mark.parametrize("activation", sorted(bp.backends.ACTIVATIONS))
def test_activations_of_1e4_are_finite_and_match_the_float64_reference(backend, activation):
    x = np.array([[1e4, -1e4, 0.0, 3e4], [-3e4, 1e4, -1e4, 1.0]])
    dy = np.array([[1.0, -2.0, 0.5, 1.0], [1.0, 1.0, -1.0, 3.0]])
    y, pre = backend.bias_activation_forward(backend.asarray(x), backend.asarray(np.zeros(4)), activation)
    grad = backend.activation_backward(backend.asarray(dy), y, pre, activation)
    ref_y, ref_pre = REFERENCE.bias_activation_forward(x, np.zeros(4), activation)
    close(backend, y, ref_y)
    close(backend, grad, REFERENCE.activation_backward(dy, ref_y, ref_pre, activation))


def test_sigmoid_saturates_to_exactly_0_and_1(backend):
    y = backend.to_host(backend.activation_forward(backend.asarray(np.array([[1e4, -1e4]])), "sigmoid"))
    assert y.tolist() == [[1.0, 0.0]]


@pytest.mark.parametrize("device, dtype", DEVICES)
def test_a_network_with_saturated_outputs_backpropagates_finite_gradients(device, dtype):
    # Weights that take the logits to +-6e4 and the sigmoid inputs to +-1e4, every row wrong.
    for last, loss, target in ((None, bp.CrossEntropyLoss(), [1, 0]), ("sigmoid", bp.BCELoss(), [0, 1])):
        out = 2 if last is None else 1
        net = bp.Sequential(bp.Dense(2, 2, activation="tanh"), bp.Dense(2, out, activation=last),
                            device=device, dtype=dtype, seed=0)
        net.layers[0].weight.data = np.array([[50.0, 0.0], [0.0, 50.0]])
        net.layers[1].weight.data = np.array([[3e4, -3e4], [-3e4, 3e4]])[:, :out] / (1 if last is None else 6)
        value = loss(net(np.array([[1.0, -1.0], [-1.0, 1.0]])), target)
        net.backward(loss.backward())
        assert np.isfinite(value) and value >= 100
        assert np.isfinite(bp.to_numpy(net.store.grad)).all()


def test_relu_is_exact_at_zeros_nan_and_inf_forward_and_backward(backend):
    # y = where(x > 0, x, 0): -0.0, +0.0 and NaN give +0.0 (a bias of -0.0 keeps the -0.0 inputs
    # -0.0; nine values, as NumPy's fmax can keep -0.0 outside its vector loop). dL/dz =
    # where(y > 0, dL/dy, 0) bit for bit: NaN and inf in dL/dy reach z only through units that
    # are on; off units pass +0.0.
    x = np.array([[-1.0, -0.0, 0.0, np.nan, 2.0, 3.0, 2.0**-100, np.inf, -0.0]])
    dy = np.array([[np.nan, np.inf, -np.inf, np.nan, np.nan, -np.inf, -0.0, 4.0, np.nan]])
    y, pre = backend.bias_activation_forward(backend.asarray(x), backend.asarray(np.full(9, -0.0)), "relu")
    y_host = np.asarray(backend.to_host(y))
    np.testing.assert_array_equal(y_host, [[0.0, 0.0, 0.0, 0.0, 2.0, 3.0, 2.0**-100, np.inf, 0.0]])
    assert not np.signbit(y_host).any()
    alone = np.asarray(backend.to_host(backend.activation_forward(backend.asarray(x), "relu")))
    assert alone.tobytes() == y_host.tobytes()
    grad = np.asarray(backend.to_host(backend.activation_backward(backend.asarray(dy), y, pre, "relu")))
    expected = np.array([[0.0, 0.0, 0.0, 0.0, np.nan, -np.inf, -0.0, 4.0, 0.0]])
    np.testing.assert_array_equal(grad, expected)
    assert np.signbit(grad).tolist() == [[False, False, False, False, False, True, True, False, False]]


def test_data_of_tiny_values_passes_the_finiteness_check_under_numpy_raise():
    # The check of a data set is one dot product of its values, which underflows here: no news
    # to the caller, so no FloatingPointError even when NumPy is told to raise on every one.
    net = bp.Sequential(bp.Dense(4, 2), seed=0)
    tiny = np.full((5000, 4), 1e-20)
    with np.errstate(all="raise"):
        assert bp.predict(net, tiny).shape == (5000, 2)
        assert net(tiny[:10]).shape == (10, 2)
