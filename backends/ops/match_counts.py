"""Accuracy's counts: how many predictions match their targets, as a 0-d array (summed on the
device, read back once per evaluation). Kernels: `argmax_match_partials`,
`argmax_label_match_partials` and `threshold_match_partials` in kernels/reductions.cu."""

from __future__ import annotations

import numpy as np

from backprop.backends.ops import fused_op


@fused_op
def count_argmax_matches(backend, scores, target):
    """How many rows have argmax(scores) == argmax(target), as a 0-d array."""
    xp = backend.xp
    hits = xp.argmax(scores, axis=1) == xp.argmax(target, axis=1)
    return xp.sum(xp.astype(hits, backend.dtype))


@fused_op
def count_label_matches(backend, scores, labels):
    """How many rows have argmax(scores) == label (int64 labels), as a 0-d array."""
    xp = backend.xp
    hits = xp.argmax(scores, axis=1) == labels
    return xp.sum(xp.astype(hits, backend.dtype))


@fused_op
def count_threshold_matches(backend, scores, target, score_threshold: float, target_threshold: float):
    """How many elements have (scores > score_threshold) == (target > target_threshold), as a
    0-d array (logits cut at 0 against probability targets cut at 0.5, say). The thresholds
    are compared in the arrays' dtype, as Python floats are (a NumPy float64 threshold would
    otherwise compare a float32 array in float64), on every backend."""
    xp = backend.xp
    hits = (scores > float(score_threshold)) == (target > float(target_threshold))
    return xp.sum(xp.astype(hits, backend.dtype))


# ---------------------------------------------------------------------- NumPy


@count_argmax_matches.numpy
def _(backend, scores, target):
    # methods, not np.argmax: its Python wrapper costs more than the argmax of a batch
    hits = scores.argmax(axis=1) == target.argmax(axis=1)
    return backend.dtype(np.count_nonzero(hits))


@count_label_matches.numpy
def _(backend, scores, labels):
    return backend.dtype(np.count_nonzero(scores.argmax(axis=1) == labels))


@count_threshold_matches.numpy
def _(backend, scores, target, score_threshold: float, target_threshold: float):
    # Operators against 0-d thresholds of the backend's dtype: half the cost of
    # np.greater(..., out=) on bool outputs here. The reference compares against Python
    # floats, which NumPy casts to the array's dtype too (NEP 50): the same comparisons.
    hits = ((scores > backend._scalar("score_threshold", score_threshold))
            == (target > backend._scalar("target_threshold", target_threshold)))
    return backend.dtype(np.count_nonzero(hits))


# ---------------------------------------------------------------------- CuPy


@count_argmax_matches.cupy
def _(backend, scores, target):
    rows, cols = scores.shape
    return backend._partial_sum("argmax_match_partials", rows, (scores, target), (cols,))


@count_label_matches.cupy
def _(backend, scores, labels):
    rows, cols = scores.shape
    return backend._partial_sum("argmax_label_match_partials", rows, (scores, labels), (cols,))


@count_threshold_matches.cupy
def _(backend, scores, target, score_threshold: float, target_threshold: float):
    return backend._partial_sum("threshold_match_partials", scores.size, (scores, target),
                                (score_threshold, target_threshold))


# ---------------------------------------------------------------------- cases: counts are exact


@count_argmax_matches.case(exact=True)
def _(backend, a):
    return [count_argmax_matches(backend, a["x"], a["onehot"])]


@count_label_matches.case(exact=True)
def _(backend, a):
    return [count_label_matches(backend, a["x"], a["labels"])]


@count_threshold_matches.case(exact=True)
def _(backend, a):
    return [count_threshold_matches(backend, a["x"], a["prob"], 0.0, 0.5)]
