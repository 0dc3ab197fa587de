"""Training end to end: XOR, the seeds' 3-4-1 example, handwritten digits; fit's contract;
optimizers against torch.optim's update rules; the flat parameter buffer."""

from __future__ import annotations

import math

import numpy as np
import pytest

import backprop as bp

XOR_X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=float)
XOR_Y = np.array([0, 1, 1, 0], dtype=float)


def test_xor_is_learned():
    net = bp.Sequential(bp.Dense(2, 8, activation="tanh"), bp.Dense(8, 1, activation="sigmoid"), seed=0)
    opt = bp.SGD(net.parameters(), lr=0.5, momentum=0.9)
    history = bp.fit(net, XOR_X, XOR_Y, loss=bp.BCELoss(), optimizer=opt, epochs=500, batch_size=4,
                     progress=False, seed=0)
    assert history["accuracy"][-1] == 1.0
    np.testing.assert_array_equal(bp.predict(net, XOR_X).ravel() > 0.5, XOR_Y.astype(bool))


def test_the_worked_example_3_4_1_raises_yhat_every_step():
    """The source text's network: 3-4-1, sigmoid everywhere, BCE, one example with target 1,
    lr 0.5, random weights and zero biases: every update moves yhat toward the target."""
    net = bp.Sequential(bp.Dense(3, 4, activation="sigmoid"), bp.Dense(4, 1, activation="sigmoid"),
                        dtype="float64", seed=7)
    assert net.num_parameters() == 21
    assert all(np.all(layer.bias.data == 0) for layer in net.layers)
    x, y = np.array([[0.6, -0.2, 0.9]]), np.array([[1.0]])
    loss_fn, opt = bp.BCELoss(), bp.SGD(net.parameters(), lr=0.5)
    yhats, losses = [], []
    for _ in range(7):
        yhat = float(net(x)[0, 0])
        losses.append(loss_fn(net(x), y))
        yhats.append(yhat)
        net.backward(loss_fn.backward())
        opt.step()
    assert all(b > a for a, b in zip(yhats, yhats[1:])), yhats
    assert all(b < a for a, b in zip(losses, losses[1:])), losses
    assert math.isclose(losses[0], -math.log(yhats[0]), rel_tol=1e-12)


@pytest.mark.slow
def test_handwritten_digits_reach_97_percent_median():
    from backprop.apps.data import load_digits_split

    accuracies = []
    for seed in (1, 2, 3):
        X_train, y_train, X_val, y_val, X_test, y_test = load_digits_split(seed=seed)
        net = bp.Sequential(bp.Dense(64, 128, activation="relu"), bp.Dense(128, 10), seed=seed)
        bp.fit(net, X_train, y_train, loss=bp.CrossEntropyLoss(), optimizer=bp.Adam(net.parameters()),
               epochs=60, batch_size=32, validation_data=(X_val, y_val), early_stopping=10, progress=False,
               seed=seed)
        accuracies.append(bp.evaluate(net, X_test, y_test, loss=bp.CrossEntropyLoss())["accuracy"])
    assert np.median(accuracies) >= 0.97, accuracies


# ---------------------------------------------------------------------- fit's contract


def _counting_optimizer(net):
    opt = bp.SGD(net.parameters(), lr=0.01)
    opt.calls = 0
    update = opt.update  # what fit calls every step (step() adds the checks a user's call needs)

    def counted():
        opt.calls += 1
        update()

    opt.update = counted
    return opt


def test_epoch_batch_iteration_vocabulary():
    """2000 examples with batch 20 is 100 iterations per epoch (the seeds' definition)."""
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(2000, 3)), rng.normal(size=(2000, 1))
    net = bp.Sequential(bp.Dense(3, 1), seed=0)
    opt = _counting_optimizer(net)
    history = bp.fit(net, X, y, loss=bp.MSELoss(), optimizer=opt, epochs=2, batch_size=20, progress=False)
    assert opt.calls == 200 and history.epochs == 2 and len(history["loss"]) == 2


