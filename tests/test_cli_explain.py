"""`python -m backprop explain`: a published worked example replayed from its file alone, the
3-4-1 example of the source texts, and any small network. The numbers are checked against the
texts, against an independent NumPy computation and against central finite differences."""

from __future__ import annotations

import json
import os
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest
from cli_helpers import assert_one_line_error, run_cli, run_module

DATA = pathlib.Path(__file__).parent / "data"
MAZUR = str(DATA / "mazur_2_2_2.json")

WEIGHTS = {  # the 3-4-1 form of the file
    "input": [0.35, 0.9, -0.4], "target": 1,
    "W1": [[0.1, -0.2, 0.3], [0.4, 0.5, -0.6], [-0.7, 0.8, 0.9], [0.25, -0.35, 0.45]],
    "b1": [0.01, -0.02, 0.03, 0.0], "W2": [0.6, -0.5, 0.4, 0.3], "b2": 0.05,
}


def as_file(tmp_path, content) -> str:
    path = tmp_path / "example.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return str(path)


def explain_json(*argv: str) -> dict:
    status, out, err = run_cli("explain", "--json", *argv)
    assert status == 0, err
    return json.loads(out)


# ---------------------------------------------------------------------- an independent NumPy model


def gelu(z):
    return 0.5 * z * (1 + np.tanh(np.sqrt(2 / np.pi) * (z + 0.044715 * z ** 3)))


def softmax(z):
    e = np.exp(z - z.max())
    return e / e.sum()


ACTIVATIONS = {"sigmoid": lambda z: 1 / (1 + np.exp(-z)), "tanh": np.tanh, "relu": lambda z: np.maximum(z, 0),
               "leaky_relu": lambda z: np.where(z > 0, z, 0.01 * z), "gelu": gelu, "linear": lambda z: z,
               "softmax": softmax}
LOSSES = {"bce": lambda p, y: -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)),
          "mse": lambda p, y: np.mean((p - y) ** 2),
          "half_sse": lambda p, y: 0.5 * np.sum((y - p) ** 2)}


def forward(example: dict, params: list[tuple]) -> tuple[list, float]:
    """([(z, f) per layer], E) of a file's network, written out in NumPy; W[j][k] as in the file."""
    f, layers = np.array(example["input"], dtype=float), []
    for (W, b), spec in zip(params, example["layers"]):
        z = W @ f + b
        f = ACTIVATIONS[spec["activation"] or "linear"](z)  # null is linear, as in the library
        layers.append((z, f))
    return layers, float(LOSSES[example["loss"]](f, np.array(example["target"], dtype=float)))


def parameters(example: dict) -> list[tuple]:
    return [(np.array(spec["W"], dtype=float), np.array(spec["b"], dtype=float)) for spec in example["layers"]]


def central_differences(example: dict, h: float = 1e-6) -> list[tuple]:
    """[(dE/dW, dE/db) per layer]: (E(theta + h) - E(theta - h)) / 2h for every parameter."""
    grads = []
    for i, (W, b) in enumerate(parameters(example)):
        layer_grads = []
        for array_index, array in enumerate((W, b)):
            grad = np.zeros_like(array)
            for index in np.ndindex(array.shape):
                values = []
                for step in (h, -h):
                    params = parameters(example)
                    params[i][array_index][index] += step
                    values.append(forward(example, params)[1])
                grad[index] = (values[0] - values[1]) / (2 * h)
            layer_grads.append(grad)
        grads.append(tuple(layer_grads))
    return grads


def three_four_one(weights: dict) -> dict:
    """The 3-4-1 form as the general form (what the file means), for the NumPy model."""
    return {"input": weights["input"], "target": [weights["target"]], "loss": "bce",
            "layers": [{"W": weights["W1"], "b": weights["b1"], "activation": "sigmoid"},
                       {"W": [weights["W2"]], "b": [weights["b2"]], "activation": "sigmoid"}]}


# ---------------------------------------------------------------------- a published example


def text_number(typed: str) -> pytest.approx:
    """A number as the text prints it, equal to half a unit in its last printed digit."""
    decimals = len(typed.split(".")[1])
    return pytest.approx(float(typed), abs=0.5 * 10.0 ** -decimals + 1e-12)


