"""`python -m backprop explain`: backpropagation through the source texts' 3-4-1 example, number
by number, printed like a worked example in a textbook.

The network has 3 inputs, 4 hidden neurons and 1 output, sigmoid on every layer, binary
cross-entropy, one training example (target 1), plain gradient descent (learning rate 0.5),
random weights and zero biases. In the texts' notation, for hidden neuron j and input k:

    z1_j = sum_k w1_jk x_k + b1_j      f1_j = sigmoid(z1_j)
    z2_1 = sum_j w2_1j f1_j + b2_1     yhat = sigmoid(z2_1)      E = L(y, yhat)

and the chain rule gives every gradient, e.g.
    dE/dw1_jk = dE/dyhat * dyhat/dz2_1 * dz2_1/df1_j * df1_j/dz1_j * dz1_j/dw1_jk.

Every number printed comes from the library on the chosen device: the parameters from the
layers, z from the backend's matmul and bias ops, f and yhat from the layers' forward, E and
dE/dyhat from BCELoss, each layer's incoming gradient and every dE/dw, dE/db from the layers'
backward (for one example dE/db_j = dE/dz_j), the sigmoid's derivative from the backend's
activation_backward, the updates from SGD. Nothing is recomputed here; only the products of
the printed factors are shown next to the library's result.
"""

from __future__ import annotations

import json

import numpy as np

import backprop as bp

HIDDEN, INPUTS = 4, 3


# ---------------------------------------------------------------------- the network and its data


def build(seed: int, device: str, weights: dict | None):
    """(net, x, y): the 3-4-1 sigmoid network in float64, the input row and the target."""
    net = bp.Sequential(bp.Dense(INPUTS, HIDDEN, activation="sigmoid"), bp.Dense(HIDDEN, 1, activation="sigmoid"),
                        device=device, dtype="float64", seed=seed)
    if weights is None:
        # Inputs with two decimals and weights with three, like a textbook's figure, so a reader
        # can redo the arithmetic by hand from the printed numbers alone.
        rng = np.random.default_rng(seed)
        x, y = np.round(rng.uniform(0.0, 1.0, size=INPUTS), 2), 1.0
        for layer in net.layers:
            layer.weight.data = np.round(bp.to_numpy(layer.weight.data), 3)
        return net, x, y
    x, y, W1, b1, W2, b2 = weights["input"], weights["target"], weights["W1"], weights["b1"], weights["W2"], weights["b2"]
    hidden, output = net.layers
    hidden.weight.data = W1.T  # the texts' w1_jk (neuron j, input k) is the library's W[k, j]
    hidden.bias.data = b1
    output.weight.data = W2.reshape(HIDDEN, 1)
    output.bias.data = b2.reshape(1)
    return net, x, y


def read_weights(path: str) -> dict:
    """The JSON of --weights, checked: input (3), target in [0, 1], W1 (4 x 3), b1 (4), W2 (4), b2 (1)."""
    with open(path, encoding="utf-8") as handle:
        try:
            raw = json.load(handle)
        except json.JSONDecodeError as exc:
            raise ValueError(f"--weights {path} is not valid JSON ({exc})") from None
    shapes = {"input": (INPUTS,), "target": (), "W1": (HIDDEN, INPUTS), "b1": (HIDDEN,), "W2": (HIDDEN,), "b2": ()}
    if not isinstance(raw, dict) or set(raw) != set(shapes):
        found = sorted(raw) if isinstance(raw, dict) else type(raw).__name__
        raise ValueError(f"--weights {path} must be a JSON object with exactly the keys "
                         f"{', '.join(shapes)}; got {found}")
    values = {}
    for key, shape in shapes.items():
        try:
            array = np.asarray(raw[key], dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"--weights {path}: {key} must hold numbers, got {raw[key]!r}") from None
        if array.size == int(np.prod(shape)) and array.ndim <= 2 and key in ("W2", "b2", "target"):
            array = array.reshape(shape)  # W2 as [[...]] or b2 as [0.0] are fine too
        if array.shape != shape or not np.all(np.isfinite(array)):
            raise ValueError(f"--weights {path}: {key} must be finite numbers of shape {shape}, got {raw[key]!r}")
        values[key] = array
    if not 0.0 <= values["target"] <= 1.0:
        raise ValueError(f"--weights {path}: target must be in [0, 1] (binary cross-entropy), got {values['target']:g}")
    values["target"] = float(values["target"])
    return values


