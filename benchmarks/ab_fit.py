"""An interleaved A/B run of fit's training step (and of the public PyTorch-style loop) between two
installs of backprop: is a change any slower?

    python benchmarks/ab_fit.py --a OLD_VENV/bin/python --b NEW_VENV/bin/python [--rounds 10]

Each measurement runs in a fresh process of the install's own interpreter, with 2 BLAS threads
set before anything is imported; the two sides alternate (a b, b a, a b, ...) so that drift in
the machine's load falls on both alike. A measurement is bench's: fit over `steps` batches for
3 epochs (shuffle off, no progress), the median of 3 timed calls divided by the steps; the loop
is `loss(net(x), y); net.backward(loss.backward()); opt.step()` over the same batches. The
worker uses only the API both sides share, and defines its networks here (the runner's own
module moved between versions), with bench's configs and data.

`--clock cpu` times each block with `time.process_time()` instead of the wall clock: on a
machine shared with other jobs, the CPU time a process spends is disturbed far less than the
time it waits for a core (compare the bests then).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

CONFIGS = {  # widths, hidden activation, loss, batch, steps per timed block (bench's CONFIGS)
    "tiny": ((3, 4, 1), "sigmoid", "bce", 1, 2000),
    "small": ((64, 32, 10), "relu", "cross_entropy", 32, 1000),
    "medium": ((784, 256, 10), "relu", "cross_entropy", 128, 200),
    "large": ((784, 1024, 1024, 10), "relu", "cross_entropy", 512, 12),
}
THREADS = 2


def worker(name: str, side: str, clock: str = "wall", blocks: int = 3) -> list[float]:
    """Seconds per step of `side` ("fit" or "loop") on config `name`, one per timed block."""
    import numpy as np

    import backprop as bp

    widths, activation, loss_name, batch, steps = CONFIGS[name]
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch * steps, widths[0]), dtype=np.float32)
    if loss_name == "bce":
        y = rng.integers(0, 2, size=(batch * steps, 1)).astype(np.float32)
    else:
        y = rng.integers(0, widths[-1], size=batch * steps)
    pairs = list(zip(widths[:-1], widths[1:]))
    layers = [bp.Dense(a, b, activation=activation) for a, b in pairs[:-1]]
    layers.append(bp.Dense(*pairs[-1], activation="sigmoid" if loss_name == "bce" else None))
    net = bp.Sequential(*layers, dtype="float32", seed=0)
    loss = bp.BCELoss() if loss_name == "bce" else bp.CrossEntropyLoss()
    opt = bp.SGD(net.parameters(), lr=0.01, momentum=0.9)

    def fit() -> int:
        bp.fit(net, x, y, loss=loss, optimizer=opt, epochs=3, batch_size=batch, shuffle=False, progress=False)
        return 3 * steps

    def loop() -> int:
        for start in range(0, x.shape[0], batch):
            loss(net(x[start:start + batch]), y[start:start + batch])
            net.backward(loss.backward())
            opt.step()
        return steps

    run = fit if side == "fit" else loop
    now = time.process_time if clock == "cpu" else time.perf_counter
    run()  # warm up: workspaces and caches
    times = []
    for _ in range(blocks):
        start = now()
        count = run()
        times.append((now() - start) / count)
    return times


def measure(python: str, name: str, side: str, clock: str = "wall") -> list[float]:
    env = dict(os.environ, OMP_NUM_THREADS=str(THREADS), OPENBLAS_NUM_THREADS=str(THREADS),
               MKL_NUM_THREADS=str(THREADS))
    done = subprocess.run([python, os.path.abspath(__file__), "--worker", name, side, clock], env=env,
                          capture_output=True, text=True, cwd="/")  # cwd: never a checkout's own folder
    if done.returncode != 0:
        raise RuntimeError(f"{python} {name} {side} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--a", help="the interpreter of install A (before)")
    parser.add_argument("--b", help="the interpreter of install B (after)")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--configs", default=",".join(CONFIGS))
    parser.add_argument("--sides", default="fit,loop")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall")
    parser.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(*args.worker)))
        return 0
    print(f"load average before: {os.getloadavg()[0]:.2f}; {args.rounds} interleaved rounds x 3 blocks, "
          f"{THREADS} threads, float32, {args.clock} clock")
    print("| config | side | A median (best) | B median (best) | B - A (medians) | B / A |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name in args.configs.split(","):
        for side in args.sides.split(","):
            runs = {"a": [], "b": []}
            for r in range(args.rounds):
                for key in ("a", "b") if r % 2 == 0 else ("b", "a"):
                    runs[key] += measure(getattr(args, key), name, side, args.clock)
            a, b = statistics.median(runs["a"]), statistics.median(runs["b"])
            print(f"| {name} | {side} | {a * 1e6:,.1f} us ({min(runs['a']) * 1e6:,.1f}) | {b * 1e6:,.1f} us "
                  f"({min(runs['b']) * 1e6:,.1f}) | {(b - a) * 1e6:+,.1f} us | {b / a:.3f} |", flush=True)
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