def test_replays_mazur_step_by_step_backpropagation_example_from_the_file_alone():
    """Matt Mazur, "A Step by Step Backpropagation Example" (2015): 2 inputs, 2 sigmoid hidden
    neurons, 2 sigmoid outputs, E = 1/2 sum (target - out)^2, learning rate 0.5. The file holds
    only the text's starting point; every expected number below is typed in from the text."""
    result = explain_json("--weights", MAZUR, "--steps", "1")
    hidden, output = result["layers"]
    assert result["network"] == [2, 2, 2] and result["lr"] == 0.5 and result["loss"] == "half_sse"
    # the forward pass
    assert hidden["z"][0] == text_number("0.3775")  # net_h1
    assert hidden["f"] == [text_number("0.593269992"), text_number("0.596884378")]  # out_h1, out_h2
    assert output["z"][0] == text_number("1.105905967")  # net_o1
    assert result["yhat"] == [text_number("0.75136507"), text_number("0.772928465")]  # out_o1, out_o2
    assert result["E"] == text_number("0.298371109")  # E_total
    # two of the gradients the text writes out
    assert output["dE_dW"][0][0] == text_number("0.082167041")  # dE_total/dw5
    assert hidden["dE_dW"][0][0] == text_number("0.000438568")  # dE_total/dw1
    # the updated weights: w5..w8 (w5: h1 -> o1, w6: h2 -> o1, w7: h1 -> o2, w8: h2 -> o2) ...
    assert output["W_updated"] == [[text_number("0.35891648"), text_number("0.408666186")],
                                   [text_number("0.511301270"), text_number("0.561370121")]]
    # ... and w1..w4 (w1: i1 -> h1, w2: i2 -> h1, w3: i1 -> h2, w4: i2 -> h2)
    assert hidden["W_updated"] == [[text_number("0.149780716"), text_number("0.19956143")],
                                   [text_number("0.24975114"), text_number("0.29950229")]]
    # The text leaves the biases at 0.35 and 0.60; we train them too (b = b - lr dE/db, one bias
    # per neuron). Each gradient is taken before any parameter moves, so the updated weights are
    # the text's all the same; only the later iterations differ (the text's next E is 0.291027924).
    for layer in (hidden, output):
        assert layer["b"] == [layer["b"][0]] * 2
        expected = np.array(layer["b"]) - 0.5 * np.array(layer["dE_db"])
        np.testing.assert_allclose(layer["b_updated"], expected, rtol=0, atol=1e-15)
        assert all(new != old for new, old in zip(layer["b_updated"], layer["b"]))


def test_mazur_example_as_text_shows_the_texts_own_steps():
    status, out, err = run_cli("explain", "--weights", MAZUR, "--steps", "2")
    assert status == 0, err
    assert "the worked 2-2-2 example" in out
    assert "12 trainable parameters" in out
    assert ("    z1_1 = w1_11 x1 + w1_12 x2 + b1_1\n"
            "         = (0.1500)(0.05000) + (0.2000)(0.1000) + 0.3500 = 0.3775") in out
    assert "yhat_1 = sigmoid(z2_1) = sigmoid(1.106) = 0.7514" in out
    assert "E = 1/2 sum_j (y_j - yhat_j)^2" in out
    assert "= 1/2 ((0.01000 - 0.7514)^2 + (0.9900 - 0.7729)^2) = 0.2984" in out
    assert "dE/dyhat_1 = 0.7514 - 0.01000 = 0.7414" in out
    assert "dE/df1_1 = (0.1385)(0.4000) + (-0.03810)(0.5000) = 0.03635" in out  # both outputs' share
    assert "sigmoid: dL/dx = dL/dy * y * (1 - y)." in out  # the derivative, from the activation table
    assert re.search(r"^  w2_11 = +0\.400000000 - 0\.5 \(\+0\.082167041\) = 0\.358916480$", out, re.M)
    assert re.search(r"^  w1_11 = +0\.150000000 - 0\.5 \(\+0\.000438568\) = 0\.149780716$", out, re.M)
    iterations = re.findall(r"^ +(\d) +([\d.]+) +([\d.]+) +([\d.]+)", out.split("6. Again and again")[1], re.M)
    assert [row[0] for row in iterations] == ["1", "2", "3"]
    assert iterations[0][1:] == ("0.751365", "0.772928", "0.298371")
    assert "E falls from 0.2984 to" in out


