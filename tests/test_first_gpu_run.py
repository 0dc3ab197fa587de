"""The first-run command (benchmarks/first_gpu_run.py) and the GPU benchmarks, in what can be
checked without a GPU: installing offline into a Python that has CuPy but no index to reach,
skipping with one line where no GPU is usable, and every phase of a GPU run through the CuPy
double (tests/cupy_double.py), which each Python the command starts installs as `cupy`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import site
import subprocess
import sys
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
import first_gpu_run  # noqa: E402
import gpu_bench  # noqa: E402

import cupy_double  # noqa: E402
from backprop.apps.bench import CONFIGS  # noqa: E402

RUN_TIMEOUT_S = 300
IGNORED = shutil.ignore_patterns(".git", ".venv", ".ci-venv", "build", "dist", "*.egg-info", "__pycache__",
                                 ".pytest_cache", ".benchmarks", ".hypothesis", "runs")


def _offline_python(tmp_path: Path, leave_out: str = r"__editable__.*|backprop_gpu.*") -> tuple[Path, Path]:
    """(a copy of this checkout, the Python of a fresh environment that sees every package of
    this one but backprop itself and `leave_out`, as a GPU machine's Python with CuPy and pip)."""
    source = tmp_path / "checkout"
    shutil.copytree(REPO, source, ignore=IGNORED)
    home = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(home)
    packages = next(home.glob("lib/python3*/site-packages"))
    for entry in Path(site.getsitepackages()[0]).iterdir():
        if not re.fullmatch(leave_out, entry.name):
            (packages / entry.name).symlink_to(entry)
    return source, home / "bin" / "python"


def _run(python: Path, source: Path, out: Path, *args, env=None) -> subprocess.CompletedProcess:
    """The command, run by `python` from the checkout's root, with no pip configuration or index."""
    environment = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    environment.update(PIP_CONFIG_FILE=os.devnull, PIP_NO_INDEX="1", **(env or {}))
    return subprocess.run([str(python), str(source / "benchmarks" / "first_gpu_run.py"), str(out), *args],
                          capture_output=True, text=True, timeout=RUN_TIMEOUT_S, env=environment, cwd=source)


def test_without_a_gpu_it_installs_offline_then_skips_with_one_line(tmp_path):
    source, python = _offline_python(tmp_path)
    done = _run(python, source, tmp_path / "results")
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("\n") == 1 and done.stdout.startswith("first_gpu_run: no usable GPU here"), done.stdout
    (results,) = (tmp_path / "results").glob("first-gpu-run-*.json")
    report = json.loads(results.read_text())
    assert report["status"] == "skipped: no usable GPU"
    assert report["phases"]["install"]["status"] == "passed" and "--no-index" in report["phases"]["install"]["command"]
    installed = subprocess.run([str(python), "-c", "import backprop.backends, backprop.kernels; print(backprop.__file__)"],
                               capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert installed.stdout.strip() == str(source / "backprop" / "__init__.py"), installed.stderr


# Every Python the command starts, once backprop is installed, imports `cupy` as the CuPy double,
# with the host builds of the kernels made once by the test.
DOUBLE_SITECUSTOMIZE = """
import importlib.util, os, sys
if importlib.util.find_spec("backprop") is not None:
    sys.path.insert(0, {tests!r})
    import cupy_double, host_kernels
    sys.modules.update(cupy_double.modules())
    host_kernels._cache_dir = os.environ["BACKPROP_HOST_KERNELS_DIR"]
"""


def test_with_gpus_every_phase_runs_and_one_results_file_holds_them(tmp_path):
    """--quick, through the CuPy double's two GPUs: installed, detected, a few gpu tests, tiny
    benchmarks, everything in one file, exit status 0."""
    from backprop.kernels import loader
    import host_kernels

    host_kernels.build_all(loader.kernel_source(name) for name in loader.source_names())
    source, python = _offline_python(tmp_path)
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(DOUBLE_SITECUSTOMIZE.format(tests=str(REPO / "tests")))
    done = _run(python, source, tmp_path / "results", "--quick",
                env={"PYTHONPATH": str(hooks), "BACKPROP_HOST_KERNELS_DIR": host_kernels._session_dir()})
    (results,) = (tmp_path / "results").glob("first-gpu-run-*.json")
    report = json.loads(results.read_text())
    assert done.returncode == 0, done.stdout + done.stderr + json.dumps(report["phases"], indent=1)
    assert report["status"] == "passed" and report["detection"]["devices"] == ["cpu", "cuda:0", "cuda:1"]
    assert list(report["phases"]) == ["install", "detect", "tests", "benchmarks"]
    tests = report["tests"]
    assert tests["passed"] >= 2 and tests["failures"] == tests["errors"] == 0, tests
    assert report["benchmarks"]["device"]["name"] == "CuPy double" and "| tiny |" in report["benchmarks"]["markdown"]
    assert f"results: {results}" in done.stdout


def test_without_setuptools_it_runs_backprop_from_links_to_the_checkout(tmp_path):
    """A bare Python 3.12 venv has no setuptools: pip cannot install the checkout without build
    isolation; the run goes on with backprop imported from links to the checkout."""
    source, python = _offline_python(tmp_path, r"__editable__.*|backprop_gpu.*|setuptools.*|_distutils_hack|"
                                               r"pkg_resources|distutils-precedence\.pth")
    done = _run(python, source, tmp_path / "results")
    assert done.returncode == 0 and done.stdout.startswith("first_gpu_run: no usable GPU here"), done.stdout + done.stderr
    (results,) = (tmp_path / "results").glob("first-gpu-run-*.json")
    report = json.loads(results.read_text())
    assert report["phases"]["install"]["status"].startswith("failed") and "symbolic links" in report["backprop_from"]
    assert report["detection"]["devices"] == ["cpu"]


def test_the_phase_caps_fit_the_budget_and_the_budget_fits_a_device_lease():
    """A GPU machine is lent for 10 minutes a command and 15 in all, its start-up included: the
    whole run stays under 6 minutes, and no phase's cap reaches past the budget's share."""
    assert list(first_gpu_run.PHASE_LIMITS_S) == ["install", "detect", "tests", "benchmarks"]
    assert sum(first_gpu_run.PHASE_LIMITS_S.values()) <= first_gpu_run.BUDGET_S < 360


def test_the_gpu_test_files_are_every_test_file_with_gpu_tests():
    marked = {f"tests/{p.name}" for p in (REPO / "tests").glob("test_*.py")
              if p.name != Path(__file__).name and "pytest.mark.gpu" in p.read_text()}
    assert set(first_gpu_run.GPU_TEST_FILES) == marked


def test_the_gpu_benchmarks_run_through_the_cupy_double(monkeypatch):
    machine = cupy_double.install(monkeypatch)
    monkeypatch.setattr(gpu_bench, "torch_cuda_available", lambda: False)
    from backprop.backends import devices

    monkeypatch.setattr(devices, "_BACKENDS", {})
    devices.cuda_status.cache_clear()
    try:
        results = gpu_bench.run(["tiny"], steps_scale=0.01, elements=2 * gpu_bench.COLUMNS, launches=2,
                                log=lambda message: None)
    finally:
        devices.cuda_status.cache_clear()
    assert results["device"]["name"] == "CuPy double" and results["device"]["peak_gb_per_s"] > 0
    assert results["steps"]["tiny"]["backprop"]["median_s"] > 0 and "torch" not in results["steps"]["tiny"]
    assert [k["kernel"] for k in results["kernels"]] == [name for name, _, _ in gpu_bench.KERNELS]
    assert all(k["gb_per_s"] > 0 for k in results["kernels"]) and results["kernels"][0]["of_copy"] == 1.0
    table = gpu_bench.format_tables(results)
    assert table.count("\n| ") == (2 + 1) + (2 + len(gpu_bench.KERNELS))  # headers and rows: 1 config, the kernels
    assert machine.work == {0}


def test_pytorchs_step_is_the_canonical_eager_loop():
    torch = pytest.importorskip("torch")
    result = gpu_bench.torch_step(CONFIGS["small"], steps=3, blocks=1, device="cpu")
    assert result["median_s"] > 0 and result["torch"] == torch.__version__
