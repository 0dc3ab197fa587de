"""Memory holds flat under load: after the first steps (workspaces, NumPy's small-block caches),
a training step allocates nothing that outlives it, and neither does a whole fit call.
Measured with tracemalloc, which sees NumPy's array buffers; the samples go into arrays
allocated beforehand, so the measuring itself allocates nothing.
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

import backprop as bp

WARMUP_STEPS = 30
# A leak of one small object per step (>= 16 bytes) over the 270 measured steps exceeds this.
MARGIN = 4096

rng = np.random.default_rng(0)
X = rng.normal(size=(2400, 20))
Y = rng.integers(0, 10, size=2400)


def make():
    net = bp.Sequential(bp.Dense(20, 64, activation="relu"), bp.Dropout(0.2), bp.BatchNorm(64),
                        bp.Dense(64, 10), seed=0)
    return net, bp.Adam(net.parameters())


@pytest.fixture
def traced():
    tracemalloc.start()
    yield
    tracemalloc.stop()


class MemorySamples(bp.Callback):
    """Traced memory after every completed step (fit calls on_batch_end once per step)."""

    def __init__(self, steps: int):
        self.samples = np.zeros(steps, dtype=np.int64)
        self.count = 0

    def on_batch_end(self):
        self.samples[self.count] = tracemalloc.get_traced_memory()[0]
        self.count += 1


def test_no_growth_per_step(traced):
    sampler = MemorySamples(300)
    net, opt = make()
    bp.fit(net, X, Y, loss=bp.CrossEntropyLoss(), optimizer=opt, epochs=2, batch_size=16, progress=False,
           callbacks=[sampler])
    assert sampler.count == 300
    samples = sampler.samples
    measured = samples[WARMUP_STEPS:]
    assert measured.max() - measured[0] < MARGIN, f"grew by {measured.max() - measured[0]} bytes"


def test_no_growth_per_fit_call(traced):
    net, opt = make()
    after = np.zeros(20, dtype=np.int64)
    for i in range(after.size):
        bp.fit(net, X[:160], Y[:160], loss=bp.CrossEntropyLoss(), optimizer=opt, epochs=1, batch_size=16,
               validation_split=0.1, progress=False)
        after[i] = tracemalloc.get_traced_memory()[0]
    assert after[3:].max() - after[3] < MARGIN, f"grew by {after[3:].max() - after[3]} bytes"


def test_batches_of_ever_new_sizes_cost_bounded_memory_and_it_returns(traced):
    """Batches of 4, 8, ..., 400 rows through one 64-2048-10 network: every size needs arrays
    of its own shape, and unbounded caches would keep them all. The backend's
    caches forget the oldest beyond their bound (64 MiB each); the network's workspaces go with it."""
    import gc

    net = bp.Sequential(bp.Dense(64, 2048, activation="relu"), bp.Dense(2048, 10, activation="sigmoid"), seed=0)
    opt = bp.SGD(net.parameters(), lr=0.01)
    loss = bp.BCELoss()
    data = rng.normal(size=(400, 64)).astype(np.float32)
    start = tracemalloc.get_traced_memory()[0]
    peak_growth = 0
    for rows in range(4, 401, 4):
        x = data[:rows]
        loss(net.train()(x), np.zeros((rows, 10), dtype=np.float32))
        net.backward(loss.backward())
        opt.step()
        bp.predict(net, x)
        peak_growth = max(peak_growth, tracemalloc.get_traced_memory()[0] - start)
    assert peak_growth < 2 * 64 * 2**20 + 24 * 2**20, f"grew by {peak_growth / 2**20:.0f} MiB"
    del net, opt, loss
    gc.collect()
    left = tracemalloc.get_traced_memory()[0] - start
    assert left < 2 * 64 * 2**20, f"{left / 2**20:.0f} MiB left after the network was deleted"
