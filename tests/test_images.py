"""Image layers (Conv2D, MaxPool2D, AvgPool2D, BatchNorm2D): gradients against finite
differences in float64, forward and backward against PyTorch where it is installed, their
shapes, refusals and initialization, and NCHW batches through fit, predict, evaluate,
checkpoints and pickling."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest

import backprop as bp

TOLERANCE = 1e-6

# (input C, H, W), out channels, kernel, stride, padding: strides 1 and 2, padding 0 and 1,
# kernels 1, 3 and 5, non-square inputs and kernels.
CONV_GEOMETRIES = [((2, 5, 6), 3, 3, 1, 0), ((2, 5, 6), 3, 3, 1, 1), ((1, 7, 6), 2, 3, 2, 1), ((3, 4, 5), 2, 1, 1, 0),
                   ((1, 7, 7), 2, 5, 1, 1), ((2, 6, 9), 2, 5, 2, 0), ((2, 6, 5), 3, (3, 2), (2, 1), (1, 0)),
                   ((1, 4, 7), 2, (1, 3), (1, 2), (0, 1))]


@pytest.fixture(params=[("image", 0), ("image", 10**9), ("batch", 0)], ids=["image", "image-rows-dw", "batch"])
def conv_layout(request, monkeypatch):
    """Runs a test with Conv2D in each column layout, whatever the size of its output planes, and
    in the per-image layout with each way of forming dL/dW (per image, or one product over rows);
    returns the layout's name."""
    layout, rows_dw_max = request.param
    monkeypatch.setattr(bp.Conv2D, "IMAGE_LAYOUT_MIN_POSITIONS", 0 if layout == "image" else 10**9)
    monkeypatch.setattr(bp.Conv2D, "ROWS_WEIGHT_GRADIENT_MAX_POSITIONS", rows_dw_max)
    return layout


def _conv_net(geometry, activation="tanh", **kwargs):
    shape, out_channels, kernel, stride, padding = geometry
    conv = bp.Conv2D(shape[0], out_channels, kernel, stride=stride, padding=padding, activation=activation, **kwargs)
    net = bp.Sequential(conv, bp.Flatten(), input_shape=shape, dtype="float64", seed=3)
    return net, net.layers[-1]


@pytest.mark.parametrize("rows", [1, 3])
@pytest.mark.parametrize("geometry", CONV_GEOMETRIES, ids=str)
def test_conv2d_gradients(geometry, rows, conv_layout):
    net, _ = _conv_net(geometry)
    rng = np.random.default_rng(rows)
    x = rng.normal(size=(rows, *geometry[0]))
    out = net.out_features
    net.layers[0].bias.data[...] = rng.normal(size=net.layers[0].bias.shape)  # biases matter too
    assert bp.gradcheck(net, bp.MSELoss(), x, rng.normal(size=(rows, out))) < TOLERANCE


@pytest.mark.parametrize("activation", ["relu", "linear", "sigmoid", "gelu"])
def test_conv2d_gradients_with_each_kind_of_activation_and_penalties(activation, conv_layout):
    net, _ = _conv_net(((2, 5, 6), 3, 3, 1, 1), activation, l1=0.01, l2=0.02)
    rng = np.random.default_rng(5)
    x = rng.normal(size=(2, 2, 5, 6))
    assert bp.gradcheck(net, bp.MSELoss(), x, rng.normal(size=(2, net.out_features))) < TOLERANCE


# (C, H, W), kernel, stride: the usual 2x2, odd sizes leaving a border, overlapping windows,
# non-square windows and strides.
POOL_GEOMETRIES = [((2, 4, 6), 2, None), ((1, 5, 7), 2, None), ((2, 5, 5), 3, 1), ((1, 6, 5), (3, 2), (2, 1)),
                   ((3, 3, 3), 3, None), ((1, 4, 4), 1, None)]


