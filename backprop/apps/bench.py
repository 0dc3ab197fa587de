"""Speed, measured side by side: `python -m backprop bench`.

Times one training step of backprop and of PyTorch's eager CPU mode on the same network, data,
dtype (float32) and thread count, and training on scikit-learn's digits against
`sklearn.neural_network.MLPClassifier`; prints the ratio table for whatever is installed.

How it measures, so that the numbers mean what they say:
- Every measurement runs in its own subprocess, with OMP/OPENBLAS/MKL_NUM_THREADS set in its
  environment before anything is imported (and `torch.set_num_threads`), so no library's
  thread pool leaks into another's. Rounds are interleaved (ours, torch, torch, ours, ...) so
  drift in the machine's load falls on both sides alike; each number is a median over rounds
  and timed blocks.
- Our step is `fit`'s own per-step path, timed by timing `fit` itself (shuffle off, no
  progress bar, 3 epochs over `steps` batches) and dividing by the steps: forward, loss and its
  gradient, backward, the finiteness check of loss and gradients, the optimizer update and the
  device-side loss and accuracy accumulators, plus fit's once-per-call validation and
  conversion of the whole data and its per-epoch work, amortized.
- The hand-written step (backprop/apps/bench_baseline.py) is the speed we aim to match: a
  preallocated, single-purpose NumPy step for that one network, over the same batches, with
  none of the library's layers, checks or metrics. ours / hand-written is what the library
  costs on top of code written by hand; hand-written / PyTorch is the best NumPy can do here.
- PyTorch's step is the canonical eager loop over the same batches (slices of one tensor):
  `opt.zero_grad(); loss = crit(model(xb), yb); loss.backward(); opt.step()`.
- Both use SGD with momentum 0.9, lr 0.01; CrossEntropy takes integer labels on both sides.
- The BLAS each process ran on (library, kernel, threads) is recorded with threadpoolctl.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Config:
    """A network to time: widths of the Dense layers, the hidden activation, the loss, the batch."""

    widths: tuple[int, ...]
    activation: str
    loss: str  # "bce" (sigmoid output, probabilities) or "cross_entropy" (logits)
    batch: int
    steps: int  # steps per timed block: enough that one block takes ~0.1-0.5 s
    target: float  # the ratio to PyTorch we aim for
    loop_target: float  # the public loop's step over fit's
    arch: str = ""  # a CNN of bench_conv_baseline.ARCHITECTURES (widths: its pixels and classes)

    def describe(self) -> str:
        if self.arch:
            return CNN_NAMES[self.arch]
        widths = "-".join(str(w) for w in self.widths)
        loss = "BCE" if self.loss == "bce" else "CE"
        return f"{widths} {self.activation} {loss}"


CONFIGS = {
    "tiny": Config((3, 4, 1), "sigmoid", "bce", 1, 2000, 0.15, 1.3),
    "small": Config((64, 32, 10), "relu", "cross_entropy", 32, 1000, 0.22, 1.3),
    "medium": Config((784, 256, 10), "relu", "cross_entropy", 128, 200, 0.75, 1.10),
    "large": Config((784, 1024, 1024, 10), "relu", "cross_entropy", 512, 12, 0.85, 1.10),
    "lenet": Config((784, 10), "relu", "cross_entropy", 64, 30, 1.0, 1.10, "lenet"),
    "digits_cnn": Config((64, 10), "relu", "cross_entropy", 32, 100, 1.0, 1.10, "digits_cnn"),
}
CNN_NAMES = {"lenet": "LeNet-5 28x28: conv 6 5x5 pad 2, pool, conv 16 5x5, pool, 400-120-84-10 ReLU CE",
             "digits_cnn": "digits CNN 8x8: conv 32 3x3 pad 1, pool, conv 64 3x3 pad 1, pool, 256-64-10, "
                           "dropout 0.3, ReLU CE"}
HANDWRITTEN_CNN_TARGET = 1.2  # fit's CNN step over the hand-written one
DIGITS_EPOCHS, DIGITS_BATCH, DIGITS_HIDDEN, DIGITS_TARGET = 50, 32, 64, 0.25
GEMM_TARGET = 0.90  # the large step's GEMM rate, as a fraction of NumPy's on square matrices
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
OPENBLAS_OVERRIDES = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


# ---------------------------------------------------------------------- shared by the workers


def make_data(config: Config, seed: int = 0):
    """float32 inputs and targets for `config.steps` batches (labels for CE, 0/1 for BCE)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    rows = config.batch * config.steps
    x = rng.standard_normal((rows, *_example_shape(config)), dtype=np.float32)
    if config.loss == "bce":
        y = rng.integers(0, 2, size=(rows, 1)).astype(np.float32)
    else:
        y = rng.integers(0, config.widths[-1], size=rows)
    return x, y