def test_readme_shows_the_general_form_with_this_example():
    readme = (pathlib.Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
    block = readme.split("- `explain`:")[1].split("```json")[1].split("```")[0]
    assert json.loads(block) == json.loads(pathlib.Path(MAZUR).read_text())


def test_mse_is_half_sse_for_two_outputs(tmp_path):
    """MSELoss is the mean over the outputs, 1/2 sum for two: the same step, number for number."""
    example = json.loads(pathlib.Path(MAZUR).read_text())
    with_mse = explain_json("--weights", as_file(tmp_path, {**example, "loss": "mse"}), "--steps", "2")
    with_half_sse = explain_json("--weights", MAZUR, "--steps", "2")
    assert with_mse["E"] == pytest.approx(with_half_sse["E"], rel=1e-14)
    for a, b in zip(with_mse["layers"], with_half_sse["layers"]):
        for key in ("dE_dW", "dE_db", "W_updated", "b_updated"):
            np.testing.assert_allclose(a[key], b[key], rtol=1e-13, atol=1e-16)


# ---------------------------------------------------------------------- the 3-4-1 example


def printed_gradients(text: str) -> dict:
    section = text.split("gradients\n")[1].split("5. The update")[0]
    return {m[0]: float(m[1]) for m in re.findall(r"^\s+dE/d(\w+)\s+=\s+([-+][\d.]+)$", section, re.M)}


def test_3_4_1_form_printed_gradients_match_finite_differences(tmp_path):
    status, out, err = run_cli("explain", "--weights", as_file(tmp_path, WEIGHTS))
    assert status == 0, err
    grads = printed_gradients(out)
    (dW1, db1), (dW2, db2) = central_differences(three_four_one(WEIGHTS))
    expected = {f"w1_{j + 1}{k + 1}": dW1[j, k] for j in range(4) for k in range(3)}
    expected.update({f"b1_{j + 1}": db1[j] for j in range(4)})
    expected.update({f"w2_1{j + 1}": dW2[0, j] for j in range(4)})
    expected["b2_1"] = db2[0]
    assert "21 gradients" in out and set(grads) == set(expected)
    for name, value in expected.items():
        assert grads[name] == pytest.approx(value, abs=1e-8), name  # printed with 9 decimals


def test_3_4_1_form_forward_values_updates_and_iterations_follow_the_math(tmp_path):
    status, out, _ = run_cli("explain", "--weights", as_file(tmp_path, WEIGHTS), "--lr", "0.3", "--steps", "3")
    assert status == 0
    example = three_four_one(WEIGHTS)
    (z1, f1), (z2, yhat) = forward(example, parameters(example))[0]
    for j in range(4):
        n = j + 1
        assert re.search(rf"= {z1[j]:#.4g}\n    f1_{n} = sigmoid\(z1_{n}\) = sigmoid\(.*\) = {f1[j]:#.4g}\n", out)
    assert f"yhat = sigmoid(z2_1) = sigmoid({z2[0]:#.4g}) = {yhat[0]:#.4g}\n" in out
    assert f"= -1/1 (1.000 ln({yhat[0]:#.4g}) + 0.000 ln({1 - yhat[0]:#.4g}))" in out
    assert f"dE/dyhat = ({yhat[0]:#.4g} - 1.000) / " in out
    # the update: theta - lr * gradient, with the printed gradients
    grads = printed_gradients(out)
    W2, b1 = WEIGHTS["W2"], WEIGHTS["b1"]
    new_w2_11 = W2[0] - 0.3 * grads["w2_11"]
    assert re.search(rf"w2_11 = +{W2[0]:.9f} - 0\.3 \({grads['w2_11']:+.9f}\) = {new_w2_11:.9f}", out)
    assert re.search(rf"b1_3  = +{b1[2]:.9f} - 0\.3 \({grads['b1_3']:+.9f}\) = {b1[2] - 0.3 * grads['b1_3']:.9f}", out)
    # iterations: the first is the forward pass above, 1 + steps rows in all
    rows = re.findall(r"^\s+(\d)\s+([\d.]+)\s+([\d.]+)", out.split("6. Again and again")[1], re.M)
    assert [int(r[0]) for r in rows] == [1, 2, 3, 4]
    assert float(rows[0][1]) == pytest.approx(yhat[0], abs=1e-6)


def test_default_example_reads_like_the_textbook_and_yhat_climbs_to_1():
    result = run_module("explain")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for heading in ("the worked 3-4-1 example", "1. The data and the parameters (random weights (seed 0), zero biases)",
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
    x = np.array([float(v) for v in re.findall(r"x\d = ([-\d.]+)", out.split("  input  ")[1].split("\n")[0])])
    W1 = np.array([[float(v) for v in line.split()[2:5]] for line in re.findall(r"neuron j=\d.*", out)[:4]])
    W2 = np.array([float(v) for v in re.findall(r"neuron j=\d.*", out)[4].split()[2:6]])
    yhat = 1 / (1 + np.exp(-(W2 @ (1 / (1 + np.exp(-(W1 @ x)))))))
    yhats = [float(v) for v in re.findall(r"^\s+\d+\s+([\d.]+)\s+[\d.]+", out.split("6. Again and again")[1], re.M)]
    assert len(yhats) == 7
    assert yhats[0] == pytest.approx(yhat, abs=1e-6)
    assert all(b > a for a, b in zip(yhats, yhats[1:])), yhats
    assert "yhat climbs from" in out and "(target y = 1)" in out


def test_seed_changes_the_example_and_help_is_complete():
    _, first, _ = run_cli("explain", "--seed", "1", "--steps", "0")
    _, second, _ = run_cli("explain", "--seed", "2", "--steps", "0")
    assert first != second
    status, out, _ = run_cli("explain", "--help")
    assert status == 0
    for flag in ("--seed", "--lr", "--steps", "--weights", "--json", "--device", '"layers"', '"half_sse"', "W[j][k]",
                 '"W1"'):
        assert flag in out, flag


# ---------------------------------------------------------------------- any small network


NETWORKS = {
    "tanh-gelu-softmax, bce": {
        "input": [0.5, -1.2, 0.3], "target": [0.0, 1.0], "loss": "bce", "lr": 0.1,
        "layers": [{"W": [[0.2, -0.4, 0.1], [0.7, 0.3, -0.5], [-0.6, 0.2, 0.4], [0.1, 0.9, -0.3]],
                    "b": [0.1, 0.0, -0.2, 0.05], "activation": "tanh"},
                   {"W": [[0.5, -0.3, 0.8, 0.2], [-0.7, 0.4, 0.1, 0.6], [0.3, 0.3, -0.9, 0.4]],
                    "b": [0.0, 0.1, -0.1], "activation": "gelu"},
                   {"W": [[0.6, -0.2, 0.4], [-0.5, 0.7, 0.3]], "b": [0.05, -0.05], "activation": "softmax"}]},
    "relu-leaky_relu-linear, half_sse": {
        "input": [1.0, 2.0], "target": [0.5], "loss": "half_sse",
        "layers": [{"W": [[0.3, 0.2], [-0.4, 0.1], [0.5, -0.6]], "b": [0.1, 0.25, 0.0], "activation": "relu"},
                   {"W": [[0.4, -0.3, 0.7], [0.2, 0.5, -0.8]], "b": [0.0, -0.1], "activation": "leaky_relu"},
                   {"W": [[1.2, -0.7]], "b": [0.3], "activation": None}]},
}


@pytest.mark.parametrize("name", NETWORKS)
def test_any_network_every_number_follows_the_math(tmp_path, name):
    example = NETWORKS[name]
    result = explain_json("--weights", as_file(tmp_path, example), "--steps", "2")
    params = parameters(example)
    layers, E = forward(example, params)
    assert result["E"] == pytest.approx(E, rel=1e-12)
    assert result["lr"] == example.get("lr", 0.5)
    for got, (z, f), (W, b), spec in zip(result["layers"], layers, params, example["layers"]):
        assert got["W"] == W.tolist() and got["b"] == b.tolist()
        np.testing.assert_allclose(got["z"], z, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(got["f"], f, rtol=1e-12, atol=1e-15)
        activation = ACTIVATIONS[spec["activation"] or "linear"]
        if spec["activation"] == "softmax":
            assert got["df_dz"] is None  # a Jacobian, not one factor per neuron
        else:  # the activation's derivative, against central differences of its NumPy form
            h = 1e-6
            np.testing.assert_allclose(got["df_dz"], (activation(z + h) - activation(z - h)) / (2 * h), atol=1e-8)
    np.testing.assert_allclose(result["yhat"], layers[-1][1], rtol=1e-12)
    lr = result["lr"]
    for got, (dW, db), (W, b) in zip(result["layers"], central_differences(example), params):
        np.testing.assert_allclose(got["dE_dW"], dW, atol=1e-8)
        np.testing.assert_allclose(got["dE_db"], db, atol=1e-8)
        assert got["dE_dz"] == got["dE_db"]
        np.testing.assert_allclose(got["W_updated"], W - lr * np.array(got["dE_dW"]), rtol=0, atol=1e-15)
        np.testing.assert_allclose(got["b_updated"], b - lr * np.array(got["dE_db"]), rtol=0, atol=1e-15)
    # dE/df of a hidden layer is what flows back from the layer after it
    for got, following in zip(result["layers"], result["layers"][1:]):
        np.testing.assert_allclose(got["dE_df"], np.array(following["W"]).T @ np.array(following["dE_dz"]), rtol=1e-12)
    # the iterations: the forward pass above, then the network after each update
    updated = [(np.array(layer["W_updated"]), np.array(layer["b_updated"])) for layer in result["layers"]]
    assert len(result["iterations"]) == 3
    assert result["iterations"][0] == {"yhat": result["yhat"], "E": result["E"]}
    assert result["iterations"][1]["E"] == pytest.approx(forward(example, updated)[1], rel=1e-12)


def test_any_network_as_text_names_every_layer_and_activation(tmp_path):
    status, out, err = run_cli("explain", "--weights", as_file(tmp_path, NETWORKS["tanh-gelu-softmax, bce"]))
    assert status == 0, err
    assert "the worked 3-4-3-2 example" in out and "16 + 15 + 8 = 39 trainable parameters" in out
    assert "4. All 39 gradients" in out and len(printed_gradients(out)) == 39
    for line in ("  tanh: dL/dx = dL/dy * (1 - y^2).", "  gelu: y = x/2 (1 + tanh u)",
                 "yhat_2 = softmax(z3)_2 = e^z3_2 / sum_i e^z3_i = ",
                 "dE/dz3_j = f3_j (dE/df3_j - sum_i dE/df3_i f3_i)", "df2_3/dz2_3 = ", "dE/df2_1 = ",
                 "dE/dw1_43 = dE/dz1_4 * x3", "dE/dw3_23 = dE/dz3_2 * f2_3",
                 "E = -1/n sum_j (y_j ln(yhat_j) + (1 - y_j) ln(1 - yhat_j))"):
        assert line in out, line


def test_lr_comes_from_the_command_line_then_the_file_then_0_5(tmp_path):
    assert explain_json("--weights", MAZUR, "--steps", "0")["lr"] == 0.5
    faster = explain_json("--weights", MAZUR, "--lr", "0.25", "--steps", "0")
    assert faster["lr"] == 0.25
    output = faster["layers"][1]
    np.testing.assert_allclose(output["W_updated"], np.array(output["W"]) - 0.25 * np.array(output["dE_dW"]))
    example = {**json.loads(pathlib.Path(MAZUR).read_text()), "lr": 2.0}
    assert explain_json("--weights", as_file(tmp_path, example), "--steps", "0")["lr"] == 2.0
    assert explain_json("--weights", as_file(tmp_path, WEIGHTS), "--steps", "0")["lr"] == 0.5
    assert explain_json("--steps", "0")["lr"] == 0.5


def test_json_and_text_give_the_same_numbers(tmp_path):
    path = as_file(tmp_path, WEIGHTS)
    result = explain_json("--weights", path, "--steps", "1")
    _, out, _ = run_cli("explain", "--weights", path, "--steps", "1")
    assert result["network"] == [3, 4, 1] and result["loss"] == "bce" and result["dtype"] == "float64"
    grads = printed_gradients(out)
    hidden, output = result["layers"]
    assert grads["w1_23"] == pytest.approx(hidden["dE_dW"][1][2], abs=5e-10)
    assert grads["w2_14"] == pytest.approx(output["dE_dW"][0][3], abs=5e-10)
    assert f"= {result['E']:#.4g}\n" in out
    assert hidden["W"] == WEIGHTS["W1"] and output["W"] == [WEIGHTS["W2"]]


# ---------------------------------------------------------------------- mistakes in the file


def mazur_with(**changes) -> dict:
    example = json.loads(pathlib.Path(MAZUR).read_text())
    return {**example, **changes}


def mazur_layer(index: int, **changes) -> dict:
    example = mazur_with()
    example["layers"][index] = {**example["layers"][index], **changes}
    return example


@pytest.mark.parametrize("content, fragment", [
    ("{not json", "not valid JSON"),
    ([1, 2], "keys input, target, loss, layers"),
    ({k: v for k, v in mazur_with().items() if k != "loss"}, "keys input, target, loss, layers"),
    (mazur_with(momentum=0.9), "got ['input', 'layers', 'loss', 'lr', 'momentum', 'target']"),
    (mazur_with(loss="cross_entropy"), "loss must be one of bce, half_sse, mse, got 'cross_entropy'"),
    (mazur_with(lr=0), "lr must be a finite number > 0"),
    (mazur_with(lr="fast"), "lr must be a finite number > 0"),
    (mazur_with(target=[0.01, 0.99, 0.5]), "target has 3 numbers but the last layer has 2 neurons"),
    (mazur_with(target=["a", 1]), "target must be a number or a non-empty list of numbers"),
    (mazur_with(input=[0.05, True]), "input must be a number or a non-empty list of numbers"),
    (mazur_with(input=[0.05, 0.1, 0.2]), "layers[0].W has 2 columns (one per input) but input has 3 numbers"),
    (mazur_with(layers=[]), "layers must be a non-empty list"),
    (mazur_layer(1, W=[[0.4, 0.45, 0.1], [0.5, 0.55, 0.1]]),
     "layers[1].W has 3 columns (one per input) but layers[0].W has 2 rows (one per neuron)"),
    (mazur_layer(1, W=[[0.4, 0.45], [0.5]]), "layers[1].W must be a list of rows"),
    (mazur_layer(0, W=[[0.15, "x"], [0.25, 0.3]]), "layers[0].W must be a list of rows"),
    (mazur_layer(0, b=[0.35]), "layers[0].b has 1 number but layers[0].W has 2 rows"),
    (mazur_layer(0, W=[[[[0.15, 0.2]]], [[[0.25, 0.3]]]]), "layers[0].W has 4 axes, a convolution's kernel: explain "
                                                           "steps through dense networks only"),
    (mazur_layer(0, activation="swish"), "layers[0].activation must be one of"),
    (mazur_layer(0, bias=[0.35, 0.35]), "layers[0] must be an object with exactly the keys W, b, activation"),
    ('{"input": [NaN, 0.1], "target": [0.01, 0.99], "loss": "mse", "layers": [{"W": [[1, 1]], "b": [0], '
     '"activation": "sigmoid"}]}', "input must hold finite numbers"),
    (mazur_with(loss="bce", target=[0.01, 2]), "target must hold values in [0, 1]"),
    (mazur_with(loss="bce", layers=[mazur_with()["layers"][0], {**mazur_with()["layers"][1], "activation": "tanh"}]),
     "loss 'bce': BCELoss takes probabilities"),
    # the 3-4-1 form
    ({**WEIGHTS, "W1": [[1, 2, 3]]}, "b1 has 4 numbers but W1 has 1 row"),
    ({**WEIGHTS, "W2": [1, 2, 3]}, "W2 has 3 columns (one per input) but W1 has 4 rows (one per neuron)"),
    ({**WEIGHTS, "target": 2}, "target must hold values in [0, 1]"),
    ({**WEIGHTS, "input": ["a", 1, 2]}, "input must be a number or a non-empty list of numbers"),
])
def test_mistakes_in_the_file_are_one_line_errors_naming_the_key(tmp_path, content, fragment):
    path = as_file(tmp_path, content)
    status, out, err = run_cli("explain", "--weights", path)
    assert_one_line_error(status, err, f"--weights {path}", fragment)
    assert out == ""


def test_missing_weights_file_and_bad_flags_are_one_line_errors(tmp_path):
    status, _, err = run_cli("explain", "--weights", str(tmp_path / "nope.json"))
    assert_one_line_error(status, err, "nope.json")
    status, _, err = run_cli("explain", "--lr", "0")
    assert_one_line_error(status, err, "--lr")
    status, _, err = run_cli("explain", "--device", "gpu7")
    assert_one_line_error(status, err, "gpu7")


# ---------------------------------------------------------------------- hostile files: one line, status 2, bounded


HUGE = 10**400  # a JSON integer has no size limit; float64 ends near 1.8e308


@pytest.mark.parametrize("content, fragment", [
    ("[" * 3000 + "]" * 3000, "is not valid JSON here: it nests lists or objects too deeply"),
    ('{"input": ' + "[" * 900 + "]" * 900 + "}", "keys input, target, loss, layers"),
    (mazur_with(input=[HUGE, 0.1]), "input must hold finite numbers, got [1000000000000"),
    (mazur_with(input=HUGE), "input must hold finite numbers"),
    (mazur_with(target=[-HUGE, 0.5]), "target must hold finite numbers"),
    (mazur_layer(0, W=[[HUGE, 0.2], [0.25, 0.3]]), "layers[0].W must hold finite numbers"),
    (mazur_with(lr=HUGE), "lr must be a finite number > 0, got 1000000000000"),
    (" " * (1 << 20) + "{}", "is 1,048,578 bytes; at most 1,048,576 are read"),
])
def test_hostile_files_are_one_short_line_with_status_2(tmp_path, content, fragment):
    path = as_file(tmp_path, content)
    status, out, err = run_cli("explain", "--weights", path)
    assert_one_line_error(status, err, f"--weights {path}", fragment)
    assert out == "" and len(err) < 1000


def run_bounded(*argv: str, memory: int = 1 << 30) -> subprocess.CompletedProcess:
    """`python -m backprop argv...` with at most `memory` bytes of address space and 60 s: a
    command that reads without end fails here instead of taking the machine's memory."""
    import resource

    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))

    return subprocess.run([sys.executable, "-m", "backprop", *argv], capture_output=True, text=True, timeout=60,
                          preexec_fn=limit)


def test_a_device_a_fifo_or_a_folder_as_weights_is_refused_at_once(tmp_path):
    """/dev/zero was read until memory ran out; a FIFO blocked forever, waiting for a writer."""
    fifo = tmp_path / "pipe.json"
    os.mkfifo(fifo)
    for path, what in [("/dev/zero", "is a character device, not a regular file"),
                       (str(fifo), "is a named pipe (FIFO), not a regular file"),
                       (str(tmp_path), "is a folder, not a file")]:
        done = run_bounded("explain", "--weights", path)
        assert_one_line_error(done.returncode, done.stderr, f"--weights {path} {what}")
        assert done.stdout == ""


def test_json_output_is_strict_json_even_when_a_number_overflows(tmp_path):
    """A gradient of 1e10 * 1e300 is inf and the updated weight -inf: JSON has no token for
    either, so they are the strings "Infinity" and "-Infinity" (never a bare Infinity)."""
    path = as_file(tmp_path, {"input": [1e300], "target": [-1e10], "loss": "half_sse", "lr": 1.0,
                              "layers": [{"W": [[1e-300]], "b": [0], "activation": None}]})
    status, out, err = run_cli("explain", "--json", "--weights", path, "--steps", "0")
    assert status == 0 and err == ""

    def refuse(token):
        raise AssertionError(f"not strict JSON: {token}")

    result = json.loads(out, parse_constant=refuse)
    (layer,) = result["layers"]
    assert layer["dE_dW"] == [["Infinity"]] and layer["W_updated"] == [["-Infinity"]]
    assert result["E"] == pytest.approx(0.5 * (1 + 1e10) ** 2)


def test_steps_are_bounded():
    status, _, err = run_cli("explain", "--steps", "10001")
    assert_one_line_error(status, err, "--steps", "an integer from 0 to 10000")
    status, _, err = run_cli("explain", "--steps", str(HUGE))
    assert_one_line_error(status, err, "--steps")
