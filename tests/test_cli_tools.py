"""`python -m backprop devices`, `gradcheck`, and the top-level command line."""

from __future__ import annotations

import re

from cli_helpers import assert_one_line_error, run_cli, run_module

import backprop as bp
from backprop.backends import available_devices, cuda_status


def test_devices_lists_what_is_usable_and_why_not_the_gpu():
    result = run_module("devices")
    assert result.returncode == 0, result.stderr
    listed = [line.split()[0] for line in result.stdout.splitlines() if not line.startswith("no GPU")]
    assert listed == available_devices()
    count, reason = cuda_status()
    if count == 0:
        assert f"no GPU: {reason}" in result.stdout
    else:
        assert "cuda:0" in result.stdout and "GiB" in result.stdout


def test_gradcheck_reports_every_layer_of_every_network_on_each_device():
    status, out, err = run_cli("gradcheck")
    assert status == 0, err
    for device in available_devices():
        assert f"device {device}: max relative error per layer" in out
    rows = re.findall(r"^    (layer \d+ \S+.*?|input)\s+(\d\.\d\de-\d\d)  (ok|FAIL)$", out, re.M)
    from backprop.apps.gradcheck_command import _networks

    # a row per layer with parameters and one for the input, per network and device
    built = [bp.Sequential(*layers).layers for _, layers, _, _ in _networks()]
    expected = sum(1 + sum(1 for layer in layers if layer.parameters()) for layers in built)
    assert len(rows) == expected * len(available_devices()), out
    assert {verdict for *_, verdict in rows} == {"ok"}
    for label in ("Dense 3->4 sigmoid", "Dense 6->4 gelu", "BatchNorm 8", "Dense 8->6 leaky_relu l1 0.001 l2 0.01",
                  "LayerNorm 6", *(f"Dense 5->5 {name}" for name in ("relu", "tanh"))):
        assert label in out
    assert re.search(r"^passed: largest relative error \d\.\d\de-\d\d \(tolerance 1e-06\)$", out, re.M)


def test_gradcheck_fails_with_status_1_above_the_tolerance():
    status, out, _ = run_cli("gradcheck", "--device", "cpu", "--tolerance", "1e-30")
    assert status == 1
    assert "FAIL" in out and out.strip().splitlines()[-1].startswith("FAILED: largest relative error")


def test_gradcheck_on_an_unknown_or_missing_device_is_a_one_line_error():
    status, out, err = run_cli("gradcheck", "--device", "tpu")
    assert_one_line_error(status, err, "tpu")
    assert out == ""
    if not cuda_status()[0]:
        status, _, err = run_cli("gradcheck", "--device", "cuda:0")
        assert_one_line_error(status, err, "'cuda:0' is not available")


def test_top_level_help_and_a_missing_command():
    status, out, _ = run_cli("--help")
    assert status == 0
    for command in ("train", "explain", "devices", "gradcheck"):
        assert command in out
    for command in ("devices", "gradcheck"):
        status, out, _ = run_cli(command, "--help")
        assert status == 0 and "usage: python -m backprop " + command in out
    result = run_module()
    assert_one_line_error(result.returncode, result.stderr, "required: COMMAND")
    status, _, err = run_cli("teach")
    assert_one_line_error(status, err, "'teach'")


def test_every_help_text_fits_the_terminal_and_speaks_of_the_projects_own_targets(monkeypatch):
    """Each command's --help at 80 columns: no line past the width, no flag without its help,
    and the text names our own targets, never where they were once filed."""
    monkeypatch.setenv("COLUMNS", "80")
    for command in ("train", "explain", "devices", "gradcheck", "bench"):
        status, out, _ = run_cli(command, "--help")
        assert status == 0
        assert max(len(line) for line in out.splitlines()) <= 80, command
        assert "issue" not in out.lower(), command
    import argparse

    from backprop.apps.cli import build_parser

    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    for command, parser in commands.choices.items():
        silent = [a.option_strings for a in parser._actions if a.option_strings and not a.help]
        assert not silent, f"{command}: flags without help {silent}"