def _example_shape(config: Config) -> tuple[int, ...]:
    """One example: (features,), or a CNN's image (C, H, W)."""
    if config.arch:
        from backprop.apps.bench_conv_baseline import ARCHITECTURES

        return ARCHITECTURES[config.arch]["image"]
    return (config.widths[0],)


def blas_info() -> list[dict]:
    """The BLAS/OpenMP pools loaded in this process: library, version, kernel, threads."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return [{"note": "threadpoolctl not installed"}]
    keys = ("user_api", "internal_api", "version", "architecture", "num_threads", "prefix")
    return [{k: pool.get(k) for k in keys if pool.get(k) is not None} for pool in threadpool_info()]


def _median_block(run_block, blocks: int) -> list[float]:
    """Seconds per step of each of `blocks` timed calls of run_block() (which returns steps)."""
    times = []
    for _ in range(blocks):
        start = time.perf_counter()
        steps = run_block()
        times.append((time.perf_counter() - start) / steps)
    return times


# ---------------------------------------------------------------------- our side


def our_network(config: Config, device: str = "cpu"):
    """The config's network (float32, seed 0) and its loss."""
    import backprop as bp

    if config.arch:
        return cnn_network(config.arch, device), bp.CrossEntropyLoss()
    *hidden, last = list(zip(config.widths[:-1], config.widths[1:]))
    layers = [bp.Dense(a, b, activation=config.activation) for a, b in hidden]
    output = "sigmoid" if config.loss == "bce" else None
    layers.append(bp.Dense(*last, activation=output))
    net = bp.Sequential(*layers, device=device, dtype="float32", seed=0)
    loss = bp.BCELoss() if config.loss == "bce" else bp.CrossEntropyLoss()
    return net, loss


def cnn_network(arch: str, device: str = "cpu"):
    """The CNN `arch` of bench_conv_baseline.ARCHITECTURES as a Sequential (float32, seed 0)."""
    import backprop as bp
    from backprop.apps.bench_conv_baseline import ARCHITECTURES

    spec = ARCHITECTURES[arch]
    layers = []
    for cin, cout, k, pad in spec["convs"]:
        layers += [bp.Conv2D(cin, cout, k, padding=pad, activation="relu"), bp.MaxPool2D(2)]
    layers.append(bp.Flatten())
    widths = spec["dense"]
    for i, (a, b) in enumerate(zip(widths, widths[1:])):
        last = i == len(widths) - 2
        if last and spec["dropout"]:
            layers.append(bp.Dropout(spec["dropout"]))
        layers.append(bp.Dense(a, b, activation=None if last else "relu"))
    return bp.Sequential(*layers, input_shape=spec["image"], device=device, dtype="float32", seed=0)


FIT_EPOCHS = 3  # per timed fit call: its once-per-call checks are amortized as in real use, not hidden


