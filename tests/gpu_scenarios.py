"""The GPU parity scenarios, run by test_cupy_double.py (CuPy replaced by a test double that runs
the host build of our kernels) and by test_gpu.py (real CuPy on a real GPU): every op against the
reference, training steps and fit against the NumPy backend, and the launcher's refusals.

Each takes a `Tolerance`: the double runs the very arithmetic of the host build, a GPU adds fused
multiply-adds, CUDA's libm and cuBLAS's summation order. Matmuls are held to an error bound
instead (`gemm_bound`): no constant fits every summation order and shape. Every other inexact op
is held to the exact result (the reference in a wider type), within the tolerance plus the
reference's own error in the dtype (`check_op_case`): a sum of many cancelling terms added in
order by NumPy (a column sum over 300 rows) can be further from exact than a kernel's tree.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

import backprop as bp
from backprop.backends import Backend
from op_cases import EXACT, run_case


@dataclass(frozen=True)
class Tolerance:
    ulps: float            # op cases: relative, in units of eps
    floor32: float         # op cases: absolute floor in float32 (float64: floor32 * 1e-7)
    training32: dict       # assert_allclose keywords for whole-network comparisons
    training64: dict

    def training(self, dtype: str) -> dict:
        return self.training32 if dtype == "float32" else self.training64


# The type that stands for exact arithmetic beside each dtype, as in test_kernels_host.py.
WIDER = {"float32": np.float64, "float64": np.longdouble}


class _Operands(Backend):
    """The reference in `wide` (float64 by default) on each input of a case rounded to `dtype`,
    then transformed: by np.abs, a matmul case's products become (|A| |B|)_ij; by np.ones_like,
    the number of terms K_ij of each sum; by nothing, the exact result of the case's inputs."""

    def __init__(self, dtype: str, transform=lambda a: a, wide=np.float64):
        super().__init__(np, "float64")
        self.dtype = wide
        self.rounded, self.transform = dtype, transform

    def asarray(self, host_array):
        return super().asarray(self.transform(np.asarray(host_array, dtype=self.rounded)))


def gemm_bound(case: str, dtype: str, shape) -> list[np.ndarray]:
    """For each product of a matmul case, the most two computations of C = A B in `dtype` can
    differ by, whatever their summation orders and fused multiply-adds: each is within
    gamma_K (|A| |B|)_ij of the exact product, gamma_K = K u / (1 - K u), u = eps / 2 (Higham,
    Accuracy and Stability of Numerical Algorithms, 2nd ed., eq. 3.13), so 2 gamma_K (|A| |B|)_ij.
    Gradual underflow aside: the case's inputs are far from it."""
    u = np.finfo(dtype).eps / 2
    products = run_case(_Operands(dtype, np.abs), case, 0, shape)
    terms = run_case(_Operands(dtype, np.ones_like), case, 0, shape)
    return [2 * k * u / (1 - k * u) * p for k, p in zip(terms, products)]


def _host(value, backend):
    """op_cases leaves device arrays that subclass np.ndarray (the double's) as they are."""
    return backend.to_host(value) if value is not None and backend.owns(value) else value


def check_op_case(case: str, dtype: str, shape, tolerance: Tolerance, device: str = "cuda") -> None:
    backend = bp.get_backend(device, dtype)
    want = run_case(Backend(np, dtype), case, 0, shape)
    got = [_host(g, backend) for g in run_case(backend, case, 0, shape)]
    assert len(got) == len(want), case
    floor = tolerance.floor32 if dtype == "float32" else tolerance.floor32 * 1e-7
    bounds = gemm_bound(case, dtype, shape) if case == "matmul" else None
    rounds = case.split(":")[0] not in EXACT and any(w is not None and w.dtype.kind == "f" for w in want)
    exact = run_case(_Operands(dtype, wide=WIDER[dtype]), case, 0, shape) if rounds else want
    for i, (g, w, e) in enumerate(zip(got, want, exact)):
        label = f"{case}[{i}]"
        if w is None:
            assert g is None, f"{label}: the reference returns None"
        elif bounds is not None:
            outside = np.abs(g.astype(np.float64) - w) > bounds[i]
            assert not outside.any(), (f"{label}: {outside.sum()} of {outside.size} elements beyond the GEMM error "
                                       f"bound, the largest {np.abs(g - w)[outside].max():.3g}")
        elif not rounds or w.dtype.kind != "f":
            np.testing.assert_array_equal(g, w, err_msg=f"{label} must equal the reference bit for bit")
        else:
            # the kernel may be as far from exact as the reference in the dtype is, plus the tolerance
            g, w, e = (np.asarray(a, dtype=WIDER[dtype]) for a in (g, w, e))
            allowed = np.abs(w - e) + tolerance.ulps * np.finfo(dtype).eps * np.abs(e) + floor
            outside = ~(np.abs(g - e) <= allowed) & ~((g == e) | (np.isnan(g) & np.isnan(e)))
            assert not outside.any(), (
                f"{label}: {outside.sum()} of {outside.size} elements further from exact than the reference "
                f"in {dtype} plus the tolerance; at the first, index {np.argwhere(outside)[0].tolist()}: "
                f"got {g[outside][0]!r}, reference {w[outside][0]!r}, exact {e[outside][0]!r}")