def test_history_is_a_batch_size_weighted_mean():
    """With lr=0 nothing changes, so the epoch's loss must equal the loss over the whole data."""
    rng = np.random.default_rng(1)
    X, y = rng.normal(size=(10, 3)), rng.normal(size=(10, 2))
    net = bp.Sequential(bp.Dense(3, 2), dtype="float64", seed=0)
    history = bp.fit(net, X, y, loss=bp.MSELoss(), optimizer=bp.SGD(net.parameters(), lr=0.0),
                     epochs=1, batch_size=4, shuffle=False, progress=False)  # batches of 4, 4, 2
    whole = bp.MSELoss()(net(X), y)
    assert history["loss"][0] == pytest.approx(whole, rel=1e-12)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_reported_loss_includes_the_penalty_and_equals_evaluate(reduction):
    """With lr=0 the epoch's loss is the whole data's loss, under either reduction, as evaluate()
    and the validation loss report it: the penalty counted once, whatever the batch count."""
    rng = np.random.default_rng(2)
    X, y = rng.normal(size=(10, 3)), rng.normal(size=(10, 1))
    loss = bp.MSELoss(reduction=reduction)
    net = bp.Sequential(bp.Dense(3, 1, l1=0.1, l2=0.2), dtype="float64", seed=0)
    history = bp.fit(net, X, y, loss=loss, optimizer=bp.SGD(net.parameters(), lr=0.0), epochs=1,
                     batch_size=4, validation_data=(X, y), progress=False)
    w = net.layers[0].weight.data
    penalty = 0.1 * np.abs(w).sum() + 0.2 * (w**2).sum()
    assert net.penalty() == pytest.approx(penalty)
    whole = loss(net(X), y) + penalty
    assert history["loss"][0] == pytest.approx(whole, rel=1e-12)
    assert history["val_loss"][0] == pytest.approx(whole, rel=1e-12)
    assert bp.evaluate(net, X, y, loss=loss)["loss"] == pytest.approx(whole, rel=1e-12)


def test_accuracy_of_logits_against_soft_targets():
    """BCEWithLogitsLoss cuts logits at 0 and targets at 0.5, as BCELoss cuts both at 0.5."""
    X, y = np.zeros((4, 1)), np.array([[0.2], [0.2], [0.9], [0.9]])
    logits = bp.Sequential(bp.Dense(1, 1, init="zeros"), dtype="float64", seed=0)
    probs = bp.Sequential(bp.Dense(1, 1, activation="sigmoid", init="zeros"), dtype="float64", seed=0)
    logits.layers[0].bias.data = np.array([-3.0])  # predicts "negative" for every row
    probs.layers[0].bias.data = np.array([-3.0])
    a = bp.evaluate(logits, X, y, loss=bp.BCEWithLogitsLoss())["accuracy"]
    b = bp.evaluate(probs, X, y, loss=bp.BCELoss())["accuracy"]
    assert a == b == 0.5


