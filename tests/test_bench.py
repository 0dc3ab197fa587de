"""The benchmark runner runs and prints its table (a functional check: no timing is asserted)."""

from __future__ import annotations

import numpy as np
import pytest

import backprop.bench as bench
from backprop.bench_baseline import HandwrittenStep
from backprop.cli import build_parser


def test_runner_times_a_tiny_config_and_prints_the_table(capsys):
    code = bench.main(["--configs", "tiny", "--rounds", "1", "--blocks", "1", "--steps-scale", "0.01",
                       "--no-digits"])
    assert code == 0
    out = capsys.readouterr().out
    assert "machine:" in out
    assert "| config | network | batch | backprop median (best) | hand-written NumPy median (best) |" in out
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


@pytest.mark.parametrize("name", ["tiny", "small", "large"])
def test_the_hand_written_step_computes_the_librarys_loss_gradients_and_update(name):
    """The baseline is only a fair bar if it does the same work: same loss, same gradients
    (float32, so to a float32 tolerance), and PyTorch's first momentum step w - lr g."""
    config = bench.CONFIGS[name]
    if name == "large":  # the same layers, fewer rows: a check of the 3-layer path, not of speed
        config = bench.Config(**dict(config.__dict__, batch=8))
    hand = HandwrittenStep(config.widths, config.activation, config.loss, config.batch, lr=0.01, momentum=0.9)
    net, loss_fn = bench.our_network(config)
    for layer, W, b in zip(net.layers, hand.W, hand.b):
        layer.weight.data, layer.bias.data = W, b
    x, y = bench.make_data(bench.Config(**dict(config.__dict__, steps=1)))
    weights_before = hand.params.copy()

    value = loss_fn(net(x), y)
    net.backward(loss_fn.backward())
    hand_value = hand.step(x, y)

    assert hand_value == pytest.approx(value, rel=1e-5)
    for layer, dW, db in zip(net.layers, hand.dW, hand.db):
        scale = np.abs(layer.weight.grad).max()
        np.testing.assert_allclose(dW, layer.weight.grad, rtol=1e-4, atol=1e-5 * scale)
        np.testing.assert_allclose(db, layer.bias.grad, rtol=1e-4, atol=1e-5 * scale)
    np.testing.assert_allclose(hand.params, weights_before - np.float32(0.01) * hand.grads, rtol=1e-6, atol=1e-7)


def test_the_hand_written_step_refuses_what_it_was_not_written_for():
    with pytest.raises(ValueError, match="activation: expected 'relu' or 'sigmoid', got 'tanh'"):
        HandwrittenStep((2, 2, 1), "tanh", "bce", 4)
    with pytest.raises(ValueError, match="loss: expected 'bce' or 'cross_entropy', got 'mse'"):
        HandwrittenStep((2, 2, 1), "relu", "mse", 4)
