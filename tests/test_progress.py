"""fit's progress bar in a real pseudo-terminal: every line fits 80 columns with the validation
metrics, and a terminal that reports 0 columns gets the plain lines."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import struct
import sys
import termios

import pytest

pytest.importorskip("tqdm")

SCRIPT = """
import numpy as np, backprop as bp
rng = np.random.default_rng(0)
X = rng.normal(size=(300, 4)); y = (X[:, 0] > 0).astype(int)
net = bp.Sequential(bp.Dense(4, 8, activation="relu"), bp.Dense(8, 2), seed=0)
bp.fit(net, X, y, loss=bp.CrossEntropyLoss(), epochs=3, batch_size=10, validation_split=0.1)
"""


def run_in_terminal(columns: int) -> str:
    """What SCRIPT writes to a pseudo-terminal `columns` wide (stdout and stderr together)."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: its stdin, stdout and stderr are the terminal
        os.execv(sys.executable, [sys.executable, "-c", SCRIPT])
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    output = b""
    while select.select([fd], [], [], 120)[0]:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # the child has exited and closed the terminal
            break
        if not chunk:
            break
        output += chunk
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, output
    return output.decode()


def test_every_line_fits_80_columns_with_the_validation_metrics():
    text = run_in_terminal(80)
    lines = [line.rstrip() for line in re.split(r"[\r\n]+", text) if line.strip()]
    assert lines and all(len(line) <= 80 for line in lines), lines
    ends = [line for line in lines if "val_loss" in line]
    assert {line.split(" [")[0] for line in ends} == {"epoch 1/3", "epoch 2/3", "epoch 3/3"}, lines
    assert all(re.search(r"loss [\d.]+ acc [\d.]+ val_loss [\d.]+ val_acc [\d.]+$", line) for line in ends), ends


def test_a_terminal_of_0_columns_gets_plain_lines():
    text = run_in_terminal(0)
    lines = [line for line in text.replace("\r\n", "\n").split("\n") if line]
    assert "\r" not in text.replace("\r\n", "") and "\x1b" not in text, repr(text)
    assert len(lines) == 3 and all(
        re.fullmatch(r"epoch \d/3  loss [\d.]+  accuracy [\d.]+  val_loss [\d.]+  val_accuracy [\d.]+  [\d.]+ s",
                     line) for line in lines), lines
