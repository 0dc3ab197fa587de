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


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_matmuls_of_the_gpu_suites_largest_shape_are_within_the_gemm_error_bound(gpu, dtype):
    """The double's split-K GEMM adds in another order than NumPy, as cuBLAS does: a tolerance of
    a few hundred eps relative to the result misses elements where the sum cancels; the bound,
    relative to (|A| |B|)_ij, holds for any order."""
    check_op_case("matmul", dtype, (300, 257), TOLERANCE, device="cuda:1")


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
        assert "\n" not in reason, "a reason is one line (the CLI prints it as one)"
        assert bp.available_devices() == ["cpu"]
        with pytest.warns(RuntimeWarning, match=named):
            assert devices.resolve_device("auto") == "cpu"
        with pytest.raises(bp.DeviceUnavailableError, match=named):
            bp.get_backend("cuda")
    finally:
        devices.cuda_status.cache_clear()



@pytest.mark.parametrize("driver, fix", [(12040, 'pip uninstall cupy-cuda13x, then pip install "backprop-gpu[cuda12]"'),
                                         (11080, "this one runs CUDA 11.8")])
def test_cupy_for_cuda_13_on_an_older_driver_says_which_cupy_to_install(monkeypatch, driver, fix):
    cupy_double.install(monkeypatch, driver=False)
    monkeypatch.setattr(devices, "installed_cupy_major", lambda: 13)
    monkeypatch.setattr(devices, "driver_cuda_version", lambda: driver)
    devices.cuda_status.cache_clear()
    try:
        count, reason = devices.cuda_status()
    finally:
        devices.cuda_status.cache_clear()
    assert count == 0 and "cudaErrorInsufficientDriver" in reason and "needs a driver >= 580" in reason, reason
    assert fix in reason, reason

# ---------------------------------------------------------------------- on cuda:1, device 0 current

@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_forward_backward_and_optimizer_steps_on_cuda_1_run_there_only(gpu, dtype):
    """net(x), the loss, net.backward and opt.step on cuda:1 equal the CPU's, and nothing runs on GPU 0."""
    check_training_steps("adam", dtype, TOLERANCE, device="cuda:1")
    assert gpu.work == {1}


def test_fit_on_cuda_1_runs_there_only(gpu):
    check_fit(TOLERANCE, device="cuda:1")
    assert gpu.work == {1}


def _trained_on(device):
    rng = np.random.default_rng(2)
    X, y = rng.normal(size=(30, 5)), rng.integers(0, 3, size=30)
    net = bp.Sequential(bp.Dense(5, 8, activation="tanh"), bp.BatchNorm(8), bp.Dense(8, 3), device=device,
                        dtype="float64", seed=1)
    return net, X, y


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


# ---------------------------------------------------------------------- as strict as CuPy, or stricter


def test_arrays_live_on_the_device_current_when_made_and_another_devices_array_is_refused(gpu):
    cp = sys.modules["cupy"]
    with cp.cuda.Device(1):
        x = cp.asarray(np.ones((2, 2)))
    y = cp.asarray(np.ones((2, 2)))
    assert (x.device.id, x[1:].device.id, x.T.device.id, y.device.id) == (1, 1, 1, 0)
    with pytest.raises(ValueError, match="add: an array of cuda:1 was given while cuda:0 is current"):
        x + 1
    with pytest.raises(ValueError, match="setitem: an array of cuda:1"):
        y[...] = x
    with pytest.raises(ValueError, match="cublas.gemm: an array of cuda:1"):
        sys.modules["cupy.cublas"].gemm("N", "N", x, y)
    function = bp.get_backend("cuda:0", "float64")._kernels("multiply_f64").function
    with pytest.raises(ValueError, match="kernel multiply_f64: an array of cuda:1"):
        function((1,), (32,), (x, y, y, 4))
    assert gpu.work == {0, 1}


def test_cublas_imports_only_when_its_library_is_installed(monkeypatch):
    cupy_double.install(monkeypatch, cublas=False)
    import cupy  # noqa: F401  (CuPy itself imports without cuBLAS)

    with pytest.raises(ImportError):
        from cupy import cublas  # noqa: F401