def test_validation_and_accuracy_are_recorded_and_fit_ends_in_eval_mode():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(60, 4))
    y = (X[:, 0] > 0).astype(int)
    net = bp.Sequential(bp.Dense(4, 8, activation="relu"), bp.Dense(8, 2), seed=0)
    history = bp.fit(net, X, y, loss=bp.CrossEntropyLoss(), epochs=3, batch_size=16,
                     validation_split=0.25, progress=False, seed=0)
    assert set(history.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert all(0 <= a <= 1 for a in history["val_accuracy"])
    assert net.training is False


def test_early_stopping_restores_the_best_weights():
    rng = np.random.default_rng(4)
    X = rng.normal(size=(40, 3))
    y = X @ np.array([[1.0], [-2.0], [0.5]])
    X_val, y_val = rng.normal(size=(20, 3)), rng.normal(size=(20, 1)) * 5  # unlearnable: val loss wanders
    net = bp.Sequential(bp.Dense(3, 16, activation="tanh"), bp.Dense(16, 1), dtype="float64", seed=0)
    opt = bp.SGD(net.parameters(), lr=0.05)
    history = bp.fit(net, X, y, loss=bp.MSELoss(), optimizer=opt, epochs=200, batch_size=8,
                     validation_data=(X_val, y_val), early_stopping=3, progress=False, seed=0)
    assert history.stopped_early and history.epochs < 200
    best = int(np.argmin(history["val_loss"]))
    assert history.best_epoch == best + 1
    restored = bp.evaluate(net, X_val, y_val, loss=bp.MSELoss())["loss"]
    assert restored == pytest.approx(history["val_loss"][best], rel=1e-9)


def test_schedules_follow_pytorch_closed_forms():
    net = bp.Sequential(bp.Dense(2, 1), seed=0)
    opt = bp.SGD(net.parameters(), lr=1.0)
    step = bp.StepLR(opt, step_size=2, gamma=0.5)
    seen = []
    for _ in range(5):
        step.step()
        seen.append(opt.lr)
    assert seen == [1.0, 0.5, 0.5, 0.25, 0.25]
    opt2 = bp.SGD(net.parameters(), lr=0.1)
    cosine = bp.CosineAnnealingLR(opt2, T_max=4, eta_min=0.0)
    for _ in range(4):
        cosine.step()
    assert opt2.lr == pytest.approx(0.0, abs=1e-15)
    opt3 = bp.SGD(net.parameters(), lr=2.0)
    exp = bp.ExponentialLR(opt3, gamma=0.9)
    exp.step(), exp.step()
    assert opt3.lr == pytest.approx(2.0 * 0.81)


# ---------------------------------------------------------------------- optimizers = torch.optim


def _trajectory(make_opt, steps=4):
    """Parameters after each step of `make_opt` on a fixed sequence of gradients."""
    net = bp.Sequential(bp.Dense(3, 2), dtype="float64", seed=0)
    rng = np.random.default_rng(5)
    start = net.store.data.copy()
    grads = [rng.normal(size=net.store.size) for _ in range(steps)]
    opt = make_opt(net.parameters())
    out = []
    for g in grads:
        net.store.grad[...] = g
        opt.step()
        out.append(net.store.data.copy())
    return start, grads, out


def _torch_sgd(p, grads, lr, momentum=0.0, dampening=0.0, nesterov=False, wd=0.0):
    """torch.optim.SGD's algorithm, transcribed from its documentation."""
    buf, out = None, []
    for g in grads:
        g = g + wd * p
        if momentum:
            buf = g.copy() if buf is None else momentum * buf + (1 - dampening) * g
            g = g + momentum * buf if nesterov else buf
        p = p - lr * g
        out.append(p)
    return out


def _torch_adam(p, grads, lr, b1, b2, eps, wd, decoupled):
    """torch.optim.Adam / AdamW's algorithm, transcribed from their documentation."""
    m, v, out = np.zeros_like(p), np.zeros_like(p), []
    for t, g in enumerate(grads, start=1):
        if decoupled:
            p = p * (1 - lr * wd)
        else:
            g = g + wd * p
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        m_hat, v_hat = m / (1 - b1**t), v / (1 - b2**t)
        p = p - lr * m_hat / (np.sqrt(v_hat) + eps)
        out.append(p)
    return out


@pytest.mark.parametrize("kwargs", [dict(lr=0.1), dict(lr=0.1, momentum=0.9), dict(lr=0.05, momentum=0.8, wd=0.01),
                                    dict(lr=0.1, momentum=0.9, nesterov=True), dict(lr=0.1, momentum=0.5, dampening=0.3)])
def test_sgd_matches_torch(kwargs):
    wd = kwargs.pop("wd", 0.0)
    start, grads, ours = _trajectory(lambda ps: bp.SGD(ps, weight_decay=wd, **kwargs))
    theirs = _torch_sgd(start, grads, wd=wd, **kwargs)
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("cls,wd", [(bp.Adam, 0.0), (bp.Adam, 0.1), (bp.AdamW, 0.1)])
def test_adam_and_adamw_match_torch(cls, wd):
    start, grads, ours = _trajectory(lambda ps: cls(ps, lr=0.01, betas=(0.8, 0.99), eps=1e-6, weight_decay=wd))
    theirs = _torch_adam(start, grads, 0.01, 0.8, 0.99, 1e-6, wd, decoupled=cls is bp.AdamW)
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-14)


def test_optimizer_on_a_subset_updates_only_those_parameters():
    net = bp.Sequential(bp.Dense(3, 4), bp.Dense(4, 2), dtype="float64", seed=0)
    net.store.grad[...] = 1.0
    first = net.layers[0].weight.data.copy()
    bp.SGD(net.layers[1].parameters(), lr=0.5).step()
    np.testing.assert_array_equal(net.layers[0].weight.data, first)
    assert np.all(net.layers[1].bias.data == -0.5)


# ---------------------------------------------------------------------- network and parameters