@pytest.mark.parametrize("rows", [1, 3])
@pytest.mark.parametrize("pool", [bp.MaxPool2D, bp.AvgPool2D])
@pytest.mark.parametrize("geometry", POOL_GEOMETRIES, ids=str)
def test_pooling_gradients(geometry, pool, rows):
    shape, kernel, stride = geometry
    net = bp.Sequential(bp.Conv2D(shape[0], 2, 1, activation="tanh"), pool(kernel, stride), bp.Flatten(),
                        input_shape=shape, dtype="float64", seed=1)
    rng = np.random.default_rng(7)
    x = rng.normal(size=(rows, *shape))  # continuous values: no ties for finite differences to straddle
    assert bp.gradcheck(net, bp.MSELoss(), x, rng.normal(size=(rows, net.out_features))) < TOLERANCE


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("rows", [1, 4])
def test_batchnorm2d_gradients(mode, rows):
    net = bp.Sequential(bp.Conv2D(2, 3, 3, padding=1), bp.BatchNorm2D(3), bp.Flatten(), bp.Dense(3 * 4 * 5, 2),
                        input_shape=(2, 4, 5), dtype="float64", seed=2)
    rng = np.random.default_rng(rows)
    net.layers[1].running_mean[...] = rng.normal(size=3)
    net.layers[1].running_var[...] = rng.uniform(0.5, 2.0, size=3)
    getattr(net, mode)()
    x = rng.normal(size=(rows, 2, 4, 5))
    assert bp.gradcheck(net, bp.CrossEntropyLoss(), x, rng.integers(0, 2, size=rows)) < TOLERANCE


def test_the_digits_cnn_gradients():
    net = digits_cnn()
    net.layers[6].p = 0.0  # the mask is fixed either way; without it every unit is checked
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, size=(2, 1, 8, 8))
    errors = bp.gradcheck(net, bp.CrossEntropyLoss(), x, rng.integers(0, 10, size=2), per_parameter=True)
    assert max(errors.values()) < TOLERANCE, errors


def digits_cnn(dtype="float64", seed=0):
    """A narrow version of the digits CNN (the training command's is 32 and 64 channels wide)."""
    return bp.Sequential(
        bp.Conv2D(1, 4, 3, padding=1, activation="relu"), bp.MaxPool2D(2),
        bp.Conv2D(4, 3, 3, padding=1, activation="relu"), bp.MaxPool2D(2),
        bp.Flatten(), bp.Dense(12, 8, activation="relu"), bp.Dropout(0.3), bp.Dense(8, 10),
        input_shape=(1, 8, 8), dtype=dtype, seed=seed)


# ---------------------------------------------------------------------- layers' contracts


def test_shapes_are_checked_at_build_and_shown_by_summary():
    net = bp.Sequential(bp.Conv2D(1, 6, 5, padding=2, activation="relu"), bp.MaxPool2D(2),
                        bp.Conv2D(6, 16, 5, activation="relu"), bp.AvgPool2D(2), bp.Flatten(),
                        bp.Dense(400, 10), input_shape=(1, 28, 28))
    summary = net.summary()
    for text in ("Conv2D 1->6 5x5 pad 2 relu", "(None, 6, 28, 28)", "MaxPool2D 2x2", "(None, 6, 14, 14)",
                 "(None, 16, 10, 10)", "AvgPool2D 2x2", "(None, 16, 5, 5)", "(None, 400)"):
        assert text in summary
    with pytest.raises(ValueError, match=r"expects 3 input channels but the layer before it gives 1 \(shape \(1, 8, 8\)\)"):
        bp.Sequential(bp.Conv2D(3, 4, 3), input_shape=(1, 8, 8))
    with pytest.raises(ValueError, match="takes images of shape \\(channels, height, width\\)"):
        bp.Sequential(bp.Conv2D(1, 4, 3), input_shape=(64,))
    with pytest.raises(ValueError, match="window 5x5 is larger than its padded input 4x6"):
        bp.Sequential(bp.Conv2D(1, 4, 5), input_shape=(1, 4, 6))
    with pytest.raises(ValueError, match="MaxPool2D's window 2x2 is larger"):
        bp.Sequential(bp.Conv2D(1, 4, 3), bp.MaxPool2D(2), bp.MaxPool2D(2), input_shape=(1, 4, 4))
    with pytest.raises(ValueError, match="expects 64 inputs but the layer before it gives 256"):
        bp.Sequential(bp.Conv2D(1, 4, 3, padding=1), bp.Flatten(), bp.Dense(64, 2), input_shape=(1, 8, 8))
    with pytest.raises(ValueError, match="pass input_shape="):
        bp.Sequential(bp.Conv2D(1, 4, 3))