def test_launches_complete_at_a_sync_point_only(gpu):
    """A kernel's output holds what was there before until a sync point (get(), float(), an event
    or a device synchronized, another operation on that device)."""
    cp = sys.modules["cupy"]
    backend = bp.get_backend("cuda", "float64")
    x = backend.asarray(np.ones(4))
    start, end = cp.cuda.Event(), cp.cuda.Event()
    start.record()
    out = backend.add_scaled(x, x, 1.0)
    end.record()
    assert np.isnan(out.view(np.ndarray)).all(), "read before the kernel ran"
    with pytest.raises(RuntimeError, match="cudaErrorNotReady"):
        cp.cuda.get_elapsed_time(start, end)
    end.synchronize()
    assert cp.cuda.get_elapsed_time(start, end) >= 0
    np.testing.assert_array_equal(backend.to_host(out), 2.0)


def test_ascontiguousarray_makes_a_0d_array_1d_as_cupy_does_and_the_backend_keeps_it_0d(gpu):
    cp = sys.modules["cupy"]
    assert cp.ascontiguousarray(cp.asarray(np.float64(2.0))).shape == (1,)
    backend = bp.get_backend("cuda", "float32")
    assert backend.asarray(np.float64(0.5)).shape == () and backend.asarray_int(np.int64(3)).shape == ()
    assert backend.asarray(np.ones((3, 2), order="F")).flags.c_contiguous


def test_a_one_element_host_array_goes_by_value_in_cupy_and_our_launcher_refuses_it(gpu):
    backend = bp.get_backend("cuda", "float64")
    x = backend.asarray(np.ones(1))
    launcher = backend._kernels("multiply_f64")
    by_value = r"argument 0 \(double\*\): got float64 np.float64\(1.0\), which a launch passes by value"
    with pytest.raises(TypeError, match=by_value):
        launcher.function((1,), (32,), (np.ones(1), x, x, 1))
    with pytest.raises(TypeError, match=r"multiply_f64: argument 'a' \(double\*\) must be a device array "
                                        r"\(cupy.ndarray\), got numpy.ndarray"):
        launcher(1, 32, np.ones(1), x, x, 1)


def test_our_launcher_refuses_an_array_of_another_gpu(gpu):
    x = bp.get_backend("cuda:0", "float32").asarray(np.ones(4))
    with pytest.raises(ValueError, match=r"add_scaled_f32: argument 'x' \(float\*\) lives on cuda:0, but the "
                                         r"kernel runs on cuda:1"):
        bp.get_backend("cuda:1", "float32").add_scaled(x, x, 1.0)


def test_a_grid_of_0_runs_as_1_block_in_cupy_and_our_launcher_refuses_it(gpu):
    backend = bp.get_backend("cuda", "float64")
    x, partials = backend.asarray(np.arange(1.0, 4.0)), backend.zeros((1,))
    launcher = backend._kernels("sum_partials_f64")
    launcher.function((0,), (256,), (x, partials, 3))
    assert backend.to_host(partials)[0] == 6.0, "CuPy launches a grid of 0 as 1 block"
    with pytest.raises(ValueError, match="sum_partials_f64: the grid must be at least 1 block, got 0"):
        launcher(0, 256, x, partials, 3)


def test_ops_on_no_rows_never_launch_a_grid_of_0(gpu):
    """Block-per-row kernels get one block at least; their results are the reference's."""
    backend, reference = bp.get_backend("cuda", "float64"), Backend(np, "float64")
    z, bias, target = np.zeros((0, 4)), np.arange(4.0), np.zeros((0, 4))
    for be in (backend, reference):
        y, _ = be.bias_activation_forward(be.asarray(z), be.asarray(bias), "softmax")
        grad = be.activation_backward(be.asarray(z), y, None, "softmax")
        loss, dlogits = be.cross_entropy_loss(be.asarray(z), be.asarray(target), "sum")
        assert (y.shape, grad.shape, dlogits.shape, float(loss)) == ((0, 4), (0, 4), (0, 4), 0.0)


def test_a_users_activation_layer_and_loss_train_on_cuda_1_as_on_the_cpu(gpu):
    """The README's softsign (no kernel: its definition runs on CuPy), Recenter and LogCoshLoss."""
    from readme_extensions import LogCoshLoss, Recenter

    rng = np.random.default_rng(3)
    X, Y = rng.normal(size=(48, 3)), rng.normal(size=(48, 1))
    weights = {}
    for device in ("cpu", "cuda:1"):
        net = bp.Sequential(bp.Dense(3, 6, activation="softsign"), Recenter(momentum=0.2), bp.Dense(6, 1),
                            device=device, dtype="float64", seed=1)
        bp.fit(net, X, Y, loss=LogCoshLoss(), optimizer=bp.Adam(net.parameters(), lr=0.01), epochs=3, batch_size=16,
               progress=False)
        weights[device] = bp.to_numpy(net.store.data)
    np.testing.assert_allclose(weights["cuda:1"], weights["cpu"], **TOLERANCE.training("float64"))
    assert gpu.work == {1}


