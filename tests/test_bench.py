"""The benchmark runner runs and prints its table (a functional check: no timing is asserted)."""

from __future__ import annotations

import numpy as np
import pytest

import backprop as bp
import backprop.apps.bench as bench
from backprop.apps.bench_baseline import HandwrittenStep
from backprop.apps.cli import build_parser


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


@pytest.mark.parametrize("name, optimizer", [("tiny", "sgd"), ("small", "sgd"), ("large", "sgd"), ("small", "adam")])
def test_the_hand_written_step_computes_the_librarys_loss_gradients_and_update(name, optimizer):
    """The baseline is only a fair bar if it does the same work: same loss, same gradients and
    the same update as fit's SGD (momentum) or Adam, to a float32 tolerance, over two steps
    (the second one uses the optimizer's state)."""
    config = bench.CONFIGS[name]
    if name == "large":  # the same layers, fewer rows: a check of the 3-layer path, not of speed
        config = bench.Config(**dict(config.__dict__, batch=8))
    lr = 0.01 if optimizer == "sgd" else 1e-3
    hand = HandwrittenStep(config.widths, config.activation, config.loss, config.batch, lr=lr, momentum=0.9,
                           optimizer=optimizer)
    net, loss_fn = bench.our_network(config)
    for layer, W, b in zip(net.layers, hand.W, hand.b):
        layer.weight.data, layer.bias.data = W, b
    ours = bp.SGD(net.parameters(), lr=lr, momentum=0.9) if optimizer == "sgd" else bp.Adam(net.parameters(), lr=lr)
    x, y = bench.make_data(bench.Config(**dict(config.__dict__, steps=2)))
    for rows in (slice(0, config.batch), slice(config.batch, 2 * config.batch)):
        value = loss_fn(net(x[rows]), y[rows])
        net.backward(loss_fn.backward())
        hand_value = hand.step(x[rows], y[rows])
        ours.step()

        assert hand_value == pytest.approx(value, rel=1e-5)
        for layer, dW, db in zip(net.layers, hand.dW, hand.db):
            scale = np.abs(layer.weight.grad).max()
            np.testing.assert_allclose(dW, layer.weight.grad, rtol=1e-4, atol=1e-5 * scale)
            np.testing.assert_allclose(db, layer.bias.grad, rtol=1e-4, atol=1e-5 * scale)
        np.testing.assert_allclose(hand.params, net.store.data, rtol=1e-5, atol=1e-6)


def test_the_hand_written_step_takes_a_shorter_last_batch_and_predicts():
    hand = HandwrittenStep((4, 3, 2), "relu", "cross_entropy", 5)
    x = np.random.default_rng(0).standard_normal((7, 4)).astype(np.float32)
    hand.step(x[:5], np.array([0, 1, 0, 1, 1]))
    hand.step(x[5:], np.array([1, 0]))  # 2 rows: arrays of their own, the same weights
    logits = hand.predict(x)
    hidden = np.maximum(x @ hand.W[0] + hand.b[0], 0)
    np.testing.assert_allclose(logits, hidden @ hand.W[1] + hand.b[1], rtol=1e-6)


def test_the_hand_written_step_refuses_what_it_was_not_written_for():
    with pytest.raises(ValueError, match="activation: expected 'relu' or 'sigmoid', got 'tanh'"):
        HandwrittenStep((2, 2, 1), "tanh", "bce", 4)
    with pytest.raises(ValueError, match="loss: expected 'bce' or 'cross_entropy', got 'mse'"):
        HandwrittenStep((2, 2, 1), "relu", "mse", 4)
    with pytest.raises(ValueError, match="optimizer: expected 'sgd' or 'adam', got 'rmsprop'"):
        HandwrittenStep((2, 2, 1), "relu", "bce", 4, optimizer="rmsprop")


