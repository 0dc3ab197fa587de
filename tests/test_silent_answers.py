"""Calls that could give a wrong answer without a word refuse, or give the right one:
cross-entropy on one output, one layer object in two places, values finite in float64 but not
in the network's dtype, a learning rate whose update overflows, NaN assigned to a parameter,
and arrays that change after the network was given them."""

from __future__ import annotations

import numpy as np
import pytest

import backprop as bp

rng = np.random.default_rng(0)
X = rng.normal(size=(32, 3))
Y = (X[:, 0] > 0).astype(int)


def weights(net) -> bytes:
    return net.store.data.tobytes()


@pytest.mark.parametrize("call", ["fit", "evaluate", "loss"])
def test_cross_entropy_on_one_output_is_refused_naming_the_fix(call):
    """One logit has softmax 1 whatever it is: the network would train nothing and report
    loss -0.0 and accuracy 1.0."""
    net = bp.Sequential(bp.Dense(3, 1), seed=0)
    before = weights(net)
    run = {"fit": lambda: bp.fit(net, X, Y, loss=bp.CrossEntropyLoss(), epochs=1, progress=False),
           "evaluate": lambda: bp.evaluate(net, X, Y, loss=bp.CrossEntropyLoss()),
           "loss": lambda: bp.CrossEntropyLoss()(np.zeros((4, 1)), [0, 1, 0, 5])}[call]
    with pytest.raises(ValueError, match="CrossEntropyLoss needs one output per class, at least 2, but the network has 1; "
                                         "give the last layer 2 outputs, or use BCEWithLogitsLoss with 1"):
        run()
    assert weights(net) == before


def test_one_layer_object_in_two_places_is_refused():
    dense = bp.Dense(3, 3, activation="tanh")
    with pytest.raises(ValueError, match=r"layer 1 is the same object as layer 0 .*create another"):
        bp.Sequential(dense, dense)
    assert dense.backend is None  # and it is still free to join a network


@pytest.mark.parametrize("call", ["predict", "forward", "fit", "evaluate", "backward"])
def test_values_finite_in_float64_but_not_in_float32_are_refused(call):
    net = bp.Sequential(bp.Dense(3, 2), seed=0)  # float32
    huge = X.copy()
    huge[5, 1] = 1e308
    run = {"predict": lambda: bp.predict(net, huge),
           "forward": lambda: net(huge),
           "fit": lambda: bp.fit(net, huge, Y, loss=bp.CrossEntropyLoss(), epochs=1, progress=False),
           "evaluate": lambda: bp.evaluate(net, huge, Y, loss=bp.CrossEntropyLoss()),
           "backward": lambda: net.backward(np.full((32, 2), 1e300))}[call]
    if call == "backward":
        net(X)
        match = r"grad_output must be finite in float32, the network's dtype, but grad_output\[0, 0\] is 1e\+300"
    else:
        match = r"must be finite in float32, the network's dtype, but (X|x)\[5, 1\] is 1e\+308, which overflows it"
    before = weights(net)
    with pytest.raises(ValueError, match=match):
        run()
    assert weights(net) == before


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_a_learning_rate_whose_first_update_overflows_leaves_the_weights_as_they_were(optimizer):
    """Finite loss, finite gradients, and an update that overflows float32: refused after the
    step with the weights and optimizer state put back as they were."""
    net = bp.Sequential(bp.Dense(3, 4, activation="tanh"), bp.Dense(4, 2), seed=0)
    opt = bp.SGD(net.parameters(), lr=1e38) if optimizer == "sgd" else bp.Adam(net.parameters(), lr=1e38)
    before = weights(net), [bytes(b.tobytes()) for b in opt.state.values()], opt.step_count
    with pytest.raises(bp.TrainingDivergedError, match=r"epoch 1, batch 1: the update overflows the weights "
                                                        r"\(lr=1e\+38 is too large for float32\)"):
        bp.fit(net, X, np.full((32, 2), 1e6), loss=bp.MSELoss(), optimizer=opt, epochs=1, batch_size=8, progress=False)
    assert (weights(net), [bytes(b.tobytes()) for b in opt.state.values()], opt.step_count) == before
    assert np.isfinite(net.store.data).all()


