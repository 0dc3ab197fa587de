"""`python -m backprop explain`: backpropagation through one small network, number by number,
printed like a worked example in a textbook (or, with --json, as one JSON document).

The network is a stack of Dense layers of any sizes, each with any activation of the library's
table, learning one training example by plain gradient descent. In the texts' notation, for
neuron j of layer l and its input k (x_k for the first layer, f(l-1)_k after it):

    zl_j = sum_k wl_jk f(l-1)_k + bl_j      fl_j = act_l(zl_j)      yhat_j = fL_j      E = L(y, yhat)

and the chain rule, one layer at a time from the output back:

    dE/dzl_j  = dE/dfl_j * dfl_j/dzl_j                  (softmax: fl_j (dE/dfl_j - sum_i dE/dfl_i fl_i))
    dE/dwl_jk = dE/dzl_j * f(l-1)_k,   dE/dbl_j = dE/dzl_j
    dE/df(l-1)_k = sum_j dE/dzl_j wl_jk

Without --weights it is the source texts' 3-4-1 example: sigmoid on both layers, binary
cross-entropy, target 1, random weights (rounded to three decimals) and zero biases. --weights
FILE gives the input, the target, the loss, the learning rate and every layer (see read_example).

Every number printed comes from the library on the chosen device: the parameters from the
layers, z from the backend's matmul and bias ops, each f from the layers' forward, E and
dE/dyhat from the loss, each layer's incoming gradient and every dE/dw, dE/db from the layers'
backward (for one example dE/db_j = dE/dz_j), each activation's derivative from the backend's
activation_backward (the activation table's own definition), the updates from SGD. Nothing is
recomputed here; only the products and sums of the printed factors are written out next to
the library's result.
"""

from __future__ import annotations

import json
import math
import reprlib
import textwrap
from dataclasses import dataclass
from typing import Callable

import numpy as np

import backprop as bp
from backprop.backends.activations import ACTIVATIONS, get_activation
from backprop.files import open_regular

DEFAULT_LR = 0.5
# The largest --weights file read: a network small enough to print number by number is far
# smaller (a 784-100-10 network's weights are about 1.5 MB of JSON already, and a book's page).
MAX_FILE_BYTES = 1 << 20
MAX_STEPS = 10_000  # --steps: each iteration is a line of the text


# ---------------------------------------------------------------------- losses a file may name


class HalfSquaredError(bp.Loss):
    """The squared error most textbooks use: E = 1/2 sum_j (target_j - pred_j)^2 (summed over
    outputs and rows);  dE/dpred_j = pred_j - target_j."""

    def __init__(self):
        super().__init__(reduction="sum")

    def value_and_grad(self, backend, pred, target):
        diff = pred - target
        return self.reduced(0.5 * diff * diff, diff)


@dataclass(frozen=True)
class LossText:
    """A loss a file may name: the library's loss, and how the text writes it out. In the
    templates {p} is yhat_j, {y} is y_j, {q} is 1 - yhat_j, {u} is 1 - y_j, {n} the outputs."""

    make: Callable[[], bp.Loss]
    description: str
    formula: str  # E in symbols
    term: str  # one output's term of E, with numbers
    total: str  # how the terms make E
    grad: str  # dE/dyhat_j in symbols
    grad_term: str  # dE/dyhat_j with numbers


LOSSES = {
    "bce": LossText(bp.BCELoss, "the binary cross-entropy (BCELoss, the mean over the outputs)",
                    "-1/n sum_j (y_j ln(yhat_j) + (1 - y_j) ln(1 - yhat_j))", "{y} ln({p}) + {u} ln({q})",
                    "-1/{n} ({terms})", "(yhat_j - y_j) / (yhat_j (1 - yhat_j) n)", "({p} - {y}) / ({p} ({q}) {n})"),
    "mse": LossText(bp.MSELoss, "the mean squared error over the outputs (MSELoss)",
                    "1/n sum_j (yhat_j - y_j)^2", "({p} - {y})^2", "1/{n} ({terms})",
                    "2 (yhat_j - y_j) / n", "2 ({p} - {y}) / {n}"),
    "half_sse": LossText(HalfSquaredError, "the squared error of most textbooks (half the sum over the outputs)",
                         "1/2 sum_j (y_j - yhat_j)^2", "({y} - {p})^2", "1/2 ({terms})",
                         "yhat_j - y_j", "{p} - {y}"),
}