def ours_step(config: Config, blocks: int) -> dict:
    """Seconds per step of fit's own loop (timed through fit itself)."""
    import backprop as bp

    net, loss = our_network(config)
    optimizer = bp.SGD(net.parameters(), lr=0.01, momentum=0.9)
    x, y = make_data(config)

    def one_fit():
        bp.fit(net, x, y, loss=loss, optimizer=optimizer, epochs=FIT_EPOCHS, batch_size=config.batch,
               shuffle=False, progress=False)
        return config.steps * FIT_EPOCHS

    one_fit()  # warm up: workspaces are allocated on the first step and reused after
    result = {"times": _median_block(one_fit, blocks), "blas": blas_info()}
    if tuple(config.widths) == CONFIGS["large"].widths:  # (JSON makes the widths a list)
        result["gemm"] = gemm_rates(net, loss, optimizer, x, y, config)
    if config.arch:
        result["shares"] = op_shares(net, loss, optimizer, x, y, config)
    return result


def loop_step(config: Config, blocks: int) -> dict:
    """Seconds per step of the PyTorch-style loop through the public API, the loop the README's
    tour teaches: loss = crit(net(x), y); net.backward(crit.backward()); opt.step(), with every
    per-call check those calls make."""
    import backprop as bp

    net, loss = our_network(config)
    optimizer = bp.SGD(net.parameters(), lr=0.01, momentum=0.9)
    x, y = make_data(config)
    batch = config.batch

    def loop():
        for start in range(0, x.shape[0], batch):
            loss(net(x[start:start + batch]), y[start:start + batch])
            net.backward(loss.backward())
            optimizer.step()
        return config.steps

    loop()
    return {"times": _median_block(loop, blocks), "blas": blas_info()}


def gemm_rates(net, loss, optimizer, x, y, config: Config, fits: int = 5) -> dict:
    """GFLOP/s of the GEMMs inside fit (each backend.matmul timed where it runs; the median of
    `fits` one-epoch fit calls, as one call is only 12 steps), their share of the step, and
    NumPy's rate on square 1024 and 2048 matrices."""
    import numpy as np

    import backprop as bp

    backend = net.backend
    spent, flops = [0.0], [0]
    plain = backend.matmul

    def timed_matmul(a, b, transpose_a=False, transpose_b=False, out=None):
        start = time.perf_counter()
        result = plain(a, b, transpose_a, transpose_b, out)
        spent[0] += time.perf_counter() - start
        inner = a.shape[0] if transpose_a else a.shape[1]
        flops[0] += 2 * result.shape[0] * result.shape[1] * inner
        return result

    rates, shares = [], []
    backend.matmul = timed_matmul  # an instance attribute, taken away below
    try:
        for _ in range(fits):
            spent[0], flops[0] = 0.0, 0
            start = time.perf_counter()
            bp.fit(net, x, y, loss=loss, optimizer=optimizer, epochs=1, batch_size=config.batch,
                   shuffle=False, progress=False)
            total = time.perf_counter() - start
            rates.append(flops[0] / spent[0] / 1e9)
            shares.append(spent[0] / total)
    finally:
        del backend.matmul
    square = {}
    for n in (1024, 2048):
        a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
        out = np.empty_like(a)
        np.matmul(a, a, out=out)
        runs = []
        for _ in range(5):
            start = time.perf_counter()
            np.matmul(a, a, out=out)
            runs.append(time.perf_counter() - start)
        square[n] = 2 * n**3 / statistics.median(runs) / 1e9
    step_rate = statistics.median(rates)
    return {"step_gemm_gflops": step_rate, "gemm_share": statistics.median(shares),
            "square_gflops": square, "fraction_of_square": step_rate / max(square.values())}


