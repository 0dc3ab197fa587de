"""Speed on a GPU, measured on the GPU it runs on: `python benchmarks/gpu_bench.py --out FILE.json`.

1. fit's training step on the four configs of `python -m backprop bench` (backprop/apps/bench.py:
   the same networks, data, float32, SGD with momentum 0.9 and lr 0.01, CrossEntropy on integer
   labels or BCE after a sigmoid) on cuda:0, against PyTorch's canonical eager loop on the same
   GPU when torch with CUDA is installed. Ours is a timed `fit` call (one epoch over `steps`
   batches, shuffle off, no progress bar; it ends reading its metrics, a sync point) divided by
   its steps: forward, loss, backward, the finiteness check, the update and the metrics, plus
   fit's once-per-call copy of the data to the GPU, amortized. PyTorch's is
   `opt.zero_grad(); loss = crit(model(xb), yb); loss.backward(); opt.step()` over slices of
   tensors already on the GPU, then `torch.cuda.synchronize()`. Medians over timed blocks after a
   warm-up block (kernel compiles, memory pools).
2. Per-kernel time against the memory-bandwidth roofline: each op once per launch over 2**24
   float32 elements, timed with CUDA events over repeated launches; achieved bandwidth = the bytes
   the kernel moves (its comment in kernels/*.cu gives them per element) / time, against the
   device's peak (2 x memory clock x bus width) and against a device-to-device copy measured here
   (what a streaming kernel can reach).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

from backprop.apps.bench import CONFIGS, Config, _us, make_data, our_network, torch_model

# Batches per timed block on a GPU: each block takes ~0.05-0.5 s on an H100-class GPU.
GPU_STEPS = {"tiny": 300, "small": 300, "medium": 200, "large": 50}
BLOCKS = 3
ELEMENTS = 2**24
LAUNCHES = 20


def _cupy():
    import cupy

    return cupy


def device_info(index: int = 0) -> dict:
    """The GPU, its peak memory bandwidth, and the CUDA stack this process runs on."""
    cupy = _cupy()
    props = cupy.cuda.runtime.getDeviceProperties(index)
    name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
    peak = 2 * props["memoryClockRate"] * 1e3 * props["memoryBusWidth"] / 8
    info = {"name": name, "compute_capability": f"{props['major']}.{props['minor']}",
            "multiprocessors": props["multiProcessorCount"], "memory_gib": props["totalGlobalMem"] / 2**30,
            "peak_gb_per_s": peak / 1e9, "cupy": cupy.__version__,
            "nvrtc": ".".join(map(str, cupy.cuda.nvrtc.getVersion()))}
    for key, call in (("cuda_runtime", "runtimeGetVersion"), ("cuda_driver", "driverGetVersion")):
        try:
            version = getattr(cupy.cuda.runtime, call)()
            info[key] = f"{version // 1000}.{version % 1000 // 10}"
        except Exception as exc:  # a version is a nicety: never fail the run over it
            info[key] = f"unavailable ({exc.__class__.__name__})"
    return info


def _median_per_step(run_block, steps: int, blocks: int) -> dict:
    """Seconds per step: one warm-up block, then `blocks` timed ones; median and best."""
    run_block()
    times = []
    for _ in range(blocks):
        start = time.perf_counter()
        run_block()
        times.append((time.perf_counter() - start) / steps)
    return {"median_s": statistics.median(times), "best_s": min(times), "blocks": times}


def ours_step(config: Config, steps: int, blocks: int = BLOCKS, device: str = "cuda:0") -> dict:
    """fit's step on `device`, per step."""
    import backprop as bp

    config = Config(**dict(config.__dict__, steps=steps))
    net, loss = our_network(config, device=device)
    optimizer = bp.SGD(net.parameters(), lr=0.01, momentum=0.9)
    x, y = make_data(config)

    def block():
        bp.fit(net, x, y, loss=loss, optimizer=optimizer, epochs=1, batch_size=config.batch, shuffle=False,
               progress=False)
        _cupy().cuda.runtime.deviceSynchronize()

    return _median_per_step(block, steps, blocks)


def torch_step(config: Config, steps: int, blocks: int = BLOCKS, device: str = "cuda") -> dict:
    """PyTorch's eager step on `device`, per step, over the same batches."""
    import torch

    config = Config(**dict(config.__dict__, steps=steps))
    model, criterion = torch_model(config)
    model = model.to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x, y = make_data(config)
    x, y = torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)
    synchronize = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)

    def block():
        for start in range(0, x.shape[0], config.batch):
            optimizer.zero_grad()
            loss = criterion(model(x[start:start + config.batch]), y[start:start + config.batch])
            loss.backward()
            optimizer.step()
        synchronize()

    result = _median_per_step(block, steps, blocks)
    result["torch"] = torch.__version__
    result["tf32_matmul"] = bool(torch.backends.cuda.matmul.allow_tf32)
    return result