def test_parameters_are_views_into_one_flat_buffer():
    net = bp.Sequential(bp.Dense(3, 4, activation="relu"), bp.Dense(4, 2), seed=0)
    w = net.layers[0].weight
    assert w.data.shape == (3, 4) and net.layers[0].bias.data.shape == (4,)
    w.data = np.full((3, 4), 2.0)
    assert np.all(net.store.data[:12] == 2.0)
    w.data[0, 0] = 5.0
    assert net.store.data[0] == 5.0
    with pytest.raises(ValueError, match=r"layers.0.weight.data has shape \(3, 4\).*\(4, 3\)"):
        w.data = np.zeros((4, 3))
    assert sum(p.size for p in net.parameters()) == net.num_parameters() == 3 * 4 + 4 + 4 * 2 + 2


def test_same_seed_same_weights_on_every_dtype():
    a = bp.Sequential(bp.Dense(5, 3, activation="tanh"), bp.Dense(3, 1), seed=42, dtype="float64")
    b = bp.Sequential(bp.Dense(5, 3, activation="tanh"), bp.Dense(3, 1), seed=42, dtype="float32")
    np.testing.assert_array_equal(a.store.data.astype(np.float32), b.store.data)
    c = bp.Sequential(bp.Dense(5, 3, activation="tanh"), bp.Dense(3, 1), seed=43)
    assert not np.array_equal(b.store.data, c.store.data)


def test_initialization_suits_the_activation():
    rng_layer = bp.Sequential(bp.Dense(400, 300, activation="relu"), bp.Dense(300, 200, activation="tanh"), seed=0)
    he, glorot = rng_layer.layers[0].weight.data, rng_layer.layers[1].weight.data
    assert he.std() == pytest.approx(math.sqrt(2 / 400), rel=0.02)
    assert np.abs(glorot).max() <= math.sqrt(6 / 500) and glorot.std() == pytest.approx(math.sqrt(2 / 500), rel=0.02)


def test_layers_that_do_not_chain_are_refused():
    with pytest.raises(ValueError, match="layer 1 .* expects 5 inputs but the layer before it gives 4"):
        bp.Sequential(bp.Dense(3, 4), bp.Dense(5, 1))


def test_softmax_output_with_cross_entropy_is_refused():
    net = bp.Sequential(bp.Dense(3, 4, activation="softmax"), seed=0)
    with pytest.raises(ValueError, match="already has activation='softmax'"):
        bp.fit(net, np.zeros((2, 3)), [0, 1], loss=bp.CrossEntropyLoss(), progress=False)


def test_summary_and_to_cpu():
    net = bp.Sequential(bp.Dense(64, 32, activation="relu"), bp.Dropout(0.1), bp.Dense(32, 10), seed=0)
    text = net.summary()
    assert "cpu" in text and "float32" in text and "2,410" in text and "Dropout" in text
    assert net.to("cpu") is net


def test_predict_is_batched_numpy_and_eval_mode():
    rng = np.random.default_rng(6)
    net = bp.Sequential(bp.Dense(3, 8, activation="relu"), bp.Dropout(0.5), bp.Dense(8, 4), seed=0)
    X = rng.normal(size=(50, 3))
    out = bp.predict(net, X, batch_size=7)
    assert isinstance(out, np.ndarray) and out.shape == (50, 4)
    np.testing.assert_allclose(out, bp.predict(net, X, batch_size=50), rtol=1e-6)  # dropout off
    probs = bp.predict(net, X, activation="softmax")
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-6)
    assert net.training is True  # predict restores the mode it found


def test_public_calls_return_arrays_the_caller_owns():
    net = bp.Sequential(bp.Dense(3, 2), seed=0)
    first = net(np.ones((4, 3)))
    kept = first.copy()
    grad_x = net.backward(np.ones((4, 2)), input_grad=True)
    kept_grad = grad_x.copy()
    weights = bp.to_numpy(net.layers[0].weight.data)
    kept_weights = weights.copy()
    net(np.zeros((4, 3)))
    net.backward(np.full((4, 2), 3.0), input_grad=True)
    net.layers[0].weight.data = np.zeros((3, 2))
    np.testing.assert_array_equal(first, kept)
    np.testing.assert_array_equal(grad_x, kept_grad)
    np.testing.assert_array_equal(weights, kept_weights)


