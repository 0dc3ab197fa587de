"""The hand-written CNN step (backprop/apps/bench_conv_baseline.py) in each convolution layout, on
each benchmark network: which one a person writing it by hand for that network would keep.

    rows       activations NHWC, im2col rows (N OH OW, C kh kw), one GEMM for the batch, 2x2
               pooling by reshaping
    per_image  activations NCHW, im2col columns per image (N, C kh kw, OH OW), one GEMM per image,
               2x2 pooling by the windows' four corners

    OPENBLAS_NUM_THREADS=2 python benchmarks/conv_baseline_layouts.py

Seconds per step over bench's batches, medians (bests) of 6 interleaved rounds of one pass each.
"""

from __future__ import annotations

import statistics
import time

from backprop.apps import bench
from backprop.apps.bench_conv_baseline import HandwrittenConvStep

LAYOUTS = ("rows", "per_image")


def main(rounds: int = 6) -> None:
    print("| network | " + " | ".join(LAYOUTS) + " |")
    print("| --- |" + " --- |" * len(LAYOUTS))
    for arch in ("lenet", "digits_cnn"):
        config = bench.CONFIGS[arch]
        x, y = bench.make_data(config)
        steps = {layout: HandwrittenConvStep(arch, config.batch, layout=layout) for layout in LAYOUTS}
        times = {layout: [] for layout in LAYOUTS}
        for r in range(rounds + 1):
            for layout in (LAYOUTS if r % 2 == 0 else LAYOUTS[::-1]):  # interleaved
                start = time.perf_counter()
                for first in range(0, x.shape[0], config.batch):
                    steps[layout].step(x[first:first + config.batch], y[first:first + config.batch])
                if r:  # the first round warms up
                    times[layout].append((time.perf_counter() - start) / (x.shape[0] // config.batch))
        print(f"| {arch} | " + " | ".join(f"{statistics.median(t) * 1e3:.2f} ms ({min(t) * 1e3:.2f})"
                                          for t in times.values()) + " |")


if __name__ == "__main__":
    main()
