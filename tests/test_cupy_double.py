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
from backprop.backends import devices
from backprop.kernels import loader
from op_cases import CASES
from gpu_scenarios import (OPTIMIZERS, Tolerance, check_fit, check_launcher_refusals, check_op_case,
                           check_training_steps)

import cupy_double
from host_kernels import build_all

# The double runs the host build, whose per-kernel bounds test_kernels_host.py proves; here the
# wiring is under test (argument order, launch shapes, scalar types, reduction scales), at the
# tolerance of the NumPy backend's own op test.
TOLERANCE = Tolerance(ulps=64, floor32=1e-6, training32=dict(rtol=2e-4, atol=2e-6),
                      training64=dict(rtol=1e-10, atol=1e-13))
SHAPES = [(3, 4), (17, 33)]


@pytest.fixture(scope="module", autouse=True)
def host_builds():
    """The double builds each module on first use; building them all up front goes two at a time."""
    build_all(loader.kernel_source(name) for name in loader.source_names())


@pytest.fixture
def gpu(monkeypatch):
    """`import cupy` gives the double; detection then finds two devices, as on a GPU machine."""
    machine = cupy_double.install(monkeypatch)
    monkeypatch.setattr(devices, "_BACKENDS", {})
    devices.cuda_status.cache_clear()
    yield machine
    devices.cuda_status.cache_clear()


def test_detection_finds_the_double(gpu):
    assert bp.available_devices() == ["cpu", "cuda:0", "cuda:1"]
    backend = bp.get_backend("cuda", "float32")
    assert type(backend).__name__ == "CupyBackend" and backend.device == "cuda:0"
    with pytest.raises(bp.DeviceUnavailableError, match="has 2 GPU"):
        bp.get_backend("cuda:2")


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", CASES)
def test_every_op_matches_the_reference_on_cuda_1_and_runs_there_only(gpu, case, dtype, shape):
    """On cuda:1 with device 0 current, as in a process that never chose a device: every op,
    the reference ops CupyBackend inherits and every kernel lookup included, runs on GPU 1."""
    check_op_case(case, dtype, shape, TOLERANCE, device="cuda:1")
    assert gpu.work == {1}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_training_steps_match_the_numpy_backend(gpu, optimizer, dtype):
    check_training_steps(optimizer, dtype, TOLERANCE)


def test_fit_matches_the_numpy_backend(gpu):
    check_fit(TOLERANCE)


def test_strided_views_and_wrong_dtypes_are_refused_by_our_launcher(gpu):
    check_launcher_refusals()


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
    with pytest.raises(TypeError, match="Only numpy.ndarrays of size one can be passed by value"):
        bp.get_backend("cuda", "float64")._kernels("multiply_f64").function((1,), (32,), (np.ones(3), x, x, 3))


@pytest.mark.parametrize("missing, named", [("cublas", "cuBLAS"), ("nvrtc", "NVRTC")])
def test_a_library_that_does_not_load_makes_the_gpu_unusable_and_says_how_to_fix_it(monkeypatch, missing, named):
    """CuPy imports and devices answer, but a library the backend loads does not: no usable GPU,
    `auto` falls back to the CPU, a named GPU is refused, each saying what to install."""
    cupy_double.install(monkeypatch, **{missing: False})
    monkeypatch.setattr(devices, "_BACKENDS", {})
    monkeypatch.setattr(devices, "installed_cupy_major", lambda: 13)
    devices.cuda_status.cache_clear()
    devices._warn_auto_fallback.cache_clear()
    try:
        count, reason = devices.cuda_status()
        assert count == 0 and named in reason and 'pip install "backprop-gpu[cuda13]"' in reason, reason
        assert bp.available_devices() == ["cpu"]
        with pytest.warns(RuntimeWarning, match=named):
            assert devices.resolve_device("auto") == "cpu"
        with pytest.raises(bp.DeviceUnavailableError, match=named):
            bp.get_backend("cuda")
    finally:
        devices.cuda_status.cache_clear()


# ---------------------------------------------------------------------- on cuda:1, device 0 current

CORE = pytest.mark.xfail(strict=True, reason="needs the core under backend.on_device()")


@CORE
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_forward_backward_and_optimizer_steps_on_cuda_1_run_there_only(gpu, dtype):
    """net(x), the loss, net.backward and opt.step on cuda:1 equal the CPU's, and nothing runs on GPU 0."""
    check_training_steps("adam", dtype, TOLERANCE, device="cuda:1")
    assert gpu.work == {1}


@CORE
def test_fit_on_cuda_1_runs_there_only(gpu):
    check_fit(TOLERANCE, device="cuda:1")
    assert gpu.work == {1}


def _trained_on(device):
    rng = np.random.default_rng(2)
    X, y = rng.normal(size=(30, 5)), rng.integers(0, 3, size=30)
    net = bp.Sequential(bp.Dense(5, 8, activation="tanh"), bp.BatchNorm(8), bp.Dense(8, 3), device=device,
                        dtype="float64", seed=1)
    return net, X, y


@CORE
def test_predict_and_evaluate_on_cuda_1_run_there_only(gpu):
    (gpu_net, X, y), (cpu_net, _, _) = _trained_on("cuda:1"), _trained_on("cpu")
    close = TOLERANCE.training("float64")
    np.testing.assert_allclose(bp.predict(gpu_net, X), bp.predict(cpu_net, X), **close)
    got = bp.evaluate(gpu_net, X, y, loss=bp.CrossEntropyLoss())
    want = bp.evaluate(cpu_net, X, y, loss=bp.CrossEntropyLoss())
    assert got.keys() == want.keys()
    for key in want:
        np.testing.assert_allclose(got[key], want[key], **close, err_msg=key)
    assert gpu.work == {1}


@CORE
def test_parameter_assignment_on_cuda_1_runs_there_only(gpu):
    """`p.data = values` and `p.grad = values` (host or device values) copy into the flat buffers on
    GPU 1. (`p.data[...] = values` is CuPy's own setitem, run on whichever device the caller has
    current: inside `with net.backend.on_device():` that is GPU 1.)"""
    net, _, _ = _trained_on("cuda:1")
    weight = net.layers[0].weight
    values = np.arange(40.0).reshape(5, 8)
    weight.data = values
    weight.grad = net.backend.asarray(values + 1)
    np.testing.assert_array_equal(bp.to_numpy(weight.data), values)
    np.testing.assert_array_equal(bp.to_numpy(weight.grad), values + 1)
    with net.backend.on_device():
        weight.data[...] = values + 2
    np.testing.assert_array_equal(bp.to_numpy(net.layers[0].weight.data), values + 2)
    assert gpu.work == {1}


@CORE
def test_checkpoints_on_cuda_1_round_trip_there_only(gpu, tmp_path):
    net, X, y = _trained_on("cuda:1")
    opt = bp.Adam(net.parameters())
    bp.fit(net, X, y, loss=bp.CrossEntropyLoss(), optimizer=opt, epochs=2, batch_size=8, progress=False)
    bp.save(net, tmp_path / "model.npz", optimizer=opt)
    loaded, loaded_opt = bp.load(tmp_path / "model.npz", device="cuda:1", optimizer=True)
    assert loaded.device == "cuda:1"
    np.testing.assert_array_equal(bp.to_numpy(loaded.store.data), bp.to_numpy(net.store.data))
    np.testing.assert_array_equal(bp.predict(loaded, X), bp.predict(net, X))
    assert gpu.work == {1}