def op_shares(net, loss, optimizer, x, y, config: Config, fits: int = 3) -> dict:
    """The shares of fit's step spent in the GEMMs, in im2col and in col2im (each call timed
    where it runs; the median over `fits` one-epoch fit calls)."""
    import backprop as bp

    backend = net.backend
    names = ("matmul", "im2col", "col2im")
    spent = dict.fromkeys(names, 0.0)

    def timed(name):
        plain = getattr(backend, name)

        def run(*args, **kwargs):
            start = time.perf_counter()
            result = plain(*args, **kwargs)
            spent[name] += time.perf_counter() - start
            return result

        return run

    shares = {name: [] for name in names}
    for name in names:
        setattr(backend, name, timed(name))  # instance attributes, taken away below
    try:
        for _ in range(fits):
            for name in names:
                spent[name] = 0.0
            start = time.perf_counter()
            bp.fit(net, x, y, loss=loss, optimizer=optimizer, epochs=1, batch_size=config.batch,
                   shuffle=False, progress=False)
            total = time.perf_counter() - start
            for name in names:
                shares[name].append(spent[name] / total)
    finally:
        for name in names:
            delattr(backend, name)
    return {name: statistics.median(values) for name, values in shares.items()}


def ours_digits(blocks: int) -> dict:
    """Seconds to train 64-64-10 on the digits for 50 epochs with Adam, and the test accuracy."""
    import backprop as bp

    x_train, y_train, x_test, y_test = digits_split()
    times, accuracies = [], []
    for _ in range(blocks):
        net = bp.Sequential(bp.Dense(64, DIGITS_HIDDEN, activation="relu"), bp.Dense(DIGITS_HIDDEN, 10),
                            dtype="float32", seed=len(times))
        optimizer = bp.Adam(net.parameters(), lr=1e-3)
        start = time.perf_counter()
        bp.fit(net, x_train, y_train, loss=bp.CrossEntropyLoss(), optimizer=optimizer,
               epochs=DIGITS_EPOCHS, batch_size=DIGITS_BATCH, progress=False)
        times.append(time.perf_counter() - start)
        predicted = bp.predict(net, x_test).argmax(axis=1)
        accuracies.append(float((predicted == y_test).mean()))
    return {"times": times, "accuracy": accuracies, "blas": blas_info()}


def handwritten_digits(blocks: int) -> dict:
    """The hand-written step on the same digits training: 64-64-10 ReLU, Adam, 50 epochs of
    shuffled batches of 32 (the last one shorter), a fresh permutation per epoch."""
    import numpy as np

    from backprop.apps.bench_baseline import HandwrittenStep

    x_train, y_train, x_test, y_test = digits_split()
    n = x_train.shape[0]
    times, accuracies = [], []
    for seed in range(blocks):
        step = HandwrittenStep((64, DIGITS_HIDDEN, 10), "relu", "cross_entropy", DIGITS_BATCH, lr=1e-3,
                               optimizer="adam", seed=seed)
        start = time.perf_counter()
        for epoch in range(DIGITS_EPOCHS):
            order = np.random.default_rng((seed, epoch)).permutation(n)
            for first in range(0, n, DIGITS_BATCH):
                rows = order[first:first + DIGITS_BATCH]
                step.step(np.take(x_train, rows, axis=0), np.take(y_train, rows))
        times.append(time.perf_counter() - start)
        accuracies.append(float((step.predict(x_test).argmax(axis=1) == y_test).mean()))
    return {"times": times, "accuracy": accuracies, "blas": blas_info()}


def digits_split():
    """The digits, pixels in [0, 1], 80 % train / 20 % test, stratified, fixed seed."""
    from backprop.apps.data import stratified_split

    from sklearn.datasets import load_digits

    digits = load_digits()
    x, y = (digits.data / 16.0).astype("float32"), digits.target
    test, train = stratified_split(y, (0.2,), seed=0)
    return x[train], y[train], x[test], y[test]


# ---------------------------------------------------------------------- the others


