"""The hand-written, preallocated, single-purpose NumPy step of a CNN, for `python -m backprop bench`.

As bench_baseline.py is for Dense networks: what someone would write by hand for one network
and nothing else, float32, every array allocated once, softmax fused into the loss's gradient,
no checks, no metrics, 2x2 pooling written for the networks' even sizes, a pooled gradient sent
back through an equality mask. Each network gets the convolution layout that is fastest for it
(benchmarks/RESULTS.md): nothing imports this but the benchmark.

"rows" (the digits CNN: small images, where one GEMM for the batch beats a GEMM per image):
activations NHWC inside, so one layer's im2col rows are the next layer's input as they are; the
weight W (out, C kh kw), im2col rows X (N OH OW, C kh kw):
    forward     Z = X W^T + b,  A = relu(Z)              (rows (n, oh, ow), columns: channels)
    pool        P = max over each 2x2 window of A (by reshaping),  mask = [A == P]
    backward    dA = mask dP,  dZ = dA [A > 0],  dW = dZ^T X,  db = 1^T dZ,  dX = dZ W,
                dx = col2im(dX) (strided adds of each kernel position's columns)

"per_image" (LeNet: larger images, where im2col's copy along rows of output pixels is the
cheaper one): activations NCHW, im2col columns per image X[n] (C kh kw, OH OW):
    forward     Z[n] = W X[n] + b,  A = relu(Z)           (Z (N, out, OH OW): NCHW as it is)
    pool        P = the max of the 2x2 windows' four corners (strided views),  mask_c = [A_c == P]
    backward    dA_c = mask_c dP,  dZ = dA [A > 0],  dW = (sum over n of X[n] dZ[n]^T)^T,
                db = sums of dZ over n and (oh, ow),  dX[n] = W^T dZ[n],
                dx = col2im(dX) (the adds on a padded image laid out (H, W, N, C))
Dense layers, the loss and SGD with momentum as in bench_baseline.py.
"""

from __future__ import annotations

import numpy as np

# The two benchmark networks: (in channels, out channels, kernel, padding) per convolution (each
# followed by relu and 2x2 max pooling), the input image (C, H, W), the Dense widths after
# flattening, the dropout before the last Dense layer, and the convolutions' layout.
ARCHITECTURES = {
    "lenet": {"image": (1, 28, 28), "convs": [(1, 6, 5, 2), (6, 16, 5, 0)], "dense": (400, 120, 84, 10),
              "dropout": 0.0, "layout": "per_image"},
    "digits_cnn": {"image": (1, 8, 8), "convs": [(1, 32, 3, 1), (32, 64, 3, 1)], "dense": (256, 64, 10),
                   "dropout": 0.3, "layout": "rows"},
}


