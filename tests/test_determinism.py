"""Determinism: the same seed gives bit-identical training (weights, layer state, history) on the
same backend and dtype, within a process and from one process to the next, dropout and
shuffling included; a different seed gives a different run.
"""

from __future__ import annotations

import hashlib
import pathlib
import subprocess
import sys

import numpy as np
import pytest

import backprop as bp


def training_digest(dtype: str, seed: int = 7) -> str:
    """sha256 of everything a training run produces."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 6))
    y = (X[:, 0] - X[:, 3] > 0).astype(int)
    net = bp.Sequential(bp.Dense(6, 16, activation="relu"), bp.Dropout(0.3), bp.BatchNorm(16),
                        bp.Dense(16, 2), dtype=dtype, seed=seed)
    history = bp.fit(net, X, y, loss=bp.CrossEntropyLoss(), optimizer=bp.Adam(net.parameters(), lr=0.01),
                     epochs=4, batch_size=8, validation_split=0.2, progress=False)
    digest = hashlib.sha256(net.store.data.tobytes())
    for layer in net.layers:
        for key, value in sorted(layer.state().items()):
            digest.update(key.encode() + np.asarray(value).tobytes())
    digest.update(repr(history.to_dict()).encode())
    return digest.hexdigest()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_same_seed_same_training_in_one_process(dtype):
    assert training_digest(dtype) == training_digest(dtype)
    assert training_digest(dtype, seed=8) != training_digest(dtype)


def test_same_seed_same_training_in_another_process():
    # A fresh interpreter: different hash seeds, addresses and import order.
    code = "import sys; sys.path.insert(0, sys.argv[1]); import test_determinism as t; print(t.training_digest('float32'))"
    here = str(pathlib.Path(__file__).parent)
    out = subprocess.run([sys.executable, "-c", code, here], capture_output=True, text=True, check=True,
                         timeout=120, cwd="/")
    assert out.stdout.strip() == training_digest("float32")


def test_networks_training_in_threads_of_one_process_train_as_they_would_alone():
    """The CPU backend is shared by every network of a dtype; its scratch arrays and scalar
    slots are per thread, so two fits running at once in two threads cannot write into each
    other's intermediates. The thread switch interval is cut to 1 us so that the threads
    interleave inside the backend's ops (NumPy calls on arrays this small keep the GIL)."""
    import threading

    def run(seed: int) -> bytes:
        rng = np.random.default_rng(seed)
        X = rng.normal(size=(64, 3))
        y = (X[:, 0] * X[:, 1] > 0).astype(float).reshape(-1, 1)
        net = bp.Sequential(bp.Dense(3, 4, activation="sigmoid"), bp.Dense(4, 1, activation="sigmoid"),
                            dtype="float32", seed=seed)
        bp.fit(net, X, y, loss=bp.BCELoss(), optimizer=bp.Adam(net.parameters(), lr=0.05), epochs=8,
               batch_size=1, progress=False)
        return net.store.data.tobytes()

    alone = [run(seed) for seed in range(4)]
    together = [None] * 4

    def worker(seed: int) -> None:
        together[seed] = run(seed)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        threads = [threading.Thread(target=worker, args=(seed,)) for seed in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(interval)
    assert together == alone
