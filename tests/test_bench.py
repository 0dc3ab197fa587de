"""The benchmark runner runs and prints its table (a functional check: no timing is asserted)."""

from __future__ import annotations

import backprop.bench as bench
from backprop.cli import build_parser


def test_runner_times_a_tiny_config_and_prints_the_table(capsys):
    code = bench.main(["--configs", "tiny", "--rounds", "1", "--blocks", "1", "--steps-scale", "0.01",
                       "--no-digits"])
    assert code == 0
    out = capsys.readouterr().out
    assert "machine:" in out
    assert "| config | network | batch | backprop median (best) |" in out
    row = next(line for line in out.splitlines() if line.startswith("| tiny |"))
    assert "3-4-1 sigmoid BCE" in row and " us (" in row
    assert "BLAS: ours:" in out


def test_worker_reports_step_times_and_blas():
    config = bench.Config(**dict(bench.CONFIGS["small"].__dict__, steps=3))
    result = bench.run_worker({"kind": "ours", "config": config.__dict__, "blocks": 2}, threads=1)
    assert len(result["times"]) == 2 and all(t > 0 for t in result["times"])
    assert isinstance(result["blas"], list)


def test_the_command_line_has_a_bench_subcommand():
    args = build_parser().parse_args(["bench", "--configs", "tiny", "--rounds", "1"])
    assert args.run is bench.run and args.configs == "tiny" and args.rounds == 1
