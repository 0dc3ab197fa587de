"""Backprop's gradients against central finite differences in float64 (relative error < 1e-6)."""

from __future__ import annotations

import numpy as np
import pytest

import backprop as bp
from backprop.backends import ACTIVATIONS, NumpyBackend

TOLERANCE = 1e-6
SEEDS = [0, 1, 2]


def _data(seed, rows=6, features=3):
    rng = np.random.default_rng(100 + seed)
    return rng, rng.normal(size=(rows, features))


def _targets(rng, loss, rows, outputs):
    if isinstance(loss, bp.CrossEntropyLoss):
        return rng.integers(0, outputs, size=rows)
    if isinstance(loss, (bp.BCELoss, bp.BCEWithLogitsLoss, bp.HingeLoss)):
        return rng.integers(0, 2, size=(rows, outputs)).astype(float)
    return rng.normal(size=(rows, outputs))


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_each_activation(activation, seed):
    rng, x = _data(seed)
    net = bp.Sequential(bp.Dense(3, 5, activation=activation), bp.Dense(5, 2), dtype="float64", seed=seed)
    errors = bp.gradcheck(net, bp.MSELoss(), x, rng.normal(size=(6, 2)), per_parameter=True)
    assert set(errors) == {"layers.0.weight", "layers.0.bias", "layers.1.weight", "layers.1.bias", "input"}
    assert max(errors.values()) < TOLERANCE, errors


LOSSES = [bp.MSELoss(), bp.MAELoss(), bp.BCEWithLogitsLoss(), bp.CrossEntropyLoss(), bp.HingeLoss(),
          bp.HuberLoss(delta=0.7), bp.MSELoss(reduction="sum"), bp.CrossEntropyLoss(reduction="sum"),
          bp.HuberLoss(reduction="sum")]


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("loss", LOSSES, ids=repr)
def test_each_loss(loss, seed):
    rng, x = _data(seed)
    net = bp.Sequential(bp.Dense(3, 4, activation="tanh"), bp.Dense(4, 3), dtype="float64", seed=seed)
    assert bp.gradcheck(net, loss, x, _targets(rng, loss, 6, 3)) < TOLERANCE


@pytest.mark.parametrize("seed", SEEDS)
def test_bce_on_probabilities(seed):
    rng, x = _data(seed)
    net = bp.Sequential(bp.Dense(3, 4, activation="tanh"), bp.Dense(4, 2, activation="sigmoid"),
                        dtype="float64", seed=seed)
    assert bp.gradcheck(net, bp.BCELoss(), x, rng.integers(0, 2, size=(6, 2))) < TOLERANCE


def test_cross_entropy_with_probability_targets():
    rng, x = _data(0)
    target = rng.dirichlet(np.ones(4), size=6)
    net = bp.Sequential(bp.Dense(3, 4), dtype="float64", seed=0)
    assert bp.gradcheck(net, bp.CrossEntropyLoss(), x, target) < TOLERANCE


def test_cross_entropy_with_labels_is_cross_entropy_with_their_one_hot_rows():
    """Labels are kept as labels (no one-hot copy is made): the same gradient bit for bit, the
    same loss up to the order of its sum (the one-hot sum adds the zeros too)."""
    rng, x = _data(0)
    labels = rng.integers(0, 4, size=6)
    net = bp.Sequential(bp.Dense(3, 4), dtype="float64", seed=0)
    results = []
    for target in (labels, np.eye(4)[labels]):
        loss = bp.CrossEntropyLoss()
        results.append((loss(net(x), target), bp.to_numpy(loss.backward()),
                        bp.evaluate(net, x, target, loss=bp.CrossEntropyLoss())))
    np.testing.assert_array_equal(results[0][1], results[1][1])
    assert results[0][0] == pytest.approx(results[1][0], rel=1e-15)
    assert results[0][2]["accuracy"] == results[1][2]["accuracy"]
    assert results[0][2]["loss"] == pytest.approx(results[1][2]["loss"], rel=1e-15)


@pytest.mark.parametrize("seed", SEEDS)
def test_layernorm_in_either_mode(seed):
    rng, x = _data(seed, rows=5)
    net = bp.Sequential(bp.Dense(3, 6, activation="tanh"), bp.LayerNorm(6), bp.Dense(6, 2), dtype="float64", seed=seed)
    net.layers[1].gamma.data = rng.uniform(0.5, 1.5, size=6)
    net.layers[1].beta.data = rng.normal(size=6)
    y = rng.normal(size=(5, 2))
    assert bp.gradcheck(net.train(), bp.MSELoss(), x, y) < TOLERANCE
    assert bp.gradcheck(net.eval(), bp.MSELoss(), x, y) < TOLERANCE
    assert bp.gradcheck(net, bp.MSELoss(), x[:1], y[:1]) < TOLERANCE  # one row is fine: no batch statistics


