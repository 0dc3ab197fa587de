"""Ways to compute a convolution's forward pass in NumPy, timed on the benchmark networks' layers
(benchmarks/RESULTS.md has the numbers; the library uses the fastest that keeps its layouts):

    swv_copy     im2col as sliding_window_view + one copy into (N OH OW, C kh kw) rows, one GEMM,
                 the rows laid out as NCHW (what Conv2D does on the CPU)
    as_strided   the same im2col through np.lib.stride_tricks.as_strided
    tensordot    np.tensordot of the window view with the weight (NumPy copies the view itself)
    batched      one GEMM per image: W (out, C kh kw) @ cols (N, C kh kw, OH OW) gives NCHW directly
    nhwc         activations NHWC inside: im2col from NHWC, the GEMM's rows are the output (no
                 layout change), as a network that kept NHWC between layers would

    OPENBLAS_NUM_THREADS=1 python benchmarks/conv_alternatives.py
"""

from __future__ import annotations

import statistics
import time

import numpy as np

# (name, batch, C, H, W, out, k, pad): LeNet-5's two convolutions at batch 64, the digits CNN's at 32.
LAYERS = [("lenet conv1", 64, 1, 28, 28, 6, 5, 2), ("lenet conv2", 64, 6, 14, 14, 16, 5, 0),
          ("digits conv1", 32, 1, 8, 8, 32, 3, 1), ("digits conv2", 32, 32, 4, 4, 64, 3, 1)]


def variants(n, c, h, w, out, k, pad):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, c, h, w), dtype=np.float32)
    x_nhwc = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    weight = rng.standard_normal((out, c, k, k), dtype=np.float32)
    w2d = weight.reshape(out, -1)
    oh, ow = h + 2 * pad - k + 1, w + 2 * pad - k + 1
    padded = np.zeros((n, c, h + 2 * pad, w + 2 * pad), np.float32)
    padded_nhwc = np.zeros((n, h + 2 * pad, w + 2 * pad, c), np.float32)
    cols = np.empty((n * oh * ow, c * k * k), np.float32)
    cols_t = np.empty((n, c * k * k, oh * ow), np.float32)
    z = np.empty((n * oh * ow, out), np.float32)
    y = np.empty((n, out, oh, ow), np.float32)
    y_batched = np.empty((n, out, oh * ow), np.float32)

    def windows():
        padded[:, :, pad:pad + h, pad:pad + w] = x
        return np.lib.stride_tricks.sliding_window_view(padded, (k, k), axis=(2, 3))

    def swv_copy():
        np.copyto(cols.reshape(n, oh, ow, c, k, k), windows().transpose(0, 2, 3, 1, 4, 5))
        np.matmul(cols, w2d.T, out=z)
        np.copyto(y, z.reshape(n, oh, ow, out).transpose(0, 3, 1, 2))

    def as_strided():
        padded[:, :, pad:pad + h, pad:pad + w] = x
        s = padded.strides
        view = np.lib.stride_tricks.as_strided(padded, (n, oh, ow, c, k, k), (s[0], s[2], s[3], s[1], s[2], s[3]))
        np.copyto(cols.reshape(view.shape), view)
        np.matmul(cols, w2d.T, out=z)
        np.copyto(y, z.reshape(n, oh, ow, out).transpose(0, 3, 1, 2))

    def tensordot():
        result = np.tensordot(windows(), weight, axes=([1, 4, 5], [1, 2, 3]))  # (N, OH, OW, out)
        np.copyto(y, result.transpose(0, 3, 1, 2))

    def batched():
        np.copyto(cols_t.reshape(n, c, k, k, oh, ow), windows().transpose(0, 1, 4, 5, 2, 3))
        np.matmul(w2d, cols_t, out=y_batched)

    def nhwc():
        padded_nhwc[:, pad:pad + h, pad:pad + w, :] = x_nhwc
        view = np.lib.stride_tricks.sliding_window_view(padded_nhwc, (k, k), axis=(1, 2))  # (N, OH, OW, C, k, k)
        np.copyto(cols.reshape(view.shape), view)
        np.matmul(cols, w2d.T, out=z)

    swv_copy()
    reference = y.copy()
    for check in (as_strided, tensordot, batched):
        check()
        got = y_batched.reshape(y.shape) if check is batched else y
        np.testing.assert_allclose(got, reference, rtol=1e-4, atol=1e-4)
    return {"swv_copy": swv_copy, "as_strided": as_strided, "tensordot": tensordot, "batched": batched, "nhwc": nhwc}


def main(rounds: int = 7, calls: int = 50) -> None:
    print("| layer | " + " | ".join(variants(*LAYERS[0][1:]).keys()) + " |")
    print("| --- |" + " --- |" * 5)
    for name, *geometry in LAYERS:
        runs = variants(*geometry)
        times = {key: [] for key in runs}
        for r in range(rounds):
            for key in (list(runs) if r % 2 == 0 else list(runs)[::-1]):  # interleaved
                start = time.perf_counter()
                for _ in range(calls):
                    runs[key]()
                times[key].append((time.perf_counter() - start) / calls)
        print(f"| {name} | " + " | ".join(f"{statistics.median(t) * 1e6:,.0f} us" for t in times.values()) + " |")


if __name__ == "__main__":
    main()
