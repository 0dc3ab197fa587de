"""Ways to compute max and average pooling in NumPy, timed on the benchmark networks' pooling
layers, 2x2 windows with stride 2 in float32 (benchmarks/RESULTS.md has the numbers; the NumPy
backend uses the fastest that keeps the ops' exact semantics):

    max forward
      copy_argmax   every window copied into a (N, C, OH, OW, kh kw) array, argmax, then
                    take_along_axis for the values
      running       the backend's: a running np.maximum over the kh kw strided views, the index
                    moved where the maximum strictly grew (bytes), int64 once at the end
      running_bits  the same, but the value selected with bit operations where it grew (the
                    first of tied zeros keeps its sign) instead of taken from np.maximum
    max backward
      fill_add      dx zero-filled, then each position's masked dy added into its strided view
      direct        the backend's: each position's where(index == k, dy, 0), by bit
                    operations, written straight into its view (windows do not overlap)
    average forward
      copy_add      the first view copied into y, the others added, then divided by kh kw
      pair_add      the backend's: the first two views added in one pass, then the same
    average backward
      fill_add      dx zero-filled, then dy / (kh kw) added into each strided view
      direct        the backend's: dy / (kh kw) divided straight into each view

    OPENBLAS_NUM_THREADS=1 python benchmarks/pool_alternatives.py
    OPENBLAS_NUM_THREADS=1 python benchmarks/pool_alternatives.py --fit

`--fit` times instead fit's step on bench's two CNNs and the pooling ops' share of it, by the
process's CPU time (other processes' load does not count); it uses only what every version of
the library has, so one install's numbers compare with another's.
"""

from __future__ import annotations

import statistics
import sys
import time
import timeit

import numpy as np

from backprop.backends import Backend, NumpyBackend

# (name, input shape): the pooling layers of LeNet-5 at batch 64 and of the digits CNN at 32.
LAYERS = [("lenet pool1", (64, 6, 28, 28)), ("lenet pool2", (64, 16, 10, 10)),
          ("digits pool1", (32, 32, 8, 8)), ("digits pool2", (32, 64, 4, 4))]
KERNEL = STRIDE = (2, 2)


