"""What the losses' `reduction` argument means, shared by every loss op.

"mean" divides the summed loss by the number of terms N and every gradient element by N; "sum"
keeps both as they are: L = reduce(sum_i l_i), dL/dp_i = scale * dl_i/dp_i.
"""

from __future__ import annotations


def reduce_total(total, count: int, reduction: str):
    """The loss from the sum of its `count` terms: total / count for "mean", total for "sum"."""
    return total / count if reduction == "mean" else total


def reduction_scale(count: int, reduction: str) -> float:
    """d(reduction)/d(term): 1 / count for "mean", 1 for "sum"."""
    return 1.0 / count if reduction == "mean" else 1.0