@pytest.mark.parametrize("arguments, message", [
    (dict(dilation=2), "Conv2D supports dilation=1 only, got dilation=2"),
    (dict(groups=2), "Conv2D supports groups=1 only, got groups=2"),
    (dict(activation="softmax"), "Conv2D cannot take activation='softmax'.*channels"),
    (dict(kernel_size=0), "kernel_size must be an integer >= 1 or a pair of them, got 0"),
    (dict(kernel_size=(3, 3, 3)), "kernel_size must be an int or a pair"),
    (dict(stride=(1, 0)), "stride\\[1\\] must be an integer >= 1, got 0"),
    (dict(padding=-1), "padding must be an integer >= 0 or a pair of them, got -1"),
])
def test_conv2d_refuses_what_it_does_not_do(arguments, message):
    args = dict(in_channels=1, out_channels=2, kernel_size=3) | arguments
    with pytest.raises((ValueError, TypeError), match=message):
        bp.Conv2D(**args)


def test_pool_arguments_are_checked():
    with pytest.raises(ValueError, match="kernel_size must be"):
        bp.MaxPool2D(0)
    with pytest.raises(TypeError, match="stride must be"):
        bp.AvgPool2D(2, stride=1.5)
    assert bp.MaxPool2D(3).stride == (3, 3) and bp.AvgPool2D((2, 3), 1).stride == (1, 1)


@pytest.mark.parametrize("activation, init, spread", [("relu", "he", 2.0), ("tanh", "glorot", 2.0)])
def test_initialization_uses_the_receptive_field_fans(activation, init, spread):
    """He: N(0, 2 / fan_in); Glorot: U(+-sqrt(6 / (fan_in + fan_out))): fan_in = C kh kw and
    fan_out = out kh kw, as torch.nn.init computes them for a conv weight."""
    net = bp.Sequential(bp.Conv2D(16, 64, (3, 5), activation=activation), input_shape=(16, 9, 9), dtype="float64")
    weight = net.layers[0].weight.data
    fan_in, fan_out = 16 * 15, 64 * 15
    if init == "he":
        assert abs(weight.std() / math.sqrt(2.0 / fan_in) - 1) < 0.05
    else:
        limit = math.sqrt(6.0 / (fan_in + fan_out))
        assert weight.max() <= limit and weight.max() > 0.98 * limit
    assert np.all(net.layers[0].bias.data == 0)


def test_max_pool_ties_go_to_the_first_maximum_and_nan_propagates():
    net = bp.Sequential(bp.MaxPool2D(2), input_shape=(1, 2, 4), dtype="float64")
    x = np.array([[[[1.0, 1.0, 0.0, 7.0], [1.0, 0.5, 2.0, 7.0]]]])
    np.testing.assert_array_equal(net.forward(x), [[[[1.0, 7.0]]]])
    dx = net.backward(np.array([[[[3.0, 4.0]]]]), input_grad=True)
    np.testing.assert_array_equal(dx, [[[[3.0, 0.0, 0.0, 4.0], [0.0, 0.0, 0.0, 0.0]]]])
    x[0, 0, 1, 2] = np.nan  # the boundary refuses NaN inputs; the op itself lets NaN through
    y, index = net.backend.max_pool_forward(x, (2, 2), (2, 2))
    np.testing.assert_array_equal(y, [[[[1.0, np.nan]]]])
    np.testing.assert_array_equal(index, [[[[0, 2]]]])


