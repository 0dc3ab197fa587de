"""The first run on a GPU machine, one command, under 6 minutes (a budget of 340 s):

    python3 benchmarks/first_gpu_run.py RESULTS_DIR

Made for a machine without internet where CuPy (cupy-cuda13x or cupy-cuda12x, with its CUDA
libraries) is installed already, and perhaps PyTorch with CUDA and pytest. In order, each phase
with a time limit:
1. install this checkout into the running Python without dependencies, build isolation or an
   index (`pip install --no-deps --no-build-isolation --no-index -e .`); where that cannot work
   (no setuptools >= 64 there, as in a bare Python 3.12 venv), the later phases import backprop
   from its installed layout made of symbolic links to the checkout instead (`linked_layout`);
2. ask backprop whether a GPU is usable; if none is, print one line saying why and stop (exit 0);
3. run the `gpu` tests only (GPU_TEST_FILES; the rest of the suite, the NVRTC 12 compile checks
   among it, needs the test extra);
4. run the GPU benchmarks (benchmarks/gpu_bench.py): fit's step on the four configs of
   `python -m backprop bench` against PyTorch on the same GPU when torch with CUDA is installed,
   and each kernel's time against the memory-bandwidth roofline;
5. write everything (versions, each phase's output, test results, benchmark tables) into ONE
   file, RESULTS_DIR/first-gpu-run-<date>-<time>.json, and print a summary.

Exit status: 0 when every phase passed or there is no GPU, 1 when a phase failed or ran out of
time (the file says which), 2 for a bad command line. `--quick` runs a few gpu tests and tiny
benchmarks, to check the command itself in under a minute.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ElementTree
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GPU_TEST_FILES = ("tests/test_gpu.py", "tests/test_extreme.py", "tests/test_distributed.py",
                  "tests/test_images.py")
# The whole run, environment listing included, within 6 minutes: a GPU machine is lent for 10
# minutes a command and 15 in all, its start-up included.
BUDGET_S = 340
# The most each phase may take (they add up to the budget); each also stops where the budget
# ends. Each is a few times what the phase took where it could be measured, and the tests' cap
# leaves room for the first compile of every kernel on an empty cache (benchmarks/RESULTS.md).
PHASE_LIMITS_S = {"install": 45, "detect": 30, "tests": 180, "benchmarks": 85}
QUICK_TESTS = "loads or refused"
OUTPUT_TAIL = 8000

DETECT = """
import json
from backprop.backends import available_devices, cuda_status
from backprop.backends.devices import driver_cuda_version, installed_cupy_major
count, reason = cuda_status()
print(json.dumps({"gpus": count, "reason": reason, "devices": available_devices(),
                  "cupy_cuda": installed_cupy_major(), "driver_cuda": driver_cuda_version()}))
"""


def linked_layout(destination: Path) -> Path:
    """backprop as installed (backends/ and kernels/ inside backprop/), made of symbolic links to
    the checkout under `destination`; the folder to put on sys.path."""
    package = destination / "backprop"
    package.mkdir(parents=True)
    for entry in (REPO / "backprop").iterdir():
        if entry.name != "__pycache__":
            (package / entry.name).symlink_to(entry)
    (package / "backends").symlink_to(REPO / "backends")
    (package / "kernels").symlink_to(REPO / "kernels")
    return destination


class Run:
    """The phases of one run, their time limits, and what each gave."""

    def __init__(self, budget_s: float):
        self.deadline = time.monotonic() + budget_s
        self.phases: dict[str, dict] = {}
        self.env = dict(os.environ)

    def phase(self, name: str, command: list[str], cwd: Path) -> dict:
        """Runs `command` within the phase's limit and the budget; records and returns its outcome."""
        limit = min(PHASE_LIMITS_S[name], self.deadline - time.monotonic())
        outcome = {"command": command, "limit_s": round(limit, 1)}
        if limit <= 1:
            outcome.update(status="not run: out of time", seconds=0.0, output="")
            self.phases[name] = outcome
            return outcome
        start = time.monotonic()
        # a session of its own, so a phase that runs out of time is stopped with every process it started
        process = subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                   start_new_session=True, env=self.env)
        try:
            output, _ = process.communicate(timeout=limit)
            status = "passed" if process.returncode == 0 else f"failed (exit status {process.returncode})"
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            output, _ = process.communicate()
            status = f"timed out after {limit:.0f} s"
        outcome.update(status=status, seconds=round(time.monotonic() - start, 1), output=output[-OUTPUT_TAIL:])
        self.phases[name] = outcome
        return outcome

    def skip(self, name: str, why: str) -> None:
        self.phases[name] = {"status": f"not run: {why}", "seconds": 0.0}


def _first_line(command: list[str]) -> str:
    """The first line `command` prints, or why there is none (a missing tool is no error here)."""
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unavailable ({exc.__class__.__name__})"
    lines = (done.stdout or done.stderr).strip().splitlines()
    return lines[0] if lines else f"no output (exit status {done.returncode})"


def environment() -> dict:
    """The machine and the Python packages the run depends on."""
    found = {}
    try:
        listed = subprocess.run([sys.executable, "-m", "pip", "list", "--format=json"], capture_output=True,
                                text=True, timeout=60)
        for package in json.loads(listed.stdout or "[]"):
            name = package["name"].lower()
            if name.startswith(("cupy", "nvidia-", "torch", "numpy", "safetensors", "pytest", "mpi4py", "cuda-")):
                found[name] = package["version"]
    except (OSError, subprocess.TimeoutExpired, json.JSONDecodeError) as exc:
        found["error"] = f"pip list failed ({exc.__class__.__name__})"
    return {"python": sys.version.split()[0], "executable": sys.executable, "platform": platform.platform(),
            "cpus": os.cpu_count(), "packages": found,
            "nvidia_smi": _first_line(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                                       "--format=csv,noheader"]),
            "nvcc": _first_line(["nvcc", "--version"]) if shutil.which("nvcc") else "not found"}


