"""Every backend against the reference; the reference itself on array-api-strict; device strings."""

from __future__ import annotations

import inspect
import warnings

import numpy as np
import pytest

import backprop as bp
from backprop.backends import Backend, NumpyBackend, get_backend, ops
from backprop.backends import devices
from op_cases import CASES, COVERS, EXACT, OP_CASES, SHAPES, TRANSFER_HELPERS, run_case

DTYPES = ["float32", "float64"]
# Allowed distance from the reference, in units of the dtype's epsilon (relative) plus a floor:
# the NumPy backend evaluates the same formulas, but fused in-place passes and BLAS blocking
# may round differently (matmul accumulates over up to 35 terms here).
ULPS = 64
FLOOR = {"float32": 1e-6, "float64": 1e-13}


def assert_matches(got, want, dtype, exact, label):
    assert len(got) == len(want), label
    eps = np.finfo(dtype).eps
    for i, (g, w) in enumerate(zip(got, want)):
        if w is None:
            assert g is None, f"{label}[{i}]: reference returns None"
            continue
        g, w = np.asarray(g, dtype=np.float64), np.asarray(w, dtype=np.float64)
        assert g.shape == w.shape, f"{label}[{i}]: shape {g.shape} != {w.shape}"
        if exact:
            np.testing.assert_array_equal(g, w, err_msg=f"{label}[{i}] must equal the reference bit for bit")
        else:
            np.testing.assert_allclose(g, w, rtol=ULPS * eps, atol=FLOOR[dtype], err_msg=f"{label}[{i}]")


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES)
def test_numpy_backend_matches_reference(case, dtype, shape):
    reference = Backend(np, dtype)
    fast = NumpyBackend(dtype)
    for seed in (0, 1):
        want = run_case(reference, case, seed, shape)
        got = run_case(fast, case, seed, shape)
        assert_matches(got, want, dtype, case.split(":")[0] in EXACT, f"{case} seed {seed}")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("threshold", [0.1, np.float64(0.1), 1 / 3, np.float32(0.3), 0.5])
def test_threshold_counts_compare_in_the_arrays_dtype_whatever_the_thresholds_type(dtype, threshold):
    """A float32 score of 0.1 is above float32(0.1)? No; above float64 0.1? Yes. Thresholds are
    Python numbers in the op's contract, compared in the arrays' dtype, so a NumPy float64
    threshold may not change the answer on one backend only."""
    scores = np.array([[0.1, 0.3, 1 / 3, 0.5, 0.7]], dtype=dtype)
    target = np.array([[1.0, 0.0, 1.0, 0.0, 1.0]], dtype=dtype)
    ref, fast = Backend(np, dtype=dtype), NumpyBackend(dtype)
    want = float(ref.count_threshold_matches(scores, target, float(threshold), 0.5))
    assert float(ref.count_threshold_matches(scores, target, threshold, 0.5)) == want
    assert float(fast.count_threshold_matches(scores, target, threshold, 0.5)) == want


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES)
def test_reference_is_pure_array_api(case, dtype):
    """The reference runs on array-api-strict (which refuses anything outside the standard)
    and computes the same numbers as on NumPy: the abstraction is honest."""
    xp = pytest.importorskip("array_api_strict")
    strict = Backend(xp, dtype)
    on_numpy = Backend(np, dtype)
    want = run_case(on_numpy, case, 3, (5, 6))
    got = run_case(strict, case, 3, (5, 6))
    assert_matches(got, want, dtype, True, f"{case} on array-api-strict")


def _backend_classes():
    """Every Backend subclass in backprop.backends (importing them must not need CuPy)."""
    import importlib
    import pkgutil

    import backprop.backends as package

    classes = []
    for info in pkgutil.iter_modules(package.__path__):
        module = importlib.import_module(f"backprop.backends.{info.name}")
        classes += [c for c in vars(module).values()
                    if inspect.isclass(c) and issubclass(c, Backend) and c is not Backend and c not in classes]
    return classes


def test_importing_the_cupy_backend_needs_no_cupy(monkeypatch):
    import importlib
    import importlib.util
    import sys

    if importlib.util.find_spec("backprop.backends.cupy_backend") is None:
        pytest.fail("backprop.backends.cupy_backend is missing")
    monkeypatch.setitem(sys.modules, "cupy", None)  # `import cupy` now raises ImportError
    sys.modules.pop("backprop.backends.cupy_backend", None)
    module = importlib.import_module("backprop.backends.cupy_backend")
    assert issubclass(module.CupyBackend, Backend)
    sys.modules.pop("backprop.backends.cupy_backend", None)


@pytest.mark.parametrize("cls", _backend_classes(), ids=lambda c: c.__name__)
def test_subclasses_override_only_reference_ops_with_identical_signatures(cls):
    for name, member in vars(cls).items():
        if name.startswith("__") or not callable(member):
            continue
        if name.startswith("_"):
            continue  # private helpers of the subclass are its own business
        assert hasattr(Backend, name), f"{cls.__name__}.{name} is not an op of the reference Backend"
        base_sig = inspect.signature(getattr(Backend, name))
        assert inspect.signature(member) == base_sig, (
            f"{cls.__name__}.{name}{inspect.signature(member)} differs from Backend.{name}{base_sig}")