def test_overlapping_max_windows_add_their_gradients():
    net = bp.Sequential(bp.MaxPool2D(2, stride=1), input_shape=(1, 3, 3), dtype="float64")
    x = np.zeros((1, 1, 3, 3))
    x[0, 0, 1, 1] = 9.0  # the maximum of all four windows
    net.forward(x)
    dx = net.backward(np.array([[[[1.0, 2.0], [3.0, 4.0]]]]), input_grad=True)
    assert dx[0, 0, 1, 1] == 10.0 and np.count_nonzero(dx) == 1


def test_batchnorm2d_normalizes_each_channel_over_the_batch_and_pixels():
    net = bp.Sequential(bp.BatchNorm2D(3), input_shape=(3, 4, 5), dtype="float64").train()
    x = np.random.default_rng(0).normal(3.0, 2.0, size=(6, 3, 4, 5)) * np.array([1.0, 10.0, 0.1])[:, None, None]
    y = net.forward(x)
    np.testing.assert_allclose(y.mean(axis=(0, 2, 3)), 0.0, atol=1e-12)
    np.testing.assert_allclose(y.var(axis=(0, 2, 3)), 1.0, rtol=1e-3)  # eps = 1e-5 beside a variance of 0.04
    bn = net.layers[0]
    n = 6 * 4 * 5
    np.testing.assert_allclose(bn.running_mean, 0.1 * x.mean(axis=(0, 2, 3)))
    np.testing.assert_allclose(bn.running_var, 0.9 + 0.1 * x.var(axis=(0, 2, 3)) * n / (n - 1))
    assert bn.label() == "BatchNorm2D 3" and bn.config() == {"type": "BatchNorm2D", "channels": 3, "momentum": 0.1,
                                                              "eps": 1e-5}
    with pytest.raises(ValueError, match="BatchNorm2D expects 3 input channels"):
        bp.Sequential(bp.BatchNorm2D(3), input_shape=(2, 4, 4))


# ---------------------------------------------------------------------- against PyTorch


def _torch():
    return pytest.importorskip("torch")


