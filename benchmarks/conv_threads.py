"""Can fit's CNN step use a second core? The ways tried, timed on bench's CNNs (LeNet-5, the digits CNN).

    OPENBLAS_NUM_THREADS=1 python benchmarks/conv_threads.py split
    OPENBLAS_NUM_THREADS=2 python benchmarks/conv_threads.py layout
    OPENBLAS_NUM_THREADS=2 python benchmarks/conv_threads.py weight-gradient
    python benchmarks/conv_threads.py stream

split   the batch-sized NumPy work of the convolutions and the pooling (im2col, the stacks of
        per-image GEMMs, col2im, max pooling forward and backward) cut into two halves of the
        batch, one run by a second thread while this one runs the other (NumPy and BLAS release
        the GIL): "one thread" is fit as it is, "two threads" the same step with each of those
        calls split (every half writes its own rows of the same output arrays, so the weights
        come out the same bits: checked after the rounds). Run with OPENBLAS_NUM_THREADS=1 so
        BLAS itself adds no thread.
layout  Conv2D's column layouts: "image" for every convolution (a GEMM per image, which
        OpenBLAS runs on one core whatever its thread count: each is small), "batch below 17"
        (the batch layout, one GEMM for the batch, for output planes of 16 positions or fewer:
        the digits CNN's second convolution) and "batch" for every convolution. Run with the
        BLAS thread count to compare (bench uses 2).
weight-gradient
        the per-image layout's dL/dW on small output planes (the digits CNN's second
        convolution, 16 positions): a product per image and their sum, or one product over
        dL/dz and the columns laid out as rows (N OH OW, .), whose GEMM BLAS can thread.
stream  what splitting one call over two threads gains here: a float32 exp over 1.1 MiB (the
        size of LeNet's first activations) and a sin over 15 MiB (long enough that the hand-off
        to the second thread is small beside it), whole on this thread, or split in halves over
        two (microseconds a call, best of 7).

Seconds per step of one-epoch fits (`--clock cpu`: this process's CPU time, which counts every
thread's), medians (bests) of interleaved rounds.
"""

from __future__ import annotations

import argparse
import statistics
import time
import timeit
from concurrent.futures import ThreadPoolExecutor

import numpy as np

import backprop as bp
from backprop.apps import bench
from backprop.layers.conv import Conv2D

SPLIT_OPS = ("im2col", "col2im", "matmul", "max_pool_forward", "max_pool_backward")