def test_nan_assigned_to_a_parameter_is_refused():
    net = bp.Sequential(bp.Dense(3, 2), seed=0)
    before = weights(net)
    bad = np.zeros((3, 2))
    bad[1, 1] = np.nan
    with pytest.raises(ValueError, match=r"layers.0.weight.data must be finite in float32, but the assigned value "
                                         r"holds NaN or inf, or values too large for it"):
        net.layers[0].weight.data = bad
    with pytest.raises(ValueError, match="must be finite"):
        net.layers[0].bias.data = [0.0, np.inf]
    with pytest.raises(ValueError, match="must be finite in float32"):  # finite in float64, inf in float32
        net.layers[0].bias.data = np.full(2, 1e308)
    assert weights(net) == before


def test_changing_x_after_forward_does_not_change_the_gradients():
    """The network keeps its own copy of x: the gradients are those of the x it was given."""
    net = bp.Sequential(bp.Dense(3, 2), dtype="float64", seed=0)
    x = X[:8].copy()  # already the network's dtype: the case that kept a reference
    loss = bp.MSELoss()
    loss(net(x), np.zeros((8, 2)))
    x *= 100.0
    net.backward(loss.backward())
    got = net.layers[0].weight.grad.copy()
    loss(net(X[:8]), np.zeros((8, 2)))
    net.backward(loss.backward())
    np.testing.assert_array_equal(got, net.layers[0].weight.grad)


@pytest.mark.parametrize("what", ["parameters", "gradients", "optimizer state"])
def test_fit_on_data_that_overlaps_the_networks_buffers_is_refused(what):
    net = bp.Sequential(bp.Dense(3, 2), bp.BatchNorm(2), dtype="float32", seed=0)
    opt = bp.Adam(net.parameters())
    source = {"parameters": net.store.data, "gradients": net.store.grad, "optimizer state": opt.state["exp_avg"]}[what]
    X_alias = source[:12].reshape(4, 3)  # float32 and C-contiguous: fit would take it as it is
    before = weights(net)
    with pytest.raises(ValueError, match=r"X shares memory with the network's own buffers .*pass a copy \(X.copy\(\)\)"):
        bp.fit(net, X_alias, np.zeros((4, 2)), loss=bp.MSELoss(), optimizer=opt, epochs=1, progress=False)
    assert weights(net) == before


def test_a_network_refused_while_being_built_leaves_its_layers_free_to_reuse():
    first, second = bp.Dense(3, 4, activation="tanh"), bp.Dense(5, 2)  # 4 outputs feed 5 inputs
    with pytest.raises(ValueError, match="layer 1 .*expects 5 inputs but the layer before it gives 4"):
        bp.Sequential(first, second)
    net = bp.Sequential(first, bp.Dense(4, 2), seed=0)  # the refusal changed nothing in `first`
    assert net.layers[0] is first and first.weight.shape == (3, 4) and len(first.parameters()) == 2


def test_a_network_too_large_for_memory_says_how_large_and_leaves_its_layers_free():
    huge = bp.Dense(10**7, 10**7)
    with pytest.raises(MemoryError, match=r"a network of 100,000,010,000,000 parameters does not fit in the memory "
                                          r"of cpu"):
        bp.Sequential(huge)
    assert huge.backend is None and not huge.parameters()


def test_an_update_overflowing_after_the_first_step_is_reported_truthfully():
    """The first step at a learning rate is undone when its update overflows; a later one is not
    (a copy of every weight each step would cost too much), so fit says what the network holds,
    and never returns with non-finite weights."""
    X = np.array([[1e-3], [1e18], [1.0]])
    y = np.zeros((3, 1))
    for rows in (3, 2):  # with a third step to notice it, and with the epoch ending first
        net = bp.Sequential(bp.Dense(1, 1), seed=0)  # float32: the second update overflows it
        with pytest.raises(bp.TrainingDivergedError, match=r"an update overflowed the weights, which are not finite "
                                                            r"now .*reload or rebuild the network"):
            bp.fit(net, X[:rows], y[:rows], loss=bp.MSELoss(), optimizer=bp.SGD(net.parameters(), lr=1000.0),
                   epochs=1, batch_size=1, shuffle=False, progress=False)
