"""The batch source of `fit`: an epoch's mini-batches, as this rank's shard of each.

Every rank holds the whole training set on its device and cuts the same batches: the shuffle of
an epoch is a function of (seed, epoch) alone (`epoch_order`). Batch rows [start, stop) are cut
into the ranks' contiguous shards (`DataParallel.shard`; the whole batch in one process), and
the shard's rows are gathered into workspaces that the next batch of the same size reuses.
Data read a batch at a time (a RowSource, backprop/sources.py) stays where it is: each rank
reads only its shard's rows of each batch, and moves them to the device one batch at a time.
"""

from __future__ import annotations

import numpy as np

from backprop.losses import target_on_device
from backprop.sources import RowSource


def epoch_order(seed: int, epoch: int, n: int) -> np.ndarray:
    """The shuffle of the network's `epoch`-th epoch (counted over all fits): a function of
    (seed, epoch) alone, so fit(epochs=2) twice, or a run resumed from a checkpoint, shuffles
    exactly as one fit(epochs=4) does."""
    return np.random.default_rng((seed, epoch)).permutation(n)


class Batch:
    """This rank's shard of one batch: rows `x`, targets `y`, sample weights `w` (a column, or
    None), `rows` of the batch's `batch_rows`, and `weight_sum`, the whole batch's total sample
    weight over every rank (None without weights)."""

    __slots__ = ("index", "x", "y", "w", "rows", "batch_rows", "weight_sum")

    def __init__(self, index, x, y, w, rows, batch_rows, weight_sum):
        self.index, self.x, self.y, self.w = index, x, y, w
        self.rows, self.batch_rows, self.weight_sum = rows, batch_rows, weight_sum


class Batches:
    """The mini-batches of (X, Y[, W]), device arrays (or X and Y RowSources), `batch_size` rows
    each (the last may be smaller), sharded for `parallel`; W, the sample weights, is a host
    vector (or None)."""

    def __init__(self, backend, X, Y, W, batch_size: int, parallel):
        self.backend, self.X, self.Y, self.batch_size, self.parallel = backend, X, Y, batch_size, parallel
        self.W_host = W
        self.W = None if W is None else backend.asarray(W.reshape(-1, 1))
        self.n = X.shape[0]
        # Fixed for the fit, so a step repeats none of it (a tiny network's step is a few NumPy calls):
        # each batch's rows [start, stop) and this rank's shard [lo, hi) of them.
        self.bounds = [(start, min(start + batch_size, self.n)) for start in range(0, self.n, batch_size)]
        self.shards = [(stop - start, *parallel.shard(start, stop)) for start, stop in self.bounds]
        self._ws: dict = {}

    def __len__(self) -> int:
        return len(self.bounds)

    def epoch(self, order):
        """This rank's shard of each batch of an epoch, in `order` (None: the rows as they are)."""
        X, Y, W = self.X, self.Y, self.W
        streamed = isinstance(X, RowSource)
        order_dev = None if order is None or streamed else self.backend.asarray_int(order)
        sums = self._weight_sums(order)
        for index, (batch_rows, lo, hi) in enumerate(self.shards, start=1):
            if streamed:
                x, y, w = self._read(order, lo, hi)
            elif order_dev is None:
                x, y, w = X[lo:hi], Y[lo:hi], None if W is None else W[lo:hi]
            else:
                rows = order_dev[lo:hi]
                x, y = self._gather("x", X, rows), self._gather("y", Y, rows)
                w = None if W is None else self._gather("w", W, rows)
            yield Batch(index, x, y, w, hi - lo, batch_rows, None if sums is None else sums[index - 1])

    def _read(self, order, lo: int, hi: int):
        """Rows [lo, hi) of the epoch's `order` (None: the rows as they are), read from the
        RowSources and moved to the device: one batch's copy, made for this batch."""
        backend, W = self.backend, self.W_host
        rows = np.arange(lo, hi) if order is None else order[lo:hi]
        x = backend.asarray(self.X.read(rows))
        y = target_on_device(backend, self.Y.read(rows))
        return x, y, None if W is None else backend.asarray(W[rows].reshape(-1, 1))

    def _weight_sums(self, order):
        """Each batch's total sample weight, from the host copy: every rank has every row, so no
        collective is needed to know the whole batch's."""
        if self.W_host is None:
            return None
        weights = self.W_host if order is None else self.W_host[order]
        return [float(weights[start:stop].sum()) for start, stop in self.bounds]

    def _gather(self, name, source, index):
        """source[index] along the rows, into a workspace reused while the batch size holds.
        Gathered as 2-D (rows, values per row), then seen with the example shape."""
        backend = self.backend
        flat = backend.reshape(source, (source.shape[0], -1)) if source.ndim > 2 else source
        out = self._ws.get(name)
        if out is None or out.shape[0] != index.shape[0]:
            out = self._ws[name] = backend.take_rows(flat, index)
        else:
            backend.take_rows(flat, index, out=out)
        return out if source.ndim <= 2 else backend.reshape(out, (index.shape[0],) + source.shape[1:])