def test_every_fused_op_runs_in_a_case_and_its_implementations_share_its_signature():
    """Each fused op of backends/ops/ is called by some op case (a fresh backend binds an op on its
    first call, so what the cases bound is what they ran), and every implementation takes exactly
    the reference's arguments."""
    backend = Backend(np, "float64")
    for name in OP_CASES:
        run_case(backend, name, 0, (3, 4))
    for name, op in ops.load_all().items():
        assert name in vars(backend), f"fused op {name} ({op.module}) runs in no case: add one with @{name}.case()"
        for flavor, implementation in op.implementations.items():
            assert inspect.signature(implementation) == inspect.signature(op.reference), (name, flavor)


def test_backend_files_name_no_fused_op():
    """The backends find fused ops by name: none of their own files names one."""
    import pathlib
    import re

    import backprop.backends as package

    folder = pathlib.Path(package.__file__).parent
    for path in ("base.py", "numpy_backend.py", "cupy_backend.py"):
        text = (folder / path).read_text()
        named = [name for name in ops.load_all() if re.search(rf"\b{name}\b", text)]
        assert not named, f"backends/{path} names the fused ops {named}"


def test_an_unknown_op_is_an_attribute_error_naming_it():
    with pytest.raises(AttributeError, match="no_such_op"):
        Backend(np).no_such_op


def test_every_reference_op_is_covered_by_a_case():
    for name, member in vars(Backend).items():
        if name.startswith("_") or not callable(member) or name in TRANSFER_HELPERS:
            continue
        assert name in COVERS, f"op {name} has no case in tests/op_cases.py (add one and a COVERS entry)"
        assert any(case.startswith(COVERS[name]) for case in CASES), f"no case starts with {COVERS[name]!r}"


# ---------------------------------------------------------------------- device strings


def test_cpu_is_the_default_with_float32():
    backend = get_backend()
    assert isinstance(backend, NumpyBackend) and backend.dtype_name == "float32" and backend.device == "cpu"
    assert get_backend("cpu", "float64").dtype == np.float64
    assert get_backend("CPU") is backend


@pytest.mark.parametrize("bad", ["gpu", "cuda:", "cuda:-1", "cuda:x", "tpu", ""])
def test_unknown_device_is_a_value_error(bad):
    with pytest.raises(ValueError, match="device must be"):
        get_backend(bad)


def test_device_must_be_a_string():
    with pytest.raises(TypeError, match="device must be a string"):
        get_backend(0)


def test_bad_dtype_is_refused():
    with pytest.raises(ValueError, match="dtype must be 'float32' or 'float64', got 'float16'"):
        get_backend("cpu", "float16")


def _pretend_no_gpu(monkeypatch, reason="CuPy is not installed; install it"):
    monkeypatch.setattr(devices, "cuda_status", lambda: (0, reason))


def test_named_gpu_without_one_says_why_and_how_to_fix(monkeypatch):
    _pretend_no_gpu(monkeypatch, f"CuPy is not installed (ImportError); {devices.INSTALL_HINT}")
    with pytest.raises(bp.DeviceUnavailableError) as info:
        get_backend("cuda:1")
    assert isinstance(info.value, RuntimeError)
    assert "CuPy is not installed" in str(info.value)
    assert 'pip install "backprop-gpu[cuda12]"' in str(info.value)


def test_gpu_index_past_the_last_device(monkeypatch):
    monkeypatch.setattr(devices, "cuda_status", lambda: (1, ""))
    with pytest.raises(bp.DeviceUnavailableError, match="has 1 GPU"):
        devices.resolve_device("cuda:3")


def test_auto_falls_back_to_cpu_with_one_warning(monkeypatch):
    _pretend_no_gpu(monkeypatch)
    devices._warn_auto_fallback.cache_clear()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert devices.resolve_device("auto") == "cpu"
        assert devices.resolve_device("auto") == "cpu"
    assert len([w for w in caught if "device='auto' is using the CPU" in str(w.message)]) == 1


def test_the_auto_warning_points_at_the_users_line(monkeypatch):
    """However deep inside the library "auto" is resolved, the warning names the caller's line."""
    _pretend_no_gpu(monkeypatch)
    for make in (lambda: bp.Sequential(bp.Dense(2, 1), device="auto"), lambda: devices.resolve_device("auto")):
        devices._warn_auto_fallback.cache_clear()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            make()
        (warning,) = [w for w in caught if "device='auto'" in str(w.message)]
        assert warning.filename == __file__, warning.filename


def test_detection_here_never_raises_and_is_cached():
    first = devices.cuda_status()
    assert devices.cuda_status() is first
    count, reason = first
    assert bp.available_devices()[0] == "cpu"
    assert len(bp.available_devices()) == 1 + count
    if count == 0:
        assert reason, "no GPU must come with a reason"