def test_the_doubles_functions_take_cupys_own_parameters():
    """The double's functions are called with CuPy's parameters, not NumPy's, so a call that only
    works on NumPy fails in CI: compared with the installed CuPy's (the test extra installs it;
    importing it needs no GPU)."""
    cupy = pytest.importorskip("cupy")
    import inspect

    for name in cupy_double.FUNCTIONS:
        ours = inspect.signature(getattr(cupy_double.modules()["cupy"], name))
        theirs = inspect.signature(getattr(cupy, name))
        assert list(ours.parameters) == list(theirs.parameters), (name, ours, theirs)
        assert [p.kind for p in ours.parameters.values()] == [p.kind for p in theirs.parameters.values()], name
    for name in cupy_double.UFUNCS:
        assert type(getattr(cupy, name)).__name__ in ("ufunc", "_GUFunc"), name


def test_xp_is_the_array_api_on_the_gpu_as_on_the_cpu(gpu):
    """backend.xp is array-api-compat's CuPy namespace: the standard's clip(x, min=) works there
    (a user's activation or loss written from the standard), where CuPy's own clip, like the
    double's, takes (a, a_min, a_max) only."""
    import array_api_compat

    backend = bp.get_backend("cuda:1", "float64")
    assert backend.xp is array_api_compat.cupy
    with backend.on_device():
        x = backend.asarray(np.array([[-2.0, 0.5], [3.0, -0.25]]))
        clipped = backend.xp.clip(x, min=0.0)
        assert backend.owns(clipped) and array_api_compat.array_namespace(clipped) is backend.xp
        np.testing.assert_array_equal(clipped.get(), [[0.0, 0.5], [3.0, 0.0]])
        with pytest.raises(TypeError, match="min"):
            sys.modules["cupy"].clip(x, min=0.0)
    assert gpu.work == {1}


def test_memory_mapped_data_goes_to_the_gpu_a_batch_at_a_time(gpu, monkeypatch, tmp_path):
    """fit, predict and evaluate on a CUDA network copy a memory map's rows to the device one
    batch at a time (never X whole), and train the weights that the same data in memory trains."""
    cupy = sys.modules["cupy"]
    copied = []
    to_device = cupy.asarray

    def recorded(a, dtype=None, copy=None):
        if not isinstance(a, cupy.ndarray):
            copied.append(np.shape(a))
        return to_device(a, dtype=dtype, copy=copy)

    rng = np.random.default_rng(2)
    X, y = rng.normal(size=(200, 7)).astype(np.float32), rng.integers(0, 3, 200)
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "y.npy", y)
    Xm, ym = np.load(tmp_path / "X.npy", mmap_mode="r"), np.load(tmp_path / "y.npy", mmap_mode="r")
    weights = {}
    for name, (data, labels) in {"memory": (X, y), "mapped": (Xm, ym)}.items():
        net = bp.Sequential(bp.Dense(7, 4, activation="relu"), bp.Dense(4, 3), device="cuda", seed=1)
        if name == "mapped":
            monkeypatch.setattr(cupy, "asarray", recorded)
        bp.fit(net, data, labels, loss=bp.CrossEntropyLoss(), epochs=2, batch_size=16, validation_split=0.2,
               progress=False)
        bp.predict(net, data, batch_size=50)
        bp.evaluate(net, data, labels, bp.CrossEntropyLoss(), batch_size=50)
        weights[name] = bp.to_numpy(net.store.data)
    np.testing.assert_array_equal(weights["mapped"], weights["memory"])
    rows_of_x = [shape[0] for shape in copied if shape[1:] == (7,)]
    # 2 epochs of 10 batches, the validation set (40 rows) at its batch of 1024 twice, 4 + 4 batches
    # of 50 rows for predict and evaluate
    assert len(rows_of_x) == 2 * 10 + 2 + 4 + 4 and max(rows_of_x) == 50, rows_of_x