def variants(shape):
    """The runs for one layer's input shape, each checked against the reference backend."""
    from backprop.backends.ops.max_pool import pool_views

    rng = np.random.default_rng(0)
    x = np.maximum(rng.standard_normal(shape, dtype=np.float32), 0.0)  # after relu: many tied zeros
    backend, reference = NumpyBackend("float32"), Backend(np, "float32")
    out_shape = (*shape[:2], shape[2] // 2, shape[3] // 2)
    y, dx = np.empty(out_shape, np.float32), np.empty(shape, np.float32)
    dy = rng.standard_normal(out_shape, dtype=np.float32)
    want_y, index = reference.max_pool_forward(x, KERNEL, STRIDE)
    windows = np.empty((*out_shape, 4), np.float32)
    grew, bool_work = np.empty(out_shape, np.bool_), np.empty(out_shape, np.bool_)
    step, positions = np.empty(out_shape, np.uint8), np.empty(out_shape, np.uint8)
    mask, term = np.empty(out_shape, np.int32), np.empty(out_shape, np.int32)

    def copy_argmax():
        view = np.lib.stride_tricks.sliding_window_view(x, KERNEL, axis=(2, 3))[:, :, ::2, ::2]
        np.copyto(windows.reshape(view.shape), view)
        chosen = windows.argmax(axis=-1)
        np.copyto(y, np.take_along_axis(windows, chosen[..., None], axis=-1)[..., 0])
        return y, chosen

    def running():
        return backend.max_pool_forward(x, KERNEL, STRIDE, out=y)

    def running_bits():
        views = [v.view(np.int32) for v in pool_views(x, KERNEL, STRIDE)]
        bits = y.view(np.int32)
        np.copyto(bits, views[0])
        positions.fill(0)
        for k in range(1, 4):
            np.greater(views[k].view(np.float32), y, out=grew)
            np.negative(grew.view(np.int8), out=mask)
            np.bitwise_xor(bits, views[k], out=term)
            np.bitwise_and(term, mask, out=term)
            np.bitwise_xor(bits, term, out=bits)
            np.multiply(grew, np.uint8(k), out=step)
            np.maximum(positions, step, out=positions)
        return y, positions.astype(np.int64)

    def max_fill_add():
        dx.fill(0.0)
        for k, target in enumerate(pool_views(dx, KERNEL, STRIDE)):
            np.multiply(dy, np.equal(index, k, out=bool_work), out=y)
            np.add(target, y, out=target)
        return dx

    def max_direct():
        return backend.max_pool_backward(dy, index, shape, KERNEL, STRIDE, out=dx)

    def avg_copy_add():
        views = pool_views(x, KERNEL, STRIDE)
        np.copyto(y, views[0])
        for view in views[1:]:
            np.add(y, view, out=y)
        return np.divide(y, np.float32(4), out=y)

    def avg_pair_add():
        return backend.avg_pool_forward(x, KERNEL, STRIDE, out=y)

    def avg_fill_add():
        dx.fill(0.0)
        np.divide(dy, np.float32(4), out=y)
        for target in pool_views(dx, KERNEL, STRIDE):
            np.add(target, y, out=target)
        return dx

    def avg_direct():
        return backend.avg_pool_backward(dy, shape, KERNEL, STRIDE, out=dx)

    for run in (copy_argmax, running, running_bits):
        got_y, got_index = run()
        np.testing.assert_array_equal(got_y, want_y)
        np.testing.assert_array_equal(got_index, index)
    want_dx = reference.max_pool_backward(dy, index, shape, KERNEL, STRIDE)
    for run in (max_fill_add, max_direct):
        np.testing.assert_array_equal(run(), want_dx)
    want_y = reference.avg_pool_forward(x, KERNEL, STRIDE)
    for run in (avg_copy_add, avg_pair_add):
        np.testing.assert_array_equal(run(), want_y)
    want_dx = reference.avg_pool_backward(dy, shape, KERNEL, STRIDE)
    for run in (avg_fill_add, avg_direct):
        np.testing.assert_array_equal(run(), want_dx)
    return {"max fwd copy_argmax": copy_argmax, "max fwd running": running, "max fwd running_bits": running_bits,
            "max bwd fill_add": max_fill_add, "max bwd direct": max_direct,
            "avg fwd copy_add": avg_copy_add, "avg fwd pair_add": avg_pair_add,
            "avg bwd fill_add": avg_fill_add, "avg bwd direct": avg_direct}


def main(rounds: int = 7, calls: int = 50) -> None:
    names = list(variants(LAYERS[0][1]))
    print("| layer | " + " | ".join(names) + " |")
    print("| --- |" + " --- |" * len(names))
    for layer, shape in LAYERS:
        runs = variants(shape)
        seconds = {name: [] for name in names}
        for r in range(rounds):  # interleaved, alternating the order
            for name in names[:: 1 if r % 2 == 0 else -1]:
                seconds[name].append(timeit.timeit(runs[name], number=calls) / calls)
        print(f"| {layer} | " + " | ".join(f"{statistics.median(seconds[name]) * 1e6:,.0f} us" for name in names) + " |")


POOLING_OPS = ("max_pool_forward", "max_pool_backward", "avg_pool_forward", "avg_pool_backward")


def fit_shares(fits: int = 5) -> None:
    """CPU time of fit's step on bench's CNNs (the median of `fits` one-epoch calls) and the
    pooling ops' share of it, each call timed where it runs."""
    import backprop as bp
    from backprop.apps.bench import CONFIGS, cnn_network, make_data

    print("| network | batch | step (CPU) | pooling share |")
    print("| --- | --- | --- | --- |")
    for name in ("lenet", "digits_cnn"):
        config = CONFIGS[name]
        net, x, y = cnn_network(name), *make_data(config)
        optimizer = bp.SGD(net.parameters(), lr=0.01, momentum=0.9)
        spent = [0.0]

        def timed(op, spent=spent):  # this network's counter, bound now
            def run(*args, **kwargs):
                start = time.process_time()
                result = op(*args, **kwargs)
                spent[0] += time.process_time() - start
                return result
            return run

        for op in POOLING_OPS:  # instance attributes, over the class's methods
            setattr(net.backend, op, timed(getattr(net.backend, op)))
        steps, shares = [], []
        for _ in range(fits + 1):  # the first warms up
            spent[0] = 0.0
            start = time.process_time()
            bp.fit(net, x, y, loss=bp.CrossEntropyLoss(), optimizer=optimizer, epochs=1, batch_size=config.batch,
                   shuffle=False, progress=False)
            total = time.process_time() - start
            steps.append(total / config.steps)
            shares.append(spent[0] / total)
        for op in POOLING_OPS:
            delattr(net.backend, op)
        print(f"| {name} | {config.batch} | {statistics.median(steps[1:]) * 1e3:.2f} ms | "
              f"{statistics.median(shares[1:]):.0%} |")


if __name__ == "__main__":
    fit_shares() if "--fit" in sys.argv[1:] else main()