def handwritten_step(config: Config, blocks: int) -> dict:
    """Seconds per step of the hand-written NumPy step over the same batches."""
    from backprop.apps.bench_baseline import HandwrittenStep
    from backprop.apps.bench_conv_baseline import HandwrittenConvStep

    if config.arch:
        step = HandwrittenConvStep(config.arch, config.batch)
    else:
        step = HandwrittenStep(config.widths, config.activation, config.loss, config.batch)
    x, y = make_data(config)
    batch = config.batch

    def loop():
        for start in range(0, x.shape[0], batch):
            step.step(x[start:start + batch], y[start:start + batch])
        return config.steps

    loop()
    return {"times": _median_block(loop, blocks), "blas": blas_info()}


def torch_model(config: Config):
    """The config's network in PyTorch (Linear layers, the hidden activation, a sigmoid output
    for BCE) and its criterion: the same network as our_network's."""
    import torch

    if config.arch:
        return torch_cnn(config.arch), torch.nn.CrossEntropyLoss()
    layers = []
    for i, (a, b) in enumerate(zip(config.widths[:-1], config.widths[1:])):
        layers.append(torch.nn.Linear(a, b))
        if i < len(config.widths) - 2:
            layers.append(torch.nn.Sigmoid() if config.activation == "sigmoid" else torch.nn.ReLU())
    if config.loss == "bce":
        layers.append(torch.nn.Sigmoid())
    criterion = torch.nn.BCELoss() if config.loss == "bce" else torch.nn.CrossEntropyLoss()
    return torch.nn.Sequential(*layers), criterion


def torch_cnn(arch: str):
    """The CNN `arch` in PyTorch: the same layers as cnn_network's."""
    import torch

    from backprop.apps.bench_conv_baseline import ARCHITECTURES

    spec = ARCHITECTURES[arch]
    layers = []
    for cin, cout, k, pad in spec["convs"]:
        layers += [torch.nn.Conv2d(cin, cout, k, padding=pad), torch.nn.ReLU(), torch.nn.MaxPool2d(2)]
    layers.append(torch.nn.Flatten())
    widths = spec["dense"]
    for i, (a, b) in enumerate(zip(widths, widths[1:])):
        last = i == len(widths) - 2
        if last and spec["dropout"]:
            layers.append(torch.nn.Dropout(spec["dropout"]))
        layers += [torch.nn.Linear(a, b)] + ([] if last else [torch.nn.ReLU()])
    return torch.nn.Sequential(*layers)


def torch_step(config: Config, blocks: int, threads: int) -> dict:
    """Seconds per step of PyTorch's canonical eager loop over the same batches."""
    import torch

    torch.set_num_threads(threads)
    model, criterion = torch_model(config)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x, y = make_data(config)
    x, y = torch.from_numpy(x), torch.from_numpy(y)
    batch = config.batch

    def loop():
        for start in range(0, x.shape[0], batch):
            optimizer.zero_grad()
            loss = criterion(model(x[start:start + batch]), y[start:start + batch])
            loss.backward()
            optimizer.step()
        return config.steps

    loop()
    return {"times": _median_block(loop, blocks), "blas": blas_info(),
            "torch": f"{torch.__version__}, {torch.get_num_threads()} threads, "
                     f"{torch.backends.cpu.get_cpu_capability()}"}


