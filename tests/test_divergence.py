"""Divergence: when too large a learning rate makes the loss or the gradients NaN/inf, fit stops
before the update that would poison the weights, with an error naming the epoch and batch.
The network then holds exactly the weights (and layer state) of the last finite step, and the
optimizer's state is that of the last finite step too.
"""

from __future__ import annotations

import numpy as np
import pytest

import backprop as bp

BATCH = 16
rng = np.random.default_rng(0)
X = rng.normal(size=(64, 4))
Y = X @ rng.normal(size=(4, 1))


def make(dtype):
    net = bp.Sequential(bp.Dense(4, 8, activation="tanh"), bp.Dropout(0.1), bp.BatchNorm(8),
                        bp.Dense(8, 1), dtype=dtype, seed=0)
    return net, bp.SGD(net.parameters(), lr=1e6, momentum=0.9)


def train(net, opt, X, epochs):
    # shuffle=False: the batches are plain slices, so a re-run can stop at any step
    return bp.fit(net, X, Y[:len(X)], loss=bp.MSELoss(), optimizer=opt, epochs=epochs, batch_size=BATCH,
                  shuffle=False, progress=False)


def state(net, opt) -> list:
    parts = [net.store.data.tobytes(), opt.step_count]
    parts += [(k, np.asarray(v).tobytes()) for layer in net.layers for k, v in sorted(layer.state().items())]
    return parts + [buf.tobytes() for buf in opt.state.values()]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_lr_1e6_stops_at_the_last_finite_step(dtype):
    net, opt = make(dtype)
    with pytest.raises(bp.TrainingDivergedError) as caught:
        train(net, opt, X, epochs=50)
    err = caught.value
    assert isinstance(err, FloatingPointError)
    assert f"epoch {err.epoch}, batch {err.batch}" in str(err) and "lr=1000000.0" in str(err)
    finite_steps = (err.epoch - 1) * (len(X) // BATCH) + err.batch - 1
    assert opt.step_count == finite_steps  # the diverging step was not taken
    assert np.isfinite(net.store.data).all()
    assert all(np.isfinite(buf).all() for buf in opt.state.values())
    assert err.history is net.history and net.history.epochs == err.epoch - 1
    assert not net.training  # fit's cleanup ran, as after any fit

    # Re-run a copy up to the last finite step: every bit of the network and optimizer agrees.
    again, opt2 = make(dtype)
    if err.epoch > 1:
        train(again, opt2, X, epochs=err.epoch - 1)
    if err.batch > 1:
        train(again, opt2, X[:(err.batch - 1) * BATCH], epochs=1)
    assert state(net, opt) == state(again, opt2)


def test_a_non_finite_gradient_with_a_finite_loss_is_caught(monkeypatch):
    # The loss alone is not enough: poison one gradient element after backward.
    net = bp.Sequential(bp.Dense(4, 1), seed=0)
    opt = bp.Adam(net.parameters())
    backward = net.backward_internal

    def poisoned(grad, need_input_grad=True):
        result = backward(grad, need_input_grad)
        if opt.step_count == 2:
            net.store.grad[3] = np.inf
        return result

    monkeypatch.setattr(net, "backward_internal", poisoned)
    with pytest.raises(bp.TrainingDivergedError, match="epoch 1, batch 3: the gradient is not finite") as caught:
        bp.fit(net, X, Y, loss=bp.MSELoss(), optimizer=opt, epochs=1, batch_size=BATCH, shuffle=False,
               progress=False)
    assert caught.value.batch == 3 and opt.step_count == 2
    assert all(np.isfinite(buf).all() for buf in opt.state.values()) and np.isfinite(net.store.data).all()