# ---------------------------------------------------------------------- the example and its file


@dataclass
class LayerSpec:
    """One layer in the texts' convention: W[j][k] is the weight from input k to neuron j."""

    W: np.ndarray  # (neurons, inputs)
    b: np.ndarray  # (neurons,)
    activation: str


@dataclass
class Example:
    input: np.ndarray
    target: np.ndarray
    loss: str  # a key of LOSSES
    lr: float | None  # None: the command line's, else DEFAULT_LR
    layers: list[LayerSpec]
    origin: str  # where the parameters come from, for the text
    source: str = "the example"  # what an error message names


def default_example(seed: int) -> Example:
    """The source texts' 3-4-1 example: input in [0, 1) with two decimals, target 1, the
    library's seeded initial weights rounded to three decimals (so a reader can redo the
    arithmetic by hand from the printed numbers alone), zero biases."""
    net = bp.Sequential(bp.Dense(3, 4, activation="sigmoid"), bp.Dense(4, 1, activation="sigmoid"),
                        dtype="float64", seed=seed)  # initial weights are the same on every device
    rng = np.random.default_rng(seed)
    layers = [LayerSpec(np.round(bp.to_numpy(layer.weight.data), 3).T, np.zeros(layer.out_features), "sigmoid")
              for layer in net.layers]
    return Example(np.round(rng.uniform(0.0, 1.0, size=3), 2), np.array([1.0]), "bce", None, layers,
                   f"random weights (seed {seed}), zero biases")


GENERAL_KEYS = {"input", "target", "loss", "lr", "layers"}
LAYER_KEYS = {"W", "b", "activation"}
# The 3-4-1 form: a sigmoid hidden layer and one sigmoid output, binary cross-entropy; its
# keys name the parameters in error messages.
FORM_3_4_1_KEYS = {"input", "target", "W1", "b1", "W2", "b2"}
FORM_3_4_1_NAMES = {"layers[0].W": "W1", "layers[0].b": "b1", "layers[1].W": "W2", "layers[1].b": "b2"}


def read_example(path: str) -> Example:
    """The example in the JSON file `path`, checked (ValueError naming the key otherwise):

        {"input": [...], "target": [...], "loss": "bce" | "mse" | "half_sse", "lr": 0.5,
         "layers": [{"W": [[...], ...], "b": [...], "activation": "sigmoid"}, ...]}

    W[j][k] is the weight from input k to neuron j; "lr" may be left out; a number stands for
    a list of one. The 3-4-1 form, {"input", "target", "W1", "b1", "W2", "b2"} (W2 a flat list
    of the output's weights), is read too.
    """
    with open_regular(path, f"--weights {path}", MAX_FILE_BYTES) as handle:
        text = handle.read(MAX_FILE_BYTES + 1)  # bounded, should the file grow after the check
    if len(text) > MAX_FILE_BYTES:
        raise ValueError(f"--weights {path} is more than {MAX_FILE_BYTES:,} bytes; at most {MAX_FILE_BYTES:,} are read")
    try:
        raw = json.loads(text.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"--weights {path} is not valid JSON ({exc})") from None
    except RecursionError:  # nesting deeper than the parser goes
        raise ValueError(f"--weights {path} is not valid JSON here: it nests lists or objects too deeply") from None
    names = {}
    if isinstance(raw, dict) and set(raw) == FORM_3_4_1_KEYS:
        names = FORM_3_4_1_NAMES
        W2 = raw["W2"]
        raw = {"input": raw["input"], "target": raw["target"], "loss": "bce",
               "layers": [{"W": raw["W1"], "b": raw["b1"], "activation": "sigmoid"},
                          {"W": [W2] if isinstance(W2, list) and not any(isinstance(v, list) for v in W2) else W2,
                           "b": raw["b2"], "activation": "sigmoid"}]}
    try:
        example = _checked_example(raw, names, f"weights and biases from {path}")
    except ValueError as exc:
        raise ValueError(f"--weights {path}: {exc}") from None
    example.source = f"--weights {path}"
    return example