def _network(device, dtype):
    return bp.Sequential(
        bp.Dense(6, 16, activation="gelu"), bp.BatchNorm(16), bp.Dropout(0.25),
        bp.Dense(16, 12, activation="tanh", l2=1e-3), bp.Dense(12, 4),
        device=device, dtype=dtype, seed=3)


OPTIMIZERS = {
    "sgd_nesterov": lambda p: bp.SGD(p, lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-3),
    "adam": lambda p: bp.Adam(p, lr=1e-2, weight_decay=1e-3),
    "adamw": lambda p: bp.AdamW(p, lr=1e-2),
}


def check_training_steps(optimizer: str, dtype: str, tolerance: Tolerance, device: str = "cuda") -> None:
    """Forward, loss, backward and update, five steps, on both backends from the same seed: the
    loss, the gradients and the weights agree after every step, and the arrays stay on the GPU."""
    rng = np.random.default_rng(0)
    X, labels = rng.normal(size=(40, 6)), rng.integers(0, 4, size=40)
    nets = {name: _network(name, dtype) for name in ("cpu", device)}
    optimizers = {name: OPTIMIZERS[optimizer](net.parameters()) for name, net in nets.items()}
    losses = {name: bp.CrossEntropyLoss() for name in nets}
    close = tolerance.training(dtype)
    cpu, gpu = nets["cpu"], nets[device]
    for step in range(5):
        values = {}
        for name, net in nets.items():
            net.train()
            batch = slice(8 * step, 8 * step + 8)
            values[name] = losses[name](net(X[batch]), labels[batch])
            net.backward(losses[name].backward())
        assert gpu.backend.owns(gpu.store.grad) and gpu.backend.owns(gpu.store.data), "left the device"
        np.testing.assert_allclose(values[device], values["cpu"], **close, err_msg=f"loss, step {step}")
        np.testing.assert_allclose(bp.to_numpy(gpu.store.grad), cpu.store.grad, **close,
                                   err_msg=f"gradients, step {step}")
        for opt in optimizers.values():
            opt.step()
        np.testing.assert_allclose(bp.to_numpy(gpu.store.data), cpu.store.data, **close,
                                   err_msg=f"weights after step {step}")
    np.testing.assert_allclose(bp.predict(gpu, X), bp.predict(cpu, X), **close, err_msg="predict")


def check_fit(tolerance: Tolerance, device: str = "cuda") -> None:
    """fit end to end (shuffled batches, dropout, BatchNorm, validation, accuracy) in float64."""
    rng = np.random.default_rng(1)
    X = rng.normal(size=(60, 6))
    y = (X[:, 0] + X[:, 1] ** 2 > 1.0).astype(np.float64)
    results = {}
    for name in ("cpu", device):
        net = bp.Sequential(bp.Dense(6, 8, activation="relu"), bp.BatchNorm(8), bp.Dropout(0.2),
                            bp.Dense(8, 1), device=name, dtype="float64", seed=5)
        history = bp.fit(net, X, y, loss=bp.BCEWithLogitsLoss(), optimizer=bp.Adam(net.parameters(), lr=0.01),
                         epochs=3, batch_size=16, validation_split=0.2, seed=2, progress=False)
        results[name] = (history, bp.to_numpy(net.store.data))
    (h_gpu, w_gpu), (h_cpu, w_cpu) = results[device], results["cpu"]
    close = tolerance.training("float64")
    np.testing.assert_allclose(w_gpu, w_cpu, **close)
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        np.testing.assert_allclose(h_gpu[key], h_cpu[key], **close, err_msg=key)


def check_launcher_refusals() -> None:
    """Strided views and wrong dtypes never reach a kernel (CuPy would pass their raw pointers)."""
    backend = bp.get_backend("cuda", "float32")
    x = backend.asarray(np.arange(24.0).reshape(4, 6))
    with pytest.raises(ValueError, match="sigmoid_fwd_f32: argument 'x' .*must be C-contiguous"):
        backend.activation_forward(x[:, ::2], "sigmoid")
    with pytest.raises(ValueError, match="must be C-contiguous"):
        backend.add_scaled(x.T, x.T, 1.0)
    other = bp.get_backend("cuda", "float64").asarray(np.ones((4, 6)))
    with pytest.raises(TypeError, match="must hold float32, got float64"):
        backend.add_scaled(x, other, 1.0)
