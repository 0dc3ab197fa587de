"""A user's layer that breaks the protocol is named where what it returns enters our code: a
forward that drops rows or returns one row, a backward that returns None or the wrong shape,
an array of another dtype or library. Built-in layers are not checked (nothing to catch)."""

from __future__ import annotations

import numpy as np
import pytest

import backprop as bp

X = np.random.default_rng(0).normal(size=(40, 3))
Y = X[:, :1] * 2.0


class Broken(bp.Layer):
    """y = x, except where `how` breaks the protocol."""

    def __init__(self, how="none"):
        super().__init__()
        self.how = how

    def build(self, input_shape):
        return input_shape

    def forward(self, x, training):
        if self.how == "first_row":
            return x[:1]
        if self.how == "numpy_float64":
            return np.asarray(x, dtype=np.float64)
        if self.how == "list":
            return x.tolist()
        return x

    def backward(self, grad_y, need_input_grad):
        if not need_input_grad:
            return None
        if self.how == "backward_none":
            return None
        if self.how == "backward_wide":
            return np.concatenate([grad_y, grad_y], axis=1)
        return grad_y


def net_with(how, dtype="float32"):
    return bp.Sequential(bp.Dense(3, 4), Broken(how), bp.Dense(4, 1), dtype=dtype, seed=0)


@pytest.mark.parametrize("how, error, words", [
    ("first_row", ValueError, "shape (1, 4), expected a float32 array of shape (40, 4)"),
    ("numpy_float64", TypeError, "dtype float64, expected a float32 array"),
    ("list", TypeError, "returned list"),
])
def test_a_forward_that_breaks_the_protocol_is_named_in_predict_and_fit(how, error, words):
    net = net_with(how)
    with pytest.raises(error, match=r"layer 1 \(Broken\)\.forward") as caught:
        bp.predict(net, X)
    assert words in str(caught.value)
    before = net.store.data.copy()
    with pytest.raises(error, match=r"layer 1 \(Broken\)\.forward"):
        bp.fit(net, X, Y, loss=bp.MSELoss(), epochs=1, batch_size=40, progress=False)
    assert np.array_equal(net.store.data, before)  # nothing trained on what it returned


@pytest.mark.parametrize("how, error, words", [
    ("backward_none", TypeError, "returned None, expected a float32 array of shape (8, 4)"),
    ("backward_wide", ValueError, "shape (8, 8), expected a float32 array of shape (8, 4)"),
])
def test_a_backward_that_breaks_the_protocol_is_named(how, error, words):
    net = net_with(how)
    loss = bp.MSELoss()
    loss(net(X[:8]), Y[:8])
    with pytest.raises(error, match=r"layer 1 \(Broken\)\.backward") as caught:
        net.backward(loss.backward())
    assert words in str(caught.value)
    before = net.store.data.copy()
    with pytest.raises(error, match=r"layer 1 \(Broken\)\.backward"):
        bp.fit(net, X, Y, loss=loss, epochs=1, batch_size=8, progress=False)
    assert np.array_equal(net.store.data, before)


def test_a_backward_may_skip_the_input_gradient_nobody_asked_for():
    net = bp.Sequential(Broken("backward_none"), bp.Dense(3, 1), seed=0, input_shape=(3,))  # first: no dL/dx wanted
    bp.fit(net, X, Y, loss=bp.MSELoss(), epochs=1, batch_size=8, progress=False)


def test_a_users_subclass_of_a_built_in_is_checked_and_the_built_ins_are_not():
    class OneRowDense(bp.Dense):
        def forward(self, x, training):
            return super().forward(x, training)[:1]

    with pytest.raises(ValueError, match=r"layer 0 \(OneRowDense\)\.forward"):
        bp.predict(bp.Sequential(OneRowDense(3, 2), seed=0), X)
    assert not bp.Sequential(bp.Dense(3, 2), bp.Dropout(0.1), seed=0)._users_layers


@pytest.mark.parametrize("forward, backward, error, words", [
    (lambda xp, x, slope: x[:1], lambda xp, g, y, x, slope: g, ValueError, "forward returned shape (1, 4)"),
    (lambda xp, x, slope: x, lambda xp, g, y, x, slope: g[:, :1], ValueError, "backward returned shape (40, 1)"),
    (lambda xp, x, slope: xp.astype(x, xp.float64), lambda xp, g, y, x, slope: g, TypeError,
     "forward returned dtype float64"),
    (lambda xp, x, slope: float(x[0, 0]), lambda xp, g, y, x, slope: g, TypeError, "forward returned float"),
])
def test_a_users_activation_that_returns_the_wrong_array_is_named(forward, backward, error, words):
    from backprop.backends.activations import ACTIVATIONS

    bp.register_activation("broken_act", forward, backward)
    try:
        net = bp.Sequential(bp.Dense(3, 4, activation="broken_act"), bp.Dense(4, 1), seed=0)
        with pytest.raises(error, match="activation 'broken_act'") as caught:
            loss = bp.MSELoss()
            loss(net(X), Y)
            net.backward(loss.backward())
        assert words in str(caught.value)
    finally:
        ACTIVATIONS.pop("broken_act")