def torch_cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


# (name, bytes each element moves, in units of the element's size (as the kernel's comment in
# kernels/*.cu counts them), the op). Its arrays, n = rows x COLUMNS elements each unless said:
# x, y, out, buf, buf2 (>= 0: Adam's second moment); matrix and matrix_out, (rows, COLUMNS);
# bias, COLUMNS elements; index, a permutation of the rows.
KERNELS = [
    ("copy (CuPy's, device to device)", 2, lambda be, a: be.copy(a["x"], out=a["out"])),
    ("add_scaled: out = x + a y", 3, lambda be, a: be.add_scaled(a["x"], a["y"], 0.5, out=a["out"])),
    ("relu forward", 2, lambda be, a: be.activation_forward(a["x"], "relu", out=a["out"])),
    ("relu backward", 3, lambda be, a: be.activation_backward(a["y"], a["x"], None, "relu", out=a["out"])),
    ("gelu forward", 2, lambda be, a: be.activation_forward(a["x"], "gelu", out=a["out"])),
    ("bias + relu forward", 2, lambda be, a: be.bias_activation_forward(a["matrix"], a["bias"], "relu",
                                                                         out=a["matrix_out"])),
    ("softmax forward, rows of 1024", 2, lambda be, a: be.activation_forward(a["matrix"], "softmax",
                                                                              out=a["matrix_out"])),
    ("cross-entropy and its gradient", 3, lambda be, a: be.cross_entropy_loss(a["matrix"], a["matrix_out"])),
    ("column sums (bias gradient)", 1, lambda be, a: be.sum_rows(a["matrix"], out=a["bias"])),
    ("sum of all elements", 1, lambda be, a: be.sum_all(a["x"])),
    ("dropout forward", 3, lambda be, a: be.dropout_forward(a["x"], 0.5, 12345, out=a["out"])),
    ("take_rows (batch gather)", 2, lambda be, a: be.take_rows(a["matrix"], a["index"], out=a["matrix_out"])),
    ("SGD with momentum", 5, lambda be, a: be.sgd_step(a["out"], a["x"], a["buf"], 0.01, 0.9, 0.0, False, 0.0,
                                                       False)),
    ("Adam", 7, lambda be, a: be.adam_step(a["out"], a["x"], a["buf"], a["buf2"], 1e-3, 0.9, 0.999, 1e-8, 0.0,
                                            3, False)),
]
COLUMNS = 1024