@pytest.mark.parametrize("geometry", CONV_GEOMETRIES, ids=str)
def test_conv2d_matches_pytorch(geometry, conv_layout):
    torch = _torch()
    shape, out_channels, kernel, stride, padding = geometry
    net, _ = _conv_net(geometry, activation="relu")
    conv = net.layers[0]
    assert conv.layout(1) == conv_layout  # the layout under test is the one in use
    rng = np.random.default_rng(0)
    conv.bias.data[...] = rng.normal(size=out_channels)
    x = rng.normal(size=(3, *shape))
    y = net.forward(x).reshape(3, out_channels, -1)
    grad_y = rng.normal(size=y.shape)
    dx = net.backward(grad_y.reshape(3, -1), input_grad=True)

    ref = torch.nn.Conv2d(shape[0], out_channels, kernel, stride=stride, padding=padding, dtype=torch.float64)
    with torch.no_grad():
        ref.weight.copy_(torch.from_numpy(np.array(conv.weight.data)))
        ref.bias.copy_(torch.from_numpy(np.array(conv.bias.data)))
    tx = torch.from_numpy(x).requires_grad_()
    ty = torch.relu(ref(tx))
    ty.backward(torch.from_numpy(grad_y).reshape(ty.shape))
    np.testing.assert_allclose(y, ty.detach().numpy().reshape(y.shape), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(conv.weight.grad, ref.weight.grad.numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(conv.bias.grad, ref.bias.grad.numpy(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("pool", ["max", "avg"])
@pytest.mark.parametrize("geometry", POOL_GEOMETRIES, ids=str)
def test_pooling_matches_pytorch(geometry, pool):
    torch = _torch()
    shape, kernel, stride = geometry
    layer = (bp.MaxPool2D if pool == "max" else bp.AvgPool2D)(kernel, stride)
    net = bp.Sequential(layer, input_shape=shape, dtype="float64")
    rng = np.random.default_rng(1)
    x = np.round(rng.normal(size=(2, *shape)) * 2) / 2  # ties, which go where PyTorch sends them
    y = net.forward(x)
    grad_y = rng.normal(size=y.shape)
    dx = net.backward(grad_y, input_grad=True)
    ref = (torch.nn.MaxPool2d if pool == "max" else torch.nn.AvgPool2d)(kernel, stride)
    tx = torch.from_numpy(x).requires_grad_()
    ty = ref(tx)
    ty.backward(torch.from_numpy(grad_y))
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-14, atol=0)
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-14, atol=1e-15)


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_batchnorm2d_matches_pytorch(mode):
    torch = _torch()
    net = bp.Sequential(bp.BatchNorm2D(3), input_shape=(3, 4, 5), dtype="float64")
    bn = net.layers[0]
    rng = np.random.default_rng(2)
    bn.gamma.data[...] = rng.uniform(0.5, 1.5, size=3)
    bn.beta.data[...] = rng.normal(size=3)
    ref = torch.nn.BatchNorm2d(3, dtype=torch.float64)
    with torch.no_grad():
        ref.weight.copy_(torch.from_numpy(np.array(bn.gamma.data)))
        ref.bias.copy_(torch.from_numpy(np.array(bn.beta.data)))
    getattr(net, mode)()
    getattr(ref, mode)()
    x = rng.normal(2.0, 3.0, size=(4, 3, 4, 5))
    grad_y = rng.normal(size=x.shape)
    y = net.forward(x)
    dx = net.backward(grad_y, input_grad=True)
    tx = torch.from_numpy(x).requires_grad_()
    ty = ref(tx)
    ty.backward(torch.from_numpy(grad_y))
    for got, want in ((y, ty.detach()), (dx, tx.grad), (bn.gamma.grad, ref.weight.grad), (bn.beta.grad, ref.bias.grad),
                      (bn.running_mean, ref.running_mean), (bn.running_var, ref.running_var)):
        np.testing.assert_allclose(got, want.numpy(), rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------------- NCHW batches everywhere


def _digits_images(rows=120):
    from sklearn.datasets import load_digits

    digits = load_digits()
    return digits.images[:rows, None] / 16.0, digits.target[:rows]


def test_fit_predict_evaluate_take_nchw_batches():
    X, y = _digits_images(400)
    net = digits_cnn(dtype="float32")
    history = bp.fit(net, X, y, loss=bp.CrossEntropyLoss(), optimizer=bp.Adam(net.parameters(), lr=1e-2),
                     epochs=10, batch_size=16, validation_split=0.1, seed=0, progress=False)
    assert history.history["loss"][-1] < history.history["loss"][0]
    probs = bp.predict(net, X)
    assert probs.shape == (400, 10)
    result = bp.evaluate(net, X, y, loss=bp.CrossEntropyLoss())
    assert result["accuracy"] > 0.6  # 0.75 measured; a tenth by chance
    with pytest.raises(ValueError, match=r"X must be 4-D \(samples, 1, 8, 8\), got shape \(400, 64\)"):
        bp.predict(net, X.reshape(400, 64))


def test_checkpoints_and_pickles_keep_an_image_network(tmp_path):
    X, y = _digits_images(40)
    net = bp.Sequential(bp.Conv2D(1, 4, (3, 2), stride=(1, 2), padding=1, activation="relu", l2=0.01),
                        bp.BatchNorm2D(4), bp.MaxPool2D(2, stride=1), bp.AvgPool2D((1, 2)), bp.Flatten(),
                        bp.Dense(4 * 7 * 2, 10), input_shape=(1, 8, 8), seed=4)
    optimizer = bp.Adam(net.parameters(), lr=1e-2)
    bp.fit(net, X, y, loss=bp.CrossEntropyLoss(), optimizer=optimizer, epochs=2, batch_size=8)
    want = bp.predict(net, X)
    bp.save(net, tmp_path / "cnn.safetensors", optimizer=optimizer)
    loaded = bp.load(tmp_path / "cnn.safetensors")
    np.testing.assert_array_equal(bp.predict(loaded, X), want)
    assert loaded.summary() == net.summary()
    copy = pickle.loads(pickle.dumps(net))
    np.testing.assert_array_equal(bp.predict(copy, X), want)
    np.testing.assert_array_equal(copy.layers[1].running_var, net.layers[1].running_var)


# ---------------------------------------------------------------------- on the GPU


def _cnn_fit(device):
    """A small CNN with every image layer, trained two epochs in float64 on `device`."""
    X, y = _digits_images(48)
    net = bp.Sequential(bp.Conv2D(1, 4, 3, padding=1, activation="relu"), bp.BatchNorm2D(4), bp.MaxPool2D(2),
                        bp.Conv2D(4, 3, (2, 3), stride=(1, 2), activation="tanh"), bp.AvgPool2D((3, 1)),
                        bp.Flatten(), bp.Dropout(0.2), bp.Dense(3, 10), input_shape=(1, 8, 8), device=device,
                        dtype="float64", seed=6)
    history = bp.fit(net, X, y, loss=bp.CrossEntropyLoss(), optimizer=bp.Adam(net.parameters(), lr=0.01), epochs=2,
                     batch_size=16, validation_split=0.25, seed=1, progress=False)
    return history.history, bp.to_numpy(net.store.data), bp.predict(net, X)


def _assert_cnn_fits_alike(device):
    (h_gpu, w_gpu, p_gpu), (h_cpu, w_cpu, p_cpu) = _cnn_fit(device), _cnn_fit("cpu")
    close = dict(rtol=1e-9, atol=1e-12)  # cuBLAS and NumPy add a GEMM's terms in different orders
    np.testing.assert_allclose(w_gpu, w_cpu, **close)
    np.testing.assert_allclose(p_gpu, p_cpu, **close)
    for key in h_cpu:
        np.testing.assert_allclose(h_gpu[key], h_cpu[key], **close, err_msg=key)


def test_a_cnn_trains_on_the_cupy_double_as_on_the_cpu(monkeypatch, conv_layout):
    """Proof 3 for the image layers end to end: the CuPy backend's launches of conv.cu and
    pooling.cu (through the CuPy double, which runs their host build) train as NumPy does."""
    import cupy_double

    from backprop.backends import devices

    cupy_double.install(monkeypatch)
    monkeypatch.setattr(devices, "_BACKENDS", {})
    devices.cuda_status.cache_clear()
    try:
        _assert_cnn_fits_alike("cuda:1")
    finally:
        devices.cuda_status.cache_clear()


@pytest.mark.gpu
def test_a_cnn_trains_on_a_real_gpu_as_on_the_cpu(conv_layout):
    from backprop.backends import devices

    if devices.cuda_status()[0] == 0:
        pytest.skip(f"no usable GPU: {devices.cuda_status()[1]}")
    _assert_cnn_fits_alike("cuda")


def test_the_readmes_cnn_runs_as_written(capsys):
    """The README's API tour shows a CNN on the digits: it runs as written and learns them."""
    import re

    from readme_extensions import README

    tour = README.read_text(encoding="utf-8").split("## A tour of the API", 1)[1].split("\n## ", 1)[0]
    (block,) = [code for code in re.findall(r"```python\n(.*?)```", tour, re.S) if "Conv2D" in code]
    namespace: dict = {}
    exec(compile(block, "README.md", "exec"), namespace)  # noqa: S102
    out = capsys.readouterr().out
    assert "(None, 32, 8, 8)" in out and "(32, 1, 3, 3)" in out
    accuracy = float(re.search(r"'accuracy': ([\d.]+)", out).group(1))
    assert accuracy > 0.85, out  # 0.93 measured on these 297 held-out digits; a tenth by chance
