"""`python -m backprop explain`: the worked 3-4-1 example. Its numbers are checked against an
independent NumPy computation and against central finite differences."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from cli_helpers import assert_one_line_error, run_cli, run_module

WEIGHTS = {
    "input": [0.35, 0.9, -0.4], "target": 1,
    "W1": [[0.1, -0.2, 0.3], [0.4, 0.5, -0.6], [-0.7, 0.8, 0.9], [0.25, -0.35, 0.45]],
    "b1": [0.01, -0.02, 0.03, 0.0], "W2": [0.6, -0.5, 0.4, 0.3], "b2": 0.05,
}


def loss(params: dict, x, y) -> float:
    """E = BCE(y, sigmoid(W2 . sigmoid(W1 x + b1) + b2)), written out in NumPy."""
    f1 = 1 / (1 + np.exp(-(params["W1"] @ x + params["b1"])))
    yhat = 1 / (1 + np.exp(-(params["W2"] @ f1 + params["b2"])))
    return float(-(y * np.log(yhat) + (1 - y) * np.log(1 - yhat)))


def central_differences(params: dict, x, y, h: float = 1e-6) -> dict:
    """{"w1_jk" / "b1_j" / "w2_1j" / "b2_1": (E(theta + h) - E(theta - h)) / 2h}."""
    grads = {}
    names = {"W1": "w1_{}{}", "b1": "b1_{}", "W2": "w2_1{}", "b2": "b2_1"}
    for key, pattern in names.items():
        for index in np.ndindex(np.shape(params[key])):
            up = {k: np.array(v, dtype=float) for k, v in params.items()}
            down = {k: np.array(v, dtype=float) for k, v in params.items()}
            up[key][index] += h
            down[key][index] -= h
            name = pattern.format(*(i + 1 for i in index))
            grads[name] = (loss(up, x, y) - loss(down, x, y)) / (2 * h)
    return grads


def printed_gradients(text: str) -> dict:
    section = text.split("4. All 21 gradients")[1].split("5. The update")[0]
    return {m[0]: float(m[1]) for m in re.findall(r"^\s+dE/d(\w+)\s+=.*=\s+([-+][\d.]+)$", section, re.M)}


def weights_file(tmp_path, weights=WEIGHTS):
    path = tmp_path / "weights.json"
    path.write_text(json.dumps(weights))
    return str(path)


def test_printed_gradients_match_finite_differences(tmp_path):
    status, out, err = run_cli("explain", "--weights", weights_file(tmp_path))
    assert status == 0, err
    grads = printed_gradients(out)
    params = {k: np.array(WEIGHTS[k], dtype=float) for k in ("W1", "b1", "W2", "b2")}
    expected = central_differences(params, np.array(WEIGHTS["input"]), 1.0)
    assert len(grads) == 21 and set(grads) == set(expected)
    for name, value in expected.items():
        assert grads[name] == pytest.approx(value, abs=2e-6), name  # printed with 6 decimals


def test_forward_values_updates_and_iterations_follow_the_math(tmp_path):
    status, out, _ = run_cli("explain", "--weights", weights_file(tmp_path), "--lr", "0.3", "--steps", "3")
    assert status == 0
    W1, b1 = np.array(WEIGHTS["W1"]), np.array(WEIGHTS["b1"])
    W2, b2 = np.array(WEIGHTS["W2"]), WEIGHTS["b2"]
    x = np.array(WEIGHTS["input"])
    z1 = W1 @ x + b1
    f1 = 1 / (1 + np.exp(-z1))
    yhat = 1 / (1 + np.exp(-(W2 @ f1 + b2)))
    for j in range(4):
        assert re.search(rf"= {z1[j]:.4f}\n    f1_{j + 1} = sigmoid\(z1_{j + 1}\) = .* = {f1[j]:.4f}\n", out)
    assert f"yhat = sigmoid(z2_1) = 1 / (1 + e^-(" in out and f") = {yhat:.4f}\n" in out
    assert f"E = -(y ln(yhat) + (1 - y) ln(1 - yhat)) = -(1 ln({yhat:.4f})" in out
    assert f"dE/dyhat    = -y / yhat + (1 - y) / (1 - yhat)            = {-1 / yhat:.4f}" in out
    # the update: theta - lr * gradient, with the printed gradients
    grads = printed_gradients(out)
    new_w2_11 = W2[0] - 0.3 * grads["w2_11"]
    assert re.search(rf"w2_11 = {W2[0]:7.4f} - 0.3 \({grads['w2_11']:+.4f}\) = {new_w2_11:.4f}", out)
    new_b1_3 = b1[2] - 0.3 * grads["b1_3"]
    assert re.search(rf"b1_3  = {b1[2]:7.4f} - 0.3 \({grads['b1_3']:+.4f}\) = {new_b1_3:.4f}", out)
    # iterations: the first is the forward pass above, 1 + steps rows in all
    rows = re.findall(r"^\s+(\d)\s+([\d.]+)\s+([\d.]+)", out.split("6. Again and again")[1], re.M)
    assert [int(r[0]) for r in rows] == [1, 2, 3, 4]
    assert float(rows[0][1]) == pytest.approx(yhat, abs=1e-4)


def test_default_example_reads_like_the_textbook_and_yhat_climbs_to_1():
    result = run_module("explain")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for heading in ("1. The data and the parameters (random weights (seed 0), zero biases)",
                    "2. The forward pass", "3. The backward pass", "4. All 21 gradients",
                    "5. The update", "6. Again and again"):
        assert heading in out
    for symbol in ("z1_4", "f1_4", "z2_1", "dE/dyhat", "dyhat/dz2_1", "dE/dz2_1", "dE/df1_3", "df1_2/dz1_2",
                   "dE/dw1_43", "dE/db1_2", "dE/dw2_14", "dE/db2_1", "21 trainable parameters"):
        assert symbol in out, symbol
    assert "on cpu in float64" in out
    assert len(printed_gradients(out)) == 21
    # the printed inputs and weights are exact (two and three decimals), so a reader can redo
    # the forward pass from them: so do we
    x = np.array([float(v) for v in re.findall(r"x\d = ([-\d.]+)", out.split("hidden layer")[0])])
    W1 = np.array([[float(v) for v in line.split()[2:5]] for line in re.findall(r"neuron j=\d.*", out)])
    W2 = np.array([float(v) for v in out.split("b2_1\n")[1].split()[:4]])
    yhat = 1 / (1 + np.exp(-(W2 @ (1 / (1 + np.exp(-(W1 @ x)))))))
    yhats = [float(v) for v in re.findall(r"^\s+\d+\s+([\d.]+)\s+[\d.]+", out.split("6. Again and again")[1], re.M)]
    assert len(yhats) == 7
    assert yhats[0] == pytest.approx(yhat, abs=1e-4)
    assert all(b > a for a, b in zip(yhats, yhats[1:])), yhats
    assert "yhat climbs from" in out and "toward the target y = 1" in out


def test_seed_changes_the_example_and_help_is_complete():
    _, first, _ = run_cli("explain", "--seed", "1", "--steps", "0")
    _, second, _ = run_cli("explain", "--seed", "2", "--steps", "0")
    assert first != second
    status, out, _ = run_cli("explain", "--help")
    assert status == 0
    for flag in ("--seed", "--lr", "--steps", "--weights", "--device", '"W1"', "w1_jk"):
        assert flag in out, flag


@pytest.mark.parametrize("content, fragment", [
    ("{not json", "not valid JSON"),
    (json.dumps({k: v for k, v in WEIGHTS.items() if k != "b2"}), "exactly the keys"),
    (json.dumps({**WEIGHTS, "W1": [[1, 2, 3]]}), "W1 must be finite numbers of shape (4, 3)"),
    (json.dumps({**WEIGHTS, "target": 2}), "target must be in [0, 1]"),
    (json.dumps({**WEIGHTS, "input": ["a", 1, 2]}), "input must hold numbers"),
])
def test_bad_weights_files_are_one_line_errors(tmp_path, content, fragment):
    path = tmp_path / "weights.json"
    path.write_text(content)
    status, _, err = run_cli("explain", "--weights", str(path))
    assert_one_line_error(status, err, fragment)


def test_missing_weights_file_and_bad_flags_are_one_line_errors(tmp_path):
    status, _, err = run_cli("explain", "--weights", str(tmp_path / "nope.json"))
    assert_one_line_error(status, err, "nope.json")
    status, _, err = run_cli("explain", "--lr", "0")
    assert_one_line_error(status, err, "--lr")
    status, _, err = run_cli("explain", "--device", "gpu7")
    assert_one_line_error(status, err, "gpu7")
