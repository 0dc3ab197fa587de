"""The host emulation itself (kernels/host_shim.h, tests/host_kernels.py): small kernels written
here show that each hazard and each piece of GPU arithmetic the emulation claims to model is
really there, so that the kernel checks in test_kernels_host.py can rely on it."""

from __future__ import annotations

import numpy as np
import pytest

from host_kernels import Emulation, HostModule

DIMS = r"""
extern "C" __global__ void dims(long long* out) {
    long long* o = out + 8 * ((long long)blockIdx.x * blockDim.x + threadIdx.x);
    o[0] = threadIdx.y; o[1] = threadIdx.z; o[2] = blockIdx.y; o[3] = blockIdx.z;
    o[4] = blockDim.y; o[5] = blockDim.z; o[6] = gridDim.y; o[7] = gridDim.z;
}
"""


def test_the_unused_dimensions_read_as_on_a_gpu():
    """A 1-D launch on a GPU has threadIdx.y/z = blockIdx.y/z = 0 and blockDim.y/z =
    gridDim.y/z = 1, in every thread."""
    out = np.full((3 * 32, 8), -1, dtype=np.int64)
    HostModule(DIMS).function("dims")(3, 32, (out,))
    assert (out == [0, 0, 0, 0, 1, 1, 1, 1]).all(), out[0]


# Each thread appends its global index to `order` (on a GPU this would be a race; here it records
# the order in which the emulation runs threads).
ORDER = r"""
extern "C" __global__ void record_order(long long* order, long long* count) {
    order[count[0]++] = (long long)blockIdx.x * blockDim.x + threadIdx.x;
}
"""


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_blocks_and_threads_run_in_the_order_asked(reverse):
    order, count = np.full(3 * 5, -1, dtype=np.int64), np.zeros(1, dtype=np.int64)
    HostModule(ORDER, Emulation(reverse=reverse)).function("record_order")(3, 5, (order, count))
    expected = np.arange(15)
    np.testing.assert_array_equal(order, expected[::-1] if reverse else expected)


# Thread 0 reads shared memory before anything in its block has written it; then every thread
# writes it. On a GPU the read sees whatever the memory held: here, the poison.
STALE_SHARED = r"""
extern "C" __global__ void stale_shared(double* out) {
    __shared__ double scratch[64];
    if (threadIdx.x == 0) out[blockIdx.x] = scratch[0];
    __syncthreads();
    scratch[threadIdx.x] = 1.0;
    __syncthreads();
}
"""


def test_shared_memory_is_poisoned_before_every_block():
    """Without the poison, every block after the first would read the 1.0 its predecessor left."""
    out = np.zeros(4)
    HostModule(STALE_SHARED).function("stale_shared")(4, 64, (out,))
    assert np.isnan(out).all(), out


# x * y and x + 0 for float and double: under flush-to-zero a subnormal product becomes 0 and a
# subnormal input reads as 0, in float32 kernels only; also on the host threads that run a
# kernel with a barrier.
SUBNORMALS = r"""
extern "C" __global__ void subnormals_f32(const float* x, float* out) {
    out[0] = x[0] * x[1];
    out[1] = x[2] + 0.0f;
}
extern "C" __global__ void subnormals_f64(const double* x, double* out) {
    out[0] = x[0] * x[1];
    out[1] = x[2] + 0.0;
}
extern "C" __global__ void subnormals_after_barrier_f32(const float* x, float* out) {
    __syncthreads();
    if (threadIdx.x == 1) {
        out[0] = x[0] * x[1];
        out[1] = x[2] + 0.0f;
    }
}
"""


def test_flush_to_zero_applies_to_float32_kernels_while_they_run():
    """Flushed under the option, IEEE without it: also after a flushed launch on the same threads
    (the calling thread's and the pool threads' modes are restored)."""
    emulation = Emulation(flush_to_zero=True)
    if emulation.unavailable():
        pytest.skip(emulation.unavailable())
    kernels = [("subnormals_f32", np.float32, 1e-20), ("subnormals_after_barrier_f32", np.float32, 1e-20),
               ("subnormals_f64", np.float64, 1e-160)]
    for flush in (True, False):
        module = HostModule(SUBNORMALS, Emulation(flush_to_zero=flush))
        for name, dtype, tiny in kernels:
            x = np.array([tiny, tiny, np.finfo(dtype).smallest_subnormal], dtype=dtype)
            out = np.full(2, np.nan, dtype=dtype)
            module.function(name)(1, 2, (x, out))
            exact = [x[0] * x[1], x[2]]  # NumPy in this thread: IEEE with subnormals
            assert exact[0] != 0, "the calling thread's floating-point mode was not restored"
            expected = [0.0, 0.0] if flush and dtype == np.float32 else exact
            np.testing.assert_array_equal(out, expected, err_msg=f"{name}, flush={flush}")


