"""torch.optim.Adam's and AdamW's update over the flat parameter buffer, in place, the bias
corrections computed on the host. Kernels: `adam` and `adamw` in kernels/optimizers.cu."""

from __future__ import annotations

import math

import numpy as np

from backprop.backends.cupy_backend import BLOCK, MAX_GRID, blocks
from backprop.backends.ops import fused_op


@fused_op
def adam_step(backend, param, grad, exp_avg, exp_avg_sq, lr: float, beta1: float, beta2: float,
              eps: float, weight_decay: float, step: int, decoupled: bool):
    """torch.optim.Adam (decoupled=False) and AdamW (decoupled=True), in place:

    AdamW: param = param * (1 - lr * wd);  Adam: g = grad + wd * param
    m = beta1 m + (1 - beta1) g;  v = beta2 v + (1 - beta2) g^2
    param = param - (lr / (1 - beta1^t)) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
    """
    xp = backend.xp
    g = grad
    if weight_decay != 0:
        if decoupled:
            param[...] = param * (1.0 - lr * weight_decay)
        else:
            g = grad + weight_decay * param
    exp_avg[...] = beta1 * exp_avg + (1.0 - beta1) * g
    exp_avg_sq[...] = beta2 * exp_avg_sq + (1.0 - beta2) * (g * g)
    step_size = lr / (1.0 - beta1**step)
    bias_correction2_sqrt = math.sqrt(1.0 - beta2**step)
    denom = xp.sqrt(exp_avg_sq) / bias_correction2_sqrt + eps
    param[...] = param - step_size * (exp_avg / denom)


@adam_step.numpy
def _(backend, param, grad, exp_avg, exp_avg_sq, lr: float, beta1: float, beta2: float,
      eps: float, weight_decay: float, step: int, decoupled: bool):
    scalar = backend._scalar
    scratch = backend._work("adam_scratch", param.shape)
    g = grad
    if weight_decay != 0:
        if decoupled:
            np.multiply(param, scalar("1 - lr wd", 1.0 - lr * weight_decay), out=param)
        else:
            g = backend._work("adam_g", param.shape)
            np.multiply(param, scalar("weight_decay", weight_decay), out=g)
            np.add(grad, g, out=g)
    np.multiply(exp_avg, scalar("beta1", beta1), out=exp_avg)
    np.multiply(g, scalar("1 - beta1", 1.0 - beta1), out=scratch)
    np.add(exp_avg, scratch, out=exp_avg)
    np.multiply(exp_avg_sq, scalar("beta2", beta2), out=exp_avg_sq)
    np.multiply(g, g, out=scratch)
    np.multiply(scratch, scalar("1 - beta2", 1.0 - beta2), out=scratch)
    np.add(exp_avg_sq, scratch, out=exp_avg_sq)
    step_size = lr / (1.0 - beta1**step)
    bias_correction2_sqrt = math.sqrt(1.0 - beta2**step)
    np.sqrt(exp_avg_sq, out=scratch)
    np.divide(scratch, scalar("bias_correction2_sqrt", bias_correction2_sqrt), out=scratch)
    np.add(scratch, scalar("eps", eps), out=scratch)  # denom
    np.divide(exp_avg, scratch, out=scratch)
    np.multiply(scratch, scalar("step_size", step_size), out=scratch)
    np.subtract(param, scratch, out=param)


@adam_step.cupy
def _(backend, param, grad, exp_avg, exp_avg_sq, lr: float, beta1: float, beta2: float,
      eps: float, weight_decay: float, step: int, decoupled: bool):
    moments = (beta1, 1.0 - beta1, beta2, 1.0 - beta2, eps)
    corrections = (lr / (1.0 - beta1**step), math.sqrt(1.0 - beta2**step))
    grid = blocks(param.size, MAX_GRID)
    if decoupled:
        decay = 1.0 - lr * weight_decay if weight_decay != 0 else 1.0
        backend._launch("adamw", grid, BLOCK, param, grad, exp_avg, exp_avg_sq, param.size, decay, *moments,
                        *corrections)
    else:
        backend._launch("adam", grid, BLOCK, param, grad, exp_avg, exp_avg_sq, param.size, *moments,
                        weight_decay, *corrections)


def _three_steps(decoupled: bool):
    def run(backend, a):
        p, m, v = backend.copy(a["flat"]), backend.copy(a["flat_grad"]), backend.copy(a["flat_state"])
        for step in (1, 2, 3):
            adam_step(backend, p, a["flat_grad"], m, v, 1e-2, 0.9, 0.999, 1e-8, 0.05, step, decoupled)
        return [p, m, v]

    return run


adam_step.case("adam")(_three_steps(False))
adam_step.case("adamw")(_three_steps(True))