def _checked_example(raw, names: dict, origin: str) -> Example:
    if not isinstance(raw, dict) or not {"input", "target", "loss", "layers"} <= set(raw) <= GENERAL_KEYS:
        found = _short(sorted(raw)) if isinstance(raw, dict) else type(raw).__name__
        raise ValueError(f"expected a JSON object with the keys input, target, loss, layers and optionally lr "
                         f"(or the 3-4-1 form's input, target, W1, b1, W2, b2); got {found}")
    x = _vector(raw["input"], "input")
    target = _vector(raw["target"], "target")
    loss = raw["loss"]
    if not isinstance(loss, str) or loss not in LOSSES:
        raise ValueError(f"loss must be one of {', '.join(sorted(LOSSES))}, got {_short(loss)}")
    lr = raw.get("lr")
    if lr is not None:
        lr = _number(lr)
        if lr is None or not 0.0 < lr < math.inf:
            raise ValueError(f"lr must be a finite number > 0, got {_short(raw['lr'])}")
    layers_raw = raw["layers"]
    if not isinstance(layers_raw, list) or not layers_raw:
        raise ValueError(f"layers must be a non-empty list of objects with the keys W, b, activation, "
                         f"got {_short(layers_raw)}")
    layers, inputs, inputs_name = [], x.size, f"input has {_count(x.size, 'number')}"
    for i, layer in enumerate(layers_raw):
        key = f"layers[{i}]"
        if isinstance(layer, dict) and _nesting(layer.get("W")) > 2:
            raise ValueError(f"{key}.W has {_nesting(layer['W'])} axes, a convolution's kernel: explain steps through "
                             "dense networks only (each W a matrix); convolutional networks train with "
                             "`python -m backprop train --model cnn`")
        if not isinstance(layer, dict) or set(layer) != LAYER_KEYS:
            found = _short(sorted(layer)) if isinstance(layer, dict) else type(layer).__name__
            raise ValueError(f"{key} must be an object with exactly the keys W, b, activation; got {found}")
        w_key, b_key = names.get(f"{key}.W", f"{key}.W"), names.get(f"{key}.b", f"{key}.b")
        W, b = _matrix(layer["W"], w_key), _vector(layer["b"], b_key)
        if W.shape[1] != inputs:
            raise ValueError(f"{w_key} has {_count(W.shape[1], 'column')} (one per input) but {inputs_name}")
        if b.size != W.shape[0]:
            raise ValueError(f"{b_key} has {_count(b.size, 'number')} but {w_key} has {_count(W.shape[0], 'row')} "
                             "(one per neuron)")
        try:
            activation = get_activation(layer["activation"]).name
        except ValueError:
            raise ValueError(f"{key}.activation must be one of {sorted(ACTIVATIONS)} (null for linear), "
                             f"got {_short(layer['activation'])}") from None
        layers.append(LayerSpec(W, b, activation))
        inputs, inputs_name = W.shape[0], f"{w_key} has {_count(W.shape[0], 'row')} (one per neuron)"
    if target.size != inputs:
        raise ValueError(f"target has {_count(target.size, 'number')} but the last layer has "
                         f"{_count(inputs, 'neuron')}")
    LOSSES[loss].make().check_target(target.reshape(1, -1), inputs, "target")  # e.g. BCE's targets in [0, 1]
    return Example(x, target, loss, lr, layers, origin)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'s' * (n != 1)}"


def _short(value) -> str:
    """A value from the file, shown briefly (reprlib cuts long and deeply nested ones short)."""
    return reprlib.repr(value)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _number(value) -> float | None:
    """A JSON number as a float (inf for an integer beyond float64: JSON's have no size limit),
    None for anything else."""
    if not _is_number(value):
        return None
    try:
        return float(value)
    except OverflowError:
        return math.inf


def _vector(value, key: str) -> np.ndarray:
    """A number or a non-empty list of numbers, finite, as a 1-D float64 array."""
    values = [value] if _is_number(value) else value
    if not isinstance(values, list) or not values or not all(_is_number(v) for v in values):
        raise ValueError(f"{key} must be a number or a non-empty list of numbers, got {_short(value)}")
    return _finite([_number(v) for v in values], key, value)