def sklearn_digits(blocks: int) -> dict:
    """MLPClassifier with the same network, epochs, batch, optimizer and learning rate."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    x_train, y_train, x_test, y_test = digits_split()
    times, accuracies = [], []
    for seed in range(blocks):
        # alpha=0: no L2 term (ours has none); tol=0 and n_iter_no_change=epochs: all 50 epochs run.
        clf = MLPClassifier(hidden_layer_sizes=(DIGITS_HIDDEN,), activation="relu", solver="adam",
                            alpha=0.0, batch_size=DIGITS_BATCH, learning_rate_init=1e-3,
                            max_iter=DIGITS_EPOCHS, tol=0.0, n_iter_no_change=DIGITS_EPOCHS,
                            shuffle=True, random_state=seed)
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            clf.fit(x_train, y_train)
        times.append(time.perf_counter() - start)
        accuracies.append(float(clf.score(x_test, y_test)))
    return {"times": times, "accuracy": accuracies, "blas": blas_info()}


# ---------------------------------------------------------------------- the runner


def _worker(spec: dict) -> dict:
    kind, blocks = spec["kind"], spec["blocks"]
    config = Config(**spec["config"]) if "config" in spec else None
    if kind == "ours":
        return ours_step(config, blocks)
    if kind == "loop":
        return loop_step(config, blocks)
    if kind == "handwritten":
        return handwritten_step(config, blocks)
    if kind == "torch":
        return torch_step(config, blocks, spec["threads"])
    if kind == "ours_digits":
        return ours_digits(blocks)
    if kind == "handwritten_digits":
        return handwritten_digits(blocks)
    if kind == "sklearn_digits":
        return sklearn_digits(blocks)
    raise ValueError(f"unknown worker kind {kind!r}")


def run_worker(spec: dict, threads: int, unset_openblas: bool = False) -> dict:
    """Run one measurement in a fresh interpreter whose thread count is set before any import."""
    env = dict(os.environ, **{name: str(threads) for name in THREAD_VARIABLES})
    if unset_openblas:
        for name in OPENBLAS_OVERRIDES:
            env.pop(name, None)
    spec = dict(spec, threads=threads)
    done = subprocess.run([sys.executable, "-m", "backprop.apps.bench", "--worker", json.dumps(spec)],
                          env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"benchmark worker {spec['kind']} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def measure(configs: list[str], threads: int, rounds: int, blocks: int, digits: bool,
            unset_openblas: bool = False, steps_scale: float = 1.0, log=print) -> dict:
    """Interleaved measurements of every config (and the digits) on every installed library."""
    sides = ["ours", "loop", "handwritten"] + (["torch"] if installed("torch") else [])
    results: dict = {"configs": {}, "digits": None, "sides": sides, "threads": threads}
    for name in configs:
        config = CONFIGS[name]
        config = Config(**dict(config.__dict__, steps=max(1, int(config.steps * steps_scale))))
        runs = {side: {"times": []} for side in sides}
        for r in range(rounds):
            order = sides if r % 2 == 0 else sides[::-1]
            for side in order:
                log(f"  {name}: {side} (round {r + 1}/{rounds})")
                got = run_worker({"kind": side, "config": config.__dict__, "blocks": blocks}, threads,
                                 unset_openblas)
                runs[side]["times"] += got.pop("times")
                runs[side].update(got)
        results["configs"][name] = runs
    if digits and installed("sklearn"):
        digit_sides = ["ours_digits", "handwritten_digits", "sklearn_digits"]
        runs = {side: {"times": [], "accuracy": []} for side in digit_sides}
        for r in range(rounds):
            for side in (digit_sides if r % 2 == 0 else digit_sides[::-1]):
                log(f"  digits: {side} (round {r + 1}/{rounds})")
                got = run_worker({"kind": side, "blocks": 1}, threads, unset_openblas)
                runs[side]["times"] += got.pop("times")
                runs[side]["accuracy"] += got.pop("accuracy")
                runs[side].update(got)
        results["digits"] = runs
    return results


def _us(seconds: float) -> str:
    return f"{seconds * 1e6:,.0f} us" if seconds < 0.01 else f"{seconds * 1e3:,.1f} ms"


def format_table(results: dict) -> str:
    """The results as Markdown: the step table, the digits line, the GEMM rates, the BLAS."""
    has_torch = "torch" in results["sides"]
    lines = ["| config | network | batch | backprop median (best) | hand-written NumPy median (best) "
             "| PyTorch median (best) | backprop / PyTorch, medians (bests) | hand-written / PyTorch "
             "| backprop / hand-written | target | met |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    gemm = None
    for name, runs in results["configs"].items():
        config = CONFIGS[name]
        ours, hand = runs["ours"]["times"], runs["handwritten"]["times"]
        gemm = runs["ours"].get("gemm", gemm)
        cells = [f"{_us(statistics.median(ours))} ({_us(min(ours))})",
                 f"{_us(statistics.median(hand))} ({_us(min(hand))})"]
        overhead = f"{statistics.median(ours) / statistics.median(hand):.2f}"
        if has_torch:
            theirs = runs["torch"]["times"]
            ratio = statistics.median(ours) / statistics.median(theirs)
            cells += [f"{_us(statistics.median(theirs))} ({_us(min(theirs))})",
                      f"{ratio:.3f} ({min(ours) / min(theirs):.3f})",
                      f"{statistics.median(hand) / statistics.median(theirs):.3f}", overhead,
                      f"<= {config.target}", "yes" if ratio <= config.target else "NO"]
        else:
            cells += ["not installed", "-", "-", overhead, f"<= {config.target}", "-"]
        lines.append(f"| {name} | {config.describe()} | {config.batch} | " + " | ".join(cells) + " |")
    out = ["\n".join(lines), _loop_table(results)]
    for name, runs in results["configs"].items():
        shares = runs["ours"].get("shares")
        if shares:
            overhead = statistics.median(runs["ours"]["times"]) / statistics.median(runs["handwritten"]["times"])
            out.append(f"{name}: fit's step is {shares['matmul']:.0%} GEMMs, {shares['im2col']:.0%} im2col, "
                       f"{shares['col2im']:.0%} col2im; backprop / hand-written {overhead:.2f} (target <= "
                       f"{HANDWRITTEN_CNN_TARGET}: {'yes' if overhead <= HANDWRITTEN_CNN_TARGET else 'NO'})")
    digits = results.get("digits")
    if digits:
        ours, hand, theirs = digits["ours_digits"], digits["handwritten_digits"], digits["sklearn_digits"]
        t_ours, t_hand, t_theirs = (statistics.median(side["times"]) for side in (ours, hand, theirs))
        ratio = t_ours / t_theirs
        best = min(ours["times"]) / min(theirs["times"])
        accuracy = lambda side: statistics.median(side["accuracy"])  # noqa: E731
        out.append(
            f"digits, 64-{DIGITS_HIDDEN}-10 ReLU, batch {DIGITS_BATCH}, {DIGITS_EPOCHS} epochs, Adam: "
            f"backprop {t_ours:.2f} s (test accuracy {accuracy(ours):.3f}), "
            f"hand-written NumPy {t_hand:.2f} s (test accuracy {accuracy(hand):.3f}), "
            f"sklearn MLPClassifier {t_theirs:.2f} s (test accuracy {accuracy(theirs):.3f}); "
            f"backprop / sklearn: medians {ratio:.3f}, bests {best:.3f} "
            f"(target <= {DIGITS_TARGET}: {'yes' if ratio <= DIGITS_TARGET else 'NO'}); "
            f"hand-written / sklearn {t_hand / t_theirs:.3f}; backprop / hand-written {t_ours / t_hand:.2f}")
    if gemm:
        square = ", ".join(f"{n}x{n}: {rate:.0f}" for n, rate in gemm["square_gflops"].items())
        met = "yes" if gemm["fraction_of_square"] >= GEMM_TARGET else "NO"
        out.append(f"large config GEMMs inside fit (median of one-epoch fits): {gemm['step_gemm_gflops']:.0f} "
                   f"GFLOP/s, {gemm['fraction_of_square']:.0%} of NumPy's square-GEMM rate ({square} GFLOP/s; "
                   f"target >= {GEMM_TARGET:.0%}: {met}); GEMMs are {gemm['gemm_share']:.0%} of the step's time")
    out.append("BLAS: " + _describe_blas(results))
    return "\n\n".join(out)


def _loop_table(results: dict) -> str:
    """The public PyTorch-style loop against fit's own step, config by config."""
    lines = ["| config | fit median (best) | public loop median (best) | loop / fit, medians (bests) | target | met |",
             "| --- | --- | --- | --- | --- | --- |"]
    for name, runs in results["configs"].items():
        fit, loop = runs["ours"]["times"], runs["loop"]["times"]
        ratio = statistics.median(loop) / statistics.median(fit)
        target = CONFIGS[name].loop_target
        lines.append(f"| {name} | {_us(statistics.median(fit))} ({_us(min(fit))}) | {_us(statistics.median(loop))} "
                     f"({_us(min(loop))}) | {ratio:.2f} ({min(loop) / min(fit):.2f}) | <= {target} | "
                     f"{'yes' if ratio <= target else 'NO'} |")
    return "\n".join(lines)