def _test_results(junit: Path) -> dict | None:
    """Counts and failures from pytest's JUnit XML; None when pytest wrote none."""
    if not junit.exists():
        return None
    suite = ElementTree.parse(junit).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    counts = {key: int(suite.get(key, 0)) for key in ("tests", "failures", "errors", "skipped")}
    failed = []
    for case in suite.iter("testcase"):
        problem = case.find("failure")
        if problem is None:
            problem = case.find("error")
        if problem is not None:
            failed.append({"test": f"{case.get('classname')}::{case.get('name')}",
                           "message": (problem.get("message") or "")[:1000]})
    counts["passed"] = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    return {**counts, "failed": failed}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("results_dir", help="the folder to write the results file into (created if missing)")
    parser.add_argument("--quick", action="store_true", help="a few gpu tests and tiny benchmarks")
    args = parser.parse_args(argv)
    results_dir = Path(args.results_dir).resolve()
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / f"first-gpu-run-{time.strftime('%Y%m%d-%H%M%S')}.json"
    run = Run(BUDGET_S)
    report = {"started": time.strftime("%Y-%m-%d %H:%M:%S %z"), "repository": str(REPO), "quick": args.quick,
              "environment": environment(), "phases": run.phases}
    with tempfile.TemporaryDirectory(prefix="first-gpu-run-") as scratch:
        scratch = Path(scratch)
        status = _run_phases(run, report, scratch, args.quick)
    report["finished"] = time.strftime("%Y-%m-%d %H:%M:%S %z")
    report["status"] = status
    path.write_text(json.dumps(report, indent=1), encoding="utf-8")
    if status.startswith("skipped"):
        print(f"first_gpu_run: no usable GPU here, nothing to run: {report['detection']['reason']}")
        return 0
    _print_summary(report, path)
    return 0 if status == "passed" else 1


def _run_phases(run: Run, report: dict, scratch: Path, quick: bool) -> str:
    """The phases in order (the later ones need the earlier); the run's status."""
    # Subprocesses start outside the checkout: with the checkout on sys.path, `import backprop`
    # would find ./backprop, which lacks backends/ and kernels/ (they install inside it).
    install = run.phase("install", [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation",
                                     "--no-index", "--disable-pip-version-check", "-e", str(REPO)], scratch)
    report["backprop_from"] = "pip install -e"
    if install["status"] != "passed":
        layout = linked_layout(scratch / "layout")
        run.env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(layout), run.env.get("PYTHONPATH")]))
        report["backprop_from"] = f"symbolic links in {layout} (pip could not install the checkout)"
    detect = run.phase("detect", [sys.executable, "-c", DETECT], scratch)
    if detect["status"] != "passed":
        return "failed: detect"
    # the answer is the last line that is JSON (warnings, on the same stream, come before it)
    report["detection"] = json.loads([line for line in detect["output"].splitlines() if line.startswith("{")][-1])
    if not report["detection"]["gpus"]:
        return "skipped: no usable GPU"
    junit = scratch / "junit.xml"
    try:
        import pytest  # noqa: F401
    except ImportError:
        run.skip("tests", "pytest is not installed")
    else:
        # python -m puts the working directory first on sys.path: tests/, harmless (pytest puts it there too)
        command = [sys.executable, "-m", "pytest", "--rootdir", str(REPO), "-c", str(REPO / "pyproject.toml"),
                   *[str(REPO / f) for f in GPU_TEST_FILES], "-m", "gpu", "-q", "-rfEs", "-o", "addopts=",
                   "-p", "no:cacheprovider", f"--junitxml={junit}"]
        run.phase("tests", command + (["-k", QUICK_TESTS] if quick else []), REPO / "tests")
        report["tests"] = _test_results(junit)
    bench_json = scratch / "bench.json"
    command = [sys.executable, str(REPO / "benchmarks" / "gpu_bench.py"), "--out", str(bench_json)]
    quick_bench = ["--configs", "tiny", "--steps-scale", "0.01", "--elements", "4096", "--launches", "2"]
    run.phase("benchmarks", command + (quick_bench if quick else []), scratch)
    report["benchmarks"] = json.loads(bench_json.read_text()) if bench_json.exists() else None
    failed = [name for name, phase in run.phases.items() if phase["status"] != "passed"
              and name != "install" and not phase["status"].startswith("not run: pytest")]
    return "passed" if not failed else "failed: " + ", ".join(failed)


def _print_summary(report: dict, path: Path) -> None:
    detection = report["detection"]
    print(f"first_gpu_run: {report['status']}; {detection['gpus']} GPU(s): {', '.join(detection['devices'][1:])}")
    for name, phase in report["phases"].items():
        print(f"  {name:10} {phase['status']} ({phase['seconds']} s)")
    print(f"  backprop from {report['backprop_from']}")
    tests = report.get("tests")
    if tests:
        print(f"  gpu tests: {tests['passed']} passed, {tests['failures']} failed, {tests['errors']} errors, "
              f"{tests['skipped']} skipped")
        for failure in tests["failed"][:20]:
            print(f"    FAILED {failure['test']}: {failure['message'][:200]}")
    if report.get("benchmarks"):
        print()
        print(report["benchmarks"]["markdown"])
    print(f"\nresults: {path}")


if __name__ == "__main__":
    sys.exit(main())