def _nesting(value) -> int:
    """How deeply lists nest in `value`, along the first elements (a matrix: 2)."""
    depth = 0
    while isinstance(value, list) and value:
        depth, value = depth + 1, value[0]
    return depth


def _matrix(value, key: str) -> np.ndarray:
    """A non-empty list of equally long non-empty lists of numbers, finite, as a 2-D float64 array."""
    rows = value if isinstance(value, list) else None
    if (not rows or not all(isinstance(row, list) and row and all(_is_number(v) for v in row) for row in rows)
            or len({len(row) for row in rows}) != 1):
        raise ValueError(f"{key} must be a list of rows (one per neuron) of equally many numbers (one per input), "
                         f"got {_short(value)}")
    return _finite([[_number(v) for v in row] for row in rows], key, value)


def _finite(numbers: list, key: str, value) -> np.ndarray:
    """`numbers` (floats, from `_number`) as a float64 array, refused unless every one is finite."""
    array = np.array(numbers, dtype=np.float64)
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{key} must hold finite numbers, got {_short(value)}")
    return array


# ---------------------------------------------------------------------- one step, by the library


def build_network(example: Example, device: str):
    """(net, loss): the example's layers as a float64 Sequential of Dense layers, and its loss."""
    net = bp.Sequential(*(bp.Dense(spec.W.shape[1], spec.W.shape[0], activation=spec.activation)
                          for spec in example.layers), device=device, dtype="float64")
    for layer, spec in zip(net.layers, example.layers):
        layer.weight.data = spec.W.T  # the texts' w_jk (neuron j, input k) is the library's W[k, j]
        layer.bias.data = spec.b
    loss_fn = LOSSES[example.loss].make()
    try:
        loss_fn.check_network(net)
    except ValueError as exc:
        raise ValueError(f"{example.source}: loss {example.loss!r}: {exc}") from None
    return net, loss_fn


def step_values(net, example: Example, loss_fn) -> dict:
    """Forward and backward through each layer (the calls Sequential.forward/backward make, one
    layer at a time so each layer's output and incoming gradient can be shown), every value
    copied to the host, in the texts' convention (W[j][k])."""
    backend = net.backend
    host = backend.to_host
    layers = []
    with backend.on_device():
        inputs = backend.asarray(example.input.reshape(1, -1))
        for layer in net.layers:
            # z = x W + b by the backend's own ops (the layer keeps only what its backward needs)
            z, _ = backend.bias_activation_forward(backend.matmul(inputs, layer.weight.data), layer.bias.data, "linear")
            f = layer.forward(inputs, training=True)
            act = get_activation(layer.activation)
            # df/dz: the activation's backward with dE/df = 1; softmax's is a full Jacobian, not one factor
            df_dz = None if act.rowwise else host(backend.activation_backward(
                backend.asarray(np.ones(f.shape)), f, z if act.needs_input else None, layer.activation, layer.slope))[0]
            layers.append({"activation": layer.activation, "W": host(layer.weight.data).T, "b": host(layer.bias.data),
                           "z": host(z)[0], "f": host(f)[0], "df_dz": df_dz})
            inputs = f
        E = loss_fn(inputs, example.target.reshape(1, -1))
        grad = loss_fn.backward()
        for i in range(len(net.layers) - 1, -1, -1):
            layer, values = net.layers[i], layers[i]
            values["dE_df"] = host(grad)[0]
            grad = layer.backward(grad, i > 0)
            values.update({"dE_dW": host(layer.weight.grad).T, "dE_db": host(layer.bias.grad)})
            values["dE_dz"] = values["dE_db"]  # one example: dE/db_j = dE/dz_j
    return {"layers": layers, "yhat": layers[-1]["f"], "E": E}