@pytest.mark.parametrize("seed", SEEDS)
def test_examples_of_any_rank_flow_through_flatten_and_layernorm(seed):
    """Examples of shape (2, 3, 4): LayerNorm over the last axis, then Flatten into a Dense."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(3, 2, 3, 4))
    net = bp.Sequential(bp.LayerNorm(4), bp.Flatten(), bp.Dense(24, 2), dtype="float64", seed=seed,
                        input_shape=(2, 3, 4))
    assert net.output_shape == (2,) and "(None, 2, 3, 4)" in net.summary()
    assert bp.gradcheck(net, bp.MSELoss(), x, rng.normal(size=(3, 2))) < TOLERANCE
    history = bp.fit(net, rng.normal(size=(32, 2, 3, 4)), rng.normal(size=(32, 2)), loss=bp.MSELoss(), epochs=3,
                     batch_size=8, progress=False)
    assert history["loss"][-1] < history["loss"][0]
    assert bp.predict(net, x).shape == (3, 2)


@pytest.mark.parametrize("seed", SEEDS)
def test_dropout_with_its_mask_fixed(seed):
    rng, x = _data(seed, rows=8)
    net = bp.Sequential(bp.Dense(3, 6, activation="relu"), bp.Dropout(0.4), bp.Dense(6, 2),
                        dtype="float64", seed=seed).train()
    assert bp.gradcheck(net, bp.MSELoss(), x, rng.normal(size=(8, 2))) < TOLERANCE


@pytest.mark.parametrize("seed", SEEDS)
def test_batchnorm_in_training_mode(seed):
    rng, x = _data(seed, rows=7)
    net = bp.Sequential(bp.Dense(3, 5, activation="tanh"), bp.BatchNorm(5), bp.Dense(5, 2),
                        dtype="float64", seed=seed).train()
    net.layers[1].gamma.data = rng.uniform(0.5, 1.5, size=5)
    net.layers[1].beta.data = rng.normal(size=5)
    assert bp.gradcheck(net, bp.CrossEntropyLoss(), x, rng.integers(0, 2, size=7)) < TOLERANCE


@pytest.mark.parametrize("seed", SEEDS)
def test_batchnorm_in_eval_mode(seed):
    """After fit (which ends in eval mode) the running statistics are constants of the forward."""
    rng, x = _data(seed, rows=7)
    net = bp.Sequential(bp.Dense(3, 5, activation="tanh"), bp.BatchNorm(5), bp.Dense(5, 2),
                        dtype="float64", seed=seed)
    bp.fit(net, rng.normal(size=(20, 3)), rng.integers(0, 2, size=20), loss=bp.CrossEntropyLoss(), epochs=2,
           batch_size=5, progress=False)
    assert net.training is False and not np.all(net.layers[1].running_var == 1.0)
    assert bp.gradcheck(net, bp.CrossEntropyLoss(), x, rng.integers(0, 2, size=7)) < TOLERANCE


def test_l1_and_l2_penalties_are_in_the_gradient():
    rng, x = _data(0)
    net = bp.Sequential(bp.Dense(3, 4, activation="sigmoid", l1=0.05, l2=0.1), bp.Dense(4, 1, l2=0.3),
                        dtype="float64", seed=0)
    assert net.penalty() > 0
    assert bp.gradcheck(net, bp.MSELoss(), x, rng.normal(size=(6, 1))) < TOLERANCE


NETWORKS = {
    1: lambda: [bp.Dense(3, 2)],
    2: lambda: [bp.Dense(3, 6, activation="gelu"), bp.Dense(6, 2)],
    3: lambda: [bp.Dense(3, 6, activation="relu"), bp.Dense(6, 5, activation="sigmoid"), bp.Dense(5, 2)],
    4: lambda: [bp.Dense(3, 8, activation="leaky_relu"), bp.Dense(8, 6, activation="tanh"),
                bp.Dense(6, 4, activation="gelu"), bp.Dense(4, 2)],
}


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("depth", sorted(NETWORKS))
def test_networks_of_depth_1_to_4(depth, seed, dtype):
    """A float32 network is checked on its float64 copy: the analytic gradients are the network's own."""
    rng, x = _data(seed)
    net = bp.Sequential(*NETWORKS[depth](), dtype=dtype, seed=seed)
    before = bp.to_numpy(net.store.data).copy()
    assert bp.gradcheck(net, bp.CrossEntropyLoss(), x, rng.integers(0, 2, size=6)) < TOLERANCE
    np.testing.assert_array_equal(bp.to_numpy(net.store.data), before)  # the check changes nothing


def test_gradcheck_catches_a_wrong_derivative(monkeypatch):
    """If tanh's derivative were off by 1 %, the check must say so: it is not a test that cannot fail."""
    original = NumpyBackend.activation_backward

    def slightly_wrong(self, grad_y, y, pre, activation, slope=0.01, out=None):
        result = original(self, grad_y, y, pre, activation, slope, out)
        return result * 1.01 if activation == "tanh" else result

    monkeypatch.setattr(NumpyBackend, "activation_backward", slightly_wrong)
    rng, x = _data(0)
    net = bp.Sequential(bp.Dense(3, 4, activation="tanh"), bp.Dense(4, 1), dtype="float64", seed=0)
    assert bp.gradcheck(net, bp.MSELoss(), x, rng.normal(size=(6, 1))) > 1e-3


def test_backward_returns_input_gradient_and_overwrites_grads():
    rng, x = _data(0)
    net = bp.Sequential(bp.Dense(3, 4, activation="sigmoid"), bp.Dense(4, 1, activation="sigmoid"),
                        dtype="float64", seed=0)
    loss_fn = bp.BCELoss()
    y = np.ones((6, 1))
    loss_fn(net(x), y)
    assert net.backward(loss_fn.backward()) is None  # as PyTorch's loss.backward()
    grad_x = net.backward(loss_fn.backward(), input_grad=True)
    first = [p.grad.copy() for p in net.parameters()]
    loss_fn(net(x), y)
    net.backward(loss_fn.backward())  # a second backward overwrites, it does not accumulate
    for p, g in zip(net.parameters(), first):
        np.testing.assert_array_equal(p.grad, g)
    assert grad_x.shape == x.shape