def kernel_rates(n: int = ELEMENTS, launches: int = LAUNCHES, device: str = "cuda:0",
                 peak_gb_per_s: float | None = None) -> list[dict]:
    """Time per launch and bandwidth reached by each op of KERNELS over about n float32 elements."""
    import numpy as np

    import backprop as bp

    cupy = _cupy()
    backend = bp.get_backend(device, "float32")
    rng = np.random.default_rng(0)
    rows = max(1, n // COLUMNS)
    n = rows * COLUMNS
    results = []
    with backend.on_device():
        arrays = {name: backend.asarray(rng.standard_normal(n, dtype=np.float32)) for name in ("x", "y", "out", "buf")}
        arrays["buf2"] = backend.asarray(np.abs(rng.standard_normal(n, dtype=np.float32)))
        arrays["matrix"] = backend.asarray(rng.standard_normal((rows, COLUMNS), dtype=np.float32))
        arrays["matrix_out"] = backend.asarray(np.full((rows, COLUMNS), 1.0 / COLUMNS, dtype=np.float32))
        arrays["bias"] = backend.asarray(rng.standard_normal(COLUMNS, dtype=np.float32))
        arrays["index"] = backend.asarray_int(rng.permutation(rows))
        for name, per_element, op in KERNELS:
            op(backend, arrays)  # warm-up: the kernel's module is compiled and loaded here
            start, end = cupy.cuda.Event(), cupy.cuda.Event()
            start.record()
            for _ in range(launches):
                op(backend, arrays)
            end.record()
            end.synchronize()
            seconds = cupy.cuda.get_elapsed_time(start, end) / 1e3 / launches
            rate = per_element * n * 4 / seconds / 1e9 if seconds > 0 else float("inf")
            results.append({"kernel": name, "bytes_per_element": per_element * 4, "us_per_launch": seconds * 1e6,
                            "gb_per_s": rate})
    for result in results:
        result["of_copy"] = result["gb_per_s"] / results[0]["gb_per_s"]
        if peak_gb_per_s:
            result["of_peak"] = result["gb_per_s"] / peak_gb_per_s
    return results


def run(configs: list[str], kernels: bool = True, device: str = "cuda:0", steps_scale: float = 1.0,
        elements: int = ELEMENTS, launches: int = LAUNCHES, log=print) -> dict:
    """Every measurement, as a dict (see the module's docstring)."""
    index = int(device.split(":")[1])
    results = {"device": device_info(index), "steps": {}, "kernels": None}
    with_torch = torch_cuda_available()
    results["torch_cuda"] = with_torch
    for name in configs:
        config, steps = CONFIGS[name], max(1, int(GPU_STEPS[name] * steps_scale))
        log(f"  fit step, {name}: backprop")
        entry = {"network": config.describe(), "batch": config.batch, "steps": steps,
                 "backprop": ours_step(config, steps, device=device)}
        if with_torch:
            log(f"  fit step, {name}: PyTorch")
            entry["torch"] = torch_step(config, steps, device=f"cuda:{index}")
            entry["backprop_over_torch"] = entry["backprop"]["median_s"] / entry["torch"]["median_s"]
        results["steps"][name] = entry
    if kernels:
        log("  kernels against the memory-bandwidth roofline")
        results["kernels"] = kernel_rates(elements, launches, device, results["device"]["peak_gb_per_s"])
    return results


def format_tables(results: dict) -> str:
    """The results as Markdown: the device, the step table, the kernel table."""
    device = results["device"]
    lines = [f"GPU: {device['name']} (compute capability {device['compute_capability']}, "
             f"{device['multiprocessors']} SMs, {device['memory_gib']:.0f} GiB, peak {device['peak_gb_per_s']:,.0f} GB/s); "
             f"CuPy {device['cupy']}, NVRTC {device['nvrtc']}, CUDA runtime {device['cuda_runtime']}, "
             f"driver {device['cuda_driver']}", "",
             "| config | network | batch | steps per block | backprop median (best) | PyTorch median (best) "
             "| backprop / PyTorch |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, entry in results["steps"].items():
        ours = entry["backprop"]
        cells = [name, entry["network"], str(entry["batch"]), str(entry["steps"]),
                 f"{_us(ours['median_s'])} ({_us(ours['best_s'])})"]
        if "torch" in entry:
            theirs = entry["torch"]
            cells += [f"{_us(theirs['median_s'])} ({_us(theirs['best_s'])})", f"{entry['backprop_over_torch']:.2f}"]
        else:
            cells += ["no PyTorch with CUDA", "-"]
        lines.append("| " + " | ".join(cells) + " |")
    if results["kernels"]:
        lines += ["", "| kernel | bytes per element | us per launch | GB/s | of the copy | of peak |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for k in results["kernels"]:
            peak = f"{k['of_peak']:.0%}" if "of_peak" in k else "-"
            lines.append(f"| {k['kernel']} | {k['bytes_per_element']} | {k['us_per_launch']:,.1f} | "
                         f"{k['gb_per_s']:,.0f} | {k['of_copy']:.0%} | {peak} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="the JSON file to write")
    parser.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated: " + ", ".join(CONFIGS))
    parser.add_argument("--no-kernels", action="store_true", help="skip the per-kernel roofline")
    parser.add_argument("--device", default="cuda:0")
    parser.add_argument("--steps-scale", type=float, default=1.0, help="scale the steps per timed block")
    parser.add_argument("--elements", type=int, default=ELEMENTS, help="elements per array in the kernel timings")
    parser.add_argument("--launches", type=int, default=LAUNCHES, help="timed launches per kernel")
    args = parser.parse_args(argv)
    configs = [c for c in args.configs.split(",") if c]
    unknown = [c for c in configs if c not in CONFIGS]
    if unknown:
        parser.error(f"unknown config(s) {unknown}; choose from {list(CONFIGS)}")
    log = lambda message: print(message, file=sys.stderr, flush=True)  # noqa: E731
    results = run(configs, not args.no_kernels, args.device, args.steps_scale, args.elements, args.launches, log)
    results["markdown"] = format_tables(results)
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(results, f, indent=1)
    print(results["markdown"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
