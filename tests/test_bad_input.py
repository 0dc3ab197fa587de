"""Bad input at every entry point ends well: a ValueError or TypeError whose message names the
argument, what was expected and what came, raised before anything changes. After each refused
call the network's flat parameters and gradients, its layer state (dropout step counters,
BatchNorm running statistics) and the optimizer's state are bit-for-bit what they were.
"""

from __future__ import annotations

import numpy as np
import pytest

import backprop as bp

rng = np.random.default_rng(0)
X = rng.normal(size=(12, 3))
Y = np.arange(12) % 2  # labels of 2 classes
CE = bp.CrossEntropyLoss()


def with_nan(array, where):
    bad = np.array(array, dtype=float)
    bad[where] = np.nan
    return bad


def trained_pair():
    """A network with every kind of state, one epoch in: Adam moments, dropout counters and
    running statistics all differ from their initial values, so any write would show."""
    net = bp.Sequential(bp.Dense(3, 4, activation="relu"), bp.Dropout(0.25), bp.BatchNorm(4),
                        bp.Dense(4, 2), seed=0)
    opt = bp.Adam(net.parameters(), lr=0.01)
    bp.fit(net, X, Y, loss=CE, optimizer=opt, epochs=1, batch_size=4, progress=False)
    net.train()  # in training mode a forward that ran before its check would move the counters
    return net, opt


def fingerprint(net, opt) -> list:
    """Everything a refused call must leave alone, as bytes."""
    parts = [net.store.data.tobytes(), net.store.grad.tobytes(), net.training, net.epochs_trained,
             opt.step_count, opt.lr]
    for layer in net.layers:
        parts += [(key, np.asarray(value).tobytes()) for key, value in sorted(layer.state().items())]
    parts += [(name, buf.tobytes()) for name, buf in sorted(opt.state.items())]
    return parts


def fit(net, opt, X=X, y=Y, **kwargs):
    kwargs.setdefault("loss", CE)
    return bp.fit(net, X, y, optimizer=opt, epochs=2, batch_size=4, progress=False, **kwargs)


def other_net():
    return bp.Sequential(bp.Dense(3, 2), seed=1)


def forward_first(net, opt, tmp):
    net.forward(X)


def saved_file(net, opt, tmp):
    bp.save(net, tmp / "model.safetensors")


def case(id, call, error, match, setup=None):
    return pytest.param(call, error, match, setup, id=id)