def compute(example: Example, lr: float, steps: int, device: str) -> dict:
    """The worked example's numbers: step_values, the parameters after one SGD step, and yhat
    and E before each of the `steps` further updates."""
    net, loss_fn = build_network(example, device)
    opt = bp.SGD(net.parameters(), lr=lr)
    values = step_values(net, example, loss_fn)
    opt.step()
    host = net.backend.to_host  # a copy: the next steps update the parameters in place
    for layer, layer_values in zip(net.layers, values["layers"]):
        layer_values.update({"W_updated": host(layer.weight.data).T, "b_updated": host(layer.bias.data)})
    x, y = example.input.reshape(1, -1), example.target.reshape(1, -1)
    iterations = [(values["yhat"], values["E"])]
    for _ in range(steps):
        yhat = net(x)
        iterations.append((bp.to_numpy(yhat)[0], loss_fn(yhat, y)))
        net.backward(loss_fn.backward())
        opt.step()
    values.update({"input": example.input, "target": example.target, "loss": example.loss, "lr": lr,
                   "device": net.device, "iterations": iterations})
    return values


# How the JSON document writes a number JSON has no token for (an overflowed step's inf, a NaN
# after it): as the string JavaScript and protobuf's JSON mapping use, so strict parsers read it.
NON_FINITE = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}


def as_json(values: dict) -> dict:
    """The numbers of compute() as plain JSON types (every finite float exactly, the others as
    the strings of NON_FINITE; W[j][k] as in the file)."""
    def plain(value):
        if isinstance(value, np.ndarray):
            return plain(value.tolist())
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, (float, np.floating)):
            value = float(value)
            return value if math.isfinite(value) else NON_FINITE[repr(value)]
        return value

    document = {key: plain(values[key]) for key in ("input", "target", "loss", "lr", "device")}
    document.update({"dtype": "float64", "network": _sizes(values),
                     "layers": plain(values["layers"]), "yhat": plain(values["yhat"]), "E": plain(values["E"]),
                     "iterations": [{"yhat": plain(yhat), "E": plain(E)} for yhat, E in values["iterations"]]})
    return document


# ---------------------------------------------------------------------- the text


def _n(value: float) -> str:
    """Four significant digits, trailing zeros kept: 0.3775, 0.05000, -0.0004386."""
    return f"{value:#.4g}".rstrip(".")


def _p(*factors: float) -> str:
    """A product written out: (0.1234)(-0.5678)."""
    return "".join(f"({_n(f)})" for f in factors)


def _aligned(rows: list[tuple[str, ...]], indent: str) -> list[str]:
    """Rows of columns joined by " = ", every column but the last padded to its widest entry."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return [indent + " = ".join([c.ljust(w) for c, w in zip(row, widths)] + [row[-1]]) for row in rows]


def _heading(text: str) -> list[str]:
    return ["", text, "-" * len(text)]


def _ix(*indices: int) -> str:
    """Indices as the texts write them: w1_23, or w1_12,3 once one has two digits."""
    return ("," if max(indices) > 9 else "").join(str(i) for i in indices)


class Symbols:
    """The texts' names for the numbers of one network: layer l = 1..L, neuron j, input k (all
    counted from 1); layer 0 is the input x, the last layer's outputs are yhat."""

    def __init__(self, sizes: list[int]):
        self.sizes = sizes  # inputs, then each layer's neurons
        self.last = len(sizes) - 1

    def z(self, l, j):
        return f"z{l}_{j}"

    def f(self, l, j):
        if l == self.last:
            return "yhat" if self.sizes[-1] == 1 else f"yhat_{j}"
        return f"x{j}" if l == 0 else f"f{l}_{j}"

    def y(self, j):
        return "y" if self.sizes[-1] == 1 else f"y_{j}"

    def w(self, l, j, k):
        return f"w{l}_{_ix(j, k)}"

    def b(self, l, j):
        return f"b{l}_{j}"

    def neurons(self, l):
        return range(1, self.sizes[l] + 1)


def _sizes(v: dict) -> list[int]:
    return [len(v["input"])] + [len(layer["b"]) for layer in v["layers"]]


def _parameter_counts(v: dict) -> list[int]:
    return [layer["W"].size + layer["b"].size for layer in v["layers"]]


def _inputs(v: dict, l: int) -> np.ndarray:
    """What layer l (from 1) reads: the input x, or the outputs of the layer before."""
    return v["input"] if l == 1 else v["layers"][l - 2]["f"]


