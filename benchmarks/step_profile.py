"""Where a small network's training step goes: fit's step part by part, beside the hand-written one.

    python benchmarks/step_profile.py [--configs tiny,small] [--calls 20000]

For each config of `python -m backprop bench` (its networks and data), prints:
- a per-call timer over the parts of fit's step, each part called `--calls` times on one batch
  and timed by this thread's CPU time (`time.thread_time`: other processes' load does not
  count), best of 5: the batch source, forward, the loss and its gradient, backward, the
  penalty's join (`finish`), the checked update (finiteness check + optimizer), accuracy's
  count; then the whole step (`TrainStep`, the guarded step as fit calls it), the public
  PyTorch-style loop's step (`loss(net(x), y); net.backward(loss.backward()); opt.step()`) and
  the hand-written step (backprop/apps/bench_baseline.py);
- cProfile's Python-level calls per step of fit and of the loop, and the functions that make
  them (the NumPy calls inside a function count as its own time, not as calls).

Parts timed alone run hotter in the caches than inside a step, so they need not add up to the
step exactly; what they show is where the step's time is and what exists only in ours.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import time
import timeit

os.environ.setdefault("OPENBLAS_NUM_THREADS", "2")
os.environ.setdefault("OMP_NUM_THREADS", "2")

import numpy as np  # noqa: E402

import backprop as bp  # noqa: E402
from backprop import training  # noqa: E402
from backprop.apps import bench  # noqa: E402
from backprop.apps.bench_baseline import HandwrittenStep  # noqa: E402


def per_call_us(fn, calls: int) -> float:
    """Microseconds of this thread's CPU time per call of fn(), best of 5 runs of `calls` calls."""
    fn()
    return min(timeit.repeat(fn, number=calls, repeat=5, timer=time.thread_time)) / calls * 1e6


def fit_internals(config):
    """fit's own objects for the config's network and data, as fit builds them (bench's settings)."""
    net, loss = bench.our_network(config)
    optimizer = bp.SGD(net.parameters(), lr=0.01, momentum=0.9)
    x, y = bench.make_data(config)
    bp.fit(net, x, y, loss=loss, optimizer=optimizer, epochs=1, batch_size=config.batch, shuffle=False,
           progress=False)  # every workspace made
    settings = training._checked_settings(
        net, loss, optimizer, epochs=1, batch_size=config.batch, shuffle=False, validation_data=None,
        validation_split=0.0, early_stopping=None, progress=False, seed=None, scheduler=None, distributed=False,
        callbacks=(), sample_weight=None, penalty_scale="batch", clip_norm=None, metrics=None)
    run = training._Fit(net, settings, x, y)
    net.train()
    return net, loss, optimizer, x, y, run


def part_table(config, calls: int) -> list[tuple[str, float]]:
    net, loss, optimizer, x, y, run = fit_internals(config)
    backend, step = net.backend, run.step
    batch = next(iter(run.batches.epoch(None)))
    pred = net.forward_internal(batch.x, training=True)
    value, grad = step.objective(pred, batch)

    def one_batch():
        for _ in run.batches.epoch(None):
            pass

    rows = []
    with np.errstate(all="ignore"):  # as fit runs its steps
        rows.append(("batch source (per batch)", per_call_us(one_batch, max(1, calls // len(run.batches)))
                     / len(run.batches)))
        rows.append(("forward", per_call_us(lambda: net.forward_internal(batch.x, training=True), calls)))
        rows.append(("loss and its gradient", per_call_us(lambda: step.objective(pred, batch), calls)))
        rows.append(("backward", per_call_us(lambda: net.backward_internal(grad), calls)))
        rows.append(("penalty's join (finish)", per_call_us(lambda: step.objective.finish(value, batch), calls)))
        rows.append(("finiteness check", per_call_us(lambda: backend.step_finite(value, net.store.grad), calls)))
        rows.append(("optimizer update", per_call_us(optimizer.update, calls)))
        rows.append(("checked update (the two above)", per_call_us(lambda: run.update(value, batch), calls)))
        rows.append(("accuracy's count", per_call_us(lambda: loss.count_correct(backend, pred, batch.y), calls)))
        rows.append(("fit's guarded step (all but the batch and the count)",
                     per_call_us(lambda: run._guarded_step(1, batch), calls)))
    xb, yb = x[: config.batch], y[: config.batch]

    def public_loop():
        loss(net(xb), yb)
        net.backward(loss.backward())
        optimizer.step()

    rows.append(("public loop's step", per_call_us(public_loop, calls)))
    handwritten = HandwrittenStep(config.widths, config.activation, config.loss, config.batch)
    rows.append(("hand-written step", per_call_us(lambda: handwritten.step(xb, yb), calls)))
    return rows


def profile(config, side: str, top: int) -> tuple[float, list]:
    """Python-level calls per step of `side` ("fit" or "loop") and the `top` functions by calls."""
    net, loss = bench.our_network(config)
    optimizer = bp.SGD(net.parameters(), lr=0.01, momentum=0.9)
    x, y = bench.make_data(config)
    batch = config.batch

    def fit():
        bp.fit(net, x, y, loss=loss, optimizer=optimizer, epochs=1, batch_size=batch, shuffle=False,
               progress=False)

    def loop():
        for start in range(0, x.shape[0], batch):
            loss(net(x[start:start + batch]), y[start:start + batch])
            net.backward(loss.backward())
            optimizer.step()

    run = fit if side == "fit" else loop
    run()
    profiler = cProfile.Profile()
    profiler.enable()
    run()
    profiler.disable()
    stats = pstats.Stats(profiler).stats
    per_step = sum(entry[1] for entry in stats.values()) / config.steps
    busiest = sorted(((entry[1] / config.steps, f"{os.path.basename(file)}:{line}({name})")
                      for (file, line, name), entry in stats.items()), reverse=True)
    return per_step, [row for row in busiest if row[0] >= 0.9][:top]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default="tiny,small")
    parser.add_argument("--calls", type=int, default=20000, help="calls per timed run of a part (small configs)")
    parser.add_argument("--top", type=int, default=40, help="functions listed per profile")
    args = parser.parse_args(argv)
    for name in args.configs.split(","):
        config = bench.CONFIGS[name]
        calls = max(50, args.calls * 1000 // max(1000, config.batch * config.widths[0]))
        print(f"\n## {name}: {config.describe()}, batch {config.batch} ({calls} calls per run)\n")
        print("| part | us per call (thread CPU, best of 5) |\n| --- | --- |")
        for part, us in part_table(config, calls):
            print(f"| {part} | {us:.2f} |")
        for side in ("fit", "loop"):
            per_step, busiest = profile(config, side, args.top)
            print(f"\n{side}: {per_step:.1f} Python-level calls per step; calls per step by function:")
            for count, where in busiest:
                print(f"  {count:5.1f}  {where}")


if __name__ == "__main__":
    main()