def test_the_table_reports_every_side_and_the_ratios_between_them():
    """format_table on fixed numbers: the ratios are computed from the medians it is given."""
    blas = [{"internal_api": "openblas", "version": "0.3", "architecture": "Haswell", "num_threads": 2}]
    side = lambda seconds: {"times": seconds, "blas": blas}  # noqa: E731
    digits = lambda seconds, accuracy: {"times": seconds, "accuracy": accuracy, "blas": blas}  # noqa: E731
    results = {
        "sides": ["ours", "loop", "handwritten", "torch"], "threads": 2,
        "configs": {"small": {"ours": side([100e-6, 90e-6, 110e-6]), "loop": side([120e-6, 140e-6, 130e-6]),
                              "handwritten": side([80e-6, 80e-6, 70e-6]), "torch": side([500e-6, 400e-6, 600e-6])}},
        "digits": {"ours_digits": digits([0.3], [0.96]), "handwritten_digits": digits([0.25], [0.97]),
                   "sklearn_digits": digits([1.0], [0.965])},
    }
    out = bench.format_table(results)
    row = next(line for line in out.splitlines() if line.startswith("| small |"))
    assert row == ("| small | 64-32-10 relu CE | 32 | 100 us (90 us) | 80 us (70 us) | 500 us (400 us) "
                   "| 0.200 (0.225) | 0.160 | 1.25 | <= 0.22 | yes |")
    loop_row = next(line for line in out.splitlines() if line.startswith("| small | 100 us"))
    assert loop_row == "| small | 100 us (90 us) | 130 us (120 us) | 1.30 (1.33) | <= 1.3 | yes |"
    assert ("backprop 0.30 s (test accuracy 0.960), hand-written NumPy 0.25 s (test accuracy 0.970), "
            "sklearn MLPClassifier 1.00 s (test accuracy 0.965); backprop / sklearn: medians 0.300, bests 0.300 "
            "(target <= 0.25: NO); hand-written / sklearn 0.250; backprop / hand-written 1.20") in out


def test_the_gemm_line_reports_the_rate_against_its_target():
    results = {"sides": ["ours", "loop", "handwritten"], "threads": 2, "digits": None,
               "configs": {"large": {"ours": {"times": [0.04], "gemm": {
                   "step_gemm_gflops": 150.0, "gemm_share": 0.86, "square_gflops": {1024: 160.0, 2048: 170.0},
                   "fraction_of_square": 150.0 / 170.0}}, "loop": {"times": [0.042]},
                   "handwritten": {"times": [0.038]}}}}
    out = bench.format_table(results)
    assert ("large config GEMMs inside fit (median of one-epoch fits): 150 GFLOP/s, 88% of NumPy's square-GEMM "
            "rate (1024x1024: 160, 2048x2048: 170 GFLOP/s; target >= 90%: NO); GEMMs are 86% of the step's time") in out
    assert "| large | 784-1024-1024-10 relu CE | 512 | 40.0 ms (40.0 ms) | 38.0 ms (38.0 ms) | not installed |" in out


def test_gemm_rates_times_the_gemms_inside_fit_and_leaves_the_backend_as_it_was():
    config = bench.Config(**dict(bench.CONFIGS["small"].__dict__, steps=4))
    net, loss = bench.our_network(config)
    optimizer = bp.SGD(net.parameters(), lr=0.01, momentum=0.9)
    x, y = bench.make_data(config)
    rates = bench.gemm_rates(net, loss, optimizer, x, y, config, fits=2)
    assert rates["step_gemm_gflops"] > 0 and 0 < rates["gemm_share"] < 1
    assert set(rates["square_gflops"]) == {1024, 2048}
    assert rates["fraction_of_square"] == rates["step_gemm_gflops"] / max(rates["square_gflops"].values())
    assert "matmul" not in vars(net.backend)  # the timing wrapper is gone


@pytest.mark.parametrize("name", ["lenet", "digits_cnn"])
def test_the_cnn_configs_run_on_every_side(name):
    config = bench.Config(**dict(bench.CONFIGS[name].__dict__, steps=2))
    sides = ["ours", "loop", "handwritten"] + (["torch"] if bench.installed("torch") else [])
    for side in sides:
        result = bench.run_worker({"kind": side, "config": config.__dict__, "blocks": 1}, threads=1)
        assert len(result["times"]) == 1 and result["times"][0] > 0, side
    shares = bench.run_worker({"kind": "ours", "config": config.__dict__, "blocks": 1}, threads=1)["shares"]
    assert set(shares) == {"matmul", "im2col", "col2im"} and 0 < sum(shares.values()) < 1


@pytest.mark.parametrize("arch", ["lenet", "digits_cnn"])
def test_the_hand_written_cnn_step_learns_a_batch(arch):
    """Steps on one batch drive its cross-entropy down (the logits of each step's forward are
    the last Dense layer's output)."""
    from backprop.apps.bench_conv_baseline import ARCHITECTURES, HandwrittenConvStep

    step = HandwrittenConvStep(arch, 16, lr=0.05)
    step.dropout = 0.0  # the same function every step
    rng = np.random.default_rng(0)
    x = rng.standard_normal((16, *ARCHITECTURES[arch]["image"]), dtype=np.float32)
    labels = rng.integers(0, 10, size=16)
    losses = []
    for _ in range(30):
        step.step(x, labels)
        logits = step.a[-1].astype(np.float64)
        shifted = logits - logits.max(axis=1, keepdims=True)
        losses.append(float(np.mean(np.log(np.exp(shifted).sum(axis=1)) - shifted[np.arange(16), labels])))
    assert losses[-1] < 0.5 * losses[0], losses