def test_backward_after_predict_is_refused_not_silently_wrong():
    """predict/evaluate/fit run their own forwards, which replace the activations backward needs."""
    net = bp.Sequential(bp.Dense(3, 4, activation="tanh"), bp.Dense(4, 1), seed=0)
    loss_fn = bp.MSELoss()
    loss_fn(net(np.ones((5, 3))), np.zeros((5, 1)))
    bp.predict(net, np.zeros((5, 3)))
    with pytest.raises(RuntimeError, match="backward needs a forward"):
        net.backward(loss_fn.backward())


def test_early_stopping_restores_weights_but_dropout_keeps_counting():
    """Restoring the best epoch's weights must not rewind the dropout step counter: a later fit
    would otherwise replay masks already used."""
    rng = np.random.default_rng(4)
    X, y = rng.normal(size=(32, 3)), rng.normal(size=(32, 1))
    net = bp.Sequential(bp.Dense(3, 8, activation="relu"), bp.Dropout(0.3), bp.Dense(8, 1), seed=0)
    history = bp.fit(net, X, y, loss=bp.MSELoss(), optimizer=bp.SGD(net.parameters(), lr=0.05), epochs=30,
                     batch_size=8, validation_data=(rng.normal(size=(8, 3)), rng.normal(size=(8, 1)) * 9),
                     early_stopping=2, progress=False)
    assert history.stopped_early and history.best_epoch < history.epochs
    assert net.layers[1].step == history.epochs * 4  # 4 steps per epoch, every one counted


def test_a_callback_ends_fit_after_the_epoch_it_sets_stop_training_in():
    class StopAtLossBelow(bp.Callback):
        def __init__(self, threshold):
            self.threshold, self.epochs = threshold, []

        def on_epoch_end(self, epoch, metrics):
            self.epochs.append(epoch)
            self.stop_training = metrics["loss"] < self.threshold

    rng = np.random.default_rng(3)
    X, y = rng.normal(size=(64, 3)), rng.integers(0, 2, size=64)
    net = bp.Sequential(bp.Dense(3, 8, activation="relu"), bp.Dense(8, 2), seed=0)
    full = bp.fit(bp.Sequential(bp.Dense(3, 8, activation="relu"), bp.Dense(8, 2), seed=0), X, y,
                  loss=bp.CrossEntropyLoss(), epochs=30, progress=False)
    threshold = full["loss"][9]  # reached at epoch 11 (the losses fall)
    stopper = StopAtLossBelow(threshold + 1e-12)
    history = bp.fit(net, X, y, loss=bp.CrossEntropyLoss(), epochs=30, progress=False, callbacks=[stopper])
    first_below = next(i for i, value in enumerate(full["loss"], start=1) if value < threshold + 1e-12)
    assert history.epochs == first_below == stopper.epochs[-1] and history.stopped_early
    assert history["loss"] == full["loss"][:first_below]


@pytest.mark.parametrize("loss, last, y", [
    (bp.MSELoss(), None, np.arange(20).reshape(10, 2) % 3),
    (bp.MSELoss(), "relu", np.arange(20).reshape(10, 2) % 3),
    (bp.HuberLoss(), None, np.arange(20).reshape(10, 2) % 3),
    (bp.BCEWithLogitsLoss(), None, np.arange(20).reshape(10, 2) % 2),
    (bp.HingeLoss(), "tanh", 2 * (np.arange(20).reshape(10, 2) % 2) - 1),
    (bp.CrossEntropyLoss(), None, np.eye(2, dtype=np.int64)[np.arange(10) % 2]),
], ids=["mse", "mse-relu", "huber", "bce-logits", "hinge", "cross-entropy-one-hot"])
def test_integer_targets_train_as_numbers_of_the_networks_dtype(loss, last, y):
    """Integer y (counts, 0/1 flags, -1/+1, one-hot rows) is a target of numbers: it trains a
    float32 network as the same values in float would (only cross-entropy's one label per row
    stays integer)."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(10, 3))
    nets = [bp.Sequential(bp.Dense(3, 4, activation="tanh"), bp.Dense(4, 2, activation=last), seed=1) for _ in range(2)]
    runs = [bp.fit(net, X, target, loss=loss, epochs=2, batch_size=4, progress=False)
            for net, target in zip(nets, (y, y.astype(np.float32)))]
    assert runs[0].history == runs[1].history
    np.testing.assert_array_equal(nets[0].store.data, nets[1].store.data)
    assert bp.evaluate(nets[0], X, y, loss=loss) == bp.evaluate(nets[1], X, y.astype(np.float32), loss=loss)
