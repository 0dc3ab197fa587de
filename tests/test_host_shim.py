"""The host emulation itself (kernels/host_shim.h, tests/host_kernels.py): small kernels written
here show that each hazard and each piece of GPU arithmetic the emulation claims to model is
really there, so that the kernel checks in test_kernels_host.py can rely on it."""

from __future__ import annotations

import numpy as np

from host_kernels import HostModule

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