def _activation_definition(name: str) -> list[str]:
    """The activation's value and derivative as its definition in the table states them."""
    act = get_activation(name)
    docs = [" ".join(fn.__doc__.split()) for fn in (act.forward, act.backward) if fn.__doc__]
    return textwrap.wrap(f"{name}: " + (" ".join(docs) if docs else "(its definition states no formula)"), 96,
                         initial_indent="  ", subsequent_indent="    ")


def _introduction(v: dict, s: Symbols) -> list[str]:
    sizes, loss = s.sizes, LOSSES[v["loss"]]
    activations = [layer["activation"] for layer in v["layers"]]
    targets = ", ".join(f"{s.y(j)} = {v['target'][j - 1]:g}" for j in s.neurons(s.last))
    summary = (f"A network with {_count(sizes[0], 'input')} and {_count(s.last, 'layer')} of "
               f"{', '.join(map(str, sizes[1:]))} neurons ({', '.join(activations)}) learns one training example "
               f"({targets}) by gradient descent on E, {loss.description}, with learning rate epsilon = "
               f"{v['lr']:g}. Every number below is computed by backprop itself (its Dense layers' forward and "
               f"backward, {type(loss.make()).__name__}, SGD) on {v['device']} in float64.")
    out = [f"Backpropagation, number by number: the worked {'-'.join(map(str, sizes))} example", "=" * 60,
           *textwrap.wrap(summary, 96), ""]
    out += textwrap.wrap("Notation: neuron j of layer l (1..L) has weighted input z and output f; its inputs k are "
                         "x_k for layer 1 and the outputs f(l-1)_k of the layer before:", 96)
    out.append("  zl_j = sum_k wl_jk f(l-1)_k + bl_j      fl_j = act_l(zl_j)")
    out += textwrap.wrap("wl_jk is the weight from input k into neuron j of layer l (the file's W[j][k]), bl_j its "
                         "bias; the last layer's outputs are yhat_j and the targets y_j, and the loss is", 96)
    out += [f"  E = {loss.formula}",
            "Each activation, as the library's table defines it (y = f(x), dL/dx = dL/dy f'(x)):"]
    for name in dict.fromkeys(activations):
        out += _activation_definition(name)
    return out


def _data(v: dict, s: Symbols, origin: str) -> list[str]:
    out = _heading(f"1. The data and the parameters ({origin})")
    out.append("  input    " + "   ".join(f"{s.f(0, k)} = {_n(v['input'][k - 1])}" for k in s.neurons(0)))
    out.append("  target   " + "   ".join(f"{s.y(j)} = {_n(v['target'][j - 1])}" for j in s.neurons(s.last)))
    for l, layer in enumerate(v["layers"], start=1):
        title = f"  layer {l} ({layer['activation']}) "
        columns = [f"w{l}_j{k}" for k in s.neurons(l - 1)] + [f"b{l}_j"]
        out += ["", title + "".join(f"{c:>10}" for c in columns)]
        for j in s.neurons(l):
            numbers = [*layer["W"][j - 1], layer["b"][j - 1]]
            out.append(f"    neuron j={j}".ljust(len(title)) + "".join(f"{_n(n):>10}" for n in numbers))
    counts = _parameter_counts(v)
    sum_text = f"{' + '.join(map(str, counts))} = " if len(counts) > 1 else ""
    out.append(f"  {sum_text}{sum(counts)} trainable parameters.")
    return out


