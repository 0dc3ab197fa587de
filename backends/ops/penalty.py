"""The L1/L2 weight penalty (Keras's definitions) and its gradient. Kernels: `penalty_partials` and
`penalty_finalize` in kernels/reductions.cu, `l1_l2_grad` in kernels/elementwise.cu."""

from __future__ import annotations

from backprop.backends.cupy_backend import BLOCK, MAX_GRID, PARTIAL_GRID, blocks
from backprop.backends.ops import fused_op


@fused_op
def l1_l2_penalty(backend, w, l1: float, l2: float):
    """l1 sum |w| + l2 sum w^2, as a 0-d array."""
    xp = backend.xp
    return l1 * xp.sum(xp.abs(w)) + l2 * xp.sum(w * w)


@fused_op
def l1_l2_penalty_grad(backend, w, grad, l1: float, l2: float):
    """grad += l1 sign(w) + 2 l2 w, in place."""
    grad[...] = grad + l1 * backend.xp.sign(w) + (2.0 * l2) * w


@l1_l2_penalty.cupy
def _(backend, w, l1: float, l2: float):
    # both sums in one pass: partials [sum |w| of each block..., sum w^2 of each block...]
    grid = blocks(w.size, PARTIAL_GRID)
    partials, out = backend.empty((2 * grid,)), backend.empty(())
    backend._launch("penalty_partials", grid, BLOCK, w, partials, w.size)
    backend._launch("penalty_finalize", 1, BLOCK, partials, out, grid, l1, l2)
    return out


@l1_l2_penalty_grad.cupy
def _(backend, w, grad, l1: float, l2: float):
    backend._launch("l1_l2_grad", blocks(w.size, MAX_GRID), BLOCK, w, grad, w.size, l1, 2.0 * l2)


@l1_l2_penalty.case()
def _(backend, a):
    grad = backend.copy(a["dy"])
    l1_l2_penalty_grad(backend, a["x"], grad, 0.01, 0.02)
    return [l1_l2_penalty(backend, a["x"], 0.01, 0.02), grad]
