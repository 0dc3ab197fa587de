"""Proof 3: CupyBackend itself, driven end to end through a test double of CuPy (cupy_double.py)
whose kernel launches run the host build of our kernels and check every argument against the
kernel's C signature. Every op matches the reference; a network trains step for step like the
NumPy backend; the launcher refuses what CuPy would pass silently.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest

import backprop as bp
from backprop.backends import Backend, devices
from backprop.kernels import loader
from op_cases import CASES, EXACT, run_case

import cupy_double

# Op cases compare with the reference at the tolerance of the NumPy backend's op test (the
# per-kernel bounds are proven in test_kernels_host.py; here the wiring is under test: argument
# order, launch shapes, scalar types, reduction scales).
ULPS = 64
FLOOR = {"float32": 1e-6, "float64": 1e-13}
SHAPES = [(3, 4), (17, 33)]


@pytest.fixture
def gpu(monkeypatch):
    """`import cupy` gives the double; detection then finds one device, as on a GPU machine."""
    monkeypatch.setitem(sys.modules, "cupy", cupy_double)
    monkeypatch.setattr(devices, "_BACKENDS", {})
    devices.cuda_status.cache_clear()
    yield
    devices.cuda_status.cache_clear()


def assert_matches(got, want, dtype, exact, label):
    assert len(got) == len(want), label
    for i, (g, w) in enumerate(zip(got, want)):
        if w is None:
            assert g is None, f"{label}[{i}]: the reference returns None"
            continue
        if isinstance(g, cupy_double.ndarray):  # op_cases copies any np.ndarray (subclass) as it is
            g = g.get()
        if exact:
            np.testing.assert_array_equal(g, w, err_msg=f"{label}[{i}] must equal the reference bit for bit")
        else:
            np.testing.assert_allclose(g, w, rtol=ULPS * np.finfo(dtype).eps, atol=FLOOR[dtype], err_msg=f"{label}[{i}]")


def test_detection_finds_the_double(gpu):
    assert bp.available_devices() == ["cpu", "cuda:0"]
    backend = bp.get_backend("cuda", "float32")
    assert type(backend).__name__ == "CupyBackend" and backend.device == "cuda:0"
    with pytest.raises(bp.DeviceUnavailableError, match="has 1 GPU"):
        bp.get_backend("cuda:1")


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", CASES)
def test_every_op_matches_the_reference(gpu, case, dtype, shape):
    backend = bp.get_backend("cuda", dtype)
    want = run_case(Backend(np, dtype), case, 0, shape)
    got = run_case(backend, case, 0, shape)
    assert_matches(got, want, dtype, case.split(":")[0] in EXACT, case)


def _network(device, dtype):
    return bp.Sequential(
        bp.Dense(6, 16, activation="gelu"), bp.BatchNorm(16), bp.Dropout(0.25),
        bp.Dense(16, 12, activation="tanh", l2=1e-3), bp.Dense(12, 4),
        device=device, dtype=dtype, seed=3)


STEP_TOLERANCE = {"float32": dict(rtol=2e-4, atol=2e-6), "float64": dict(rtol=1e-10, atol=1e-13)}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("optimizer", ["sgd_nesterov", "adam", "adamw"])
def test_training_steps_match_the_numpy_backend(gpu, optimizer, dtype):
    """Forward, loss, backward and update, five steps, on both backends from the same seed: the
    gradients and the weights agree after every step."""
    rng = np.random.default_rng(0)
    X, labels = rng.normal(size=(40, 6)), rng.integers(0, 4, size=40)
    nets = {device: _network(device, dtype) for device in ("cpu", "cuda")}
    make = {"sgd_nesterov": lambda p: bp.SGD(p, lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-3),
            "adam": lambda p: bp.Adam(p, lr=1e-2, weight_decay=1e-3),
            "adamw": lambda p: bp.AdamW(p, lr=1e-2)}[optimizer]
    optimizers = {device: make(net.parameters()) for device, net in nets.items()}
    losses = {device: bp.CrossEntropyLoss() for device in nets}
    for step in range(5):
        values = {}
        for device, net in nets.items():
            net.train()
            batch = slice(8 * step, 8 * step + 8)
            values[device] = losses[device](net(X[batch]), labels[batch])
            net.backward(losses[device].backward())
        cpu, gpu_net = nets["cpu"], nets["cuda"]
        assert isinstance(gpu_net.store.grad, cupy_double.ndarray), "gradients left the device"
        np.testing.assert_allclose(values["cuda"], values["cpu"], **STEP_TOLERANCE[dtype])
        np.testing.assert_allclose(bp.to_numpy(gpu_net.store.grad), cpu.store.grad, **STEP_TOLERANCE[dtype],
                                   err_msg=f"gradients, step {step}")
        for opt in optimizers.values():
            opt.step()
        np.testing.assert_allclose(bp.to_numpy(gpu_net.store.data), cpu.store.data, **STEP_TOLERANCE[dtype],
                                   err_msg=f"weights after step {step}")
    np.testing.assert_allclose(bp.predict(nets["cuda"], X), bp.predict(nets["cpu"], X), **STEP_TOLERANCE[dtype])


def test_fit_matches_the_numpy_backend(gpu):
    """fit end to end (shuffled batches, dropout, BatchNorm, validation, accuracy) in float64."""
    rng = np.random.default_rng(1)
    X = rng.normal(size=(60, 6))
    y = (X[:, 0] + X[:, 1] ** 2 > 1.0).astype(np.float64)
    results = {}
    for device in ("cpu", "cuda"):
        net = bp.Sequential(bp.Dense(6, 8, activation="relu"), bp.BatchNorm(8), bp.Dropout(0.2),
                            bp.Dense(8, 1), device=device, dtype="float64", seed=5)
        history = bp.fit(net, X, y, loss=bp.BCEWithLogitsLoss(), optimizer=bp.Adam(net.parameters(), lr=0.01),
                         epochs=3, batch_size=16, validation_split=0.2, seed=2, progress=False)
        results[device] = (history, bp.to_numpy(net.store.data))
    (h_gpu, w_gpu), (h_cpu, w_cpu) = results["cuda"], results["cpu"]
    np.testing.assert_allclose(w_gpu, w_cpu, rtol=1e-10, atol=1e-13)
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        np.testing.assert_allclose(h_gpu[key], h_cpu[key], rtol=1e-10, err_msg=key)


def test_a_non_contiguous_array_is_refused_by_our_launcher(gpu):
    backend = bp.get_backend("cuda", "float32")
    x = backend.asarray(np.arange(24.0).reshape(4, 6))
    with pytest.raises(ValueError, match="sigmoid_fwd_f32: argument 'x' .*must be C-contiguous"):
        backend.activation_forward(x[:, ::2], "sigmoid")
    with pytest.raises(ValueError, match="must be C-contiguous"):
        backend.add_scaled(x.T, x.T, 1.0)


def test_a_wrong_dtype_is_refused_by_our_launcher(gpu):
    backend = bp.get_backend("cuda", "float32")
    x = backend.asarray(np.ones((2, 3)))
    with pytest.raises(TypeError, match="must hold float32, got float64"):
        backend.add_scaled(x, cupy_double.asarray(np.ones((2, 3))), 1.0)


@pytest.mark.parametrize("ctype, wrong", [("int", np.int64), ("float", np.float64), ("long long", np.int32),
                                          ("unsigned int", np.int32), ("double", np.float32)])
def test_a_mistyped_scalar_makes_a_launch_fail(gpu, monkeypatch, ctype, wrong):
    """Break the launcher's cast for one C type: the double then receives a scalar of the wrong
    width or kind, which on a GPU would be read as garbage, and the op fails."""
    monkeypatch.setitem(loader.SCALAR_TYPES, ctype, wrong)
    dtype = "float64" if ctype == "double" else "float32"
    backend = bp.get_backend("cuda", dtype)
    flat = backend.asarray(np.ones(10))
    with pytest.raises(TypeError, match="which a launch passes as"):
        if ctype == "int":
            backend.sgd_step(flat, flat, backend.zeros((10,)), 0.1, 0.9, 0.0, True, 0.0, True)
        elif ctype == "unsigned int":
            backend.dropout_forward(flat, 0.25, 1234)
        else:
            backend.add_scaled(flat, flat, 0.5)


def test_host_arrays_never_meet_device_arrays(gpu):
    """The double refuses arithmetic between a NumPy array and a device array, as CuPy does; the
    training test above passing is the proof that no op mixes them."""
    x = cupy_double.asarray(np.ones(3))
    with pytest.raises(TypeError, match="host NumPy array"):
        x + np.ones(3)
    with pytest.raises(TypeError, match="host NumPy array cannot be passed"):
        bp.get_backend("cuda", "float64")._kernels("multiply_f64").function((1,), (32,), (np.ones(3), x, x, 3))
