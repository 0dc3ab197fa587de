"""Data larger than memory: fit, predict and evaluate on memory-mapped .npy files and on any
object with __len__ and index-array access, read a batch at a time after a streaming check
pass. Same weights bit for bit as from the same data in memory; fit's memory grows by the
shuffle order's 8 bytes per sample and bounded chunks and batches, not with X's size."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

import backprop as bp
from backprop.sources import CHUNK_BYTES

rng = np.random.default_rng(0)
X = rng.normal(size=(300, 5))
LABELS = rng.integers(0, 3, 300)


def mapped(tmp_path, name: str, array: np.ndarray) -> np.memmap:
    np.save(tmp_path / f"{name}.npy", array)
    return np.load(tmp_path / f"{name}.npy", mmap_mode="r")


class Rows:
    """A data set only by __len__ and X[idx] (as an HDF5 dataset): records each index array
    asked for, and refuses unsorted ones, as HDF5 does."""

    def __init__(self, array: np.ndarray):
        self.array, self.asked = array, []

    def __len__(self) -> int:
        return len(self.array)

    def __getitem__(self, idx):
        idx = np.asarray(idx)
        if np.any(np.diff(idx) <= 0):
            raise TypeError("indexing elements must be in increasing order")
        self.asked.append(idx)
        return self.array[idx]


def train(X, y, dtype="float32", **options):
    net = bp.Sequential(bp.Dense(5, 8, activation="relu"), bp.Dropout(0.1), bp.Dense(8, 3), dtype=dtype, seed=3)
    history = bp.fit(net, X, y, loss=bp.CrossEntropyLoss(), epochs=3, batch_size=32, progress=False, **options)
    return net, history


@pytest.mark.parametrize("options", [{}, {"shuffle": False}, {"validation_split": 0.25},
                                     {"sample_weight": rng.random(300)}, {"metrics": ["f1"]}],
                         ids=["shuffled", "in_order", "validation_split", "sample_weight", "metrics"])
@pytest.mark.parametrize("x_dtype", [np.float32, np.float64, np.int16])
def test_memory_mapped_files_train_the_same_weights_bit_for_bit(tmp_path, options, x_dtype):
    """float32 maps are read as they are; float64 and integer ones are converted batch by batch,
    as the in-memory path converts them whole."""
    data = (X * 10).astype(x_dtype)
    in_memory, h_memory = train(data, LABELS, **options)
    streamed, h_streamed = train(mapped(tmp_path, "X", data), mapped(tmp_path, "y", LABELS), **options)
    np.testing.assert_array_equal(bp.to_numpy(streamed.store.data), bp.to_numpy(in_memory.store.data))
    assert h_streamed.history == h_memory.history


def test_an_index_access_source_reads_sorted_batches_and_gets_the_shuffle_of_in_memory_data():
    in_memory, _ = train(X, LABELS, dtype="float64", validation_data=(X[:50], LABELS[:50]))
    source, labels = Rows(X), Rows(LABELS)
    streamed, _ = train(source, labels, dtype="float64", validation_data=(Rows(X[:50]), LABELS[:50]))
    np.testing.assert_array_equal(streamed.store.data, in_memory.store.data)
    # the checking pass reads one row, then chunks; then 3 epochs of 10 batches of at most 32 rows
    batches = [idx for idx in source.asked if idx.size <= 32][1:]
    assert len(batches) == 30
    assert sorted(np.concatenate(batches[:10]).tolist()) == list(range(300))


def test_predict_and_evaluate_read_a_source_as_they_read_an_array(tmp_path):
    net, _ = train(X, LABELS)
    Xm, ym = mapped(tmp_path, "X", X), mapped(tmp_path, "y", LABELS)
    np.testing.assert_array_equal(bp.predict(net, Xm, batch_size=64), bp.predict(net, X, batch_size=64))
    np.testing.assert_array_equal(bp.predict(net, Rows(X), activation="softmax"),
                                  bp.predict(net, X, activation="softmax"))
    assert bp.evaluate(net, Xm, ym, bp.CrossEntropyLoss(), batch_size=64, metrics=["f1"]) == \
        bp.evaluate(net, X, LABELS, bp.CrossEntropyLoss(), batch_size=64, metrics=["f1"])


def test_the_streaming_checks_name_the_row_of_the_whole_set_before_anything_changes(tmp_path, monkeypatch):
    monkeypatch.setattr("backprop.sources.CHUNK_BYTES", 5 * 8 * 16)  # chunks of 16 rows
    bad = X.copy()
    bad[250, 2] = np.nan
    net = bp.Sequential(bp.Dense(5, 3), seed=0)
    weights = net.store.data.copy()
    with pytest.raises(ValueError, match=r"X must be finite, but X\[250, 2\] is nan"):
        bp.fit(net, mapped(tmp_path, "X", bad), LABELS, loss=bp.CrossEntropyLoss(), progress=False)
    with pytest.raises(ValueError, match="X must be finite in float32.*X\\[7, 0\\] is 1e\\+300"):
        big = X.copy()
        big[7, 0] = 1e300
        bp.predict(net, Rows(big))
    labels = LABELS.copy()
    labels[299] = 3
    with pytest.raises(ValueError, match="3"):
        bp.fit(net, Rows(X), Rows(labels), loss=bp.CrossEntropyLoss(), progress=False)
    with pytest.raises(ValueError, match="y has 299 samples but X has 300"):
        bp.fit(net, Rows(X), LABELS[:299], loss=bp.CrossEntropyLoss(), progress=False)
    with pytest.raises(ValueError, match="X has 4 features but the network expects 5"):
        bp.fit(net, mapped(tmp_path, "X4", X[:, :4]), LABELS, loss=bp.CrossEntropyLoss(), progress=False)
    with pytest.raises(TypeError, match="X must return rows for an array of row indices"):
        bp.predict(net, {"a": 1})
    np.testing.assert_array_equal(net.store.data, weights)


def test_a_pandas_table_is_read_whole_as_numpy_reads_it():
    pandas = pytest.importorskip("pandas")
    in_memory, _ = train(X, LABELS)
    table, _ = train(pandas.DataFrame(X), pandas.Series(LABELS))
    np.testing.assert_array_equal(table.store.data, in_memory.store.data)


@pytest.mark.parametrize("width", [256, 1024])
@pytest.mark.parametrize("x_dtype", [np.float32, np.float64])
def test_fit_allocates_the_shuffle_order_and_bounded_chunks_not_the_data(tmp_path, width, x_dtype):
    """tracemalloc's peak during fit (validation_split included) beyond what was allocated
    before: at most 8 bytes per sample (the shuffle order) plus a bound made of the checking
    pass's chunks and a batch as read, converted and reordered (validation reads batches of
    max(batch_size, 1024) rows), whatever X's width; X itself is more than twice that bound."""
    samples, batch_size = 32000, 1024
    X_file = np.lib.format.open_memmap(tmp_path / "X.npy", mode="w+", dtype=x_dtype, shape=(samples, width))
    X_file[:] = rng.standard_normal((samples, width))
    X_file.flush()
    del X_file
    Xm, ym = np.load(tmp_path / "X.npy", mmap_mode="r"), mapped(tmp_path, "y", rng.integers(0, 3, samples))
    net = bp.Sequential(bp.Dense(width, 4, activation="relu"), bp.Dense(4, 3), seed=0)
    optimizer = bp.Adam(net.parameters())
    row_bytes = width * np.dtype(x_dtype).itemsize
    bound = 8 * samples + 4 * CHUNK_BYTES + 3 * batch_size * row_bytes + 2**18
    assert Xm.nbytes > 2 * bound
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        bp.fit(net, Xm, ym, loss=bp.CrossEntropyLoss(), optimizer=optimizer, epochs=1, batch_size=batch_size,
               validation_split=0.1, progress=False)
        growth = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    assert growth <= bound, f"fit allocated {growth} bytes at its peak, more than {bound}"
