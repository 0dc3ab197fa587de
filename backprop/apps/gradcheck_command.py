"""`python -m backprop gradcheck`: backprop's gradients against finite differences, per layer.

Small random networks covering every activation of the library's table, dropout, batch and
layer normalization, L1/L2 penalties and the losses, on each device. `bp.gradcheck(..., per_parameter=True)` compares each
parameter's analytic gradient with central differences in float64; the largest relative error
over a layer's parameters is that layer's error.
"""

from __future__ import annotations

import numpy as np

import backprop as bp
from backprop.backends import available_devices, resolve_device
from backprop.backends.activations import ACTIVATIONS
from backprop.apps.devices import pick_device


def _every_activation():
    """Dense layers through every elementwise activation of the library's table, in turn."""
    names = [name for name, activation in sorted(ACTIVATIONS.items()) if not activation.rowwise]
    widths = [4] + [5] * len(names)
    layers = [bp.Dense(a, b, activation=name) for a, b, name in zip(widths, widths[1:], names)]
    return f"{', '.join(names)}; MSE", layers + [bp.Dense(5, 2)], bp.MSELoss(), "real"


def _networks():
    """(description, layers, loss, target kind) of each network to check."""
    return [_every_activation(),
        ("3-4-1 sigmoid, BCE (the worked example)",
         [bp.Dense(3, 4, activation="sigmoid"), bp.Dense(4, 1, activation="sigmoid")], bp.BCELoss(), "binary"),
        ("tanh, gelu, linear; MSE",
         [bp.Dense(5, 6, activation="tanh"), bp.Dense(6, 4, activation="gelu"), bp.Dense(4, 3)],
         bp.MSELoss(), "real"),
        ("relu, batch norm, dropout, leaky_relu with L1/L2; softmax cross-entropy",
         [bp.Dense(6, 8, activation="relu"), bp.BatchNorm(8), bp.Dropout(0.25),
          bp.Dense(8, 6, activation="leaky_relu", l1=1e-3, l2=1e-2), bp.Dense(6, 4)],
         bp.CrossEntropyLoss(), "classes"),
        ("sigmoid, linear; BCE with logits",
         [bp.Dense(4, 5, activation="sigmoid"), bp.Dense(5, 2)], bp.BCEWithLogitsLoss(), "binary"),
        ("relu, layer norm; Huber",
         [bp.Dense(4, 6, activation="relu"), bp.LayerNorm(6), bp.Dense(6, 3)], bp.HuberLoss(0.5), "real"),
    ]


def _data(net, kind: str, rows: int, rng: np.random.Generator):
    x = rng.normal(size=(rows, net.in_features))
    width = net.out_features
    if kind == "binary":
        y = rng.integers(0, 2, size=(rows, width)).astype(float)
    elif kind == "classes":
        y = rng.integers(0, width, size=rows)
    else:
        y = rng.normal(size=(rows, width))
    return x, y


def per_layer(errors: dict) -> dict:
    """{"layers.i.name": err, "input": err} -> {"layer i": max err over its parameters, "input": err}."""
    result: dict = {}
    for name, err in errors.items():
        key = "input" if name == "input" else "layer " + name.split(".")[1]
        result[key] = max(result.get(key, 0.0), err)
    return result


def run(args) -> int:
    # an unknown or unusable device is refused before anything is printed
    devices = [resolve_device(pick_device(d)[0]) for d in args.device] if args.device else available_devices()
    rng = np.random.default_rng(args.seed)
    worst = 0.0
    for device in devices:
        print(f"device {device}: max relative error per layer, analytic vs central differences (float64)")
        for description, layers, loss, kind in _networks():
            net = bp.Sequential(*layers, device=device, dtype="float64", seed=args.seed)
            x, y = _data(net, kind, rows=8, rng=rng)
            errors = per_layer(bp.gradcheck(net, loss, x, y, per_parameter=True))
            worst = max(worst, *errors.values())
            print(f"  {description}")
            for key, err in errors.items():
                label = key if key == "input" else f"{key} {net.layers[int(key.split()[1])].label()}"
                verdict = "ok" if err <= args.tolerance else "FAIL"
                print(f"    {label:<40} {err:9.2e}  {verdict}")
    passed = worst <= args.tolerance
    print(f"{'passed' if passed else 'FAILED'}: largest relative error {worst:.2e} (tolerance {args.tolerance:g})")
    return 0 if passed else 1
