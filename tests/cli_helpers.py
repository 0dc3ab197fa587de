"""Running `python -m backprop ...` in the tests: in this process (fast) or as a subprocess (the
real entry point, exit status and signals)."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys

from backprop.apps.cli import main


def run_cli(*argv: str) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of main(argv) in this process; argparse's exits included."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            status = main(list(argv))
        except SystemExit as exc:
            status = exc.code if isinstance(exc.code, int) else 1
    return status, out.getvalue(), err.getvalue()


# One BLAS thread: these networks are small, and BLAS threads spinning on a busy 2-core CI
# machine made the Quickstart run several times slower without changing what it computes.
ONE_THREAD = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def run_module(*argv: str, cwd=None, timeout: float = 120) -> subprocess.CompletedProcess:
    """`python -m backprop argv...` with this interpreter, output captured as text."""
    return subprocess.run([sys.executable, "-m", "backprop", *argv], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **ONE_THREAD})


def assert_one_line_error(status: int, stderr: str, *fragments: str) -> None:
    """A user error: exit status 2, one line on stderr naming the problem, no traceback."""
    assert status == 2, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    assert "error:" in lines[0]
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