V, T = ValueError, TypeError
CASES = [
    # ---- building a network
    case("Sequential-empty", lambda n, o, t: bp.Sequential(), V, "Sequential needs at least one layer, got none"),
    case("Sequential-not-a-layer", lambda n, o, t: bp.Sequential("dense"), T, "layer 0 must be a backprop layer.*got str"),
    case("Sequential-chain", lambda n, o, t: bp.Sequential(bp.Dense(3, 4), bp.Dense(5, 2)), V,
         "layer 1 .* expects 5 inputs but the layer before it gives 4"),
    case("Sequential-reused-layer", lambda n, o, t: bp.Sequential(n.layers[0]), V, "layer 0 .* already belongs to a network"),
    case("Sequential-seed", lambda n, o, t: bp.Sequential(bp.Dense(3, 2), seed=-1), V, "seed must be a non-negative integer or None, got -1"),
    case("Sequential-dtype", lambda n, o, t: bp.Sequential(bp.Dense(3, 2), dtype="float16"), V,
         "dtype must be 'float32' or 'float64', got 'float16'"),
    case("Sequential-device", lambda n, o, t: bp.Sequential(bp.Dense(3, 2), device="tpu"), V,
         "device must be 'cpu', 'cuda', 'cuda:N' or 'auto', got 'tpu'"),
    case("Sequential-device-type", lambda n, o, t: bp.Sequential(bp.Dense(3, 2), device=0), T, "device must be a string .*got int 0"),
    case("get_backend-device", lambda n, o, t: bp.get_backend("cuda:x"), V, "device must be .*got 'cuda:x'"),
    case("get_backend-dtype", lambda n, o, t: bp.get_backend("cpu", "int32"), V, "dtype must be .*got 'int32'"),
    case("to-device", lambda n, o, t: n.to("gpu0"), V, "device must be .*got 'gpu0'"),
    # ---- layers
    case("Dense-in_features", lambda n, o, t: bp.Dense(0, 4), V, "in_features must be an integer >= 1, got 0"),
    case("Dense-out_features-type", lambda n, o, t: bp.Dense(3, "4"), T, "out_features must be an integer >= 1, got str '4'"),
    case("Dense-out_features-float", lambda n, o, t: bp.Dense(3, 2.5), T, "out_features must be an integer >= 1, got float 2.5"),
    case("Dense-activation", lambda n, o, t: bp.Dense(3, 4, activation="swish"), V,
         r"activation 'swish' is not registered in this process \(known: .*'relu'.*register your own"),
    case("Dense-activation-type", lambda n, o, t: bp.Dense(3, 4, activation=3), V, "activation must be None or one of .*got 3"),
    case("Dense-l1", lambda n, o, t: bp.Dense(3, 4, l1=-1), V, "l1 must be a finite number >= 0.0, got -1.0"),
    case("Dense-l2-nan", lambda n, o, t: bp.Dense(3, 4, l2=float("nan")), V, "l2 must be a finite number >= 0.0, got nan"),
    case("Dense-init", lambda n, o, t: bp.Dense(3, 4, init="orthogonal"), V, "init must be one of .*got 'orthogonal'"),
    case("Dropout-p", lambda n, o, t: bp.Dropout(1.0), V, r"p must be in \[0.0, 1.0\), got 1.0"),
    case("Dropout-p-type", lambda n, o, t: bp.Dropout("0.5"), T, "p must be a real number, got str '0.5'"),
    case("BatchNorm-features", lambda n, o, t: bp.BatchNorm(0), V, "num_features must be an integer >= 1, got 0"),
    case("BatchNorm-momentum", lambda n, o, t: bp.BatchNorm(4, momentum=1.5), V, r"momentum must be in \[0.0, 1.0\], got 1.5"),
    case("BatchNorm-eps", lambda n, o, t: bp.BatchNorm(4, eps=0), V, "eps must be a finite number > 0.0, got 0.0"),
    case("Parameter-shape", lambda n, o, t: setattr(n.layers[0].weight, "data", np.zeros((4, 3))), V,
         r"layers.0.weight.data has shape \(3, 4\); the assigned value has shape \(4, 3\)"),
    case("Parameter-strings", lambda n, o, t: setattr(n.layers[0].bias, "data", np.array(["a"] * 4)), T,
         "layers.0.bias.data must hold real numbers, got an array of dtype <U1"),
    # ---- losses
    case("loss-reduction", lambda n, o, t: bp.MSELoss(reduction="avg"), V, r"reduction must be one of \('mean', 'sum'\), got 'avg'"),
    case("loss-pred-nan", lambda n, o, t: bp.MSELoss()(with_nan(np.zeros((2, 1)), (1, 0)), [0, 1]), V,
         r"pred must be finite, but pred\[1, 0\] is nan"),
    case("loss-pred-strings", lambda n, o, t: bp.MSELoss()([["a"], ["b"]], [0, 1]), T, "pred must hold real numbers, got .*dtype <U1"),
    case("loss-pred-empty", lambda n, o, t: bp.MSELoss()(np.zeros((0, 1)), []), V,
         r"pred must be a non-empty 2-D array \(rows, outputs\), got shape \(0, 1\)"),
    case("loss-target-rows", lambda n, o, t: bp.MSELoss()(np.zeros((2, 1)), np.zeros((3, 1))), V, "target has 3 rows but pred has 2"),
    case("loss-target-shape", lambda n, o, t: bp.MSELoss()(np.zeros((2, 1)), np.zeros((2, 2))), V,
         r"target must have shape \(2, 1\), a row of 1 per example, got \(2, 2\)"),
    case("loss-target-inf", lambda n, o, t: bp.MSELoss()(np.zeros((2, 1)), [[0.0], [np.inf]]), V, r"target must be finite, but target\[1, 0\] is inf"),
    case("BCE-pred-range", lambda n, o, t: bp.BCELoss()(np.array([[0.5], [1.5]]), [0, 1]), V,
         r"pred \(probabilities for BCELoss\) must hold values in \[0, 1\], got values from 0.5 to 1.5"),
    case("BCE-target-range", lambda n, o, t: bp.BCELoss()(np.array([[0.5], [0.5]]), [0, 2]), V,
         r"target must hold values in \[0, 1\], got values from 0 to 2"),
    case("CE-label-range", lambda n, o, t: CE(np.zeros((2, 3)), [0, 3]), V, r"target labels must be in \[0, 2\] for 3 classes, got 3"),
    case("CE-label-negative", lambda n, o, t: CE(np.zeros((2, 3)), [-1, 0]), V, r"target labels must be in \[0, 2\] for 3 classes, got -1"),
    case("CE-label-fraction", lambda n, o, t: CE(np.zeros((2, 3)), [0.5, 1]), V, r"target holds class labels, which must be whole numbers; got \[0.5\]"),
    case("CE-label-bool", lambda n, o, t: CE(np.zeros((2, 3)), [True, False]), T, "target holds class labels, which must be integers, got booleans"),
    case("CE-onehot-width", lambda n, o, t: CE(np.zeros((2, 3)), np.eye(4)[:2]), V,
         r"target must be labels of shape \(rows,\) or rows of 3 probabilities, got shape \(2, 4\)"),
    case("Hinge-target", lambda n, o, t: bp.HingeLoss()(np.zeros((2, 1)), [2, -1]), V, r"target for HingeLoss must hold -1/\+1 or 0/1, got values \[-1 +2\]"),
    # ---- optimizers and schedules
    case("SGD-lr-negative", lambda n, o, t: bp.SGD(n.parameters(), lr=-0.1), V, "lr must be a finite number >= 0.0, got -0.1"),
    case("SGD-lr-nan", lambda n, o, t: bp.SGD(n.parameters(), lr=float("nan")), V, "lr must be a finite number >= 0.0, got nan"),
    case("SGD-lr-inf", lambda n, o, t: bp.SGD(n.parameters(), lr=float("inf")), V, "lr must be a finite number >= 0.0, got inf"),
    case("SGD-lr-type", lambda n, o, t: bp.SGD(n.parameters(), lr="0.1"), T, "lr must be a real number, got str '0.1'"),
    case("SGD-momentum", lambda n, o, t: bp.SGD(n.parameters(), momentum=1.0), V, r"momentum must be in \[0.0, 1.0\), got 1.0"),
    case("SGD-weight_decay", lambda n, o, t: bp.SGD(n.parameters(), weight_decay=-1e-4), V, "weight_decay must be a finite number >= 0.0, got -0.0001"),
    case("SGD-nesterov", lambda n, o, t: bp.SGD(n.parameters(), nesterov=True), V, "nesterov=True needs momentum > 0 .*got momentum=0.0"),
    case("SGD-nesterov-type", lambda n, o, t: bp.SGD(n.parameters(), momentum=0.9, nesterov="yes"), T, "nesterov must be True or False, got str 'yes'"),
    case("SGD-params-network", lambda n, o, t: bp.SGD(n, lr=0.1), T, r"params must be a list of parameters \(net.parameters\(\)\), got Sequential"),
    case("SGD-params-arrays", lambda n, o, t: bp.SGD([np.zeros(3)], lr=0.1), T, "params must hold a network's parameters .*got an element of type ndarray"),
    case("SGD-params-empty", lambda n, o, t: bp.SGD([], lr=0.1), V, "params is empty"),
    case("SGD-params-two-networks", lambda n, o, t: bp.SGD(n.parameters() + other_net().parameters(), lr=0.1), V,
         "params must all come from one network's parameters.*several networks"),
    case("Adam-betas-pair", lambda n, o, t: bp.Adam(n.parameters(), betas=(0.9,)), V, r"betas must be a pair \(beta1, beta2\), got \(0.9,\)"),
    case("Adam-beta1", lambda n, o, t: bp.Adam(n.parameters(), betas=(1.0, 0.999)), V, r"betas\[0\] must be in \[0.0, 1.0\), got 1.0"),
    case("Adam-eps", lambda n, o, t: bp.Adam(n.parameters(), eps=float("inf")), V, "eps must be a finite number >= 0.0, got inf"),
    case("AdamW-weight_decay", lambda n, o, t: bp.AdamW(n.parameters(), weight_decay=float("nan")), V, "weight_decay must be .*got nan"),
    case("StepLR-step_size", lambda n, o, t: bp.StepLR(o, 0), V, "step_size must be an integer >= 1, got 0"),
    case("StepLR-gamma", lambda n, o, t: bp.StepLR(o, 2, gamma=-0.5), V, "gamma must be a finite number >= 0.0, got -0.5"),
    case("StepLR-optimizer", lambda n, o, t: bp.StepLR("adam", 2), T, "optimizer must be a backprop optimizer, got str"),
    case("ExponentialLR-gamma", lambda n, o, t: bp.ExponentialLR(o, float("nan")), V, "gamma must be .*got nan"),
    case("Cosine-T_max", lambda n, o, t: bp.CosineAnnealingLR(o, T_max=0), V, "T_max must be an integer >= 1, got 0"),
    case("Cosine-eta_min", lambda n, o, t: bp.CosineAnnealingLR(o, T_max=5, eta_min=-1), V, "eta_min must be a finite number >= 0.0, got -1.0"),
    # ---- fit: the data
    case("fit-X-features", lambda n, o, t: fit(n, o, X=np.zeros((12, 5))), V, "X has 5 features but the network expects 3"),
    case("fit-X-1d", lambda n, o, t: fit(n, o, X=X[:, 0]), V, r"X must be 2-D \(samples, 3 features\), got shape \(12,\)"),
    case("fit-X-3d", lambda n, o, t: fit(n, o, X=X[:, :, None]), V, r"X must be 2-D \(samples, 3 features\), got shape \(12, 3, 1\)"),
    case("fit-X-empty", lambda n, o, t: fit(n, o, X=np.zeros((0, 3)), y=[]), V, "X is empty: it has 0 samples"),
    case("fit-X-nan", lambda n, o, t: fit(n, o, X=with_nan(X, (7, 1))), V, r"X must be finite, but X\[7, 1\] is nan"),
    case("fit-X-inf", lambda n, o, t: fit(n, o, X=X * np.array([1, np.inf, 1])), V, r"X must be finite, but X\[0, 1\] is -?inf"),
    case("fit-X-strings", lambda n, o, t: fit(n, o, X=X.astype(str)), T, "X must hold real numbers, got an array of dtype <U"),
    case("fit-X-objects", lambda n, o, t: fit(n, o, X=np.array([[1, None, 2]] * 12)), T, "X must hold real numbers, got an array of dtype object"),
    case("fit-X-ragged", lambda n, o, t: fit(n, o, X=[[1, 2, 3], [1, 2]], y=[0, 1]), T, "X must be an array of numbers, got list"),
    case("fit-X-complex", lambda n, o, t: fit(n, o, X=X + 1j), T, "X must hold real numbers, got an array of dtype complex128"),
    case("fit-y-length", lambda n, o, t: fit(n, o, y=Y[:11]), V, "y has 11 samples but X has 12"),
    case("fit-y-nan", lambda n, o, t: fit(n, o, y=with_nan(Y, 3)), V, r"y must be finite, but y\[3\] is nan"),
    case("fit-y-label-range", lambda n, o, t: fit(n, o, y=Y + 1), V, r"y labels must be in \[0, 1\] for 2 classes, got 2"),
    case("fit-y-label-fraction", lambda n, o, t: fit(n, o, y=Y / 2), V, r"y holds class labels, which must be whole numbers; got \[0.5"),
    case("fit-y-label-bool", lambda n, o, t: fit(n, o, y=Y.astype(bool)), T, "y holds class labels, which must be integers, got booleans"),
    case("fit-y-strings", lambda n, o, t: fit(n, o, y=Y.astype(str)), T, "y must hold real numbers, got an array of dtype <U"),
    case("fit-y-onehot-width", lambda n, o, t: fit(n, o, y=np.eye(3)[Y]), V,
         r"y must be labels of shape \(rows,\) or rows of 2 probabilities, got shape \(12, 3\)"),
    case("fit-y-mse-width", lambda n, o, t: fit(n, o, y=np.zeros((12, 3)), loss=bp.MSELoss()), V,
         r"y must have shape \(12, 2\), a row of 2 per example, got \(12, 3\)"),
    case("fit-batchnorm-batch-of-one", lambda n, o, t: fit(n, o, X=X[:9], y=Y[:9]), V,
         "batch_size=4 with 9 training samples gives a batch of 1 sample, but BatchNorm needs batches of at least 2"),
    case("fit-validation-X", lambda n, o, t: fit(n, o, validation_data=(X[:, :2], Y)), V,
         r"validation_data\[0\] has 2 features but the network expects 3"),
    case("fit-validation-y", lambda n, o, t: fit(n, o, validation_data=(X, Y[:3])), V,
         r"validation_data\[1\] has 3 samples but validation_data\[0\] has 12"),
    case("fit-validation-pair", lambda n, o, t: fit(n, o, validation_data=(X,)), V,
         r"validation_data must be a pair \(X_val, y_val\), got tuple of length 1"),
    case("fit-validation-both", lambda n, o, t: fit(n, o, validation_data=(X, Y), validation_split=0.2), V,
         "give validation_data or validation_split, not both"),
    # ---- fit: the settings
    case("fit-epochs-zero", lambda n, o, t: bp.fit(n, X, Y, loss=CE, optimizer=o, epochs=0), V, "epochs must be a positive integer, got 0"),
    case("fit-epochs-float", lambda n, o, t: bp.fit(n, X, Y, loss=CE, optimizer=o, epochs=2.5), T, "epochs must be a positive integer, got float 2.5"),
    case("fit-batch_size", lambda n, o, t: bp.fit(n, X, Y, loss=CE, optimizer=o, batch_size=0), V, "batch_size must be a positive integer, got 0"),
    case("fit-batch_size-type", lambda n, o, t: bp.fit(n, X, Y, loss=CE, optimizer=o, batch_size="32"), T,
         "batch_size must be a positive integer, got str '32'"),
    case("fit-validation_split", lambda n, o, t: fit(n, o, validation_split=1.0), V, r"validation_split must be in \[0.0, 1.0\), got 1.0"),
    case("fit-validation_split-empty", lambda n, o, t: fit(n, o, validation_split=0.01), V,
         "validation_split=0.01 leaves 0 validation samples out of 12"),
    case("fit-early_stopping", lambda n, o, t: fit(n, o, early_stopping=0), V, "early_stopping must be a positive integer, got 0"),
    case("fit-seed", lambda n, o, t: fit(n, o, seed="abc"), T, "seed must be a non-negative integer or None, got str 'abc'"),
    case("fit-seed-negative", lambda n, o, t: fit(n, o, seed=-3), V, "seed must be a non-negative integer or None, got -3"),
    case("fit-loss-missing", lambda n, o, t: fit(n, o, loss=None), T, r"loss must be a backprop loss \(e.g. bp.CrossEntropyLoss\(\)\), got NoneType"),
    case("fit-loss-wrong-pairing", lambda n, o, t: fit(n, o, loss=bp.BCELoss(), y=Y), V,
         "BCELoss takes probabilities, but the last layer's activation is 'linear'"),
    case("fit-optimizer-type", lambda n, o, t: fit(n, "adam"), T, "optimizer must be a backprop optimizer .*got str"),
    case("fit-optimizer-other-network", lambda n, o, t: fit(n, bp.SGD(other_net().parameters())), V,
         "optimizer was built for another network's parameters"),
    case("fit-scheduler-type", lambda n, o, t: fit(n, o, scheduler="cosine"), T, "scheduler must be a backprop schedule .*got str"),
    case("fit-scheduler-other-optimizer", lambda n, o, t: fit(n, o, scheduler=bp.StepLR(bp.SGD(n.parameters()), 2)), V,
         "scheduler was built for another optimizer"),
    # ---- predict and evaluate
    case("predict-X-features", lambda n, o, t: bp.predict(n, X[:, :2]), V, "X has 2 features but the network expects 3"),
    case("predict-X-nan", lambda n, o, t: bp.predict(n, with_nan(X, (0, 0))), V, r"X must be finite, but X\[0, 0\] is nan"),
    case("predict-batch_size", lambda n, o, t: bp.predict(n, X, batch_size=-1), V, "batch_size must be a positive integer, got -1"),
    case("predict-activation", lambda n, o, t: bp.predict(n, X, activation="tanh"), V,
         "activation must be None, 'softmax' or 'sigmoid', got 'tanh'"),
    case("evaluate-y-length", lambda n, o, t: bp.evaluate(n, X, Y[:5], loss=CE), V, "y has 5 samples but X has 12"),
    case("evaluate-y-labels", lambda n, o, t: bp.evaluate(n, X, Y * 3, loss=CE), V, r"y labels must be in \[0, 1\] for 2 classes, got 3"),
    case("evaluate-loss", lambda n, o, t: bp.evaluate(n, X, Y, loss="ce"), T, "loss must be a backprop loss .*got str"),
    # ---- forward and backward
    case("forward-features", lambda n, o, t: n.forward(X[:, :2]), V, "x has 2 features but the network expects 3"),
    case("forward-1d", lambda n, o, t: n.forward(X[0]), V, r"x must be 2-D \(rows, 3 features\), got shape \(3,\)"),
    case("forward-empty", lambda n, o, t: n.forward(np.zeros((0, 3))), V, "x is empty: it has 0 rows"),
    case("forward-nan", lambda n, o, t: n(with_nan(X, (2, 2))), V, r"x must be finite, but x\[2, 2\] is nan"),
    case("forward-native-nan", lambda n, o, t: n(with_nan(X, (2, 2)).astype(np.float32)), V, "x must be finite"),
    case("forward-strings", lambda n, o, t: n([["1", "2", "3"]]), T, "x must hold real numbers, got an array of dtype <U1"),
    case("forward-batchnorm-one-row", lambda n, o, t: n.forward(X[:1]), V, "x has 1 row, but BatchNorm needs at least 2 in training mode"),
    case("backward-width", lambda n, o, t: n.backward(np.ones((12, 3))), V, "grad_output has 3 features but the network expects 2",
         setup=forward_first),
    case("backward-rows", lambda n, o, t: n.backward(np.ones((5, 2))), V,
         r"grad_output must have 12 rows \(the latest forward's batch\), got 5", setup=forward_first),
    case("backward-nan", lambda n, o, t: n.backward(with_nan(np.ones((12, 2)), (4, 1))), V,
         r"grad_output must be finite, but grad_output\[4, 1\] is nan", setup=forward_first),
    # ---- gradcheck
    case("gradcheck-x-features", lambda n, o, t: bp.gradcheck(n, CE, X[:, :2], Y), V, "x has 2 features but the network expects 3"),
    case("gradcheck-x-nan", lambda n, o, t: bp.gradcheck(n, CE, with_nan(X, (1, 1)), Y), V, r"x must be finite, but x\[1, 1\] is nan"),
    case("gradcheck-y-labels", lambda n, o, t: bp.gradcheck(n, CE, X, Y - 1), V, r"target labels must be in \[0, 1\] for 2 classes, got -1"),
    case("gradcheck-eps", lambda n, o, t: bp.gradcheck(n, CE, X, Y, eps=0.0), V, "eps must be a finite number > 0.0, got 0.0"),
    case("gradcheck-loss", lambda n, o, t: bp.gradcheck(n, None, X, Y), T, "loss must be a backprop loss .*got NoneType"),
    # ---- checkpoints (damaged files: test_checkpoint.py)
    case("save-net", lambda n, o, t: bp.save(o, t / "m.npz"), T, "net must be a Sequential, got Adam"),
    case("save-path-type", lambda n, o, t: bp.save(n, 3), T, "path must be a file name such as 'model.safetensors', got int 3"),
    case("save-path-folder", lambda n, o, t: bp.save(n, t), V, "path must be a file name such as 'model.safetensors', got .*which is a folder"),
    case("save-optimizer-other-network", lambda n, o, t: bp.save(n, t / "m.npz", optimizer=bp.SGD(other_net().parameters())), V,
         "optimizer must be an optimizer of this network's parameters"),
    case("load-device", lambda n, o, t: bp.load(t / "model.safetensors", device="tpu"), V, "device must be .*got 'tpu'", setup=saved_file),
]


@pytest.mark.parametrize("call, error, match, setup", CASES)
def test_bad_input_is_refused_before_anything_changes(call, error, match, setup, tmp_path):
    net, opt = trained_pair()
    if setup is not None:
        setup(net, opt, tmp_path)
    before = fingerprint(net, opt)
    with pytest.raises(error, match=match):
        call(net, opt, tmp_path)
    assert fingerprint(net, opt) == before


def test_a_refused_fit_leaves_no_history_and_the_next_fit_works():
    net, opt = trained_pair()
    history = net.history
    with pytest.raises(ValueError):
        fit(net, opt, X=with_nan(X, (11, 0)))
    assert net.history is history  # the refused call did not replace it
    assert fit(net, opt).epochs == 2