FUSED = r"""
extern "C" __global__ void multiply_add_f32(const float* a, const float* b, const float* c, float* out) {
    out[0] = a[0] * b[0] + c[0];
}
"""


@pytest.mark.parametrize("fma", [False, True], ids=["separate", "fused"])
def test_fma_contraction_is_what_the_build_asks(fma):
    """(1 + 2^-12)(1 + 2^-13) - 1 = 2^-12 + 2^-13 + 2^-25: a fused multiply-add keeps the 2^-25
    that rounding the product to float32 first loses."""
    emulation = Emulation(fma=fma)
    if emulation.unavailable():
        pytest.skip(emulation.unavailable())
    a, b, c = (np.array([v], dtype=np.float32) for v in (1 + 2**-12, 1 + 2**-13, -1.0))
    out = np.zeros(1, dtype=np.float32)
    HostModule(FUSED, emulation).function("multiply_add_f32")(1, 1, (a, b, c, out))
    assert out[0] == (2**-12 + 2**-13 + (2**-25 if fma else 0.0))


LIBM = r"""
extern "C" __global__ void libm_f32(const float* x, float* out, long long n) {
    for (long long i = 0; i < n; ++i) {
        out[4 * i] = expf(x[i]);
        out[4 * i + 1] = tanhf(x[i]);
        out[4 * i + 2] = logf(fabsf(x[i]));
        out[4 * i + 3] = log1pf(fabsf(x[i]));
    }
}
extern "C" __global__ void libm_f64(const double* x, double* out, long long n) {
    for (long long i = 0; i < n; ++i) {
        out[4 * i] = exp(x[i]);
        out[4 * i + 1] = tanh(x[i]);
        out[4 * i + 2] = log(fabs(x[i]));
        out[4 * i + 3] = log1p(fabs(x[i]));
    }
}
"""
# CUDA's documented maximum errors, in ulps from the correctly rounded result (see host_shim.h).
CUDA_ULPS = {np.float32: [2, 2, 1, 1], np.float64: [1, 1, 1, 1]}


def _ulp_steps(got, want):
    """Signed number of representable values from `want` to `got` (same sign, finite)."""
    kind = np.int32 if got.dtype == np.float32 else np.int64
    ordered = [np.where(a < 0, -(np.abs(a).view(kind)), a.view(kind)).astype(np.int64) for a in (got, want)]
    return ordered[0] - ordered[1]


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_libm_results_move_by_cudas_documented_ulps_both_ways(dtype):
    emulation = Emulation(libm_ulps=True)
    x = np.random.default_rng(3).normal(0.0, 3.0, 2000).astype(dtype)
    out = np.zeros((x.size, 4), dtype=dtype)
    HostModule(LIBM, emulation).function(f"libm_{'f32' if dtype == np.float32 else 'f64'}")(1, 1, (x, out, x.size))
    wide = np.float64 if dtype == np.float32 else np.longdouble
    xw, absw = x.astype(wide), np.abs(x).astype(wide)
    correctly_rounded = np.stack([np.exp(xw), np.tanh(xw), np.log(absw), np.log1p(absw)], axis=1).astype(dtype)
    for j, name in enumerate(["exp", "tanh", "log", "log1p"]):
        steps = _ulp_steps(out[:, j], correctly_rounded[:, j])
        moved = steps[correctly_rounded[:, j] != 0]
        assert set(np.unique(np.abs(moved))) == {CUDA_ULPS[dtype][j]}, (name, np.unique(steps))
        assert (moved > 0).any() and (moved < 0).any(), name


# Every thread writes the same shared slot before the barrier (a data race on a GPU: the value
# thread 0 then reads is whichever write landed last), or only thread 0 does (no race).
SHARED_SLOT = r"""
extern "C" __global__ void shared_slot_f32(float* out, int every_thread_writes) {
    __shared__ float scratch[1];
    if (every_thread_writes || threadIdx.x == 0) scratch[0] = (float)threadIdx.x;
    __syncthreads();
    if (threadIdx.x == 0) out[blockIdx.x] = scratch[0];
}
"""


@pytest.mark.parametrize("race", [False, True], ids=["race-free", "planted-race"])
def test_thread_sanitizer_stops_a_data_race(race):
    emulation = Emulation(thread_sanitizer=True)
    if emulation.unavailable():
        pytest.skip(emulation.unavailable())
    out = np.full(2, np.nan, dtype=np.float32)
    kernel = HostModule(SHARED_SLOT, emulation).function("shared_slot_f32")
    if race:
        with pytest.raises(RuntimeError, match="ThreadSanitizer: data race"):
            kernel(2, 32, (out, np.int32(1)))
    else:
        kernel(2, 32, (out, np.int32(0)))
        np.testing.assert_array_equal(out, [0.0, 0.0])