def _forward(v: dict, s: Symbols) -> list[str]:
    out = _heading("2. The forward pass: z = w x + b, f = act(z)")
    for l, layer in enumerate(v["layers"], start=1):
        name, inputs = layer["activation"], _inputs(v, l)
        out.append(f"  layer {l}" + (" (the output layer)" if l == s.last else "") + f": {name}")
        for j in s.neurons(l):
            z, f, b = layer["z"][j - 1], layer["f"][j - 1], layer["b"][j - 1]
            terms = " + ".join(f"{s.w(l, j, k)} {s.f(l - 1, k)}" for k in s.neurons(l - 1))
            products = " + ".join(_p(layer["W"][j - 1, k - 1], inputs[k - 1]) for k in s.neurons(l - 1))
            out += [f"    {s.z(l, j)} = {terms} + {s.b(l, j)}",
                    f"    {' ' * len(s.z(l, j))} = {products} + {_n(b)} = {_n(z)}"]
            if get_activation(name).rowwise:
                out.append(f"    {s.f(l, j)} = {name}(z{l})_{j} = e^{s.z(l, j)} / sum_i e^z{l}_i = {_n(f)}")
            else:
                out.append(f"    {s.f(l, j)} = {name}({s.z(l, j)}) = {name}({_n(z)}) = {_n(f)}")
    loss, n = LOSSES[v["loss"]], s.sizes[-1]
    terms = [loss.term.format(**_loss_numbers(p, y, n)) for p, y in zip(v["yhat"], v["target"])]
    out += [f"  loss: {loss.description}",
            f"    E = {loss.formula}",
            f"      = {loss.total.format(n=n, terms=' + '.join(terms))} = {_n(v['E'])}"]
    return out


def _backward_layer(v: dict, s: Symbols, l: int) -> list[str]:
    """Layer l's share of the chain rule: dE/df, df/dz, dE/dz, then dE/dw and dE/db."""
    layer, name = v["layers"][l - 1], v["layers"][l - 1]["activation"]
    f_j = s.f(l, "j")
    out = [f"  layer {l}: E depends on w{l}_jk and b{l}_j through z{l}_j and {f_j}"]
    if l == s.last:
        loss = LOSSES[v["loss"]]
        out.append(f"    dE/dyhat_j = {loss.grad}   (the loss's derivative)")
        for j in s.neurons(l):
            numbers = _loss_numbers(v["yhat"][j - 1], v["target"][j - 1], s.sizes[-1])
            out.append(f"    dE/d{s.f(l, j)} = {loss.grad_term.format(**numbers)} = {_n(layer['dE_df'][j - 1])}")
    else:
        following = v["layers"][l]
        out.append(f"    dE/df{l}_j = sum_i dE/dz{l + 1}_i w{l + 1}_ij   (f{l}_j feeds every neuron i of layer "
                   f"{l + 1})")
        for j in s.neurons(l):
            parts = " + ".join(_p(following["dE_dz"][i - 1], following["W"][i - 1, j - 1]) for i in s.neurons(l + 1))
            out.append(f"    dE/d{s.f(l, j)} = {parts} = {_n(layer['dE_df'][j - 1])}")
    if layer["df_dz"] is None:
        out.append(f"    dE/dz{l}_j = f{l}_j (dE/df{l}_j - sum_i dE/df{l}_i f{l}_i)   ({name}: each output depends on "
                   "every z)")
        out += [f"    dE/d{s.z(l, j)} = {_n(layer['dE_dz'][j - 1])}" for j in s.neurons(l)]
    else:
        out.append(f"    d{f_j}/dz{l}_j = {name}'(z{l}_j),   dE/dz{l}_j = dE/d{f_j} * d{f_j}/dz{l}_j")
        for j in s.neurons(l):
            slope, dz = layer["df_dz"][j - 1], layer["dE_dz"][j - 1]
            out.append(f"    d{s.f(l, j)}/d{s.z(l, j)} = {_n(slope)},   "
                       f"dE/d{s.z(l, j)} = {_p(layer['dE_df'][j - 1], slope)} = {_n(dz)}")
    out.append(f"    dz{l}_j/dw{l}_jk = {s.f(l - 1, 'k')},   dz{l}_j/db{l}_j = 1, so")
    inputs, rows = _inputs(v, l), []
    for j in s.neurons(l):
        dz = layer["dE_dz"][j - 1]
        rows += [(f"dE/d{s.w(l, j, k)}", f"dE/d{s.z(l, j)} * {s.f(l - 1, k)}", _p(dz, inputs[k - 1]),
                  _n(layer["dE_dW"][j - 1, k - 1])) for k in s.neurons(l - 1)]
        rows.append((f"dE/d{s.b(l, j)}", f"dE/d{s.z(l, j)}", _p(dz) + "(1)", _n(layer["dE_db"][j - 1])))
    return out + _aligned(rows, "      ")


