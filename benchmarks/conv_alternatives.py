"""Ways to compute a convolution's forward pass in NumPy, timed on the benchmark networks' layers
(benchmarks/RESULTS.md has the numbers; the library uses the fastest that keeps its layouts):

    swv_copy     im2col as sliding_window_view + one copy into (N OH OW, C kh kw) rows, one GEMM,
                 the rows laid out as NCHW (what Conv2D does on the CPU)
    as_strided   the same im2col through np.lib.stride_tricks.as_strided
    tensordot    np.tensordot of the window view with the weight (NumPy copies the view itself)
    batched      one GEMM per image: W (out, C kh kw) @ cols (N, C kh kw, OH OW) gives NCHW directly
    nhwc         activations NHWC inside: im2col from NHWC, the GEMM's rows are the output (no
                 layout change), as a network that kept NHWC between layers would
    batch        the batch layout: im2col into cols (C kh kw, N OH OW), one GEMM cols.T @ W.T
                 giving rows (N OH OW, out), the rows laid out as NCHW (what Conv2D does on small
                 output planes)

and, for the backward pass in the per-image layout (dZ (N, out, OH OW), cols (N, C kh kw, OH OW)):

    dW batched        dZ[n] @ cols[n].T for every n (np.matmul of the stacks), then the sum over n
    dW batched^T      cols[n] @ dZ[n].T for every n, the sum over n, then dW^T laid out as dW
                      (what Conv2D does on the CPU)
    dW transposed     dZ and cols copied to (out, N OH OW) and (C kh kw, N OH OW), one GEMM
    dW einsum         np.einsum("nop,nkp->ok", optimize=True)
    col2im rows       the kh kw window adds on an NCHW padded image (inner loops: a window's rows)
    col2im planes     the same adds on a padded image laid out (H, W, N, C) (inner loops: all N C
                      planes of one position), then one copy to NCHW (what Conv2D does on the CPU)

the whole backward pass (dW, dx) in each layout:

    bwd image         dW as "dW batched^T", dcols[n] = W.T @ dZ[n] per image, "col2im planes"
    bwd batch         dZ laid out as rows (N OH OW, out), dW = dZ.T @ cols.T and
                      dcols = W.T @ dZ.T (one GEMM each), col2im from cols (C kh kw, N OH OW)

and, to place the crossover between the layouts, Conv2D itself (forward and backward with dx,
ReLU, 3x3 padding 1, 32 -> 64 channels as the digits CNN's second layer) in each layout over
square images and batch sizes: the batch layout's time over the image layout's.

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
    cols_b = np.empty((c * k * k, n * oh * ow), np.float32)

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

    def batch():
        np.copyto(cols_b.reshape(c, k, k, n, oh, ow), windows().transpose(1, 4, 5, 0, 2, 3))
        np.dot(cols_b.T, w2d.T, out=z)
        np.copyto(y, z.reshape(n, oh, ow, out).transpose(0, 3, 1, 2))

    swv_copy()
    reference = y.copy()
    for check in (as_strided, tensordot, batched, batch):
        check()
        got = y_batched.reshape(y.shape) if check is batched else y
        np.testing.assert_allclose(got, reference, rtol=1e-4, atol=1e-4)
    return {"swv_copy": swv_copy, "as_strided": as_strided, "tensordot": tensordot, "batched": batched, "nhwc": nhwc,
            "batch": batch}


def backward_variants(n, c, h, w, out, k, pad):
    rng = np.random.default_rng(0)
    taps, oh, ow = c * k * k, h + 2 * pad - k + 1, w + 2 * pad - k + 1
    dz = rng.standard_normal((n, out, oh * ow), dtype=np.float32)
    cols = rng.standard_normal((n, taps, oh * ow), dtype=np.float32)
    dw, per_image = np.empty((out, taps), np.float32), np.empty((n, out, taps), np.float32)
    dw_t, per_image_t = np.empty((taps, out), np.float32), np.empty((n, taps, out), np.float32)
    ones = np.ones(n, np.float32)
    dz_t, cols_t = np.empty((out, n, oh * ow), np.float32), np.empty((taps, n, oh * ow), np.float32)
    parts = cols.reshape(n, c, k, k, oh, ow)
    padded = np.empty((n, c, h + 2 * pad, w + 2 * pad), np.float32)
    padded_hwnc = np.empty((h + 2 * pad, w + 2 * pad, n, c), np.float32)
    dx = np.empty((n, c, h, w), np.float32)

    def dw_batched():
        np.matmul(dz, cols.transpose(0, 2, 1), out=per_image)
        np.dot(ones, per_image.reshape(n, -1), out=dw.reshape(-1))

    def dw_batched_t():
        np.matmul(cols, dz.transpose(0, 2, 1), out=per_image_t)
        np.dot(ones, per_image_t.reshape(n, -1), out=dw_t.reshape(-1))
        np.copyto(dw, dw_t.T)

    def dw_transposed():
        np.copyto(dz_t, dz.transpose(1, 0, 2))
        np.copyto(cols_t, cols.transpose(1, 0, 2))
        np.dot(dz_t.reshape(out, -1), cols_t.reshape(taps, -1).T, out=dw)

    def dw_einsum():
        np.einsum("nop,nkp->ok", dz, cols, out=dw, optimize=True)

    def col2im_rows():
        padded.fill(0.0)
        for i in range(k):
            for j in range(k):
                target = padded[:, :, i:i + oh, j:j + ow]
                np.add(target, parts[:, :, i, j], out=target)
        np.copyto(dx, padded[:, :, pad:pad + h, pad:pad + w])

    def col2im_planes():
        padded_hwnc.fill(0.0)
        moved = parts.transpose(4, 5, 0, 1, 2, 3)
        for i in range(k):
            for j in range(k):
                target = padded_hwnc[i:i + oh, j:j + ow]
                np.add(target, moved[..., i, j], out=target)
        np.copyto(dx, padded_hwnc[pad:pad + h, pad:pad + w].transpose(2, 3, 0, 1))

    want = np.einsum("nop,nkp->ok", dz.astype(np.float64), cols.astype(np.float64))
    for check in (dw_batched, dw_batched_t, dw_transposed, dw_einsum):
        check()
        np.testing.assert_allclose(dw, want, rtol=1e-3, atol=1e-3)
    col2im_rows()
    first = dx.copy()
    col2im_planes()
    np.testing.assert_array_equal(dx, first)  # the same adds in the same order
    return {"dW batched": dw_batched, "dW batched^T": dw_batched_t, "dW transposed": dw_transposed, "dW einsum": dw_einsum,
            "col2im rows": col2im_rows, "col2im planes": col2im_planes}


def layout_backward_variants(n, c, h, w, out, k, pad):
    rng = np.random.default_rng(0)
    taps, oh, ow = c * k * k, h + 2 * pad - k + 1, w + 2 * pad - k + 1
    weight = rng.standard_normal((out, taps), dtype=np.float32)
    dz = rng.standard_normal((n, out, oh, ow), dtype=np.float32)
    cols = rng.standard_normal((n, taps, oh * ow), dtype=np.float32)
    cols_b = np.ascontiguousarray(cols.transpose(1, 0, 2)).reshape(taps, -1)
    dw, dw_t, per_image = np.empty((out, taps), np.float32), np.empty((taps, out), np.float32), np.empty((n, taps, out), np.float32)
    ones = np.ones(n, np.float32)
    dz_rows, dcols, dcols_b = np.empty((n * oh * ow, out), np.float32), np.empty_like(cols), np.empty_like(cols_b)
    padded_hwnc = np.empty((h + 2 * pad, w + 2 * pad, n, c), np.float32)
    dx, dws, dxs = np.empty((n, c, h, w), np.float32), {}, {}

    def col2im(parts):  # parts (OH, OW, N, C, k, k): the adds of "col2im planes"
        padded_hwnc.fill(0.0)
        for i in range(k):
            for j in range(k):
                target = padded_hwnc[i:i + oh, j:j + ow]
                np.add(target, parts[..., i, j], out=target)
        np.copyto(dx, padded_hwnc[pad:pad + h, pad:pad + w].transpose(2, 3, 0, 1))

    def bwd_image():
        flat = dz.reshape(n, out, -1)
        np.matmul(cols, flat.transpose(0, 2, 1), out=per_image)
        np.dot(ones, per_image.reshape(n, -1), out=dw_t.reshape(-1))
        np.copyto(dw, dw_t.T)
        np.matmul(weight.T, flat, out=dcols)
        col2im(dcols.reshape(n, c, k, k, oh, ow).transpose(4, 5, 0, 1, 2, 3))

    def bwd_batch():
        np.copyto(dz_rows.reshape(n, oh, ow, out), dz.transpose(0, 2, 3, 1))
        np.dot(dz_rows.T, cols_b.T, out=dw)
        np.dot(weight.T, dz_rows.T, out=dcols_b)
        col2im(dcols_b.reshape(c, k, k, n, oh, ow).transpose(4, 5, 3, 0, 1, 2))

    for check in (bwd_image, bwd_batch):
        check()
        dws[check], dxs[check] = dw.copy(), dx.copy()
    np.testing.assert_allclose(dws[bwd_batch], dws[bwd_image], rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(dxs[bwd_batch], dxs[bwd_image], rtol=1e-3, atol=1e-3)
    return {"bwd image": bwd_image, "bwd batch": bwd_batch}


def crossover(rounds: int, calls: int, sizes=(2, 3, 4, 6, 8, 12), batches=(16, 32, 64, 128),
              channels=(32, 64)) -> None:
    """Conv2D's forward + backward in each layout: the time of the batch layout over the image
    layout's, by output plane (OH OW) and batch size."""
    import backprop as bp

    threshold = bp.Conv2D.IMAGE_LAYOUT_MIN_POSITIONS
    print("| OH OW | " + " | ".join(f"batch {b}" for b in batches) + " |")
    print("| --- |" + " --- |" * len(batches))
    for size in sizes:
        ratios = []
        for batch in batches:
            conv = bp.Sequential(bp.Conv2D(*channels, 3, padding=1, activation="relu"),
                                 input_shape=(channels[0], size, size)).layers[0]
            x = np.random.default_rng(0).standard_normal((batch, channels[0], size, size), dtype=np.float32)
            grad = np.ones((batch, channels[1], size, size), np.float32)
            times = {"image": [], "batch": []}
            for r in range(rounds):
                for layout in (("image", "batch") if r % 2 == 0 else ("batch", "image")):  # interleaved
                    bp.Conv2D.IMAGE_LAYOUT_MIN_POSITIONS = 0 if layout == "image" else 10**9
                    start = time.perf_counter()
                    for _ in range(calls):
                        conv.forward(x, training=True)
                        conv.backward(grad, need_input_grad=True)
                    times[layout].append((time.perf_counter() - start) / calls)
            ratios.append(statistics.median(times["batch"]) / statistics.median(times["image"]))
        print(f"| {size * size} | " + " | ".join(f"{ratio:.2f}" for ratio in ratios) + " |")
    bp.Conv2D.IMAGE_LAYOUT_MIN_POSITIONS = threshold


def table(make, rounds: int, calls: int) -> None:
    keys = list(make(*LAYERS[0][1:]))
    print("| layer | " + " | ".join(keys) + " |")
    print("| --- |" + " --- |" * len(keys))
    for name, *geometry in LAYERS:
        runs = make(*geometry)
        times = {key: [] for key in runs}
        for r in range(rounds):
            for key in (list(runs) if r % 2 == 0 else list(runs)[::-1]):  # interleaved
                start = time.perf_counter()
                for _ in range(calls):
                    runs[key]()
                times[key].append((time.perf_counter() - start) / calls)
        print(f"| {name} | " + " | ".join(f"{statistics.median(t) * 1e6:,.0f} us" for t in times.values()) + " |")


def main(rounds: int = 7, calls: int = 50) -> None:
    table(variants, rounds, calls)
    print()
    table(backward_variants, rounds, calls)
    print()
    table(layout_backward_variants, rounds, calls)
    print()
    crossover(rounds, max(calls // 5, 3))


if __name__ == "__main__":
    main()
