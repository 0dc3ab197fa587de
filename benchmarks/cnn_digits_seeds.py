"""Test accuracy of `python -m backprop train --model cnn` over seeds 0-9, as benchmarks/RESULTS.md
reports it: each seed is one run of the command (its own split, weights, shuffles and dropout).

    OPENBLAS_NUM_THREADS=1 python benchmarks/cnn_digits_seeds.py [extra train flags...]
"""

from __future__ import annotations

import re
import statistics
import subprocess
import sys
import tempfile
import time


def main(extra: list[str]) -> None:
    accuracies = []
    for seed in range(10):
        with tempfile.TemporaryDirectory() as out:
            start = time.perf_counter()
            result = subprocess.run([sys.executable, "-m", "backprop", "train", "--model", "cnn", "--seed", str(seed),
                                     "--device", "cpu", "--out", out, *extra],
                                    capture_output=True, text=True, check=True)
            seconds = time.perf_counter() - start
        accuracy = float(re.search(r"^test accuracy ([\d.]+)%", result.stdout, re.M).group(1))
        epochs = re.search(r"^time      (\d+) epochs", result.stdout, re.M).group(1)
        accuracies.append(accuracy)
        print(f"seed {seed}: {accuracy:.2f} %  ({epochs} epochs, {seconds:.1f} s)", flush=True)
    print(f"median {statistics.median(accuracies):.2f} %, min {min(accuracies):.2f} %, max {max(accuracies):.2f} %")


if __name__ == "__main__":
    main(sys.argv[1:])