# ---------------------------------------------------------------------- one step, by the library


def step_values(net, x: np.ndarray, y: float, loss_fn) -> dict:
    """Forward and backward through each layer (the calls Sequential.forward/backward make, one
    layer at a time so each layer's output and incoming gradient can be shown), every value
    copied to the host."""
    backend = net.backend
    hidden, output = net.layers
    host = backend.to_host
    x_dev = backend.asarray(x.reshape(1, INPUTS))

    def weighted_input(layer, inputs):  # z = x W + b by the backend's own ops
        z, _ = backend.bias_activation_forward(backend.matmul(inputs, layer.weight.data), layer.bias.data, "linear")
        return host(z)[0]

    def sigmoid_slope(f):  # df/dz = f (1 - f): the backend's sigmoid backward with dL/df = 1
        return host(backend.activation_backward(backend.asarray(np.ones(f.shape)), f, None, "sigmoid"))[0]

    f1 = hidden.forward(x_dev, training=True)
    yhat = output.forward(f1, training=True)
    values = {"x": x, "y": y,
              "W1": host(hidden.weight.data).T, "b1": host(hidden.bias.data),
              "W2": host(output.weight.data)[:, 0], "b2": host(output.bias.data)[0],
              "z1": weighted_input(hidden, x_dev), "f1": host(f1)[0],
              "z2": weighted_input(output, f1)[0], "yhat": host(yhat)[0, 0],
              "df1_dz1": sigmoid_slope(f1), "dyhat_dz2": sigmoid_slope(yhat)[0]}
    values["E"] = loss_fn(yhat, np.array([[y]]))
    dE_dyhat = loss_fn.backward()
    values["dE_dyhat"] = host(dE_dyhat)[0, 0]
    dE_df1 = output.backward(dE_dyhat, True)
    values["dE_df1"] = host(dE_df1)[0]
    hidden.backward(dE_df1, True)
    values.update({"dW2": host(output.weight.grad)[:, 0], "dE_dz2": host(output.bias.grad)[0],
                   "dW1": host(hidden.weight.grad).T, "dE_dz1": host(hidden.bias.grad)})
    return values


def forward_only(net, x: np.ndarray, y: float, loss_fn) -> tuple[float, float]:
    yhat = net(x.reshape(1, INPUTS))
    return float(bp.to_numpy(yhat)[0, 0]), loss_fn(yhat, np.array([[y]]))


# ---------------------------------------------------------------------- the text


def _n(value: float) -> str:
    return f"{value:.4f}"


def _p(*factors: float) -> str:
    """A product written out: (0.1234)(-0.5678)."""
    return "".join(f"({_n(f)})" for f in factors)


