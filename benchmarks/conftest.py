"""Fixtures of the benchmark suites: one parameter per available backend, and `measure`, which
times an op with pytest-benchmark on the CPU and with CUDA-synchronized runs plus
`cupyx.profiler.benchmark` on a GPU, the first (cold: kernel compile, allocation) call apart.

Run: pytest benchmarks --benchmark-enable   (the test run never collects this folder)
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from backprop.backends import available_devices, get_backend


def _devices():
    return ["cpu"] + (["cuda"] if len(available_devices()) > 1 else [])


@pytest.fixture(params=_devices())
def backend(request):
    return get_backend(request.param, "float32")


def _synchronize(backend):
    if backend.device == "cpu":
        return lambda: None
    import cupy

    return cupy.cuda.get_current_stream().synchronize


@pytest.fixture
def measure(benchmark):
    """measure(backend, fn): benchmark fn(); the cold first call goes to extra_info["cold_s"]."""

    def run(backend, fn):
        sync = _synchronize(backend)
        start = time.perf_counter()
        fn()
        sync()
        benchmark.extra_info["cold_s"] = time.perf_counter() - start
        if backend.device != "cpu":
            from cupyx.profiler import benchmark as cuda_benchmark

            gpu = cuda_benchmark(fn, n_repeat=100, n_warmup=10).gpu_times
            benchmark.extra_info["cuda_event_median_us"] = float(np.median(gpu)) * 1e6

        def warm():
            fn()
            sync()

        benchmark(warm)

    return run


def device_array(backend, rng, shape, low=None, high=None):
    """A float32 array of `shape` on the backend: normal, or uniform in [low, high)."""
    host = rng.standard_normal(shape) if low is None else rng.uniform(low, high, size=shape)
    return backend.asarray(host)
