"""The GPU parity suite on a real device with real CuPy: the scenarios of test_cupy_double.py
(every op against the reference, training steps and fit against the NumPy backend, the
launcher's refusals), plus what only a GPU shows: run-to-run determinism and compiled kernels.
Marked `gpu`; skipped cleanly where detection finds no usable GPU. Without one, they run on the
CuPy double: `BACKPROP_CUPY_DOUBLE=gpu pytest -m gpu tests/test_gpu.py` (tests/conftest.py).
"""

from __future__ import annotations

import numpy as np
import pytest

import backprop as bp
from backprop.backends import devices
from backprop.kernels.loader import kernel_index
from op_cases import CASES
from gpu_scenarios import (OPTIMIZERS, Tolerance, check_fit, check_launcher_refusals, check_op_case,
                           check_training_steps)

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(devices.cuda_status()[0] == 0, reason=f"no usable GPU: {devices.cuda_status()[1]}"),
]

# A GPU contracts a*b + c into fused multiply-adds, uses CUDA's libm (exp, log, tanh within 2 ulp)
# and adds matmul terms in cuBLAS's order: wider than the double's bounds.
TOLERANCE = Tolerance(ulps=256, floor32=1e-5, training32=dict(rtol=1e-3, atol=1e-5),
                      training64=dict(rtol=1e-9, atol=1e-12))
SHAPES = [(1, 1), (3, 4), (17, 33), (64, 10), (300, 257)]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", CASES)
def test_every_op_matches_the_reference(case, dtype, shape):
    check_op_case(case, dtype, shape, TOLERANCE)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_training_steps_match_the_numpy_backend(optimizer, dtype):
    check_training_steps(optimizer, dtype, TOLERANCE)


def test_fit_matches_the_numpy_backend():
    check_fit(TOLERANCE)


def test_strided_views_and_wrong_dtypes_are_refused_by_our_launcher():
    check_launcher_refusals()


def test_every_kernel_loads_on_this_device():
    backend = bp.get_backend("cuda", "float32")
    for name in kernel_index():
        backend._kernels(name)  # compiles each module once, then looks the function up


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_training_is_deterministic_run_to_run(dtype):
    """No atomics anywhere: two identical runs give bit-identical weights and losses."""
    rng = np.random.default_rng(4)
    X, y = rng.normal(size=(512, 20)), rng.integers(0, 5, size=512)
    runs = []
    for _ in range(2):
        net = bp.Sequential(bp.Dense(20, 64, activation="relu"), bp.BatchNorm(64), bp.Dropout(0.1),
                            bp.Dense(64, 5), device="cuda", dtype=dtype, seed=0)
        history = bp.fit(net, X, y, loss=bp.CrossEntropyLoss(), optimizer=bp.Adam(net.parameters()),
                         epochs=2, batch_size=64, seed=1, progress=False)
        runs.append((bp.to_numpy(net.store.data), history["loss"]))
    np.testing.assert_array_equal(runs[0][0], runs[1][0])
    assert runs[0][1] == runs[1][1]