def _aligned(rows: list[tuple[str, ...]], indent: str) -> list[str]:
    """Rows of columns joined by " = ", every column but the last padded to its widest entry."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return [indent + " = ".join([c.ljust(w) for c, w in zip(row, widths)] + [row[-1]]) for row in rows]


def _heading(text: str) -> list[str]:
    return ["", text, "-" * len(text)]


def render(v: dict, new: dict, iterations: list[tuple[float, float]], lr: float, device: str,
           origin: str) -> str:
    x, y, W1, b1, W2, b2 = v["x"], v["y"], v["W1"], v["b1"], v["W2"], v["b2"]
    j_range, k_range = range(HIDDEN), range(INPUTS)
    out = ["Backpropagation, number by number: the worked 3-4-1 example",
           "=" * 60,
           "A network with 3 inputs, 4 hidden neurons and 1 output, sigmoid on every layer, learns one",
           f"training example (target y = {y:g}) by gradient descent on the binary cross-entropy E, with",
           f"learning rate epsilon = {lr:g}. Every number below is computed by backprop itself (its Dense",
           f"layers' forward and backward, BCELoss, SGD) on {device} in float64.",
           "",
           "Notation: for hidden neuron j (1..4) and input k (1..3),",
           "  z1_j = w1_j1 x1 + w1_j2 x2 + w1_j3 x3 + b1_j     f1_j = sigmoid(z1_j) = 1 / (1 + e^-z1_j)",
           "  z2_1 = w2_11 f1_1 + ... + w2_14 f1_4 + b2_1       yhat = f2_1 = sigmoid(z2_1)",
           "  E = L(y, yhat) = -(y ln(yhat) + (1 - y) ln(1 - yhat))",
           "w1_jk is the weight from input k into hidden neuron j, w2_1j the one from hidden neuron j into",
           "the output; z = w x + b is a neuron's weighted input and f its output."]

    out += _heading(f"1. The data and the parameters ({origin})")
    out.append("  input    " + "   ".join(f"x{k + 1} = {_n(x[k])}" for k in k_range) + f"      target  y = {y:g}")
    out += ["", "  hidden layer    " + "".join(f"{f'w1_j{k + 1}':>10}" for k in k_range) + f"{'b1_j':>10}"]
    for j in j_range:
        out.append(f"    neuron j={j + 1}    " + "".join(f"{_n(W1[j, k]):>10}" for k in k_range) + f"{_n(b1[j]):>10}")
    out += ["", "  output layer    " + "".join(f"{f'w2_1{j + 1}':>10}" for j in j_range) + f"{'b2_1':>10}",
            "                  " + "".join(f"{_n(W2[j]):>10}" for j in j_range) + f"{_n(b2):>10}",
            f"  {HIDDEN * INPUTS} + {HIDDEN} + {HIDDEN} + 1 = 21 trainable parameters."]

    out += _heading("2. The forward pass: z = w x + b, f = sigmoid(z)")
    out.append("  hidden layer")
    for j in j_range:
        terms = " + ".join(f"w1_{j + 1}{k + 1} x{k + 1}" for k in k_range)
        products = " + ".join(_p(W1[j, k], x[k]) for k in k_range)
        out += [f"    z1_{j + 1} = {terms} + b1_{j + 1}",
                f"         = {products} + {_n(b1[j])} = {_n(v['z1'][j])}",
                f"    f1_{j + 1} = sigmoid(z1_{j + 1}) = 1 / (1 + e^-({_n(v['z1'][j])})) = {_n(v['f1'][j])}"]
    terms = " + ".join(f"w2_1{j + 1} f1_{j + 1}" for j in j_range)
    products = " + ".join(_p(W2[j], v["f1"][j]) for j in j_range)
    out += ["  output layer",
            f"    z2_1 = {terms} + b2_1",
            f"         = {products} + {_n(b2)} = {_n(v['z2'])}",
            f"    yhat = sigmoid(z2_1) = 1 / (1 + e^-({_n(v['z2'])})) = {_n(v['yhat'])}",
            "  loss",
            f"    E = -(y ln(yhat) + (1 - y) ln(1 - yhat)) = -({y:g} ln({_n(v['yhat'])}) + {1 - y:g} ln({_n(1 - v['yhat'])}))"
            f" = {_n(v['E'])}"]

    out += _heading("3. The backward pass: the chain rule, from E back to every parameter")
    a, s = v["dE_dyhat"], v["dyhat_dz2"]
    out += ["  output layer: E depends on w2_1j and b2_1 through yhat and z2_1",
            f"    dE/dyhat    = -y / yhat + (1 - y) / (1 - yhat)            = {_n(a)}",
            f"    dyhat/dz2_1 = yhat (1 - yhat)   (the sigmoid's derivative) = {_n(s)}",
            f"    dE/dz2_1    = dE/dyhat * dyhat/dz2_1 = {_p(a, s)}   = {_n(v['dE_dz2'])}   (= yhat - y)",
            "    dz2_1/dw2_1j = f1_j,   dz2_1/db2_1 = 1, so",
            "    dE/dw2_1j = dE/dyhat * dyhat/dz2_1 * dz2_1/dw2_1j"]
    rows = [(f"dE/dw2_1{j + 1}", _p(a, s, v["f1"][j]), _n(v["dW2"][j])) for j in j_range]
    rows.append(("dE/db2_1", _p(a, s) + "(1)", _n(v["dE_dz2"])))
    out += _aligned(rows, "      ")
    out += ["", "  hidden layer: E depends on w1_jk and b1_j through yhat, z2_1, f1_j and z1_j",
            "    dz2_1/df1_j = w2_1j,   df1_j/dz1_j = f1_j (1 - f1_j),   dz1_j/dw1_jk = x_k,   dz1_j/db1_j = 1",
            "    dE/dw1_jk = dE/dyhat * dyhat/dz2_1 * dz2_1/df1_j * df1_j/dz1_j * dz1_j/dw1_jk"]
    for j in j_range:
        n = j + 1
        g, d = v["dE_df1"][j], v["df1_dz1"][j]
        out += [f"    neuron {n}:  dE/df1_{n} = dE/dz2_1 * w2_1{n} = {_p(v['dE_dz2'], W2[j])} = {_n(g)}",
                f"               df1_{n}/dz1_{n} = f1_{n} (1 - f1_{n}) = {_n(d)}"
                f",   dE/dz1_{n} = dE/df1_{n} * df1_{n}/dz1_{n} = {_n(v['dE_dz1'][j])}"]
        rows = [(f"dE/dw1_{n}{k + 1}", _p(a, s, W2[j], d, x[k]), _n(v["dW1"][j, k])) for k in k_range]
        rows.append((f"dE/db1_{n}", _p(a, s, W2[j], d) + "(1)", _n(v["dE_dz1"][j])))
        out += _aligned(rows, "      ")

    out += _heading("4. All 21 gradients, and the formula each came from")
    rows = [(f"dE/dw2_1{j + 1}", f"dE/dz2_1 * f1_{j + 1}", v["dW2"][j]) for j in j_range]
    rows.append(("dE/db2_1", "dE/dz2_1", v["dE_dz2"]))
    for j in j_range:
        rows += [(f"dE/dw1_{j + 1}{k + 1}", f"dE/dz2_1 * w2_1{j + 1} * f1_{j + 1} (1 - f1_{j + 1}) * x{k + 1}",
                  v["dW1"][j, k]) for k in k_range]
        rows.append((f"dE/db1_{j + 1}", f"dE/dz2_1 * w2_1{j + 1} * f1_{j + 1} (1 - f1_{j + 1})", v["dE_dz1"][j]))
    out += _aligned([(name, formula, f"{value:+.6f}") for name, formula, value in rows], "  ")

    out += _heading(f"5. The update: theta <- theta - epsilon dE/dtheta, epsilon = {lr:g}")
    updates = [(f"w2_1{j + 1}", W2[j], v["dW2"][j], new["W2"][j]) for j in j_range]
    updates.append(("b2_1", b2, v["dE_dz2"], new["b2"]))
    for j in j_range:
        updates += [(f"w1_{j + 1}{k + 1}", W1[j, k], v["dW1"][j, k], new["W1"][j, k]) for k in k_range]
        updates.append((f"b1_{j + 1}", b1[j], v["dE_dz1"][j], new["b1"][j]))
    out += _aligned([(name, f"{_n(old):>7} - {lr:g} ({grad:+.4f})", _n(value)) for name, old, grad, value in updates],
                    "  ")

    out += _heading("6. Again and again: yhat after each update")
    out.append(f"  {'iteration':>9}  {'yhat':>8}  {'E':>8}")
    for i, (yhat, loss) in enumerate(iterations, start=1):
        note = "   (the forward pass above)" if i == 1 else ("   (after the update above)" if i == 2 else "")
        out.append(f"  {i:>9}  {_n(yhat):>8}  {_n(loss):>8}{note}")
    if len(iterations) > 1:
        first, last = iterations[0][0], iterations[-1][0]
        trend = "climbs" if last > first else "falls"
        out.append(f"  yhat {trend} from {_n(first)} to {_n(last)}, toward the target y = {y:g}: the network is learning.")
    return "\n".join(out)


def explain(seed: int = 0, lr: float = 0.5, steps: int = 6, weights: dict | None = None,
            device: str = "cpu") -> str:
    """The worked example as text (see the module docstring)."""
    net, x, y = build(seed, device, weights)
    loss_fn = bp.BCELoss()
    opt = bp.SGD(net.parameters(), lr=lr)
    values = step_values(net, x, y, loss_fn)
    opt.step()
    hidden, output = net.layers
    host = net.backend.to_host  # a copy: the next steps update the parameters in place
    new = {"W1": host(hidden.weight.data).T, "b1": host(hidden.bias.data),
           "W2": host(output.weight.data)[:, 0], "b2": host(output.bias.data)[0]}
    iterations = [(values["yhat"], values["E"])]
    for _ in range(steps):
        iterations.append(forward_only(net, x, y, loss_fn))
        net.backward(loss_fn.backward())
        opt.step()
    origin = f"weights and biases from {weights['path']}" if weights else f"random weights (seed {seed}), zero biases"
    return render(values, new, iterations, lr, net.device, origin)


def run(args) -> int:
    from backprop.apps.devices import pick_device

    device, _ = pick_device(args.device)
    weights = None
    if args.weights is not None:
        weights = read_weights(args.weights)
        weights["path"] = args.weights
    print(explain(seed=args.seed, lr=args.lr, steps=args.steps, weights=weights, device=device))
    return 0