def _parameters_from_the_output_back(v: dict, s: Symbols):
    """(layer l, name, index into W or b, of W) for every parameter, the output layer first."""
    for l in range(s.last, 0, -1):
        for j in s.neurons(l):
            for k in s.neurons(l - 1):
                yield l, s.w(l, j, k), (j - 1, k - 1), True
            yield l, s.b(l, j), j - 1, False


def _gradients(v: dict, s: Symbols) -> list[str]:
    out = _heading(f"4. All {sum(_parameter_counts(v))} gradients")
    rows = [(f"dE/d{name}", f"{v['layers'][l - 1]['dE_dW' if is_w else 'dE_db'][index]:+.9f}")
            for l, name, index, is_w in _parameters_from_the_output_back(v, s)]
    return out + _aligned(rows, "  ")


def _updates(v: dict, s: Symbols) -> list[str]:
    lr = v["lr"]
    out = _heading(f"5. The update: theta <- theta - epsilon dE/dtheta, epsilon = {lr:g}")
    rows = []
    for l, name, index, is_w in _parameters_from_the_output_back(v, s):
        layer = v["layers"][l - 1]
        keys = ("W", "dE_dW", "W_updated") if is_w else ("b", "dE_db", "b_updated")
        old, grad, new = (layer[key][index] for key in keys)
        rows.append((name, f"{old:12.9f} - {lr:g} ({grad:+.9f})", f"{new:.9f}"))
    return out + _aligned(rows, "  ")


def _iterations(v: dict, s: Symbols) -> list[str]:
    out = _heading("6. Again and again: yhat after each update")
    names = [s.f(s.last, j) for j in s.neurons(s.last)]
    out.append(f"  {'iteration':>9}" + "".join(f"  {name:>9}" for name in names) + f"  {'E':>9}")
    iterations = v["iterations"]
    for i, (yhat, E) in enumerate(iterations, start=1):
        note = "   (the forward pass above)" if i == 1 else ("   (after the update above)" if i == 2 else "")
        out.append(f"  {i:>9}" + "".join(f"  {p:>9.6f}" for p in yhat) + f"  {E:>9.6f}{note}")
    if len(iterations) > 1:
        (first_yhat, first_E), (last_yhat, last_E) = iterations[0], iterations[-1]
        for j, name in enumerate(names):
            trend = "climbs" if last_yhat[j] > first_yhat[j] else "falls"
            out.append(f"  {name} {trend} from {_n(first_yhat[j])} to {_n(last_yhat[j])} "
                       f"(target {s.y(j + 1)} = {v['target'][j]:g})")
        if last_E < first_E:
            out.append(f"  E falls from {_n(first_E)} to {_n(last_E)}: the network is learning.")
        else:
            out.append(f"  E does not fall ({_n(first_E)} to {_n(last_E)}): try a smaller learning rate.")
    return out


def render(v: dict, origin: str) -> str:
    """The worked example as text, from the numbers of compute()."""
    s = Symbols(_sizes(v))
    out = _introduction(v, s) + _data(v, s, origin) + _forward(v, s)
    out += _heading("3. The backward pass: the chain rule, from E back to every parameter")
    for l in range(s.last, 0, -1):
        out += _backward_layer(v, s, l)
    out += _gradients(v, s) + _updates(v, s) + _iterations(v, s)
    return "\n".join(out)


def _loss_numbers(p: float, y: float, n: int) -> dict:
    return {"p": _n(p), "y": _n(y), "q": _n(1 - p), "u": _n(1 - y), "n": n}


def run(args) -> int:
    from backprop.apps.devices import pick_device

    device, _ = pick_device(args.device)
    example = default_example(args.seed) if args.weights is None else read_example(args.weights)
    lr = args.lr if args.lr is not None else (example.lr if example.lr is not None else DEFAULT_LR)
    with np.errstate(all="ignore"):  # an overflow shows as inf in the numbers, or is refused by the loss
        values = compute(example, lr, args.steps, device)
    print(json.dumps(as_json(values), allow_nan=False) if args.json else render(values, example.origin))
    return 0