class _RowsConv:
    """One convolution + relu + 2x2 max pool, NHWC in and out, for batches of `batch`: im2col
    rows and one GEMM for the batch."""

    def __init__(self, batch, height, width, cin, cout, k, pad, rng):
        f32 = np.float32
        self.k, self.pad, self.cin, self.cout = k, pad, cin, cout
        self.out_h, self.out_w = height + 2 * pad - k + 1, width + 2 * pad - k + 1
        rows = batch * self.out_h * self.out_w
        self.padded = np.zeros((batch, height + 2 * pad, width + 2 * pad, cin), f32)
        self.cols = np.empty((rows, cin * k * k), f32)
        self.z = np.empty((rows, cout), f32)
        self.mask = np.empty((batch, self.out_h // 2, 2, self.out_w // 2, 2, cout), f32)
        self.pooled = np.empty((batch, self.out_h // 2, self.out_w // 2, cout), f32)
        self.dz = np.empty((rows, cout), f32)
        self.dcols = np.empty((rows, cin * k * k), f32)
        self.dpadded = np.empty_like(self.padded)
        self.weight = (rng.standard_normal((cout, cin * k * k)) * np.sqrt(2.0 / (cin * k * k))).astype(f32)
        self.bias = np.zeros(cout, f32)
        self.dweight, self.dbias = np.empty_like(self.weight), np.empty_like(self.bias)

    def forward(self, x):
        """x (N, H, W, C) -> the pooled activations (N, OH/2, OW/2, cout)."""
        p, k = self.pad, self.k
        self.padded[:, p:p + x.shape[1], p:p + x.shape[2], :] = x
        windows = np.lib.stride_tricks.sliding_window_view(self.padded, (k, k), axis=(1, 2))  # (N, OH, OW, C, k, k)
        np.copyto(self.cols.reshape(windows.shape), windows)
        np.matmul(self.cols, self.weight.T, out=self.z)
        self.z += self.bias
        np.maximum(self.z, 0.0, out=self.z)
        n = x.shape[0]
        a = self.z.reshape(n, self.out_h // 2, 2, self.out_w // 2, 2, self.cout)
        np.max(a, axis=(2, 4), out=self.pooled)
        np.equal(a, self.pooled[:, :, None, :, None, :], out=self.mask)
        return self.pooled

    def backward(self, dpooled, need_input_grad: bool):
        """dL/d(pooled) (N, OH/2, OW/2, cout) -> dL/dx (N, H, W, C), or None."""
        n = dpooled.shape[0]
        dz = self.dz.reshape(self.mask.shape)
        np.multiply(self.mask, dpooled[:, :, None, :, None, :], out=dz)
        dz *= self.z.reshape(dz.shape) > 0
        np.matmul(self.dz.T, self.cols, out=self.dweight)
        np.sum(self.dz, axis=0, out=self.dbias)
        if not need_input_grad:
            return None
        np.matmul(self.dz, self.weight, out=self.dcols)
        parts = self.dcols.reshape(n, self.out_h, self.out_w, self.cin, self.k, self.k)
        self.dpadded.fill(0.0)
        for i in range(self.k):
            for j in range(self.k):
                self.dpadded[:, i:i + self.out_h, j:j + self.out_w, :] += parts[:, :, :, :, i, j]
        p = self.pad
        return self.dpadded[:, p:self.dpadded.shape[1] - p, p:self.dpadded.shape[2] - p, :]


class _PerImageConv:
    """One convolution + relu + 2x2 max pool, NCHW in and out, for batches of `batch`: im2col
    columns per image and one GEMM per image (np.matmul over the stack)."""

    def __init__(self, batch, height, width, cin, cout, k, pad, rng):
        f32 = np.float32
        self.k, self.pad, self.cin, self.cout = k, pad, cin, cout
        self.h, self.w = height, width
        self.out_h, self.out_w = height + 2 * pad - k + 1, width + 2 * pad - k + 1
        positions, taps = self.out_h * self.out_w, cin * k * k
        self.padded = np.zeros((batch, cin, height + 2 * pad, width + 2 * pad), f32)
        self.cols = np.empty((batch, taps, positions), f32)
        self.z = np.empty((batch, cout, positions), f32)
        self.mask = np.empty((4, batch, cout, self.out_h // 2, self.out_w // 2), f32)
        self.pooled = np.empty((batch, cout, self.out_h // 2, self.out_w // 2), f32)
        self.dz = np.empty((batch, cout, positions), f32)
        self.dweight_per_image, self.dweight_t = np.empty((batch, taps, cout), f32), np.empty((taps, cout), f32)
        self.dbias_positions = np.empty((cout, positions), f32)
        self.ones, self.ones_positions = np.ones(batch, f32), np.ones(positions, f32)
        self.dcols = np.empty((batch, taps, positions), f32)
        self.dpadded = np.empty((height + 2 * pad, width + 2 * pad, batch, cin), f32)
        self.dx = np.empty((batch, cin, height, width), f32)
        self.weight = (rng.standard_normal((cout, taps)) * np.sqrt(2.0 / taps)).astype(f32)
        self.bias = np.zeros(cout, f32)
        self.dweight, self.dbias = np.empty_like(self.weight), np.empty_like(self.bias)

    def forward(self, x):
        """x (N, C, H, W) -> the pooled activations (N, cout, OH/2, OW/2)."""
        p, k, n = self.pad, self.k, x.shape[0]
        self.padded[:, :, p:p + self.h, p:p + self.w] = x
        windows = np.lib.stride_tricks.sliding_window_view(self.padded, (k, k), axis=(2, 3))  # (N, C, OH, OW, k, k)
        np.copyto(self.cols.reshape(n, self.cin, k, k, self.out_h, self.out_w), windows.transpose(0, 1, 4, 5, 2, 3))
        np.matmul(self.weight, self.cols, out=self.z)
        self.z += self.bias[:, None]
        np.maximum(self.z, 0.0, out=self.z)
        a = self.z.reshape(n, self.cout, self.out_h, self.out_w)
        corners = [a[:, :, i::2, j::2] for i in (0, 1) for j in (0, 1)]  # the 2x2 windows' four corners, views
        np.maximum(corners[0], corners[1], out=self.pooled)
        np.maximum(self.pooled, corners[2], out=self.pooled)
        np.maximum(self.pooled, corners[3], out=self.pooled)
        for corner, mask in zip(corners, self.mask):
            np.equal(corner, self.pooled, out=mask)
        return self.pooled

    def backward(self, dpooled, need_input_grad: bool):
        """dL/d(pooled) (N, cout, OH/2, OW/2) -> dL/dx (N, C, H, W), or None."""
        n, k = dpooled.shape[0], self.k
        dz = self.dz.reshape(n, self.cout, self.out_h, self.out_w)
        for corner, mask in enumerate(self.mask):
            i, j = divmod(corner, 2)
            np.multiply(mask, dpooled, out=dz[:, :, i::2, j::2])
        self.dz *= self.z > 0
        np.matmul(self.cols, self.dz.transpose(0, 2, 1), out=self.dweight_per_image)  # faster than dZ[n] X[n]^T
        np.dot(self.ones, self.dweight_per_image.reshape(n, -1), out=self.dweight_t.reshape(-1))
        np.copyto(self.dweight, self.dweight_t.T)
        np.dot(self.ones, self.dz.reshape(n, -1), out=self.dbias_positions.reshape(-1))  # GEMVs: faster than np.sum
        np.dot(self.dbias_positions, self.ones_positions, out=self.dbias)
        if not need_input_grad:
            return None
        np.matmul(self.weight.T, self.dz, out=self.dcols)
        parts = self.dcols.reshape(n, self.cin, k, k, self.out_h, self.out_w).transpose(4, 5, 0, 1, 2, 3)
        self.dpadded.fill(0.0)
        for i in range(k):
            for j in range(k):
                target = self.dpadded[i:i + self.out_h, j:j + self.out_w]
                target += parts[..., i, j]
        p = self.pad
        np.copyto(self.dx, self.dpadded[p:p + self.h, p:p + self.w].transpose(2, 3, 0, 1))
        return self.dx


class HandwrittenConvStep:
    """One SGD-with-momentum training step of a CNN of ARCHITECTURES, with integer labels; `layout`
    ("rows" or "per_image") overrides the network's own (benchmarks/conv_baseline_layouts.py)."""

    def __init__(self, arch: str, batch: int, lr: float = 0.01, momentum: float = 0.9, seed: int = 0,
                 layout: str | None = None):
        spec = ARCHITECTURES[arch]
        rng = np.random.default_rng(seed)
        f32 = np.float32
        self.lr, self.momentum, self.dropout = f32(lr), f32(momentum), spec["dropout"]
        _, height, width = spec["image"]
        self.per_image = (layout or spec["layout"]) == "per_image"
        self.convs = []
        for cin, cout, k, pad in spec["convs"]:
            conv = (_PerImageConv if self.per_image else _RowsConv)(batch, height, width, cin, cout, k, pad, rng)
            self.convs.append(conv)
            height, width = conv.out_h // 2, conv.out_w // 2
        widths = spec["dense"]
        self.W = [(rng.standard_normal((a, b)) * np.sqrt(2.0 / a)).astype(f32) for a, b in zip(widths, widths[1:])]
        self.b = [np.zeros(b, f32) for b in widths[1:]]
        self.dW, self.db = [np.empty_like(w) for w in self.W], [np.empty_like(b) for b in self.b]
        self.a = [np.empty((batch, w), f32) for w in widths[1:]]
        self.d = [np.empty((batch, w), f32) for w in widths[1:]]
        self.keep = np.empty((batch, widths[-2]), f32)
        self.dflat = np.empty((batch, widths[0]), f32)
        self.rng = np.random.default_rng(seed)
        self.params = [p for conv in self.convs for p in (conv.weight, conv.bias)] + self.W + self.b
        self.grads = [g for conv in self.convs for g in (conv.dweight, conv.dbias)] + self.dW + self.db
        self.velocity = [np.zeros_like(p) for p in self.params]
        self.index = np.arange(batch)

    def step(self, x, labels) -> None:
        """x (N, C, H, W) float32, labels (N,) int."""
        h = x if self.per_image else x.transpose(0, 2, 3, 1)  # NHWC for the rows layout, a view
        for conv in self.convs:
            h = conv.forward(h)
        flat = h.reshape(h.shape[0], -1)
        last = len(self.W) - 1
        for i, (w, b) in enumerate(zip(self.W, self.b)):
            np.matmul(flat, w, out=self.a[i])
            self.a[i] += b
            if i < last:
                np.maximum(self.a[i], 0.0, out=self.a[i])
                if self.dropout and i == last - 1:
                    np.less(self.rng.random(self.keep.shape, np.float32), 1.0 - self.dropout, out=self.keep)
                    self.keep *= np.float32(1.0 / (1.0 - self.dropout))
                    self.a[i] *= self.keep
            flat = self.a[i]
        # softmax cross-entropy: dL/dz = (softmax(z) - onehot) / N
        z, dz = self.a[last], self.d[last]
        np.subtract(z, z.max(axis=1, keepdims=True), out=dz)
        np.exp(dz, out=dz)
        dz /= dz.sum(axis=1, keepdims=True)
        dz[self.index, labels] -= 1.0
        dz *= np.float32(1.0 / z.shape[0])
        for i in range(last, -1, -1):
            below = self.a[i - 1] if i else h.reshape(h.shape[0], -1)
            np.matmul(below.T, self.d[i], out=self.dW[i])
            np.sum(self.d[i], axis=0, out=self.db[i])
            if i:
                np.matmul(self.d[i], self.W[i].T, out=self.d[i - 1])
                if self.dropout and i - 1 == last - 1:
                    self.d[i - 1] *= self.keep
                self.d[i - 1] *= self.a[i - 1] > 0
        grad = np.matmul(self.d[0], self.W[0].T, out=self.dflat).reshape(h.shape)
        for i in range(len(self.convs) - 1, -1, -1):
            grad = self.convs[i].backward(grad, need_input_grad=i > 0)
        for p, g, v in zip(self.params, self.grads, self.velocity):
            v *= self.momentum
            v += g
            p -= self.lr * v