def halves(n: int) -> tuple[slice, slice]:
    return slice(0, n // 2), slice(n // 2, n)


def split_over_the_batch(backend, pool: ThreadPoolExecutor) -> None:
    """Puts calls of SPLIT_OPS on `backend` (instance attributes, which `restore` takes away) that
    run each half of the batch in its own thread; calls without a batch axis to cut (2-D GEMMs,
    the batch layout) run as they are."""
    plain = {name: getattr(backend, name) for name in SPLIT_OPS}  # (restore left none of ours there)

    def both(first, second):
        later = pool.submit(second)
        done = first()
        return done, later.result()

    def im2col(x, kernel, stride, padding, out=None, layout="image"):
        if layout != "image" or out is None or x.shape[0] < 2:
            return plain["im2col"](x, kernel, stride, padding, out=out, layout=layout)
        a, b = halves(x.shape[0])
        both(lambda: plain["im2col"](x[a], kernel, stride, padding, out=out[a]),
             lambda: plain["im2col"](x[b], kernel, stride, padding, out=out[b]))
        return out

    def col2im(cols, shape, kernel, stride, padding, out=None, layout="image"):
        if layout != "image" or out is None or shape[0] < 2:
            return plain["col2im"](cols, shape, kernel, stride, padding, out=out, layout=layout)
        a, b = halves(shape[0])
        both(lambda: plain["col2im"](cols[a], (a.stop - a.start, *shape[1:]), kernel, stride, padding, out=out[a]),
             lambda: plain["col2im"](cols[b], (b.stop - b.start, *shape[1:]), kernel, stride, padding, out=out[b]))
        return out

    def matmul(x, y, transpose_a=False, transpose_b=False, out=None):
        if out is None or out.ndim != 3 or out.shape[0] < 2:
            return plain["matmul"](x, y, transpose_a, transpose_b, out)
        a, b = halves(out.shape[0])
        part = lambda m, s: m[s] if m.ndim == 3 else m  # noqa: E731
        both(lambda: plain["matmul"](part(x, a), part(y, a), transpose_a, transpose_b, out[a]),
             lambda: plain["matmul"](part(x, b), part(y, b), transpose_a, transpose_b, out[b]))
        return out

    def max_pool_forward(x, kernel, stride, out=None):
        if out is None or x.shape[0] < 2:
            return plain["max_pool_forward"](x, kernel, stride, out=out)
        a, b = halves(x.shape[0])
        (_, first), (_, second) = both(lambda: plain["max_pool_forward"](x[a], kernel, stride, out=out[a]),
                                       lambda: plain["max_pool_forward"](x[b], kernel, stride, out=out[b]))
        return out, np.concatenate([first, second])

    def max_pool_backward(grad_y, index, shape, kernel, stride, out=None):
        if out is None or shape[0] < 2:
            return plain["max_pool_backward"](grad_y, index, shape, kernel, stride, out=out)
        a, b = halves(shape[0])
        both(lambda: plain["max_pool_backward"](grad_y[a], index[a], (a.stop - a.start, *shape[1:]), kernel, stride,
                                                out=out[a]),
             lambda: plain["max_pool_backward"](grad_y[b], index[b], (b.stop - b.start, *shape[1:]), kernel, stride,
                                                out=out[b]))
        return out

    for name, function in (("im2col", im2col), ("col2im", col2im), ("matmul", matmul),
                           ("max_pool_forward", max_pool_forward), ("max_pool_backward", max_pool_backward)):
        setattr(backend, name, function)


def restore(backend) -> None:
    """Takes split_over_the_batch's calls away (an op bound there before is bound again on its next use)."""
    for name in SPLIT_OPS:
        backend.__dict__.pop(name, None)


def variants(mode: str) -> dict:
    """{name: (split the batch over two threads?, Conv2D's class settings to run under)}."""
    if mode == "split":
        return {"one thread": (False, {}), "two threads": (True, {})}
    if mode == "weight-gradient":
        return {"per image": (False, {"ROWS_WEIGHT_GRADIENT_MAX_POSITIONS": 0}),
                "over rows up to 16 positions": (False, {"ROWS_WEIGHT_GRADIENT_MAX_POSITIONS": 16})}
    return {"image": (False, {"IMAGE_LAYOUT_MIN_POSITIONS": 1}),
            "batch below 17": (False, {"IMAGE_LAYOUT_MIN_POSITIONS": 17}),
            "batch": (False, {"IMAGE_LAYOUT_MIN_POSITIONS": 10**9})}


def stream_table(pool: ThreadPoolExecutor) -> None:
    rng = np.random.default_rng(0)
    print("| ufunc | array | one thread | two threads |\n| --- | --- | --- | --- |")
    for ufunc, size in ((np.exp, 301_056), (np.sin, 4_000_000)):
        x = rng.standard_normal(size, dtype=np.float32)
        out = np.empty_like(x)
        half = size // 2

        def split(ufunc=ufunc, x=x, out=out, half=half):
            later = pool.submit(ufunc, x[half:], out=out[half:])
            ufunc(x[:half], out=out[:half])
            later.result()

        def whole_call(ufunc=ufunc, x=x, out=out):
            ufunc(x, out=out)

        whole = min(timeit.repeat(whole_call, number=20, repeat=7)) / 20
        two = min(timeit.repeat(split, number=20, repeat=7)) / 20
        size_text = f"{x.nbytes / 2**20:.1f} MiB float32"
        print(f"| {ufunc.__name__} | {size_text} | {whole * 1e6:,.0f} us | {two * 1e6:,.0f} us |")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("split", "layout", "weight-gradient", "stream"))
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall")
    args = parser.parse_args(argv)
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    settings_names = ("IMAGE_LAYOUT_MIN_POSITIONS", "ROWS_WEIGHT_GRADIENT_MAX_POSITIONS")
    keep = {name: getattr(Conv2D, name) for name in settings_names}
    pool = ThreadPoolExecutor(1)
    if args.mode == "stream":
        stream_table(pool)
        return
    chosen = variants(args.mode)
    print("| network | " + " | ".join(chosen) + " |")
    print("| --- |" + " --- |" * len(chosen))
    try:
        for arch in ("lenet", "digits_cnn"):
            config = bench.CONFIGS[arch]
            x, y = bench.make_data(config)
            runs = {}
            for name, (split, settings) in chosen.items():
                net, loss = bench.our_network(config)
                runs[name] = (net, loss, bp.SGD(net.parameters(), lr=0.01, momentum=0.9), split, settings)
            times = {name: [] for name in runs}
            for r in range(args.rounds + 1):
                for name in (list(runs) if r % 2 == 0 else list(runs)[::-1]):  # interleaved
                    net, loss, optimizer, split, settings = runs[name]
                    for setting, value in {**keep, **settings}.items():
                        setattr(Conv2D, setting, value)
                    if split:  # every network of a dtype shares one backend: split only for this run
                        split_over_the_batch(net.backend, pool)
                    start = clock()
                    try:
                        bp.fit(net, x, y, loss=loss, optimizer=optimizer, epochs=1, batch_size=config.batch,
                               shuffle=False, progress=False)
                    finally:
                        restore(net.backend)
                    if r:  # the first round warms up
                        times[name].append((clock() - start) / config.steps)
            print(f"| {arch} | " + " | ".join(f"{statistics.median(t) * 1e3:.2f} ms ({min(t) * 1e3:.2f})"
                                              for t in times.values()) + " |")
            if args.mode == "split":  # the same fits from the same start: the same weights, bit for bit
                weights = [np.concatenate([p.data.ravel() for p in run[0].parameters()]) for run in runs.values()]
                assert all(np.array_equal(weights[0], w) for w in weights[1:]), f"{arch}: the split changed the weights"
    finally:
        for setting, value in keep.items():
            setattr(Conv2D, setting, value)


if __name__ == "__main__":
    main()
