"""The `gpu` tests (benchmarks/first_gpu_run.py's GPU_TEST_FILES) on this machine without a GPU:
pytest runs them in a process of its own with BACKPROP_CUPY_DOUBLE set, so that `import cupy`
gives the CuPy double (tests/conftest.py, tests/cupy_double.py), once on the plain host build of
the kernels and once with a GPU's arithmetic emulated (FMA contraction, libm results moved by
CUDA's documented ulps, float32 flush-to-zero, blocks and threads in reverse order). So each
test the first GPU run executes has passed on the double first. The whole suite, under any
emulation (plain, gpu, or options joined by commas: cupy_double.emulation_named):

    BACKPROP_CUPY_DOUBLE=gpu pytest -m gpu tests/test_gpu.py tests/test_extreme.py tests/test_distributed.py

Most of its time goes to kernels with barriers, which the host build runs one host thread per
CUDA thread: the 300x257 op cases of the block-per-row kernels and the determinism test. So each
run here takes a selection (`selection`) that keeps every op and every shape class: each op case
once, in a dtype and one of the smaller shapes that rotate with the case and the run (over both
runs, every case in both dtypes); the 300x257 shape for the ops whose large-shape result sums
many rows or covers a long flat buffer, the layer norm's (a block per row) in the plain run; and,
in the emulated run, every other gpu test but the determinism one.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import host_kernels
from op_cases import CASES
from test_gpu import SHAPES

TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS.parent / "benchmarks"))
from first_gpu_run import GPU_TEST_FILES  # noqa: E402

SMALL, LARGE = [s for s in SHAPES if s != (300, 257)], (300, 257)
DTYPES = ("float32", "float64")
RUNS = ("plain", "gpu")  # the emulation of each run
# Large-shape op cases (float32, where a sum's rounding shows most): column sums over 300 rows
# (matmul's transposed products, bias gradients, batch norm), GELU's saturation, Adam's buffer.
LARGE_CASES = {"plain": ["matmul", "sum_rows", "batchnorm_forward_train", "activation_backward_gelu", "adam_step/adam",
                         "layernorm_forward"],
               "gpu": ["matmul", "sum_rows", "batchnorm_forward_train", "activation_backward_gelu", "adam_step/adam"]}
# Run-to-run determinism trains two networks for two epochs: about 30 s on the double, a GPU's test.
LEFT_TO_THE_FULL_RUN = {"test_training_is_deterministic_run_to_run"}
RUN_TIMEOUT_S = 600


def _op_case(case: str, dtype: str, shape) -> str:
    return f"{TESTS / 'test_gpu.py'}::test_every_op_matches_the_reference[{case}-{dtype}-{shape[0]}x{shape[1]}]"


def selection(run: int, emulation: str) -> list[str]:
    """The node ids (and files) run `run` (0, 1) of the gpu tests takes under `emulation`."""
    chosen = [_op_case(case, DTYPES[(i + run) % 2], SMALL[(i + run) % len(SMALL)]) for i, case in enumerate(CASES)]
    chosen += [_op_case(case, "float32", LARGE) for case in LARGE_CASES[emulation]]
    if emulation == "gpu":
        others = re.findall(r"^def (test_\w+)", (TESTS / "test_gpu.py").read_text(encoding="utf-8"), re.MULTILINE)
        chosen += [f"{TESTS / 'test_gpu.py'}::{name}" for name in others
                   if name != "test_every_op_matches_the_reference" and name not in LEFT_TO_THE_FULL_RUN]
        chosen += [str(TESTS.parent / f) for f in GPU_TEST_FILES if f != "tests/test_gpu.py"]
    return chosen


@pytest.fixture(scope="module")
def shared_builds():
    """The runs' host builds go to this session's folder (test_cupy_double.py and
    test_kernels_host.py build the same plain and emulated modules)."""
    return host_kernels._session_dir()


@pytest.mark.parametrize("run, emulation", list(enumerate(RUNS)))
def test_the_gpu_tests_pass_on_the_cupy_double(run, emulation, shared_builds):
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env.update(BACKPROP_CUPY_DOUBLE=emulation, BACKPROP_HOST_KERNELS_DIR=shared_builds)
    # from tests/, as first_gpu_run.py runs them: `python -m` puts the working directory on sys.path
    command = [sys.executable, "-m", "pytest", "--rootdir", str(TESTS.parent), "-c", str(TESTS.parent / "pyproject.toml"),
               "-m", "gpu", "-q", "-rfEs", "-o", "addopts=", "-p", "no:cacheprovider", *selection(run, emulation)]
    done = subprocess.run(command, cwd=TESTS, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    summary = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
    assert done.returncode == 0 and "skipped" not in summary, f"{emulation}: {summary}\n{done.stdout[-6000:]}{done.stderr[-3000:]}"


def test_every_op_and_shape_class_is_selected():
    ops = {case: set() for case in CASES}
    for run, emulation in enumerate(RUNS):
        for node in selection(run, emulation):
            match = re.search(r"\[(.+)-(float\d\d)-(\d+x\d+)\]$", node)
            if match:
                ops[match.group(1)].add((match.group(2), match.group(3)))
    assert all({dtype for dtype, _ in chosen} == set(DTYPES) for chosen in ops.values()), ops
    assert {shape for chosen in ops.values() for _, shape in chosen} == {f"{r}x{c}" for r, c in SHAPES}


def test_the_double_builds_what_the_run_names(monkeypatch):
    """BACKPROP_CUPY_DOUBLE names an emulation; a wrong name is refused saying what is expected."""
    import cupy_double

    assert cupy_double.emulation_named("gpu") == host_kernels.Emulation(fma=True, libm_ulps=True, flush_to_zero=True,
                                                                         reverse=True)
    assert cupy_double.emulation_named("fma, reverse") == host_kernels.Emulation(fma=True, reverse=True)
    with pytest.raises(ValueError, match="expected plain, gpu or options among fma, libm_ulps.*got ftz"):
        cupy_double.emulation_named("fma,ftz")
    monkeypatch.delenv(cupy_double.ENVIRONMENT, raising=False)
    assert cupy_double.install_from_environment() is None