def _describe_blas(results: dict) -> str:
    """One line per side: the thread pools its processes loaded (threadpoolctl's view)."""
    sides: dict[str, set] = {}
    for runs in list(results["configs"].values()) + ([results["digits"]] if results.get("digits") else []):
        for side, run in runs.items():
            pools = sides.setdefault(side.replace("_digits", ""), set())
            for p in run.get("blas", []):
                pools.add(" ".join(str(p[k]) for k in ("internal_api", "version", "architecture") if p.get(k))
                          + f" {p.get('num_threads')} threads")
            if "torch" in run:
                pools.add(f"torch {run['torch']} (its MKL is linked in: threadpoolctl sees only OpenMP)")
    return "; ".join(f"{side}: {', '.join(sorted(pools))}" for side, pools in sides.items())


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    import numpy

    overrides = ", ".join(f"{n}={os.environ.get(n, '(unset)')}" for n in OPENBLAS_OVERRIDES)
    return (f"{cpu}, {os.cpu_count()} cores; Python {platform.python_version()}, NumPy {numpy.__version__}; "
            f"{overrides}; load average {os.getloadavg()[0]:.2f}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The runner's options (shared by `python -m backprop bench` and `python -m backprop.apps.bench`)."""
    parser.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated: " + ", ".join(CONFIGS))
    parser.add_argument("--threads", type=int, default=2,
                        help="threads for every side's BLAS and PyTorch's intra-op pool")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (a process each)")
    parser.add_argument("--blocks", type=int, default=3, help="timed blocks per process")
    parser.add_argument("--steps-scale", type=float, default=1.0, help="scale the steps per block")
    parser.add_argument("--no-digits", action="store_true", help="skip the digits comparison")
    parser.add_argument("--unset-openblas-env", action="store_true",
                        help="also print a table with OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset")
    parser.add_argument("--worker", help=argparse.SUPPRESS)


def run(args) -> int:
    """Measure and print the tables (or, with --worker, one measurement as JSON)."""
    if args.worker:
        print(json.dumps(_worker(json.loads(args.worker))))
        return 0
    configs = [c for c in args.configs.split(",") if c]
    unknown = [c for c in configs if c not in CONFIGS]
    if unknown:
        raise SystemExit(f"unknown config(s) {unknown}; choose from {list(CONFIGS)}")
    log = lambda message: print(message, file=sys.stderr, flush=True)  # noqa: E731
    print(f"machine: {machine()}")
    print(f"threads: {args.threads}; medians over {args.rounds} interleaved rounds x {args.blocks} blocks")
    if not installed("torch"):
        print('PyTorch is not installed: pip install "backprop-gpu[bench]" for the comparison')
    tables = [(False, "as set")] + ([(True, "OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset")]
                                    if args.unset_openblas_env else [])
    for unset, label in tables:
        results = measure(configs, args.threads, args.rounds, args.blocks, not args.no_digits, unset,
                          args.steps_scale, log)
        print(f"\n### BLAS environment {label}\n")
        print(format_table(results), flush=True)
    print(f"\nload average after: {os.getloadavg()[0]:.2f}")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m backprop.apps.bench", description=__doc__.split("\n")[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
