"""Gradient checking: analytic gradients against central finite differences, in float64.

For each parameter element (and each input element) theta_i, with the central difference
    D(h)       = (L(theta + h e_i) - L(theta - h e_i)) / (2 h)  = dL/dtheta_i + c h^2 + O(h^4)
    numeric_i  = (4 D(h/2) - D(h)) / 3                          = dL/dtheta_i + O(h^4)
    rel_err_i  = |analytic_i - numeric_i| / max(|analytic_i|, |numeric_i|, floor)
Richardson's step cancels the h^2 term: where the loss curves sharply (BatchNorm over a few
rows of a nearly constant feature, say) plain central differences are off by 1e-4 for a correct
gradient, which would blame backprop for the finite difference's own error.
L is the loss plus the network's regularization penalty. The check runs on a float64 copy of
the network on the same device (same weights, same dropout step, same BatchNorm statistics),
so a float32 network is checked without float32 rounding swamping the differences.
"""

from __future__ import annotations

import numpy as np

from backprop.boundary import as_batch
from backprop.checks import check_real
from backprop.losses import check_loss
from backprop.network import Sequential


def float64_copy(net) -> Sequential:
    """A float64 network on the same device with the same parameters, state and mode: the same
    layer classes rebuilt from their config(), whether built-in or a user's."""
    layers = [type(layer)(**{k: v for k, v in layer.config().items() if k != "type"}) for layer in net.layers]
    copy = Sequential(*layers, device=net.device, dtype="float64", seed=net.seed, input_shape=net.input_shape)
    with copy.backend.on_device():
        copy.store.data[...] = copy.backend.asarray(net.backend.to_host(net.store.data))
        for mine, theirs in zip(copy.layers, net.layers):
            mine.load_state(theirs.state())
    copy.set_noise_seed(net.layers[0]._noise_seed)
    copy.training = net.training
    return copy


def gradcheck(net, loss_fn, x, y, eps: float = 1e-5, floor: float = 1e-4,
              per_parameter: bool = False):
    """Max relative error between backprop's gradients and central differences (float64).

    Covers every parameter and the input x. With `per_parameter=True`, returns a dict
    {parameter name or "input": max relative error} instead of the overall maximum.
    The network itself is not changed.
    """
    check_loss(loss_fn, net)
    eps = check_real("eps", eps, low_open=True)
    floor = check_real("floor", floor, low_open=True)
    with net.usage.inference():  # the copy reads the network: never beside another thread's training
        net64 = float64_copy(net)
    backend = net64.backend
    with backend.on_device():
        # a copy: the differences below perturb x in place
        x_dev = as_batch(backend, x, net.input_shape, "x", copy=True)
        errors = _errors(net64, loss_fn, x_dev, y, eps, floor)
    return errors if per_parameter else max(errors.values())


def _errors(net64, loss_fn, x_dev, y, eps: float, floor: float) -> dict:
    """{parameter name or "input": max relative error} of the float64 copy at x_dev."""
    backend = net64.backend
    states = [layer.state() for layer in net64.layers]

    def loss_at() -> float:
        for layer, state in zip(net64.layers, states):
            layer.load_state(state)  # same dropout mask and BatchNorm statistics every time
        pred = net64.forward_internal(x_dev)
        value = loss_fn(pred, y)
        return value + net64.penalty()

    loss_at()
    grad_pred = loss_fn.backward()
    grad_x = backend.to_host(net64.backward_internal(grad_pred, need_input_grad=True))
    analytic = {p.name: backend.to_host(p.grad) for p in net64.parameters()}
    analytic["input"] = grad_x

    errors = {}
    for p in net64.parameters():
        errors[p.name] = _max_rel_error(analytic[p.name], _numeric(p.data, loss_at, eps), floor)
    errors["input"] = _max_rel_error(grad_x, _numeric(x_dev, loss_at, eps), floor)
    return errors


def _numeric(array, loss_at, eps: float) -> np.ndarray:
    """(4 D(eps/2) - D(eps)) / 3 for every element of `array`, D the central difference of
    loss_at() (elements perturbed in place, then restored)."""
    flat = array.reshape(-1)
    out = np.empty(flat.shape[0])

    def central(i: int, original: float, h: float) -> float:
        flat[i] = original + h
        up = loss_at()
        flat[i] = original - h
        down = loss_at()
        return (up - down) / (2.0 * h)

    for i in range(flat.shape[0]):
        original = float(flat[i])
        out[i] = (4.0 * central(i, original, eps / 2) - central(i, original, eps)) / 3.0
        flat[i] = original
    return out.reshape(array.shape)


def _max_rel_error(analytic: np.ndarray, numeric: np.ndarray, floor: float) -> float:
    scale = np.maximum(np.maximum(np.abs(analytic), np.abs(numeric)), floor)
    return float(np.max(np.abs(analytic - numeric) / scale))
