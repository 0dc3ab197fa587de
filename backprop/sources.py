"""Data read a batch at a time: NumPy memory maps and any object with `__len__` and index-array
access (`data[idx]` returning those rows, as an HDF5 dataset or a zarr array does).

fit, predict and evaluate never hold such data whole. The checks the in-memory path makes on
the whole array (numbers, shape, finiteness, the loss's target check) run first as one
streaming pass over chunks of about `CHUNK_BYTES`; then each batch's rows are read when the
batch runs. Rows are asked for in sorted order (sources such as HDF5 need it, and a memory map
reads its pages in order) and put back in the order the batch wants them, so a shuffled epoch
sees exactly the rows, in the order, that the in-memory path gathers.
"""

from __future__ import annotations

import numpy as np

from backprop.boundary import check_example_shape, check_finite, converted, host_numeric, is_cupy_array

CHUNK_BYTES = 1 << 20  # the checking pass reads about this much of the data at a time


def is_row_source(data) -> bool:
    """True for data read a batch at a time: a memory map, or an object with `__len__` and
    `__getitem__` that is not an in-memory array, a Python sequence or a pandas table (whose
    `[idx]` picks columns; it is read whole, as NumPy reads it)."""
    if isinstance(data, np.memmap):
        return True
    if isinstance(data, (np.ndarray, list, tuple)) or is_cupy_array(data) or np.isscalar(data) \
            or hasattr(data, "iloc"):
        return False
    return hasattr(data, "__len__") and hasattr(data, "__getitem__")


class RowSource:
    """The rows `index` (sorted; None: all) of `data`, read by position and converted by
    `convert` (set by the checking pass), with `shape` (rows, *row shape) once checked."""

    def __init__(self, data, name: str, index: np.ndarray | None = None):
        self.data, self.name, self.index = data, name, index
        try:
            self.length = len(data) if index is None else len(index)
        except TypeError as exc:
            raise TypeError(f"{name} must have a length (len({name})), got {type(data).__name__}: {exc}") from None
        self.convert = None
        self.shape = None

    def __len__(self) -> int:
        return self.length

    def subset(self, positions: np.ndarray) -> "RowSource":
        """The rows at sorted `positions` of this source, as a source of their own (no rows read)."""
        rows = positions if self.index is None else self.index[positions]
        subset = RowSource(self.data, self.name, rows)
        subset.convert = self.convert
        subset.shape = (len(rows),) + self.shape[1:]
        return subset

    def raw(self, positions: np.ndarray, convert=None) -> np.ndarray:
        """The rows at `positions`, in that order: as given, or passed through `convert`
        (before they are put in order, so a conversion that shrinks them copies less)."""
        rows = positions if self.index is None else self.index[positions]
        ascending = rows.size < 2 or bool(np.all(rows[1:] > rows[:-1]))
        sorter = None if ascending else np.argsort(rows, kind="stable")
        try:
            got = self.data[rows if sorter is None else rows[sorter]]
        except (TypeError, IndexError, KeyError, ValueError) as exc:
            raise TypeError(f"{self.name} must return rows for an array of row indices ({self.name}[idx]), "
                            f"but {type(self.data).__name__} refused one: {exc}") from None
        got = host_numeric(got, self.name)
        if got.shape[:1] != rows.shape:
            raise ValueError(f"{self.name}[idx] must return one row per index, got {got.shape[0] if got.ndim else 0} "
                             f"rows for {rows.size} indices")
        if convert is not None:
            got = convert(got)
        if sorter is None:
            return got
        out = np.empty_like(got)
        out[sorter] = got
        return out

    def read(self, positions: np.ndarray) -> np.ndarray:
        """The rows at `positions`, converted as the checking pass converts them."""
        return self.raw(positions, self.convert)

    def part(self, share: tuple[int, int]) -> tuple[int, int]:
        """Rows [lo, hi) that rank `share[0]` of `share[1]` checks."""
        rank, ranks = share
        return rank * self.length // ranks, (rank + 1) * self.length // ranks

    def first(self, share: tuple[int, int]) -> np.ndarray:
        """One row of the share's part (the first row where the part is empty), as given: the
        row shape, read before the chunks are sized."""
        lo, hi = self.part(share)
        return self.raw(np.arange(lo, lo + 1) if hi > lo else np.arange(1))

    def chunks(self, row_bytes: int, share: tuple[int, int] = (0, 1)):
        """(first row, positions) over share = (rank, ranks)'s contiguous part of the source,
        about CHUNK_BYTES of rows at a time."""
        lo, hi = self.part(share)
        step = max(1, CHUNK_BYTES // max(row_bytes, 1))
        for start in range(lo, hi, step):
            yield start, np.arange(start, min(start + step, hi))


def checked_examples(backend, source: RowSource, example_shape: tuple, share=(0, 1)) -> RowSource:
    """Check every row of `source` as `host_examples` checks an in-memory array (numbers, the
    example shape, finite in the backend's dtype), one chunk at a time; then its rows read as
    the backend's dtype. `share` = (rank, ranks): each rank of a data-parallel fit checks its
    own part (the caller agrees on the outcome)."""
    name, dtype = source.name, backend.dtype_name
    if source.length == 0:
        raise ValueError(f"{name} is empty: it has 0 samples")
    first = source.first(share)
    check_example_shape((source.length,) + first.shape[1:], example_shape, name, "samples")
    for start, positions in source.chunks(first[0].nbytes, share):
        given = source.raw(positions)
        check_example_shape((source.length,) + given.shape[1:], example_shape, name, "samples")
        check_finite(converted(given, dtype), name, given, dtype, first_row=start)
    source.convert = lambda given: converted(given, dtype)
    source.shape = (source.length,) + tuple(example_shape)
    return source


def checked_targets(loss, source: RowSource, rows: int, outputs: int, rows_name: str, share=(0, 1)) -> RowSource:
    """Check every row of the target `source` as `checked_target` checks an in-memory one, one
    chunk at a time; then its rows read in the loss's form."""
    name = source.name
    if source.length != rows:
        raise ValueError(f"{name} has {source.length} samples but {rows_name} has {rows}")
    first, shape = source.first(share), None
    for start, positions in source.chunks(first[0].nbytes, share):
        given = source.raw(positions)
        check_finite(given, name, first_row=start)
        shape = loss.check_target(given, outputs, name).shape[1:]
    if shape is None:  # this rank's part is empty: the row read for the chunk size gives the shape
        shape = loss.check_target(first, outputs, name).shape[1:]
    source.convert = lambda given: loss.check_target(given, outputs, name)
    source.shape = (rows,) + shape
    return source
