"""Memory that fit allocates on data read from memory-mapped .npy files, by tracemalloc (which
sees NumPy's array buffers): the peak during fit above what was allocated before it, next to
the shuffle order's 8 bytes per sample and the size of X itself.

    python benchmarks/streamed_memory.py [--samples 20000 80000] [--widths 64 1024]
"""

from __future__ import annotations

import argparse
import tempfile
import tracemalloc
from pathlib import Path

import numpy as np

import backprop as bp


def peak_growth(folder: Path, samples: int, width: int) -> int:
    """Bytes fit allocates at its peak beyond what was allocated before it: 1 epoch, batch 256,
    a width-16-3 network, X float32 (samples, width) and y int64 memory-mapped."""
    rng = np.random.default_rng(0)
    X = np.lib.format.open_memmap(folder / "X.npy", mode="w+", dtype=np.float32, shape=(samples, width))
    for start in range(0, samples, 4096):
        X[start:start + 4096] = rng.standard_normal((min(4096, samples - start), width), dtype=np.float32)
    X.flush()
    np.save(folder / "y.npy", rng.integers(0, 3, samples))
    del X
    X, y = np.load(folder / "X.npy", mmap_mode="r"), np.load(folder / "y.npy", mmap_mode="r")
    net = bp.Sequential(bp.Dense(width, 16, activation="relu"), bp.Dense(16, 3), seed=0)
    optimizer = bp.Adam(net.parameters())
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    bp.fit(net, X, y, loss=bp.CrossEntropyLoss(), optimizer=optimizer, epochs=1, batch_size=256, progress=False)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak - before


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, nargs="+", default=[20000, 80000])
    parser.add_argument("--widths", type=int, nargs="+", default=[64, 1024])
    args = parser.parse_args()
    print(f"{'samples':>8} {'width':>6} {'X (MiB)':>8} {'8 B/sample (MiB)':>17} {'fit peak growth (MiB)':>22}")
    with tempfile.TemporaryDirectory() as folder:
        for samples in args.samples:
            for width in args.widths:
                growth = peak_growth(Path(folder), samples, width)
                print(f"{samples:>8} {width:>6} {samples * width * 4 / 2**20:>8.1f} {8 * samples / 2**20:>17.2f} "
                      f"{growth / 2**20:>22.2f}")


if __name__ == "__main__":
    main()
