"""torch.optim.SGD's update over the flat parameter buffer, in place. Kernels: `sgd` and
`sgd_momentum` in kernels/optimizers.cu."""

from __future__ import annotations

import numpy as np

from backprop.backends.cupy_backend import BLOCK, MAX_GRID, blocks
from backprop.backends.ops import fused_op


@fused_op
def sgd_step(backend, param, grad, momentum_buf, lr: float, momentum: float, dampening: float,
             nesterov: bool, weight_decay: float, first_step: bool):
    """torch.optim.SGD, in place over flat buffers:

    g = grad + wd * param
    b = g on the first step, else momentum * b + (1 - dampening) * g
    g = g + momentum * b if nesterov else b          (when momentum != 0)
    param = param - lr * g
    """
    g = grad + weight_decay * param if weight_decay != 0 else grad
    if momentum != 0:
        if first_step:
            momentum_buf[...] = g
        else:
            momentum_buf[...] = momentum * momentum_buf + (1.0 - dampening) * g
        g = g + momentum * momentum_buf if nesterov else momentum_buf
    param[...] = param - lr * g


@sgd_step.numpy
def _(backend, param, grad, momentum_buf, lr: float, momentum: float, dampening: float,
      nesterov: bool, weight_decay: float, first_step: bool):
    scratch = backend._work("sgd_scratch", param.shape)
    g = grad
    if weight_decay != 0:
        g = backend._work("sgd_g", param.shape)
        np.multiply(param, backend._scalar("weight_decay", weight_decay), out=g)
        np.add(grad, g, out=g)
    if momentum != 0:
        if first_step:
            np.copyto(momentum_buf, g)
        else:
            np.multiply(momentum_buf, backend._scalar("momentum", momentum), out=momentum_buf)
            if dampening != 0:
                np.multiply(g, backend._scalar("1 - dampening", 1.0 - dampening), out=scratch)
                np.add(momentum_buf, scratch, out=momentum_buf)
            else:  # (1 - 0) * g is g exactly: no multiply
                np.add(momentum_buf, g, out=momentum_buf)
        if nesterov:
            np.multiply(momentum_buf, backend._scalar("momentum", momentum), out=scratch)
            g = np.add(g, scratch, out=scratch)
        else:
            g = momentum_buf
    np.multiply(g, backend._scalar("lr", lr), out=scratch)
    np.subtract(param, scratch, out=param)


@sgd_step.cupy
def _(backend, param, grad, momentum_buf, lr: float, momentum: float, dampening: float,
      nesterov: bool, weight_decay: float, first_step: bool):
    grid = blocks(param.size, MAX_GRID)
    if momentum == 0:
        backend._launch("sgd", grid, BLOCK, param, grad, param.size, lr, weight_decay)
        return
    backend._launch("sgd_momentum", grid, BLOCK, param, grad, momentum_buf, param.size, lr, momentum,
                    1.0 - dampening, weight_decay, int(nesterov), int(first_step))


# Cases: (momentum, nesterov, weight decay, first step) of each variant.
_VARIANTS = {"plain": (0.0, False, 0.0, True), "momentum_first": (0.9, False, 0.01, True),
             "momentum": (0.9, False, 0.01, False), "nesterov": (0.9, True, 0.0, False)}


def _variant_case(variant: str):
    momentum, nesterov, weight_decay, first_step = _VARIANTS[variant]

    def run(backend, a):
        p, buf = backend.copy(a["flat"]), backend.copy(a["flat_state"])
        sgd_step(backend, p, a["flat_grad"], buf if momentum else None, 0.1, momentum, 0.0, nesterov, weight_decay,
                 first_step)
        return [p, buf]

    return run


for _variant in _VARIANTS:
    sgd_step.case(_variant)(_variant_case(_variant))
